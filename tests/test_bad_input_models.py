"""Bad input to the exact-ε paths (simlm.metrics.epsilon) and the models (simlm.models): every case is a
typed simlm error whose message names the argument — never a raw traceback, a NaN, or a clamped value."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlm.errors import ConfigError, DistributionError, ShapeError, SimlmError, TokenError
from simlm.metrics.epsilon import (LOGSUMEXP_TOL, divergence_report, exact_epsilon, exact_masked_epsilon,
                                   exact_prepended_epsilon)
from simlm.models import finite as F
from simlm.models.base import WorldLM
from simlm.models.perturbed import PerturbedLM, epsilon_of_scale, perturb_logprobs, perturbed_lm
from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer
from simlm.worlds import HMM

V, N, T = 4, 4, 5
WORLD = HMM.random(0, 3, V)
X = WORLD.sample(0, N, T)


class LawLM:
    """An LM whose three laws are ``f`` applied to the world's (log) laws."""

    def __init__(self, f, n_symbols=V):
        self.f, self.n_symbols = f, n_symbols

    def next_token_logprobs(self, tokens):
        return self.f(np.asarray(WORLD.next_token_logprobs(tokens), np.float64))

    def masked_token_logprobs(self, tokens, positions=None):
        with np.errstate(divide="ignore"):
            return self.f(np.log(np.asarray(WORLD.masked_token_probs(tokens, positions), np.float64)))

    def prepended_mask_logprobs(self, tokens):
        with np.errstate(divide="ignore"):
            return self.f(np.log(np.asarray(WORLD.prepended_mask_probs(tokens), np.float64)))


class CausalOnlyLM:
    n_symbols = V

    def next_token_logprobs(self, tokens):
        return WORLD.next_token_logprobs(tokens)


class NaNWorld:
    """A world whose laws have a NaN at the first entry (an overflowing parameterisation, say)."""

    n_symbols = V

    def sample(self, key, n, length):
        return WORLD.sample(key, n, length)

    @staticmethod
    def _spoil(a):
        a = np.array(a, np.float32)
        a.reshape(-1)[0] = np.nan
        return a

    def next_token_logprobs(self, tokens):
        return self._spoil(WORLD.next_token_logprobs(tokens))

    def masked_token_probs(self, tokens, positions=None):
        return self._spoil(WORLD.masked_token_probs(tokens, positions))

    def prepended_mask_probs(self, tokens):
        return self._spoil(WORLD.prepended_mask_probs(tokens))


# the four ε paths (five with the masked report), each with the method it reads and how it names a row
PATHS = {
    "causal": (lambda lm, x=X: exact_epsilon(WORLD, lm, x), "next_token_logprobs", "sequence {i}, position {t}"),
    "masked": (lambda lm, x=X: exact_masked_epsilon(WORLD, lm, x), "masked_token_logprobs",
               "sequence {i}, masked position {t}"),
    "prepended": (lambda lm, x=X: exact_prepended_epsilon(WORLD, lm, x), "prepended_mask_logprobs", "sequence {i}"),
    "report": (lambda lm, x=X: divergence_report(WORLD, lm, x), "next_token_logprobs", "sequence {i}, position {t}"),
    "masked report": (lambda lm, x=X: divergence_report(WORLD, lm, x, masked=True), "masked_token_logprobs",
                      "sequence {i}, masked position {t}"),
}


def _epsilon(result):
    return result[0] if isinstance(result, tuple) else result.epsilon


def _renormalised(a):
    a = np.asarray(a, np.float64)
    finite = np.where(np.isfinite(a), a, -np.inf)
    top = finite.max(-1, keepdims=True)
    return a - (top + np.log(np.exp(finite - top).sum(-1, keepdims=True)))


def _set(a, index, value, renormalise=False):
    a = np.array(a, np.float64)
    a[index] = value
    return _renormalised(a) if renormalise else a


# ---- laws that are not distributions -----------------------------------------------------------------

