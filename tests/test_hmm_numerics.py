"""Long, near-deterministic sequences in float32, and agreement with hmmlearn and dynamax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles import scaled

from simlm import HMM
from simlm.strategies import hmms, worlds_with_tokens
from simlm.worlds import MemoryHMM
from simlm.worlds.topic import topic_of_state, topic_syntax_hmm
from simlm.worlds import hmm_core as core


def float64_log_likelihood(hmm, x):
    """Scaled forward recursion in float64 numpy: the reference."""
    pi, A, B = (np.asarray(a, np.float64) for a in (hmm.initial, hmm.transition, hmm.emission))
    pred, total = pi, 0.0
    Bt = B.T
    for xt in x:
        joint = pred * Bt[xt]
        c = joint.sum()
        total += np.log(c)
        pred = (joint / c) @ A
    return total, pred @ B


def test_float32_is_exact_for_100k_tokens_at_emission_temperature_001():
    # Wei, Xie & Ma's family at temperature 0.01: emission entries reach e^{-100} ≈ 4e-44 (below
    # float32's normal range).  The scaled recursion with a pairwise Σ log c_t must stay within 1e-5
    # relative of float64.
    hmm = HMM.random(0, 10, 10, family="permutation-mixture")
    assert float(np.min(np.asarray(hmm.emission, np.float64))) < 1e-30
    x = np.asarray(hmm.sample(1, 1, 100_000))[0]
    ref_ll, ref_next = float64_log_likelihood(hmm, x)
    got = float(hmm.log_likelihood(x))
    assert np.isfinite(got)
    assert abs(got - ref_ll) <= 1e-5 * abs(ref_ll), (got, ref_ll)
    # the law of the token after the sequence, from the same filter
    law_last = np.asarray(hmm.next_token_probs(x))[-1]
    _, ref_prev = float64_log_likelihood(hmm, x[:-1])
    np.testing.assert_allclose(law_last, ref_prev, atol=1e-5)


def test_log_likelihood_agrees_with_hmmlearn_on_moderate_random_hmms():
    pytest.importorskip("hmmlearn")
    for seed, (K, V) in enumerate([(5, 7), (12, 20), (30, 9)]):
        hmm = HMM.random(seed, K, V, family="dirichlet", transition_concentration=0.5)
        x = np.asarray(hmm.sample(seed, 4, 200))
        ref = hmm.to_hmmlearn()
        expected = [ref.score(s[:, None]) for s in x]
        np.testing.assert_allclose(hmm.log_likelihood(x), expected, rtol=2e-5)
        post = np.asarray(hmm.state_posterior(x))
        for i, s in enumerate(x):
            np.testing.assert_allclose(post[i], ref.predict_proba(s[:, None]), atol=2e-4)


def test_round_trips_through_hmmlearn_and_dynamax():
    pytest.importorskip("hmmlearn")
    pytest.importorskip("dynamax")
    from dynamax.hidden_markov_model import hmm_filter

    hmm = HMM.random(3, 6, 5)
    back = HMM.from_hmmlearn(hmm.to_hmmlearn())
    assert back.fingerprint() == hmm.fingerprint()
    model, params = hmm.to_dynamax()
    assert HMM.from_dynamax(params).fingerprint() == hmm.fingerprint()
    x = np.asarray(hmm.sample(0, 1, 50))[0]
    post = hmm_filter(params.initial.probs, params.transitions.transition_matrix,
                      np.log(np.asarray(hmm.emission)[:, x].T))
    np.testing.assert_allclose(float(hmm.log_likelihood(x)), float(post.marginal_loglik), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(hmm.next_token_probs(x)),
                               np.asarray(post.predicted_probs) @ np.asarray(hmm.emission), atol=1e-5)


def test_block_diagonal_transition_equals_dense_kron():
    rng = np.random.default_rng(0)
    k, G, V = 3, 4, 5
    blocks = rng.dirichlet(np.ones(k), size=(G, k))
    dense = np.zeros((G * k, G * k))
    for g in range(G):
        dense[g * k:(g + 1) * k, g * k:(g + 1) * k] = blocks[g]
    pi = rng.dirichlet(np.ones(G * k))
    B = rng.dirichlet(np.ones(V), size=G * k)
    x = jnp.asarray(rng.integers(0, V, 7))
    shared = np.kron(np.eye(G), blocks[0])

    @jax.jit  # the six calls in one program: one compile, not one per operation of each call run eagerly
    def run(pi, blocks, dense, block, shared, B, x):
        laws = [[op(pi, A, B, x)[0] for A in (blocks, dense)]
                for op in (core.masked_token_probs, core.next_token_probs)]
        return laws, [core.log_likelihood(pi, A, B, x) for A in (block, shared)]

    laws, (got, want) = run(*(jnp.asarray(a, jnp.float32) for a in (pi, blocks, dense, blocks[0], shared, B)), x)
    for got_law, want_law in laws:
        np.testing.assert_allclose(got_law, want_law, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6)



def test_subnormal_parameters_are_stored_as_the_zeros_every_law_computes_with():
    # XLA flushes float32 subnormals to 0, so 1e-40 is 0 in every law; stored as 1e-40 it made the host's
    # float64 reading of the parameters (a label, a rank) another world than the device's
    B = np.array([[1.0 - 1e-40, 1e-40], [0.5, 0.5]])
    hmm = HMM(np.array([1.0, 0.0]), np.eye(2), B)
    assert np.asarray(hmm.emission)[0, 1] == 0.0
    assert float(hmm.log_likelihood(np.array([[1]]))[0]) == -np.inf  # the chain the host now reads too
    with jax.enable_x64(True):  # in float64, 1e-40 is a normal number and stays
        assert np.asarray(HMM(np.array([1.0, 0.0]), np.eye(2), B, dtype=jnp.float64).emission)[0, 1] == 1e-40
    memory = MemoryHMM.one_cell([1.0 - 1e-40, 1e-40], [1.0], [[1.0]], [[[0.5, 0.5]], [[0.5, 0.5]]])
    assert np.asarray(memory.memory_prior)[0, 1] == 0.0


# ---- the stationary law -------------------------------------------------------------------------------

def _reducible_chain(seed):
    """A random 6-state chain with two closed classes (one of them a 2-cycle) and two transient states,
    states shuffled: eigenvalue 1 twice, −1 once."""
    rng = np.random.default_rng(seed)
    A = np.zeros((6, 6))
    A[0, 1] = A[1, 0] = 1.0  # closed, period 2
    A[2:4, 2:4] = rng.dirichlet(np.ones(2), 2)  # closed, aperiodic
    A[4:] = rng.dirichlet(np.ones(6), 2)  # transient: they reach everything
    p = rng.permutation(6)
    return A[np.ix_(p, p)]


@pytest.mark.parametrize("A", [[[0, 1, 0], [0, 0, 1], [1, 0, 0]], [[0, 1], [1, 0]],
                               *(_reducible_chain(seed) for seed in range(5))],
                         ids=["3-cycle", "2-cycle", *(f"reducible-{seed}" for seed in range(5))])
def test_the_stationary_distribution_is_a_law_the_transition_leaves_fixed(A):
    """μ ≥ 0, Σμ = 1 and μA = μ (its docstring) for periodic chains, whose other eigenvalues have |w| = 1 too
    (the eigenvector of largest |w| on the 3-cycle is [¼, ½, ¼], ¼ off), and reducible ones."""
    A = np.asarray(A, np.float64)
    K = len(A)
    hmm = HMM(np.full(K, 1 / K), A, np.full((K, 2), 0.5))
    mu = hmm.stationary_distribution()
    stored = np.asarray(hmm.transition, np.float64)
    assert mu.shape == (K,) and (mu >= 0).all() and mu.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(mu @ stored, mu, atol=1e-6)



@pytest.mark.parametrize("seed, n_topics, n_syntax", [(0, 3, 1), (1, 3, 2), (2, 4, 2)])
@pytest.mark.parametrize("switch", [1e-8, 1e-10])
def test_a_chain_that_mixes_more_slowly_than_its_rows_round_gets_its_own_stationary_law(seed, n_topics, n_syntax,
                                                                                       switch):
    """Topics that switch with probability 1e-8 mix more slowly than the float32 rows' rounding (~1e-8) moves
    the Perron root, yet the chain is irreducible and its topic chain symmetric: the unique stationary law's
    topic marginal is uniform.  Read off the eigenvalue closest to 1 it was e.g. [0.5, 0.25, 0.25]."""
    world = topic_syntax_hmm(seed, n_topics, n_syntax, 2, switch=switch).hmm
    mu = world.stationary_distribution()
    np.testing.assert_allclose(np.bincount(topic_of_state(n_topics, n_syntax), weights=mu), 1 / n_topics, atol=1e-6)


@settings(max_examples=scaled(40))
@given(st.integers(2, 6), st.integers(0, 2**32 - 1), st.floats(0.0, 0.7))
def test_the_stationary_law_of_an_irreducible_chain_is_the_limit_of_its_powers(K, seed, sparsity):
    """Brute force: the lazy chain (I + A)/2 has A's stationary laws and no period, so for an irreducible A
    every row of its 2⁶⁰-th power (60 squarings, float64, rows renormalised) is the unique μ."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(K), K) * (rng.random((K, K)) >= sparsity)
    A[np.arange(K), rng.permutation(K)] += 0.05  # a row is never empty
    A /= A.sum(1, keepdims=True)
    world = HMM(np.full(K, 1 / K), A, np.full((K, 2), 0.5))
    stored = np.asarray(world.transition, np.float64)
    stored /= stored.sum(1, keepdims=True)
    reach = np.linalg.matrix_power(np.eye(K) + stored, K) > 0
    mu = world.stationary_distribution()
    assert (mu >= 0).all() and mu.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(mu @ stored, mu, atol=1e-12)
    if reach.all():  # irreducible
        P = (np.eye(K) + stored) / 2
        for _ in range(60):
            P = P @ P
            P /= P.sum(1, keepdims=True)
        np.testing.assert_allclose(mu, P[0], atol=1e-9)


