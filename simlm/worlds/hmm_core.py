"""Exact HMM inference as pure functions on arrays (the core under :class:`simlm.worlds.HMM`).

Model: h_1 ~ π, h_{t+1} | h_t ~ A[h_t], x_t | h_t ~ B[h_t]; K states, V symbols.  Every function takes
one sequence ``tokens (T,)`` and is ``jax.jit``/``jax.vmap``-able; the classes vmap over sequences.

Block-diagonal transitions.  ``transition`` may be a ``(k, k)`` block shared by ``G = K / k`` blocks or a
``(G, k, k)`` stack: the state index is ``g·k + i`` and the chain never leaves its block g.  A dense HMM
is the case k = K.  This is how worlds with a variable fixed per sequence (a memory, a concept) reuse this
core at cost G·k² per step instead of (G·k)².

Numerics: the *scaled* forward recursion (Rabiner 1989, §V.A) —

    α̃_t = p_t ∘ B[:, x_t],   c_t = Σ_k α̃_t(k) = p(x_t | x_<t),   α_t = α̃_t / c_t,   p_{t+1} = α_t A,

with p_1 = π, so log p(x_1:T) = Σ_t log c_t.  Each step costs one (K)·(K×K) product; the α_t are
normalised, so the sequence's probability never underflows however long it is, and the Σ log c_t is a
pairwise (tree) sum, whose own float32 rounding grows like log T rather than T — but each log c_t carries
its rounding (~1 ulp of c_t, ~6e-8 nats near c = 1), which adds up like T where c_t repeats (peaked
emissions, V = 1): up to 6e-4 nats for a sequence of probability 1 at T = 20000 (8 random chains, K = 7,
V = 1, float32; 1e-7 for half of them).  One thing can still
underflow: a state's share of α_t.  In a chain that can refill it (every state positive in A) that loses
nothing measurable, but where A has zeros — a memory or a concept fixed per sequence (block-diagonal A),
an absorbing state — a share flushed to 0 never comes back, and evidence that later favours it is read as
if that state did not exist (log p(x) tens of nats off).  The scans therefore track the smallest positive
share they multiply, and :func:`batched` — every entry point of the world classes — reruns a batch in
which any product could have left the float range (a share below tiny ÷ (min⁺A · min⁺B), tiny the smallest
normal float; for a posterior, a row total near tiny, as when past and future evidence disagree by more
than the float holds) with the same recursions on log-probabilities, which cost K² exponentials a step
and cannot lose a share (the associative scans, which compose segments in another order, track the
products and shares of their compositions the same way: :mod:`simlm.worlds.hmm_parallel`).
:func:`batched` runs that rerun in float64 whatever the world's dtype, and rounds its outputs once: in
float32 the log-space scans pay in precision — a log B entry near −69 (B ~ 1e-30) carries an absolute
rounding of ~8e-6 (laws a few 1e-6 off), and a buried share's log, near −100 to −1000, adds its rounding of
1e-5 to 6e-5 every step in the same direction (next-token laws 2.3e-4 off after 1600 steps, 2026-12-06).
Sampled sequences of a world with every entry of A positive never need the rerun; long sequences of a
memory world, whose other memories' shares fall below the range, do.  The core functions called directly
run the scan they are asked for, in the dtype they are given, unchecked.  The backward messages
β_t(k) ∝ p(x_{>t} | h_t = k) are normalised to sum 1 at each step (any per-step scale cancels in every
posterior below).  A token of probability zero gives c_t = 0, log c_t = −inf and leaves the filter
unchanged, so no NaN ever appears.

Parallel in time.  Every inference function takes ``parallel``: ``False`` runs the sequential scans
here, ``True`` the associative scans of :mod:`simlm.worlds.hmm_parallel` (O(T·K³) work, O(log T)
depth; the same outputs to rounding), and ``None`` (the default) chooses by :func:`use_parallel` —
parallel on an accelerator for T ≥ :data:`PARALLEL_MIN_LENGTH` while the scan's n·T·K² floats fit in
:data:`PARALLEL_MAX_BYTES`, sequential otherwise and always on a CPU, where the K-fold extra work is
never repaid.  (A batch that large has n·K² work in every sequential step, enough to fill a device.)
Under ``vmap`` a core function sees one sequence; the batched entry points of :mod:`simlm.worlds.hmm`
decide for the whole batch (:func:`batched`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from simlm.errors import ConfigError, ShapeError
from simlm.precision import EXACT, in_float64, mm  # every product at full float32 (simlm.precision)
from simlm.worlds import hmm_parallel

#: the shortest sequence for which ``parallel=None`` picks the associative scan on an accelerator.
PARALLEL_MIN_LENGTH = 64
#: the most the associative scan may hold (n·T·K² floats, every level of the scan) for ``parallel=None``
#: to pick it: above this it would exhaust an accelerator's memory, where the sequential scan needs n·T·K
PARALLEL_MAX_BYTES = 1 << 30


class Chain(NamedTuple):
    """The exact hidden chain behind a world's tokens: ``initial (K,)``, ``transition`` (dense ``(K, K)``, a
    shared ``(k, k)`` block or a ``(G, k, k)`` stack, as above) and ``emission (K, V)``."""

    initial: jax.Array
    transition: jax.Array
    emission: jax.Array

    def dense_transition(self) -> jax.Array:
        """The ``(K, K)`` transition matrix, block-diagonal blocks materialised (for small worlds)."""
        A, K = self.transition, self.initial.shape[0]
        if A.ndim == 2 and A.shape[0] == K:
            return A
        blocks = A if A.ndim == 3 else jnp.broadcast_to(A, (K // A.shape[-1],) + A.shape)
        G, k = blocks.shape[0], blocks.shape[-1]
        eye = jnp.eye(G, dtype=A.dtype)
        return jnp.einsum("gh,gij->gihj", eye, blocks, precision=EXACT).reshape(G * k, G * k)


class Forward(NamedTuple):
    """Output of :func:`forward` for one sequence of length T over K states."""

    predicted: jax.Array  # (T, K)  p(h_t | x_<t)
    filtered: jax.Array  # (T, K)  p(h_t | x_≤t)
    token_logprobs: jax.Array  # (T,)  log p(x_t | x_<t) = log c_t


# ---- block-diagonal transition operator -------------------------------------------------------

def _blocks(v: jax.Array, transition: jax.Array) -> jax.Array:
    k = transition.shape[-1]
    return v.reshape(v.shape[:-1] + (v.shape[-1] // k, k))


def predict(alpha: jax.Array, transition: jax.Array) -> jax.Array:
    """p_{t+1} = α_t A for a dense or block-diagonal A; ``alpha (..., K)``."""
    a = _blocks(alpha, transition)
    if transition.ndim == 2:
        out = mm(a, transition)
    else:
        out = jnp.einsum("...gi,gij->...gj", a, transition, precision=EXACT)
    return out.reshape(alpha.shape)


def retrodict(beta: jax.Array, transition: jax.Array) -> jax.Array:
    """A β (the backward step) for a dense or block-diagonal A; ``beta (..., K)``."""
    b = _blocks(beta, transition)
    if transition.ndim == 2:
        out = mm(b, transition.T)
    else:
        out = jnp.einsum("gij,...gj->...gi", transition, b, precision=EXACT)
    return out.reshape(beta.shape)


def _normalise(v: jax.Array) -> jax.Array:
    s = v.sum(-1, keepdims=True)
    return jnp.where(s > 0, v / jnp.where(s > 0, s, 1.0), v)


#: Internal modes of ``parallel`` (:func:`batched`): ``CHECKED``, the sequential scans returning ``(out,
#: low)`` with ``low`` the smallest positive normalised share a product of the scan read (compared with
#: :func:`floor`); ``CHECKED_SCANS``, the associative scans, whose ``low`` is the least of their own
#: shares and products (:func:`_scans_low`), of their c_t (:func:`_scans_share`) and of a posterior's row
#: total; ``LOG_SPACE``, the sequential scans on log-probabilities (:func:`_log_forward`), which nothing
#: can push out of the float range, at K² exponentials a step — the rerun of a batch that needs it.
CHECKED, CHECKED_SCANS, LOG_SPACE = "checked", "checked-scans", "log-space"
#: Two more internal modes of the sequential scans of :func:`token_logprobs` and :func:`next_token_probs` (its
#: loop for K < V), for ≥ 2 sequences of ≥ :data:`POSSIBLE_FROM` tokens (:func:`batched`, ``possible=True``):
#: ``POSSIBLE``, CHECKED without its fallback for c_t = 0 (an impossible token), so that a step's product
#: waits for the multiply p_t ∘ B[:, x_t] alone, not for its sum c_t as well: on a CPU the product and the sum
#: run side by side.  A scan with some c_t = 0 (its row turns to NaN after it) returns ``(out, low, True)``,
#: and :func:`batched` reruns the batch under CHECKED; where every c_t > 0 it computes CHECKED's numbers bit
#: for bit.  ``BOUNDED``, the same without tracking the shares, for a chain whose every share is provably
#: above :func:`floor` (:func:`shares_bounded`): its ``low`` is +inf.  Together, the forward pass of 256
#: sequences of 512 at K = 256 on a 2-core CPU: 122 → 90 ms (K = 64: 12.1 → 10.2 ms).
POSSIBLE, BOUNDED = "possible", "bounded"
_MODES = (CHECKED, CHECKED_SCANS, LOG_SPACE, POSSIBLE, BOUNDED)


def _lowest(low: jax.Array, v: jax.Array) -> jax.Array:
    """A sequential scan's running least positive share, kept per state: ``low`` and ``v`` of one shape, the
    minimum taken entry by entry and reduced once after the loop (``jnp.min``: the same number as the least
    positive entry reduced every step, a minimum being exact in any order).  That reduction every step cost
    12–25 % of a checked forward pass on a CPU (K = 16 to 256, 256 sequences of 512)."""
    return jnp.minimum(low, jnp.where(v > 0, v, jnp.inf))


def _no_low(v: jax.Array) -> jax.Array:
    """The running minimum of :func:`_lowest` before any share: +inf in ``v``'s shape."""
    return jnp.full(v.shape, jnp.inf, v.dtype)


