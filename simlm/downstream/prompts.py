"""Prompt tuning (Wei, Xie & Ma, NeurIPS 2021): learned prompt inputs before the masked position, a linear
head on the frozen masked LM's output there.

Exact model (an :class:`~simlm.worlds.HMM`).  k prompt positions z_1..z_k are placed before the masked
position 0, each with a learned nonnegative emission likelihood u_j ∈ R^K_{≥0} over hidden states
(u = softplus(raw) while training).  The chain starts at the first prompt position with π, so with a
prompt H_0 ~ πA^k, and

    P(H_0 | z, x) ∝ [((π ∘ u_1) A ∘ u_2) A ⋯ ∘ u_k] A ∘ β_0(x),     β_0(x)(h) = p(x_1:T | H_0 = h)

(β_0 from :func:`simlm.worlds.prompting.prepended_backward`).  Without a prompt P(H_0 | x) ∝ π ∘ β_0, so for k = 1

    P(H_0 | z, x) ∝ P(H_0 | x) ∘ r(u),     r(u) = Aᵀ(π_{−1} ∘ u) ⊘ π_0,

the paper's identity, with π_{−1} = π the law of the prompt position's state and π_0 = π the law of H_0
in the unprompted model (``world.prompt_reweighting``; the maths is in :mod:`simlm.worlds.prompting`).  A
prompt therefore reweights the
posterior coordinate-wise, which can make a label readable from P(H_0 | z, x) B even where B has rank
< K and a head on P(H_0 | x) B cannot.  The prompted masked-LM output is P(H_0 | z, x) B ``(V,)``.

Transformer (:class:`~simlm.models.TransformerLM`, ``causal=False``).  k continuous vectors ``(k, d)``
are prepended to the input embeddings of (MASK, x_1, …, x_T) (the ``prefix=`` argument of
:class:`~simlm.models.Transformer`); the model is frozen; the prefix and a linear head on the softmax
output at MASK are trained jointly with Adam.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simlm._optim import minimise
from flax import nnx

from simlm.errors import ConfigError, ShapeError, TokenError
from simlm.models.transformer import TransformerLM, prepended_mask_inputs
from simlm.worlds import prompting
from simlm.checks import check_memory, check_positive, check_positive_int, check_tokens
from simlm.worlds.hmm import HMM
from simlm.downstream.heads import LinearHead, _xent, adam_restarts, check_l2, check_labels


# ---- the exact prompted posterior ---------------------------------------------------------------

def _check_world(world) -> None:
    if not isinstance(world, HMM):
        raise ConfigError(f"world: exact prompt tuning needs an HMM, got {type(world).__name__}")


@jax.jit
def _prepended_backward(initial, transition, emission, tokens):
    """β_0 ``(n, K)`` and the per-step log-probs ``(n, T)`` of x_1:T (:func:`simlm.worlds.prompting.prepended_backward`)."""
    return jax.vmap(prompting.prepended_backward, in_axes=(None, None, None, 0))(initial, transition, emission, tokens)


class _PromptedClassifier:
    """Predictions and accuracy of a prompt result through its own ``features(source, tokens)`` (source: the
    world for an exact prompt, the LM for a transformer prompt) and ``head``."""

    def predict(self, source, tokens) -> np.ndarray:
        return self.head.predict(self.features(source, tokens))

    def accuracy(self, source, tokens, labels) -> float:
        return self.head.accuracy(self.features(source, tokens), labels)

    def _scored(self, source, train_features, labels, test):
        """This result with its accuracies: on the training set from the features the fit ended with, on
        ``test=(tokens, labels)`` through :meth:`features` (NaN without test data)."""
        test_acc = float("nan") if test is None else self.accuracy(source, *test)
        return replace(self, train_accuracy=self.head.accuracy(train_features, labels), test_accuracy=test_acc)


@dataclass(frozen=True, eq=False)
class ExactPromptResult(_PromptedClassifier):
    """Prompt tuning on the exact HMM: ``U (k, K)`` the prompt likelihoods, ``head`` a :class:`LinearHead`
    on the prompted law P(H_0 | z, x) B; accuracies (``test_accuracy`` NaN without test data), the
    training loss per step of the best restart and the final loss of every restart."""

    U: np.ndarray
    head: LinearHead
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray
    restart_losses: np.ndarray

    def features(self, world, tokens) -> jax.Array:
        return world.prompted_prepended_mask_probs(tokens, self.U)


def _standardise(f):
    """Batch standardisation over all but the last axis (sequences, and positions for ``(n, T, F)``) with
    stop-gradient statistics (an affine map of f for the final prompt)."""
    axes = tuple(range(f.ndim - 1))
    mean = jax.lax.stop_gradient(f.mean(axes))
    sd = jax.lax.stop_gradient(f.std(axes))
    sd = jnp.where(sd > 1e-6 * jnp.maximum(sd.max(), 1e-30), sd, 1.0)
    return (f - mean) / sd, mean, sd


@partial(jax.jit, static_argnames=("k", "n_classes", "steps", "n_restarts"))
def _fit_exact(initial, transition, emission, beta0, labels, l2, lr, key, k, n_classes, steps, n_restarts):
    K, V = emission.shape

    def features(raw):
        return prompting.reweight(prompting.prompt_prior(initial, transition, jax.nn.softplus(raw)), beta0) @ emission

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"raw": jax.random.normal(k1, (k, K)), "W": 0.1 * jax.random.normal(k2, (V, n_classes)),
                "b": jnp.zeros(n_classes)}

    def loss(p):
        z, _, _ = _standardise(features(p["raw"]))
        return _xent(z @ p["W"] + p["b"], labels) + 0.5 * l2 * jnp.sum(p["W"] ** 2)

    p, losses, final = adam_restarts(loss, init, jax.random.split(key, n_restarts), steps=steps, lr=lr)
    train_features = features(p["raw"])
    _, mean, sd = _standardise(train_features)
    return jax.nn.softplus(p["raw"]), p["W"], p["b"], mean, sd, losses, final, train_features


def _check_common(tokens, labels, n_symbols, k, n_classes):
    toks, _ = check_tokens(tokens, n_symbols)
    C = check_positive_int("n_classes", n_classes, minimum=2)
    k = check_positive_int("k", k)
    return toks, check_labels(labels, toks.shape[0], C), k, C


def _check_test(test, n_symbols, n_classes):
    """``test``: None or a pair (tokens, labels), checked before the fit rather than after it."""
    if test is None:
        return None
    if not isinstance(test, (tuple, list)) or len(test) != 2:
        raise ConfigError(f"test: expected None or a pair (tokens, labels), got {type(test).__name__} {test!r:.60}")
    toks, _ = check_tokens(test[0], n_symbols, "test tokens")
    return toks, check_labels(test[1], toks.shape[0], n_classes, "test labels")


def _check_fit_memory(n_restarts, n_params, n_activations, steps) -> None:
    """Refuse restarts × (parameters with their Adam state, activations) × steps that cannot fit."""
    R = check_positive_int("n_restarts", n_restarts)
    check_memory("k, n_restarts, steps", R * (16 * n_params + 4 * n_activations + check_positive_int("steps", steps)),
                 what="the restarts' parameters, optimiser state, activations and losses")


def fit_exact_prompt(world, tokens, labels, *, k: int = 1, n_classes: int = 2, n_restarts: int = 4,
                     steps: int = 300, seed: int = 0, lr: float = 0.05, l2: float = 1e-4,
                     test=None) -> ExactPromptResult:
    """Jointly fit prompt likelihoods U = softplus(raw) ``(k, K)`` and a linear head on the prompted law
    P(H_0 | z, x) B of ``tokens (n, T)`` (x_1:T, as from :func:`~simlm.downstream.sample_task_data` for a
    ``"prepended"`` task) to ``labels (n,)``: Adam at ``lr``, ``steps`` full-batch steps, best of
    ``n_restarts`` by training loss (cross-entropy + (l2/2)‖W‖²).  ``test=(tokens, labels)`` is scored."""
    _check_world(world)
    toks, y, k, C = _check_common(tokens, labels, world.n_symbols, k, n_classes)
    test, l2 = _check_test(test, world.n_symbols, C), check_l2(l2)
    K, V = world.n_states, world.n_symbols
    _check_fit_memory(n_restarts, k * K + V * C, toks.shape[0] * (K + V), steps)
    world.prepended_state_posterior(toks)  # raises ZeroProbabilityError for an impossible sequence
    beta0, _ = _prepended_backward(*world.chain, jnp.asarray(toks))
    U, W, b, mean, sd, losses, final, train_features = _fit_exact(
        *world.chain, beta0, jnp.asarray(y),
        jnp.float32(0.0 if l2 == 0 else check_positive("l2", l2)), jnp.float32(check_positive("lr", lr)),
        jax.random.PRNGKey(check_positive_int("seed", seed, minimum=0)), k, C,
        check_positive_int("steps", steps), check_positive_int("n_restarts", n_restarts))
    head = LinearHead(np.asarray(W), np.asarray(b), np.asarray(mean), np.asarray(sd), np.asarray(losses))
    result = ExactPromptResult(np.asarray(U), head, float("nan"), float("nan"), np.asarray(losses), np.asarray(final))
    return result._scored(world, train_features, y, test)


# ---- prompt tuning on a masked transformer ------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TransformerPromptResult(_PromptedClassifier):
    """Prompt tuning on a frozen masked transformer: ``prefix (k, d)`` the continuous prompt, ``head`` a
    :class:`LinearHead` on the law at MASK, accuracies, and the training loss per step ``losses (steps,)``."""

    prefix: np.ndarray
    head: LinearHead
    train_accuracy: float
    test_accuracy: float
    losses: np.ndarray

    def features(self, lm, tokens) -> jax.Array:
        """The frozen model's law at MASK with this prefix, ``(n, V)``."""
        toks = _check_transformer_tokens(lm, tokens, self.prefix.shape[0])
        return _prompted_transformer_probs(lm.graphdef, lm.state, jnp.asarray(self.prefix), toks)


