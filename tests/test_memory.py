"""The memory-augmented HMM: every exact quantity equals enumeration over all memory values and all hidden
paths; its joint HMM, one-cell form, sampler and memory posterior behave as the model says."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from simlm.errors import ConfigError, DistributionError, ShapeError, TokenError, ZeroProbabilityError
from simlm.strategies import (memory_hmms, probability_vectors, stochastic_matrices, token_sequences,
                              worlds_with_tokens)
from simlm.worlds import hmm_core
from simlm.worlds.hmm import HMM
from simlm.worlds.memory import MemoryHMM, memory_configurations

TOL = dict(rtol=1e-4, atol=1e-5)  # float32 inference against float64 enumeration
# Each new world shape costs a jit compilation (~0.3 s) per inference function, which dominates these
# tests; the property tests run a third of the profile's examples (25 → 8 in "ci", 1000 → 333 in "thorough").
few = settings(max_examples=max(1, settings.default.max_examples // 3))
fewer = settings(max_examples=max(1, settings.default.max_examples // 5))  # two worlds compiled per example


# ---- strategies ---------------------------------------------------------------------------------

def _rows(rng, *shape):
    """Strictly positive probability rows (last axis sums to 1), Dirichlet(1), for fixed worlds."""
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1] or None)


# Positive worlds make every sequence possible, so arbitrary token ids need no compiled sampler.
cases = worlds_with_tokens(memory_hmms(), possible=False, max_length=5, n_sequences=3)


# ---- enumeration (float64 numpy) ----------------------------------------------------------------

def enumerate_joint(world, x):
    """p(m, z_1:L, x_1:L) for every memory m ∈ [M]^N (C-order) and every path z, shape (M^N, (N·Q)^L),
    and the paths (P, L)."""
    rho, pi, A, E = (np.asarray(a, np.float64) for a in (world.memory_prior, world.initial, world.transition,
                                                         world.emission))
    N, M = rho.shape
    Q = E.shape[1]
    paths = np.array(list(itertools.product(range(N * Q), repeat=len(x))))
    s, q = paths // Q, paths % Q
    table = []
    for m in itertools.product(range(M), repeat=N):
        p = np.prod(rho[np.arange(N), m]) * pi[paths[:, 0]]
        for t in range(len(x)):
            if t:
                p = p * A[paths[:, t - 1], paths[:, t]]
            p = p * E[np.array(m)[s[:, t]], q[:, t], x[t]]
        table.append(p)
    return np.array(table), paths


def prob(world, x):
    return enumerate_joint(world, list(x))[0].sum()


def substitution_law(world, before, after):
    """p(x_i = · | before, after) for a position i between two token lists, (V,)."""
    joint = np.array([prob(world, list(before) + [v] + list(after)) for v in range(world.n_symbols)])
    return joint / joint.sum()


# ---- exactness against enumeration --------------------------------------------------------------

@few
@given(worlds_with_tokens(memory_hmms(allow_zeros=True), possible=False, max_length=5, n_sequences=3))
def test_log_likelihood_equals_sum_over_memories_and_paths(case):
    world, x = case  # with exact zeros, so some sequences are impossible: −inf on both sides, never NaN
    with np.errstate(divide="ignore"):
        expected = [np.log(prob(world, s)) for s in x]
    got = np.asarray(world.log_likelihood(x))
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, expected, **TOL)


@few
@given(cases)
def test_next_token_law_equals_ratio_of_prefix_probabilities(case):
    world, x = case
    got = np.asarray(world.next_token_probs(x))
    for i, s in enumerate(x):
        expected = [substitution_law(world, s[:t], []) for t in range(len(s))]
        np.testing.assert_allclose(got[i], expected, **TOL)


@few
@given(cases)
def test_masked_token_law_equals_substitution_enumeration(case):
    world, x = case
    got = np.asarray(world.masked_token_probs(x))
    for i, s in enumerate(x):
        expected = [substitution_law(world, s[:t], s[t + 1:]) for t in range(len(s))]
        np.testing.assert_allclose(got[i], expected, **TOL)


@few
@given(cases)
def test_prepended_mask_law_equals_enumeration_over_the_longer_sequence(case):
    world, x = case
    got = np.asarray(world.prepended_mask_probs(x))
    for i, s in enumerate(x):
        np.testing.assert_allclose(got[i], substitution_law(world, [], s), **TOL)


@few
@given(cases)
def test_state_posterior_is_the_path_posterior_marginal(case):
    world, x = case
    got = np.asarray(world.state_posterior(x))
    K = world.n_cells * world.n_syntactic
    for i, s in enumerate(x):
        table, paths = enumerate_joint(world, list(s))
        per_path = table.sum(0) / table.sum()
        expected = [np.bincount(paths[:, t], weights=per_path, minlength=K) for t in range(len(s))]
        np.testing.assert_allclose(got[i], expected, **TOL)


@few
@given(cases)
def test_filtered_state_posterior_is_the_prefix_path_posterior_marginal(case):
    world, x = case
    got = np.asarray(world.state_posterior(x, smoothed=False))
    K = world.n_cells * world.n_syntactic
    for i, s in enumerate(x):
        for t in range(len(s)):
            table, paths = enumerate_joint(world, list(s[: t + 1]))
            expected = np.bincount(paths[:, t], weights=table.sum(0) / table.sum(), minlength=K)
            np.testing.assert_allclose(got[i, t], expected, **TOL)


@few
@given(cases)
def test_memory_posterior_is_the_per_cell_marginal_of_the_memory_posterior(case):
    world, x = case
    got = np.asarray(world.memory_posterior(x))
    log_got = np.asarray(world.log_memory_posterior(x))
    N, M = world.n_cells, world.n_values
    memories = np.array(list(itertools.product(range(M), repeat=N)))
    for i, s in enumerate(x):
        table, _ = enumerate_joint(world, list(s))
        p_m = table.sum(1) / table.sum()
        expected = np.array([np.bincount(memories[:, j], weights=p_m, minlength=M) for j in range(N)])
        np.testing.assert_allclose(got[i], expected, **TOL)
        zero = expected == 0  # the log: −inf exactly there, else the log of the enumerated share
        assert np.all(np.isneginf(log_got[i][zero]))
        np.testing.assert_allclose(np.exp(log_got[i][~zero]), expected[~zero], **TOL)
        np.testing.assert_allclose(log_got[i][~zero], np.log(expected[~zero]), rtol=1e-4, atol=1e-4)


# ---- joint HMM and one-cell form ----------------------------------------------------------------

@fewer
@given(cases)
def test_joint_hmm_gives_the_same_likelihood_and_next_token_law(case):
    world, x = case
    joint = world.joint_hmm()
    assert joint.n_states == world.n_joint_states == world.n_values ** world.n_cells * world.initial.shape[0]
    np.testing.assert_allclose(joint.log_likelihood(x), world.log_likelihood(x), **TOL)
    np.testing.assert_allclose(joint.next_token_probs(x), world.next_token_probs(x), **TOL)


@st.composite
def one_cell_parameters(draw, max_values=3, max_hidden=3, max_symbols=4):
    """(prior (M,), initial (Q,), transition (Q, Q), emission (M, Q, V)), positive rows."""
    M, Q, V = (draw(st.integers(lo, hi)) for lo, hi in ((1, max_values), (1, max_hidden), (2, max_symbols)))
    return (draw(probability_vectors(M, allow_zeros=False)), draw(probability_vectors(Q, allow_zeros=False)),
            draw(stochastic_matrices(Q, Q, allow_zeros=False)),
            draw(stochastic_matrices(M * Q, V, allow_zeros=False)).reshape(M, Q, V))


@fewer
@given(one_cell_parameters(), st.data())
def test_one_cell_is_the_block_diagonal_slot_hidden_hmm(params, data):
    prior, pi, A, E = params
    M, Q, V = E.shape
    world = MemoryHMM.one_cell(prior, pi, A, E)
    by_hand = HMM(np.kron(prior, pi), np.kron(np.eye(M), A), E.reshape(M * Q, V))  # state m·Q + h
    joint = world.joint_hmm()
    for got, want in zip((joint.initial, joint.transition, joint.emission),
                         (by_hand.initial, by_hand.transition, by_hand.emission)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    x = data.draw(token_sequences(world, possible=False, max_length=5))
    np.testing.assert_allclose(world.log_likelihood(x), by_hand.log_likelihood(x), **TOL)


def test_memory_configurations_are_in_c_order_and_index_the_joint_chain():
    """Row c of the configurations holds (m_1, …, m_N) with c = Σ_j m_j M^{N−1−j} (cell 0 most
    significant), and the joint state c·N·Q + z has P(c) π(z) and emits emission[m_s(c), q]: for
    ρ = [[.9, .1], [.3, .7]], π = [1, 0], c = 1 is (0, 1) with P = .9 · .7 = .63 (reversed, .1 · .3 = .03)."""
    np.testing.assert_array_equal(memory_configurations(2, 3)[:4], [[0, 0], [0, 1], [0, 2], [1, 0]])
    cfg = memory_configurations(3, 2)
    np.testing.assert_array_equal(cfg @ [4, 2, 1], np.arange(8))
    world = MemoryHMM([[0.9, 0.1], [0.3, 0.7]], [1.0, 0.0], np.eye(2), [[[1.0, 0.0]], [[0.0, 1.0]]])  # N=2, M=2, Q=1
    np.testing.assert_allclose(world.chain.initial, [0.27, 0.0, 0.63, 0.0, 0.03, 0.0, 0.07, 0.0], rtol=1e-6)
    # value m emits token m: state (c, s) emits the value cell s holds in c
    np.testing.assert_array_equal(np.asarray(world.chain.emission)[:, 1], memory_configurations(2, 2).reshape(-1))


def test_the_dense_transition_of_a_block_chain_is_the_block_diagonal_matrix():
    """Chain.dense_transition materialises I_G ⊗ A for a shared block (the joint HMM's transition, exactly:
    products with 1 and 0) and diag(A_1, …, A_G) for a (G, k, k) stack."""
    world = MemoryHMM.random(0, 2, 2, 2, 3)  # block (4, 4), G = 4
    A = np.asarray(world.transition)
    dense = np.asarray(world.chain.dense_transition())
    np.testing.assert_array_equal(dense, np.asarray(world.joint_hmm().transition))
    np.testing.assert_array_equal(dense, np.kron(np.eye(4, dtype=A.dtype), A))
    stack = np.stack([A, A[::-1, ::-1].T / A[::-1, ::-1].T.sum(1, keepdims=True)]).astype(np.float32)
    chain = hmm_core.Chain(np.full(8, 1 / 8, np.float32), stack, np.full((8, 2), 0.5, np.float32))
    np.testing.assert_array_equal(np.asarray(chain.dense_transition()), scipy.linalg.block_diag(*stack))


# ---- sampling -----------------------------------------------------------------------------------

N_SAMPLES = 20_000
# Each frequency below is a mean of 20 000 Bernoulli draws, standard error ≤ 0.5/√20000 ≈ 0.0035;
# 0.015 is over 4 standard errors, so a correct sampler fails with probability < 1e-4 per entry, and the
# seed is fixed anyway.
FREQ_TOL = 0.015
SAMPLING_WORLD = dict(seed=3, n_cells=2, n_values=3, n_syntactic=2, n_symbols=4, prior_concentration=1.0,
                      transition_temp=1.0, emission_temp=0.5, start_temp=1.0)


@pytest.fixture(scope="module")
def sampled():
    world = MemoryHMM.random(**SAMPLING_WORLD)
    tokens, states, memory = world.sample(7, N_SAMPLES, 2, return_states=True)
    return world, np.asarray(tokens), np.asarray(states), np.asarray(memory)


def test_sampled_memory_cells_are_independent_and_token_pairs_follow_the_exact_law(sampled):
    """P(m) = Π_j ρ[j, m_j] (the cells drawn independently: one uniform shared by both cells kept every
    marginal exact, 0.053 off the product here, and passed the per-cell test below) and (x_1, x_2) follows
    exp(log_likelihood) — the step after the first, through a chain that is not deterministic."""
    world, tokens, _, memory = sampled
    rho = np.asarray(world.memory_prior, np.float64)
    M, V = world.n_values, world.n_symbols
    pair_freq = np.bincount(memory[:, 0] * M + memory[:, 1], minlength=M * M) / N_SAMPLES
    np.testing.assert_allclose(pair_freq, np.outer(rho[0], rho[1]).reshape(-1), atol=FREQ_TOL)
    pairs = np.stack(np.unravel_index(np.arange(V * V), (V, V)), axis=-1).astype(np.int32)
    law = np.exp(np.asarray(world.log_likelihood(pairs), np.float64))
    freq = np.bincount(tokens[:, 0] * V + tokens[:, 1], minlength=V * V) / N_SAMPLES
    np.testing.assert_allclose(freq, law, atol=FREQ_TOL)


def test_sampled_memory_frequencies_match_the_prior(sampled):
    world, _, _, memory = sampled
    for j in range(world.n_cells):
        freq = np.bincount(memory[:, j], minlength=world.n_values) / N_SAMPLES
        np.testing.assert_allclose(freq, world.memory_prior[j], atol=FREQ_TOL)


def test_sampled_first_token_frequencies_match_the_exact_first_token_law(sampled):
    world, tokens, _, _ = sampled
    law = np.asarray(world.next_token_probs(tokens[:1]))[0, 0]
    np.testing.assert_allclose(np.bincount(tokens[:, 0], minlength=world.n_symbols) / N_SAMPLES, law, atol=FREQ_TOL)


def test_sampled_first_token_given_memory_is_emitted_from_the_selected_cell(sampled):
    world, tokens, _, memory = sampled
    pi, E = np.asarray(world.initial, np.float64), np.asarray(world.emission, np.float64)
    Q = world.n_syntactic
    for m in {tuple(r) for r in memory}:
        rows = (memory == m).all(axis=1)
        if rows.sum() < 1000:
            continue
        # p(x_1 | m) = Σ_{s,q} π(s·Q + q) emission[m_s, q]
        law = sum(pi[z] * E[m[z // Q], z % Q] for z in range(len(pi)))
        freq = np.bincount(tokens[rows, 0], minlength=world.n_symbols) / rows.sum()
        np.testing.assert_allclose(freq, law, atol=4 * 0.5 / np.sqrt(rows.sum()))


def test_sampled_states_and_tokens_have_the_documented_shapes_and_are_possible(sampled):
    world, tokens, states, memory = sampled
    assert tokens.dtype == states.dtype == memory.dtype == np.int32
    assert tokens.shape == states.shape == (N_SAMPLES, 2) and memory.shape == (N_SAMPLES, world.n_cells)
    assert states.max() < world.n_cells * world.n_syntactic and memory.max() < world.n_values
    assert np.isfinite(np.asarray(world.log_likelihood(tokens[:500]))).all()


def test_same_seed_gives_bit_identical_samples(sampled):
    world, tokens, states, memory = sampled  # same shapes as the fixture, so nothing is recompiled
    again = world.sample(jax.random.PRNGKey(7), N_SAMPLES, 2, return_states=True)
    for u, v in zip((tokens, states, memory), again):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(tokens, world.sample(8, N_SAMPLES, 2))


def test_world_is_a_pytree_usable_under_jit(sampled):
    world, tokens, _, _ = sampled
    x = tokens[:500]

    @jax.jit
    def loglik(w, toks):
        return jax.vmap(hmm_core.log_likelihood, (None, None, None, 0))(w.joint_initial, w.transition,
                                                                         w.joint_emission, toks)

    np.testing.assert_allclose(loglik(world, x), world.log_likelihood(x), rtol=1e-6)
    rebuilt = jax.tree_util.tree_map(lambda a: a, world)
    assert rebuilt.fingerprint() == world.fingerprint()
    np.testing.assert_array_equal(rebuilt.log_likelihood(x), world.log_likelihood(x))


# ---- the memory posterior concentrates ----------------------------------------------------------

def test_memory_posterior_concentrates_on_the_true_memory_of_a_well_separated_world():
    # Two cells, three values, two syntactic states; z cycles (0,0)→(0,1)→(1,0)→(1,1)→… from (0,0), so the
    # selected cell is known at every t; emission[m, q] puts 0.6 on token (m + q) mod 3, 0.2 elsewhere.
    M, Q = 3, 2
    cycle = np.roll(np.eye(4), 1, axis=1)
    emission = np.full((M, Q, 3), 0.2)
    for m, q in itertools.product(range(M), range(Q)):
        emission[m, q, (m + q) % 3] = 0.6
    world = MemoryHMM(np.full((2, M), 1 / M), np.eye(4)[0], cycle, emission)
    tokens, _, memory = world.sample(5, 200, 200, return_states=True)
    guess = np.asarray(world.memory_posterior(tokens)).argmax(-1)
    assert (guess == np.asarray(memory)).mean() >= 0.95


# ---- bad inputs ---------------------------------------------------------------------------------

def _good():
    rng = np.random.default_rng(0)
    return dict(memory_prior=_rows(rng, 2, 3), initial=_rows(rng, 4), transition=_rows(rng, 4, 4),
                emission=_rows(rng, 3, 2, 5))


def _with(name, fn):
    p = _good()
    p[name] = fn(p[name])
    return p


def _set(index, value):
    def fn(a):
        a = a.copy()
        a[index] = value
        return a
    return fn


BAD_PARAMETERS = {
    "prior row not summing to 1": (_with("memory_prior", lambda a: a * 0.9), DistributionError, "memory_prior"),
    "negative emission entry": (_with("emission", _set((0, 0, 0), -0.1)), DistributionError, "emission"),
    "NaN in transition": (_with("transition", _set((1, 2), np.nan)), DistributionError, "transition"),
    "NaN in memory prior": (_with("memory_prior", _set((0, 1), np.nan)), DistributionError, "memory_prior"),
    "emission M ≠ memory values": (_with("emission", lambda a: a[:2]), ShapeError, "emission"),
    "emission not (M, Q, V)": (_with("emission", lambda a: a[0]), ShapeError, "emission"),
    "initial ≠ N·Q": (_with("emission", lambda a: a[:, :1]), ShapeError, "initial"),
    "transition shape": (_with("transition", lambda a: a[:3, :3] / a[:3, :3].sum(1, keepdims=True)), ShapeError,
                         "transition"),
    "memory prior not (N, M)": (_with("memory_prior", lambda a: a[0]), ShapeError, "memory_prior"),
}


@pytest.mark.parametrize("params, error, name", BAD_PARAMETERS.values(), ids=BAD_PARAMETERS.keys())
def test_bad_parameters_raise_a_typed_error_naming_the_argument(params, error, name):
    with pytest.raises(error, match=name):
        MemoryHMM(**params)


def test_a_joint_start_probability_below_the_float_range_is_refused_not_stored_as_zero():
    """ρ = (1 − 1e-20, 1e-20) and π = (1 − 1e-20, 1e-20), both normal float32 numbers: their product 1e-40 is
    not.  Stored flushed to 0, a sequence only (value 1, state 1) can emit read log-likelihood −∞ (exactly
    −92.1) and its memory posterior raised ZeroProbabilityError.  Refused, naming both arguments; stored
    factors below the range are flushed as every world's are, and their products with them."""
    E = [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]
    with pytest.raises(ConfigError, match=r"memory_prior, initial: the joint start probability .* = 1e-40"):
        MemoryHMM([[1 - 1e-20, 1e-20]], [1 - 1e-20, 1e-20], np.eye(2), E)
    flushed = MemoryHMM([[1 - 1e-40, 1e-40]], [0.5, 0.5], np.eye(2), E)  # the factor itself: stored as 0
    np.testing.assert_array_equal(np.asarray(flushed.joint_initial), [0.5, 0.5, 0.0, 0.0])


