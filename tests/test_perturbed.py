"""Analytic ε-optimal models: each family reaches the requested exact ε and behaves as documented."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import simlm.models.perturbed as perturbed
from simlm.errors import ConfigError, DistributionError, ShapeError
from simlm.models.perturbed import (KINDS, UNDIRECTED_KINDS, PerturbedLM, epsilon_of_scale, perturb_logprobs,
                                    perturbation_params, perturbed_lm, solve_scale)
from simlm.metrics.epsilon import divergence_report, exact_epsilon, exact_masked_epsilon
from simlm.worlds import HMM

K, V = 3, 6
N_EVAL, T_EVAL = 16, 16  # one shape for every evaluation set, so the world compiles once


def sparse_world(seed: int) -> HMM:
    # sparse emissions: low-entropy laws, so bounded families (uniform-mixture, hotter temperature)
    # reach ε = 0.1, and rare words exist
    return HMM.random(seed, K, V, emission_concentration=0.2)


DIRECTION = np.random.default_rng(123).standard_normal(V)


def make(world, eps, kind, seed=0, **kw):
    if kind == "task-adversarial":
        kw.setdefault("direction", DIRECTION)
    return perturbed_lm(world, eps, kind, seed, n_eval=N_EVAL, eval_length=T_EVAL, **kw)


@pytest.fixture(scope="module")
def world():
    return sparse_world(0)


@pytest.mark.parametrize("eps", [0.01, 0.1])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reaches_the_requested_epsilon(world, kind, eps):
    lm = make(world, eps, kind)
    measured, _ = exact_epsilon(world, lm, lm.eval_tokens)
    assert measured == pytest.approx(eps, rel=1e-3)
    assert lm.achieved_eps == pytest.approx(measured, rel=1e-6)
    assert (lm.kind, lm.target_eps) == (kind, eps) and lm.scale > 0


#: the kinds whose ε may top out below a target: uniform-mixture and the hotter temperature are bounded (the
#: module docstring of simlm.models.perturbed); rare-words is unbounded in s but tilts only the rare tenth of
#: the mass, so at s = S_MAX its ε can stay below eps (sparse worlds 12, 28, 58, 106 and 117 of 0–119 do).
#: logit-noise and task-adversarial move the bulk of every law and must always reach eps.
CAN_TOP_OUT = ("uniform-mixture", "temperature", "rare-words")


@given(seed=st.integers(0, 10_000), kind=st.sampled_from(KINDS), eps=st.sampled_from([0.01, 0.1]))
@example(seed=2000, kind="rare-words", eps=0.01)  # a threshold one ulp above a p*: 0.01002 by the public path
@example(seed=12, kind="rare-words", eps=0.01)  # tops out at ε ≈ 8e-4 (s = S_MAX)
def test_calibration_holds_over_random_worlds(seed, kind, eps):
    world = sparse_world(seed)
    try:
        lm = make(world, eps, kind, seed)
    except ConfigError as err:  # a family that can top out below eps must say so, truthfully
        if kind not in CAN_TOP_OUT:
            raise
        top = float(re.search(r"maximum reachable ε is (?:about )?([0-9.e+-]+)", str(err)).group(1))
        assert top < eps
        return
    assert exact_epsilon(world, lm, lm.eval_tokens)[0] == pytest.approx(eps, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 2000])
def test_rare_words_threshold_sits_in_a_gap_of_the_laws(seed):
    """The default threshold is the geometric midpoint between the largest rare p* (≤ the 10th
    percentile) and the next larger p* of the evaluation set, so last-bit differences between the paths
    that compute p* do not flip a word (one ulp above the percentile did, for seed 2000)."""
    world = sparse_world(seed)
    lm = make(world, 0.01, "rare-words", seed)
    p = np.asarray(jnp.exp(world.next_token_logprobs(lm.eval_tokens)), np.float32).ravel()
    values, thr = np.unique(p[p > 0]), lm.params["threshold"]
    rare_max = values[values <= np.quantile(p[p > 0], 0.1)][-1]
    nxt = values[values > rare_max][0]
    assert rare_max < thr < nxt  # strictly inside the gap, not one ulp above a p*
    assert np.mean(p[p > 0] < thr) == pytest.approx(0.1, abs=0.01)  # the rare tenth


@given(seed=st.integers(0, 10_000), quantile=st.sampled_from([0.1, 0.2, 0.3]))
@example(seed=53, quantile=0.1)  # before the solver perturbed the world's own laws: ε 6.8 % below the target
@example(seed=44, quantile=0.2)  # 3.4 % below
@example(seed=50, quantile=0.2)  # 1.3 % above
def test_rare_words_hit_eps_with_a_threshold_one_ulp_above_a_probability(seed, quantile):
    """A user's threshold may sit anywhere, even one ulp above a word's p*: the solver must decide which
    words are rare exactly as the LM does (it perturbs the same laws), or ε misses its target by percents."""
    world = sparse_world(seed)
    p = np.asarray(jnp.exp(world.next_token_logprobs(world.sample(seed, N_EVAL, T_EVAL))), np.float32)
    values = np.unique(p[p > 0])
    thr = np.nextafter(values[values <= np.quantile(p[p > 0], quantile)][-1], np.float32(1))
    try:
        lm = make(world, 0.01, "rare-words", seed, threshold=float(thr))
    except ConfigError as err:  # too few rare words to carry ε = 0.01: then it must say so
        assert "unreachable" in str(err)
        return
    assert exact_epsilon(world, lm, lm.eval_tokens)[0] == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("off, raises", [(1.005, True), (1.0015, True), (0.9985, True), (1.0005, False),
                                         (0.9995, False)])
def test_an_lm_whose_measured_epsilon_misses_the_target_by_more_than_1e_3_is_refused(world, monkeypatch, off, raises):
    """The promise "exact ε within 1e-3 relative" is checked on the ε measured through the public path
    (``exact_epsilon`` as perturbed_lm calls it): made 0.5 % or 0.15 % high or low it raises, 0.05 % either way
    it passes (a check at 1e-2 let the 0.5 % through; one at 2e-3, or one-sided, passed the first cases alone)."""
    monkeypatch.setattr(perturbed, "exact_epsilon",
                        lambda w, lm, toks: (lambda e: (off * e[0], e[1]))(exact_epsilon(w, lm, toks)))
    if raises:
        with pytest.raises(ConfigError, match=r"^eps: the calibrated LM's exact ε .* more than 1e-3 relative"):
            make(world, 0.05, "logit-noise")
    else:
        assert make(world, 0.05, "logit-noise").achieved_eps == pytest.approx(0.05 * off, rel=1e-4)


def test_given_tokens_are_the_evaluation_set(world):
    tokens = world.sample(99, N_EVAL, T_EVAL)
    lm = make(world, 0.05, "logit-noise", tokens=tokens)
    np.testing.assert_array_equal(lm.eval_tokens, tokens)
    assert exact_epsilon(world, lm, tokens)[0] == pytest.approx(0.05, rel=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_scale_is_the_exact_world(world, kind):
    lm = make(world, 0.01, kind)
    logp = world.next_token_logprobs(lm.eval_tokens)
    np.testing.assert_allclose(perturb_logprobs(kind, logp, 0.0, lm.params), logp, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_model_is_a_normalised_lm_on_any_tokens(world, kind):
    lm = make(world, 0.05, kind)
    other = world.sample(5, N_EVAL, T_EVAL)
    logq = lm.next_token_logprobs(other)
    assert logq.shape == (N_EVAL, T_EVAL, V)
    np.testing.assert_allclose(jax.nn.logsumexp(logq, -1), 0.0, atol=1e-5)
    np.testing.assert_allclose(lm.next_token_logprobs(other[0]), logq[0], atol=1e-6)


def test_epsilon_equals_excess_cross_entropy_of_the_perturbed_model(world):
    lm = make(world, 0.1, "logit-noise")
    report = divergence_report(world, lm, world.sample(11, N_EVAL, T_EVAL))
    assert abs(report.excess_cross_entropy - report.epsilon) <= 4 * report.excess_cross_entropy_se


def test_larger_eps_needs_larger_scale(world):
    assert make(world, 0.1, "logit-noise").scale > make(world, 0.01, "logit-noise").scale


def test_same_seed_gives_the_same_model(world):
    a, b = make(world, 0.05, "rare-words", seed=4), make(world, 0.05, "rare-words", seed=4)
    assert a.scale == b.scale
    np.testing.assert_array_equal(a.next_token_logprobs(a.eval_tokens), b.next_token_logprobs(a.eval_tokens))


def test_rare_words_leave_common_words_in_proportion(world):
    lm = make(world, 0.05, "rare-words")
    p = np.asarray(world.next_token_probs(lm.eval_tokens))
    q = np.exp(np.asarray(lm.next_token_logprobs(lm.eval_tokens)))
    common = p >= float(lm.params["threshold"])
    ratio = np.where(common, q / p, np.nan)
    spread = np.nanmax(ratio, -1) - np.nanmin(ratio, -1)  # q ∝ p on the common words of each context
    assert np.nanmax(spread) < 1e-4


def test_task_adversarial_moves_mass_along_the_direction(world):
    lm = make(world, 0.05, "task-adversarial")
    p = np.asarray(world.next_token_probs(lm.eval_tokens))
    q = np.exp(np.asarray(lm.next_token_logprobs(lm.eval_tokens)))
    assert np.all(q @ DIRECTION >= p @ DIRECTION - 1e-5)


def test_colder_temperature_reaches_epsilon(world):
    lm = make(world, 0.1, "temperature", colder=True)
    assert exact_epsilon(world, lm, lm.eval_tokens)[0] == pytest.approx(0.1, rel=1e-3)
    p = np.asarray(world.next_token_probs(lm.eval_tokens))
    q = np.exp(np.asarray(lm.next_token_logprobs(lm.eval_tokens)))
    assert np.mean(q.max(-1) >= p.max(-1) - 1e-6) == 1.0  # colder sharpens


def test_masked_laws_are_perturbed_and_normalised(world):
    lm = make(world, 0.05, "uniform-mixture")
    logq = lm.masked_token_logprobs(lm.eval_tokens, positions=[0, 3])
    assert logq.shape == (N_EVAL, 2, V)
    np.testing.assert_allclose(jax.nn.logsumexp(logq, -1), 0.0, atol=1e-5)
    assert exact_masked_epsilon(world, lm, lm.eval_tokens, positions=[0, 3])[0] > 0
    assert lm.prepended_mask_logprobs(lm.eval_tokens).shape == (N_EVAL, V)


def test_masked_laws_are_perturbed_in_log_space_where_float32_probabilities_underflow():
    """A word 120 nats down has p* ~1e-52, 0 in float32; at τ = 10 it is 12 nats down, well in range.  The
    masked and prepended laws must perturb log p* (float64: log_softmax(log p* / 10)), not log of 0 = −inf."""
    from simlm.worlds.loglinear import LogLinearWorld

    w = LogLinearWorld(np.ones((1, 1)), np.array([[0.0, -120.0]]), np.zeros((1, 2), int), 0)
    lm = PerturbedLM(w, "temperature", 9.0, perturbation_params("temperature", 2, 0))  # τ = 1 + s = 10
    logits = np.array([0.0, -120.0]) / 10
    exact = logits - np.logaddexp.reduce(logits)  # (−6.1e-6, −12.0)
    toks = np.zeros((2, 3), int)
    np.testing.assert_allclose(lm.next_token_logprobs(toks), np.broadcast_to(exact, (2, 3, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lm.masked_token_logprobs(toks), np.broadcast_to(exact, (2, 3, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lm.prepended_mask_logprobs(toks), np.broadcast_to(exact, (2, 2)), rtol=1e-5, atol=1e-6)


# ---- small targets and rows off 1 within the tolerance -------------------------------------------------

def _kl64(logp, logq):
    """ε of the served laws, each renormalised in float64, summed in float64 (the reference)."""
    logp, logq = (np.asarray(a, np.float64) for a in (logp, logq))
    logp, logq = (a - np.logaddexp.reduce(a, axis=-1, keepdims=True) for a in (logp, logq))
    p = np.exp(logp)
    return float(np.where(p > 0, p * (logp - logq), 0.0).sum(-1).mean())


@pytest.mark.parametrize("kind", ["logit-noise", "rare-words", "uniform-mixture"])
def test_a_small_target_is_met_by_the_served_laws_not_only_by_a_float32_sum(kind):
    """At ε = 3e-6 the float32 sums of the solver and of achieved_eps put the served laws' ε 1.5e-3 off the
    target (beyond the promised 1e-3) while reporting it on target."""
    world = HMM.random(1, 8, 16)
    lm = perturbed_lm(world, 3e-6, kind, 0 if kind == "uniform-mixture" else 1)
    truth = _kl64(world.next_token_logprobs(lm.eval_tokens), lm.next_token_logprobs(lm.eval_tokens))
    assert truth == pytest.approx(lm.achieved_eps, rel=1e-5)
    assert truth == pytest.approx(3e-6, rel=1e-3)


def test_uniform_mixture_is_calibrated_on_rows_that_sum_to_one_within_the_tolerance():
    """Emission rows summing to 1.0009 (accepted at atol = 1e-3): uniform-mixture, the one kind that did not
    renormalise, was solved on the raw rows and reported 1.69e-3 for a target of 1e-3."""
    world = HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.3, 0.1009], [0.1, 0.2, 0.7009]], atol=1e-3)
    for eps in (1e-3, 1e-2):
        lm = perturbed_lm(world, eps, "uniform-mixture", 0, n_eval=16, eval_length=16)
        truth = _kl64(world.next_token_logprobs(lm.eval_tokens), lm.next_token_logprobs(lm.eval_tokens))
        assert lm.achieved_eps == pytest.approx(eps, rel=1e-3) and truth == pytest.approx(eps, rel=1e-3)


def test_the_default_rare_threshold_keeps_the_rare_value_rare_when_the_next_is_adjacent():
    """The 10th-percentile value and the next larger p* one float32 ulp apart: the geometric midpoint rounded
    onto the rare value, the strict test p < threshold made it common, and no word was rare (ConfigError)."""
    from simlm.models.perturbed import _rare_threshold

    a = np.float32(0.16119558)
    b = np.nextafter(a, np.float32(1))
    lp = np.log(np.array([[a, b, 1 - a - b]] * 4 + [[b, b, 1 - 2 * b]] * 6, np.float64)).astype(np.float32)
    p = np.asarray(jnp.exp(jnp.asarray(lp)))
    rare_max, above = np.unique(p)[:2]
    assert above == np.nextafter(rare_max, np.float32(1))  # the case: adjacent float32 values
    threshold = np.float32(_rare_threshold(jnp.asarray(lp), None))
    assert rare_max < threshold <= np.nextafter(rare_max, np.float32(1))


def test_the_default_rare_threshold_is_the_geometric_midpoint_of_the_gap_above_the_10th_percentile():
    """Laws (.01, .09, .9) once and (.5, .3, .2) nine times: the 10th percentile of the 30 p* is .2, the next
    larger p* is .3, and the threshold sits at their geometric midpoint √(.2·.3) = .2449 (the rare test is in
    log space); the arithmetic midpoint would be .25."""
    lp = jnp.log(jnp.asarray(np.array([[0.01, 0.09, 0.9]] + [[0.5, 0.3, 0.2]] * 9, np.float32)))
    p = np.asarray(jnp.exp(lp), np.float64)
    rare_max, above = p[1, 2], p[1, 1]  # .2 and .3 as the laws hold them
    assert float(perturbed._rare_threshold(lp, None)) == pytest.approx(np.sqrt(rare_max * above), rel=1e-6)


# ---- each family's formula on one explicit law ----------------------------------------------------------

P_ROW = np.array([0.7, 0.2, 0.1])


def test_uniform_mixture_is_the_convex_mixture_with_the_uniform_law():
    """p_s = (1 − s) p* + s/V (module docstring): p* = (.7, .2, .1), s = ½ gives (.5167, .2667, .2167)."""
    got = np.exp(np.asarray(perturb_logprobs("uniform-mixture", np.log(P_ROW), 0.5, {}), np.float64))
    np.testing.assert_allclose(got, 0.5 * P_ROW + 0.5 / 3, rtol=1e-6)
    np.testing.assert_allclose(got, [0.516667, 0.266667, 0.216667], atol=1e-6)


def test_logit_noise_tilts_by_the_noise_field_over_the_l2_norm_of_the_law():
    """p_s ∝ p*·e^{s h}, h = W p*/‖p*‖₂ with W the params' (module docstring): p* = (.7, .2, .1), s = ½,
    W of seed 0 gives (.6547, .1720, .1733); dividing by Σp* = 1 instead of ‖p*‖₂ = 0.735 gave
    (.6696, .1799, .1505)."""
    params = perturbation_params("logit-noise", 3, 0)
    W = np.asarray(params["W"], np.float64)
    tilt = P_ROW * np.exp(0.5 * W @ P_ROW / np.linalg.norm(P_ROW))
    got = np.exp(np.asarray(perturb_logprobs("logit-noise", np.log(P_ROW), 0.5, params), np.float64))
    np.testing.assert_allclose(got, tilt / tilt.sum(), rtol=1e-5)


def test_logit_noise_params_are_the_seeded_standard_normal_draws():
    """``{"W"}`` (V, V) i.i.d. N(0, 1) from numpy's Generator seeded by ``seed`` (perturbation_params): for V = 3
    and seed 0 it is default_rng(0)'s first nine normals, and the tilt of p* = (.7, .2, .1) at s = ½ is the
    (.6547, .1720, .1733) stated above."""
    W = np.asarray(perturbation_params("logit-noise", 3, 0)["W"], np.float64)
    np.testing.assert_allclose(W, np.random.default_rng(0).standard_normal((3, 3)), rtol=1e-6)
    got = np.exp(np.asarray(perturb_logprobs("logit-noise", np.log(P_ROW), 0.5, {"W": jnp.asarray(W, jnp.float32)}),
                            np.float64))
    np.testing.assert_allclose(got, [0.6547, 0.1720, 0.1733], atol=1e-4)


def test_rare_words_are_those_strictly_below_the_threshold():
    """h_v = g_v·1[p*_v < threshold] (module docstring), strict: with p* = (.5, .25, .25) and threshold .25 no
    word is rare and p_s = p*; with p* = (.5, .3, .2) only the third is, p_s ∝ p*·(1, 1, e^{s g_3})."""
    g = np.array([0.3, -0.7, 1.0], np.float32)
    params = {"g": jnp.asarray(g), "threshold": jnp.float32(0.25)}
    at = np.array([0.5, 0.25, 0.25])
    got = np.exp(np.asarray(perturb_logprobs("rare-words", np.log(at), 1.0, params), np.float64))
    np.testing.assert_allclose(got, at, rtol=1e-6)
    below = np.array([0.5, 0.3, 0.2])
    tilt = below * np.exp([0.0, 0.0, 1.0 * g[2]])
    got = np.exp(np.asarray(perturb_logprobs("rare-words", np.log(below), 1.0, params), np.float64))
    np.testing.assert_allclose(got, tilt / tilt.sum(), rtol=1e-6)


# ---- the public pieces: perturbation_params, epsilon_of_scale, solve_scale ------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_perturbed_lm_is_its_parameters_at_the_scale_that_solves_epsilon_of_scale(world, kind):
    lm = make(world, 0.05, kind, seed=3)
    logp = world.next_token_logprobs(lm.eval_tokens)
    kw = {"direction": DIRECTION} if kind == "task-adversarial" else {}
    params = perturbation_params(kind, V, 3, logp, **kw)
    assert params.keys() == lm.params.keys()
    for k in params:
        np.testing.assert_array_equal(params[k], lm.params[k])
    assert epsilon_of_scale(kind, logp, lm.scale, params) == pytest.approx(lm.achieved_eps, rel=1e-5)


def test_epsilon_of_scale_weighs_the_laws_and_is_zero_at_scale_zero(world):
    logp = world.next_token_logprobs(world.sample(0, N_EVAL, T_EVAL))
    params = perturbation_params("logit-noise", V, 0)
    w = np.random.default_rng(0).dirichlet(np.ones(N_EVAL * T_EVAL)).reshape(N_EVAL, T_EVAL)
    per_law = [[epsilon_of_scale("logit-noise", logp[i, t][None], 0.7, params) for t in range(T_EVAL)]
               for i in range(N_EVAL)]
    assert epsilon_of_scale("logit-noise", logp, 0.7, params, w) == pytest.approx(np.sum(w * np.array(per_law)), rel=1e-5)
    assert epsilon_of_scale("logit-noise", logp, 0.7, params) == pytest.approx(np.mean(per_law), rel=1e-5)
    assert epsilon_of_scale("logit-noise", logp, 0.0, params) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ShapeError, match="weights"):
        epsilon_of_scale("logit-noise", logp, 0.7, params, w[0])
    with pytest.raises(DistributionError, match="weights"):
        epsilon_of_scale("logit-noise", logp, 0.7, params, 2 * w)


@pytest.mark.parametrize("kind", UNDIRECTED_KINDS)
def test_epsilon_of_scale_of_one_law_is_its_row(world, kind):
    logp = world.next_token_logprobs(world.sample(0, 1, 3))[0, 2]            # (V,): one law
    params = perturbation_params(kind, V, 0, logp=logp[None])
    assert epsilon_of_scale(kind, logp, 0.5, params) == epsilon_of_scale(kind, logp[None], 0.5, params) > 0


def test_a_perturbed_lm_without_params_is_refused_naming_them(world):
    with pytest.raises(ConfigError, match="^params: expected a dict"):
        PerturbedLM(world, "temperature", 0.5, None)


def test_rare_words_needs_the_laws_or_a_threshold():
    with pytest.raises(ConfigError, match="logp"):
        perturbation_params("rare-words", V, 0)
    assert float(perturbation_params("rare-words", V, 0, threshold=0.01)["threshold"]) == pytest.approx(0.01)


def test_solve_scale_inverts_an_increasing_function_to_rtol():
    assert solve_scale(lambda s: s**2, 0.25) == pytest.approx(0.5, rel=1e-11)
    s = solve_scale(lambda s: 1 - np.exp(-s), 0.5, rtol=1e-4, start=1e-2)
    assert abs((1 - np.exp(-s)) / 0.5 - 1) < 1e-4


def test_solve_scale_names_the_maximum_it_reaches_and_the_jump_it_lands_on():
    with pytest.raises(ConfigError, match=r"eps: 2 is unreachable by f: the maximum reachable ε is about 0\.909091 "
                                          r"\(at s = 10\); bounded"):
        solve_scale(lambda s: s / (1 + s), 2.0, 10.0, what="f", hint="; bounded")
    with pytest.raises(ConfigError, match=r"eps: 50 is not reached: the calibration ends at ε = 1"):
        solve_scale(lambda s: s if s < 1 else s + 100.0, 50.0, accept=1e-6)
    with pytest.raises(ConfigError, match=r"eps: ε\(s\) is nan"):
        solve_scale(lambda s: float("nan"), 1.0)
    with pytest.raises(ConfigError, match="eps_of"):
        solve_scale(None, 1.0)


def test_solve_scale_refuses_a_jump_past_rtol_by_default():
    """ε jumping from 0.997 to 1.003 at s = 1 (target 1): bisection ends 0.3 % off, beyond the default
    acceptance ``accept`` = ``rtol`` = 1e-4, so it raises; a wider ``accept`` takes s = 1 (an acceptance of
    100·rtol returned the 0.3 %-off scale silently)."""
    jump = lambda s: 0.997 * s if s < 1.0 else 1.003  # noqa: E731
    with pytest.raises(ConfigError, match=r"eps: 1 is not reached: .* relative tolerance 0\.0001"):
        solve_scale(jump, 1.0, 4.0, rtol=1e-4)
    assert solve_scale(jump, 1.0, 4.0, rtol=1e-4, accept=1e-2) == pytest.approx(1.0, rel=1e-12)


def test_solve_scale_refuses_a_jump_just_outside_rtol():
    """A jump from 0.9995 to 1.0005 at s = 1 (target 1) ends 5e-4 off, five times the stated rtol = accept =
    1e-4: refused, naming ε = 0.9995 or 1.0005 (an acceptance of 10·accept returned s ≈ 1 silently)."""
    jump = lambda s: 0.9995 * s if s < 1.0 else 1.0005  # noqa: E731
    with pytest.raises(ConfigError, match=r"eps: 1 is not reached: the calibration ends at ε = (0\.9995|1\.0005)"):
        solve_scale(jump, 1.0, 4.0, rtol=1e-4)


def test_solve_scale_never_returns_a_scale_above_upper_even_from_a_start_above_it():
    """The scale lies in (0, ``upper``] and doubling starts from ``start`` capped at ``upper``: with ε(s) = s,
    target 0.8, upper 0.5 and start 1.0 the target is unreachable, ε at most 0.5 at s = 0.5 (starting at the
    uncapped 1.0 bisected to s = 0.8 > upper)."""
    with pytest.raises(ConfigError, match=r"eps: 0\.8 is unreachable: the maximum reachable ε is about 0\.5 "
                                          r"\(at s = 0\.5\)"):
        solve_scale(lambda s: s, 0.8, 0.5, start=1.0)


def test_solve_scale_resolves_a_tiny_scale_to_rtol():
    """The bracket is "narrower than resolution·s" (relative): ε = s², target 1e-20 is solved at s = 1e-10 to
    rtol 1e-9.  An absolute width of 1e-15 stopped at s ≈ 1e-10 ± 1e-15, ε 2e-5 off, and raised."""
    s = solve_scale(lambda s: s * s, 1e-20, 10.0, start=1.0, rtol=1e-9)
    assert s * s / 1e-20 == pytest.approx(1.0, rel=1e-9)
    assert s == pytest.approx(1e-10, rel=1e-9)


# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf"), "big"])
def test_eps_must_be_positive_and_finite(world, eps):
    with pytest.raises(ConfigError, match="eps"):
        make(world, eps, "temperature")


def test_unknown_kind_lists_the_kinds(world):
    with pytest.raises(ConfigError, match="kind.*logit-noise.*task-adversarial"):
        make(world, 0.1, "gaussian")


@pytest.mark.parametrize("kind", ["uniform-mixture", "temperature"])
def test_unreachable_eps_states_the_maximum(world, kind):
    with pytest.raises(ConfigError, match="maximum reachable ε"):
        make(world, 100.0, kind)


def test_task_adversarial_needs_a_direction_of_the_right_shape(world):
    with pytest.raises(ConfigError, match="direction"):
        perturbed_lm(world, 0.1, "task-adversarial", 0, n_eval=N_EVAL, eval_length=T_EVAL)
    with pytest.raises(ShapeError, match="direction"):
        make(world, 0.1, "task-adversarial", direction=np.ones(V + 1))
    with pytest.raises(ConfigError, match="direction"):
        make(world, 0.1, "task-adversarial", direction=np.full(V, np.nan))
    with pytest.raises(ConfigError, match="direction: expected real numbers v ∈ R\\^V, got booleans"):
        make(world, 0.1, "task-adversarial", direction=np.arange(V) % 2 == 0)  # a mask read as a tilt of 1


def test_options_of_other_kinds_are_refused(world):
    with pytest.raises(ConfigError, match="direction"):
        make(world, 0.1, "logit-noise", direction=DIRECTION)
    with pytest.raises(ConfigError, match="threshold"):
        make(world, 0.1, "temperature", threshold=0.01)


def test_rare_words_threshold_below_every_probability_is_refused(world):
    with pytest.raises(ConfigError, match="threshold"):
        make(world, 0.1, "rare-words", threshold=1e-30)


def test_bad_seed_and_sizes(world):
    with pytest.raises(ConfigError, match="seed"):
        perturbed_lm(world, 0.1, "temperature", -1)
    with pytest.raises(ConfigError, match="n_eval"):
        perturbed_lm(world, 0.1, "temperature", 0, n_eval=0)


def test_perturbed_lm_is_a_language_model(world):
    from simlm.models.base import LanguageModel, MaskedLanguageModel

    lm = make(world, 0.01, "logit-noise")
    assert isinstance(lm, PerturbedLM)
    assert isinstance(lm, LanguageModel) and isinstance(lm, MaskedLanguageModel)
    assert lm.n_symbols == V


@pytest.mark.parametrize("law", ["masked", "prepended-mask"])
@pytest.mark.parametrize("kind", ["logit-noise", "uniform-mixture"])
def test_masked_laws_can_be_the_calibrated_ones(world, kind, law):
    """``law`` moves the calibration to the masked laws (every position) or to the law at a prepended
    mask — the one a head reads in Wei et al.'s tasks — measured here by brute force on the same tokens."""
    lm = make(world, 0.05, kind, law=law)
    x = lm.eval_tokens
    if law == "masked":
        measured, _ = exact_masked_epsilon(world, lm, x)
    else:
        p = np.asarray(world.prepended_mask_probs(x), np.float64)
        q = np.exp(np.asarray(lm.prepended_mask_logprobs(x), np.float64))
        measured = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))
    assert measured == pytest.approx(0.05, rel=1e-3)
    assert lm.achieved_eps == pytest.approx(measured, rel=1e-4) and lm.law == law
    # the scale differs from the next-token calibration: each law has its own ε(s)
    assert lm.scale != pytest.approx(make(world, 0.05, kind).scale, rel=1e-3)