#: steps per iteration of a sequential scan of at least :data:`UNROLL_FROM` steps (the same products,
#: fewer loop iterations); with :func:`_lowest`, the checked forward pass of 256 sequences of 512 on a
#: 2-core CPU took 3.6 / 13.7 / 104 ms at K = 16 / 64 / 256, against 5.1 / 15.1 / 121 ms rolled.  Shorter
#: scans stay rolled (unrolling adds ~45 % to their compile time, which a property test's many small
#: shapes pay, and their loops are short).  XLA may fuse an unrolled step's reductions in another order:
#: log c_t can differ in its last bit from the rolled loop's; the laws came out the same to the bit.
UNROLL, UNROLL_FROM = 4, 64


def _unroll(length: int, rolled: int = 1) -> int:
    """The ``unroll`` of a sequential scan over ``length`` tokens: :data:`UNROLL` from :data:`UNROLL_FROM`
    tokens on, else ``rolled``."""
    return UNROLL if length >= UNROLL_FROM else rolled


#: the shortest sequence for which :func:`batched` runs ``POSSIBLE`` or ``BOUNDED`` (above every bucket's T,
#: :data:`simlm.worlds.buckets.LARGEST`: a property test's batches, many with an impossible token, never
#: compile a second program for the rerun)
POSSIBLE_FROM = 128


def _possible(parallel) -> bool:
    return isinstance(parallel, str) and parallel in (POSSIBLE, BOUNDED)


def shares_bounded(initial, transition, emission) -> jax.Array:
    """Whether every share of p_t the scans read is provably ≥ :func:`floor`, so that ``BOUNDED`` need not
    track them: A dense with every entry positive, and m = min(min A, min⁺π) ≥ 2 · floor.

    Why: p_1 = π, and for t ≥ 2, p_t(j) = Σ_k f(k) A(k, j) ≥ min A · Σ_k f(k) = min A over the normalised
    filter f; the roundings of the K products, of their sum, of c_t and of 1/c_t take less than a factor
    1 − (K + 3) · 2⁻²⁴ ≥ 1/2 of it (float32, K < 2²²).  So every share of p_t is ≥ m / 2 ≥ floor.  Only
    where every c_t > 0 (``POSSIBLE``; the filter is then p_t ∘ b / c_t, summing to 1).  The tests check the
    bound against the scans' own p_t."""
    K = emission.shape[0]
    if transition.shape != (K, K):  # blocks (one shared or a stack): a block's share can fall without bound
        return jnp.asarray(False)
    m = jnp.minimum(jnp.min(transition), jnp.min(jnp.where(initial > 0, initial, jnp.inf)))
    return (jnp.min(transition) > 0) & (m >= 2 * floor(transition, emission))


