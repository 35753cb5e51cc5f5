"""Prompted posteriors of a hidden chain, exactly — the prompt tuning of Wei, Xie & Ma (NeurIPS 2021).

A prompt is k fake tokens z_1..z_k placed before the input, each given as its emission-likelihood row
u_j ∈ R^K_{≥0} over hidden states (``likelihoods (k, K)``; row j is P(z_j | H = ·) up to a constant).  The
prompt chain starts at π, so the law of the first state after the prompt is

    P(H = · | z_1:k) ∝ α = [((π∘u_1)A ∘ u_2)A … ∘ u_k] A                       (:func:`prompt_prior`)

and for an input x_1:T after it, or a masked position 0 between the prompt and x (Wei et al.'s setting),

    P(H_0 | z, x) ∝ α ∘ β_0(x),   β_0(h) ∝ P(x_1:T | H_0 = h)           (:func:`prompted_state_posterior`).

Since P(H_0 | x) ∝ π ∘ β_0(x), the prompt reweights every posterior by the same x-independent vector
r = α ⊘ π (:func:`prompt_reweighting`): P(H_0 | z, x) ∝ P(H_0 | x) ∘ r, wherever α vanishes where π does.

Every function here is pure ``jnp`` over one sequence, ``jax.jit``/``jax.vmap``-able, with the chain in
:mod:`simlm.worlds.hmm_core`'s convention (``transition`` dense ``(K, K)``, a shared ``(k, k)`` block or a
``(G, k, k)`` stack).  They compute in the dtype of their inputs: float32 by default, float64 for float64
inputs under ``jax.enable_x64(True)`` (as :mod:`simlm.theory.head_prompt` calls them).  The α recursion
is normalised at each step, so long prompts do not underflow.  :func:`check_prompt` is the one host-side
validation of a prompt; the worlds' methods (``world.prompted_state_posterior`` …) call it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import as_array
from simlm.errors import ConfigError, ShapeError
from simlm.worlds import hmm_core as core


#: the longest prompt the exact prompt functions take (k rows); far beyond any prompt a paper tunes, and it
#: keeps every loop over prompt positions short.
MAX_PROMPT_LENGTH = 10_000


def check_prompt_length(k, name: str = "k") -> int:
    """A prompt length 1 ≤ k ≤ :data:`MAX_PROMPT_LENGTH`, or :class:`ConfigError` naming ``name``."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_PROMPT_LENGTH:
        raise ConfigError(f"{name}: expected a prompt length, an integer in [1, {MAX_PROMPT_LENGTH}], got {k!r}")
    return int(k)


def check_prompt(likelihoods, n_states: int, name: str = "U") -> np.ndarray:
    """A prompt's likelihood rows as float64 ``(k, K)``, each scaled to a largest entry of 1 (a ``(K,)``
    vector is one prompt token), or a typed error naming ``name``: the shape must fit the K hidden states,
    entries be finite and ≥ 0, and no row be all zero (a prompt token of probability zero makes every
    input impossible).  A row is a likelihood up to a constant — every prompted law normalises it away —
    so the scaling changes no law, and a row of 1e39s or 1e-46s survives the cast to float32."""
    raw = as_array(name, likelihoods, what="prompt likelihoods, an array (k, K) or (K,)")
    if raw.dtype.kind not in "biuf":
        raise ConfigError(f"{name}: expected real prompt likelihoods, got dtype {raw.dtype}")
    u = raw.astype(np.float64)
    u = u[None] if u.ndim == 1 else u
    if u.ndim != 2 or u.shape[1] != n_states or u.shape[0] < 1:
        raise ShapeError(f"{name}: expected shape (k, {n_states}) — one likelihood row over the {n_states} "
                         f"hidden states per prompt token — or ({n_states},) for k = 1, got {raw.shape}")
    check_prompt_length(u.shape[0], f"{name} (its number of rows)")
    if not np.all(np.isfinite(u)) or np.any(u < 0):
        raise ConfigError(f"{name}: prompt likelihoods must be finite and ≥ 0")
    empty = u.sum(1) == 0
    if empty.any():
        raise ConfigError(f"{name}: row {int(np.flatnonzero(empty)[0])} is all zero, so the prompt has "
                          "probability zero and every prompted posterior is undefined")
    return u / u.max(1, keepdims=True)


