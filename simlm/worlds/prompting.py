"""Prompted posteriors of a hidden chain, exactly — the prompt tuning of Wei, Xie & Ma (NeurIPS 2021).

A prompt is k fake tokens z_1..z_k placed before the input, each given as its emission-likelihood row
u_j ∈ R^K_{≥0} over hidden states (``likelihoods (k, K)``; row j is P(z_j | H = ·) up to a constant).  The
prompt chain starts at π, so the law of the first state after the prompt is

    P(H = · | z_1:k) ∝ α = [((π∘u_1)A ∘ u_2)A … ∘ u_k] A                       (:func:`prompt_prior`)

and for an input x_1:T after it, or a masked position 0 between the prompt and x (Wei et al.'s setting),

    P(H_0 | z, x) ∝ α ∘ β_0(x),   β_0(h) ∝ P(x_1:T | H_0 = h)           (:func:`prompted_state_posterior`).

Since P(H_0 | x) ∝ π ∘ β_0(x), the prompt reweights every posterior by the same x-independent vector
r = α ⊘ π (:func:`prompt_reweighting`): P(H_0 | z, x) ∝ P(H_0 | x) ∘ r, wherever α vanishes where π does
(and no r exists for a prompt whose α vanishes wherever π > 0: it moves the chain onto states the
unprompted position 0 never takes).

The prompt changes which inputs are possible, not only their posterior: x is possible after the prompt
when p(x | z) > 0, with the input's first state drawn from the prompt's law, whatever its probability
without the prompt (a periodic chain, say, can make x possible only with a prompt, or only without one).
So every prompted law here comes with the per-step log-probs log p(x_t | z, x_<t) of x under the prompted
chain — the masked position 0 marginalised where there is one — and a world refuses exactly the inputs
the prompted chain cannot produce.

Every function here is pure ``jnp`` over one sequence, ``jax.jit``/``jax.vmap``-able, with the chain in
:mod:`simlm.worlds.hmm_core`'s convention (``transition`` dense ``(K, K)``, a shared ``(k, k)`` block or a
``(G, k, k)`` stack).  They compute in the dtype of their inputs: float32 by default, float64 for float64
inputs under ``jax.enable_x64(True)`` (as :mod:`simlm.theory.head_prompt` calls them).  The α recursion
runs on log-probabilities normalised at each step (:func:`log_prompt_prior`), so no prompt underflows or
loses a state between tokens; the input's side takes ``parallel`` and the float-range check of
:mod:`simlm.worlds.hmm_core`, and the worlds call it through :func:`~simlm.worlds.hmm_core.batched`, which
reruns a batch in log space where a product could have left the float range.  The prompt fits
differentiate :func:`fit_prompt_prior` instead.  :func:`check_prompt` is the one host-side validation of
a prompt; the worlds' methods (``world.prompted_state_posterior`` …) call it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import as_array
from simlm.errors import ConfigError, ShapeError
from simlm.precision import mm
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
    so the scaling changes no law, and a row of 1e39s or 1e-46s survives the cast to float32; an entry below
    the smallest normal float64 times its row's largest (1e-300 beside 1e300) is refused, not scaled to 0."""
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
    empty = ~(u > 0).any(1)  # not u.sum(1) == 0: a row of 1e308s would overflow the sum
    if empty.any():
        raise ConfigError(f"{name}: row {int(np.flatnonzero(empty)[0])} is all zero, so the prompt has "
                          "probability zero and every prompted posterior is undefined")
    scaled = u / u.max(1, keepdims=True)
    gone = (u > 0) & (scaled < np.finfo(np.float64).tiny)  # a ratio past float64 became 0: a state left the support
    if gone.any():
        j, h = (int(i[0]) for i in np.nonzero(gone))
        raise ConfigError(f"{name}: entry ({j}, {h}) is {u[j, h]:.3g}, below the smallest normal float64 times its "
                          f"row's largest ({u[j].max():.3g}): the ratio, which is all a prompted law reads, is not a "
                          "float64 number; set it to 0")
    return scaled


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
    hidden state after the prompt, exactly (e^{:func:`log_prompt_prior`}).  All zero when the prompt is
    impossible (α = 0)."""
    return jnp.exp(log_prompt_prior(initial, transition, likelihoods))


def log_prompt_prior(initial, transition, likelihoods) -> jax.Array:
    """log P(H = · | z_1:k), shape ``(K,)``, by the recursion on log-probabilities normalised at each prompt
    token, so a state that one token pushes below the float range and a later one favours comes back
    (the normalised products would flush it to 0 for good where A cannot refill it); −inf where the prompt
    rules a state out, and everywhere when the prompt is impossible."""
    log_a, log_u = jnp.log(transition), jnp.log(likelihoods)

    def step(log_alpha, log_u_j):
        return core._log_normalise(core._log_predict(log_alpha, log_a) + log_u_j), None

    log_alpha, _ = jax.lax.scan(step, core._log_normalise(jnp.log(initial) + log_u[0]), log_u[1:])
    return core._log_normalise(core._log_predict(log_alpha, log_a))


def fit_prompt_prior(initial, transition, likelihoods) -> jax.Array:
    """:func:`prompt_prior` by the normalised products ``α ← (α A ∘ u_j) / Σ``, the form a prompt fit
    differentiates (the log-space recursion's gradient is NaN at a state no prompt path reaches).  A share
    that leaves the float range between prompt tokens is lost, which a fit's softplus likelihoods over a
    few tokens never come near; exact laws use :func:`prompt_prior`."""
    def step(alpha, u):
        return _normalise(core.predict(alpha, transition) * u), None

    alpha, _ = jax.lax.scan(step, _normalise(initial * likelihoods[0]), likelihoods[1:])
    return _normalise(core.predict(alpha, transition))


def prompt_reweighting(initial, transition, likelihoods) -> jax.Array:
    """r = α ⊘ π scaled so that max r = 1, shape ``(K,)``: P(H_0 | z, x) ∝ P(H_0 | x) ∘ r for every input x.
    For k = 1, r ∝ Aᵀ(π ∘ u) ⊘ π.  States with π_h = 0 get r_h = 0, which keeps r finite; the identity then
    holds only for prompts with α_h = 0 wherever π_h = 0 (P(H_0 = h | x) = 0 for every x, while P(H_0 = h | z,
    x) ∝ α_h β_0(h) need not be) — the prompts of :func:`simlm.theory.head_prompt.prompt_feasibility`, which
    treat such states as off the task's support.  A prompt whose α vanishes wherever π > 0 (α lives only
    where π = 0: a deterministic 2-cycle started at e_0 with u = (1, 1)) has no reweighting at all; r is
    then all zero, the one output with max r ≠ 1, and ``world.prompt_reweighting`` refuses such a prompt."""
    alpha = prompt_prior(initial, transition, likelihoods)
    r = jnp.where(initial > 0, alpha / jnp.where(initial > 0, initial, 1.0), 0.0)
    top = r.max()
    return r / jnp.where(top > 0, top, 1.0)


#: β_0 ∝ P(x_1:T | H_0 = ·) ``(K,)`` and the per-step log-probs of x under H_1 ~ πA ``(T,)``, the
#: *unprompted* chain (:func:`simlm.worlds.hmm_core.prepended_backward`, ``parallel`` and its check
#: included).  β_0 does not depend on the prompt, so a prompt fit computes it once; whether x is possible
#: after a prompt is read from :func:`prompted_state_posterior`'s log-probs instead.
prepended_backward = core.prepended_backward


def reweight(prior, beta0) -> jax.Array:
    """P(H_0 | z, x) ∝ P(H_0 | z) ∘ β_0(x), normalised over the last axis (an all-zero row, a prompt
    incompatible with x, stays zero).  ``prior (K,)`` from :func:`prompt_prior`, ``beta0 (..., K)``."""
    return _normalise(prior * beta0)


def prompted_state_posterior(initial, transition, emission, likelihoods, tokens,
                             parallel=None) -> tuple[jax.Array, jax.Array]:
    """P(H_0 | z_1:k, x_1:T) ∝ P(H_0 | z) ∘ β_0(x), shape ``(K,)``, for the masked position 0 between the
    prompt and x; with the per-step log-probs of x under the prompted chain, log P(x_t | z, x_<t) for
    H_0 ~ P(H | z), H_1 ~ P(H | z) A ``(T,)`` (position 0 marginalised; −inf where the prompted world
    cannot produce x, whether or not the unprompted one can).  All zero when the prompt and x are
    incompatible (the caller raises).  ``parallel`` as in :mod:`simlm.worlds.hmm_core`: in log space the
    product is log P(H_0 | z) + log β_0, so neither factor is lost below the float range; checked, the
    prompt's law must keep every state it does not rule out above the floor, as in
    :func:`prompted_masked_token_probs`."""
    return core.prepended_posterior(initial, transition, emission, tokens, parallel,
                                    log_prior=log_prompt_prior(initial, transition, likelihoods))


def prompted_prepended_mask_probs(initial, transition, emission, likelihoods, tokens,
                                  parallel=None) -> tuple[jax.Array, jax.Array]:
    """The prompted masked LM's law at position 0, P(x_0 = · | z, x_1:T) = P(H_0 | z, x) B, ``(V,)``, with
    the per-step log-probs of x under the prompted chain (as :func:`prompted_state_posterior`)."""
    (post, steps), low = core._split(parallel, prompted_state_posterior(initial, transition, emission, likelihoods,
                                                                        tokens, parallel))
    return core._checked(parallel, (mm(post, emission), steps), low)


def prompted_masked_token_probs(initial, transition, emission, likelihoods, tokens,
                                parallel=None) -> tuple[jax.Array, jax.Array]:
    """The masked laws at every position of an input x_1:T placed right after the prompt (its first state
    drawn from :func:`prompt_prior`): P(x_t = · | z, x_−t), shape ``(T, V)``, with the per-step log-probs of
    x under the prompted chain ``(T,)`` (−inf where the prompted world cannot produce x).  Checked, the
    prompt's law must keep every state it does not rule out above the floor too: a share flushed to 0
    there would start the filter without it."""
    log_prior = log_prompt_prior(initial, transition, likelihoods)
    if parallel == core.LOG_SPACE:
        post, steps = core._log_space("masked_state_posterior", log_prior, transition, emission, tokens)
        return mm(post, emission), steps
    out, low = core._split(parallel, core.masked_token_probs(jnp.exp(log_prior), transition, emission, tokens,
                                                             parallel))
    least = jnp.exp(jnp.min(jnp.where(jnp.isfinite(log_prior), log_prior, jnp.inf)))  # 0 when below the range
    return core._checked(parallel, out, low, least)


__all__ = ["MAX_PROMPT_LENGTH", "check_prompt_length", "check_prompt", "prompt_rows", "prompt_prior",
           "log_prompt_prior", "fit_prompt_prior", "prompt_reweighting", "prepended_backward", "reweight",
           "prompted_state_posterior", "prompted_prepended_mask_probs", "prompted_masked_token_probs"]