# ---- the floor's share of a posterior's row total --------------------------------------------------------

@pytest.mark.parametrize("m", [0.5, 0.05, 1e-3])
def test_a_row_total_above_k_2_24_tiny_is_a_share_above_the_floor_in_float32(m):
    """_as_share(total) = total / (K·2²⁴·tiny) · floor, compared with the floor: ≥ it exactly when total ≥
    K·2²⁴·tiny ≈ 7.9e-31 (K = 4).  Multiplied first, total · floor (floor = 4·tiny/min⁺B here) was below
    the float range for total < m/4 and read 0: a row total of 0.1 called for the log-space rerun."""
    A = jnp.asarray(np.eye(4), jnp.float32)
    B = jnp.asarray(np.array([[1 - m, m]] * 4), jnp.float32)
    tiny = np.float64(np.finfo(np.float32).tiny)
    floor = np.float64(4) * tiny / np.float64(np.float32(m))  # 4 · tiny / (min⁺A · min⁺B), min⁺A = 1
    assert float(core.floor(A, B)) == pytest.approx(floor, rel=1e-6)
    share = jax.jit(core._as_share)
    for total in (0.1, 1e-6, 1e-20, 1e-30):
        got = float(share(jnp.float32(total), A, B))
        want = np.float64(np.float32(total)) / (np.float64(4) * np.float64(2) ** 24 * tiny) * floor
        assert got >= float(core.floor(A, B)), total  # no rerun
        assert got == pytest.approx(want, rel=1e-5), total
    assert float(share(jnp.float32(1e-31), A, B)) < float(core.floor(A, B))  # below K·2²⁴·tiny: rerun