def test_an_unknown_law_is_named():
    with pytest.raises(ConfigError, match="law: expected one of next-token, masked, prepended-mask"):
        perturbed_lm(sparse_world(0), 0.1, "temperature", 0, law="causal")


@pytest.mark.parametrize("kind", ["logit-noise", "rare-words", "task-adversarial", "temperature"])
def test_hand_built_params_of_the_right_form_give_the_built_ones_perturbation(world, kind):
    """The checks of hand-built params refuse nothing perturbation_params builds, nor its plain-numpy twin
    (float64 arrays, a Python float threshold, a Python bool), and convert nothing."""
    logp = world.next_token_logprobs(world.sample(0, N_EVAL, T_EVAL))
    built = perturbation_params(kind, V, 0, logp, **({"direction": DIRECTION} if kind == "task-adversarial" else {}))
    plain = {k: (bool(v) if k == "colder" else float(v) if k == "threshold" else np.asarray(v, np.float64))
             for k, v in built.items()}
    want = np.asarray(perturb_logprobs(kind, logp, 0.3, built))
    np.testing.assert_allclose(perturb_logprobs(kind, logp, 0.3, plain), want, rtol=1e-6, atol=1e-6)
    assert epsilon_of_scale(kind, logp, 0.3, plain) == pytest.approx(epsilon_of_scale(kind, logp, 0.3, built), rel=1e-6)
    lm = PerturbedLM(world, kind, 0.3, built)
    np.testing.assert_allclose(lm.next_token_logprobs(world.sample(0, N_EVAL, T_EVAL)), want, rtol=1e-6, atol=1e-6)


