"""Bad input to the world API (HMM, MemoryHMM, LogLinearWorld, families, contexts, strategies, `simlm demo`)
raises a typed simlm error naming the argument, before anything is allocated or compiled (issue 15)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from profiles import scaled

import simlm.strategies as strategies
from simlm import HMM, LogLinearWorld, MemoryHMM
from simlm.cli import main as simlm_main
from simlm.errors import ConfigError, DistributionError, ShapeError, SimlmError, TokenError
from simlm.worlds import enumerate_contexts
from simlm.worlds.base import MAX_ARRAY_ELEMENTS, check_request
from simlm.worlds.families import permutation_mixture
from simlm.worlds.loglinear import max_logit

PI, A, B = [0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3, 0.0], [0.1, 0.1, 0.8]]
RHO, MB = [[0.5, 0.5]], [[[0.5, 0.5], [0.2, 0.8]], [[0.9, 0.1], [0.3, 0.7]]]
Z, W, NXT = [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], [[0, 1, 1], [1, 0, 0]]
X = np.array([[0, 1, 2], [1, 1, 0]])

hmm = HMM(PI, A, B)
mem = MemoryHMM(RHO, PI, A, MB)
ll = LogLinearWorld(Z, W, NXT)
WORLDS = {"hmm": hmm, "memory": mem, "loglinear": ll}


def _hmm(**kw):
    return HMM(PI, A, B, **kw)


def _mem(**kw):
    return MemoryHMM(RHO, PI, A, MB, **kw)


class _DynamaxLike:  # the attribute layout of dynamax CategoricalHMM parameters, with 2-d emissions
    class initial:
        probs = np.array(PI)

    class transitions:
        transition_matrix = np.array(A)

    class emissions:
        probs = np.array(B)


class _HmmlearnLike:
    startprob_ = np.array(PI) + 0.5j
    transmat_, emissionprob_ = A, B


# (call, error type, words the message must contain — the argument's name first)
CASES = {
    # ---- atol: a positive finite real number, at most 1e-3 (a tolerance for rounding) ----------------
    "hmm-atol-nan-accepted-rows-summing-to-0.5": (lambda: HMM([0.25, 0.25], A, B, atol=np.nan), ConfigError, "atol"),
    "hmm-atol-negative": (lambda: _hmm(atol=-1), ConfigError, "atol: expected a positive number"),
    "hmm-atol-zero": (lambda: _hmm(atol=0), ConfigError, "atol"),
    "hmm-atol-inf": (lambda: _hmm(atol=np.inf), ConfigError, "atol"),
    "hmm-atol-too-loose": (lambda: _hmm(atol=10.0), ConfigError, "atol: expected a number ≤ 0.001"),
    "hmm-atol-string": (lambda: _hmm(atol="1e-6"), ConfigError, "atol"),
    "hmm-atol-bool": (lambda: _hmm(atol=True), ConfigError, "atol"),
    "hmm-atol-complex": (lambda: _hmm(atol=1e-6 + 0j), ConfigError, "atol"),
    "hmm-atol-none": (lambda: _hmm(atol=None), ConfigError, "atol"),
    "memory-atol-nan": (lambda: _mem(atol=np.nan), ConfigError, "atol"),
    "memory-atol-list": (lambda: _mem(atol=[1e-6]), ConfigError, "atol"),
    "one-cell-atol-nan": (lambda: MemoryHMM.one_cell([0.5, 0.5], PI, A, MB, atol=np.nan), ConfigError, "atol"),
    # ---- complex or string parameters: refused, never silently made real ----------------------------
    "hmm-initial-complex": (lambda: HMM(np.array(PI) + 0.1j, A, B), DistributionError, "initial: expected real"),
    "hmm-transition-complex": (lambda: HMM(PI, np.array(A) + 0j, B), DistributionError, "transition: expected real"),
    "hmm-emission-complex": (lambda: HMM(PI, A, np.array(B) + 1j), DistributionError, "emission: expected real"),
    "hmm-initial-object-complex": (lambda: HMM(np.array([0.5 + 0j, 0.5], dtype=object), A, B), DistributionError,
                                   "initial: expected real"),
    "hmm-initial-strings": (lambda: HMM(["0.5", "0.5"], A, B), DistributionError, "initial: expected a numeric array"),
    "memory-prior-complex": (lambda: MemoryHMM(np.array(RHO) + 0j, PI, A, MB), DistributionError, "memory_prior"),
    "memory-initial-complex": (lambda: MemoryHMM(RHO, np.array(PI) + 1j, A, MB), DistributionError, "initial"),
    "memory-transition-complex": (lambda: MemoryHMM(RHO, PI, np.array(A) + 1j, MB), DistributionError, "transition"),
    "memory-emission-complex": (lambda: MemoryHMM(RHO, PI, A, np.array(MB) + 0j), DistributionError, "emission"),
    "one-cell-prior-complex": (lambda: MemoryHMM.one_cell(np.array([0.5, 0.5]) + 0j, PI, A, MB), DistributionError,
                               "prior"),
    "loglinear-representations-complex": (lambda: LogLinearWorld(np.array(Z) + 1j, W, NXT), ConfigError,
                                          "representations"),
    "loglinear-embeddings-complex": (lambda: LogLinearWorld(Z, np.array(W) + 0j, NXT), ConfigError, "word_embeddings"),
    "loglinear-mean-complex": (lambda: LogLinearWorld(Z, W, NXT, mean=[1j, 0.0]), ConfigError, "mean"),
    "hmm-built-inside-jit": (lambda: jax.jit(lambda p: HMM(p, A, B).initial)(jnp.asarray(PI)), ConfigError,
                             "initial: a world validates its parameters on the host"),
    # ---- LogLinearWorld: float32 overflow caught at construction (not NaN laws called "impossible") ---
    "loglinear-1e20-logits-overflow": (lambda: LogLinearWorld(np.array(Z) * 1e20, np.array(W) * 1e20, NXT),
                                       ConfigError, "representations, word_embeddings: the logits"),
    "loglinear-1e18-logits-rounded-away": (lambda: LogLinearWorld(np.array(Z) * 1e18, W, NXT), ConfigError,
                                           "float32 would overflow or round them"),
    "loglinear-3e9-equal-logits-inf-laws": (lambda: LogLinearWorld(np.full((2, 1), 54110.0), np.full((1, 3), 54110.0),
                                                                   NXT), ConfigError, "representations, word_embeddings"),
    "loglinear-representations-1e300": (lambda: LogLinearWorld(np.array(Z) * 1e300, W, NXT), ConfigError,
                                        "representations: entry (0, 0) is 1e+300, which overflows float32"),
    "loglinear-embeddings-1e39": (lambda: LogLinearWorld(Z, np.array(W) * 1e39, NXT), ConfigError,
                                  "word_embeddings: entry (0, 0)"),
    "loglinear-anchor-1e300": (lambda: LogLinearWorld(Z, W, NXT, anchor=[1e300, 0.0]), ConfigError, "anchor"),
    "loglinear-random-radius-1e200": (lambda: LogLinearWorld.random(0, 2, 3, 2, radius=1e200), ConfigError,
                                      "radius=1e+200"),
    "loglinear-random-carrier-gap-1e300": (lambda: LogLinearWorld.random(0, 2, 3, 2, n_carriers=1, carrier_gap=1e300),
                                           ConfigError, "carrier_gap=1e+300"),
    "loglinear-random-norm-spread-1e3": (lambda: LogLinearWorld.random(0, 2, 3, 2, representation="free",
                                                                       norm_spread=1e3), ConfigError, "norm_spread=1000"),
    "loglinear-random-mean-norm-1e200": (lambda: LogLinearWorld.random(0, 2, 3, 2, mean_norm=1e200), ConfigError,
                                         "mean_norm"),
    "loglinear-random-mean-norm-subnormal": (lambda: LogLinearWorld.random(0, 2, 3, 2, mean_norm=1e-320), ConfigError,
                                             "mean_norm"),
    # ---- LogLinearWorld: ragged / wrong-type parameters -----------------------------------------------
    "loglinear-representations-ragged": (lambda: LogLinearWorld([[1.0], [0.0, 1.0]], W, NXT), ShapeError,
                                         "representations"),
    "loglinear-next-state-ragged": (lambda: LogLinearWorld(Z, W, [[0, 1], [1, 0, 0]]), ConfigError, "next_state"),
    "loglinear-carrier-ids-ragged": (lambda: LogLinearWorld(Z, W, NXT, carrier_ids=[[1], [1, 2]]), ConfigError,
                                     "carrier_ids"),
    "loglinear-gain-bool": (lambda: LogLinearWorld.random(0, 2, 3, 2, representation="layernorm", gain=True),
                            ConfigError, "gain"),
    "loglinear-gain-bool-array": (lambda: LogLinearWorld.random(0, 2, 3, 2, representation="layernorm",
                                                                gain=np.array([True, True])), ConfigError, "gain"),
    "loglinear-gain-ragged": (lambda: LogLinearWorld.random(0, 2, 3, 2, representation="layernorm", gain=[[1.0], [1, 2]]),
                              ConfigError, "gain"),
    "loglinear-geometry-list": (lambda: LogLinearWorld.random(0, 2, 3, 2, geometry=["anchor"]), ConfigError, "geometry"),
    "loglinear-representation-dict": (lambda: LogLinearWorld.random(0, 2, 3, 2, representation={}), ConfigError,
                                      "representation"),
    "loglinear-radius-bool": (lambda: LogLinearWorld.random(0, 2, 3, 2, radius=True), ConfigError, "radius"),
    # ---- dtype: float32 or float64 only ---------------------------------------------------------------
    "hmm-dtype-int32-truncated-probabilities": (lambda: _hmm(dtype=jnp.int32), ConfigError, "dtype"),
    "hmm-dtype-bogus": (lambda: _hmm(dtype="bogus"), ConfigError, "dtype"),
    "hmm-dtype-none": (lambda: _hmm(dtype=None), ConfigError, "dtype"),
    "hmm-dtype-bfloat16": (lambda: _hmm(dtype=jnp.bfloat16), ConfigError, "dtype"),
    "hmm-dtype-complex64": (lambda: _hmm(dtype=jnp.complex64), ConfigError, "dtype"),
    "memory-dtype-float16": (lambda: _mem(dtype="float16"), ConfigError, "dtype"),
    "one-cell-dtype-int": (lambda: MemoryHMM.one_cell([0.5, 0.5], PI, A, MB, dtype=int), ConfigError, "dtype"),
    # ---- boolean flags must be bools ------------------------------------------------------------------
    "hmm-smoothed-no": (lambda: hmm.state_posterior(X, smoothed="no"), ConfigError, "smoothed"),
    "memory-smoothed-zero": (lambda: mem.state_posterior(X[:, :2] % 2, smoothed=0), ConfigError, "smoothed"),
    "hmm-return-states-none": (lambda: hmm.sample(0, 2, 3, return_states=None), ConfigError, "return_states"),
    "memory-return-states-string": (lambda: mem.sample(0, 2, 3, return_states="yes"), ConfigError, "return_states"),
    "loglinear-return-states-list": (lambda: ll.sample(0, 2, 3, return_states=[True]), ConfigError, "return_states"),
    # ---- interoperability: foreign objects ------------------------------------------------------------
    "from-dynamax-object": (lambda: HMM.from_dynamax(object()), ConfigError, "params: expected the parameters"),
    "from-dynamax-none": (lambda: HMM.from_dynamax(None), ConfigError, "params"),
    "from-dynamax-2d-emissions": (lambda: HMM.from_dynamax(_DynamaxLike), ShapeError, "params"),
    "from-hmmlearn-object": (lambda: HMM.from_hmmlearn(object()), ConfigError, "model: expected a fitted hmmlearn"),
    "from-hmmlearn-complex": (lambda: HMM.from_hmmlearn(_HmmlearnLike()), DistributionError, "model: initial"),
    # ---- sizes that cannot fit: refused before allocating (they aborted or raised MemoryError) --------
    "hmm-sample-1e9-by-1e9": (lambda: hmm.sample(0, 10**9, 10**9), ConfigError, "n_sequences, length"),
    "hmm-sample-2**31-sequences": (lambda: hmm.sample(0, 2**31, 1), ConfigError, "2**31 − 1 elements"),
    "memory-sample-1e9-by-1e9": (lambda: mem.sample(0, 10**9, 10**9), ConfigError, "n_sequences, length"),
    "loglinear-sample-1e9-by-1e9": (lambda: ll.sample(0, 10**9, 10**9), ConfigError, "n_sequences, length"),
    "hmm-entropy-rate-1e10": (lambda: hmm.entropy_rate(0, 2, 10**10), ConfigError, "n_sequences, length"),
    "memory-entropy-rate-1e10": (lambda: mem.entropy_rate(0, 2, 10**10), ConfigError, "n_sequences, length"),
    "loglinear-entropy-rate-1e10": (lambda: ll.entropy_rate(0, 2, 10**10), ConfigError, "n_sequences, length"),
    "hmm-random-1e6-states": (lambda: HMM.random(0, 10**6, 10), ConfigError, "n_states, n_symbols"),
    "hmm-random-permutation-mixture-3000": (lambda: HMM.random(0, 3000, 10, family="permutation-mixture"), ConfigError,
                                            "n_permutations"),
    "hmm-random-1e9-permutations": (lambda: HMM.random(0, 10, 3, family="permutation-mixture", n_permutations=10**9),
                                    ConfigError, "n_permutations"),
    "hmm-random-ginc-1e12-symbols": (lambda: HMM.random(0, 4, 10**12, family="ginc"), ConfigError, "n_symbols"),
    "memory-random-1-tib-joint": (lambda: MemoryHMM.random(0, 33, 2, 2, 4), ConfigError, "n_cells"),
    "memory-random-huge-transition": (lambda: MemoryHMM.random(0, 2, 2, 10**5, 4), ConfigError, "n_syntactic"),
    "memory-random-astronomic": (lambda: MemoryHMM.random(0, 10**6, 10**6, 1, 2), ConfigError, "M^N"),
    "memory-joint-hmm-dense": (lambda: MemoryHMM.random(0, 8, 3, 2, 2).joint_hmm(), ConfigError, "joint_hmm"),
    "loglinear-random-huge": (lambda: LogLinearWorld.random(0, 10**6, 10**6, 16), ConfigError, "n_states, n_symbols, dim"),
    "hmm-next-token-probs-huge-v": (lambda: HMM.random(0, 2, 2**16).next_token_probs(np.zeros((2**8, 2**8), np.int32)),
                                    ConfigError, "tokens: this request"),
    "enumerate-contexts-1e9-length": (lambda: enumerate_contexts(hmm, 10**9), ConfigError, "max_length"),
    "enumerate-contexts-huge-cap": (lambda: enumerate_contexts(hmm, 30, max_contexts=10**15), ConfigError,
                                    "max_length, max_contexts"),
    "enumerate-contexts-one-symbol-1e12": (lambda: enumerate_contexts(HMM([1.0], [[1.0]], [[1.0]]), 10**12),
                                           ConfigError, "max_length"),
    # ---- family options -------------------------------------------------------------------------------
    "family-list-unhashable": (lambda: HMM.random(0, 3, 3, family=["dirichlet"]), ConfigError, "family"),
    "emission-temp-bool": (lambda: HMM.random(0, 3, 3, family="permutation-mixture", emission_temp=True),
                           ConfigError, "emission_temp"),
    "concentration-string": (lambda: HMM.random(0, 3, 3, transition_concentration="1"), ConfigError,
                             "transition_concentration"),
    "concentration-overflows-draws": (lambda: HMM.random(0, 3, 3, initial_concentration=1e308), DistributionError,
                                      "initial_concentration"),
    "ginc-entity-stay-string": (lambda: HMM.random(0, 4, 3, family="ginc", entity_stay="x"), ConfigError, "entity_stay"),
    "ginc-emission-noise-none": (lambda: HMM.random(0, 4, 3, family="ginc", emission_noise=None), ConfigError,
                                 "emission_noise"),
    "ginc-property-temp-zero": (lambda: HMM.random(0, 4, 3, family="ginc", property_temp=0), ConfigError,
                                "property_temp"),
    "memory-start-temp-complex": (lambda: MemoryHMM.random(0, 1, 2, 2, 2, start_temp=1j), ConfigError, "start_temp"),
    "memory-prior-concentration-nan": (lambda: MemoryHMM.random(0, 1, 2, 2, 2, prior_concentration=np.nan),
                                       ConfigError, "prior_concentration"),
    "loglinear-random-unknown-option": (lambda: LogLinearWorld.random(0, 2, 3, 2, bogus=1), ConfigError,
                                        "bogus: not an option of LogLinearWorld.random; its options are ['n_states'"),
    # ---- tokens ---------------------------------------------------------------------------------------
    "hmm-tokens-ragged": (lambda: hmm.log_likelihood([[0, 1], [1]]), TokenError, "tokens: expected a rectangular"),
    "memory-tokens-ragged": (lambda: mem.memory_posterior([[0, 1], [1]]), TokenError, "tokens"),
    "loglinear-tokens-ragged": (lambda: ll.true_representation([[0, 1], [1]]), TokenError, "tokens"),
    "loglinear-states-ragged": (lambda: ll.states([[0], [1, 1]]), TokenError, "tokens"),
    # ---- contexts -------------------------------------------------------------------------------------
    "enumerate-contexts-none": (lambda: enumerate_contexts(None, 2), ConfigError, "world"),
    "context-index-none": (lambda: enumerate_contexts(hmm, 1).index(None), ConfigError, "prefix"),
    "context-index-float-truncated": (lambda: enumerate_contexts(hmm, 1).index([1.5]), ConfigError, "prefix"),
    "context-index-string": (lambda: enumerate_contexts(hmm, 1).index("a"), ConfigError, "prefix"),
    "context-index-int": (lambda: enumerate_contexts(hmm, 1).index(5), ConfigError, "prefix"),
    # ---- hypothesis strategies: checked when built ----------------------------------------------------
    "strategy-hmms-min-states-0": (lambda: strategies.hmms(min_states=0), ConfigError, "min_states"),
    "strategy-hmms-max-below-min": (lambda: strategies.hmms(min_states=3, max_states=2), ConfigError, "max_states"),
    "strategy-hmms-allow-zeros-string": (lambda: strategies.hmms(allow_zeros="no"), ConfigError, "allow_zeros"),
    "strategy-probability-vectors-0": (lambda: strategies.probability_vectors(0), ConfigError, "size"),
    "strategy-min-mass-2": (lambda: strategies.probability_vectors(3, min_mass=2.0), ConfigError, "min_mass"),
    "strategy-stochastic-rows-negative": (lambda: strategies.stochastic_matrices(-1, 2), ConfigError, "rows"),
    "strategy-memory-max-cells-0": (lambda: strategies.memory_hmms(max_cells=0), ConfigError, "max_cells"),
    "strategy-loglinear-scale-nan": (lambda: strategies.loglinear_worlds(scale=np.nan), ConfigError, "scale"),
    "strategy-loglinear-scale-overflows": (lambda: strategies.loglinear_worlds(scale=1e30), ConfigError, "scale"),
    "strategy-tokens-world-none": (lambda: strategies.token_sequences(None), ConfigError, "world"),
    "strategy-tokens-min-length-0": (lambda: strategies.token_sequences(hmm, min_length=0), ConfigError, "min_length"),
    "strategy-tokens-possible-string": (lambda: strategies.token_sequences(hmm, possible="yes"), ConfigError,
                                        "possible"),
    "strategy-worlds-with-tokens-none": (lambda: strategies.worlds_with_tokens(None), ConfigError, "world_strategy"),
    "strategy-worlds-with-tokens-unknown": (lambda: strategies.worlds_with_tokens(strategies.hmms(), bogus=1),
                                            ConfigError, "bogus"),
}


@pytest.mark.parametrize("call, error, words", list(CASES.values()), ids=list(CASES))
def test_bad_input_raises_a_typed_error_naming_the_argument(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, SimlmError) and words in str(info.value)
    assert "\n" not in str(info.value)


# ---- the limits, and what they must not refuse ----------------------------------------------------------

def test_extreme_but_valid_options_give_worlds_not_errors():
    # a temperature so small that 1/temp overflows takes its limit (one-hot rows), not NaN
    for world in (HMM.random(0, 3, 3, family="permutation-mixture", emission_temp=1e-320, transition_temp=1e-320),
                  MemoryHMM.random(0, 1, 2, 2, 2, start_temp=1e-320)):
        assert np.all(np.isfinite(np.asarray(world.emission)))
    assert HMM.random(2**64, 2, 2).n_states == 2  # numpy seeds may be any non-negative integer
    big = LogLinearWorld(np.array(Z) * 1e3, W, NXT)  # logits of 1e3: near-deterministic, still exact
    assert np.all(np.isfinite(np.asarray(big.log_likelihood(X))))
    HMM([0.5, 0.5005], A, B, atol=1e-3)
    HMM(PI, A, B, atol=np.float32(1e-5), dtype="float32")
    assert hmm.state_posterior(X, smoothed=np.False_).shape == (2, 3, 2)


def test_ginc_with_a_large_vocabulary_builds_its_emission_without_a_v_by_v_identity():
    world = HMM.random(0, 4, 200_000, family="ginc")
    B_ = np.asarray(world.emission)
    assert B_.shape == (4, 200_000) and np.allclose(B_.sum(1), 1)


def test_world_errors_are_raised_before_any_compile():
    # a refused size never reaches jit: the compile cache of the sampler does not grow
    from simlm.worlds.buckets import sample_chain as sample_tokens  # the compiled sampler HMM.sample uses

    if not hasattr(sample_tokens, "_cache_size"):
        pytest.skip("this JAX does not expose the jit cache size")
    before = sample_tokens._cache_size()
    with pytest.raises(ConfigError):
        hmm.sample(0, 10**9, 10**9)
    assert sample_tokens._cache_size() == before


# ---- the command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, option", [
    (["demo", "--workers", "0"], "--workers"),
    (["demo", "--workers", "many"], "--workers"),
    (["demo", "--executor", "mpi"], "--executor"),
    (["sweep"], "config"),
    (["report"], "dir"),
    (["report", "/nonexistent/dir"], "error: DIR: /nonexistent/dir"),
    (["demo", "--out", "/dev/null/x"], "error: --out: "),  # an OSError names the flag too
    (["bogus"], "bogus"),
], ids=["workers-0", "workers-many", "executor-unknown", "sweep-no-config", "report-no-dir", "report-missing-dir",
        "out-not-a-directory", "unknown-command"])
def test_a_bad_command_line_exits_2_with_one_line_naming_it(argv, option, capsys):
    assert simlm_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("simlm") and option in err


# ---- hypothesis over the parameter spaces ---------------------------------------------------------------

SMALL = settings(max_examples=scaled(25), deadline=None)
not_a_tolerance = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 < v <= 1e-3),
    st.text(max_size=3), st.booleans(), st.none(), st.complex_numbers(), st.lists(st.floats(), max_size=2))
not_a_bool = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                       st.lists(st.booleans(), max_size=2))


def _names_a_float_dtype(text: str) -> bool:
    try:
        return np.dtype(text) in (np.dtype(np.float32), np.dtype(np.float64))
    except (TypeError, ValueError):
        return False


not_a_float_dtype = st.one_of(
    st.sampled_from([None, "bogus", int, bool, complex, jnp.int32, jnp.uint8, jnp.float16, jnp.bfloat16,
                     jnp.complex64, "int64", object()]),
    st.text(max_size=4).filter(lambda text: not _names_a_float_dtype(text)))


@SMALL
@given(atol=not_a_tolerance)
def test_any_bad_atol_is_refused_naming_atol(atol):
    for build in (_hmm, _mem):
        with pytest.raises(ConfigError, match="atol"):
            build(atol=atol)


@SMALL
@given(dtype=not_a_float_dtype)
def test_any_non_float_dtype_is_refused_naming_dtype(dtype):
    for build in (_hmm, _mem):
        with pytest.raises(ConfigError, match="dtype"):
            build(dtype=dtype)


@SMALL
@given(flag=not_a_bool)
def test_any_non_bool_flag_is_refused_naming_it(flag):
    with pytest.raises(ConfigError, match="smoothed"):
        hmm.state_posterior(X, smoothed=flag)
    for world in WORLDS.values():
        with pytest.raises(ConfigError, match="return_states"):
            world.sample(0, 2, 3, return_states=flag)


@SMALL
@given(n=st.integers(1, 2**40), T=st.integers(1, 2**40), world=st.sampled_from(sorted(WORLDS)))
def test_samples_of_more_than_2_to_the_31_elements_are_refused_before_allocating(n, T, world):
    # sampling builds one uniform per draw: 2·n·T of them in the (memory) HMMs, n·T in the log-linear world
    assume(n * T * (1 if world == "loglinear" else 2) > 2**31 - 1)  # smaller ones may fit (and would compile)
    with pytest.raises(ConfigError, match="n_sequences, length"):
        WORLDS[world].sample(0, n, T)


@SMALL
@given(bad=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                     st.booleans(), st.complex_numbers()),
       which=st.sampled_from(["n_sequences", "length"]), world=st.sampled_from(sorted(WORLDS)))
def test_bad_sizes_are_refused_naming_them(bad, which, world):
    sizes = {"n_sequences": 2, "length": 3, which: bad}
    with pytest.raises(ConfigError, match=which):
        WORLDS[world].sample(0, sizes["n_sequences"], sizes["length"])


@SMALL
@given(scale=st.floats(0.0, 30.0).map(lambda e: 10.0**e), dim=st.integers(1, 4))
def test_loglinear_overflow_is_refused_at_construction_or_the_laws_are_finite(scale, dim):
    # equal logits: the fused softmax exponentiates their float32 rounding residue, inf from ~1e9 (issue 15)
    Zs, Ws = np.full((2, dim), scale), np.full((dim, 3), scale)
    if dim * scale * scale > max_logit(dim):
        with pytest.raises(ConfigError, match="representations, word_embeddings"):
            LogLinearWorld(Zs, Ws, NXT)
    else:
        probs = np.asarray(LogLinearWorld(Zs, Ws, NXT).state_probs())
        assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(-1), 1, atol=1e-5)


@SMALL
@given(temp=st.floats(1e-323, 1e-300), K=st.integers(1, 5), V=st.integers(1, 5))
def test_tiny_temperatures_give_one_hot_rows_not_nan(temp, K, V):
    initial, transition, emission = permutation_mixture(np.random.default_rng(0), K, V, start_temp=temp,
                                                        transition_temp=temp, emission_temp=temp)
    for rows in (initial, transition, emission):
        assert np.all(np.isfinite(rows)) and np.allclose(rows.sum(-1), 1)


class _DynamaxLikeTwoDims:  # dynamax layout with emission_dim = 2: emissions.probs of shape (K, 2, V)
    class initial:
        probs = np.array(PI)

    class transitions:
        transition_matrix = np.array(A)

    class emissions:
        probs = np.full((2, 2, 2), 0.5)


def test_from_dynamax_refuses_emission_dim_above_one():
    """from_dynamax takes CategoricalHMM parameters with emission_dim = 1, probs of shape (K, 1, V): a second
    emission dimension is refused, not silently dropped."""
    with pytest.raises(ShapeError, match=r"expected emission probs of shape \(K, 1, V\), got \(2, 2, 2\)"):
        HMM.from_dynamax(_DynamaxLikeTwoDims)


def test_float64_without_x64_raises_config_error():
    """float64 only with jax_enable_x64: without it JAX would store the parameters as float32 silently."""
    with jax.enable_x64(False):
        with pytest.raises(ConfigError, match="dtype: float64 needs 64-bit JAX"):
            HMM([0.5, 0.5], np.eye(2), np.eye(2), dtype=np.float64)


def test_check_request_refuses_an_array_over_the_element_limit():
    """One array above MAX_ARRAY_ELEMENTS = 2**31 − 1 elements is refused by the limit itself, even when its
    bytes (2 GiB here) would fit in memory."""
    assert MAX_ARRAY_ELEMENTS == 2**31 - 1
    with pytest.raises(ConfigError, match=r"over the limit of 2\*\*31"):
        check_request("x", [(2**31, 1)], "t")


@pytest.mark.parametrize("world", [HMM.random(0, 2, 3), MemoryHMM.random(0, 1, 2, 2, 3),
                                   LogLinearWorld.random(0, 2, 3, 2)], ids=["hmm", "memory", "loglinear"])
def test_sample_checks_its_sizes_before_making_a_key(world, monkeypatch):
    """A key made from a seed compiles (threefry): n_sequences = 0 was refused after it (a review, 2026-12-07)."""
    import sys

    monkeypatch.setattr(sys.modules[type(world).__module__], "as_key", lambda key: pytest.fail("key made first"))
    with pytest.raises(ConfigError, match="n_sequences"):
        world.sample(0, 0, 3)


def test_hmm_random_takes_a_dtype_as_the_memory_hmms_does():
    """``HMM.random`` took no ``dtype`` (``MemoryHMM.random`` does): ``dtype=float64`` was refused as "not an
    option of family …", and rebuilding the float32 draw in float64 keeps its flushed zeros — at seed 1 and
    temperatures 0.004, 21 of the 27 sequences of length 3 read −inf where the float64 draw gives −101.8 to
    −233.1 (a review, 2026-12-08).  The float64 world is the family's float64 draw; float32 stays the default, and a bad
    dtype is named as such before the family reads its options."""
    from simlm.checks import as_rng
    from simlm.worlds.families import random_parameters

    opts = dict(transition_temp=0.004, emission_temp=0.004)
    x = np.array(list(itertools.product(range(3), repeat=3)), np.int32)
    with jax.enable_x64(True):
        wide = HMM.random(1, 2, 3, family="permutation-mixture", dtype=jnp.float64, **opts)
        drawn = random_parameters(as_rng(1), 2, 3, "permutation-mixture", opts)
        assert wide.emission.dtype == jnp.float64
        for got, want in zip(wide.parameter_arrays(), drawn):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        rebuilt = HMM(*HMM.random(1, 2, 3, family="permutation-mixture", **opts).parameter_arrays(), dtype=jnp.float64)
        lw, lr = np.asarray(wide.log_likelihood(x)), np.asarray(rebuilt.log_likelihood(x))
        assert np.isfinite(lw).all() and not np.isfinite(lr).all()
    assert HMM.random(1, 2, 3, family="permutation-mixture", **opts).emission.dtype == jnp.float32
    with pytest.raises(ConfigError, match="^dtype: "):
        HMM.random(0, 2, 3, family="permutation-mixture", dtype="int8")