BAD_LAWS = {
    "all 5.0 (the issue's case)": (lambda a: np.full(np.shape(a), 5.0), DistributionError, "sum to"),
    "world + 0.5 (the issue's case)": (lambda a: a + 0.5, DistributionError, "sum to 1.6487"),
    "world - 0.5": (lambda a: a - 0.5, DistributionError, "sum to 0.6065"),
    "a NaN": (lambda a: _set(a, (0,) * (a.ndim - 1) + (1,), np.nan), DistributionError, "word 1 has log-probability NaN"),
    "a +inf": (lambda a: _set(a, (0,) * (a.ndim - 1) + (2,), np.inf), DistributionError, "word 2 has log-probability \\+inf"),
    "a row of -inf": (lambda a: _set(a, (0,) * (a.ndim - 1) + (slice(None),), -np.inf), DistributionError, "sum to 0"),
    "complex": (lambda a: a.astype(complex), DistributionError, "complex"),
    "strings": (lambda a: np.full(np.shape(a), "x"), DistributionError, "dtype <U1"),
    "None": (lambda a: None, DistributionError, "dtype object"),
    "bool": (lambda a: np.ones(np.shape(a), bool), DistributionError, "dtype bool"),
    "ragged rows": (lambda a: [[1.0], [1.0, 2.0]], DistributionError, "rows of unequal length"),
    "wrong shape": (lambda a: a[..., :-1], ShapeError, "has shape"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("law", BAD_LAWS)
def test_laws_that_are_not_distributions_raise_naming_the_law(path, law):
    call, method, _ = PATHS[path]
    f, error, detail = BAD_LAWS[law]
    with pytest.raises(error, match=f"lm: {method}") as info:
        call(LawLM(f))
    assert re.search(detail, str(info.value)), str(info.value)


@pytest.mark.parametrize("path", PATHS)
def test_zero_probability_for_a_possible_word_raises_instead_of_an_infinite_epsilon(path):
    """KL = +inf exactly; refused with the row and word named rather than returned as (inf, NaN)."""
    call, method, _ = PATHS[path]

    def zero_the_likeliest(a):
        index = (0,) * (a.ndim - 1) + (int(np.argmax(a[(0,) * (a.ndim - 1)])),)
        return _set(a, index, -np.inf, renormalise=True)

    with pytest.raises(DistributionError, match=f"lm: {method} at sequence 0.* gives probability 0 to word"):
        call(LawLM(zero_the_likeliest))


@given(c=st.floats(2 * LOGSUMEXP_TOL, 10.0), sign=st.sampled_from([-1, 1]), path=st.sampled_from(sorted(PATHS)))
def test_a_constant_shift_beyond_the_tolerance_raises(c, sign, path):
    call, method, _ = PATHS[path]
    with pytest.raises(DistributionError, match=f"lm: {method} at sequence 0.*expected 1 within"):
        call(LawLM(lambda a: a + sign * c))


@given(c=st.floats(-LOGSUMEXP_TOL / 2, LOGSUMEXP_TOL / 2), path=st.sampled_from(sorted(PATHS)))
def test_a_shift_within_rounding_gives_epsilon_zero(c, path):
    """Rows within the tolerance are renormalised, so ε is that of the world itself: 0, not −c."""
    eps = _epsilon(PATHS[path][0](LawLM(lambda a: a + c)))
    assert abs(eps) <= 1e-6


@given(i=st.integers(0, N - 1), t=st.integers(0, T - 1), v=st.integers(0, V - 1),
       path=st.sampled_from(sorted(PATHS)))
def test_nan_at_a_random_position_is_named(i, t, v, path):
    call, method, where = PATHS[path]
    index = (i, v) if path == "prepended" else (i, t, v)
    with pytest.raises(DistributionError) as info:
        call(LawLM(lambda a: _set(a, index, np.nan)))
    message = str(info.value)
    assert f"lm: {method} at {where.format(i=i, t=t)} " in message and f"word {v} has log-probability NaN" in message


@pytest.mark.parametrize("call, name", [
    (lambda: exact_epsilon(NaNWorld(), WorldLM(WORLD), X), "world: next_token_logprobs"),
    (lambda: exact_masked_epsilon(NaNWorld(), WorldLM(WORLD), X), "world: masked_token_logprobs"),
    (lambda: exact_prepended_epsilon(NaNWorld(), WorldLM(WORLD), X), "world: prepended_mask_logprobs"),
    (lambda: divergence_report(NaNWorld(), WorldLM(WORLD), X), "world: next_token_logprobs"),
    (lambda: perturbed_lm(NaNWorld(), 0.05, "temperature", 0, n_eval=N, eval_length=T), "world: next_token_logprobs"),
    (lambda: perturbed_lm(NaNWorld(), 0.05, "temperature", 0, n_eval=N, eval_length=T, law="masked"),
     "world: masked_token_probs"),
    (lambda: perturbed_lm(NaNWorld(), 0.05, "temperature", 0, n_eval=N, eval_length=T, law="prepended-mask"),
     "world: prepended_mask_probs"),
])
def test_a_world_whose_laws_are_not_distributions_is_named(call, name):
    with pytest.raises(DistributionError, match=f"{name} at sequence 0"):
        call()


def test_huge_but_finite_kl_is_returned_not_refused():
    """A model giving e^(−3e38) to a possible word has a finite (enormous) KL: a legitimate answer."""
    def tiny(a):
        return _set(a, (0, 0, int(np.argmax(a[0, 0]))), -3e38, renormalise=True)

    eps, se = exact_epsilon(WORLD, LawLM(tiny), X)
    assert eps > 1e30 and math.isfinite(se)


# ---- standard errors need two sequences -----------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("tokens", [X[:1], X[0]], ids=["batch of 1", "single sequence"])
def test_a_single_sequence_is_refused_naming_tokens(path, tokens):
    with pytest.raises(ConfigError, match="tokens: a standard error over sequences needs at least 2"):
        PATHS[path][0](WorldLM(WORLD), tokens)


@pytest.mark.parametrize("path", PATHS)
def test_a_single_sequence_is_refused_before_the_lm_is_read(path):
    """n ≥ 2 is checked before anything is computed: one sequence with an LM whose every row is NaN gets the
    ConfigError naming ``tokens``, not a DistributionError about the NaN."""
    with pytest.raises(ConfigError, match="tokens: a standard error over sequences needs at least 2"):
        PATHS[path][0](LawLM(lambda a: np.full_like(a, np.nan)), X[:1])


def test_perturbed_lm_needs_two_evaluation_sequences():
    with pytest.raises(ConfigError, match="n_eval: .*n_eval ≥ 2, got 1"):
        perturbed_lm(WORLD, 0.05, "temperature", 0, n_eval=1, eval_length=T)
    with pytest.raises(ConfigError, match="tokens: .*at least 2"):
        perturbed_lm(WORLD, 0.05, "temperature", 0, tokens=X[:1])


# ---- wrong arguments to the ε paths ----------------------------------------------------------------------

FUNCTIONS = {"exact_epsilon": exact_epsilon, "exact_masked_epsilon": exact_masked_epsilon,
             "exact_prepended_epsilon": exact_prepended_epsilon, "divergence_report": divergence_report}


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("world", [None, "hmm", 3, {}], ids=repr)
def test_a_world_that_is_not_one_is_named(fn, world):
    with pytest.raises(ConfigError, match="world: expected a World"):
        FUNCTIONS[fn](world, WorldLM(WORLD), X)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("lm", [None, "lm", 3, {}], ids=repr)
def test_an_lm_that_is_not_one_is_named(fn, lm):
    with pytest.raises(ConfigError, match="lm: expected a language model"):
        FUNCTIONS[fn](WORLD, lm, X)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("n_symbols, error", [("4", ConfigError), (None, ConfigError), (4.0, ConfigError),
                                              (True, ConfigError), (-1, ConfigError), (V + 1, ShapeError)])
def test_an_lm_vocabulary_that_is_no_positive_integer_or_differs_is_named(fn, n_symbols, error):
    with pytest.raises(error, match="n_symbols"):
        FUNCTIONS[fn](WORLD, LawLM(lambda a: a, n_symbols), X)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("tokens", [None, "abc", [[0.5, 1]], [[True, False]], [], [[]], [[0, V], [0, 1]],
                                    np.zeros((2, 2, 2), int), X.astype(complex), -X - 1], ids=repr)
def test_bad_tokens_are_token_errors(fn, tokens):
    with pytest.raises(TokenError, match="tokens"):
        FUNCTIONS[fn](WORLD, WorldLM(WORLD), tokens)


@pytest.mark.parametrize("positions", [-1, T, [], "a", [0.5], [[0]], True, [True]], ids=repr)
def test_bad_positions_are_token_errors(positions):
    with pytest.raises(TokenError, match="positions"):
        exact_masked_epsilon(WORLD, WorldLM(WORLD), X, positions)
    with pytest.raises(TokenError, match="positions"):
        divergence_report(WORLD, WorldLM(WORLD), X, masked=True, positions=positions)


@pytest.mark.parametrize("masked", ["yes", "False", 1, None], ids=repr)
def test_masked_must_be_a_bool(masked):
    with pytest.raises(ConfigError, match="masked: expected True or False"):
        divergence_report(WORLD, WorldLM(WORLD), X, masked=masked)


@pytest.mark.parametrize("call", [
    lambda: exact_masked_epsilon(WORLD, CausalOnlyLM(), X),
    lambda: exact_prepended_epsilon(WORLD, CausalOnlyLM(), X),
    lambda: divergence_report(WORLD, CausalOnlyLM(), X, masked=True),
])
def test_an_lm_without_the_law_is_named(call):
    with pytest.raises(ConfigError, match="lm: CausalOnlyLM has no"):
        call()


# ---- WorldLM -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("world", [None, "hmm", 42, {}, WorldLM(WORLD)], ids=repr)
def test_world_lm_needs_a_world(world):
    with pytest.raises(ConfigError, match="world: expected a World"):
        WorldLM(world)


def test_world_lm_of_an_hmm_has_no_softmax_representation():
    lm = WorldLM(WORLD)
    with pytest.raises(ConfigError, match="features: a WorldLM of a HMM has no exact representation"):
        lm.features(X)
    with pytest.raises(ConfigError, match="unembedding: a WorldLM of a HMM has no word embeddings"):
        lm.unembedding
    assert not hasattr(lm, "unembedding")  # still an AttributeError too, so protocol checks keep working


# ---- perturbed_lm and PerturbedLM ----------------------------------------------------------------------------

def _perturbed(**kw):
    args = dict(world=WORLD, eps=0.05, kind="temperature", seed=0, n_eval=N, eval_length=T)
    args.update(kw)
    return perturbed_lm(args.pop("world"), args.pop("eps"), args.pop("kind"), args.pop("seed"), **args)


BAD_PERTURBED = [
    ("world", dict(world=None), ConfigError), ("world", dict(world="w"), ConfigError),
    ("world", dict(world=WorldLM(WORLD)), ConfigError),
    ("eps", dict(eps=None), ConfigError), ("eps", dict(eps="0.1"), ConfigError), ("eps", dict(eps=True), ConfigError),
    ("eps", dict(eps=0.1 + 0j), ConfigError), ("eps", dict(eps=[0.1]), ConfigError), ("eps", dict(eps=np.nan), ConfigError),
    ("eps", dict(eps=-np.inf), ConfigError), ("eps", dict(eps=0), ConfigError), ("eps", dict(eps=1e300), ConfigError),
    ("kind", dict(kind=None), ConfigError), ("kind", dict(kind=3), ConfigError), ("kind", dict(kind=["temperature"]), ConfigError),
    ("kind", dict(kind="TEMPERATURE"), ConfigError),
    ("seed", dict(seed=None), ConfigError), ("seed", dict(seed=-1), ConfigError), ("seed", dict(seed=1.5), ConfigError),
    ("seed", dict(seed="0"), ConfigError), ("seed", dict(seed=True), ConfigError), ("seed", dict(seed=2**64), ConfigError),
    ("n_eval", dict(n_eval=0), ConfigError), ("n_eval", dict(n_eval=1.5), ConfigError), ("n_eval", dict(n_eval=None), ConfigError),
    ("n_eval", dict(n_eval=True), ConfigError), ("n_eval", dict(n_eval=10**12), ConfigError),
    ("eval_length", dict(eval_length=0), ConfigError), ("eval_length", dict(eval_length=10**12), ConfigError),
    ("law", dict(law=None), ConfigError), ("law", dict(law="causal"), ConfigError), ("law", dict(law=["masked"]), ConfigError),
    ("tokens", dict(tokens=[[0, V], [1, 2]]), TokenError), ("tokens", dict(tokens="x"), TokenError),
    ("colder", dict(colder="yes"), ConfigError), ("colder", dict(colder="False"), ConfigError),
    ("colder", dict(colder=1), ConfigError), ("colder", dict(colder=None), ConfigError),
    ("colder", dict(kind="logit-noise", colder=True), ConfigError),
    ("threshold", dict(kind="rare-words", threshold=0), ConfigError),
    ("threshold", dict(kind="rare-words", threshold=2), ConfigError),
    ("threshold", dict(kind="rare-words", threshold=True), ConfigError),
    ("threshold", dict(kind="rare-words", threshold="0.1"), ConfigError),
    ("threshold", dict(kind="rare-words", threshold=0.5j), ConfigError),
    ("direction", dict(kind="task-adversarial"), ConfigError),
    ("direction", dict(kind="task-adversarial", direction=np.arange(V) * (1 + 1j)), ConfigError),
    ("direction", dict(kind="task-adversarial", direction=["a"] * V), ConfigError),
    ("direction", dict(kind="task-adversarial", direction=np.ones(V)), ConfigError),
    ("direction", dict(kind="task-adversarial", direction=np.full(V, np.inf)), ConfigError),
    ("direction", dict(kind="task-adversarial", direction=np.arange(V) * 3e38), ConfigError),
    ("direction", dict(kind="task-adversarial", direction=np.ones((V, 1))), ShapeError),
]


@pytest.mark.parametrize("name, change, error", BAD_PERTURBED, ids=[f"{n}={c}" for n, c, _ in BAD_PERTURBED])
def test_perturbed_lm_bad_arguments_are_named(name, change, error):
    with pytest.raises(error, match=name.split("=")[0]):
        _perturbed(**change)


def test_a_huge_direction_is_still_calibrated():
    lm = _perturbed(kind="task-adversarial", direction=np.arange(V) * 1e30)
    assert lm.achieved_eps == pytest.approx(0.05, rel=1e-3) and math.isfinite(lm.achieved_eps_se)


@pytest.mark.parametrize("name, change", [
    ("world", dict(world=None)), ("kind", dict(kind="bogus")), ("scale", dict(scale=np.nan)),
    ("scale", dict(scale=-1.0)), ("scale", dict(scale="a")), ("law", dict(law="x")),
    ("params", dict(params={})), ("scale", dict(kind="uniform-mixture", scale=2.0, params={})),
])
def test_perturbed_lm_constructor_checks_its_arguments(name, change):
    args = dict(world=WORLD, kind="temperature", scale=0.1, params={"colder": jnp.asarray(False)})
    args.update(change)
    with pytest.raises(ConfigError, match=name):
        PerturbedLM(args.pop("world"), args.pop("kind"), args.pop("scale"), args.pop("params"), **args)
    assert PerturbedLM(WORLD, "temperature", 0.1, {"colder": False}).achieved_eps is None  # no NaN placeholder


@pytest.mark.parametrize("name, args", [
    ("kind", ("bogus", np.log(np.full((1, V), 0.25)), 0.1, {})),
    ("params", ("logit-noise", np.log(np.full((1, V), 0.25)), 0.1, {})),
    ("logp", ("temperature", np.full((1, V), np.nan), 0.1, {"colder": False})),
    ("logp", ("temperature", np.zeros((1, V)), 0.1, {"colder": False})),
    ("s", ("temperature", np.log(np.full((1, V), 0.25)), -1.0, {"colder": False})),
    ("s", ("uniform-mixture", np.log(np.full((1, V), 0.25)), 1.5, {})),
])
def test_perturb_logprobs_checks_concrete_input(name, args):
    with pytest.raises(SimlmError, match=name):
        perturb_logprobs(*args)


_G, _W = np.linspace(-1, 1, V), np.eye(V)
BAD_PARAMS = [  # (kind, params, error, message)
    ("logit-noise", {"W": np.eye(V - 1)}, ShapeError, f"params['W']: expected shape ({V}, {V})"),
    ("logit-noise", {"W": np.ones(V)}, ShapeError, f"params['W']: expected shape ({V}, {V})"),
    ("logit-noise", {"W": np.where(_W == 1, np.nan, 0.0)}, ConfigError, "params['W']: expected finite numbers, got nan at (0, 0)"),
    ("logit-noise", {"W": np.full((V, V), np.inf)}, ConfigError, "params['W']: expected finite numbers, got inf"),
    ("logit-noise", {"W": np.full((V, V), 1e300)}, ConfigError, "params['W']: entries up to 1e+300 overflow float32"),
    ("logit-noise", {"W": _W * 1j}, ConfigError, "params['W']: expected real numbers, got dtype complex"),
    ("logit-noise", {"W": _W.astype(bool)}, ConfigError, "params['W']: expected real numbers, got dtype bool"),
    ("logit-noise", {"W": "W"}, ConfigError, "params['W']: expected real numbers"),
    ("logit-noise", {"W": [[1.0], [1.0, 2.0]]}, ConfigError, "params['W']: expected an array of real numbers"),
    ("logit-noise", {"W": None}, ConfigError, "params['W']: expected real numbers, got dtype object"),
    ("rare-words", {"g": _G[:-1], "threshold": 0.1}, ShapeError, f"params['g']: expected shape ({V},)"),
    ("rare-words", {"g": np.append(_G[:-1], np.nan), "threshold": 0.1}, ConfigError,
     f"params['g']: expected finite numbers, got nan at {V - 1}"),
    ("rare-words", {"g": _G, "threshold": np.nan}, ConfigError, "params['threshold']: expected a probability"),
    ("rare-words", {"g": _G, "threshold": 0.0}, ConfigError, "params['threshold']: expected a probability in (0, 1]"),
    ("rare-words", {"g": _G, "threshold": -0.5}, ConfigError, "params['threshold']: expected a probability"),
    ("rare-words", {"g": _G, "threshold": 1.5}, ConfigError, "params['threshold']: expected a probability"),
    ("rare-words", {"g": _G, "threshold": np.array([0.1, 0.2])}, ShapeError, "params['threshold']: expected a scalar"),
    ("rare-words", {"g": _G, "threshold": "0.1"}, ConfigError, "params['threshold']: expected real numbers"),
    ("task-adversarial", {"v": np.ones((1, V))}, ShapeError, f"params['v']: expected shape ({V},)"),
    ("task-adversarial", {"v": np.append(_G[1:], -np.inf)}, ConfigError, "params['v']: expected finite numbers, got -inf"),
    ("temperature", {"colder": 1}, ConfigError, "params['colder']: expected True or False"),
    ("temperature", {"colder": np.array([True])}, ConfigError, "params['colder']: expected True or False"),
]


@pytest.mark.parametrize("call", ["PerturbedLM", "perturb_logprobs", "epsilon_of_scale"])
@pytest.mark.parametrize("kind, params, error, message", BAD_PARAMS,
                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(BAD_PARAMS)])
def test_hand_built_params_are_checked_naming_the_entry(call, kind, params, error, message):
    """Wrong shapes are a ShapeError, not JAX's TypeError; NaN/inf, complex, out-of-range entries a ConfigError,
    not a NaN ε or all-NaN laws."""
    logp = np.log(np.full((2, V), 1.0 / V))
    with pytest.raises(error, match="^" + re.escape(message)):
        if call == "PerturbedLM":
            PerturbedLM(WORLD, kind, 0.1, params)
        elif call == "perturb_logprobs":
            perturb_logprobs(kind, logp, 0.1, params)
        else:
            epsilon_of_scale(kind, logp, 0.1, params)


def test_hand_built_params_of_the_wrong_shape_are_named_inside_jit():
    logp = jnp.log(jnp.full((2, V), 1.0 / V))
    jitted = jax.jit(lambda logp, W: perturb_logprobs("logit-noise", logp, 0.1, {"W": W}))
    assert jitted(logp, jnp.eye(V)).shape == (2, V)
    with pytest.raises(ShapeError, match=re.escape(f"params['W']: expected shape ({V}, {V}) (V = {V} words), got shape (2, 2)")):
        jitted(logp, jnp.eye(2))


# ---- the transformer ----------------------------------------------------------------------------------------

TINY = dict(n_symbols=V, d_model=8, n_layers=1, n_heads=2, max_len=6)
SIZES = ["n_symbols", "d_model", "n_layers", "n_heads", "d_ff", "max_len", "n_prompt_slots"]
not_a_count = st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                        st.booleans(), st.complex_numbers(), st.lists(st.integers(1, 4), max_size=2))


