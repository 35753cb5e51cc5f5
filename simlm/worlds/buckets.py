"""Shape buckets: small HMMs and sequences padded up to a few fixed sizes, exactly, so that one compiled
function serves every (n, K, V, T) in a bucket.

Every new shape is an XLA compilation (~0.1–1 s); a property test that draws K ≤ 5 states, V ≤ 6 symbols
and T ≤ 8 tokens would otherwise compile for most of its examples.  Each size up to :data:`LARGEST` is
rounded up to the next of :data:`SIZES` (larger ones are left alone — padding costs work, and large shapes
repeat), and the padding is inert — derived here, checked against enumeration by the tests:

- states K → K' : the new states have π = 0 and no transition into them (their A rows are the identity
  on the new states), so p(h_t = new | ·) = 0 at every t and every law on the K old states is unchanged;
- symbols V → V' ≥ V + 1 : the new symbols have emission probability 0 from every old state, except the
  last, the *blank*, whose emission column is all ones — likelihood 1 in every state, i.e. no observation;
- positions T → T' : appended positions hold the blank.  The forward pass reads them only after position
  T − 1, and the backward messages through unobserved steps are β = A·1, A's row sums, for the β_T = 1
  they replace: the same to rounding when A's rows sum to 1, so every law at t < T is unchanged.  A chain
  with rows off 1 by more than rounding (a world stores such rows renormalised, but a pytree's leaves
  replaced by a transformation need not be) would read its posteriors and masked laws through those row
  sums — 1e-3 off for rows 1e-3 off, and different in every T bucket — so for the functions that read β
  (``reads_backward``) its T is not padded (:func:`rows_sum_to_one`; one compile per T for such a chain).  Log-likelihoods are sums over the real positions only;
- sequences n → n' : appended sequences are all blank, and are dropped from the outputs.

Outputs are sliced back to (n, T, K, V) on the host.  The values equal the unpadded computation's up to
float rounding (a dot product over K' terms, K' − K of them zero, may be summed in another order).

Sampling pads only K and V, with zero probabilities, and sets every entry of the cumulative rows from the
real last column on to 2 (above every uniform in [0, 1), so a padded column is never chosen).  The CDF's
real columns are the cumulative sums of the unpadded rows (trailing zeros add nothing; XLA's cumsum was
checked bit-identical for every V < 64 and the tests check it on drawn shapes), and the uniforms are drawn
for the requested (n, T), so a bucketed draw is bit-identical to an unbucketed one.  CDFs and draws are
one compiled call per bucket, with no round trip to the host in between.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import check_tokens
from simlm.errors import TokenError
from simlm.worlds import hmm_core as core

#: the sizes each of n, K, V + 1 and T is rounded up to
SIZES = (4, 8, 16, 32, 64)
#: sizes above this are not padded
LARGEST = SIZES[-1]


def bucket(size: int) -> int:
    """The bucket of ``size``: the smallest of :data:`SIZES` ≥ size, or size itself above :data:`LARGEST`."""
    return next((b for b in SIZES if b >= size), size)


def padded_chain(initial, transition, emission, n_states: int, n_symbols: int):
    """``(π', A', B')`` over ``n_states`` ≥ K states and ``n_symbols`` ≥ V + 1 symbols, the last the blank
    (module docstring); numpy arrays of the input's dtype."""
    pi, A, B = (np.asarray(a) for a in (initial, transition, emission))
    (K, V), dtype = B.shape, B.dtype
    pi2 = np.zeros(n_states, dtype)
    pi2[:K] = pi
    A2 = np.eye(n_states, dtype=dtype)
    A2[:K, :] = 0
    A2[:K, :K] = A
    B2 = np.zeros((n_states, n_symbols), dtype)
    B2[:K, :V] = B
    B2[:, -1] = 1  # the blank: no observation
    return pi2, A2, B2


def _fits(*sizes: int) -> bool:
    return all(s <= LARGEST for s in sizes)


def rows_sum_to_one(transition) -> bool:
    """Whether every row of ``transition`` (its stored values, summed in float64) is within 4 ulps of its
    dtype of 1: a law rounded to the dtype is (≤ 2⁻²⁴ off in float32), a row accepted with a looser
    ``atol`` need not be.  Blank steps appended to a sequence are inert in the backward pass exactly when
    this holds (module docstring)."""
    a = np.asarray(transition)
    return bool(np.all(np.abs(a.astype(np.float64).sum(-1) - 1.0) <= 4 * np.finfo(a.dtype).eps))


def bucketed(fn, outputs: tuple, *, reads_backward: bool = False):
    """``fn(initial, transition, emission, tokens)`` (jitted, batched over sequences) run on the bucketed
    shapes, outputs sliced back.  ``outputs`` names each output's axes after the sequence axis, e.g.
    ``(("T", "V"), ("T",))`` for (laws (n, T, V), log-probs (n, T)).  Dense chains only; block-diagonal
    transitions, shapes above :data:`LARGEST` and calls inside a trace (jit, vmap) go to ``fn`` unchanged.
    ``reads_backward``: ``fn`` reads the backward messages β (a posterior, a masked law), so T is padded
    only for a transition whose rows sum to 1 (:func:`rows_sum_to_one`; module docstring).  Outside a trace
    the token ids are checked first (:class:`~simlm.errors.TokenError` for an id outside [0, V)): padded, an id
    V or −1 read the blank column (log p = 0, as if unobserved) or a zero column (−inf), and unpadded XLA clamps
    it to V − 1 (a review, 2026-12-06)."""

    @functools.wraps(fn)
    def run(initial, transition, emission, tokens):
        traced = any(isinstance(a, jax.core.Tracer) for a in (initial, transition, emission, tokens))
        if not traced:  # before the shapes are read: 1-D tokens raised numpy's unpacking ValueError
            if check_tokens(tokens, emission.shape[-1])[1]:  # one sequence
                raise TokenError(f"tokens: expected a batch of shape (n, T), got shape {np.shape(tokens)}; "
                                 "the World methods take one sequence (T,)")
        (K, V), (n, T) = emission.shape, tokens.shape
        if traced or transition.shape != (K, K) or not _fits(n, K, V + 1, T):
            return fn(initial, transition, emission, tokens)
        pad_T = not reads_backward or rows_sum_to_one(transition)
        sizes = {"K": bucket(K), "V": bucket(V + 1), "T": bucket(T) if pad_T else T}
        chain = padded_chain(initial, transition, emission, sizes["K"], sizes["V"])
        toks = np.full((bucket(n), sizes["T"]), sizes["V"] - 1, np.int32)
        toks[:n, :T] = np.asarray(tokens)
        out = fn(*chain, toks)
        real = {"K": K, "V": V, "T": T}
        sliced = [np.asarray(o)[(slice(n),) + tuple(slice(real[a]) for a in axes)] for o, axes in
                  zip(out if isinstance(out, tuple) else (out,), outputs)]
        sliced = [jax.device_put(s) for s in sliced]  # jnp.asarray would compile a copy per shape
        return tuple(sliced) if isinstance(out, tuple) else sliced[0]

    return run


_tree_sum = jax.jit(core.tree_sum)


def bucketed_log_likelihood(token_logprobs):
    """log p(x_1:T) = tree_sum over the real positions of ``token_logprobs`` (a :func:`bucketed` function):
    the blank positions are excluded, not summed as log 1 (whose float value need not be exactly 0).

    The real (n, T) log-probs are summed zero-padded to the n and T buckets, so one compiled sum serves a
    bucket.  It is the unpadded sum bit for bit: tree_sum itself pads T with zeros to a power of two, the
    buckets are powers of two, so the padding only adds exact zeros (x + 0 = x; no log-prob is −0)."""

    def log_likelihood(initial, transition, emission, tokens):
        steps = token_logprobs(initial, transition, emission, tokens)
        if isinstance(steps, jax.core.Tracer) or not _fits(*steps.shape):
            return _tree_sum(steps)
        n, T = steps.shape
        padded = np.zeros((bucket(n), bucket(T)), steps.dtype)
        padded[:n, :T] = np.asarray(steps)
        return jax.device_put(np.asarray(_tree_sum(padded))[:n])

    return log_likelihood


@functools.partial(jax.jit, static_argnums=(5, 6))
def sample_chain(initial, transition, emission, sizes, key, n_sequences: int, length: int):
    """``core.sample`` from probabilities zero-padded past the real ``sizes = (K, V)`` (int32; equal to
    the shapes when nothing is padded), CDFs and all in one compiled call: every CDF entry from the real
    last column on is 2, so a padded state or symbol is never chosen (module docstring)."""
    last = [sizes[0] - 1, sizes[0] - 1, sizes[1] - 1]
    cums = [jnp.where(jnp.arange(a.shape[-1]) >= end, 2.0, core.cumulative_rows(a))
            for a, end in zip((initial, transition, emission), last)]
    return core.sample(*cums, key, n_sequences, length)


def sample_tokens(initial, transition, emission, key, n_sequences: int, length: int):
    """``core.sample`` on the K and V buckets, bit-identical to the unbucketed draw (module docstring)."""
    (K, V), chain = emission.shape, (initial, transition, emission)
    if transition.shape == (K, K) and _fits(K, V + 1):
        Kb, Vb = bucket(K), bucket(V + 1)
        padded = [np.zeros(shape, emission.dtype) for shape in ((Kb,), (Kb, Kb), (Kb, Vb))]
        padded[0][:K], padded[1][:K, :K], padded[2][:K, :V] = (np.asarray(a) for a in chain)
        chain = padded
    return sample_chain(*chain, np.array([K, V], np.int32), key, n_sequences, length)