# ---- review 2026-12-05 (afternoon): messages that said the wrong thing, arguments read only sometimes ---------

def test_an_unreachable_colder_temperature_does_not_advise_colder():
    """colder=True already set, the message still said 'colder=True is unbounded' (here p* is flat on its
    support, which no temperature changes: ε = 0 at every s)."""
    world = HMM([1.0], [[1.0]], [[0.5, 0.5, 0.0]])
    with pytest.raises(ConfigError, match="is unreachable") as err:
        perturbed_lm(world, 0.1, "temperature", 0, tokens=np.zeros((4, 3), int), colder=True)
    assert "colder=True is unbounded" not in str(err.value) and "flat on its support" in str(err.value)


def test_n_eval_and_eval_length_are_checked_whether_or_not_tokens_are_given():
    world = HMM.random(0, 2, 3)
    tokens = np.asarray(world.sample(0, 4, 5))
    for name, value in (("n_eval", -5), ("eval_length", "x")):
        with pytest.raises(ConfigError, match=f"^{name}"):
            perturbed_lm(world, 0.01, "logit-noise", 0, tokens=tokens, **{name: value})


def test_a_bisection_that_closes_on_a_jump_says_the_bracket_closed():
    """A step in ε(s) (or float32 laws below their resolution) ended the bisection at its resolution; the
    message said only 'ε jumps there'."""
    with pytest.raises(ConfigError, match="closed to its resolution"):
        solve_scale(lambda s: 0.0 if s < 0.3 else 1.0, 0.5, 1.0, start=0.5, rtol=1e-4, resolution=1e-7)