def floor(transition, emission) -> jax.Array:
    """The smallest share of a normalised α_t or β_t (or of a posterior's total) that is safe: above it
    every product of a step — share × A entry × B entry — is a normal float, so nothing exactly positive
    is flushed to 0 (module docstring); 4 × tiny ÷ (min⁺A · min⁺B), min⁺ the least positive entry."""
    tiny = jnp.finfo(emission.dtype).tiny
    least = lambda a: jnp.min(jnp.where(a > 0, a, 1.0))
    return 4 * tiny / least(transition) / least(emission)


#: the floor and :func:`shares_bounded`, one call and one wait on the host: :func:`batched` reads them before
#: every batch
_range_facts = jax.jit(lambda initial, transition, emission: (floor(transition, emission),
                                                              shares_bounded(initial, transition, emission)))


def _checked(parallel, out, *lows, logc=None):
    """``(out, min(lows))`` under ``parallel=CHECKED`` or ``CHECKED_SCANS``; ``(out, min(lows), whether
    some c_t = 0)`` under ``POSSIBLE`` or ``BOUNDED`` (``logc`` the scan's log c_t); else ``out``."""
    if not _is_checked(parallel):
        return out
    low = jnp.min(jnp.stack([jnp.asarray(v, _out_dtype(out)) for v in lows]))
    if not _possible(parallel):
        return out, low
    return out, low, jnp.asarray(False) if logc is None else jnp.any(logc == -jnp.inf)


def _is_checked(parallel) -> bool:
    return isinstance(parallel, str) and parallel in (CHECKED, CHECKED_SCANS, POSSIBLE, BOUNDED)


def _out_dtype(out):
    return jax.tree.leaves(out)[0].dtype


def tree_sum(x: jax.Array) -> jax.Array:
    """Σ over the last axis by pairwise halving (error O(log T · eps) instead of O(T · eps))."""
    n = x.shape[-1]
    size = 1 << max(n - 1, 0).bit_length()
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - n)])
    while x.shape[-1] > 1:
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def _unnormalised_filter(pred, lik, possible: bool = False):
    """(p_t ∘ b_t, 1/c_t, log c_t): the filter before its division, so that a product of it can be divided
    at the matmul's output and fuse with it; c_t = 0 leaves the filter at p_t (scale 1).  ``possible``:
    no such fallback (``POSSIBLE``), so that a product of p_t ∘ b_t need not wait for c_t; the same numbers
    where c_t > 0."""
    joint = pred * lik
    c = joint.sum()
    if possible:
        return joint, 1.0 / c, jnp.log(c)
    ok = c > 0
    return jnp.where(ok, joint, pred), jnp.where(ok, 1.0 / jnp.where(ok, c, 1.0), 1.0), jnp.log(c)


def _filter_and_predict(pred, lik, transition, possible: bool = False):
    """p_{t+1} = (p_t ∘ b_t / c_t) A, computed as ((p_t ∘ b_t) A) · (1/c_t).  Returns (p_{t+1}, log c_t)."""
    joint, scale, logc = _unnormalised_filter(pred, lik, possible)
    return predict(joint, transition) * scale, logc


def _parallel(parallel, emission, length: int, n_sequences: int = 1) -> bool:
    """:func:`use_parallel` for ``n_sequences`` of ``length`` tokens of the chain with this ``emission`` (its
    K states and float size); one sequence inside a core function, the whole batch in :func:`batched`."""
    if isinstance(parallel, str) and parallel in _MODES:
        return parallel == CHECKED_SCANS
    return use_parallel(parallel, length, emission.shape[0], n_sequences, emission.dtype.itemsize)


def batched(fn, possible: bool = False):
    """``vmap(fn)`` over the sequences of ``fn(initial, transition, emission, *shared, tokens, parallel)``,
    jitted, with ``shared`` (a prompt, say) the same for every sequence and ``parallel=None`` decided for
    the whole (n, T) batch (:func:`use_parallel` with n sequences) from the static shapes.  A batch in which
    a product could have left the float range (module docstring; for the associative scans, a posterior
    row whose every term is below it) is rerun in log space (``LOG_SPACE``): decided on the host, so the
    log-space scan compiles only for a batch that needs it (under an outer trace, by ``lax.cond``).  A
    world whose :func:`floor` is ≥ 1 (entries so small that even a share of 1 could flush) would rerun
    every batch, so it goes to log space directly.  ``possible``: ``fn`` has the ``POSSIBLE`` and
    ``BOUNDED`` modes, run first for ≥ 2 sequences of ≥ :data:`POSSIBLE_FROM` tokens on the sequential scans
    (``BOUNDED`` where :func:`shares_bounded`); a batch with an impossible token is rerun under
    ``CHECKED``.  Not under an outer trace, where the batch runs ``CHECKED`` as before."""

    def mapped(parallel):
        def run(initial, transition, emission, *args):
            *shared, tokens = args
            return jax.vmap(lambda x: fn(initial, transition, emission, *shared, x, parallel))(tokens)
        return run

    def checked(parallel):
        def run(initial, transition, emission, *args):
            out, low, *impossible = mapped(parallel)(initial, transition, emission, *args)
            return out, jnp.any(low < floor(transition, emission)), *(jnp.any(i) for i in impossible)
        return jax.jit(run)

    sequential, scans = checked(CHECKED), checked(CHECKED_SCANS)
    assuming = {POSSIBLE: checked(POSSIBLE), BOUNDED: checked(BOUNDED)} if possible else {}
    exact = jax.jit(mapped(LOG_SPACE))
    exact64 = _in_float64(exact)  # the same program, compiled for float64 inputs

    def run(initial, transition, emission, *args):
        n, T = args[-1].shape
        traced = any(isinstance(a, jax.core.Tracer) for a in (initial, transition, emission, *args))
        if not traced:
            least, bounded = _range_facts(initial, transition, emission)
            if float(least) >= 1:  # even a share of 1 may flush: no point
                return exact64(initial, transition, emission, *args)
        spec = jax.ShapeDtypeStruct(emission.shape, jax.dtypes.canonicalize_dtype(emission.dtype))  # as jit sees it
        first = scans if _parallel(None, spec, T, n) else sequential
        if first is sequential and assuming and not traced and runs_possible(n, T):
            out, lost, impossible = assuming[BOUNDED if bool(bounded) else POSSIBLE](
                initial, transition, emission, *args)
            if bool(impossible):  # a token of probability 0 somewhere: CHECKED keeps its filter at p_t
                out, lost = sequential(initial, transition, emission, *args)
        else:
            out, lost = first(initial, transition, emission, *args)
        if isinstance(lost, jax.core.Tracer):
            return jax.lax.cond(lost, exact, lambda *_: out, initial, transition, emission, *args)
        return exact64(initial, transition, emission, *args) if lost else out

    run.modes = tuple(assuming)  # () or (POSSIBLE, BOUNDED): what the batch may run first (tests read it)
    return run


