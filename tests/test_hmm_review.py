"""Regression tests for reviewed defects of the HMM worlds: states the associative scans bury without a
log-space rerun, posteriors that depended on the T bucket for rows accepted off 1, sparse worlds losing
support in float32, cross-entropy of impossible sequences, and typed-error quality."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from scipy.special import logsumexp

import bruteforce as bf
from profiles import scaled
from simlm.errors import ConfigError, DistributionError, TokenError, ZeroProbabilityError
from simlm.strategies import probability_vectors
from simlm.worlds import HMM, MemoryHMM, buckets
from simlm.worlds import hmm_core as core
from simlm.worlds.base import rows_within_rounding
from simlm.worlds.families import dirichlet, ginc, permutation_mixture, random_parameters, sparse, tempered
from test_hmm_parallel import _assert_same, _modes, _program, chains_and_tokens

# ---- the associative scans' float-range check ------------------------------------------------------------

# State 0 emits only symbol 2 and moves to one of two absorbing states for good; 1 and 2 emit 0 and 1 at
# opposite odds.  T ≥ 64 is not bucketed, so the world methods run the scan a device would run by default;
# both cases have K = 3, V = 4 and T = 141, so that each function compiles once for both.
_A = [[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def _transient_feeding_absorbing():
    """The reviewer's case: 40 zeros push state 2's share of the prefix composition's row below the float
    range (its c_t stay ordinary), and 100 ones then favour it."""
    world = HMM([1.0, 0.0, 0.0], _A, [[0.0, 0.0, 1.0, 0.0], [0.99, 0.01, 0.0, 0.0], [0.01, 0.99, 0.0, 0.0]])
    x = np.array([2] + [0] * 40 + [1] * 100, np.int32)
    exact = logsumexp([np.log(0.5) + 40 * np.log(0.99) + 100 * np.log(0.01),
                       np.log(0.5) + 40 * np.log(0.01) + 100 * np.log(0.99)])
    return world, x, exact


def _buried_by_a_composition_only():
    """No share of any p_t leaves the float range (the sequential scan needs no rerun), but the composition of
    the prefix up to t = 31 (state 2 at e⁻⁷⁰) with the block 32..63 (which favours 2 by 125 nats) shifts by
    the block's best state: state 1's weight, e⁻¹²⁵ of the row's largest, flushes, and the last 32 tokens
    favour it again; 45 tokens that both emit alike pad T to 141.  A check of the laws' least share alone
    does not see it."""
    world = HMM([1.0, 0.0, 0.0], _A, [[0.0, 0.0, 1.0, 0.0], [0.49, 0.01, 0.0, 0.5], [0.01, 0.49, 0.0, 0.5]])
    x = np.array([2] + [0] * 18 + [3] * 13 + [1] * 32 + [0] * 32 + [3] * 45, np.int32)
    exact = logsumexp([np.log(0.5) + 50 * np.log(0.49) + 32 * np.log(0.01),
                       np.log(0.5) + 50 * np.log(0.01) + 32 * np.log(0.49)]) + 58 * np.log(0.5)
    return world, x, exact


CASES = {"prefix-row": _transient_feeding_absorbing, "composition-shift": _buried_by_a_composition_only}
# (a prepended position would be impossible here: x_1 = 2 needs h_1 = 0, which π A never gives)
LAWS = ("next_token_probs", "masked_token_probs", "state_posterior")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_accelerator_path_reruns_a_state_buried_inside_the_scans_compositions(case, monkeypatch):
    world, x, exact = CASES[case]()
    sequential = {name: np.asarray(getattr(world, name)(x)) for name in LAWS}  # the CPU default: exact
    assert float(world.log_likelihood(x)) == pytest.approx(exact, abs=1e-3)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # as on an accelerator: the scans for T ≥ 64
    assert core.use_parallel(None, len(x), 3)
    assert float(world.log_likelihood(x)) == pytest.approx(exact, abs=1e-3)  # was 275 (69) nats off
    for name in LAWS:
        np.testing.assert_allclose(np.asarray(getattr(world, name)(x)), sequential[name], atol=1e-4,
                                   err_msg=name)


SCAN_MODE_FUNCTIONS = ("token_logprobs", "next_token_probs", "masked_token_probs", "prepended_mask_probs", "backward")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_scan_mode_function_reports_the_buried_state(case):
    """The check of each core function in the scans' mode (``batched`` reruns what it flags): the forward
    family reported only its least c_t (ordinary here), the backward scan nothing."""
    world, x, _ = CASES[case]()
    floor = float(core.floor(*world.chain[1:]))  # the floor the world methods compare with
    # the forward family reads hmm_parallel.forward, the posteriors both scans, the prepended law the backward
    # scan and the forward one under π A (the sequence is impossible there, and still reported); backward
    # reads (A, B, x).  One program for all five, shared by both cases and the test below.
    for name, [(_, low)] in zip(SCAN_MODE_FUNCTIONS, _program(SCAN_MODE_FUNCTIONS, (core.CHECKED_SCANS,))(
            *world.chain, jnp.asarray(x))):
        assert float(low) < floor, name


def test_the_scans_of_a_dense_world_never_need_the_rerun():
    """Every entry of A positive: the scans' least product and share stay far above the floor, as the
    sequential scan's do (no log-space rerun on an accelerator for an ordinary world).  K = 3, V = 4 and
    T = 141 ≥ 64, as above, so that the masked law's scans (both scans) run in the program the test above
    compiled."""
    hmm = HMM.random(0, 3, 4)
    assert (np.asarray(hmm.transition) > 0).all()
    masked = SCAN_MODE_FUNCTIONS.index("masked_token_probs")
    for t in np.asarray(hmm.sample(0, 4, 141)):
        [(_, low)] = _program(SCAN_MODE_FUNCTIONS, (core.CHECKED_SCANS,))(*hmm.chain, jnp.asarray(t))[masked]
        assert float(low) > 1e6 * float(core.floor(*hmm.chain[1:]))


@given(chains_and_tokens())
def test_the_tracked_scans_give_the_plain_scans_outputs_and_a_bound_that_is_never_nan(case):
    """Zeros in π, A, B and impossible tokens: the bound is a number (NaN would compare False and never
    rerun), and tracking it leaves the outputs as they were."""
    names = ("forward", "next_token_probs", "masked_token_probs", "prepended_mask_probs", "backward")
    got = _modes(names, (core.CHECKED_SCANS, True), *case)  # one program (backward reads A, B, x)
    for name in names:
        out, low = got[name, core.CHECKED_SCANS]
        _assert_same(got[name, True], out)
        assert not np.isnan(float(low)), name


# ---- T buckets and rows accepted off 1 -----------------------------------------------------------------

def _chain_off_one(transition, dtype):
    """A chain whose stored rows sum to 1 ± 5e-4: the world's constructor renormalises rows accepted off 1
    (``atol``), so the leaves are replaced as a pytree transformation may replace them."""
    leaves = ([0.5, 0.5], transition, [[0.6, 0.4], [0.3, 0.7]])
    hmm = HMM.tree_unflatten(None, tuple(jax.device_put(np.asarray(a, dtype)) for a in leaves))
    np.testing.assert_allclose(np.asarray(hmm.transition, np.float64).sum(1), [1.0005, 0.9995], rtol=1e-6)
    assert not buckets.rows_sum_to_one(hmm.transition)
    return hmm


def test_bucketed_posteriors_of_rows_accepted_off_one_equal_enumeration():
    """Rows summing to 1 ± 5e-4: blank steps appended to reach the T bucket read β_T = A·1, the row sums,
    and moved every masked law and posterior by ~1e-3 (T = 9 padded to 16).  Enumeration sums the paths of
    the same (unnormalised) rows."""
    with jax.enable_x64(True):
        hmm = _chain_off_one([[0.9905, 0.01], [0.01, 0.9895]], np.float64)
        x = np.array([[0, 1, 0, 0, 1, 1, 0, 1, 0]], np.int32)
        pi, A, B = bf.params(hmm)
        tol = dict(rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hmm.masked_token_probs(x)[0], [bf.masked_law(pi, A, B, x[0], t) for t in range(9)],
                                   **tol)
        np.testing.assert_allclose(hmm.state_posterior(x)[0], bf.smoothed_states(pi, A, B, x[0]), **tol)
        np.testing.assert_allclose(hmm.prepended_mask_probs(x)[0], bf.prepended_masked_law(pi, A, B, x[0]), **tol)
        np.testing.assert_allclose(hmm.prepended_state_posterior(x)[0], bf.prepended_state_law(pi, A, B, x[0]), **tol)


@pytest.mark.parametrize("T", [9, 33, 63, 64, 65])
def test_a_float32_world_off_one_has_the_same_laws_in_every_T_bucket(T):
    """The same float32 chain (rows 1 ± 5e-4) gives the unpadded scan's laws at every T."""
    hmm = _chain_off_one([[0.9505, 0.05], [0.05, 0.9495]], np.float32)
    x = np.random.default_rng(T).integers(0, 2, (2, T)).astype(np.int32)  # every B entry > 0: any x is possible
    names = ("masked_token_probs", "smoothed_posterior", "masked_state_posterior")
    wants = jax.jit(jax.vmap(lambda *chain_x: [getattr(core, name)(*chain_x, parallel=False)[0] for name in names],
                             in_axes=(None, None, None, 0)))(*hmm.chain, jnp.asarray(x))  # one program for the three
    for name, method, want in zip(names, (hmm.masked_token_probs, hmm.state_posterior, hmm.masked_state_posterior),
                                  wants):
        np.testing.assert_allclose(np.asarray(method(x)), np.asarray(want), atol=3e-7, err_msg=name)