def prompt_rows(likelihoods, n_states: int, dtype, name: str = "U") -> np.ndarray:
    """:func:`check_prompt`'s rows in ``dtype``, or :class:`ConfigError` when the cast would leave a positive
    entry below the dtype's smallest normal number (relative to its row's largest entry): XLA flushes such
    numbers to 0, which would change the prompt's support and so its laws."""
    u = check_prompt(likelihoods, n_states, name)
    cast = u.astype(dtype)
    lost = (u > 0) & (cast < np.finfo(dtype).tiny)
    if lost.any():
        j, h = (int(i[0]) for i in np.nonzero(lost))
        raise ConfigError(f"{name}: entry ({j}, {h}) is {u[j, h]:.3g} of its row's largest, below the smallest "
                          f"normal {np.dtype(dtype).name}; set it to 0 or compute in float64")
    return cast


def _normalise(v: jax.Array) -> jax.Array:
    s = v.sum(-1, keepdims=True)
    return v / jnp.where(s > 0, s, 1.0)


def prompt_prior(initial, transition, likelihoods) -> jax.Array:
    """P(H = · | z_1:k) = α / Σα, α = [((π∘u_1)A ∘ u_2)A … ∘ u_k]A, shape ``(K,)``: the law of the first
    hidden state after the prompt.  All zero when the prompt is impossible (α = 0)."""
    def step(alpha, u):
        return _normalise(core.predict(alpha, transition) * u), None

    alpha, _ = jax.lax.scan(step, _normalise(initial * likelihoods[0]), likelihoods[1:])
    return _normalise(core.predict(alpha, transition))


def prompt_reweighting(initial, transition, likelihoods) -> jax.Array:
    """r = α ⊘ π scaled so that max r = 1, shape ``(K,)``: P(H_0 | z, x) ∝ P(H_0 | x) ∘ r for every input x.
    For k = 1, r ∝ Aᵀ(π ∘ u) ⊘ π.  States with π_h = 0 get r_h = 0, which keeps r finite; the identity then
    holds only for prompts with α_h = 0 wherever π_h = 0 (P(H_0 = h | x) = 0 for every x, while P(H_0 = h | z,
    x) ∝ α_h β_0(h) need not be) — the prompts of :func:`simlm.theory.head_prompt.prompt_feasibility`, which
    treat such states as off the task's support."""
    alpha = prompt_prior(initial, transition, likelihoods)
    r = jnp.where(initial > 0, alpha / jnp.where(initial > 0, initial, 1.0), 0.0)
    top = r.max()
    return r / jnp.where(top > 0, top, 1.0)


def prepended_backward(initial, transition, emission, tokens) -> tuple[jax.Array, jax.Array]:
    """β_0 ∝ P(x_1:T | H_0 = ·), shape ``(K,)`` (normalised), for a position 0 before x_1 (H_1 ~ πA), and
    log P(x_t | x_<t) of x under that chain, ``(T,)`` (−inf marks an impossible sequence).  β_0 does not
    depend on the prompt, so a prompt fit computes it once."""
    _, beta0 = core.backward(transition, emission, tokens)
    return beta0, core.token_logprobs(core.predict(initial, transition), transition, emission, tokens)


def reweight(prior, beta0) -> jax.Array:
    """P(H_0 | z, x) ∝ P(H_0 | z) ∘ β_0(x), normalised over the last axis (an all-zero row, a prompt
    incompatible with x, stays zero).  ``prior (K,)`` from :func:`prompt_prior`, ``beta0 (..., K)``."""
    return _normalise(prior * beta0)


def prompted_state_posterior(initial, transition, emission, likelihoods, tokens) -> tuple[jax.Array, jax.Array]:
    """P(H_0 | z_1:k, x_1:T) ∝ P(H_0 | z) ∘ β_0(x), shape ``(K,)``, for the masked position 0 between the
    prompt and x; with the per-step log-probs of x (as :func:`prepended_backward`).  All zero when the
    prompt and x are incompatible (the caller raises)."""
    beta0, steps = prepended_backward(initial, transition, emission, tokens)
    return reweight(prompt_prior(initial, transition, likelihoods), beta0), steps


def prompted_masked_token_probs(initial, transition, emission, likelihoods, tokens) -> tuple[jax.Array, jax.Array]:
    """The masked laws at every position of an input x_1:T placed right after the prompt (its first state
    drawn from :func:`prompt_prior`): P(x_t = · | z, x_−t), shape ``(T, V)``, with the per-step log-probs of
    x under the prompted chain ``(T,)`` (−inf where the prompted world cannot produce x)."""
    return core.masked_token_probs(prompt_prior(initial, transition, likelihoods), transition, emission, tokens)


__all__ = ["MAX_PROMPT_LENGTH", "check_prompt_length", "check_prompt", "prompt_rows", "prompt_prior", "prompt_reweighting", "prepended_backward", "reweight", "prompted_state_posterior",
           "prompted_masked_token_probs"]