@given(field=st.sampled_from(SIZES), value=not_a_count)
def test_transformer_config_sizes_must_be_counts(field, value):
    if field == "n_prompt_slots" and isinstance(value, int) and not isinstance(value, bool) and value == 0:
        value = -1  # zero prompt slots is valid
    if field == "d_ff" and value is None:
        value = 0  # None means 4·d_model
    with pytest.raises(ConfigError, match=field):
        TransformerConfig(**{**TINY, field: value})


@pytest.mark.parametrize("field, value", [
    ("causal", "yes"), ("causal", 1), ("causal", None), ("tie_embeddings", "no"), ("tie_embeddings", 0),
    ("positions", "abs"), ("positions", None), ("positions", ["learned"]), ("positions", 3),
    ("dtype", "float64"), ("dtype", "int32"), ("dtype", jnp.float32), ("dtype", None),
    ("attention", "flash"), ("attention", None), ("attention", ["xla"]),
    ("d_model", 10), ("d_model", 7),  # not divisible by n_heads = 2 (10: n_heads=4 below)
])
def test_transformer_config_options_are_checked(field, value):
    change = {field: value, **({"n_heads": 4} if value == 10 else {})}
    with pytest.raises(ConfigError, match=field):
        TransformerConfig(**{**TINY, **change})