@pytest.mark.parametrize("V", [3, 4])
def test_rare_words_on_a_law_flat_on_its_support_makes_every_word_rare_and_reaches_its_target(V):
    """Every p* = 1/V: all words are at the 10th percentile, so all are rare.  The default threshold sat one
    float32 step above 1/3, whose log rounds onto log(1/3): the LM's test log p* < log threshold found no
    rare word, ε(s) = 0 at every scale, and a reachable target was refused as unreachable."""
    world = HMM([1.0], [[1.0]], [[1.0 / V] * V])
    tokens = np.asarray(world.sample(0, n_sequences=8, length=3))
    lm = perturbed_lm(world, 0.01, "rare-words", 0, tokens=tokens)
    q = np.exp(np.asarray(lm.next_token_logprobs(tokens), np.float64))  # p* = 1/V at every position
    kl = np.sum(np.log((1.0 / V) / q), axis=-1) / V  # (n, T): every position moved, by the same tilt
    assert kl.mean() == pytest.approx(0.01, rel=1e-3) and np.allclose(kl, 0.01, rtol=1e-3)
    assert exact_epsilon(world, lm, tokens)[0] == pytest.approx(0.01, rel=1e-3)


def test_a_sum_off_one_by_less_than_six_digits_says_by_how_much():
    """``[0.5, 0.5 + 1e-6]`` printed "sums to 1, expected 1 within 1e-06": the offset is named now."""
    from simlm.checks import check_distributions

    with pytest.raises(DistributionError, match=r"^weights sums to 1 \+ 1e-06, expected 1 within 1e-06$"):
        check_distributions("weights", [0.5, 0.5 + 1e-6], atol=1e-6)