def test_contradicting_past_and_future_in_an_ordinary_world_need_no_log_space_rerun():
    """Two states that never move, emitting 0 or 1 at odds 9:1; three 0s then three 1s: at t = 3 the
    filtered law and β favour opposite states, the row total Σ_h α(h)β(h) is ≈ 2·9⁻³ = 2.7e-3, far above
    K·2²⁴·tiny, so the check that decides the rerun (``batched``: low < floor) must pass.  The multiplied-first
    share read 0 for any total < min⁺A·min⁺B/4 = 0.025 and sent this sequence to log space."""
    hmm = HMM([0.5, 0.5], np.eye(2), [[0.9, 0.1], [0.1, 0.9]])
    x = jnp.asarray([0, 0, 0, 1, 1, 1], jnp.int32)
    floor = float(core.floor(hmm.transition, hmm.emission))
    names = ("smoothed_posterior", "masked_state_posterior", "masked_token_probs")
    lows = jax.jit(lambda *chain_x: [getattr(core, name)(*chain_x, parallel=core.CHECKED)[1] for name in names])(
        *hmm.chain, x)  # one program for the three
    for name, low in zip(names, lows):
        assert float(low) >= floor, name


@pytest.mark.parametrize("method, row", [("state_posterior", [0.0, 1.0, 0.0]), ("masked_token_probs", [0.1, 0.1, 0.8])])
def test_contradicting_past_and_future_whose_products_underflow_keep_the_only_possible_state(method, row):
    """A = I and only state 1 emits both tokens (state 0 never emits 1, state 2 never 0): given x = 25 zeros
    then 25 ones, and given x with any one token masked, h = 1 surely, so every posterior row is e_1 and
    every masked law is B[1].  At t = 24 the float32 α ∝ [1, 9⁻²⁵, 0] and β ∝ [0, 9⁻²⁵, 1]: every product
    α(h)β(h) is below the float range, the row total is 0, and the least row total must send it to log space
    (a check on the largest row total saw nothing and answered zeros)."""
    hmm = HMM([1 / 3] * 3, np.eye(3), [[0.9, 0.0, 0.1], [0.1, 0.1, 0.8], [0.0, 0.9, 0.1]])
    x = np.array([[0] * 25 + [1] * 25])
    np.testing.assert_allclose(np.asarray(getattr(hmm, method)(x))[0], np.tile(row, (50, 1)), rtol=1e-5, atol=1e-6)


