"""Prompt tuning, written once (Wei, Xie & Ma, NeurIPS 2021): a prompt and a head fitted jointly on a frozen
model, over "a prompted law" and "a head".

A *prompted law* is a function θ ↦ f(θ): the frozen model's laws on the training sequences given the
prompt's raw parameters θ (an exact world's prompt likelihoods u = softplus(θ) over its chain states, or a
transformer's continuous prefix), ``(n, F)`` or ``(n, T, F)``.  A *head* is a
:class:`~simlm.downstream.heads.HeadLogits` (linear, or attention over positions).  :func:`fit_prompt`
minimises, with Adam,

    L(θ, φ) = mean cross-entropy(head.logits(φ, standardise(f(θ))), y) + (l2/2)·head.penalty(φ),

the standardisation's statistics held fixed under the gradient (:func:`~simlm.downstream.heads.standardise`):
recomputed every step from every training sequence in a full-batch fit (the head is returned with those of
the final prompt); in a minibatch fit, those of every training sequence at the starting prompt, fixed for
the whole fit and returned with the head (a batch's own statistics would train the head on a different
affine map of the features from each batch and from the one it is applied with).
:func:`fit_chain_prompt` is that fit for an exact world (prompt likelihoods over the states of its chain,
best of several restarts); the transformer fits call :func:`fit_prompt` with their prefixed laws.  The
host-side checks every prompt fit shares, and :class:`PromptedClassifier` (predictions through a result's
own prompted law), live here too: among them, that an exact fit's data are possible after the prompts it
can reach (u = softplus(θ) > 0 everywhere, so every such prompt has the support of the all-ones prompt
of k tokens, and x is possible after one exactly when it is after that one: :func:`check_promptable`),
and that a fit did not diverge (:func:`check_prompt_fit`: its final training loss, at the returned
parameters, not above its starting loss by more than max(1 nat, the start) — :data:`DIVERGENCE_TOLERANCE`
— and no prompt row underflowed to zero).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simlm._optim import minimise
from simlm.checks import as_batch, check_memory, check_positive_int, check_tokens
from simlm.downstream.heads import (HeadLogits, adam_restarts, check_labels, head_loss, standardise,
                                    warn_missing_classes)
from simlm.errors import ConfigError, TokenError, TrainingDivergedError, ZeroProbabilityError
from simlm.models.transformer import CausalTransformerLM, MaskedTransformerLM


# ---- the fit --------------------------------------------------------------------------------------

def objective(features, head: HeadLogits, labels, params, *, l2, stats=None) -> jax.Array:
    """L(θ, φ) (module docstring) at ``params`` = ``{"prompt": θ, "head": φ}`` on every training sequence:
    ``features(θ)`` standardised by its own statistics (``stats`` None, a full-batch fit), or
    ``features(θ, idx)`` of every sequence standardised by ``stats`` = (mean, scale) (a minibatch fit's)."""
    if stats is None:
        z, _, _ = standardise(features(params["prompt"]))
    else:
        mean, scale = stats
        z = (features(params["prompt"], jnp.arange(labels.shape[0])) - mean) / scale
    return head_loss(head, params["head"], z, labels, l2)


def fit_prompt(features, head: HeadLogits, labels, start, *, l2, lr, steps: int, restart_keys=None, batches=None):
    """Jointly fit a prompt θ and head parameters φ (module docstring) with Adam at ``lr`` for ``steps``
    steps; call inside ``jax.jit``.

    ``features``: the prompted law θ → ``(n, …, F)`` on every training sequence; with ``batches``
    ``(steps, b)`` of sequence indices, ``(θ, idx)`` → the laws of sequences ``idx`` (step i reads batch i).
    ``start``: the initial ``{"prompt": θ, "head": φ}``; with ``restart_keys`` ``(R,)`` a function key →
    such a dict, one full-batch run per key, the one with the lowest final loss kept.

    Returns ``(params, losses (steps,), final losses (R,), stats)``: ``losses`` the objective before each
    update (of step i's batch in a minibatch fit), a final loss the :func:`objective` at a run's returned
    parameters on every training sequence (not its last step's, which is before the last update); ``stats``
    is the (mean, scale) a minibatch fit standardised with (the head's), None for a full batch (the head's
    are those of the final prompt's features, :func:`~simlm.downstream.heads.standardise`)."""
    if batches is None:
        stats = None

        def loss(p):
            return objective(features, head, labels, p, l2=l2)
    else:
        if restart_keys is not None:
            raise ConfigError("batches: restarts run full batch; pass either restart_keys or batches")
        _, mean, scale = standardise(features(start["prompt"], jnp.arange(labels.shape[0])))
        stats = (mean, scale)

        def loss(p, idx):
            return head_loss(head, p["head"], (features(p["prompt"], idx) - mean) / scale, labels[idx], l2)
    if restart_keys is not None:
        return (*adam_restarts(loss, start, restart_keys, steps=steps, lr=lr), stats)
    params, losses = minimise(loss, start, optax.adam(lr), steps, xs=batches)
    return params, losses, objective(features, head, labels, params, l2=l2, stats=stats)[None], stats


def minibatch_indices(key, n: int, batch_size: int, steps: int) -> jax.Array:
    """``(steps, batch_size)`` sequence indices for :func:`fit_prompt`'s ``batches``: step i reads
    ``batch_size`` of the ``n`` sequences, drawn without replacement within the step from key i of
    ``key``'s ``steps`` splits."""
    return jax.vmap(lambda kk: jax.random.permutation(kk, n)[:batch_size])(jax.random.split(key, steps))


@partial(jax.jit, static_argnames=("law", "head", "k", "n_classes", "steps", "n_restarts"))
def fit_chain_prompt(law, chain, data, labels, l2, lr, key, *, head: HeadLogits, k: int, n_classes: int, steps: int,
                     n_restarts: int):
    """Prompt tuning on an exact world: prompt likelihoods U = softplus(θ) ``(k, K)`` over the states of its
    ``chain`` = (π, A, B) and a head, fitted by :func:`fit_prompt`, best of ``n_restarts`` (restart r draws
    θ ~ N(0, 1) and the head's start from the two halves of key r).  ``law(π, A, B, U, data)`` is the
    prompted law ``(n, …, V)`` on the training sequences — the argument order of the worlds' prompted laws
    (:mod:`simlm.worlds.prompting`); ``data`` is their tokens, or what the law precomputes from them.

    Returns ``(U, head params, mean, scale, losses (steps,), final losses (R,), train features)``: the
    standardisation and the features are those of the fitted prompt."""
    initial, transition, emission = chain
    K, V = initial.shape[0], emission.shape[-1]

    def features(raw):
        return law(initial, transition, emission, jax.nn.softplus(raw), data)

    def init(key):
        k_prompt, k_head = jax.random.split(key)
        return {"prompt": jax.random.normal(k_prompt, (k, K)), "head": head.init(k_head, V, n_classes)}

    p, losses, final, _ = fit_prompt(features, head, labels, init, l2=l2, lr=lr, steps=steps,
                                  restart_keys=jax.random.split(key, n_restarts))
    train_features = features(p["prompt"])
    _, mean, scale = standardise(train_features)
    return jax.nn.softplus(p["prompt"]), p["head"], mean, scale, losses, final, train_features


def check_promptable(prompted_law, tokens, k: int, n_states: int, test=None) -> None:
    """Refuse, before an exact prompt fit, training ``tokens`` — or the tokens of ``test`` (None or the
    checked pair (tokens, labels)) — that no prompt of ``k`` tokens it can reach makes possible: its
    likelihoods U = softplus(θ) are positive everywhere, so every such prompt's law has the support of the
    all-ones prompt ``(k, n_states)``, and ``prompted_law(tokens, ones)`` — the world's checked prompted
    method the fit is scored with — raising :class:`ZeroProbabilityError` means it would raise for the
    fitted prompt too, after the whole fit."""
    for name, toks in (("tokens", tokens), ("test tokens", None if test is None else test[0])):
        if toks is None:
            continue
        try:
            prompted_law(toks, np.ones((k, n_states)))
        except ZeroProbabilityError as err:  # the world's error names "tokens"
            text = str(err) if name == "tokens" else f"{name}: {str(err).removeprefix('tokens: ')}"
            raise ZeroProbabilityError(f"{text}; the same holds after every prompt of k = {k} tokens the fit can "
                                       "reach (U = softplus(θ) > 0 has the all-ones prompt's support)") from None


def check_finite_fit(final_losses, what: str) -> None:
    """:class:`TrainingDivergedError` (naming ``lr``) when no run of a prompt fit ended at a finite loss: its
    prompt or head is NaN, and scoring it would blame the features."""
    final = np.asarray(final_losses)
    if not np.isfinite(final).any():
        raise TrainingDivergedError(f"lr: {what} ended at a non-finite loss ({final.size} run"
                                    f"{'s' if final.size != 1 else ''}); lower lr or steps")


#: how far above its starting loss a prompt fit may end before it counts as diverged: max(1 nat, the start)
#: — it ends above twice its start and above it by a nat.  A fit whose steps overshoot far ends orders of
#: magnitude above (lr 1e6: 0.7 → 7e12; lr 30: 0.68 → 3.6); a sane one ends near or below its start, but a
#: minibatch fit of a task with nothing to learn wanders around log C (batch 1 at lr 0.05: 0.72 → 0.80), and
#: that is no divergence.  The tolerance is loose: a full-batch exact fit that overshoots mildly (lr 10 on a
#: 2-state world: 0.696 → 1.606, never below its start) passes it, so a fit is vouched for only against
#: divergence, not against a poor lr (a review, 2026-12-05; left so, since a tighter bound for full-batch
#: fits would need measuring against every experiment's fits first).
DIVERGENCE_TOLERANCE = (1.0, 1.0)


def check_prompt_fit(start_loss, final_losses, what: str, prompt=None) -> None:
    """Refuse a prompt fit that diverged, with :class:`TrainingDivergedError` naming ``lr``: no run ended at
    a finite loss (:func:`check_finite_fit`); the kept run's final loss — the objective at its returned
    parameters on every training sequence — exceeds ``start_loss``, the objective at its starting
    parameters, by more than :data:`DIVERGENCE_TOLERANCE`; or an entry of the returned ``prompt`` likelihoods
    ``(k, K)`` = softplus(θ), positive in exact arithmetic, underflowed: 0 or below float32's smallest normal
    number relative to its row's largest (θ ≲ −87, reached only at a diverging rate).  Such an entry changes
    the prompt's support — a sequence :func:`check_promptable` let through could become impossible — or is
    flushed to 0 when the prompted laws are read, so the fit is refused rather than scored on another
    prompt (an all-zero row: a prompt token of probability zero, whose prompted laws are undefined)."""
    check_finite_fit(final_losses, what)
    final = np.asarray(final_losses, np.float64)
    end, start = float(np.min(final[np.isfinite(final)])), float(start_loss)
    absolute, relative = DIVERGENCE_TOLERANCE
    if end > start + max(absolute, relative * abs(start)):
        raise TrainingDivergedError(f"lr: {what} diverged: it ended at training loss {end:.4g}, above its start "
                                    f"{start:.4g} by more than max({absolute:g} nat, {relative:.0%} of it); "
                                    "lower lr")
    if prompt is not None:
        u = np.asarray(prompt, np.float64)
        empty = ~(u > 0).any(-1)
        if empty.any():
            raise TrainingDivergedError(f"lr: {what} diverged: row {int(np.flatnonzero(empty)[0])} of its prompt "
                                        "likelihoods is all zero (softplus underflowed), so the prompt has "
                                        "probability zero; lower lr")
        lost = ~(u >= np.finfo(np.float32).tiny * u.max(-1, keepdims=True))
        if lost.any():
            j, h = (int(i[0]) for i in np.nonzero(lost))
            raise TrainingDivergedError(f"lr: {what} diverged: entry ({j}, {h}) of its prompt likelihoods "
                                        f"softplus(θ) underflowed to {u[j, h]:.3g} of its row's largest (below "
                                        "float32's smallest normal), which changes the prompt's support; lower lr")


# ---- results --------------------------------------------------------------------------------------

class PromptedClassifier:
    """Predictions and accuracy of a prompt result through its own ``features(source, tokens)`` (source: the
    world for an exact prompt, the LM for a transformer prompt) and ``head``."""

    def predict(self, source, tokens) -> np.ndarray:
        return self.head.predict(self.features(source, as_batch(tokens)))

    def accuracy(self, source, tokens, labels) -> float:
        return self.head.accuracy(self.features(source, as_batch(tokens)), labels)

    def scored(self, source, train_features, labels, test):
        """This result with its accuracies: on the training set from ``train_features`` as given (the exact
        fits pass the world's checked laws), on ``test=(tokens, labels)`` through :meth:`features` (NaN without
        test data)."""
        test_acc = float("nan") if test is None else self.accuracy(source, *test)
        return replace(self, train_accuracy=self.head.accuracy(train_features, labels), test_accuracy=test_acc)


# ---- the checks every prompt fit makes on the host, before anything is compiled --------------------

def check_prompt_data(tokens, labels, n_symbols: int, k, n_classes):
    """``(tokens (n, T), labels (n,), k, n_classes)`` checked: world tokens, class ids, k ≥ 1, ≥ 2 classes
    (a class without a training label warns: the joint fit's objective then has no minimiser)."""
    toks, _ = check_tokens(tokens, n_symbols)
    C = check_positive_int("n_classes", n_classes, minimum=2)
    k = check_positive_int("k", k)
    y = check_labels(labels, toks.shape[0], C)
    warn_missing_classes(y, C, "the prompt fit", stacklevel=4)
    return toks, y, k, C


def check_test_data(test, n_symbols: int, n_classes: int):
    """``test``: None or a pair (tokens, labels), checked before the fit rather than after it."""
    if test is None:
        return None
    if not isinstance(test, (tuple, list)) or len(test) != 2:
        raise ConfigError(f"test: expected None or a pair (tokens, labels), got {type(test).__name__} {test!r:.60}")
    toks, _ = check_tokens(test[0], n_symbols, "test tokens")
    return toks, check_labels(test[1], toks.shape[0], n_classes, "test labels")


def check_fit_memory(n_restarts, n_params, n_activations, steps, names: str = "k, n_classes, n_restarts, steps") -> None:
    """Refuse restarts × (parameters with their Adam state, activations) × steps that cannot fit, naming
    ``names`` (the arguments the sizes come from)."""
    R = check_positive_int("n_restarts", n_restarts)
    check_memory(names, R * (16 * n_params + 4 * n_activations + check_positive_int("steps", steps)),
                 what="the restarts' parameters, optimiser state, activations and losses")


def check_masked_transformer(lm) -> MaskedTransformerLM:
    """``lm`` if it is a :class:`~simlm.models.MaskedTransformerLM`, else a :class:`ConfigError` naming it."""
    if isinstance(lm, CausalTransformerLM):
        raise ConfigError("lm: prompt tuning reads masked laws; this TransformerLM is causal "
                          "(train it with TransformerConfig(causal=False))")
    if not isinstance(lm, MaskedTransformerLM):
        raise ConfigError(f"lm: expected a TransformerLM with causal=False, got {type(lm).__name__}")
    return lm


def check_masked_transformer_tokens(lm, tokens, k, *, mask_slot: bool = True) -> jax.Array:
    """Tokens as a jax array after checking that ``lm`` is a :class:`~simlm.models.MaskedTransformerLM`
    whose positions hold the prefix k, the prepended MASK (``mask_slot``; the attention prompt masks in
    place instead) and x; positions beyond those ``lm`` was trained on (learned positions) warn
    :class:`~simlm.errors.UntrainedPositionWarning`, as its laws do."""
    check_masked_transformer(lm)
    toks, _ = check_tokens(tokens, lm.n_symbols)
    length = k + mask_slot + toks.shape[1]
    if length > lm.config.n_positions:
        raise TokenError(f"tokens: prefix k = {k}{' + MASK' if mask_slot else ''} + {toks.shape[1]} tokens "
                         f"exceeds the model's {lm.config.n_positions} positions (max_len + 1)")
    lm._warn_untrained(length, f"a prompt of k = {k} vectors{' and a MASK' if mask_slot else ''} before "
                               f"{toks.shape[1]} tokens", stacklevel=4)
    return jnp.asarray(toks)


__all__ = ["objective", "fit_prompt", "minibatch_indices", "fit_chain_prompt", "check_promptable",
           "check_finite_fit", "DIVERGENCE_TOLERANCE", "check_prompt_fit", "PromptedClassifier", "check_prompt_data",
           "check_test_data", "check_fit_memory", "check_masked_transformer", "check_masked_transformer_tokens"]