def test_transformer_config_takes_numpy_bools():
    assert TransformerConfig(**TINY, causal=np.bool_(False)).causal is False


@pytest.mark.parametrize("field", ["n_symbols", "d_model", "d_ff", "n_layers", "max_len"])
def test_a_transformer_too_big_for_memory_is_refused_before_allocating(field):
    config = TransformerConfig(**{**TINY, field: 10**12 if field != "d_model" else 2 * 10**12})
    with pytest.raises(ConfigError, match="config: this request needs .* over the limit"):
        init_transformer(config, 0)


@pytest.mark.parametrize("config, seed, name", [
    (None, 0, "config"), (TINY, 0, "config"), ("cfg", 0, "config"),
    (TransformerConfig(**TINY), -1, "seed"), (TransformerConfig(**TINY), 1.5, "seed"),
    (TransformerConfig(**TINY), "0", "seed"), (TransformerConfig(**TINY), True, "seed"),
    (TransformerConfig(**TINY), 2**64, "seed"), (TransformerConfig(**TINY), None, "seed"),
])
def test_init_transformer_arguments_are_named(config, seed, name):
    with pytest.raises(ConfigError, match=name):
        init_transformer(config, seed)


@pytest.fixture(scope="module")
def causal_model():
    return init_transformer(TransformerConfig(**TINY), 0)