# ---- the sequential scans unrolled, and the floor tracked per state -------------------------------

def _scans(chain, x):
    """Every checked sequential scan of ``x (T,)``: ``{name: (outputs, low)}``."""
    pi, A, B = chain
    return {"forward": core.forward(pi, A, B, x, core.CHECKED),
            "token_logprobs": core.token_logprobs(pi, A, B, x, core.CHECKED),
            "backward": core.backward(A, B, x, core.CHECKED),
            "next_token_probs": core.next_token_probs(pi, A, B, x, core.CHECKED)}


def _least_positive(*arrays) -> float:
    values = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays])
    return float(np.min(values[values > 0], initial=np.inf))


@settings(max_examples=scaled(12), deadline=None)
@given(case=worlds_with_tokens(hmms(min_states=1, max_states=5, min_symbols=1, max_symbols=5), min_length=1,
                               max_length=70, n_sequences=1),
       long=st.booleans())
def test_unrolled_scans_equal_rolled_ones_and_track_the_least_share_the_steps_read(case, long):
    """From :data:`~simlm.worlds.hmm_core.UNROLL_FROM` tokens on the sequential scans run unrolled
    (:func:`~simlm.worlds.hmm_core._unroll`), and each keeps its running least positive share per state,
    reduced after the loop (:func:`~simlm.worlds.hmm_core._lowest`).  Against the same scans rolled: the
    same laws and messages (1e-6: XLA may fuse an unrolled step's reductions in another order) and the same
    ``low`` exactly; and ``low`` is the least positive share among the vectors each step reads — p_t for
    the filters (p_t ∘ B[:, x_t] and π's own shares for the next-token law when K ≥ V), the β_t carried
    into each backward step."""
    hmm, tokens = case
    x = jnp.asarray(np.tile(tokens[0], 70)[:70] if long else tokens[0])  # T ≥ UNROLL_FROM, or as drawn
    chain = hmm.chain
    unrolled = jax.jit(lambda c, t: _scans(c, t))(chain, x)  # a function of its own each: traced afresh
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "UNROLL_FROM", 10**9)
        rolled = jax.jit(lambda c, t: _scans(c, t))(chain, x)
    for name in unrolled:
        (out, low), (out_rolled, low_rolled) = unrolled[name], rolled[name]
        for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(out_rolled)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-30, err_msg=name)
        assert float(low) == float(low_rolled), name
    pi, _, B = (np.asarray(a) for a in chain)
    pred = np.asarray(unrolled["forward"][0].predicted)  # the p_t the forward scan carried, as it stored them
    betas = np.asarray(unrolled["backward"][0][0])  # the β_t the backward scan carried
    assert float(unrolled["forward"][1]) == _least_positive(pred)
    assert float(unrolled["backward"][1]) == _least_positive(betas)
    # the other two filters carry p_t as ((p ∘ b) A) / c, not (p ∘ b / c) A: the same up to rounding, compared
    # where it is far from the end of the float range (there a share can round to 0 in one and not the other)
    joint = pred * B.T[np.asarray(x)]
    reads = {"token_logprobs": [pred], "next_token_probs": [pred] if B.shape[0] < B.shape[1] else [joint, pi]}
    for name, arrays in reads.items():
        if _least_positive(*arrays) > 1e-30:
            assert float(unrolled[name][1]) == pytest.approx(_least_positive(*arrays), rel=1e-4), name