def runs_possible(n: int, T: int) -> bool:
    """Whether :func:`batched` runs ``POSSIBLE`` or ``BOUNDED`` first for n sequences of T tokens (on the
    sequential scans, untraced): T ≥ :data:`POSSIBLE_FROM` and n ≥ 2 — for one sequence XLA fused the step's
    sum c_t another way once nothing else waited for it, and log c_t moved in its last bit (a review,
    2026-12-06); from two on, CHECKED's numbers bit for bit."""
    return T >= POSSIBLE_FROM and n >= 2


def _in_float64(fn):
    """``fn`` run under 64-bit JAX on its floating arrays cast to float64, its floating outputs cast back to
    the emission's dtype: the log-space rerun's shares of a buried block are numbers near −100 to −1000,
    whose float32 rounding (ulp 1e-5 to 6e-5) every step adds in the same direction — a float32 rerun of
    1600 steps was 2.3e-4 off in its next-token laws, in float64 rounding (1e-7).  Not under an outer trace,
    which the context manager cannot reach: there the rerun runs in the trace's own dtype."""
    def run(initial, transition, emission, *args):
        dtype = jnp.asarray(emission).dtype
        if dtype == jnp.float64:
            return fn(initial, transition, emission, *args)
        return jax.tree.map(lambda o: o.astype(dtype) if jnp.issubdtype(o.dtype, jnp.floating) else o,
                            in_float64(fn, initial, transition, emission, *args))

    return run


def use_parallel(parallel, length: int, n_states: int = 1, n_sequences: int = 1, itemsize: int = 4) -> bool:
    """Whether to run the associative scan: ``parallel`` if it is True or False; for None, True exactly
    when the default backend is not the CPU, ``length`` ≥ :data:`PARALLEL_MIN_LENGTH` and the scan's
    ``n_sequences · length · n_states²`` floats of ``itemsize`` bytes fit in :data:`PARALLEL_MAX_BYTES`
    (on a CPU the sequential scan does K times less work and both run one core's worth of width).
    Anything else raises :class:`ConfigError` (at trace time, before compiling)."""
    if parallel is None:
        scan_bytes = int(n_sequences) * int(length) * int(n_states) ** 2 * int(itemsize)
        return (jax.default_backend() != "cpu" and length >= PARALLEL_MIN_LENGTH
                and scan_bytes <= PARALLEL_MAX_BYTES)
    if not isinstance(parallel, bool):
        raise ConfigError(f"parallel: expected True, False or None (choose by backend), got {parallel!r}")
    return parallel


# ---- log space (the exact rerun) ------------------------------------------------------------------

def _log_normalise(v: jax.Array) -> jax.Array:
    """v − log Σ e^v over the last axis; an all −∞ row stays as it is."""
    top = logsumexp(v, axis=-1, keepdims=True)
    return jnp.where(jnp.isfinite(top), v - top, v)


def _log_predict(log_alpha: jax.Array, log_transition: jax.Array) -> jax.Array:
    """log(e^{log α} A) for a dense or block-diagonal A given as log A (``predict`` in log space)."""
    a = _blocks(log_alpha, log_transition)
    return logsumexp(a[..., :, None] + log_transition, axis=-2).reshape(log_alpha.shape)


def _log_retrodict(log_beta: jax.Array, log_transition: jax.Array) -> jax.Array:
    """log(A e^{log β}) (``retrodict`` in log space)."""
    b = _blocks(log_beta, log_transition)
    return logsumexp(log_transition + b[..., None, :], axis=-1).reshape(log_beta.shape)


def _log_forward(log_initial, transition, emission, tokens):
    """``(log p(h_t | x_<t), log p(h_t | x_≤t), log c_t)`` ``((T, K), (T, K), (T,))``: :func:`forward`'s
    recursion on log-probabilities, normalised every step, so a share far below the float range is a
    large negative number instead of 0 and comes back exactly when later evidence favours it."""
    log_a, log_b = jnp.log(transition), jnp.log(emission.T)

    def step(log_pred, x):
        joint = log_pred + log_b[x]
        log_c = logsumexp(joint)
        log_filt = jnp.where(jnp.isfinite(log_c), joint - log_c, log_pred)  # c = 0: the filter stays
        return _log_predict(log_filt, log_a), (log_pred, log_filt, log_c)

    return jax.lax.scan(step, log_initial, tokens)[1]


def _log_backward(transition, emission, tokens):
    """``(log β_t (T, K), log β_0 (K,))``, normalised: :func:`backward` on log-probabilities."""
    log_a, log_b = jnp.log(transition), jnp.log(emission.T)
    K = emission.shape[0]

    def step(log_beta, x):
        return _log_normalise(_log_retrodict(log_b[x] + log_beta, log_a)), log_beta

    log_beta0, log_betas = jax.lax.scan(step, jnp.full((K,), -jnp.log(K), emission.dtype), tokens, reverse=True)
    return log_betas, log_beta0