@pytest.fixture(scope="module")
def lms(causal_model):
    return {True: TransformerLM(causal_model),
            False: TransformerLM(init_transformer(TransformerConfig(**TINY, causal=False), 0))}


BAD_TOKENS = [None, "abc", [[0.5]], np.zeros((1, 1, 2), int), [], [[]], [[0, V]], [[-1, 0]], np.zeros((1, 7), int),
              np.zeros((1, 2), complex), [[True]], np.array([[0, None]], object)]
METHODS = [("next_token_logprobs", True), ("features", True), ("hidden_states", True),
           ("masked_token_logprobs", False), ("prepended_mask_logprobs", False), ("prepended_mask_features", False)]


@pytest.mark.parametrize("method, causal", METHODS)
@pytest.mark.parametrize("tokens", BAD_TOKENS, ids=repr)
def test_transformer_lm_bad_tokens_are_token_errors(lms, method, causal, tokens):
    with pytest.raises(TokenError, match="tokens"):
        getattr(lms[causal], method)(tokens)


@pytest.mark.parametrize("method, causal", [(m, not c) for m, c in METHODS if m not in ("features", "hidden_states")])
def test_transformer_lm_asked_for_a_law_it_lacks_names_the_model_kind(lms, method, causal):
    kind = "causal" if causal else "bidirectional"
    with pytest.raises(ConfigError, match=f"{method}: this TransformerLM wraps a {kind}"):
        getattr(lms[causal], method)(X)
    with pytest.raises(ConfigError, match=f"wraps a {kind}"):
        (exact_epsilon if not causal else exact_masked_epsilon)(WORLD, lms[causal], X)