def test_one_cell_with_a_matrix_prior_raises_a_shape_error_naming_prior():
    with pytest.raises(ShapeError, match="prior"):
        MemoryHMM.one_cell(np.full((2, 2), 0.5), [1.0], [[1.0]], np.full((2, 1, 2), 0.5))


@pytest.mark.parametrize("tokens, match", [([[0, 5]], "outside"), ([[-1, 0]], "outside"),
                                           (np.zeros((2, 0), np.int32), "empty"), ([[0.5, 1]], "integer")])
def test_bad_tokens_raise_a_token_error(tokens, match):
    world = MemoryHMM(**_good())
    for method in (world.log_likelihood, world.memory_posterior, world.state_posterior):
        with pytest.raises(TokenError, match=match):
            method(tokens)


@pytest.mark.parametrize("call, name", [
    (lambda w: w.sample(-1, 2, 3), "key"), (lambda w: w.sample("seed", 2, 3), "key"),
    (lambda w: w.sample(0, 0, 3), "n_sequences"), (lambda w: w.sample(0, 2, 0), "length"),
    (lambda w: MemoryHMM.random(-1, 1, 2, 1, 2), "seed"), (lambda w: MemoryHMM.random(0, 0, 2, 1, 2), "n_cells"),
    (lambda w: MemoryHMM.random(0, 1, 2, 1, 2, emission_tmp=1.0), "emission_tmp"),
    (lambda w: MemoryHMM.random(0, 1, 2, 1, 2, emission_temp=0.0), "emission_temp"),
])
def test_bad_seeds_sizes_and_options_raise_a_config_error_naming_them(call, name):
    with pytest.raises(ConfigError, match=name):
        call(MemoryHMM(**_good()))