def _log_space(name, log_initial, transition, emission, tokens):
    """The inference function ``name`` computed in log space (``parallel=LOG_SPACE``) from the chain's
    log π: posteriors are normalised as log α + log β, so no row is lost to products below the float
    range either."""
    if name == "backward":
        log_betas, log_beta0 = _log_backward(transition, emission, tokens)
        return jnp.exp(log_betas), jnp.exp(log_beta0)
    log_pred, log_filt, log_c = _log_forward(log_initial, transition, emission, tokens)
    if name == "forward":
        return Forward(jnp.exp(log_pred), jnp.exp(log_filt), log_c)
    if name == "token_logprobs":
        return log_c
    if name == "next_token_probs":
        return mm(jnp.exp(log_pred), emission), log_c
    log_alpha = log_filt if name == "smoothed_posterior" else log_pred  # masked: x_t itself not read
    return jnp.exp(_log_normalise(log_alpha + _log_backward(transition, emission, tokens)[0])), log_c


# ---- posteriors kept as logs ----------------------------------------------------------------------
# A label argmax(L P) can be decided by shares far below the float range (a nearly one-hot posterior whose
# leading state carries no weight in L): as probabilities they are 0 and the label a tie; as logs they are
# large negative numbers and the label is exact.  Each returns (log posterior, log c_t (T,)).

def log_filtered_posterior(initial, transition, emission, tokens):
    """``(log p(h_t | x_≤t) (T, K), log c_t (T,))``: the forward filter on log-probabilities."""
    _, log_filt, log_c = _log_forward(jnp.log(initial), transition, emission, tokens)
    return log_filt, log_c


def log_smoothed_posterior(initial, transition, emission, tokens):
    """``(log p(h_t | x_1:T) (T, K), log c_t (T,))``: forward–backward on log-probabilities."""
    _, log_filt, log_c = _log_forward(jnp.log(initial), transition, emission, tokens)
    return _log_normalise(log_filt + _log_backward(transition, emission, tokens)[0]), log_c


def log_prepended_posterior(initial, transition, emission, tokens):
    """``(log p(h_0 | x_1:T) (K,), log c_t (T,))`` for a masked position 0 before x_1 (h_0 ~ π, h_1 ~ πA)."""
    log_beta0, log_c = _log_prepended(initial, transition, emission, tokens)
    return _log_normalise(jnp.log(initial) + log_beta0), log_c


# ---- inference ----------------------------------------------------------------------------------

def forward(initial, transition, emission, tokens, parallel=None) -> Forward:
    """Scaled forward pass: predicted and filtered state laws and log p(x_t | x_<t) at each t.

    Shapes: initial (K,), transition (k, k) or (G, k, k) with G·k = K, emission (K, V), tokens (T,).
    """
    if parallel == LOG_SPACE:
        return _log_space("forward", jnp.log(initial), transition, emission, tokens)
    if _parallel(parallel, emission, tokens.shape[0]):
        if not _is_checked(parallel):
            return Forward(*hmm_parallel.forward(initial, transition, emission, tokens))
        *fw, lows = hmm_parallel.forward(initial, transition, emission, tokens, track=True)
        fw = Forward(*fw)
        return _checked(parallel, fw, _scans_share(fw.token_logprobs, transition, emission),
                        _scans_low(lows, transition, emission))
    columns = emission.T  # (V, K); B[:, x_t] is gathered inside the step, never as a (T, K) array

    def step(carry, x):
        pred, low = carry
        joint = pred * columns[x]
        c = joint.sum()
        filt = jnp.where(c > 0, joint / jnp.where(c > 0, c, 1.0), pred)
        return (predict(filt, transition), _lowest(low, pred)), (pred, filt, jnp.log(c))

    (_, low), (pred, filt, logc) = jax.lax.scan(step, (initial, _no_low(initial)), tokens,
                                                unroll=_unroll(tokens.shape[0]))
    return _checked(parallel, Forward(pred, filt, logc), jnp.min(low))


def token_logprobs(initial, transition, emission, tokens, parallel=None) -> jax.Array:
    """log p(x_t | x_<t) for each t, shape (T,), carrying only the filter (no (T, K) outputs)."""
    if parallel == LOG_SPACE:
        return _log_space("token_logprobs", jnp.log(initial), transition, emission, tokens)
    if _parallel(parallel, emission, tokens.shape[0]):
        fw, low = _split(parallel, forward(initial, transition, emission, tokens, parallel))
        return _checked(parallel, fw.token_logprobs, low)
    columns = emission.T
    possible, track = _possible(parallel), parallel != BOUNDED

    def step(carry, x):
        pred, low = carry
        nxt, logc = _filter_and_predict(pred, columns[x], transition, possible)
        return (nxt, _lowest(low, pred) if track else low), logc

    (_, low), logc = jax.lax.scan(step, (initial, _no_low(initial)), tokens, unroll=_unroll(tokens.shape[0]))
    return _checked(parallel, logc, jnp.min(low), logc=logc)


def log_likelihood(initial, transition, emission, tokens, parallel=None) -> jax.Array:
    """log p(x_1:T) = Σ_t log c_t (pairwise sum); −inf when the sequence is impossible."""
    out = token_logprobs(initial, transition, emission, tokens, parallel)
    return (tree_sum(out[0]), *out[1:]) if _is_checked(parallel) else tree_sum(out)