def test_the_masked_laws_memory_is_sized_by_the_positions_asked_for(lms, monkeypatch):
    """One forward pass per position asked for: the check sized n·T passes whatever ``positions`` said, and
    refused a request for one position that fits (it over-refused, never under)."""
    import simlm.checks

    c, tokens = lms[False].config, np.zeros((1, 6), int)
    per_pass = 4 * 7 * (4 * c.d_model + c.d_ff + c.n_symbols + c.n_heads * 7)  # bytes, one input of length 6
    monkeypatch.setattr(simlm.checks, "physical_memory", lambda: 2 * per_pass)
    assert lms[False].masked_token_logprobs(tokens, [3]).shape == (1, 1, V)
    assert lms[False].masked_token_logprobs(tokens, [0, 5]).shape == (1, 2, V)
    with pytest.raises(ConfigError, match="tokens: this request needs.*over the limit"):
        lms[False].masked_token_logprobs(tokens, [0, 1, 5])


@pytest.mark.parametrize("model", [None, "m", TransformerConfig(**TINY)], ids=repr)
def test_transformer_lm_needs_a_transformer(model):
    with pytest.raises(ConfigError, match="model: expected a Transformer"):
        TransformerLM(model)


def test_transformer_lm_of_another_vocabulary_is_refused_by_epsilon(lms):
    other = TransformerLM(init_transformer(TransformerConfig(**{**TINY, "n_symbols": V + 1}), 0))
    with pytest.raises(ShapeError, match="n_symbols"):
        exact_epsilon(WORLD, other, X)
    assert exact_epsilon(WORLD, lms[True], X)[0] > 0


