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

Underflow.  C's rows are laws, so a state's share of one can flush to 0 inside a composition — W's
C₁[i, j] e^{ℓ₂[j] − shift}, a product of the matmul, a weight e^{ℓ − max ℓ} of the read-outs — and, where A
has zeros (a transient state feeding absorbing ones, a block), never come back, with every c_t ordinary.
With ``track=True`` the elements carry a third entry, the least product any composition took (over the
entries that are exactly positive, so a flushed one counts as 0: :func:`_least_product`); the read-outs
add theirs, and the least exactly-positive share of each law they produce.  ``hmm_core`` compares these
with its float-range floor and reruns in log space (``hmm_core.batched``); without ``track`` nothing of it
is computed.

Block-diagonal transitions ``(k, k)`` or ``(G, k, k)`` (see ``hmm_core``) are kept as G blocks: a
composition costs G·k³, not (G·k)³.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from simlm.errors import ShapeError
from simlm.precision import EXACT  # true float32 products, never TF32 or bfloat16


def _require_positions(tokens) -> None:
    """A :class:`ShapeError` for a sequence of no tokens (static: raised while tracing), which the scans' argmax
    and indexing (here, and ``hmm_core.next_token_probs``' loop) met as a bare ValueError or IndexError (a review,
    2026-12-06; the worlds refuse T = 0 first)."""
    if tokens.shape[0] == 0:
        raise ShapeError("tokens: a sequence of no tokens (T = 0): the scans need at least one position")


