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

import bruteforce as bf
from profiles import scaled
from simlm.worlds import hmm as hmm_module
from simlm.worlds import hmm_core as core
from simlm.worlds.base import stored

T = core.POSSIBLE_FROM  # the shortest batch the entry points run these modes for
FUNCTIONS = ("token_logprobs", "next_token_probs", "next_token_logprobs")


@jax.jit
def _modes(initial, transition, emission, tokens):
    """Every function under CHECKED, POSSIBLE and BOUNDED, vmapped over the sequences."""
    return {(name, mode): jax.vmap(lambda x: getattr(core, name)(initial, transition, emission, x, mode))(tokens)
            for name in FUNCTIONS for mode in (core.CHECKED, core.POSSIBLE, core.BOUNDED)}


def _chain(seed, K, V, concentration=1.0, zeros=0.0):
    """π, A, B (float32) with Dirichlet rows; ``zeros``: the share of A's and B's entries set to 0 (each row
    keeps its largest).  Stored as a world stores them (:func:`~simlm.worlds.base.stored`): entries below
    float32's smallest normal number are 0 — the scans' documented domain; concentration 0.01 draws subnormals
    (A = 2.9e-44), which XLA flushes, and the thorough profile found the share lemma "failing" on them."""
    rng = np.random.default_rng(seed)

    def rows(shape):
        p = rng.dirichlet(np.full(shape[-1], concentration), size=shape[:-1])
        keep = (rng.random(p.shape) >= zeros) | (p == p.max(-1, keepdims=True))
        p = np.where(keep, p, 0.0)
        return stored(p / p.sum(-1, keepdims=True), np.float32)

    return rows((K,)), rows((K, K)), rows((K, V))


def _draw(pi, A, B, seed, n, T):
    """``(n, T)`` int32 tokens drawn from the chain by inverse CDF in float64 numpy (a state or symbol of
    probability 0 is never drawn): what ``HMM.sample`` gives, without compiling a sampler for every shape."""
    rng = np.random.default_rng(seed)
    pi, A, B = (np.cumsum(np.asarray(a, np.float64), -1) for a in (pi, A, B))
    pick = lambda cum, u: (cum <= u[:, None] * cum[:, -1:]).sum(-1)  # index i: cum[i - 1] ≤ u·total < cum[i]
    h, x = pick(np.broadcast_to(pi, (n, pi.size)), rng.random(n)), np.empty((n, T), np.int32)
    for t in range(T):
        x[:, t] = pick(B[h], rng.random(n))
        h = pick(A[h], rng.random(n))
    return x


def _equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@settings(max_examples=scaled(10), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from([(3, 5), (6, 2)]),
       concentration=st.sampled_from([0.05, 1.0]), zeros=st.sampled_from([0.0, 0.4]))
def test_possible_and_bounded_give_checked_numbers_bit_for_bit_and_flag_impossible_tokens(seed, shape, concentration,
                                                                                          zeros):
    # K < V and K ≥ V: next_token_probs' two loops.  Sequences drawn from the chain (every c_t > 0), and the same
    # with one token replaced by a symbol no state emits (c_t = 0 there).
    K, V = shape
    pi, A, B = _chain(seed, K, V, concentration, zeros)
    B = np.concatenate([B, np.zeros((K, 1), np.float32)], 1)  # symbol V: impossible everywhere
    x = _draw(pi, A, B, seed, 3, T)
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
    x = _draw(pi, A, B, 3, 2, T + 5)
    for bad in (False, True):
        if bad:
            x[0, 40] = V
        got = {name: getattr(hmm_module, name)(pi, A, B, jnp.asarray(x)) for name in FUNCTIONS}
        _, want = _forward_and_checked(pi, A, B, jnp.asarray(x))  # CHECKED alone: a third of _modes' program
        for name in FUNCTIONS:
            assert _equal(got[name], want[name][0]), (name, bad)
        logc = np.asarray(got["token_logprobs"])
        assert np.isnan(logc).sum() == 0
        for row, seq in zip(logc, x):
            ref, _ = _float64_forward(pi, A, B, seq)
            np.testing.assert_array_equal(np.isinf(row), np.isinf(ref))
            np.testing.assert_allclose(row[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-5, atol=1e-5)
        assert np.isinf(logc).sum() == (1 if bad else 0)


@jax.jit
def _forward_and_checked(initial, transition, emission, tokens):
    """The plain forward pass and every function under CHECKED, vmapped over the sequences: one program per
    shape (the forward pass run eagerly, and :func:`_modes`' nine scans, compiled several times as long)."""
    def each(x):
        return core.forward(initial, transition, emission, x, False), \
            {name: getattr(core, name)(initial, transition, emission, x, core.CHECKED) for name in FUNCTIONS}
    return jax.vmap(each)(tokens)


@settings(max_examples=scaled(25), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), K=st.sampled_from([2, 5, 9]), V=st.sampled_from([2, 4]),
       concentration=st.sampled_from([0.01, 0.1, 1.0]), pi_zeros=st.booleans())