@pytest.mark.parametrize("tokens, prefix, error, name", [
    (jnp.full((1, 3), 99), None, TokenError, "tokens"),  # an nnx.Embed would clamp the id silently
    (jnp.full((1, 3), 0.5), None, TokenError, "tokens"),
    (jnp.zeros((1, 3)), None, TokenError, "tokens"),  # the network reads integer ids only
    ([[0], [0, 1]], None, TokenError, "tokens"),
    (jnp.zeros(3, int), None, TokenError, "tokens"),
    (jnp.zeros((1, 3), int), jnp.full((1, 8), jnp.nan), ConfigError, "prefix"),
    (jnp.zeros((1, 3), int), "x", ConfigError, "prefix"),
    (jnp.zeros((1, 3), int), jnp.zeros((1, 7)), ShapeError, "prefix"),
])
def test_the_network_checks_concrete_input(causal_model, tokens, prefix, error, name):
    with pytest.raises(error, match=name):
        causal_model(tokens, prefix=prefix)


# ---- softmax LMs over finite contexts --------------------------------------------------------------------------

S, D = 3, 2
_rng = np.random.default_rng(0)
P_STAR = _rng.dirichlet(np.ones(V), size=S)
PHI = _rng.standard_normal((D, V))
THETA = _rng.standard_normal((S, D))

BAD_MATRICES = {"None": None, "string": "x", "NaN": np.full((D, V), np.nan), "inf": np.full((D, V), np.inf),
                "complex": PHI + 1j, "1-D": np.ones(V), "3-D": np.ones((1, D, V)), "empty": np.zeros((0, V)),
                "ragged": [[1, 2], [3]], "object": np.array([[1, None]], object)}
FINITE_CALLS = {
    "SoftmaxContextLM theta": (lambda m: F.SoftmaxContextLM(m, PHI), "theta"),
    "SoftmaxContextLM phi": (lambda m: F.SoftmaxContextLM(THETA, m), "phi"),
    "fit_cross_entropy phi": (lambda m: F.fit_cross_entropy(P_STAR, m), "phi"),
    "fit_cross_entropy p_star": (lambda m: F.fit_cross_entropy(m, PHI), "p_star"),
    "fit_cross_entropy_joint p_star": (lambda m: F.fit_cross_entropy_joint(m, 2, steps=3), "p_star"),
    "best_achievable_epsilon phi": (lambda m: F.best_achievable_epsilon(P_STAR, m), "phi"),
    "quad_minimiser phi": (lambda m: F.quad_minimiser(P_STAR, m), "phi"),
    "quad_fit phi": (lambda m: F.quad_fit(P_STAR, m, steps=3), "phi"),
    "quad_loss f": (lambda m: F.quad_loss(m, P_STAR, PHI), "f"),
    "quad_excess f": (lambda m: F.quad_excess(m, P_STAR, PHI), "f"),
    "log_partition theta": (lambda m: F.log_partition(m, PHI), "theta"),
    "log_partition phi": (lambda m: F.log_partition(THETA, m), "phi"),
    "context_kl p_star": (lambda m: F.context_kl(m, np.log(P_STAR)), "p_star"),
    "context_kl logprobs": (lambda m: F.context_kl(P_STAR, m), "logprobs"),
    "epsilon p_star": (lambda m: F.SoftmaxContextLM(THETA, PHI).epsilon(m), "p_star"),
}