def test_impossible_sequence_has_log_likelihood_minus_inf_and_no_conditional_law():
    # One cell, values {0, 1}; value m emits token m only, so a sequence holding both tokens is impossible.
    world = MemoryHMM.one_cell([0.5, 0.5], [1.0], [[1.0]], np.eye(2)[:, None, :])
    x = np.array([[0, 1, 1], [1, 1, 1]], np.int32)
    ll = np.asarray(world.log_likelihood(x))
    assert ll[0] == -np.inf and np.isclose(ll[1], np.log(0.5)) and not np.isnan(ll).any()
    for method in (world.next_token_probs, world.memory_posterior, world.state_posterior):
        with pytest.raises(ZeroProbabilityError, match="sequence 0"):
            method(x)
    # an impossible last token conditions no next-token row: each row is defined
    np.testing.assert_allclose(world.next_token_probs([0, 0, 1]), [[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(world.memory_posterior(x[1:]), [[[0.0, 1.0]]], atol=1e-7)


def test_the_sequential_next_token_law_of_a_block_chain_never_builds_a_joint_square():
    """K = M^N·N·Q joint states with one (k, k) block: the law's AB is formed block by block (it formed
    eye(K)·A, a K × K matrix, 1.66 GB of temporaries at K = 14400)."""
    K, k, V, T = 14400, 4, 2, 8
    S = jax.ShapeDtypeStruct
    law = jax.jit(lambda i, A, B, x: hmm_core.next_token_probs(i, A, B, x, hmm_core.CHECKED))
    compiled = law.lower(S((K,), np.float32), S((k, k), np.float32), S((K, V), np.float32), S((T,), np.int32)).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    assert analysis.temp_size_in_bytes < K * K * 4 / 100


def test_the_block_product_ab_equals_the_dense_one():
    world = MemoryHMM.random(3, 2, 3, 2, 5)
    initial, A, B = world._chain
    k = A.shape[-1]
    dense = HMM(np.asarray(initial, np.float64), np.kron(np.eye(B.shape[0] // k), np.asarray(A, np.float64)),
                np.asarray(B, np.float64))
    x = np.random.default_rng(0).integers(0, 5, (4, 7)).astype(np.int32)  # positive world: no sampler to compile
    np.testing.assert_allclose(world.next_token_probs(x), dense.next_token_probs(x), atol=5e-7)


# ---- review 2026-12-05 (afternoon) ----------------------------------------------------------------------

def test_a_world_rebuilt_from_its_own_parameters_is_the_same_world_to_the_bit():
    """The joint start law was the rounding of P(c)·π(z) of the factors as given, the sampler's that of the
    stored (rounded) factors: a world rebuilt from its parameter arrays, under the same fingerprint, read
    other laws (memory posteriors off by up to 1.8e-7).  Now both are the product of the stored factors."""
    rng = np.random.default_rng(2)
    world = MemoryHMM(rng.dirichlet(np.ones(2), 2), rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4), 4),
                      rng.dirichlet(np.ones(3), (2, 2)))
    rebuilt = MemoryHMM(*world.parameter_arrays())
    assert rebuilt.fingerprint() == world.fingerprint()
    np.testing.assert_array_equal(np.asarray(rebuilt.joint_initial), np.asarray(world.joint_initial))
    rho, pi = (np.asarray(a, np.float64) for a in (world.memory_prior, world.initial))
    product = np.einsum("a,b,c->abc", rho[0], rho[1], pi).reshape(-1).astype(np.float32)  # cells 0, 1, then z
    np.testing.assert_array_equal(np.asarray(world.joint_initial), product)
    tokens = rng.integers(0, 3, (200, 3))
    posteriors = [np.asarray(w.memory_posterior(tokens)) for w in (rebuilt, world)]
    np.testing.assert_array_equal(*posteriors)


def test_random_reads_only_its_familys_options():
    """A sparse world of 1500 states was refused for the (N·Q)³ permutation mixture it never builds, and
    each family's option was accepted under the other family and ignored."""
    assert MemoryHMM.random(0, 1, 2, 1500, 3, family="sparse").n_joint_states == 3000
    with pytest.raises(ConfigError, match="^n_permutations: only family='permutation-mixture'"):
        MemoryHMM.random(0, 1, 2, 2, 3, family="sparse", n_permutations=3)
    with pytest.raises(ConfigError, match="^out_degree: only family='sparse'"):
        MemoryHMM.random(0, 1, 2, 2, 3, out_degree=3)
    with pytest.raises(ConfigError, match="^transition_temp: only family='permutation-mixture'"):
        MemoryHMM.random(0, 1, 2, 2, 3, family="sparse", transition_temp=5.0)


def test_a_random_draw_below_float32s_range_is_refused_naming_the_options_and_float64_holds_it():
    """start_temp 0.006 draws, for some seeds, a joint start probability below float32's smallest normal: the
    error advised dtype=float64, which MemoryHMM.random refused as 'not an option', and named no option."""
    with pytest.raises(ConfigError, match=r"drawn by MemoryHMM.random\(seed=2\) with options \{'start_temp': 0.006\}"
                                          r": raise start_temp or prior_concentration, or pass dtype=float64"):
        MemoryHMM.random(2, 2, 2, 2, 3, start_temp=0.006)
    with jax.enable_x64(True):
        assert MemoryHMM.random(2, 2, 2, 2, 3, start_temp=0.006, dtype="float64").memory_prior.dtype == np.float64
    # only that refusal gets the advice: a bad dtype is refused as it is, and the sparse family has no start_temp
    with pytest.raises(ConfigError, match=r"^dtype: expected float32 or float64, got int32$"):
        MemoryHMM.random(2, 2, 2, 2, 3, dtype="int32")
    with pytest.raises(ConfigError, match=r"sparse', 'prior_concentration': 0.001\}: raise prior_concentration, or"):
        MemoryHMM.random(2, 2, 2, 2, 3, family="sparse", prior_concentration=1e-3)


def test_a_dirichlet_prior_draw_keeps_every_memory_value_possible():
    """prior_concentration 1e-3 drew exact zeros (and 1e-70s, flushed to 0 in float32): seed 0 stored
    [[1, 0, 0], [0, 0, 1]], a world with fewer memory values than asked for, silently.  Lifted to 2·tiny now
    (so in float32 that joint is refused, naming the option); a draw without such entries is unchanged."""
    with pytest.raises(ConfigError, match="prior_concentration"):
        MemoryHMM.random(0, 2, 3, 2, 3, prior_concentration=1e-3)
    with jax.enable_x64(True):
        prior = np.asarray(MemoryHMM.random(0, 2, 3, 2, 3, prior_concentration=1e-3, dtype="float64").memory_prior)
    assert (prior > 0).all()
    kept = MemoryHMM.random(0, 2, 3, 2, 3, prior_concentration=0.5).memory_prior
    np.testing.assert_array_equal(kept, np.float32(np.random.default_rng(0).dirichlet(np.full(3, 0.5), size=2)))


def test_random_sizes_a_float64_world_at_eight_bytes_before_drawing_it(monkeypatch):
    """``random`` checked the joint chain's size at 4-byte floats whatever the dtype, so a float64 world twice
    too large was drawn before its constructor refused it."""
    import simlm.worlds.memory as memory

    seen = []
    monkeypatch.setattr(memory, "check_request", lambda name, parts, what: seen.append(parts))
    with jax.enable_x64(True):
        MemoryHMM.random(0, 1, 2, 2, 3, dtype=np.float64)
    assert seen[0][1][1] == 8 + 8  # the random's own check, before anything is drawn: float64 on the device


def test_an_empty_memory_or_syntax_is_named_not_blamed_on_initial():
    """No cells, or no syntactic states, passed the probability checks (the empty axis is not the last) and the
    error named ``initial``, whose expected shape (0,) followed from them (a review, 2026-12-06)."""
    with pytest.raises(ShapeError, match=r"^memory_prior: no cells"):
        MemoryHMM(np.zeros((0, 2)), np.full(4, 0.25), np.full((4, 4), 0.25), np.full((2, 2, 3), 1 / 3))
    with pytest.raises(ShapeError, match=r"^emission: no syntactic states"):
        MemoryHMM(np.full((2, 2), 0.5), np.full(4, 0.25), np.full((4, 4), 0.25), np.zeros((2, 0, 3)))


def test_the_log_space_posteriors_of_a_float32_world_keep_float32_precision_at_any_length():
    """The log-space scans ran in float32: a buried share's log, near −100 to −400, took each step's rounding
    (log_memory_posterior 8e-4 nats off at T = 400, 1e-2 at 1600, a review 2026-12-06).  They run in float64 and
    return the world's dtype: within float32 rounding of the value of the float64 world of the same parameters."""
    eps = 1e-3
    rho, pi, A = np.array([[0.5, 0.5]]), np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.2, 0.8]])
    E = np.array([[[1 - 2 * eps, eps, eps], [0.5, 0.5 - eps, eps]], [[eps, 1 - 2 * eps, eps], [0.3, 0.7 - eps, eps]]])
    T = 800
    x = np.r_[np.zeros(T // 2, int), np.ones(T - T // 2, int)]
    w32 = MemoryHMM(rho, pi, A, E)
    hmm32 = w32.joint_hmm()
    got = {"memory": np.asarray(w32.log_memory_posterior(x), np.float64),
           "state": np.asarray(hmm32.log_state_posterior(x), np.float64),
           "prepended": np.asarray(hmm32.log_prepended_state_posterior(x), np.float64)}
    assert got["memory"].dtype == np.float64 and w32.log_memory_posterior(x).dtype == jnp.float32
    with jax.enable_x64(True):
        w64 = MemoryHMM(*(np.asarray(a, np.float64) for a in w32.parameter_arrays()), dtype=jnp.float64)
        hmm64 = w64.joint_hmm()
        want = {"memory": np.asarray(w64.log_memory_posterior(x)), "state": np.asarray(hmm64.log_state_posterior(x)),
                "prepended": np.asarray(hmm64.log_prepended_state_posterior(x))}
    assert want["memory"].min() < -190  # a buried value: its log carries the length's rounding
    for name in got:
        finite = np.isfinite(want[name])
        np.testing.assert_array_equal(np.isfinite(got[name]), finite)
        np.testing.assert_allclose(got[name][finite], want[name][finite], rtol=2e-7, atol=1e-6, err_msg=name)


def test_memory_random_default_prior_is_exactly_uniform():
    """MemoryHMM.random documents ``prior_concentration=None`` as ρ[j] = 1/M for every cell; no test read the
    default prior (a 0.1 % skew of value 0 passed the suite)."""
    world = MemoryHMM.random(0, 2, 3, 2, 4)
    np.testing.assert_array_equal(np.asarray(world.memory_prior), np.float32(1 / 3))
