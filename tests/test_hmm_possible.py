"""The sequential scans' ``POSSIBLE`` and ``BOUNDED`` modes (``hmm_core``): the step without its fallback for
an impossible token, and without tracking shares a chain provably keeps above the floor.  They must give
CHECKED's numbers bit for bit where every c_t > 0, flag a batch with some c_t = 0 (which :func:`batched`
reruns under CHECKED), and ``shares_bounded`` must only ever claim what the scans then read."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlm import HMM
from simlm.worlds import hmm as hmm_module
from simlm.worlds import hmm_core as core

T = core.POSSIBLE_FROM  # the shortest batch the entry points run these modes for
FUNCTIONS = ("token_logprobs", "next_token_probs", "next_token_logprobs")


@jax.jit
def _modes(initial, transition, emission, tokens):
    """Every function under CHECKED, POSSIBLE and BOUNDED, vmapped over the sequences."""
    return {(name, mode): jax.vmap(lambda x: getattr(core, name)(initial, transition, emission, x, mode))(tokens)
            for name in FUNCTIONS for mode in (core.CHECKED, core.POSSIBLE, core.BOUNDED)}


def _chain(seed, K, V, concentration=1.0, zeros=0.0):
    """π, A, B (float32) with Dirichlet rows; ``zeros``: the share of A's and B's entries set to 0 (each row
    keeps its largest)."""
    rng = np.random.default_rng(seed)

    def rows(shape):
        p = rng.dirichlet(np.full(shape[-1], concentration), size=shape[:-1])
        keep = (rng.random(p.shape) >= zeros) | (p == p.max(-1, keepdims=True))
        p = np.where(keep, p, 0.0)
        return (p / p.sum(-1, keepdims=True)).astype(np.float32)

    return rows((K,)), rows((K, K)), rows((K, V))


def _equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from([(3, 5), (6, 2)]),
       concentration=st.sampled_from([0.05, 1.0]), zeros=st.sampled_from([0.0, 0.4]))
def test_possible_and_bounded_give_checked_numbers_bit_for_bit_and_flag_impossible_tokens(seed, shape, concentration,
                                                                                          zeros):
    # K < V and K ≥ V: next_token_probs' two loops.  Sequences drawn from the chain (every c_t > 0), and the same
    # with one token replaced by a symbol no state emits (c_t = 0 there).
    K, V = shape
    pi, A, B = _chain(seed, K, V, concentration, zeros)
    B = np.concatenate([B, np.zeros((K, 1), np.float32)], 1)  # symbol V: impossible everywhere
    hmm = HMM(pi, A, B)
    x = np.array(hmm.sample(seed % 1000, 3, T))
    out = _modes(pi, A, B, jnp.asarray(x))
    for name in FUNCTIONS:
        checked = out[name, core.CHECKED]
        for mode in (core.POSSIBLE, core.BOUNDED):
            got, low, impossible = out[name, mode]
            assert _equal(got, checked[0]), (name, mode)
            assert not np.any(impossible), (name, mode)
            # BOUNDED tracks nothing (+inf), except next_token_probs' loop for K ≥ V, which runs CHECKED's step
            untracked = mode == core.BOUNDED and (name == "token_logprobs" or K < V + 1)
            assert np.array_equal(low, np.full_like(low, np.inf) if untracked else checked[1]), (name, mode)
    x[1, T // 2] = V
    out = _modes(pi, A, B, jnp.asarray(x))
    for name in FUNCTIONS:
        for mode in (core.POSSIBLE, core.BOUNDED):
            impossible = np.asarray(out[name, mode][2]).tolist()
            if name == "token_logprobs" or K < V + 1:
                assert impossible == [False, True, False], (name, mode)  # only the sequence with c_t = 0
            else:  # K ≥ V: CHECKED's step, its fallback included: nothing to rerun, CHECKED's numbers
                assert impossible == [False] * 3 and _equal(out[name, mode][0], out[name, core.CHECKED][0])


def _float64_forward(pi, A, B, x):
    """log c_t and p_t in float64 numpy, c_t = 0 leaving the filter at p_t (the documented convention)."""
    pi, A, B = (np.asarray(a, np.float64) for a in (pi, A, B))
    pred, logc, preds = pi, [], []
    for xt in x:
        preds.append(pred)
        joint = pred * B[:, xt]
        c = joint.sum()
        logc.append(np.log(c) if c > 0 else -np.inf)
        pred = (joint / c if c > 0 else pred) @ A
    return np.asarray(logc), np.asarray(preds)


@pytest.mark.parametrize("K, V", [(4, 3), (3, 6)])
def test_an_impossible_token_in_a_long_batch_is_rerun_under_checked(K, V):
    # the entry points (n, T ≥ POSSIBLE_FROM): the batch with c_t = 0 gives CHECKED's numbers, finite after the
    # impossible token, as the float64 recursion with the same convention; the batch without gives them too.
    pi, A, B = _chain(7, K, V)
    B = np.concatenate([B, np.zeros((K, 1), np.float32)], 1)
    x = np.array(HMM(pi, A, B).sample(3, 2, T + 5))
    for bad in (False, True):
        if bad:
            x[0, 40] = V
        got = {name: getattr(hmm_module, name)(pi, A, B, jnp.asarray(x)) for name in FUNCTIONS}
        want = _modes(pi, A, B, jnp.asarray(x))
        for name in FUNCTIONS:
            assert _equal(got[name], want[name, core.CHECKED][0]), (name, bad)
        logc = np.asarray(got["token_logprobs"])
        assert np.isnan(logc).sum() == 0
        for row, seq in zip(logc, x):
            ref, _ = _float64_forward(pi, A, B, seq)
            np.testing.assert_array_equal(np.isinf(row), np.isinf(ref))
            np.testing.assert_allclose(row[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-5, atol=1e-5)
        assert np.isinf(logc).sum() == (1 if bad else 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), K=st.sampled_from([2, 5, 9]), V=st.sampled_from([2, 4]),
       concentration=st.sampled_from([0.01, 0.1, 1.0]), pi_zeros=st.booleans())
def test_shares_bounded_claims_only_what_the_scans_then_read(seed, K, V, concentration, pi_zeros):
    # the lemma behind BOUNDED: with every entry of A positive and m = min(min A, min⁺π), every positive share
    # of p_t is ≥ m / (2K) (of the exact recursion's: ≥ min(min⁺π, min A / K)); when shares_bounded holds that
    # clears the floor, so CHECKED's tracked least share does too.  Checked on the float32 scans' own p_t and
    # on the float64 recursion's, on sequences from the chain, with entries of A down to ~1e-30.
    pi, A, B = _chain(seed, K, V, concentration)
    if pi_zeros and K > 1:
        pi = np.where(np.arange(K) == 0, 0.0, pi if pi[1:].sum() > 0 else 1.0)
        pi = (pi / pi.sum()).astype(np.float32)
    x = np.asarray(HMM(pi, A, B).sample(seed % 1000, 2, 64))
    m = min(A.min(), pi[pi > 0].min())
    chain = tuple(jnp.asarray(a) for a in (pi, A, B))
    fw = jax.vmap(lambda t: core.forward(*chain, t, False))(jnp.asarray(x))
    pred = np.asarray(fw.predicted, np.float64)
    if A.min() > 0:
        assert pred[pred > 0].min() >= m / (2 * K), (pred[pred > 0].min(), m / (2 * K))
        for seq in x:
            _, ref = _float64_forward(pi, A, B, seq)
            assert ref[ref > 0].min() >= min(pi[pi > 0].min(), A.min() / K) * (1 - 1e-6)
    bounded = bool(core.shares_bounded(pi, A, B))
    floor = core.floor(A, B)
    assert bounded == bool(A.min() > 0 and np.float32(m) >= np.float32(2 * K) * np.float32(floor))
    if bounded:  # the scans BOUNDED runs untracked: those that track p_t (next_token_probs for K ≥ V tracks
        # p_t ∘ B[:, x_t], and keeps tracking under BOUNDED)
        names = FUNCTIONS if K < V else ("token_logprobs",)
        lows = [np.asarray(_modes(pi, A, B, jnp.asarray(x))[name, core.CHECKED][1]).min() for name in names]
        assert min(lows) >= floor


def test_shares_bounded_refuses_zeros_blocks_and_tiny_entries():
    pi, A, B = _chain(0, 4, 3)
    assert bool(core.shares_bounded(pi, A, B))
    A0 = A.copy()
    A0[0, 1] = 0.0
    assert not bool(core.shares_bounded(pi, A0, B))  # a zero in A: a share can fall without bound
    blocks = np.stack([A[:2, :2] / A[:2, :2].sum(1, keepdims=True)] * 2)
    assert not bool(core.shares_bounded(pi, blocks, B))  # block-diagonal: a block's share can fall without bound
    At = A.copy()
    At[0, 0] = 1e-20  # positive, but m < 2K · floor
    assert not bool(core.shares_bounded(pi, At, B))


def test_a_long_batch_that_needs_the_log_space_rerun_still_gets_it():
    # POSSIBLE first (a zero in A: not bounded), its tracked share below the floor: the float64 log-space rerun,
    # as before.  A memory state the sequence rules out early keeps a share that halves every step.
    pi = jnp.array([0.5, 0.5, 0.0], jnp.float32)
    A = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]], jnp.float32)
    B = jnp.array([[0.5, 0.5], [0.999, 0.001], [0.999, 0.001]], jnp.float32)
    x = np.zeros((1, T), np.int32)
    x[0, -1] = 1
    assert not bool(core.shares_bounded(pi, A, B))
    _, low, impossible = jax.vmap(lambda t: core.token_logprobs(pi, A, B, t, core.POSSIBLE))(jnp.asarray(x))
    assert float(low.min()) < float(core.floor(A, B)) and not bool(impossible.any())
    got = np.asarray(hmm_module.token_logprobs(pi, A, B, jnp.asarray(x)), np.float64)[0]
    ref, _ = _float64_forward(pi, A, B, x[0])
    np.testing.assert_allclose(got, ref, rtol=1e-6)