def test_normalised_worlds_keep_their_T_buckets():
    """Worlds whose rows are laws rounded to float32 (every family, every strategy) still pad T — their
    results are what they were, bit for bit — and only rows off by more than rounding do not."""
    for world in (HMM.random(0, 5, 4), HMM.random(1, 7, 3, family="sparse", out_degree=2),
                  HMM.random(2, 6, 6, family="permutation-mixture"), HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], np.eye(2))):
        assert buckets.rows_sum_to_one(world.transition)
    assert not buckets.rows_sum_to_one(np.array([[0.9999, 0.0], [0.0, 1.0]], np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_sum_to_one_within_4_ulps_of_one_and_not_beyond(dtype):
    """The documented tolerance: a row whose stored values sum (in float64) to 1 ± k·eps of its dtype is one
    for k ≤ 4 and not for k ≥ 5.  Row 0 is [0.5, 0.5 + k·eps], exact in the dtype (its ulp at 0.5 is eps/2)."""
    eps = np.finfo(dtype).eps
    for k, within in ((4, True), (-4, True), (3, True), (5, False), (-5, False), (8, False)):
        a = np.array([[0.5, 0.5 + k * eps], [0.0, 1.0]], dtype)
        assert a.astype(np.float64)[0].sum() == 1.0 + k * np.float64(eps), k  # stored exactly k ulps off 1
        assert buckets.rows_sum_to_one(a) is within, k


# ---- the sparse family's support -------------------------------------------------------------------------

@pytest.mark.parametrize("concentration", [0.05, 0.01, 1e-3])
def test_sparse_worlds_keep_their_documented_support_in_float32(concentration):
    """Dirichlet draws that underflow were lifted to float64's smallest normal, which float32 storage
    flushes to 0: rows lost states of their ``out_degree`` (and symbols of ``emission_support``)."""
    world = HMM.random(0, 6, 5, family="sparse", out_degree=3, emission_support=4,
                       transition_concentration=concentration, emission_concentration=concentration)
    assert ((np.asarray(world.transition) > 0).sum(1) == 3).all()
    assert ((np.asarray(world.emission) > 0).sum(1) == 4).all()
    memory = MemoryHMM.random(0, 2, 2, 3, 5, family="sparse", out_degree=2)
    assert memory.fingerprint() == MemoryHMM.random(0, 2, 2, 3, 5, family="sparse", out_degree=2).fingerprint()


def test_sparse_draws_at_the_default_concentration_are_unchanged():
    """The lift only touches entries below float32's range: these fingerprints are those of the worlds drawn
    before it (the property tests' and the notebook's sparse worlds)."""
    assert HMM.random(3, 6, 4, family="sparse", out_degree=2, initial_support=3).fingerprint() == "a8287a0fcd0fc572"
    assert HMM.random(0, 5, 4, family="sparse", out_degree=2).fingerprint() == "40c9cc4cd8ef2d78"
    p = sparse(np.random.default_rng(7), 8, 6, out_degree=3)
    assert all(np.isclose(a.sum(-1), 1.0).all() for a in p)


# ---- cross-entropy of an impossible sequence --------------------------------------------------------------

def test_cross_entropy_of_an_impossible_sequence_is_a_typed_error_naming_it():
    hmm = HMM([1.0, 0.0], np.eye(2), [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was (inf, nan) with numpy's RuntimeWarning
        with pytest.raises(ZeroProbabilityError, match=r"sequence 1 .*token 2 at position 1.*cross-entropy"):
            hmm.cross_entropy(np.array([[0, 1, 0], [0, 2, 1]]))
    x = np.array([[0, 1, 0], [1, 1, 0]])
    ll = np.asarray(hmm.log_likelihood(x), np.float64) / 3
    assert hmm.cross_entropy(x) == (float(-ll.mean()), float(ll.std(ddof=1) / np.sqrt(2)))


# ---- typed errors ------------------------------------------------------------------------------------------

def test_min_mass_that_underflows_is_refused():
    with pytest.raises(ConfigError, match="min_mass"):
        probability_vectors(6, allow_zeros=False, min_mass=5e-324)  # drew exact zeros: 5e-324 / 2 is 0


@settings(max_examples=scaled(50))
@given(probability_vectors(6, allow_zeros=False, min_mass=1e-300))
def test_the_least_min_mass_keeps_every_entry_positive(p):
    assert (p > 0).all() and p.sum() == pytest.approx(1.0)


def test_a_float_token_out_of_range_is_reported_as_given():
    hmm = HMM([1.0, 0.0], np.eye(2), [[0.5, 0.5], [0.5, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the int64 cast warned and wrapped 1e30 to −2⁶³
        with pytest.raises(TokenError, match=r"token id 1e\+30 at sequence 0, position 1"):
            hmm.log_likelihood([0.0, 1e30])
        with pytest.raises(TokenError, match=r"token id -3 at sequence 0, position 1"):
            hmm.log_likelihood([0.0, -3.0])
        with pytest.raises(TokenError, match=r"token id 7 at sequence 0, position 0"):
            hmm.log_likelihood(np.array([7, 1], np.int64))
    assert float(hmm.log_likelihood([0.0, 1.0])) == float(hmm.log_likelihood([0, 1]))


def test_prompt_errors_name_the_prompt_argument():
    hmm = HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.1, 0.9]])
    for bad, error in (([[2.0, -1.0]], ConfigError), ([[1.0, 1.0, 1.0]], Exception), ([[0.0, 0.0]], ConfigError)):
        with pytest.raises(error, match=r"^prompt U: "):
            hmm.prompted_state_posterior([0, 1], bad)
    with pytest.raises(ConfigError, match=r"^prompt U: "):
        hmm.prompt_reweighting([[np.nan, 1.0]])


@pytest.mark.parametrize("which", ["initial", "transition", "emission"])
def test_boolean_arrays_are_refused_as_probabilities(which):
    arrays = {"initial": [True, False], "transition": [[True, False], [False, True]], "emission": [[True], [True]]}
    floats = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    HMM(floats["initial"], floats["transition"], floats["emission"])  # the same numbers as floats are a world
    args = dict(floats, **{which: arrays[which]})
    with pytest.raises(DistributionError, match=rf"^{which}: .*booleans"):
        HMM(args["initial"], args["transition"], args["emission"])
    with pytest.raises(DistributionError, match="booleans"):
        HMM(np.array([True, 0.0], object), floats["transition"], floats["emission"])


# ---- the families' options ---------------------------------------------------------------------------------

def _near_uniform(rows, atol=1e-2):
    return np.allclose(rows, 1.0 / np.shape(rows)[-1], atol=atol, rtol=0)


def _near_one_hot(rows, least=0.99):
    return bool((np.max(rows, axis=-1) > least).all())


@pytest.mark.parametrize("family", ["dirichlet", "sparse"])
def test_each_concentration_shapes_only_its_own_rows(family):
    """Dir(a·1) with a huge a is near the simplex's centre, with a tiny a near a vertex: π follows
    ``initial_concentration`` (dirichlet; sparse's π is uniform on its support), A
    ``transition_concentration`` and B ``emission_concentration``.  Each option in turn is set apart from
    the others.  sparse's ``out_degree=K`` puts A's Dirichlet on every state."""
    K, V = 5, 6
    arrays = {"initial_concentration": 0, "transition_concentration": 1, "emission_concentration": 2}
    if family == "sparse":
        del arrays["initial_concentration"]
    for odd in arrays:
        for a_odd, a_rest in ((1e6, 1e-4), (1e-4, 1e6)):
            options = {name: a_odd if name == odd else a_rest for name in arrays}
            if family == "sparse":
                options["out_degree"] = K
            drawn = random_parameters(np.random.default_rng(0), K, V, family, options)
            for name, i in arrays.items():
                near = _near_uniform if options[name] > 1 else _near_one_hot
                assert near(drawn[i]), (options, name, drawn[i])


def test_each_permutation_mixture_temperature_sets_only_its_own_array():
    """π from ``start_temp``, A's weights from ``transition_temp``, B from ``emission_temp`` (the uniforms
    are drawn alike at every temperature): heating one moves its array alone.  Cold, π and B's rows are
    near one-hot and A near one permutation; hot, π and B's rows are near uniform and A is the plain mean
    of K permutation matrices (every entry a multiple of 1/K).  A is doubly stochastic at both."""
    K, V = 5, 6
    cold = dict(start_temp=1e-3, transition_temp=1e-3, emission_temp=1e-3)
    pi, A, B = arrays = permutation_mixture(np.random.default_rng(0), K, V, **cold)
    assert _near_one_hot(pi) and _near_one_hot(A) and _near_one_hot(A.T) and _near_one_hot(B)
    for i, name in enumerate(("start_temp", "transition_temp", "emission_temp")):
        heated = permutation_mixture(np.random.default_rng(0), K, V, **dict(cold, **{name: 1e3}))
        for j in range(3):
            if j != i:
                np.testing.assert_array_equal(heated[j], arrays[j], err_msg=f"{name} moved array {j}")
        np.testing.assert_allclose(heated[1].sum(0), 1.0, atol=1e-12)
        np.testing.assert_allclose(heated[1].sum(1), 1.0, atol=1e-12)
        if name == "transition_temp":
            hot_A = heated[1]
            np.testing.assert_allclose(hot_A * K, np.round(hot_A * K), atol=1e-2)
            assert not _near_one_hot(hot_A)
        else:
            assert _near_uniform(heated[i]), (name, heated[i])


def test_tempered_where_the_inverse_temperature_overflows_is_one_hot_on_each_rows_argmax():
    """At temp = 1e-309, 1/temp overflows: row 0's logits stay finite, rows 1 and 2 hold ±inf (inf − inf
    would be NaN) — every row is the limit law, one-hot on its argmax, whichever form each row took."""
    u = np.array([[0.6, 0.55, 0.52], [0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    np.testing.assert_array_equal(tempered(u, 1e-309), np.eye(3)[u.argmax(1)])
    np.testing.assert_array_equal(tempered(u[:1], 1e-309), [[1.0, 0.0, 0.0]])


def test_a_permutation_mixture_at_an_overflowing_emission_temperature_has_one_hot_emissions():
    """emission_temp = 1e-309 is a positive finite number: the world is its limit, each emission row one-hot
    (V = 2 makes rows of both kinds — finite logits and ±inf — in the same B)."""
    for seed in range(3):
        world = HMM.random(seed, 6, 2, family="permutation-mixture", emission_temp=1e-309)
        B = np.asarray(world.emission)
        assert np.isin(B, (0.0, 1.0)).all() and (B.sum(1) == 1).all(), (seed, B)


@pytest.mark.parametrize("family, option", [
    ("dirichlet", "initial_concentration"), ("dirichlet", "transition_concentration"),
    ("dirichlet", "emission_concentration"), ("permutation-mixture", "start_temp"),
    ("permutation-mixture", "transition_temp"), ("permutation-mixture", "emission_temp"),
    ("sparse", "transition_concentration"), ("sparse", "emission_concentration"),
    ("ginc", "entity_stay"), ("ginc", "property_temp"), ("ginc", "emission_noise")])
def test_a_non_finite_option_is_a_typed_error_naming_it(family, option):
    for bad in (np.nan, np.inf):
        with pytest.raises(ConfigError, match=rf"^{option}: "):
            random_parameters(np.random.default_rng(0), 4, 3, family, {option: bad})


def _concept_entity_blocks(A, C, E, Qn):
    """A as (C, E, Qn, C, E, Qn): state (c·E + e)·Qn + q, the documented index."""
    return A.reshape(C, E, Qn, C, E, Qn)


@pytest.mark.parametrize("K, n_concepts, n_entities", [(18, 2, 3), (24, 2, 3), (16, 2, 2), (14, 2, 1), (12, 1, 3)])
def test_ginc_n_entities_defaults_to_the_largest_divisor_up_to_the_square_root(K, n_concepts, n_entities):
    """K/n_concepts = 9, 12, 8, 7, 12: the largest divisor ≤ √ is 3, 3, 2, 1, 3.  Read from the world: the
    entity chain (stay 0.5, else uniform) is each row's mass on each entity's block of n_properties states."""
    Qn = K // n_concepts // n_entities
    _, A, _ = ginc(np.random.default_rng(0), K, 30, n_concepts=n_concepts, entity_stay=0.5)
    mass = _concept_entity_blocks(A, n_concepts, n_entities, Qn).sum(-1)  # (C, E, Qn, C, E)
    for c in range(n_concepts):
        want = 0.5 * np.eye(n_entities) + 0.5 / n_entities
        np.testing.assert_allclose(mass[c, :, :, c, :], np.broadcast_to(want[:, None, :], (n_entities, Qn, n_entities)),
                                   atol=1e-12)


@pytest.mark.parametrize("stay", [0.0, 0.3, 1.0])
def test_ginc_concept_chains_are_kron_of_a_sticky_entity_chain_and_a_property_chain(stay):
    """A_c = kron(E_c, Q_c), E_c = stay·I + (1 − stay)/E: every (e, e') block of A_c is E_c[e, e']·Q_c,
    with one Q_c (a permutation mixture: doubly stochastic) per concept."""
    C, E, Qn = 2, 2, 3
    _, A, _ = ginc(np.random.default_rng(1), C * E * Qn, 20, n_concepts=C, n_entities=E, entity_stay=stay)
    ent = stay * np.eye(E) + (1 - stay) / E
    for c in range(C):
        block = A[c * E * Qn:(c + 1) * E * Qn, c * E * Qn:(c + 1) * E * Qn]
        Q = block[:Qn, :Qn] / ent[0, 0]
        np.testing.assert_allclose(Q.sum(0), 1.0, atol=1e-12)
        np.testing.assert_allclose(Q.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(block, np.kron(ent, Q), atol=1e-12)


@pytest.mark.parametrize("V", [4, 6, 9])
def test_ginc_emits_distinct_tokens_where_the_vocabulary_allows(V):
    """One deterministic table token = table[e, q], shared by every concept: with emission_noise 0 each row
    of B is one-hot; the 6 (entity, property) states of a concept emit 6 distinct tokens when V ≥ 6, and
    all V tokens when V < 6."""
    C, per = 2, 6
    _, _, B = ginc(np.random.default_rng(2), C * per, V, n_concepts=C)
    assert np.isin(B, (0.0, 1.0)).all() and (B.sum(1) == 1).all()
    tokens = B.argmax(1).reshape(C, per)
    np.testing.assert_array_equal(tokens[1], tokens[0])
    assert len(set(tokens[0].tolist())) == min(V, per)


def test_ginc_concepts_are_separate_uniformly_started_blocks():
    """A concept is drawn once per sequence: A is block diagonal over the concepts' per = K / n_concepts
    states (index c·per + …), each block a chain of its own (Q_c drawn per concept); π is uniform."""
    C, E, Qn = 3, 2, 2
    per = E * Qn
    pi, A, _ = ginc(np.random.default_rng(3), C * per, 10, n_concepts=C, n_entities=E, entity_stay=1.0)
    np.testing.assert_array_equal(pi, np.full(C * per, 1.0 / (C * per)))
    blocks = [A[c * per:(c + 1) * per, c * per:(c + 1) * per] for c in range(C)]
    for c in range(C):
        np.testing.assert_allclose(blocks[c].sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(A.sum(1), 1.0, atol=1e-12)  # nothing leaves a concept's block
    for c in range(C):
        for d in range(c):
            assert not np.allclose(blocks[c], blocks[d]), (c, d)


def test_ginc_property_temp_is_the_property_chains_temperature():
    """With one concept and one entity A = Q, the permutation mixture at ``property_temp``: near one
    permutation when cold, the plain mean of n_properties permutations when hot (entries multiples of 1/8),
    doubly stochastic at both; π and B are drawn alike."""
    K = 8
    cold = ginc(np.random.default_rng(4), K, 20, n_concepts=1, n_entities=1, property_temp=1e-4)
    hot = ginc(np.random.default_rng(4), K, 20, n_concepts=1, n_entities=1, property_temp=1e4)
    for _, A, _ in (cold, hot):
        np.testing.assert_allclose(A.sum(0), 1.0, atol=1e-12)
        np.testing.assert_allclose(A.sum(1), 1.0, atol=1e-12)
    assert _near_one_hot(cold[1], 0.999) and _near_one_hot(cold[1].T, 0.999)
    np.testing.assert_allclose(hot[1] * K, np.round(hot[1] * K), atol=1e-2)
    assert not _near_one_hot(hot[1])
    np.testing.assert_array_equal(hot[0], cold[0])
    np.testing.assert_array_equal(hot[2], cold[2])


def _assert_laws(pi, A, B, K, V):
    assert pi.shape == (K,) and A.shape == (K, K) and B.shape == (K, V)
    for a in (pi, A, B):
        assert (a >= 0).all()
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-12)


def test_dirichlet_draws_are_pinned():
    """Seed 11, K = 3, V = 4: these values and fingerprint are those drawn when this test was written (a
    change of draw order would move them)."""
    pi, A, B = dirichlet(np.random.default_rng(11), 3, 4)
    _assert_laws(pi, A, B, 3, 4)
    np.testing.assert_allclose(pi, [0.12145774030291094, 0.28477224787671734, 0.5937700118203717], rtol=1e-12)
    np.testing.assert_allclose(A[0], [0.01158467655332664, 0.02949082009647618, 0.9589245033501973], rtol=1e-12)
    np.testing.assert_allclose(B[2], [0.2002283783165976, 0.21044158264835663, 0.24345043586779277,
                                      0.34587960316725297], rtol=1e-12)
    assert HMM.random(11, 3, 4).fingerprint() == "0d731aaa808c277b"


def test_permutation_mixture_draws_are_pinned():
    """Seed 11, K = 3, V = 4 at the default temperatures (A doubly stochastic)."""
    pi, A, B = permutation_mixture(np.random.default_rng(11), 3, 4)
    _assert_laws(pi, A, B, 3, 4)
    np.testing.assert_allclose(A.sum(0), 1.0, atol=1e-12)
    np.testing.assert_allclose(pi, [0.3240235516001564, 0.33626077305952806, 0.3397156753403156], rtol=1e-12)
    np.testing.assert_array_equal(A.argmax(1), [2, 0, 1])
    np.testing.assert_allclose([B[0, 0], B[0, 3], B[1, 3]], [1.6367797101113586e-02, 9.8363194269384902e-01,
                                                             7.7492942018515994e-06], rtol=1e-12)
    assert HMM.random(11, 3, 4, family="permutation-mixture").fingerprint() == "395571f924c97397"


def test_ginc_draws_are_pinned():
    """Seed 11, K = 8 (2 concepts × 2 entities × 2 properties), V = 5 at the default options."""
    pi, A, B = ginc(np.random.default_rng(11), 8, 5)
    _assert_laws(pi, A, B, 8, 5)
    np.testing.assert_array_equal(B.argmax(1), [1, 4, 2, 3, 1, 4, 2, 3])
    np.testing.assert_allclose(A[4, 4:], [0.01930927703442209, 0.9306907229655778, 0.00101627773865379,
                                          0.04898372226134619], rtol=1e-12)
    np.testing.assert_allclose(A[0, :4], [0.0, 0.95, 0.0, 0.05], rtol=1e-12, atol=1e-15)
    assert HMM.random(11, 8, 5, family="ginc").fingerprint() == "95048ea575e498fe"


# ---- stored rows: subnormals flushed, rows within rounding kept, the rounding bound ---------------------

def test_entries_below_the_smallest_normal_are_stored_as_zero():
    """1e-38 < float32's smallest normal (1.18e-38): XLA flushes it to 0 on the device, so it is stored as 0
    and the host copy reads the chain the device computes with (token 1 is impossible)."""
    hmm = HMM([1.0], [[1.0]], [[1 - 1e-38, 1e-38]])
    np.testing.assert_array_equal(np.asarray(hmm.emission), np.array([[1.0, 0.0]], np.float32))
    assert float(hmm.log_likelihood([1])) == -np.inf


def test_rows_within_rounding_are_stored_bit_for_bit_beside_a_renormalised_row():
    """A float32 row within float32 rounding of 1 keeps its bits, alone and when another row of the same
    matrix (accepted off 1 by 4e-4 with atol = 1e-3) is renormalised."""
    row = np.array([0.029496507719159126, 0.08368902653455734, 0.6127887964248657, 0.08643973618745804,
                    0.1875859647989273], np.float32)
    off = np.array([0.2, 0.2, 0.2, 0.2, 0.2004], np.float32)
    assert rows_within_rounding(np.stack([row, off]), np.float32).tolist() == [True, False]
    alone = np.asarray(HMM([1.0], [[1.0]], [row]).emission)[0]
    np.testing.assert_array_equal(alone.view(np.uint32), row.view(np.uint32))
    hmm = HMM([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], np.stack([row, off]), atol=1e-3)
    emission = np.asarray(hmm.emission)
    np.testing.assert_array_equal(emission[0].view(np.uint32), row.view(np.uint32))
    np.testing.assert_allclose(emission[1], off / off.astype(np.float64).sum(), rtol=1e-7)


def test_rows_within_rounding_bound_is_half_an_eps_plus_n_float64_ulps():
    """|Σ − 1| ≤ eps(dtype)/2 + n·2⁻⁵¹: for float32 and n = 2, 2⁻²⁴ + 2⁻⁵⁰ is within, 2⁻²⁴ + 2⁻⁴⁹ is not, and
    the float32 row [0.5, 0.5 + 2⁻²³] (off by a whole eps) is renormalised when stored."""
    assert rows_within_rounding(np.array([0.5, 0.5 + 2.0**-24 + 2.0**-50]), np.float32)
    assert not rows_within_rounding(np.array([0.5, 0.5 + 2.0**-24 + 2.0**-49]), np.float32)
    row = np.array([0.5, 0.5000001], np.float32)
    assert row[1] == 0.5 + 2.0**-23 and not rows_within_rounding(row, np.float32)
    hmm = HMM([1.0], [[1.0]], [row])
    np.testing.assert_array_equal(np.asarray(hmm.emission)[0], np.array([0.49999994, 0.50000006], np.float32))


# ---- the associative forward scan must report its predicted laws' least share, not only its products ----
def test_the_accelerator_path_reruns_a_predicted_share_below_the_floor_that_no_product_flushed(monkeypatch):
    """A = I, state 1 alone emits symbol 2 (B = 1e-6), and 116 zeros halve its share each step: p(h = 1 | x) =
    2⁻¹¹⁵ ≈ 2.4e-35 at the last row — every product of the scans stays ≥ 4·tiny, but the share is below the floor
    4·tiny/(min⁺A·min⁺B) = 4.7e-32, so the next-token law of symbol 2 (2.4e-41) flushes to 0 in float32 unless
    the batch is rerun in log space (as the sequential scan does: log p ≈ −93.5, not −inf)."""
    import jax
    from simlm.worlds import hmm_core as core

    world = HMM([0.5, 0.5], np.eye(2), [[0.5, 0.5, 0.0], [0.25, 0.75 - 1e-6, 1e-6]])
    x = np.zeros((1, 116), np.int32)
    s1 = 2.0**-115 / (1 + 2.0**-115)  # the last row conditions on 115 zeros
    want = np.log(s1 * 1e-6)
    cpu = float(np.asarray(world.next_token_logprobs(x))[0, -1, 2])
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert core.use_parallel(None, x.shape[1], 2)
    gpu = float(np.asarray(world.next_token_logprobs(x))[0, -1, 2])
    assert cpu == pytest.approx(want, abs=1e-3)
    assert gpu == pytest.approx(want, abs=1e-3)


# ---- the associative backward scan must report what its own compositions flush ---------------------------
def _buried_by_the_backward_scan_only():
    """The composition-shift case seen from the backward scan: 0 waits (emits 4), then 1 (emits 2) moves to
    one of the absorbing 2 and 3 (opposite odds on 0 and 1); 4 is an absorbing rival that emits everything.
    The backward scan's up-sweep composes the block 16..47 (29 waits, the branch, 18 zeros: state 3 at e⁻⁷⁰ of
    row 0) with 48..79 (32 ones, which favour 3 by 125 nats): state 2's weight flushes, the block's row 0
    loses it, and the suffix 80..143 (18 zeros) favours it again — log p(x_16: | h_16 = 0) 15 nats low.  The
    forward scan's blocks are aligned on 0, not on T = 144, and split the ones 16 + 16: none of its products
    or shares leaves the float range, nor does any β share, so only the backward scan's own compositions
    can report it."""
    z = 0.0986
    A = np.zeros((5, 5))
    A[0, :2] = A[1, 2:4] = 0.5
    A[2, 2] = A[3, 3] = A[4, 4] = 1.0
    B = np.array([[0, 0, 0, 0, 1], [0, 0, 1, 0, 0], [0.49, 0.01, 0, 0.5, 0], [0.01, 0.49, 0, 0.5, 0],
                  [z, z, 0.0594, 0.5, 0.5 - 0.0594 - 2 * z]])
    pi = np.array([0.5, 0, 0, 0, 0.5])
    x = np.array([4] * 29 + [2] + [0] * 18 + [1] * 32 + [0] * 18 + [3] * 46, np.int32)
    exact = bf.log_smoothed_states(pi, A, B, x)  # float64, in log space: the exact posterior
    return HMM(pi, A, B), x, exact


def test_the_accelerator_path_reruns_a_state_buried_inside_the_backward_scans_compositions_only(monkeypatch):
    world, x, exact = _buried_by_the_backward_scan_only()
    assert exact[0, 0] == pytest.approx(0.99945, abs=1e-4)  # h_1 = 0 by 7.5 nats over the rival 4
    floor = float(core.floor(*world.chain[1:]))
    names = ("token_logprobs", "backward")
    lows = {name: float(low) for name, [(_, low)] in zip(names, _program(names, (core.CHECKED_SCANS,))(
        *world.chain, jnp.asarray(x)))}
    assert lows["token_logprobs"] > floor  # the forward half of a posterior's check does not see it
    assert lows["backward"] < floor
    np.testing.assert_allclose(np.asarray(world.state_posterior(x)), exact, atol=1e-5)  # sequential
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the scans (T ≥ 64), as on an accelerator
    assert core.use_parallel(None, len(x), 5)
    # was p(h_1 = 0 | x) = 3e-4, the rival's 7.5 nats ahead instead of 7.5 behind, without the rerun
    np.testing.assert_allclose(np.asarray(world.state_posterior(x)), exact, atol=1e-5)


def test_the_accelerator_path_reruns_a_backward_share_below_the_floor_that_no_product_flushed(monkeypatch):
    """A = I, so p(h_t | x_−t) ∝ π(h) Π_{s≠t} B(h, x_s).  At the masked t = 40 the 40 zeros before favour
    state 0 (state 1 at e⁻⁶⁵, state 2 at e⁻¹¹·⁵) and the 40 ones after favour 1 (0 at e⁻⁶⁵, 2 at e⁻⁷⁸·³): state
    2's β share, 1e-34, is below the floor 4·tiny/(min⁺A·min⁺B) = 4.7e-32 while every product of the scans
    stays ≥ 4·tiny, and no forward share, nor the posterior row's total (2·e⁻⁶⁵), is below it.  Its term of
    the joint law, e⁻¹¹·⁵ · 1e-34, flushes to 0 in float32, so symbol 3 (which only state 2 emits) gets
    p(x_40 = 3 | x_−40) = 0, not 2.5e-12, unless the backward scan's least share reruns the batch in log space."""
    e = lambda v: 0.5 * np.exp(v / 40)  # a per-token odds that adds to v nats over 40 tokens
    B = np.array([[0.5, e(-65), 0.1, 0, 1e-6, 0], [e(-65), 0.5, 0.1, 0, 0, 0], [e(-11.5), e(-78.3), 0.1, 0.3, 0, 0]])
    B[:, 5] = 1 - B.sum(1)
    pi, t = np.full(3, 1 / 3), 40
    x = np.array([0] * t + [2] + [1] * 40, np.int32)
    log_post = np.log(pi) + np.log(B[:, np.delete(x, t)]).sum(1)
    exact = np.exp(log_post - logsumexp(log_post)) @ B  # float64
    world = HMM(pi, np.eye(3), B)
    floor = float(core.floor(*world.chain[1:]))
    names = ("token_logprobs", "backward")
    lows = {name: float(low) for name, [(_, low)] in zip(names, _program(names, (core.CHECKED_SCANS,))(
        *world.chain, jnp.asarray(x)))}
    assert lows["token_logprobs"] > floor  # the forward half of the masked law's check does not see it
    assert lows["backward"] < floor
    assert float(np.asarray(world.masked_token_probs(x))[t, 3]) == pytest.approx(exact[3], rel=1e-4)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert core.use_parallel(None, len(x), 3)
    np.testing.assert_allclose(np.asarray(world.masked_token_probs(x))[t], exact, rtol=1e-4)  # was 0 for 3
