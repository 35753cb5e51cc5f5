"""Exact ε: the KL/TV primitives, ε of the exact world, and agreement with sampled cross-entropies."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bruteforce as bf
from simlm.errors import ConfigError, DistributionError, ShapeError, TokenError
from simlm.models.base import WorldLM
from simlm.models.finite import context_kl
from simlm.metrics.epsilon import (
    check_laws,
    divergence_report,
    exact_epsilon,
    exact_masked_epsilon,
    exact_prepended_epsilon,
    kl_float64,
    kl_per_sequence,
    tv_per_sequence,
)
from simlm.worlds import HMM
from simlm.worlds.loglinear import LogLinearWorld

V = 5


@pytest.fixture(scope="module")
def world():
    return HMM.random(0, 3, V)


@pytest.fixture(scope="module")
def tokens(world):
    return world.sample(1, 256, 12)  # large enough for the sampled-data comparison


class MixtureLM:
    """(1 − λ) p* + λ·uniform, a causal LM strictly worse than the world."""

    def __init__(self, world, lam=0.3):
        self.world, self.lam = world, lam

    @property
    def n_symbols(self):
        return self.world.n_symbols

    def next_token_logprobs(self, tokens):
        p = self.world.next_token_probs(tokens)
        return jnp.log((1 - self.lam) * p + self.lam / self.n_symbols)


def _log(p):
    with np.errstate(divide="ignore"):
        return jnp.asarray(np.log(np.asarray(p, np.float32)))


# fixed shapes (3 positions × 4 words), so the eager jnp ops compile once
probability_rows = st.tuples(
    st.lists(st.lists(st.sampled_from([0.0, 0.05, 0.3, 1.0]), min_size=4, max_size=4), min_size=3, max_size=3)
    .filter(lambda rows: all(sum(r) > 0 for r in rows)),
    st.lists(st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4), min_size=3, max_size=3),
)


def _normalise(rows):
    a = np.asarray(rows, np.float64)
    return a / a.sum(-1, keepdims=True)


# ---- the primitives ----------------------------------------------------------------------------

def test_kl_treats_zero_reference_probability_as_zero_contribution():
    ref = _log([[[0.5, 0.5, 0.0]]])
    model = _log([[[0.25, 0.25, 0.5]]])
    assert float(kl_per_sequence(ref, model)[0]) == pytest.approx(math.log(2), rel=1e-6)
    # both zero at the same word: −inf − (−inf) must not produce NaN
    assert float(kl_per_sequence(ref, ref)[0]) == pytest.approx(0.0, abs=1e-7)


def test_kl_is_infinite_when_model_gives_zero_where_reference_is_positive():
    ref = _log([[[0.5, 0.5, 0.0]]])
    model = _log([[[1.0, 0.0, 0.0]]])
    assert float(kl_per_sequence(ref, model)[0]) == math.inf


def test_kl_is_infinite_where_the_reference_probability_underflows():
    """Support is log p_ref > −inf, not p_ref > 0: e^−110 underflows float32 to 0 yet is a possible word."""
    ref = jnp.array([[[math.log(0.5), math.log(0.5), -110.0]]], jnp.float32)
    model = _log([[[0.5, 0.5, 0.0]]])
    assert float(kl_per_sequence(ref, model)[0]) == math.inf


@given(probability_rows)
def test_kl_and_tv_match_their_definitions(rows):
    p, q = _normalise(rows[0]), _normalise(rows[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(-1).mean()
    tv = 0.5 * np.abs(p - q).sum(-1).mean()
    got_kl = float(kl_per_sequence(_log(p)[None], _log(q)[None])[0])
    got_tv = float(tv_per_sequence(_log(p)[None], _log(q)[None])[0])
    assert got_kl == pytest.approx(max(kl, 0.0), abs=1e-5)
    assert got_tv == pytest.approx(tv, abs=1e-5)
    assert 0.0 <= got_tv <= 1.0 + 1e-6


def test_kl_is_never_negative_also_when_float32_rounding_says_so():
    """A KL is never negative, also when float32 rounding says so: two float32 rows of the same law
    rounded differently (log [0.1, 0.9] and its log-softmax after a 2e-7 shift) sum to −5.7e-8 term by
    term; kl_per_sequence, eager and under jit as the trainer calls it, clamps that rounding to 0."""
    ref = jnp.log(jnp.array([[[0.1, 0.9]]], jnp.float32))
    model = jax.nn.log_softmax(ref + jnp.array([0.0, 2e-7], jnp.float32), axis=-1)
    assert float(kl_per_sequence(ref, model)[0]) >= 0.0
    assert float(jax.jit(kl_per_sequence)(ref, model)[0]) >= 0.0


def test_tv_is_one_for_disjoint_supports():
    assert float(tv_per_sequence(_log([[[1.0, 0.0]]]), _log([[[0.0, 1.0]]]))[0]) == pytest.approx(1.0)


def test_mask_averages_over_valid_positions_only():
    ref = _log([[[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]]])
    model = _log([[[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]]])  # last position has KL = +inf
    mask = jnp.array([[True, True, False]])
    expected = 0.5 * (0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))
    assert float(kl_per_sequence(ref, model, mask)[0]) == pytest.approx(expected, rel=1e-5)
    assert math.isnan(float(kl_per_sequence(ref, model, jnp.zeros((1, 3), bool))[0]))


def test_kl_is_jittable_with_finite_gradients_at_reference_zeros():
    ref = _log([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]])
    logits = jnp.zeros((1, 2, 3))

    @jax.jit
    def loss(z):
        return kl_per_sequence(ref, jax.nn.log_softmax(z, -1)).sum()

    g = jax.grad(loss)(logits)
    assert np.all(np.isfinite(np.asarray(g)))
    # ∂KL/∂z = (q − p)/T per position
    q = np.full(3, 1 / 3)
    np.testing.assert_allclose(np.asarray(g)[0, 0], (q - [0.5, 0.5, 0.0]) / 2, atol=1e-6)


# ---- exact ε of language models --------------------------------------------------------------------

def test_exact_world_has_zero_epsilon(world, tokens):
    eps, se = exact_epsilon(world, WorldLM(world), tokens)
    assert abs(eps) <= 1e-6 and abs(se) <= 1e-6


def test_exact_world_has_zero_masked_epsilon(world, tokens):
    eps, _ = exact_masked_epsilon(world, WorldLM(world), tokens)
    assert abs(eps) <= 1e-6
    eps, _ = exact_masked_epsilon(world, WorldLM(world), tokens, positions=[0, 5])
    assert abs(eps) <= 1e-6


def test_prepended_epsilon_is_the_mean_kl_at_the_prepended_mask(world, tokens):
    """Zero for the world itself; for (1 − λ) p* + λ·uniform at the prepended law, the mean over sequences of
    Σ_v p*_v log(p*_v / q_v), computed here in float64."""
    assert abs(exact_prepended_epsilon(world, WorldLM(world), tokens)[0]) <= 1e-6

    class PrependedMixture(MixtureLM):
        def prepended_mask_logprobs(self, tokens):
            return jnp.log((1 - self.lam) * self.world.prepended_mask_probs(tokens) + self.lam / self.n_symbols)

    p = np.asarray(world.prepended_mask_probs(tokens), np.float64)
    kl = np.sum(p * (np.log(p) - np.log(0.7 * p + 0.3 / V)), axis=-1)
    eps, se = exact_prepended_epsilon(world, PrependedMixture(world), tokens)
    assert eps == pytest.approx(kl.mean(), rel=1e-4) and eps > 0
    assert se == pytest.approx(kl.std(ddof=1) / math.sqrt(len(kl)), rel=1e-3)
    with pytest.raises(ConfigError, match="lm: MixtureLM has no prepended_mask_logprobs"):
        exact_prepended_epsilon(world, MixtureLM(world), tokens)


def test_epsilon_is_the_mean_of_per_sequence_kl(world, tokens):
    lm = MixtureLM(world)
    ref, model = world.next_token_logprobs(tokens), lm.next_token_logprobs(tokens)
    per_seq = np.asarray(kl_per_sequence(ref, model), np.float64)
    eps, se = exact_epsilon(world, lm, tokens)
    assert eps == pytest.approx(per_seq.mean(), rel=1e-6)
    assert se == pytest.approx(per_seq.std(ddof=1) / math.sqrt(len(per_seq)), rel=1e-5)
    assert eps > 0


def test_float16_lm_laws_are_compared_in_float32(world, tokens):
    """float16 log-probs are checked at float16's tolerance and upcast before the renormalisation: ε is the
    float64 KL of the same values, renormalised.  The same values passed as float32 are refused — their
    rows are off 1 by float16 rounding (~1e-4), which no float32 law is."""
    class Half(MixtureLM):
        def next_token_logprobs(self, tokens):
            return super().next_token_logprobs(tokens).astype(jnp.float16)

    class Upcast(Half):
        def next_token_logprobs(self, tokens):
            return super().next_token_logprobs(tokens).astype(jnp.float32)

    assert check_laws("lm", jnp.log(jnp.full((2, 4), 0.25, jnp.float16))).dtype == jnp.float32
    eps = exact_epsilon(world, Half(world), tokens)[0]
    half = np.asarray(Half(world).next_token_logprobs(tokens), np.float64)
    assert eps == pytest.approx(float(kl_float64(world.next_token_logprobs(tokens), half).mean()), rel=1e-6)
    with pytest.raises(DistributionError, match=r"lm: next_token_logprobs at .*expected 1 within \|log Σ p\| ≤ 1e-05"):
        exact_epsilon(world, Upcast(world), tokens)


def test_epsilon_equals_excess_cross_entropy_on_sampled_data(world, tokens):
    report = divergence_report(world, MixtureLM(world), tokens)
    se = math.hypot(report.excess_cross_entropy_se, report.epsilon_se)
    assert abs(report.excess_cross_entropy - report.epsilon) <= 4 * se
    assert report.model_cross_entropy - report.optimal_cross_entropy == pytest.approx(report.excess_cross_entropy)


def test_report_standard_errors_are_over_sequences_and_paired_for_the_excess(world, tokens):
    """Every ``*_se`` is std(ddof=1)/√n of the per-sequence values, computed here in float64 from the two laws;
    the excess cross-entropy's is that of the paired per-sequence differences CE_model − CE_opt (here 0.0030,
    against 0.0064 for CE_model alone: both cross-entropies move with the sequence)."""
    def sem(values):
        return values.std(ddof=1) / math.sqrt(len(values))

    x = np.asarray(tokens)
    p = np.asarray(world.next_token_probs(x), np.float64)
    p /= p.sum(-1, keepdims=True)
    q = 0.7 * p + 0.3 / V
    ce_model = -np.log(np.take_along_axis(q, x[..., None], -1)[..., 0]).mean(-1)
    ce_opt = -np.log(np.take_along_axis(p, x[..., None], -1)[..., 0]).mean(-1)
    tv = 0.5 * np.abs(p - q).sum(-1).mean(-1)
    report = divergence_report(world, MixtureLM(world), tokens)
    assert report.model_cross_entropy_se == pytest.approx(sem(ce_model), rel=1e-3)
    assert report.optimal_cross_entropy_se == pytest.approx(sem(ce_opt), rel=1e-3)
    assert report.excess_cross_entropy_se == pytest.approx(sem(ce_model - ce_opt), rel=1e-3)
    assert report.tv_se == pytest.approx(sem(tv), rel=1e-3)


def test_divergence_report_counts_and_optimal_cross_entropy(world, tokens):
    report = divergence_report(world, MixtureLM(world), tokens)
    assert (report.n_sequences, report.n_positions, report.masked) == (256, 256 * 12, False)
    assert report.optimal_cross_entropy == pytest.approx(world.cross_entropy(tokens)[0], rel=1e-5)
    assert 0 < report.tv < 1


def test_masked_divergence_report_of_exact_world(world, tokens):
    report = divergence_report(world, WorldLM(world), tokens, masked=True, positions=[1, 2, 3])
    assert report.n_positions == 256 * 3 and report.masked
    assert abs(report.epsilon) <= 1e-6 and abs(report.tv) <= 1e-6
    assert report.model_cross_entropy == pytest.approx(report.optimal_cross_entropy, abs=1e-6)


def test_masked_optimal_cross_entropy_is_the_enumerated_masked_log_loss():
    """optimal_cross_entropy of the masked report is −mean_{i, t ∈ positions} log p*(x_t | x_−t), p* by
    substituting every word at t and enumerating every hidden path (tests/bruteforce.py).  HMM(2, 3), 4 × 3
    tokens, positions [0, 2]: 1.120066; reading the observed word one position to the left (x_{t−1}, so x_2
    for t = 0) gives 0.979156.  The exact-world test above cannot see that: model and optimal CE shift alike."""
    world = HMM.random(0, 2, 3)
    toks, positions = np.asarray(world.sample(1, 4, 3)), [0, 2]
    report = divergence_report(world, WorldLM(world), toks, masked=True, positions=positions)
    pi, A, B = bf.params(world)
    expected = np.mean([-np.mean([np.log(bf.masked_law(pi, A, B, x, t)[x[t]]) for t in positions]) for x in toks])
    assert report.optimal_cross_entropy == pytest.approx(expected, abs=1e-5)


# ---- bad input ------------------------------------------------------------------------------------

def test_vocabulary_mismatch_raises_shape_error(world, tokens):
    with pytest.raises(ShapeError, match="n_symbols"):
        exact_epsilon(world, WorldLM(HMM.random(0, 3, V + 1)), tokens)


def test_bad_tokens_raise_token_error(world):
    with pytest.raises(TokenError, match="tokens"):
        exact_epsilon(world, WorldLM(world), [[0, V]])
    with pytest.raises(TokenError, match="tokens"):
        exact_masked_epsilon(world, WorldLM(world), np.zeros((2, 0), int))


def test_lm_without_masked_laws_raises_config_error(world, tokens):
    with pytest.raises(ConfigError, match="lm"):
        exact_masked_epsilon(world, MixtureLM(world), tokens)


def test_lm_with_zero_where_the_world_probability_underflows_raises_distribution_error():
    """log p*(2) = −110.7 is finite though e^−110.7 underflows float32: an LM giving word 2 probability 0
    has KL = +inf there, refused as for any possible word."""
    world = LogLinearWorld(np.ones((1, 1)), [[0.0, 0.0, -110.0]], np.zeros((1, 3), int), 0)

    class Truncated:
        n_symbols = 3

        def next_token_logprobs(self, tokens):
            return jnp.broadcast_to(_log([0.5, 0.5, 0.0]), (*np.shape(tokens), 3))

    with pytest.raises(DistributionError, match="gives probability 0 to word 2, which the world gives probability 8.4"):
        exact_epsilon(world, Truncated(), np.zeros((2, 4), int))


def test_lm_returning_wrong_shape_raises_shape_error(world, tokens):
    class Broken(MixtureLM):
        def next_token_logprobs(self, tokens):
            return super().next_token_logprobs(tokens)[:, :-1]

    with pytest.raises(ShapeError, match="lm"):
        exact_epsilon(world, Broken(world), tokens)


def test_positions_without_masked_raise_config_error(world, tokens):
    with pytest.raises(ConfigError, match="positions"):
        divergence_report(world, WorldLM(world), tokens, positions=[0])


def test_a_masked_position_given_twice_is_refused_not_weighted_twice(world, tokens):
    """The masked ε is a mean over a set of positions: [0, 0, 1] weighted position 0 twice (0.0159 against
    0.0189 over {0, 1} in a reviewer's log-linear world)."""
    lm = WorldLM(world)
    for call in (lambda: exact_masked_epsilon(world, lm, tokens, positions=[0, 0, 1]),
                 lambda: divergence_report(world, lm, tokens, masked=True, positions=[1, 0, 1])):
        with pytest.raises(TokenError, match="^positions: (0|1) appears more than once"):
            call()
    exact_masked_epsilon(world, lm, tokens, positions=[1, 0])  # distinct, in any order


def test_bfloat16_lm_laws_are_refused_with_the_reason():
    w = HMM.random(0, 3, 4)
    x = w.sample(0, 2, 5)
    with pytest.raises(DistributionError, match="bfloat16.*float32"):
        check_laws("lm", w.next_token_logprobs(x).astype(jnp.bfloat16))


def test_a_law_with_a_nan_is_refused_by_check_laws_and_context_kl():
    """A NaN log-probability makes logsumexp NaN, and every comparison with NaN is false: "|log Σ p| > tol"
    let the row through (check_laws returned [nan, nan], context_kl [nan, 0.0]); the module docstring says
    "no NaN", refused with the word named."""
    bad = np.array([[np.log(0.5), np.nan], [np.log(0.25), np.log(0.75)]], np.float32)
    with pytest.raises(DistributionError, match=r"lm at row \(0,\) .*word 1 has log-probability NaN"):
        check_laws("lm", bad)
    with pytest.raises(DistributionError, match="logprobs at context 0 .*word 1 has log-probability NaN"):
        context_kl(np.array([[0.5, 0.5], [0.25, 0.75]]), bad)


class _MaskedMixture(MixtureLM):
    """(1 − λ) p*(x_t | x_−t) + λ/V at every masked position."""

    def masked_token_logprobs(self, tokens, positions=None):
        return jnp.log((1 - self.lam) * self.world.masked_token_probs(tokens, positions) + self.lam / self.n_symbols)


def test_masked_standard_errors_are_over_sequences_not_tokens():
    """The masked ε's standard error (and the masked report's) is std(ddof=1)/√n of the per-sequence means over
    the masked positions, whose positions are correlated: no test read it, and one taken over the n·P tokens
    (2.4× too small here) passed them all (a mutation review, 2026-12-07).  Brute-forced in float64."""
    world = HMM.random(0, 3, V)
    x = np.asarray(world.sample(1, 64, 8))
    positions = [0, 2, 5, 7]
    p = np.asarray(world.masked_token_probs(x, positions), np.float64)
    p /= p.sum(-1, keepdims=True)
    q = 0.7 * p + 0.3 / V
    kl = (p * (np.log(p) - np.log(q))).sum(-1).mean(-1)  # (n,): each sequence's mean over its masked positions
    tv = 0.5 * np.abs(p - q).sum(-1).mean(-1)
    observed = x[:, positions, None]
    ce_model = -np.log(np.take_along_axis(q, observed, -1)[..., 0]).mean(-1)
    ce_world = -np.log(np.take_along_axis(p, observed, -1)[..., 0]).mean(-1)
    sem = lambda v: v.std(ddof=1) / math.sqrt(len(v))  # noqa: E731
    eps, se = exact_masked_epsilon(world, _MaskedMixture(world), x, positions)
    assert eps == pytest.approx(kl.mean(), rel=1e-5) and se == pytest.approx(sem(kl), rel=1e-3)
    report = divergence_report(world, _MaskedMixture(world), x, masked=True, positions=positions)
    assert report.epsilon_se == pytest.approx(sem(kl), rel=1e-3)
    assert report.tv_se == pytest.approx(sem(tv), rel=1e-3)
    assert report.model_cross_entropy_se == pytest.approx(sem(ce_model), rel=1e-3)
    assert report.excess_cross_entropy_se == pytest.approx(sem(ce_model - ce_world), rel=1e-3)


def test_the_exact_lm_of_another_world_that_rules_out_a_possible_sequence_has_infinite_epsilon_named_lm():
    """``exact_epsilon(world, WorldLM(other), x)`` with x possible under ``world`` and not under ``other`` said
    "tokens: sequence 0 has probability zero under this world" — the LM's world, not the one passed, which
    holds x possible — and ``check_natural_task`` the same of an internal batch (a review, 2026-12-08).  That
    LM gives a possible sequence probability 0: ε is +∞, a DistributionError naming lm, for the causal,
    masked and prepended-mask ε and the natural-task check alike.  Tokens impossible under ``world`` itself
    stay the world's error."""
    from simlm.errors import DistributionError, ZeroProbabilityError
    from simlm.metrics import exact_masked_epsilon, exact_prepended_epsilon
    from simlm.models import WorldLM
    from simlm.theory.natural_tasks import check_natural_task, random_natural_task
    from simlm.worlds import enumerate_contexts

    world = HMM([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])  # word 2 possible
    other = WorldLM(HMM([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5, 0.0], [0.4, 0.6, 0.0]]))  # never
    x = np.array([[2, 0, 1], [0, 1, 0]])  # word 2 before the last position: a context the LM rules out
    infinite = r"^lm: its .* undefined on tokens the world makes possible .* ε is infinite"
    for measure in (exact_epsilon, exact_masked_epsilon, exact_prepended_epsilon):
        with pytest.raises(DistributionError, match=infinite):
            measure(world, other, x)
    task = random_natural_task(enumerate_contexts(world, 1), 0)
    with pytest.raises(DistributionError, match=infinite):
        check_natural_task(world, other, task)
    with pytest.raises(ZeroProbabilityError, match="^tokens: sequence 0 has probability zero under this world"):
        exact_epsilon(other.world, WorldLM(world), x)