def _stack(transition: jax.Array, K: int) -> jax.Array:
    """The transition as a (G, k, k) stack of diagonal blocks (G = 1 for a dense matrix)."""
    if transition.ndim == 3:
        return transition
    k = transition.shape[-1]
    return jnp.broadcast_to(transition, (K // k, k, k))


def compose(first, second):
    """The composition of two segments' elements ``(C (..., G, k, k), ℓ (..., G, k))`` (module docstring);
    the composed ℓ is returned shifted to max 0.  Elements may carry a third entry ``low (...)``, the least
    product the scan has read (module docstring, "Underflow"): the composition's is the least of both
    elements' and of its own (:func:`_least_product`), and nothing else in the result depends on it."""
    C1, l1, *low1 = first
    C2, l2, *low2 = second
    reach = C1 > 0
    shift = jnp.max(jnp.where(reach, l2[..., None, :], -jnp.inf), axis=-1)  # per row, over its support
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    W = jnp.where(reach, C1 * jnp.exp(jnp.where(reach, l2[..., None, :] - shift[..., None], 0.0)), 0.0)
    r = W.sum(-1)
    ok = r > 0
    rows = jnp.where(ok[..., None], W / jnp.where(ok, r, 1.0)[..., None], C1)  # an impossible row: any law
    out = jnp.matmul(rows, C2, precision=EXACT), _relative(l1 + jnp.log(r) + shift)
    if not low1:
        return out
    # rows[i, m] is exactly positive where row i is possible, reaches m, and m can emit the later segment
    live = reach & jnp.isfinite(l2)[..., None, :] & (ok & jnp.isfinite(l1))[..., None]
    return out + (jnp.minimum(jnp.minimum(low1[0], low2[0]), _least_product(rows, live, C2)),)


def _least_product(rows, live, C):
    """The least product ``rows[..., i, m] · C[..., m, j]`` of a matmul ``rows @ C`` (stacks of ``(G, k, k)``
    blocks) over the entries of ``rows`` that are exactly positive (``live``) — 0 where one of them was
    flushed to 0 — and the positive entries of ``C``; ``+inf`` when there is none.  A product below the
    float range is dropped from the matmul's sum, so the caller compares this with 4 · tiny.  Per middle
    index m it is (least live rows[·, m]) × (least positive C[m, ·]): O(k²), not the matmul's O(k³)."""
    a = jnp.min(jnp.where(live, rows, jnp.inf), axis=-2)  # (..., G, k): over i, for each m
    b = jnp.min(jnp.where(C > 0, C, jnp.inf), axis=-1)  # (..., G, k): over j, for each m
    both = jnp.isfinite(a) & jnp.isfinite(b)
    return jnp.min(jnp.where(both, a * jnp.where(both, b, 1.0), jnp.inf), axis=(-2, -1))


def _relative(l):
    """ℓ − max ℓ over the last two axes (blocks, states), 0 where all are −∞: ℓ up to the constant that
    no reader needs (module docstring), and the stable shift before e^ℓ."""
    top = jnp.max(l, axis=(-2, -1), keepdims=True)
    return l - jnp.where(jnp.isfinite(top), top, 0.0)


def _elements(transition, emission, tokens, skipped, track=False):
    K = emission.shape[0]
    blocks = _stack(transition, K)
    G, k = blocks.shape[0], blocks.shape[-1]
    loglik = jnp.log(emission.T[tokens])  # (T, K)
    loglik = jnp.where(skipped[:, None], 0.0, loglik)
    out = jnp.broadcast_to(blocks, (tokens.shape[0], G, k, k)), loglik.reshape(-1, G, k)
    return out + (jnp.full(tokens.shape, jnp.inf, emission.dtype),) if track else out


def _normalise(v):
    s = v.sum(-1, keepdims=True)
    return jnp.where(s > 0, v / jnp.where(s > 0, s, 1.0), v)


def _weighted(weights_log, C, track=False):
    """normalise(Σ_i e^{w_i} C[i, ·]) per block row vector, stable: ``weights_log (..., G, k)``.  With
    ``track``, also ``(least product, least share)``: the least product e^{w_i} · C[i, j] of the sum
    (:func:`_least_product`; a weight flushed to 0 although w_i is finite counts as 0) and the least entry
    of the result that is exactly positive (a row of finite weight reaches it), 0 where it was flushed."""
    w = jnp.exp(_relative(weights_log))
    v = jnp.einsum("...gi,...gij->...gj", w, C, precision=EXACT)
    out = _normalise(v.reshape(v.shape[:-2] + (v.shape[-2] * v.shape[-1],)))  # not -1: T = 1 has no rows
    if not track:
        return out
    live = jnp.isfinite(weights_log)
    product = _least_product(w[..., None, :], live[..., None, :], C)
    reached = jnp.any(live[..., :, None] & (C > 0), axis=-2).reshape(out.shape)
    return out, (product, jnp.min(jnp.where(reached, out, jnp.inf), axis=-1))


def forward(initial, transition, emission, tokens, track=False):
    """``(predicted (T, K), filtered (T, K), token_logprobs (T,))`` as ``hmm_core.forward``, by an
    associative scan.  Shapes: initial (K,), transition (K, K), (k, k) or (G, k, k), emission (K, V).

    With ``track``, a fourth output ``(product, share)`` (scalars) for the float-range check of ``hmm_core``
    (module docstring, "Underflow"): the least product any prefix's compositions and read-outs took, and
    the least exactly-positive share of any predicted law (0 where one was flushed)."""
    _require_positions(tokens)
    T, K = tokens.shape[0], emission.shape[0]
    columns = emission.T[tokens]  # (T, K)
    log_pi = jnp.log(initial).reshape(-1, _stack(transition, K).shape[-1])
    dtype = emission.dtype

    def run(skipped):
        C, l, *low = jax.lax.associative_scan(compose, _elements(transition, emission, tokens, skipped, track))
        later = _weighted(log_pi + l[:-1], C[:-1], track)  # p(h_{t+1} | x_≤t), t = 1..T-1
        lows = ()
        if track:
            later, (product, share) = later
            first = jnp.min(jnp.where(initial > 0, initial, jnp.inf)).astype(dtype)  # p_1 = π, read as is
            lows = ((jnp.minimum(low[0][:-1], product).min(initial=jnp.inf),
                     jnp.minimum(first, share.min(initial=jnp.inf))),)
        pred = jnp.concatenate([initial[None], later], axis=0)
        c = (pred * columns).sum(-1)
        return (pred, c) + lows

    def impossible_left(state):
        return state[3]

    def scan_and_skip(state):  # one compiled copy of the scan; reruns only while a new skip was added
        skipped = state[0]
        pred, c, *lows = run(skipped)
        bad = (c <= 0) & ~skipped
        return (skipped.at[jnp.argmax(bad)].set(skipped[jnp.argmax(bad)] | bad.any()), pred, c, bad.any(),
                *lows)

    start = (jnp.zeros((T,), bool), jnp.zeros((T, K), dtype), jnp.zeros((T,), dtype), jnp.array(True))
    start += ((jnp.zeros((), dtype),) * 2,) if track else ()
    _, pred, c, _, *lows = jax.lax.while_loop(impossible_left, scan_and_skip, start)
    ok = c > 0
    filt = jnp.where(ok[:, None], pred * columns / jnp.where(ok, c, 1.0)[:, None], pred)
    return (pred, filt, jnp.log(c), *lows)


def backward(transition, emission, tokens, track=False):
    """``(betas (T, K), beta_prepended (K,))`` as ``hmm_core.backward`` (normalised β_t ∝ p(x_{>t} | h_t)),
    by a reverse associative scan.  With ``track``, a third output ``(product, share)`` as in :func:`forward`,
    for the suffix compositions, their read-out A e^ℓ and the messages β."""
    _require_positions(tokens)
    K = emission.shape[0]
    blocks = _stack(transition, K)
    elements = _elements(transition, emission, tokens, jnp.zeros(tokens.shape, bool), track)
    # suffix compositions E_s ∘ … ∘ E_T: ℓ[s] = log p(x_s:T | h_s) up to a constant (compose);
    # reverse=True hands fn (later, earlier)
    _, l, *low = jax.lax.associative_scan(lambda later, earlier: compose(earlier, later), elements, reverse=True)
    u = jnp.exp(_relative(l))  # ℓ[T] is a bare leaf
    beta = jnp.einsum("gij,tgj->tgi", blocks, u, precision=EXACT)
    beta = _normalise(beta.reshape(-1, K))  # β_{s-1}, s = 1..T
    last = jnp.full((1, K), 1.0 / K, emission.dtype)
    betas = jnp.concatenate([beta[1:], last], axis=0)
    if not track:
        return betas, beta[0]
    # the read-out A e^ℓ: products A[i, j] e^{ℓ_j} (rows of e^ℓ against Aᵀ), and β's exactly positive shares
    live = jnp.isfinite(l)
    product = _least_product(u[..., None, :], live[..., None, :], jnp.swapaxes(blocks, -1, -2))
    reached = jnp.any((blocks > 0) & live[:, :, None, :], axis=-1).reshape(beta.shape)
    share = jnp.min(jnp.where(reached, beta, jnp.inf), initial=1.0 / K)  # 1/K: the start the sequential scan reads
    return betas, beta[0], (jnp.minimum(low[0], product).min(), share)