def test_a_cold_temperature_keeps_its_laws_laws_at_any_scale():
    """Colder temperature at a large scale (ε = 80 on next-token laws gave s ≈ 301) served prepended-mask laws whose
    top word read log-prob +1.3e-5 (a probability above 1) and rows summing to 1.00001: XLA:CPU rounded the scaled
    logits one way in log_softmax's max and another in its sum, and the library's own ε refused them (a review,
    2026-12-06).  Every row of all 81 sequences of length 4, scales 30 to 5000: a law to float32's rounding."""
    import itertools

    w = HMM(np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    toks = np.array(list(itertools.product(range(3), repeat=4)), np.int32)
    raw = jnp.log(w.prepended_mask_probs(toks))
    for s in (30.0, 300.0, 5000.0):
        out = np.asarray(perturbed._perturb("temperature", raw, jnp.float32(s), {"colder": jnp.asarray(True)}),
                         np.float64)
        assert out.max() <= 0 and np.abs(np.log(np.exp(out).sum(-1))).max() < 1e-6, s


def test_rare_words_on_one_hot_laws_gets_a_threshold_its_own_check_accepts():
    """Every law one-hot: the rare threshold was 2 × 1 = 2.0, which epsilon_of_scale refused as "no probability"
    (a review, 2026-12-06); it is the float32 just above 1, and no scale moves ε off 0."""
    from simlm.models.perturbed import epsilon_of_scale, perturbation_params
    with np.errstate(divide="ignore"):
        lp = np.log(np.array([[[1.0, 0.0], [0.0, 1.0]]]))
    params = perturbation_params("rare-words", 2, 0, lp)
    assert float(params["threshold"]) == np.nextafter(np.float32(1), np.float32(2))
    assert epsilon_of_scale("rare-words", lp, 1.0, params) == 0.0


def test_a_calibration_float32_closes_within_the_promise_returns_its_lm(monkeypatch):
    """The bisection aims at 1e-4 and the promise is 1e-3: a bracket that closed to float32's resolution 2.2e-4
    off the target raised (rare-words at ε = 1e-8, in an optimised build; the suite's unoptimised one rounds
    its way to 2.7e-5), where the promise allows the LM; one that ends 1e-3 off still raises."""
    import itertools
    rng = np.random.default_rng(0)
    pi, A, B = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3), size=3), rng.dirichlet(np.ones(3), size=3)
    world = HMM(pi, A, B)
    x = np.array(list(itertools.product(range(3), repeat=4)), np.int32)
    solves = []
    solve = perturbed.solve_scale
    monkeypatch.setattr(perturbed, "solve_scale", lambda *a, **k: solves.append(k) or solve(*a, **k))
    lm = perturbed_lm(world, 1e-8, "rare-words", 3, tokens=x)
    assert abs(lm.achieved_eps / 1e-8 - 1) <= 1e-3
    assert [(k["rtol"], k["accept"]) for k in solves] == [(1e-4, 1e-3)]  # aimed at 1e-4, accepted within 1e-3
    with pytest.raises(ConfigError, match="^eps: "):
        perturbed_lm(world, 1e-9, "temperature", 3, tokens=x)


