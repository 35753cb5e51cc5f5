"""Prompt tuning with an attention head, for memory tasks (Wei, Xie & Ma, NeurIPS 2021, Section 5).

A memory task's label is a function of the slot value m, which every position's emission carries, so its
head is the single-query attention head over the masked laws at every position
(:func:`~simlm.downstream.fit_attention_head`).  Prompt tuning puts k learned prompt positions before
x_1:T and trains the prompt jointly with that head; the network or world is frozen.

Exact model (an :class:`~simlm.worlds.HMM` or a :class:`~simlm.worlds.MemoryHMM`, through its joint
(slot, state) chain ``(π, A, B)`` = ``world.chain``).  Prompt position j has
a learned nonnegative emission likelihood u_j over the joint states.  The chain starts at the first prompt
position with π, so the state of x_1 has the prompted prior

    p_1(U) ∝ [((π ∘ u_1) A ∘ u_2) A ⋯ ∘ u_k] A

and every masked law is the world's exact one with that prior: P(x_t = · | z, x_−t) = P(h_t | z, x_−t) B
from one forward–backward pass (``world.prompted_masked_token_probs``).  For a one-cell memory world A keeps the
slot, so after a prompt of k = 1 the slot law is ∝ Σ_h π(m, h) u(m, h) = ρ(m) · Σ_h π_Q(h) u(m, h) — the
slot prior ρ reweighted by Σ_h π_Q(h) u(m, h), π_Q the syntactic states' initial law — (and the chain moves
one step); it can sharpen or suppress slot values before the head reads the positions.

Transformer (a :class:`~simlm.models.MaskedTransformerLM`).  k continuous vectors ``(k, d)`` are prepended
to the input embeddings of every masked copy of x (x with x_t replaced by MASK, one per position t); the
law read at t, over all t, feeds the attention head.  The prefix and the head are trained jointly with Adam
on minibatches of sequences (each step reads ``batch_size`` sequences × T masked copies).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from simlm.checks import as_key, check_instance, check_positive_int
from simlm.downstream.heads import AttentionHead, AttentionLogits, check_l2, check_lr
from simlm.downstream.prompt_fit import (PromptedClassifier, check_fit_memory, check_masked_transformer,
                                         check_masked_transformer_tokens, check_prompt_data, check_prompt_fit,
                                         check_promptable, check_test_data, fit_chain_prompt, fit_prompt,
                                         minibatch_indices, objective)
from simlm.worlds import hmm_core as core
from simlm.worlds import prompting
from simlm.worlds.hmm import ChainInference

# ---- the exact prompted masked laws -------------------------------------------------------------


def _laws_at_every_position(initial, transition, emission, likelihoods, tokens):
    """The prompted masked laws P(x_t = · | z, x_−t) at every position of ``tokens (n, T)``, ``(n, T, V)``,
    for the prompt likelihoods ``(k, K)``, in the form the fit differentiates: the prompt's law by
    :func:`~simlm.worlds.prompting.fit_prompt_prior` and the sequential scaled scans unchecked (a rerun in log
    space would differentiate the log-space recursion, NaN at a state no path reaches).  Sequential on every
    backend: the associative scan an accelerator picks from T = 64 has no reverse-mode derivative (its
    ``while_loop``; the fit raised there) and a NaN one at a zero of the prior (a review, 2026-12-06).  The
    accuracies are scored on the checked laws, ``world.prompted_masked_token_probs``."""
    prior = prompting.fit_prompt_prior(initial, transition, likelihoods)
    return jax.vmap(lambda x: core.masked_token_probs(prior, transition, emission, x, parallel=False)[0])(tokens)


@dataclass(frozen=True, eq=False)
class ExactAttentionPromptResult(PromptedClassifier):
    """Prompt tuning with an attention head on an exact world: ``U (k, K)`` the prompt likelihoods over the
    joint states, ``head`` the :class:`~simlm.downstream.AttentionHead` on the prompted masked laws,
    accuracies (``test_accuracy`` NaN without test data), the training loss per step of the best restart
    and the final loss of every restart."""

    U: np.ndarray
    head: AttentionHead
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray
    restart_losses: np.ndarray

    def features(self, world, tokens) -> jax.Array:
        return world.prompted_masked_token_probs(tokens, self.U)


def fit_exact_attention_prompt(world, tokens, labels, *, k: int = 1, n_classes: int = 2, d_key: int = 8,
                               d_value: int = 16, n_restarts: int = 4, steps: int = 300, seed: int = 0,
                               lr: float = 0.05, l2: float = 1e-4, test=None) -> ExactAttentionPromptResult:
    """Jointly fit prompt likelihoods U = softplus(raw) ``(k, K)`` and an attention head on the prompted
    masked laws of ``tokens (n, T)`` to ``labels (n,)``: Adam at ``lr``, ``steps`` full-batch steps, best of
    ``n_restarts`` by training loss (cross-entropy + (l2/2)·Σ‖head weights‖²).  ``test=(tokens, labels)``
    is scored.  ``world`` is an HMM or a MemoryHMM."""
    check_instance("world", world, ChainInference, "an HMM or a MemoryHMM (a world with an exact hidden chain)")
    initial, transition, emission = world.chain
    toks, y, k, C = check_prompt_data(tokens, labels, world.n_symbols, k, n_classes)
    prompting.check_prompt_length(k, "k")  # the cap named as k (check_promptable would name the prompt U)
    test, l2 = check_test_data(test, world.n_symbols, C), check_l2(l2)
    K, V = initial.shape[0], world.n_symbols
    check_fit_memory(n_restarts, k * K + (check_positive_int("d_key", d_key) + check_positive_int(
        "d_value", d_value)) * V + d_value * C, toks.size * (2 * K + V), steps,
        names="k, n_classes, d_key, d_value, n_restarts, steps")
    lr = check_lr(lr)  # l2 is check_l2's: 0 or positive
    seed = check_positive_int("seed", seed, minimum=0)
    check_promptable(world.prompted_masked_token_probs, toks, k, K, test)  # before the fit, not when it is scored
    head = AttentionLogits(check_positive_int("d_key", d_key), check_positive_int("d_value", d_value))
    U, params, mean, sd, losses, final, _ = fit_chain_prompt(
        _laws_at_every_position, world.chain, jnp.asarray(toks), jnp.asarray(y), jnp.float32(l2), jnp.float32(lr),
        as_key(seed, "seed"), head=head, k=k, n_classes=C,
        steps=check_positive_int("steps", steps), n_restarts=check_positive_int("n_restarts", n_restarts))
    check_prompt_fit(losses[0], final, "the exact attention prompt fit", U)  # losses[0]: the kept restart's start
    result = ExactAttentionPromptResult(np.asarray(U), head.fitted(params, mean, sd, losses, final), float("nan"),
                                        float("nan"), np.asarray(losses), np.asarray(final))
    return result.scored(world, result.features(world, toks), y, test)  # on the checked laws


# ---- prompt tuning with an attention head on a masked transformer ---------------------------------

def _masked_copies(tokens, mask_id):
    """``(n·T, T)``: copy t of each sequence has x_t replaced by ``mask_id``."""
    n, T = tokens.shape
    eye = jnp.eye(T, dtype=bool)
    return jnp.where(eye[None], mask_id, tokens[:, None, :]).reshape(n * T, T)


def _prefixed_laws(graphdef, state, prefix, tokens):
    """The frozen model's masked law at every position of ``tokens (n, T)`` with ``prefix (k, d)`` before
    each masked copy: ``(n, T, V)``."""
    model = nnx.merge(graphdef, state)
    n, T = tokens.shape
    logits = model.logits_at(_masked_copies(tokens, model.config.mask_id), jnp.tile(jnp.arange(T), n), prefix=prefix)
    return jax.nn.softmax(logits.reshape(n, T, -1), axis=-1)


_prefixed_laws_jit = jax.jit(_prefixed_laws, static_argnums=0)


@partial(jax.jit, static_argnames=("graphdef", "head", "n_classes", "steps"))
def _fit_transformer(graphdef, state, tokens, labels, batches, l2, lr, key, prefix0, head, n_classes, steps):
    def features(prefix, idx):
        return _prefixed_laws(graphdef, state, prefix, tokens[idx])

    V = jax.eval_shape(lambda: _prefixed_laws(graphdef, state, prefix0, tokens[:1])).shape[-1]
    start = {"prompt": prefix0, "head": head.init(key, V, n_classes)}
    p, losses, final_loss, (mean, sd) = fit_prompt(features, head, labels, start, l2=l2, lr=lr, steps=steps,
                                                   batches=batches)
    # the objective on every training sequence, with the fit's standardisation, at the start and at the end;
    # the final prompt's laws (the final objective's, computed once: XLA merges the equal computations)
    start_loss = objective(features, head, labels, start, l2=l2, stats=(mean, sd))
    return p, losses, mean, sd, (start_loss, final_loss), features(p["prompt"], jnp.arange(tokens.shape[0]))


@dataclass(frozen=True, eq=False)
class TransformerAttentionPromptResult(PromptedClassifier):
    """Prompt tuning with an attention head on a frozen masked transformer: ``prefix (k, d)``, ``head`` the
    :class:`~simlm.downstream.AttentionHead` on the prefixed masked laws, accuracies, and the minibatch
    training loss per step ``losses (steps,)``."""

    prefix: np.ndarray
    head: AttentionHead
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray

    def features(self, lm, tokens) -> jax.Array:
        """The prefixed masked laws ``(n, T, V)``."""
        toks = check_masked_transformer_tokens(lm, tokens, self.prefix.shape[0], mask_slot=False)
        return _prefixed_laws_jit(lm.graphdef, lm.state, jnp.asarray(self.prefix), toks)


def fit_transformer_attention_prompt(lm, tokens, labels, *, k: int = 1, n_classes: int = 2, d_key: int = 8,
                                     d_value: int = 16, steps: int = 200, batch_size: int = 64, seed: int = 0,
                                     lr: float = 0.01, l2: float = 1e-4, test=None
                                     ) -> TransformerAttentionPromptResult:
    """Prompt tuning with an attention head on a frozen :class:`~simlm.models.MaskedTransformerLM`: a prefix
    ``(k, d)`` (initialised N(0, 0.02²)) before every masked copy of x and an attention head over the
    masked laws, trained jointly with Adam at ``lr`` for ``steps`` steps on minibatches of ``batch_size``
    sequences (drawn without replacement within a step, by ``seed``).  ``test=(tokens, labels)`` is
    scored."""
    check_masked_transformer(lm)
    toks, y, k, C = check_prompt_data(tokens, labels, lm.n_symbols, k, n_classes)
    toks = check_masked_transformer_tokens(lm, toks, k, mask_slot=False)
    test, l2 = check_test_data(test, lm.n_symbols, C), check_l2(l2)
    if test is not None:
        check_masked_transformer_tokens(lm, test[0], k, mask_slot=False)
    steps = check_positive_int("steps", steps)
    b = min(check_positive_int("batch_size", batch_size), toks.shape[0])  # a batch of every sequence at most
    check_fit_memory(1, k * lm.config.d_model + (check_positive_int("d_key", d_key) + check_positive_int(
        "d_value", d_value)) * lm.n_symbols + d_value * C, 0, steps * (b + 1),
        names="k, n_classes, d_key, d_value, steps, batch_size")
    key_prefix, key_head, key_batches = jax.random.split(as_key(check_positive_int("seed", seed, minimum=0), "seed"), 3)
    batches = minibatch_indices(key_batches, toks.shape[0], b, steps)
    prefix0 = 0.02 * jax.random.normal(key_prefix, (k, lm.config.d_model))
    head = AttentionLogits(check_positive_int("d_key", d_key), check_positive_int("d_value", d_value))
    p, losses, mean, sd, (start_loss, final_loss), train_features = _fit_transformer(
        lm.graphdef, lm.state, toks, jnp.asarray(y), batches,
        jnp.float32(l2), jnp.float32(check_lr(lr)),
        key_head, prefix0, head, C, steps)
    prefix = np.asarray(p["prompt"])
    check_prompt_fit(start_loss, final_loss, "the transformer attention prompt fit")
    result = TransformerAttentionPromptResult(prefix, head.fitted(p["head"], mean, sd, losses, final_loss),
                                              float("nan"), float("nan"), np.asarray(losses))
    return result.scored(lm, train_features, y, test)


__all__ = ["ExactAttentionPromptResult", "fit_exact_attention_prompt", "TransformerAttentionPromptResult",
           "fit_transformer_attention_prompt"]