def backward(transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """Normalised backward messages β_t ∝ p(x_{>t} | h_t), shape (T, K), and β_0 ∝ p(x_1:T | h_0) for a
    position 0 prepended before x_1 (whose state precedes h_1 by one transition), shape (K,)."""
    if parallel == LOG_SPACE:
        return _log_space("backward", None, transition, emission, tokens)
    if _parallel(parallel, emission, tokens.shape[0]):
        if not _is_checked(parallel):
            return hmm_parallel.backward(transition, emission, tokens)
        betas, beta0, lows = hmm_parallel.backward(transition, emission, tokens, track=True)
        return _checked(parallel, (betas, beta0), _scans_low(lows, transition, emission))
    columns = emission.T
    K = emission.shape[0]

    def step(carry, x):
        beta, low = carry
        return (_normalise(retrodict(columns[x] * beta, transition)), _lowest(low, beta)), beta

    start = jnp.full((K,), 1.0 / K, emission.dtype)
    (beta_prepended, low), betas = jax.lax.scan(step, (start, _no_low(start)), tokens, reverse=True,
                                                 unroll=_unroll(tokens.shape[0]))
    return _checked(parallel, (betas, beta_prepended), jnp.min(low))


def next_token_logprobs(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """log p(x_t = · | x_<t), shape (T, V), with the per-step log-probs (T,).  The log of
    :func:`next_token_probs` where the scans run on probabilities (their check keeps every share ≥
    :func:`floor`, so each term p_t(h) B(h, v) is a normal float or 0); in log space (the rerun) a
    log-sum-exp over the states, so a law below the float range (1e-10 × 1e-30) is its finite log, not
    log 0 = −∞ for a token the world itself scores as possible."""
    if parallel == LOG_SPACE:
        log_pred, _, log_c = _log_forward(jnp.log(initial), transition, emission, tokens)
        return logsumexp(log_pred[:, :, None] + jnp.log(emission)[None], axis=1), log_c
    (probs, log_c), low, *impossible = _split(parallel, next_token_probs(initial, transition, emission, tokens,
                                                                          parallel))
    return ((jnp.log(probs), log_c), low, *impossible) if _is_checked(parallel) else (jnp.log(probs), log_c)


def next_token_probs(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """The optimal causal LM: p(x_t = · | x_<t) = p(h_t | x_<t) B, shape (T, V); with the per-step
    log-probs (T,)."""
    hmm_parallel._require_positions(tokens)  # the loop below indexed an empty sequence: a bare IndexError
    if parallel == LOG_SPACE:
        return _log_space("next_token_probs", jnp.log(initial), transition, emission, tokens)
    if _parallel(parallel, emission, tokens.shape[0]):
        fw, low = _split(parallel, forward(initial, transition, emission, tokens, parallel))
        return _checked(parallel, (mm(fw.predicted, emission), fw.token_logprobs), low)
    # The loop writes into a buffer it carries, so that under vmap XLA fills the (n, T, ·) result in place
    # instead of stacking (T, n, ·) and transposing it.  With K < V it stores p_t (K wide) and p_t B is one
    # large (threaded) matmul after the loop.  Otherwise the loop carries the law too: p_{t+1} B =
    # (f_t A) B = f_t (AB), so each step multiplies the unnormalised filter by A and by AB (K × V, formed
    # once) — two products of the same operand, off the chain of the next step's (p_{t+1} B waited for
    # p_{t+1} before).  Unrolled (:func:`_unroll`: the step is small; fewer loop iterations).
    columns = emission.T
    T, (K, V) = tokens.shape[0], emission.shape
    possible, track = _possible(parallel), parallel != BOUNDED
    if K < V:
        def step(t, carry):
            pred, out, logc, low = carry
            nxt, logc_t = _filter_and_predict(pred, columns[tokens[t]], transition, possible)
            return nxt, out.at[t].set(pred), logc.at[t].set(logc_t), _lowest(low, pred) if track else low

        init = (initial, jnp.zeros((T, K), emission.dtype), jnp.zeros((T,), emission.dtype), _no_low(initial))
        _, out, logc, low = jax.lax.fori_loop(0, T, step, init, unroll=_unroll(T, 2))
        return _checked(parallel, (mm(out, emission), logc), jnp.min(low), logc=logc)
    if transition.shape == (K, K):  # AB (K × V); a block-diagonal A block by block, never as a K × K matrix
        ab = mm(transition, emission)
    else:  # one (k, k) block for every group, or (G, k, k) blocks
        k = transition.shape[-1]
        rows = emission.reshape(K // k, k, V)
        spec = "ij,gjv->giv" if transition.ndim == 2 else "gij,gjv->giv"
        ab = jnp.einsum(spec, transition, rows, precision=EXACT).reshape(K, V)

    def step(t, carry):
        pred, law, out, logc, low = carry
        joint, scale, logc_t = _unnormalised_filter(pred, columns[tokens[t]])
        # joint·(AB) as well as joint·A: joint's own shares must clear the floor (AB's entries ≥ min⁺A·min⁺B)
        return (predict(joint, transition) * scale, mm(joint, ab) * scale, out.at[t].set(law),
                logc.at[t].set(logc_t), _lowest(low, joint))

    # the floor is tracked on joint = p_t ∘ B[:, x_t], whose products it guards; p_1 = π's own shares are
    # checked at the start (a π_k·B[k, x_1] flushed to 0 is no positive share of joint to see).  POSSIBLE and
    # BOUNDED run this step as CHECKED does (with the fallback, tracked, never flagged): without them its two
    # products ran slower on a CPU (K = V = 256: 219 → 231 and 251 ms, 256 sequences of 512)
    init = (initial, mm(initial, emission), jnp.zeros((T, V), emission.dtype), jnp.zeros((T,), emission.dtype),
            _lowest(_no_low(initial), initial))
    _, _, out, logc, low = jax.lax.fori_loop(0, T, step, init, unroll=_unroll(T, 2))
    return _checked(parallel, (out, logc), jnp.min(low))


def _split(parallel, out):
    """``(out, low)`` of a core function's result: its own under ``parallel=CHECKED``, else no bound."""
    return out if _is_checked(parallel) else (out, jnp.inf)


def _as_share(total, transition, emission) -> jax.Array:
    """A sum of K products, scaled so that it is below :func:`floor` exactly when it is < K · 2²⁴ · tiny: a
    larger one keeps what products below the float range could drop under 2⁻²⁴ of it.  Divided first: total ·
    floor is below the float range itself once total < min⁺A·min⁺B / 4, and read 0 (a rerun for a row total
    of 0.1)."""
    K, tiny = emission.shape[0], jnp.finfo(emission.dtype).tiny
    return total / (K * 2.0**24 * tiny) * floor(transition, emission)


def _total_share(joint, logc, transition, emission) -> jax.Array:
    """A posterior's least row total Σ_h α(h)β(h) as a share (:func:`_as_share`): contradicting past and
    future evidence can push every product of a row below the float range, leaving it all zero.  No bound
    for a sequence of probability zero (``logc`` has −inf): its posterior is undefined, and the caller
    refuses it."""
    total = joint.sum(-1).min(initial=jnp.inf)
    return jnp.where(jnp.isfinite(logc).all(), _as_share(total, transition, emission), jnp.inf)


def _scans_share(logc, transition, emission) -> jax.Array:
    """The associative scans' least c_t = p(x_t | x_<t) as a share (:func:`_as_share`): their p_t are read
    off e^{ℓ − max ℓ}, where a buried block's share is 0, so a token only it can emit gets c_t ≈ 0 —
    or exactly 0, counted impossible.  A truly impossible token reruns too, and stays impossible."""
    return _as_share(jnp.exp(logc.min(initial=jnp.inf)), transition, emission)


def _scans_low(lows, transition, emission) -> jax.Array:
    """The associative scans' own bound (``track=True`` in :mod:`simlm.worlds.hmm_parallel`) as a share:
    the least exactly-positive share of their laws (p_t or β_t; 0 where one was flushed), as the sequential
    scans read it, and the least product their compositions and read-outs took, which is below
    :func:`floor` here exactly when it is below 4 · tiny (a product the float range may drop).  Either can
    lose a state whose c_t stays ordinary: a transient state feeding absorbing ones, say, whose share of a
    composed row flushes and never comes back."""
    product, share = lows
    tiny = jnp.finfo(emission.dtype).tiny
    scale = floor(transition, emission) / (4 * tiny)
    return jnp.minimum(share, jnp.where(product < 4 * tiny, 0.0, product * scale))


def smoothed_posterior(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """p(h_t | x_1:T) ∝ α_t ∘ β_t, shape (T, K); with the per-step log-probs (T,).  Meaningless where x is
    impossible (a step's log-prob −inf): the rows there are not normalised laws; the worlds refuse such x."""
    return _posterior("smoothed_posterior", initial, transition, emission, tokens, parallel)


def masked_state_posterior(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """p(h_t | x_-t) ∝ p(h_t | x_<t) ∘ β_t — the state law when x_t is masked, shape (T, K).  Rows where
    p(x_−t) = 0 are meaningless (not normalised laws); the worlds refuse them."""
    return _posterior("masked_state_posterior", initial, transition, emission, tokens, parallel)


def _posterior(name, initial, transition, emission, tokens, parallel):
    """Forward–backward: the filtered (smoothed) or predicted (masked) law ∘ β_t, normalised."""
    if parallel == LOG_SPACE:
        return _log_space(name, jnp.log(initial), transition, emission, tokens)
    fw, low_f = _split(parallel, forward(initial, transition, emission, tokens, parallel))
    (betas, _), low_b = _split(parallel, backward(transition, emission, tokens, parallel))
    joint = (fw.filtered if name == "smoothed_posterior" else fw.predicted) * betas
    return _checked(parallel, (_normalise(joint), fw.token_logprobs), low_f, low_b,
                    _total_share(joint, fw.token_logprobs, transition, emission))


def masked_token_probs(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """The optimal masked LM at every position: p(x_t = · | x_-t) = p(h_t | x_-t) B, shape (T, V).

    Setting x_t's emission likelihood to 1 leaves p(h_t | x_<t) from the forward pass and β_t from the
    backward pass, neither of which reads x_t, so one forward–backward gives every position at once."""
    (post, logc), low = _split(parallel, masked_state_posterior(initial, transition, emission, tokens, parallel))
    return _checked(parallel, (mm(post, emission), logc), low)


def prepended_state_posterior(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """p(h_0 | x_1:T) ∝ π ∘ β_0 for a masked position 0 prepended before x_1 (h_0 ~ π, h_1 ~ π A).

    This is the masked position of Wei, Xie & Ma: sample x_0:T, mask x_0, read the law at position 0."""
    return prepended_posterior(initial, transition, emission, tokens, parallel)


def _log_prepended(initial, transition, emission, tokens, log_h0=None):
    """``(log β_0 (K,), log c_t (T,))`` in log space: :func:`prepended_backward` without leaving the logs,
    h_0 ~ π, or ~ e^{log_h0} when given (c_t then those of the chain with h_1 ~ e^{log_h0} A)."""
    log_h0 = jnp.log(initial) if log_h0 is None else log_h0
    log_c = _log_forward(_log_predict(log_h0, jnp.log(transition)), transition, emission, tokens)[2]
    return _log_backward(transition, emission, tokens)[1], log_c


def prepended_backward(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """β_0 ∝ p(x_1:T | h_0 = ·), shape ``(K,)`` (normalised), for a position 0 before x_1 (h_1 ~ π A), and
    log p(x_t | x_<t) of x under that chain, ``(T,)`` (−inf marks an impossible sequence)."""
    if parallel == LOG_SPACE:
        log_beta0, log_c = _log_prepended(initial, transition, emission, tokens)
        return jnp.exp(log_beta0), log_c
    (_, beta0), low_b = _split(parallel, backward(transition, emission, tokens, parallel))
    logc, low_f = _split(parallel, token_logprobs(predict(initial, transition), transition, emission, tokens,
                                                  parallel))
    return _checked(parallel, (beta0, logc), low_b, low_f)


def prepended_posterior(initial, transition, emission, tokens, parallel=None, log_prior=None):
    """:func:`prepended_state_posterior` with h_0's law π replaced by ρ = e^{log_prior} (a prompt's law,
    :mod:`simlm.worlds.prompting`): p(h_0 | x_1:T) ∝ ρ ∘ β_0, with the per-step log-probs of x under that
    chain, log p(x_t | x_<t) for h_0 ~ ρ, h_1 ~ ρA (−inf where it cannot produce x, whatever π does);
    ``log_prior`` None is π, and both are then exactly :func:`prepended_state_posterior`'s.  Checked, ρ's
    least share it does not rule out must clear the floor too (a share flushed to 0 would start the
    forward pass without it), as in :func:`simlm.worlds.prompting.prompted_masked_token_probs`."""
    if parallel == LOG_SPACE:
        log_h0 = jnp.log(initial) if log_prior is None else log_prior
        log_beta0, log_c = _log_prepended(initial, transition, emission, tokens, log_h0)
        return jnp.exp(_log_normalise(log_h0 + log_beta0)), log_c
    h0 = initial if log_prior is None else jnp.exp(log_prior)
    (beta0, logc), low = _split(parallel, prepended_backward(h0, transition, emission, tokens, parallel))
    joint = h0 * beta0
    lows = (low, _total_share(joint[None], logc, transition, emission))
    if log_prior is not None:  # ρ's least share it rules in: 0 when one is below the float range
        lows += (jnp.exp(jnp.min(jnp.where(jnp.isfinite(log_prior), log_prior, jnp.inf))),)
    return _checked(parallel, (_normalise(joint), logc), *lows)


def prepended_mask_probs(initial, transition, emission, tokens, parallel=None) -> tuple[jax.Array, jax.Array]:
    """Law of the prepended masked token: p(x_0 = · | x_1:T) = p(h_0 | x_1:T) B, shape (V,)."""
    (post, logc), low = _split(parallel, prepended_state_posterior(initial, transition, emission, tokens, parallel))
    return _checked(parallel, (mm(post, emission), logc), low)


# ---- sampling -----------------------------------------------------------------------------------

def cumulative_rows(probs: jax.Array) -> jax.Array:
    """Row-wise CDFs for inverse-CDF sampling, guarded to 2 from each row's last positive entry on, so
    that a uniform in [0, 1) always lands on an entry of positive probability, even when the row sums to
    a little less than 1 (rows are accepted within a tolerance, and rounding does the same) and ends in
    zeros — guarding only the last column would hand the shortfall to a zero-probability entry.

    Each row never decreases: XLA's ``cumsum`` of a long row (N ≳ 300 on a CPU) does not add left to right and
    can step down by an ulp past a tiny entry, so its running maximum is taken — the rows :func:`inverse_cdf`
    counts in and :func:`inverse_cdf_at` binary-searches, which agree only on rows that never decrease."""
    n = probs.shape[-1]
    last = n - 1 - jnp.argmax(jnp.flip(probs > 0, axis=-1), axis=-1)  # (…,): n - 1 for an all-zero row
    cum = jax.lax.cummax(jnp.cumsum(probs, axis=-1), axis=probs.ndim - 1)  # lax takes no negative axis
    return jnp.where(jnp.arange(n) >= last[..., None], 2.0, cum)


def inverse_cdf(cum_rows: jax.Array, u: jax.Array) -> jax.Array:
    """Index j with cum[j-1] ≤ u < cum[j] for each row (zero-probability entries are never chosen)."""
    return jnp.sum(cum_rows <= u[..., None], axis=-1, dtype=jnp.int32)


def inverse_cdf_at(cum: jax.Array, rows: jax.Array, u: jax.Array) -> jax.Array:
    """``inverse_cdf(cum[rows], u)`` by binary search: ⌈log₂(N + 1)⌉ gathers of one entry per draw instead of a
    row of N gathered and compared.  The same index, bit for bit, on the rows of :func:`cumulative_rows`: they
    never decrease, so the count of a row's entries ≤ u is where u falls in it.  :func:`sample` draws 2×
    (K = 16, 64) to 4× (K = 256) as fast with it as with the row compared (``benchmarks/worlds.py``, V = 256,
    a 2-core CPU, 2026-12-06)."""
    n = cum.shape[-1]
    if n == 0:
        raise ShapeError("cum: expected rows of at least one entry, got 0")
    pos, step = jnp.zeros(u.shape, jnp.int32), 1 << (n.bit_length() - 1)  # the largest power of 2 ≤ n
    while step:
        cand = pos + step
        below = cum[rows, jnp.minimum(cand, n) - 1] <= u
        pos = jnp.where((cand <= n) & below, cand, pos)
        step >>= 1
    return pos


def samples_in_parallel(parallel, length: int, n_states: int, n_sequences: int) -> bool:
    """Whether :func:`sample` draws its chain as the associative scan: :func:`use_parallel` over the
    chain's K + 1 states (the virtual start included), sized by its (T, n, K+1, K) comparisons, a byte each."""
    return use_parallel(parallel, length, n_states + 1, n_sequences, itemsize=1)


def sample(cum_start, cum_transition, cum_emission, key, n_sequences: int, length: int, parallel=None):
    """Draw ``(n, T)`` tokens and states with one uniform per draw, in the CDFs' dtype: float32 resolves a
    draw's probabilities to its 2⁻²³ grid (a word rarer than ~1e-7 comes out at a multiple of 2⁻²³, maybe
    0), float64 to 2⁻⁵².

    ``cum_start (K,)``, ``cum_transition (K, K)``, ``cum_emission (K, V)`` come from
    :func:`cumulative_rows`.  The chain starts from a virtual state K whose transition row is π.

    ``parallel`` (:func:`samples_in_parallel`; None: on an accelerator, for T ≥ 64 and n·T·(K+1)² bytes
    ≤ 1 GiB): the chain in O(log T) depth instead of T steps.  Step t's uniform u_t maps every state to its successor,
    F_t(k) = inverse_cdf(row k, u_t) — the function the sequential step applies to the one state it holds
    — so the state at t is (F_t ∘ … ∘ F_1)(K), and the prefix compositions of these integer maps are an
    associative scan; every token is then drawn from its state with its own uniform.  The same uniforms
    and the same indices (:func:`inverse_cdf_at` is :func:`inverse_cdf`): the draw is the sequential one bit for
    bit, on any backend."""
    K = cum_transition.shape[0]
    cum_trans_ext = jnp.concatenate([cum_transition, cum_start[None]], axis=0)
    u = jax.random.uniform(key, (length, 2, n_sequences), dtype=cum_transition.dtype)
    if samples_in_parallel(parallel, length, K, n_sequences):
        maps = inverse_cdf(cum_trans_ext, u[:, 0, :, None])  # (T, n, K+1): F_t(k) for every state k
        prefix = jax.lax.associative_scan(lambda a, b: jnp.take_along_axis(b, a, axis=-1), maps)  # b ∘ a
        states = prefix[..., K]
    else:
        def step(h_prev, u_t):
            h = inverse_cdf_at(cum_trans_ext, h_prev, u_t)
            return h, h

        _, states = jax.lax.scan(step, jnp.full((n_sequences,), K, jnp.int32), u[:, 0])
    return inverse_cdf_at(cum_emission, states, u[:, 1]).T, states.T  # every token from its state at once