def _check_transformer_tokens(lm, tokens, k, *, mask_slot: bool = True):
    """Tokens as a jax array after checking that ``lm`` is a masked TransformerLM whose positions hold the
    prefix k, the prepended MASK (``mask_slot``; the attention prompt masks in place instead) and x."""
    if not isinstance(lm, TransformerLM):
        raise ConfigError(f"lm: expected a TransformerLM, got {type(lm).__name__}")
    if lm.config.causal:
        raise ConfigError("lm: prompt tuning reads masked laws; this TransformerLM is causal "
                          "(train it with TransformerConfig(causal=False))")
    toks, _ = check_tokens(tokens, lm.n_symbols)
    if k + mask_slot + toks.shape[1] > lm.config.n_positions:
        raise TokenError(f"tokens: prefix k = {k}{' + MASK' if mask_slot else ''} + {toks.shape[1]} tokens "
                         f"exceeds the model's {lm.config.n_positions} positions (max_len + 1)")
    return jnp.asarray(toks)


def _masked_law(graphdef, state, prefix, tokens):
    model = nnx.merge(graphdef, state)
    logits = model(prepended_mask_inputs(tokens, model.config), prefix=prefix)[:, 0]
    return jax.nn.softmax(logits, axis=-1)


_prompted_transformer_probs = jax.jit(_masked_law, static_argnums=0)


