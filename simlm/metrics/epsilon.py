"""Exact ε: how far a language model is from the world's optimal one, computed over the vocabulary.

For a causal LM p_θ and the world's next-token law p*, on a fixed held-out set of sequences,

    ε = (1/N) Σ_i (1/T_i) Σ_t KL(p*(·|x_<t) ‖ p_θ(·|x_<t)),
    KL(p ‖ q) = Σ_v p_v (log p_v − log q_v)           (nats per token),

computed exactly from the two conditional laws at every position — not estimated from the observed
next tokens.  Its standard error is over sequences: each sequence contributes its mean KL over
positions, and ε ± s.e. is the mean ± standard error of those N numbers.  The total variation
½‖p* − p_θ‖₁ is reported the same way.  The masked analogue replaces the causal laws by the laws of a
masked position given the rest of the sequence, p*(x_i = · | x_−i) and p_θ(x_i = · | x_−i).

Why the exact form: E_{x_t ~ p*}[log p*(x_t|x_<t) − log p_θ(x_t|x_<t)] = KL(p* ‖ p_θ), so the excess
cross-entropy of the model on sampled data is an unbiased but noisy estimate of ε; the exact sum over
the vocabulary removes the noise from the next token (the test suite checks the two agree).

:func:`kl_per_sequence` and :func:`tv_per_sequence` are pure ``jnp`` functions, usable inside
``jax.jit`` (a trainer calls them on precomputed p*); the other functions validate on the host.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from simlm.errors import ConfigError, ShapeError
from simlm.checks import check_positions, check_tokens, mean_and_sem


# ---- pure per-sequence divergences (jit-able) ----------------------------------------------------

def _mean_over_positions(per_position: jax.Array, mask) -> jax.Array:
    """Mean of ``(n, T)`` values over the valid positions of each sequence → ``(n,)``.

    A sequence with no valid position gets NaN (an empty mean), so it cannot be averaged in silently."""
    if mask is None:
        return per_position.mean(axis=-1)
    mask = jnp.asarray(mask, bool)
    total = jnp.where(mask, per_position, 0.0).sum(axis=-1)
    return total / mask.sum(axis=-1)


def kl_per_sequence(ref_logprobs, model_logprobs, mask=None) -> jax.Array:
    """Mean over valid positions of KL(p_ref ‖ p_model) = Σ_v p_ref,v (log p_ref,v − log p_model,v).

    Shapes: ``ref_logprobs``, ``model_logprobs`` ``(n, T, V)`` natural-log probabilities; ``mask``
    ``(n, T)`` (True = position counts) or None for all positions.  Returns ``(n,)`` in nats/token.

    Terms with p_ref,v = 0 contribute 0 (0·log 0 = 0), whatever the model says there, so no NaN
    appears; a model that gives probability 0 where p_ref,v > 0 gives +inf.  Per-position values are
    clamped at 0 (KL ≥ 0; float rounding can dip below it near p_model = p_ref).  The where-guards keep
    gradients with respect to ``model_logprobs`` finite as well (the trainer differentiates this)."""
    ref = jnp.asarray(ref_logprobs)
    model = jnp.asarray(model_logprobs)
    p = jnp.exp(ref)
    support = p > 0
    diff = jnp.where(support, ref - jnp.where(support, model, 0.0), 0.0)
    # KL ≥ 0; the clamp removes float rounding below 0 when p_model ≈ p_ref
    per_position = jnp.maximum(jnp.sum(jnp.where(support, p * diff, 0.0), axis=-1), 0.0)
    return _mean_over_positions(per_position, mask)


def tv_per_sequence(ref_logprobs, model_logprobs, mask=None) -> jax.Array:
    """Mean over valid positions of the total variation ½ Σ_v |p_ref,v − p_model,v| ∈ [0, 1].

    Shapes as in :func:`kl_per_sequence`; returns ``(n,)``."""
    per_position = 0.5 * jnp.abs(jnp.exp(jnp.asarray(ref_logprobs)) - jnp.exp(jnp.asarray(model_logprobs))).sum(-1)
    return _mean_over_positions(per_position, mask)


def observed_logprobs(logprobs, tokens) -> jax.Array:
    """log p(x_t) of the observed tokens: ``logprobs (n, T, V)``, ``tokens (n, T)`` → ``(n, T)``."""
    return jnp.take_along_axis(jnp.asarray(logprobs), jnp.asarray(tokens)[..., None], axis=-1)[..., 0]


_kl = jax.jit(kl_per_sequence)
_tv = jax.jit(tv_per_sequence)


# ---- host-side exact ε ----------------------------------------------------------------------------

def _check_pair(world, lm) -> int:
    v_world, v_lm = int(world.n_symbols), int(lm.n_symbols)
    if v_world != v_lm:
        raise ShapeError(f"lm: has n_symbols = {v_lm} but world has n_symbols = {v_world}; "
                         "ε compares laws over the same vocabulary")
    return v_world


def _check_laws(name: str, model, ref) -> jax.Array:
    model = jnp.asarray(model)
    if model.shape != ref.shape:
        raise ShapeError(f"lm: {name} returned shape {model.shape}, expected {ref.shape} (the world's laws)")
    return model


def _causal_laws(world, lm, tokens):
    _check_pair(world, lm)
    toks, _ = check_tokens(tokens, world.n_symbols)
    ref = jnp.asarray(world.next_token_logprobs(toks))
    model = _check_laws("next_token_logprobs", lm.next_token_logprobs(toks), ref)
    return toks, ref, model


def _masked_laws(world, lm, tokens, positions):
    _check_pair(world, lm)
    toks, _ = check_tokens(tokens, world.n_symbols)
    pos = check_positions(positions, toks.shape[1])
    if not callable(getattr(lm, "masked_token_logprobs", None)):
        raise ConfigError(f"lm: {type(lm).__name__} has no masked_token_logprobs, so its masked ε is undefined")
    ref = jnp.log(jnp.asarray(world.masked_token_probs(toks, pos)))
    model = _check_laws("masked_token_logprobs", lm.masked_token_logprobs(toks, pos), ref)
    return toks[:, pos], ref, model


def exact_epsilon(world, lm, tokens) -> tuple[float, float]:
    """ε = mean_i mean_t KL(p*(·|x_<t) ‖ p_θ(·|x_<t)) on ``tokens (n, T)`` and its standard error over
    sequences, nats/token.  ``lm`` is any LanguageModel (its ``next_token_logprobs`` is used)."""
    _, ref, model = _causal_laws(world, lm, tokens)
    return mean_and_sem(np.asarray(_kl(ref, model), np.float64))


def exact_masked_epsilon(world, lm, tokens, positions=None) -> tuple[float, float]:
    """Masked ε = mean_i mean_{t ∈ positions} KL(p*(x_t|x_−t) ‖ p_θ(x_t|x_−t)) and its standard error
    over sequences, nats/token (``lm.masked_token_logprobs`` against ``world.masked_token_probs``);
    ``positions`` None means every position."""
    _, ref, model = _masked_laws(world, lm, tokens, positions)
    return mean_and_sem(np.asarray(_kl(ref, model), np.float64))


def exact_prepended_epsilon(world, lm, tokens) -> tuple[float, float]:
    """ε at a mask prepended before x_1:T: mean_i KL(p*(x_0|x_1:T) ‖ p_θ(x_0|x_1:T)) and its standard error
    over sequences, nats (``lm.prepended_mask_logprobs`` against ``world.prepended_mask_probs``) — the law
    a head reads in Wei, Xie & Ma's posterior tasks."""
    _check_pair(world, lm)
    toks, _ = check_tokens(tokens, world.n_symbols)
    if not callable(getattr(lm, "prepended_mask_logprobs", None)):
        raise ConfigError(f"lm: {type(lm).__name__} has no prepended_mask_logprobs, so its prepended ε is undefined")
    ref = jnp.log(jnp.asarray(world.prepended_mask_probs(toks)))[:, None, :]
    model = _check_laws("prepended_mask_logprobs", jnp.asarray(lm.prepended_mask_logprobs(toks))[:, None, :], ref)
    return mean_and_sem(np.asarray(_kl(ref, model), np.float64))