# ---- stationary_distribution documents "the closed class of the lowest state index" -----------------
def _closed_classes(A):
    K = len(A)
    R = np.linalg.matrix_power(np.eye(K) + (A > 0), K) > 0  # reachability
    classes = {frozenset(np.flatnonzero(R[i] & R[:, i])) for i in range(K)}
    return [sorted(c) for c in classes if all(not R[i, j] or j in c for i in c for j in range(K))]


@pytest.mark.parametrize("seed", range(5))
def test_a_reducible_chain_gets_the_stationary_law_of_its_lowest_indexed_closed_class(seed):
    rng = np.random.default_rng(seed)
    A = np.zeros((6, 6))
    A[0, 1] = A[1, 0] = 1.0
    A[2:4, 2:4] = rng.dirichlet(np.ones(2), 2)
    A[4:] = rng.dirichlet(np.ones(6), 2)
    p = rng.permutation(6)
    A = A[np.ix_(p, p)]
    hmm = HMM(np.full(6, 1 / 6), A, np.full((6, 2), 0.5))
    S = np.asarray(hmm.transition, np.float64)
    S /= S.sum(1, keepdims=True)
    C = min(_closed_classes(S), key=min)  # brute force: the closed class holding the lowest state index
    # its unique law, by powers of the lazy chain restricted to C
    P = (np.eye(len(C)) + S[np.ix_(C, C)]) / 2
    for _ in range(60):
        P = P @ P
        P /= P.sum(1, keepdims=True)
    want = np.zeros(6)
    want[C] = P[0]
    np.testing.assert_allclose(hmm.stationary_distribution(), want, atol=1e-9)


def test_the_jittable_functions_the_readme_names_rerun_an_absorbing_chain_in_log_space():
    """The README offered `hmm_core`'s bare scans for use inside jax.jit; on two absorbing states (A = I) and
    400 + 420 tokens their float32 log-likelihood is 44 nats off (−1009.92 against −965.98) and the filter sits
    on the wrong state (a review, 2026-12-07).  It now names `simlm.worlds.hmm`'s functions, which are exact there
    under jit too, and says the core's are unchecked."""
    from pathlib import Path

    from simlm.worlds import hmm as H

    pi, A, B = np.array([0.5, 0.5]), np.eye(2), np.array([[0.9, 0.1], [0.1, 0.9]])
    x = np.array([0] * 400 + [1] * 420, np.int32)
    # the chain stays in its first state: p(x) = ½·0.9⁴⁰⁰·0.1⁴²⁰ + ½·0.1⁴⁰⁰·0.9⁴²⁰
    want = np.logaddexp(np.log(0.5) + 400 * np.log(0.9) + 420 * np.log(0.1),
                        np.log(0.5) + 400 * np.log(0.1) + 420 * np.log(0.9))
    world = HMM(pi, A, B)
    got = float(jax.jit(H.log_likelihood)(*world.chain, jnp.asarray(x[None]))[0])
    assert got == pytest.approx(want, abs=1e-3) and want == pytest.approx(-965.97860, abs=1e-5)
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert "functions of `simlm.worlds.hmm`" in readme
    assert "`simlm.worlds.hmm_core` (`forward`, `backward`, …) are unchecked" in readme