def test_shares_bounded_claims_only_what_the_scans_then_read(seed, K, V, concentration, pi_zeros):
    # the lemma behind BOUNDED: with every entry of A positive and m = min(min A, min⁺π), every share of p_t is
    # ≥ m / 2 (of the exact recursion's: ≥ m); when shares_bounded holds that clears the floor, so CHECKED's
    # tracked least share does too.  Checked on the float32 scans' own p_t and
    # on the float64 recursion's, on sequences from the chain, with entries of A down to ~1e-30.
    pi, A, B = _chain(seed, K, V, concentration)
    if pi_zeros and K > 1:
        pi = np.where(np.arange(K) == 0, 0.0, pi if pi[1:].sum() > 0 else 1.0)
        pi = (pi / pi.sum()).astype(np.float32)
    x = _draw(pi, A, B, seed, 2, 64)
    m = min(A.min(), pi[pi > 0].min())
    fw, checked = _forward_and_checked(pi, A, B, jnp.asarray(x))
    pred = np.asarray(fw.predicted, np.float64)
    if A.min() > 0:
        assert pred[pred > 0].min() >= m / 2 and pred[:, 1:].min() >= A.min() / 2  # p_1 = π may hold zeros
        for seq in x:
            _, ref = _float64_forward(pi, A, B, seq)
            assert ref[ref > 0].min() >= m * (1 - 1e-6) and ref[1:].min() >= A.min() * (1 - 1e-6)
    bounded = bool(core.shares_bounded(pi, A, B))
    floor = core.floor(A, B)
    assert bounded == bool(A.min() > 0 and np.float32(m) >= np.float32(2) * np.float32(floor))
    if bounded:  # the scans BOUNDED runs untracked: those that track p_t (next_token_probs for K ≥ V tracks
        # p_t ∘ B[:, x_t], and keeps tracking under BOUNDED)
        names = FUNCTIONS if K < V else ("token_logprobs",)
        lows = [np.asarray(checked[name][1]).min() for name in names]
        assert min(lows) >= floor


def test_shares_bounded_refuses_zeros_blocks_and_tiny_entries():
    pi, A, B = _chain(0, 4, 3)
    assert bool(core.shares_bounded(pi, A, B))
    A0 = A.copy()
    A0[0, 1] = 0.0
    assert not bool(core.shares_bounded(pi, A0, B))  # a zero in A: a share can fall without bound
    block = A[:2, :2] / A[:2, :2].sum(1, keepdims=True)
    for blocks in (block, np.stack([block] * 2)):  # one (k, k) block shared by K / k groups, or a stack
        assert not bool(core.shares_bounded(pi, blocks, B))  # a block's share can fall without bound
    At = A.copy()
    At[0, 0] = 1e-20  # positive, but m < 2 · floor
    assert not bool(core.shares_bounded(pi, At, B))


# two states the evidence buries in turn (their shares fall far below float32's range, and below float64's:
# (0.001 / 0.999)¹⁵⁰ ≈ 1e-450), then revives: a scan that loses the buried share reads every later token as
# 1000 times less likely (hundreds of nats).  Dense with zeros in A (absorbing states), and one (k, k) block
# shared by two groups (as a MemoryHMM passes its chain), whose shares_bounded must refuse however large m is.
_ABSORBING = (np.array([0.5, 0.5, 0.0]), np.array([[1.0, 0, 0], [0, 1.0, 0], [0.5, 0.5, 0]]),
              np.array([[0.999, 0.001], [0.001, 0.999], [0.5, 0.5]]))
_SHARED_BLOCK = (np.full(4, 0.25), np.array([[0.6, 0.4], [0.3, 0.7]]),
                 np.array([[0.999, 0.001], [0.999, 0.001], [0.001, 0.999], [0.001, 0.999]]))