@pytest.mark.parametrize("call", FINITE_CALLS)
@pytest.mark.parametrize("matrix", BAD_MATRICES)
def test_finite_context_functions_refuse_bad_arrays_naming_them(call, matrix):
    fn, name = FINITE_CALLS[call]
    with pytest.raises(SimlmError, match=name):
        fn(BAD_MATRICES[matrix])


@given(i=st.integers(0, D - 1), j=st.integers(0, V - 1), value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_non_finite_phi_entry_is_named_not_a_linalg_error(i, j, value):
    phi = PHI.copy()
    phi[i, j] = value
    for fn in (F.quad_minimiser, F.quad_fit, F.fit_cross_entropy):
        with pytest.raises(ConfigError, match=rf"phi: entry \({i}, {j}\) is"):
            fn(P_STAR, phi)


@pytest.mark.parametrize("call, error, name", [
    (lambda: F.SoftmaxContextLM(THETA, PHI * 1e39), ConfigError, "overflow float32"),
    (lambda: F.log_partition(THETA, PHI * 1e39), ConfigError, "overflow float32"),
    (lambda: F.fit_cross_entropy(P_STAR, PHI * 1e39), ConfigError, "phi"),
    (lambda: F.quad_fit(P_STAR, PHI * 1e30, steps=3), ConfigError, "phi"),
    (lambda: F.quad_fit(P_STAR, PHI, steps=50, lr=100.0), ConfigError, "lr: gradient descent diverged"),
    (lambda: F.quad_minimiser(P_STAR, PHI[:, :-1]), ShapeError, "phi"),
    (lambda: F.quad_loss(np.ones((S, D + 1)), P_STAR, PHI), ShapeError, "f"),
    (lambda: F.quad_loss(THETA, P_STAR * 2, PHI), SimlmError, "p_star"),
    (lambda: F.quad_excess(np.ones((S - 1, D)), P_STAR, PHI), ShapeError, "f"),
    (lambda: F.log_partition(np.ones((S, D + 1)), PHI), ShapeError, "theta"),
    (lambda: F.context_kl(P_STAR, np.log(P_STAR[:2])), ShapeError, "logprobs"),
    (lambda: F.context_kl(P_STAR, np.log(P_STAR) + 1), DistributionError, "logprobs at context 0"),
    (lambda: F.fit_cross_entropy(P_STAR, PHI, weights=["a", "b", "c"]), ConfigError, "weights"),
    (lambda: F.fit_cross_entropy(P_STAR, PHI, weights=[1j, 1, 1]), ConfigError, "weights"),
    (lambda: F.fit_cross_entropy(P_STAR, PHI, weights=[[1], 1, 1]), ShapeError, "weights"),
    (lambda: F.fit_cross_entropy(P_STAR, PHI, tol=True), ConfigError, "tol"),
    (lambda: F.fit_cross_entropy(P_STAR, PHI, tol="1e-8"), ConfigError, "tol"),
    (lambda: F.fit_cross_entropy(P_STAR, PHI, steps=1.5), ConfigError, "steps"),
    (lambda: F.quad_fit(P_STAR, PHI, steps=3, lr=True), ConfigError, "lr"),
    (lambda: F.quad_fit(P_STAR, PHI, steps=3, init="x"), ConfigError, "init"),
    (lambda: F.quad_fit(P_STAR, PHI, steps=3, init=np.full((S, D), np.nan)), ConfigError, "init"),
    (lambda: F.fit_cross_entropy_joint(P_STAR, 10**12, steps=3), ConfigError, "dim: this request needs"),
    (lambda: F.fit_cross_entropy_joint(P_STAR, 2, steps=3, seed=2**64), ConfigError, "seed"),
    (lambda: F.fit_cross_entropy_joint(P_STAR, 2, steps=3, lr=True), ConfigError, "lr"),
    (lambda: F.fit_cross_entropy_joint(np.zeros((0, V)), 2, steps=3), ShapeError, "p_star"),
    (lambda: F.best_achievable_epsilon(P_STAR, PHI, steps=0), ConfigError, "steps"),
])
def test_finite_context_bad_values_are_named(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_degenerate_but_valid_phi_gives_an_answer():
    """A rank-deficient Φ has a valley of Quad minimisers (the shortest is returned); Φ = 0 has gradient 0
    everywhere, so quad_fit returns its start; bool weights are a 0/1 mask over contexts."""
    f = np.asarray(F.quad_fit(P_STAR, np.ones((D, V)), steps=200), np.float64)
    np.testing.assert_allclose(f, np.asarray(F.quad_minimiser(P_STAR, np.ones((D, V)))), atol=1e-5)
    assert np.all(np.asarray(F.quad_fit(P_STAR, np.zeros((D, V)), steps=3)) == 0)
    assert F.fit_cross_entropy(P_STAR, PHI, weights=[True, True, False]).converged