# ---- float32 flushes that only the tracked least shares catch (a mutation review, 2026-12-07) --------

def _filtered_brute(pi, A, B, x):
    """p(h_t | x_<=t) for every t, by enumerating hidden paths in float64."""
    import itertools

    K, out = len(pi), []
    for t in range(len(x)):
        w = np.zeros(K)
        for path in itertools.product(range(K), repeat=t + 1):
            p = pi[path[0]] * B[path[0], x[0]]
            for s in range(1, t + 1):
                p *= A[path[s - 1], path[s]] * B[path[s], x[s]]
            w[path[-1]] += p
        out.append(w / w.sum())
    return np.array(out)


def test_filtered_posterior_keeps_a_buried_state_whose_first_joint_flushes_to_zero():
    """hmm_core.forward must track the least share of p_t (what it multiplies by B), not of the filter: here
    p_1(1)·B(1, x_1) = 1e-10·1e-37 flushes to 0 in float32, so the filter's own shares are [1, 0] and look
    safe, but state 1 (a block of a block-diagonal chain, never refilled) is the truth from t = 2 on.
    n = T = 4 are bucket sizes: no padded all-blank sequence (whose filter is π) triggers the rerun by luck."""
    pi = np.array([1 - 1e-10, 1e-10])
    A = np.eye(2)
    B = np.array([[1e-30, 1 - 2e-30, 1e-30], [1e-37, 0.5, 0.5 - 1e-37]])
    x = np.array([[0, 2, 2, 2]] * 4)
    got = np.asarray(HMM(pi, A, B).state_posterior(x, smoothed=False), np.float64)
    want = _filtered_brute(pi, A, B, x[0])
    for row in got:
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-6)


def test_a_smoothed_posterior_row_whose_least_product_flushes_is_rerun_even_when_other_rows_are_ordinary():
    """hmm_core._total_share must read the LEAST row total Σ_h α_t(h)β_t(h) over t (a max, or a mean, passed every
    other test; a mutation review, 2026-12-07).  A = I (one-state blocks, as a memory world's), B near uniform (floor
    ≈ 1.6e-37): 294 tokens '0' then 294 tokens '1'.  At t = 293 α ≈ [1, 1.9e-37, 1e-19] and β ≈ [1.9e-37, 1, 1e-19]:
    every share clears the floor, but state 2's α·β ≈ 1.1e-38 is below float32's smallest normal and flushes to 0
    although its posterior is 2.9 %; only the row total (3.8e-37 < K·2²⁴·tiny) sends the batch to log space.  Every
    other row total is ordinary.  Brute force: with A = I the smoothed law is ∝ π(h) Π_s B(h, x_s) at every t."""
    from scipy.special import logsumexp
    n0, b2 = 294, 0.34475
    hmm = HMM(np.full(3, 1 / 3), np.eye(3), np.array([[0.4, 0.3, 0.3], [0.3, 0.4, 0.3], [b2, b2, 1 - 2 * b2]]))
    x = np.array([[0] * n0 + [1] * n0] * 4)  # n = 4: a bucket size, no padded sequence
    pi, B = (np.asarray(a, np.float64) for a in (hmm.initial, hmm.emission))  # the stored float32 parameters
    log_joint = np.log(pi) + np.log(B[:, x[0]]).sum(1)
    want = np.exp(log_joint - logsumexp(log_joint))
    assert want[2] > 0.02  # the state whose product flushes carries real mass
    got = np.asarray(hmm.state_posterior(x), np.float64)
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=1e-5)
