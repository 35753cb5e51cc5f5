"""Regression tests for reviewed defects of the HMM worlds: states the associative scans bury without a
log-space rerun, posteriors that depended on the T bucket for rows accepted off 1, sparse worlds losing
support in float32, cross-entropy of impossible sequences, and typed-error quality."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from scipy.special import logsumexp

import bruteforce as bf
from simlm.errors import ConfigError, DistributionError, TokenError, ZeroProbabilityError
from simlm.strategies import probability_vectors
from simlm.worlds import HMM, MemoryHMM, buckets
from simlm.worlds import hmm_core as core
from simlm.worlds.families import sparse
from test_hmm_parallel import _assert_same, chains_and_tokens

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


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_scan_mode_function_reports_the_buried_state(case):
    """The check of each core function in the scans' mode (``batched`` reruns what it flags): the forward
    family reported only its least c_t (ordinary here), the backward scan nothing."""
    world, x, _ = CASES[case]()
    pi, A, B = world.chain
    floor = float(core.floor(A, B))
    tokens = jnp.asarray(x)
    # the forward family reads hmm_parallel.forward, the posteriors both scans, the prepended law the backward
    # scan and the forward one under π A (the sequence is impossible there, and still reported)
    for name in ("token_logprobs", "next_token_probs", "masked_token_probs", "prepended_mask_probs"):
        _, low = jax.jit(functools.partial(getattr(core, name), parallel=core.CHECKED_SCANS))(pi, A, B, tokens)
        assert float(low) < floor, name
    _, low = jax.jit(functools.partial(core.backward, parallel=core.CHECKED_SCANS))(A, B, tokens)
    assert float(low) < floor


def test_the_scans_of_a_dense_world_never_need_the_rerun():
    """Every entry of A positive: the scans' least product and share stay far above the floor, as the
    sequential scan's do (no log-space rerun on an accelerator for an ordinary world)."""
    hmm = HMM.random(0, 6, 5)
    x = jnp.asarray(hmm.sample(0, 4, 200))
    pi, A, B = hmm.chain
    _, low = jax.jit(jax.vmap(lambda t: core.masked_token_probs(pi, A, B, t, core.CHECKED_SCANS)))(x)  # both scans
    assert float(low.min()) > 1e6 * float(core.floor(A, B))


@functools.lru_cache(maxsize=None)
def _jitted(name, parallel):
    return jax.jit(functools.partial(getattr(core, name), parallel=parallel))


@given(chains_and_tokens())
def test_the_tracked_scans_give_the_plain_scans_outputs_and_a_bound_that_is_never_nan(case):
    """Zeros in π, A, B and impossible tokens: the bound is a number (NaN would compare False and never
    rerun), and tracking it leaves the outputs as they were."""
    pi, A, B, x = case
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in case]
        for name in ("forward", "next_token_probs", "masked_token_probs", "prepended_mask_probs"):
            out, low = _jitted(name, core.CHECKED_SCANS)(*args)
            _assert_same(jax.tree.map(np.asarray, _jitted(name, True)(*args)), jax.tree.map(np.asarray, out))
            assert not np.isnan(float(low)), name
        (betas, beta0), low = _jitted("backward", core.CHECKED_SCANS)(*args[1:])
        _assert_same(jax.tree.map(np.asarray, _jitted("backward", True)(*args[1:])), (betas, beta0))
        assert not np.isnan(float(low))


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
    x = np.asarray(HMM(*hmm.chain, atol=1e-3).sample(0, 2, T))
    for name, method in (("masked_token_probs", hmm.masked_token_probs), ("smoothed_posterior", hmm.state_posterior),
                         ("masked_state_posterior", hmm.masked_state_posterior)):
        want = jax.jit(jax.vmap(functools.partial(getattr(core, name), parallel=False), in_axes=(None, None, None, 0)))(
            *hmm.chain, jnp.asarray(x))[0]
        np.testing.assert_allclose(np.asarray(method(x)), np.asarray(want), atol=3e-7, err_msg=name)


def test_normalised_worlds_keep_their_T_buckets():
    """Worlds whose rows are laws rounded to float32 (every family, every strategy) still pad T — their
    results are what they were, bit for bit — and only rows off by more than rounding do not."""
    for world in (HMM.random(0, 5, 4), HMM.random(1, 7, 3, family="sparse", out_degree=2),
                  HMM.random(2, 6, 6, family="permutation-mixture"), HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], np.eye(2))):
        assert buckets.rows_sum_to_one(world.transition)
    assert not buckets.rows_sum_to_one(np.array([[0.9999, 0.0], [0.0, 1.0]], np.float32))


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


@settings(max_examples=50)
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