@partial(jax.jit, static_argnames=("graphdef", "n_classes", "steps"))
def _fit_transformer(graphdef, state, tokens, labels, l2, lr, key, prefix0, n_classes, steps):
    def features(prefix):
        return _masked_law(graphdef, state, prefix, tokens)

    V = jax.eval_shape(features, prefix0).shape[-1]
    params = {"prefix": prefix0, "W": 0.1 * jax.random.normal(key, (V, n_classes)), "b": jnp.zeros(n_classes)}
    opt = optax.adam(lr)

    def loss(p):
        z, _, _ = _standardise(features(p["prefix"]))
        return _xent(z @ p["W"] + p["b"], labels) + 0.5 * l2 * jnp.sum(p["W"] ** 2)

    p, losses = minimise(loss, params, opt, steps)
    final = features(p["prefix"])
    _, mean, sd = _standardise(final)
    return p, mean, sd, losses, final


def fit_transformer_prompt(lm, tokens, labels, *, k: int = 1, n_classes: int = 2, steps: int = 200,
                           seed: int = 0, lr: float = 0.01, l2: float = 1e-4, test=None) -> TransformerPromptResult:
    """Prompt tuning of a frozen masked :class:`~simlm.models.TransformerLM`: a prefix ``(k, d)`` (initialised
    N(0, 0.02²), like the token embeddings) before (MASK, x_1..x_T) and a linear head on the law at MASK,
    trained jointly with Adam at ``lr`` for ``steps`` full-batch steps on cross-entropy + (l2/2)‖W‖².  The
    network's parameters are never updated (``jax.jit`` over a pure function of (prefix, head) with
    ``nnx.merge`` of the frozen state).  ``test=(tokens, labels)`` is scored."""
    if not isinstance(lm, TransformerLM):
        raise ConfigError(f"lm: expected a TransformerLM, got {type(lm).__name__}")
    toks, y, k, C = _check_common(tokens, labels, lm.n_symbols, k, n_classes)
    toks = _check_transformer_tokens(lm, toks, k)
    test, l2 = _check_test(test, lm.n_symbols, C), check_l2(l2)
    if test is not None:
        _check_transformer_tokens(lm, test[0], k)
    _check_fit_memory(1, k * lm.config.d_model, 0, steps)
    key_prefix, key_head = jax.random.split(jax.random.PRNGKey(check_positive_int("seed", seed, minimum=0)))
    prefix0 = 0.02 * jax.random.normal(key_prefix, (k, lm.config.d_model))
    p, mean, sd, losses, train_features = _fit_transformer(
        lm.graphdef, lm.state, toks, jnp.asarray(y), jnp.float32(0.0 if l2 == 0 else check_positive("l2", l2)),
        jnp.float32(check_positive("lr", lr)), key_head, prefix0, C, check_positive_int("steps", steps))
    head = LinearHead(np.asarray(p["W"]), np.asarray(p["b"]), np.asarray(mean), np.asarray(sd), np.asarray(losses))
    result = TransformerPromptResult(np.asarray(p["prefix"]), head, float("nan"), float("nan"), np.asarray(losses))
    return result._scored(lm, train_features, y, test)


__all__ = ["ExactPromptResult", "fit_exact_prompt", "TransformerPromptResult", "fit_transformer_prompt"]
