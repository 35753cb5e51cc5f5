"""Parallel-in-time HMM forward and backward passes (associative scan): O(T·K³) work, O(log T) depth.

The sequential scaled filter in :mod:`simlm.worlds.hmm_core` does T dependent K×K products; on an
accelerator each step is too small to fill the device and the T steps run one after another.  Here the
T steps are combined by ``jax.lax.associative_scan`` instead (Särkkä & García-Fernández 2021, "Temporal
parallelization of Bayesian smoothers"; the element below is the one of dynamax's
``parallel_inference``, with a per-row shift added), so the depth is O(log T) at the price of K×K·K
products: the right choice on GPU/TPU and for long T, not on a CPU (see ``hmm_core.use_parallel``).

Element of step t (the transition h_t → h_{t+1} after emitting x_t), for state rows i:

    C_t[i, j] = A[i, j] = p(h_{t+1} = j | h_t = i, x_t),       ℓ_t[i] = log B[i, x_t] = log p(x_t | h_t = i).

Composition of a segment s..t (C₁, ℓ₁) with the next segment t+1..u (C₂, ℓ₂) — derived, not stated in
the sources in this form:

    ℓ[i] = ℓ₁[i] + log Σ_j C₁[i, j] e^{ℓ₂[j]}               = log p(x_s:u | h_s = i),
    C[i, ·] = (C₁[i, ·] ∘ e^{ℓ₂}) C₂ / Σ_j C₁[i, j] e^{ℓ₂[j]} = p(h_{u+1} = · | h_s = i, x_s:u).

Both are exact and associative (they are the matrix product diag(e^{ℓ₁}) C₁ diag(e^{ℓ₂}) C₂ with each
row's scale kept in log space).  Numerics: every C row sums to 1 and every likelihood is a log, so no
product underflows with T; the sum Σ_j C₁[i, j] e^{ℓ₂[j]} is shifted by the largest ℓ₂[j] *on row i's
support*, so a row whose reachable states are all unlikely keeps its own finite log-scale instead of
underflowing against other rows (a global shift, as in dynamax, would send it to −inf).

ℓ is kept only up to a constant per element: each composed ℓ is shifted so that its largest entry (over
blocks and states) is 0.  Nothing needs the constant — C uses ℓ₂ only through row-wise ratios, ℓ₁'s
constant passes straight into ℓ, and both scans read ℓ only through normalised weights e^{ℓ − max ℓ}
(token log-probabilities come from the normalised laws, below).  Kept absolute, ℓ ≈ −(u − s)·H nats and
float32 rounds it to ~ε·(u − s)·H, so the differences between states that the weights depend on would
lose precision linearly in T; shifted, ℓ holds only those differences.

Outputs are those of the sequential core, to rounding: predicted laws p(h_t | x_<t) are read off the
prefix compositions, p_{t+1} ∝ Σ_i π_i e^{ℓ[i]} C[i, ·], and log c_t = log p_t · B[:, x_t] is computed at
each t from its own normalised p_t (never as a difference of cumulative log-likelihoods, which would
cost float32 precision growing with T).  Impossible tokens: the sequential filter skips a token with
c_t = 0 (the law stays p_t).  Which tokens it skips depends on the skips before, so here the scan is
redone with the first unskipped impossible token's likelihood set to 1 until none is left — once for
sequences with no impossible token, the common case (one extra scan per impossible token otherwise).

Block-diagonal transitions ``(k, k)`` or ``(G, k, k)`` (see ``hmm_core``) are kept as G blocks: a
composition costs G·k³, not (G·k)³.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from simlm.precision import EXACT  # true float32 products, never TF32 or bfloat16


def _stack(transition: jax.Array, K: int) -> jax.Array:
    """The transition as a (G, k, k) stack of diagonal blocks (G = 1 for a dense matrix)."""
    if transition.ndim == 3:
        return transition
    k = transition.shape[-1]
    return jnp.broadcast_to(transition, (K // k, k, k))


def compose(first, second):
    """The composition of two segments' elements ``(C (..., G, k, k), ℓ (..., G, k))`` (module docstring);
    the composed ℓ is returned shifted to max 0."""
    C1, l1 = first
    C2, l2 = second
    reach = C1 > 0
    shift = jnp.max(jnp.where(reach, l2[..., None, :], -jnp.inf), axis=-1)  # per row, over its support
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    W = jnp.where(reach, C1 * jnp.exp(jnp.where(reach, l2[..., None, :] - shift[..., None], 0.0)), 0.0)
    r = W.sum(-1)
    ok = r > 0
    rows = jnp.where(ok[..., None], W / jnp.where(ok, r, 1.0)[..., None], C1)  # an impossible row: any law
    return jnp.matmul(rows, C2, precision=EXACT), _relative(l1 + jnp.log(r) + shift)


def _relative(l):
    """ℓ − max ℓ over the last two axes (blocks, states), 0 where all are −∞: ℓ up to the constant that
    no reader needs (module docstring), and the stable shift before e^ℓ."""
    top = jnp.max(l, axis=(-2, -1), keepdims=True)
    return l - jnp.where(jnp.isfinite(top), top, 0.0)


def _elements(transition, emission, tokens, skipped):
    K = emission.shape[0]
    blocks = _stack(transition, K)
    G, k = blocks.shape[0], blocks.shape[-1]
    loglik = jnp.log(emission.T[tokens])  # (T, K)
    loglik = jnp.where(skipped[:, None], 0.0, loglik)
    return jnp.broadcast_to(blocks, (tokens.shape[0], G, k, k)), loglik.reshape(-1, G, k)


def _normalise(v):
    s = v.sum(-1, keepdims=True)
    return jnp.where(s > 0, v / jnp.where(s > 0, s, 1.0), v)


def _weighted(weights_log, C):
    """normalise(Σ_i e^{w_i} C[i, ·]) per block row vector, stable: ``weights_log (..., G, k)``."""
    v = jnp.einsum("...gi,...gij->...gj", jnp.exp(_relative(weights_log)), C, precision=EXACT)
    return _normalise(v.reshape(v.shape[:-2] + (v.shape[-2] * v.shape[-1],)))  # not -1: T = 1 has no rows


def forward(initial, transition, emission, tokens):
    """``(predicted (T, K), filtered (T, K), token_logprobs (T,))`` as ``hmm_core.forward``, by an
    associative scan.  Shapes: initial (K,), transition (K, K), (k, k) or (G, k, k), emission (K, V)."""
    T, K = tokens.shape[0], emission.shape[0]
    columns = emission.T[tokens]  # (T, K)
    log_pi = jnp.log(initial).reshape(-1, _stack(transition, K).shape[-1])

    def run(skipped):
        C, l = jax.lax.associative_scan(compose, _elements(transition, emission, tokens, skipped))
        later = _weighted(log_pi + l[:-1], C[:-1])  # p(h_{t+1} | x_≤t), t = 1..T-1
        pred = jnp.concatenate([initial[None], later], axis=0)
        c = (pred * columns).sum(-1)
        return pred, c

    def impossible_left(state):
        return state[3]

    def scan_and_skip(state):  # one compiled copy of the scan; reruns only while a new skip was added
        skipped = state[0]
        pred, c = run(skipped)
        bad = (c <= 0) & ~skipped
        return skipped.at[jnp.argmax(bad)].set(skipped[jnp.argmax(bad)] | bad.any()), pred, c, bad.any()

    dtype = emission.dtype
    start = (jnp.zeros((T,), bool), jnp.zeros((T, K), dtype), jnp.zeros((T,), dtype), jnp.array(True))
    _, pred, c, _ = jax.lax.while_loop(impossible_left, scan_and_skip, start)
    ok = c > 0
    filt = jnp.where(ok[:, None], pred * columns / jnp.where(ok, c, 1.0)[:, None], pred)
    return pred, filt, jnp.log(c)


def backward(transition, emission, tokens):
    """``(betas (T, K), beta_prepended (K,))`` as ``hmm_core.backward`` (normalised β_t ∝ p(x_{>t} | h_t)),
    by a reverse associative scan."""
    K = emission.shape[0]
    blocks = _stack(transition, K)
    elements = _elements(transition, emission, tokens, jnp.zeros(tokens.shape, bool))
    # suffix compositions E_s ∘ … ∘ E_T: ℓ[s] = log p(x_s:T | h_s) up to a constant (compose);
    # reverse=True hands fn (later, earlier)
    _, l = jax.lax.associative_scan(lambda later, earlier: compose(earlier, later), elements, reverse=True)
    beta = jnp.einsum("gij,tgj->tgi", blocks, jnp.exp(_relative(l)), precision=EXACT)  # ℓ[T] is a bare leaf
    beta = _normalise(beta.reshape(-1, K))  # β_{s-1}, s = 1..T
    last = jnp.full((1, K), 1.0 / K, emission.dtype)
    return jnp.concatenate([beta[1:], last], axis=0), beta[0]