@pytest.mark.parametrize("chain", [_ABSORBING, _SHARED_BLOCK], ids=["absorbing", "shared-block"])
def test_a_long_batch_that_buries_a_share_still_gets_the_log_space_rerun(chain):
    pi, A, B = (jnp.asarray(a, jnp.float32) for a in chain)
    x = np.zeros((2, 400), np.int32)
    x[:, 150:] = 1
    assert not bool(core.shares_bounded(pi, A, B))
    dense = np.kron(np.eye(B.shape[0] // A.shape[0]), np.asarray(A))
    ref = bf.log_forward(pi, dense, B, x[0])[1]  # float64: nothing flushes
    (_, low, impossible), (unchecked, _, _) = jax.jit(lambda *chain_x: [  # both modes in one program
        jax.vmap(lambda t: core.token_logprobs(*chain_x[:3], t, mode))(chain_x[3]) for mode in (core.POSSIBLE,
                                                                                                core.BOUNDED)])(
        pi, A, B, jnp.asarray(x))
    assert float(low.min()) < float(core.floor(A, B)) and not bool(impossible.any())  # POSSIBLE sees it
    unchecked = np.asarray(unchecked)
    assert np.abs(unchecked[0] - ref).max() > 1.0  # what skipping the check would cost: nats off
    got = np.asarray(hmm_module.token_logprobs(pi, A, B, jnp.asarray(x)), np.float64)
    np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0].sum(), ref.sum(), rtol=1e-6)


def test_the_entry_points_run_the_modes_for_two_or_more_long_sequences_untraced():
    for name in FUNCTIONS:
        assert getattr(hmm_module, name).modes == (core.POSSIBLE, core.BOUNDED), name
    assert core.batched(core.forward).modes == ()
    assert [core.runs_possible(n, T) for n, T in [(2, T), (1, T), (2, T - 1), (64, 4096)]] == [True, False, False, True]


def test_one_long_sequence_gives_the_numbers_of_a_traced_call():
    # n = 1 runs CHECKED (runs_possible): the same bits as under jit, which always runs CHECKED
    pi, A, B = _chain(3, 3, 5)
    x = jnp.asarray(_draw(pi, A, B, 1, 1, T))
    for name in FUNCTIONS:
        fn = getattr(hmm_module, name)
        assert _equal(fn(pi, A, B, x), jax.jit(fn)(pi, A, B, x)), name


_OPTIMISED = """
import jax, jax.numpy as jnp, numpy as np
from simlm import HMM
from simlm.worlds import hmm as hmm_module, hmm_core as core
names = ("token_logprobs", "next_token_probs", "next_token_logprobs")
same = lambda a, b: all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
def zero_in_a(hmm):  # not shares_bounded: POSSIBLE, the shares tracked
    A = np.array(hmm.transition, np.float64)
    A[0, 1] = 0.0
    return HMM(hmm.initial, A / A.sum(1, keepdims=True), hmm.emission)

jitted = {name: jax.jit(getattr(hmm_module, name)) for name in names}
bad = []
# the chains with a zero in A share their shapes with chains without (one jitted program for both)
for seed, (K, V), n, zero in [(0, (3, 5), 1, False), (1, (3, 5), 2, False), (2, (8, 20), 3, False),
                              (3, (5, 3), 1, False), (4, (5, 3), 2, False), (5, (3, 5), 2, True), (6, (5, 3), 2, True)]:
    hmm = zero_in_a(HMM.random(seed, K, V)) if zero else HMM.random(seed, K, V)
    assert bool(core.shares_bounded(*hmm.chain)) != zero
    x = jnp.asarray(_draw(*(np.asarray(a) for a in hmm.chain), seed, n, {T}))
    for name in names:
        fn = getattr(hmm_module, name)
        if not same(fn(*hmm.chain, x), jitted[name](*hmm.chain, x)):  # eager: POSSIBLE/BOUNDED for n >= 2
            bad.append((seed, K, V, n, name))
print(bad)
"""


def test_the_modes_give_checked_numbers_bit_for_bit_in_an_optimised_build():
    # the suite compiles unoptimised (conftest.py), where XLA fuses differently: the claim is about the programs
    # users run.  Eager calls (BOUNDED, or POSSIBLE for a chain with a zero in A, for n ≥ 2; CHECKED for n = 1)
    # against jitted ones (always CHECKED).
    import os
    import subprocess
    import sys
    env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "0",  # and without the suite's XLA flag (conftest.py)
           "XLA_FLAGS": os.environ.get("SIMLM_TESTS_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))}
    import inspect
    script = _OPTIMISED.replace("{T}", str(T)) + "\n"
    script = script.replace("\nbad = []", "\n" + inspect.getsource(_draw) + "\n\nbad = []")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