@dataclasses.dataclass(frozen=True)
class DivergenceReport:
    """Exact divergences of an LM from the world on a fixed set of sequences (nats/token; every
    ``*_se`` is a standard error over sequences).

    ``model_cross_entropy`` = mean −log p_θ(x_t | context) of the observed tokens,
    ``optimal_cross_entropy`` the same under p*; their difference ``excess_cross_entropy`` (with its
    paired s.e.) is a sampled estimate of ``epsilon`` — equal to it in expectation over the data."""

    epsilon: float
    epsilon_se: float
    tv: float
    tv_se: float
    model_cross_entropy: float
    model_cross_entropy_se: float
    optimal_cross_entropy: float
    optimal_cross_entropy_se: float
    excess_cross_entropy: float
    excess_cross_entropy_se: float
    n_sequences: int
    n_positions: int
    masked: bool


def divergence_report(world, lm, tokens, *, masked: bool = False, positions=None) -> DivergenceReport:
    """ε, total variation and cross-entropies of ``lm`` against ``world`` on ``tokens (n, T)``; causal
    laws by default, masked laws (at ``positions``, default all) with ``masked=True``."""
    if masked:
        observed, ref, model = _masked_laws(world, lm, tokens, positions)
    else:
        if positions is not None:
            raise ConfigError("positions: only used with masked=True")
        observed, ref, model = _causal_laws(world, lm, tokens)
    kl = np.asarray(_kl(ref, model), np.float64)
    tv = np.asarray(_tv(ref, model), np.float64)
    ce_model = -np.asarray(observed_logprobs(model, observed), np.float64).mean(-1)
    ce_opt = -np.asarray(observed_logprobs(ref, observed), np.float64).mean(-1)
    n, P = observed.shape
    return DivergenceReport(
        *mean_and_sem(kl), *mean_and_sem(tv), *mean_and_sem(ce_model), *mean_and_sem(ce_opt),
        *mean_and_sem(ce_model - ce_opt), n_sequences=int(n), n_positions=int(n * P), masked=bool(masked),
    )


__all__ = [
    "kl_per_sequence",
    "tv_per_sequence",
    "observed_logprobs",
    "exact_epsilon",
    "exact_masked_epsilon",
    "exact_prepended_epsilon",
    "DivergenceReport",
    "divergence_report",
]