def test_a_prepended_mask_lm_is_calibrated_on_tokens_drawn_after_the_mask():
    """Without ``tokens``, the prepended-mask law was calibrated on ``world.sample``'s sequences, x_1 from π;
    the law is read after a masked x_0, so x_1 comes from πA (as ``sample_task_data`` draws them).  On a
    period-2 chain started in state 0 every sampled x_1 is emitted by state 0, which cannot follow the mask
    (state 0 at position 0 moves to state 1): the call failed with a ZeroProbabilityError about "tokens" it
    was never given.  The evaluation set is the last T of T + 1 sampled tokens, and the next-token law's is
    unchanged."""
    from simlm.metrics import exact_prepended_epsilon

    world = HMM([1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], [[0.9, 0.1, 0.0], [0.0, 0.3, 0.7]])
    lm = perturbed_lm(world, 0.01, "logit-noise", 3, law="prepended-mask", n_eval=16, eval_length=5)
    np.testing.assert_array_equal(lm.eval_tokens, np.asarray(world.sample(3, 16, 6))[:, 1:])
    assert lm.achieved_eps == pytest.approx(0.01, rel=1e-3)
    assert exact_prepended_epsilon(world, lm, lm.eval_tokens)[0] == pytest.approx(lm.achieved_eps, rel=1e-6)
    causal = perturbed_lm(world, 0.01, "logit-noise", 3, n_eval=16, eval_length=5)
    np.testing.assert_array_equal(causal.eval_tokens, np.asarray(world.sample(3, 16, 5)))
