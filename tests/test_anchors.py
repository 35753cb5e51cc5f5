"""Anchor vectors (Wu, Lee & Ge, NeurIPS 2023): the score identity, anchor recovery, the negative
constructions N1/N2 and the transfer bound, on exact log-linear worlds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from profiles import scaled

from simlm.errors import ConfigError, DistributionError, ShapeError, SimlmError
from simlm.experiments.anchors import summarise
from simlm.experiments.checks_anchors import anchors_check
from simlm.experiments.registry import Cell, row
from simlm.models import WorldLM, perturbed_lm
from simlm.models.perturbed import UNDIRECTED_KINDS
from simlm.strategies import loglinear_worlds
from simlm.theory.anchor_bound import markov_tail, transfer_bound
from simlm.theory.anchor_constructions import (analytic_laws, exact_epsilon_rows, lm_residual, n1_construction,
                                               n2_construction, worst_case_lm)
from simlm.theory.anchors import (_balancing_bias, _half_crossing, anchor_contexts, anchor_fit, bulk_mask,
                                  head_errors, log_softmax, probe_error, random_tasks, readout_error, score_identity,
                                  word_errors, word_task, world_anchor_fit)
from simlm.worlds import HMM, LogLinearWorld

FEW = settings(max_examples=scaled(10), deadline=None)  # each example builds a 64-state world and its constructions


def _world_case(draw_world):
    """A world with V ≥ 2 (a bulk and a task word need two words) and its rows, one per state."""
    return draw_world.filter(lambda w: w.n_symbols >= 2)


@st.composite
def word_tasks(draw, max_symbols: int = 4):
    world = draw(_world_case(loglinear_worlds(max_symbols=max_symbols, scale=1.5)))
    V = world.n_symbols
    k = draw(st.integers(0, V - 1))
    words = draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=V, unique=True))
    coef = draw(st.lists(st.floats(-2, 2, allow_nan=False), min_size=len(words), max_size=len(words))
                .filter(any))  # all zero is no task (one class): word_task refuses it
    return world, k, np.array(words), np.array(coef)


def _brute_log_bulk_partition(logits, bulk) -> np.ndarray:
    return np.array([math.log(sum(math.exp(z) for z, b in zip(row, mask) if b)) for row, mask in zip(logits, bulk)])


def _brute_prob_part(logp, bulk, words, coef) -> np.ndarray:
    """Σ_{w∈S} c_w [log p(w|x) − log p(B(x)|x)], one context at a time with math.log / math.exp."""
    logp = np.asarray(logp, np.float64)
    log_pb = _brute_log_bulk_partition(logp, bulk)
    return np.array([sum(float(c) * (row[w] - lb) for w, c in zip(words, coef)) for row, lb in zip(logp, log_pb)])


def _brute_error(score, labels, weights) -> float:
    """π-weighted 0-1 error of the head 1[score ≥ 0] against the labels."""
    return float(sum(p for s, y, p in zip(score, labels, weights) if (s >= 0) != bool(y)))


def _brute_lower_median(x, weights) -> float:
    """The smallest value of x whose cumulative π-mass (of the values ≤ it) reaches ½ (up to rounding)."""
    return float(min(v for v in x if sum(p for u, p in zip(x, weights) if u <= v) >= 0.5 - 1e-9))


@pytest.mark.parametrize("seed", [0, 4])
def test_head_errors_with_an_lm_residual_unlike_the_worlds_match_their_definitions(seed):
    """Pins every field of HeadErrors when r_LM ≠ r* (an analytic logit-noise LM on a 64-state world), against a
    float64 brute force of the definitions (HeadErrors / head_errors docstrings), with c*, r* the world's anchor
    fit and the threshold the world's (score* + bias ≥ 0 ⇔ prob* + Σc(c* + r*) + bias ≥ 0):
    error = π·1[prob_LM + Σc(c* + r_LM) + bias ≥ 0 ≠ y], probability_error = π·1[prob_LM + Σc(c* + r*) + bias ≥ 0
    ≠ y] (the world's anchor part: a mutant reading r_LM here survived while every test passed r_LM = r*),
    anchor_error = π·1[prob* + Σc(c* + r_LM) + bias ≥ 0 ≠ y], zero_shot_error = π·1[full ≥ cut ≠ y] with
    full = prob_LM + Σc r_LM and the cut midway between its lower π-median and the next value above."""
    ctx = anchor_contexts(LogLinearWorld.random(seed, n_states=64, n_symbols=6, dim=3, sigma=1.0))
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    task = random_tasks(ctx, fit, 0)["anchored"]
    logp = analytic_laws(ctx, "logit-noise", 0.3, seed)
    r_lm = lm_residual(ctx, bulk, logp)
    h = head_errors(task, ctx, bulk, logp, r_lm, fit.residual)

    w, y, c = ctx.weights, task.labels, task.coef
    sc = float(np.sum(c))
    # r* from its definition: log Z*_B(x) = ⟨v_0, f*(x)⟩ + c* + r*(x), Z*_B over the world's logits
    r_star = _brute_log_bulk_partition(ctx.logits, bulk) - ctx.features @ fit.v0 - fit.c
    assert np.allclose(r_star, fit.residual, rtol=0, atol=1e-9)
    assert np.abs(r_lm - r_star).max() > 0.1  # the case the review found untested: r_LM ≠ r*
    prob_lm = _brute_prob_part(logp, bulk, task.words, c)
    prob_star = _brute_prob_part(ctx.logp, bulk, task.words, c)
    # the world's score is its probability part plus its anchor part (the score identity), so y is its head
    assert np.allclose(prob_star + sc * (fit.c + r_star), task.score, rtol=0, atol=1e-9)
    assert np.array_equal(prob_star + sc * (fit.c + r_star) + task.bias >= 0, y)

    scores = {"error": prob_lm + sc * (fit.c + r_lm) + task.bias,
              "probability_error": prob_lm + sc * (fit.c + r_star) + task.bias,
              "anchor_error": prob_star + sc * (fit.c + r_lm) + task.bias}
    for s in scores.values():
        assert np.abs(s).min() > 1e-6  # no context on a threshold: rounding cannot decide an indicator
    for name, s in scores.items():
        assert getattr(h, name) == pytest.approx(_brute_error(s, y, w), abs=1e-12), name
    full = prob_lm + sc * r_lm
    median = _brute_lower_median(full, w)  # the cut midway to the next score above (labels' rule, _balancing_bias)
    cut = (median + min(v for v in full if v > median + 1e-9 * (1 + abs(median)))) / 2
    assert h.zero_shot_error == pytest.approx(_brute_error(full - cut, y, w), abs=1e-12)
    # the fields can tell the residuals apart on this world: swapping r_LM and r* moves them
    assert _brute_error(prob_lm + sc * (fit.c + r_lm) + task.bias, y, w) != h.probability_error
    assert _brute_error(prob_star + sc * (fit.c + r_star) + task.bias, y, w) != h.anchor_error


# ---- the score identity and the fit ------------------------------------------------------------------

@given(word_tasks())
def test_score_identity_holds_in_every_context(case):
    """⟨u, f(x)⟩ = Σ c_w [log p(w|x) − log p(B|x)] + (Σc)(c + r(x)) for every context, bulk and task."""
    world, k, words, coef = case
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=k)
    fit = world_anchor_fit(ctx, bulk)
    si = score_identity(ctx.features, ctx.embeddings, bulk, words, coef, fit)
    scale = 1 + np.abs(si.lhs).max() + np.abs(si.anchor).max()
    assert si.gap <= 1e-9 * scale
    if abs(coef.sum()) < 1e-12:
        assert np.abs(si.anchor).max() <= 1e-9 * scale  # a contrast has no anchor part


@given(word_tasks())
def test_anchor_fit_matches_brute_force_least_squares(case):
    """log Z_B by an explicit sum; the fit's residual is that of the normal equations, π-mean zero."""
    world, k, _, _ = case
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=k)
    fit = world_anchor_fit(ctx, bulk)
    y = _brute_log_bulk_partition(ctx.logits, bulk)
    np.testing.assert_allclose(ctx.features @ fit.v0 + fit.c + fit.residual, y, atol=1e-9 * (1 + np.abs(y).max()))
    assert abs(ctx.weights @ fit.residual) <= 1e-9 * (1 + np.abs(y).max())
    X = np.hstack([ctx.features, np.ones((len(y), 1))])
    best = np.linalg.lstsq(X, y, rcond=None)[0]
    assert fit.mse <= np.mean((y - X @ best) ** 2) + 1e-9 * (1 + y @ y)


@given(word_tasks(), st.lists(st.sampled_from([1e-6, 1e-3, 1.0, 1e3, 1e6]), min_size=3, max_size=3))
def test_the_fit_does_not_depend_on_the_units_of_the_features(case, scales):
    """A feature column scaled by m (its embeddings by 1/m: the same logits) moves neither the fit nor R²,
    and v0 only by 1/m: which directions count as variation is decided on features of unit spread (a
    column 1e-6 the size of another was once dropped as rounding, and the fit's R² with it)."""
    world, k, _, _ = case
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=k)
    m = np.asarray(scales[: world.dim])
    fit, scaled = (anchor_fit(ctx.logits, ctx.features * s, bulk, ctx.weights) for s in (1.0, m))
    tol = 1e-9 * (1 + np.abs(ctx.logits).max())
    np.testing.assert_allclose(scaled.residual, fit.residual, atol=tol)
    assert scaled.mse == pytest.approx(fit.mse, abs=tol) and scaled.r2 == pytest.approx(fit.r2, abs=1e-6)
    # v0 by 1/m, in the directions the data determine: times each column's spread, v0's change is a change of
    # the fitted logits.  A column of entries 0 and 1e-10 (spread 5e-11) fits log Z_B's rounding: its
    # coefficient, ~1e-6, moved 0.63 relative with the units (a hunt, 2026-12-07) and no logit by 1e-16
    np.testing.assert_allclose((scaled.v0 * m - fit.v0) * ctx.features.std(0), 0.0, atol=tol)


def test_r2_is_one_when_the_log_bulk_partition_is_constant_up_to_rounding():
    """⟨(1, 1), f⟩ = 0.3 in every context, computed in floats: a spread of ~1e-17 is rounding, not a
    log Z_B the features could explain (R² once came out 0.13); 1e-9 of real spread is fitted."""
    t = np.array([0.0, 0.1, 0.7, 0.13, 0.29, 0.41, 0.53, 0.97])
    f = np.stack([0.1 + t, 0.2 - t], 1)
    bulk = np.zeros((8, 2), bool)
    bulk[:, 0] = True
    flat = anchor_fit(f @ np.array([[1.0, 0.0], [1.0, 5.0]]), f, bulk)
    assert flat.r2 == 1.0 and flat.constant_mse == 0.0 and flat.mse < 1e-30
    tiny = anchor_fit(np.stack([0.3 + 1e-9 * t**2, t], 1), f, bulk)
    assert tiny.constant_mse > 0 and 0 < tiny.r2 < 1


@given(word_tasks(), st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=3, max_size=3))
def test_a_planted_anchor_is_recovered_up_to_the_shift_ambiguity(case, v):
    """Adding v0 to every embedding adds ⟨v0, f⟩ to log Z_B: the fit moves by v0 restricted to the span of
    the centred features (the rest of v0 only moves the constant), the residual does not move at all."""
    world, k, _, _ = case
    v0 = np.asarray(v[: world.dim], np.float64)
    Z, W = np.asarray(world.representations, np.float64), np.asarray(world.word_embeddings, np.float64)
    planted = LogLinearWorld(Z, W + v0[:, None], world.next_state, world.start_state, anchor=v0)
    ctx, ctx2 = anchor_contexts(world), anchor_contexts(planted)
    bulk = bulk_mask(ctx.logp, top_k=k)
    fit, fit2 = world_anchor_fit(ctx, bulk), world_anchor_fit(ctx2, bulk)
    tol = 1e-6 * (1 + np.abs(ctx2.logits).max())
    np.testing.assert_allclose(fit2.residual, fit.residual, atol=tol)
    fc = ctx.features - ctx.weights @ ctx.features
    np.testing.assert_allclose(fc @ (fit2.v0 - fit.v0), fc @ v0, atol=tol)


def test_anchor_worlds_have_a_near_linear_log_bulk_partition():
    """A statistical claim about the random anchor worlds, on fixed seeds: seeds 0–399 measured R² median
    0.994, 5 % quantile 0.985, least 0.948 (seed 50; 2 of 400 below 0.97), angle median 7.6°, largest 23.3°.
    It was a hypothesis test of R² ≥ 0.97 on every seed, which fresh draws broke (seed 419: 0.959)."""
    fits = []
    for seed in range(200):
        ctx = anchor_contexts(LogLinearWorld.random(seed, n_states=128, n_symbols=24, dim=6, geometry="anchor"))
        fits.append(world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=3)))
    r2, angle = np.array([f.r2 for f in fits]), np.array([f.angle for f in fits])
    assert np.median(r2) >= 0.99 and np.quantile(r2, 0.05) >= 0.98 and r2.min() >= 0.94
    assert np.median(angle) <= 12.0 and angle.max() <= 30.0


def test_the_unstructured_worlds_anchor_fit_is_worse_than_the_anchor_worlds():
    """Same sizes and seeds: R² lower by ≥ 0.05 without anchor geometry.  (The residual MSE is *not*
    larger: v_w = v0 + σn_w moves log Z_B by exactly ⟨v0, f⟩, so the residual of an anchor world has the
    law of an unstructured world's; anchor geometry adds explained variance, not a smaller residual.)"""
    fits = {}
    for geometry in ("anchor", "unstructured"):
        r2, mse = [], []
        for seed in range(3):
            world = LogLinearWorld.random(seed, n_states=256, n_symbols=32, dim=8, geometry=geometry, sigma=1.0)
            ctx = anchor_contexts(world)
            fit = world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=4))
            r2.append(fit.r2), mse.append(fit.mse)
        fits[geometry] = np.mean(r2), np.mean(mse)
    assert fits["anchor"][0] >= max(0.99, fits["unstructured"][0] + 0.05)


# ---- non-identifiability and the negative constructions ---------------------------------------------

def _constructions_world(seed):
    return LogLinearWorld.random(seed, n_states=64, n_symbols=16, dim=4, n_carriers=2, carrier_gap=16.0, sigma=1.0)


@FEW
@given(st.integers(0, 2**16))
def test_n1_a_common_logit_shift_leaves_p_unchanged_and_the_task_at_chance(seed):
    ctx = anchor_contexts(_constructions_world(seed))
    n1 = n1_construction(ctx, seed)
    assert n1.eps <= 1e-6 and n1.eps == pytest.approx(0.0, abs=1e-12)
    assert n1.world_head_error == 0.0 and n1.head_error >= 0.45
    assert word_errors(ctx.logp, n1.logp_lm, ctx.weights).error.max() <= 1e-9  # the laws are the world's


@given(loglinear_worlds(max_states=4, max_symbols=4))
def test_n1_on_any_world_has_epsilon_zero_and_a_constant_readout(world):
    """On every log-linear world: the augmented world's law is the world's (checked inside), the LM without
    the task coordinate has ε = 0, its readout is constant (error = π(y = 0)) and the world's is exact."""
    ctx = anchor_contexts(world)
    n1 = n1_construction(ctx, 0)
    assert n1.eps == pytest.approx(0.0, abs=1e-12) and n1.world_head_error == 0.0
    assert n1.head_error == pytest.approx(float(ctx.weights @ ~n1.labels))


@FEW
@given(st.integers(0, 2**16))
def test_n2_a_task_carried_by_rare_words_fails_at_tiny_epsilon(seed):
    world = _constructions_world(seed)
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=2)
    n2 = n2_construction(ctx, world_anchor_fit(ctx, bulk), bulk, world.carrier_ids, seed=seed)
    assert n2.eps <= 1e-6 and n2.head_error >= 0.45 and n2.world_head_error == 0.0
    assert n2.control_eps >= 1e-2  # the same change on the two most frequent words


def test_word_errors_are_largest_on_the_words_an_lm_is_wrong_about():
    world = _constructions_world(0)
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=2)
    n2 = n2_construction(ctx, world_anchor_fit(ctx, bulk), bulk, world.carrier_ids)
    errors = word_errors(ctx.logp, n2.logp_lm, ctx.weights)
    assert set(np.argsort(-errors.error)[:2]) == set(world.carrier_ids)
    assert set(errors.order[-2:]) == set(world.carrier_ids)  # the least frequent words


def test_n2_moves_the_carrier_contrast_to_minus_bias_minus_one_so_its_head_says_zero_everywhere():
    """N2's documented construction: the carriers' logits move by ∓(score* + bias + 1)/2, so the LM's carrier
    contrast log p(c₁|x) − log p(c₂|x) is the constant −bias − 1 in every context, the head
    1[contrast + bias ≥ 0] says 0 everywhere and its error is π(y = 1) (a flipped sign, contrast −bias + 1,
    makes it say 1 everywhere)."""
    world = _constructions_world(0)
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    c1, c2 = world.carrier_ids[:2]
    n2 = n2_construction(ctx, fit, bulk, world.carrier_ids)
    task = word_task(ctx, fit, world.carrier_ids[:2], [1.0, -1.0], "rare-carrier")
    contrast = n2.logp_lm[:, c1] - n2.logp_lm[:, c2]
    np.testing.assert_allclose(contrast, np.full(len(contrast), -task.bias - 1.0), rtol=0, atol=1e-9)
    assert not (contrast + task.bias >= 0).any()
    assert n2.head_error == pytest.approx(float(ctx.weights @ n2.labels), abs=1e-12)


# ---- the transfer bound ----------------------------------------------------------------------------

@FEW  # each new (S, V) compiles the family's ε(s)
@given(word_tasks(max_symbols=3), st.sampled_from(UNDIRECTED_KINDS), st.sampled_from([1e-5, 1e-3, 0.1]),
       st.integers(0, 3))
def test_the_transfer_bound_is_never_violated_by_an_analytic_lm(case, kind, eps, seed):
    world, k, words, coef = case
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=k)
    fit = world_anchor_fit(ctx, bulk)
    try:
        logp = analytic_laws(ctx, kind, eps, seed)
    except SimlmError:  # ε unreachable by this family here (or no rare word)
        assume(False)
    task = word_task(ctx, fit, words, coef)
    residual = lm_residual(ctx, bulk, logp)
    h = head_errors(task, ctx, bulk, logp, residual, fit.residual)
    rho = float(np.abs(residual - fit.residual).max())
    for form in ("markov", "per-context"):
        b = transfer_bound(task, ctx, bulk, logp, rho, form=form)
        assert h.error <= b.bound + 1e-12
        assert b.eps == pytest.approx(exact_epsilon_rows(ctx, logp), rel=1e-9)


def _flat_world(task: str):
    """A flat world (σ = 0.3, V = 4, 64 states): its rows, bulk (top 2 out), anchor fit and one of its tasks."""
    ctx = anchor_contexts(LogLinearWorld.random(0, n_states=64, n_symbols=4, dim=3, sigma=0.3))
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    return ctx, bulk, fit, random_tasks(ctx, fit, 0)[task]


def test_the_bound_is_not_trivial_for_a_flat_world_at_small_epsilon():
    """A flat world (σ = 0.3, V = 4) and ε = 1e-5: both forms of the bound are below 1 and hold (measured:
    error 0.03, bounds 0.53 (markov) and 0.09 (per-context) for the contrast task)."""
    ctx, bulk, fit, task = _flat_world("contrast")
    logp = analytic_laws(ctx, "logit-noise", 1e-5)
    h = head_errors(task, ctx, bulk, logp, fit.residual, fit.residual)
    for form in ("markov", "per-context"):
        b = transfer_bound(task, ctx, bulk, logp, 0.0, form=form)
        assert not b.trivial and h.error <= b.bound


# ---- balanced tasks -------------------------------------------------------------------------------

@st.composite
def tied_scores(draw):
    """Scores of N rows in groups of tied rows (rows sharing a state), the groups' counts and distinct values."""
    counts = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8))
    values = sorted(draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=len(counts), max_size=len(counts),
                                  unique=True)))
    assume(len(counts) < 2 or min(np.diff(values)) > 1e-6 * (1 + max(map(abs, values))))
    return np.array(counts), np.array(values)


@given(tied_scores(), st.integers(0, 2**16))
@example((np.array([6, 6]), np.array([0.0, 1.0])), 0)  # once: every label 1
@example((np.array([1] * 12), np.arange(12.0)), 0)  # once: 5/12 of the rows positive
def test_the_balancing_bias_cuts_where_the_exact_mass_crosses_a_half(case, seed):
    """Uniform weights 1/N as :func:`anchor_contexts` gives: in exact (integer) arithmetic the negatives are
    the groups up to the first whose cumulative count reaches N/2 — or, when that is the top group, the
    groups below it — so the task is balanced whenever a balanced cut exists and constant only if every
    score is equal."""
    counts, values = case
    score = np.random.default_rng(seed).permutation(np.repeat(values, counts))
    N = score.size
    labels = score + _balancing_bias(score, np.full(N, 1.0 / N)) >= 0
    crossing = int(np.argmax(2 * np.cumsum(counts) >= N))
    last_negative = crossing if crossing + 1 < len(counts) else crossing - 1
    if last_negative < 0:
        assert labels.all()  # one score: nothing to cut
    else:
        np.testing.assert_array_equal(labels, score > values[last_negative])
    if np.any(2 * np.cumsum(counts)[:-1] == N):
        assert 2 * int(labels.sum()) == N


@pytest.mark.parametrize("n_states", [12, 14, 20])
def test_the_random_tasks_are_balanced_with_one_row_per_state(n_states):
    world = LogLinearWorld.random(0, n_states=n_states, n_symbols=6, dim=3)
    ctx = anchor_contexts(world)
    tasks = random_tasks(ctx, world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=2)), 0)
    for name, task in tasks.items():
        assert 2 * int(task.labels.sum()) == n_states, name  # distinct scores: exactly half of the states


@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=40, unique=True))
@example(list(range(12)))  # once the upper median: 6 × fl(1/12) < ½
def test_the_half_crossing_of_equal_weights_is_the_lower_median(x):
    """Where N distinct values of weights 1/N cross ½ (the balancing cut's lower side) is the ⌈N/2⌉-th
    smallest: x ≥ it for ⌊N/2⌋ + 1."""
    x = np.array(x, np.float64) / 7
    xs, k = _half_crossing(x, np.full(x.size, 1.0 / x.size))
    assert int(np.sum(x >= xs[k])) == x.size // 2 + 1


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_input_raises_typed_errors_naming_the_argument():
    world = LogLinearWorld.random(0, n_states=8, n_symbols=6, dim=3)
    ctx = anchor_contexts(world)
    with pytest.raises(ConfigError, match="world"):
        anchor_contexts(HMM.random(0, n_states=2, n_symbols=3))
    with pytest.raises(ConfigError, match="exactly one"):
        bulk_mask(ctx.logp, top_k=2, threshold=0.1)
    with pytest.raises(ConfigError, match="top_k"):
        bulk_mask(ctx.logp, top_k=6)
    with pytest.raises(ConfigError, match="words"):
        bulk_mask(ctx.logp, words=[7])
    with pytest.raises(ConfigError, match="empty bulk"):
        bulk_mask(ctx.logp, threshold=1e-12)
    with pytest.raises(ShapeError, match="logits"):
        anchor_fit(ctx.logits, ctx.features[:3], bulk_mask(ctx.logp, top_k=1))
    with pytest.raises(ConfigError, match="logits"):
        anchor_fit(np.full_like(ctx.logits, np.nan), ctx.features, bulk_mask(ctx.logp, top_k=1))
    bulk = bulk_mask(ctx.logp, top_k=1)
    task = random_tasks(ctx, world_anchor_fit(ctx, bulk), 0)
    with pytest.raises(ConfigError, match="form"):
        transfer_bound(task["anchored"], ctx, bulk, ctx.logp, 0.0, form="chernoff")
    with pytest.raises(ConfigError, match="head"):
        head_errors(task["latent"], ctx, bulk, ctx.logp, np.zeros(8), np.zeros(8))
    with pytest.raises(ConfigError, match="carriers"):
        n2_construction(ctx, world_anchor_fit(ctx, bulk), bulk, world.carrier_ids)
    with pytest.raises(ConfigError, match="words"):
        word_task(ctx, world_anchor_fit(ctx, bulk), [0, 9], [1.0, 1.0])
    # named as given, not as the 'words' of the helper they reach (ids out of range, repeated or not integers)
    for bad in ([0, 99], [1, 1], [1.0, 2.0], "ab"):
        with pytest.raises(ConfigError, match="^rare_words: expected distinct word ids"):
            random_tasks(ctx, world_anchor_fit(ctx, bulk), 0, rare_words=bad)
        with pytest.raises(ConfigError, match="^carriers: expected distinct word ids"):
            n2_construction(ctx, world_anchor_fit(ctx, bulk), bulk, bad)
    with pytest.raises(ConfigError, match="eps"):
        analytic_laws(ctx, "logit-noise", -1.0)


def test_a_rho_or_law_that_would_fake_a_certificate_is_refused():
    """A NaN ρ made every ``m <= csum·ρ`` false and ``min(γ/2, nan)`` γ/2: the margin term dropped out and
    a flat world's anchored head (error 1/32) got a bound of 0.  Every input that could do that is refused."""
    ctx, bulk, fit, task = _flat_world("anchored")
    logp = analytic_laws(ctx, "logit-noise", 1e-3)
    residual = lm_residual(ctx, bulk, logp)
    rho = float(np.abs(residual - fit.residual).max())
    error = head_errors(task, ctx, bulk, logp, residual, fit.residual).error
    assert error > 0 and transfer_bound(task, ctx, bulk, logp, rho, form="per-context").bound >= error
    for bad in (float("nan"), -1000.0, float("inf")):
        with pytest.raises(ConfigError, match="^rho"):
            transfer_bound(task, ctx, bulk, logp, bad, form="per-context")
    # rows that are not probability laws: one task word's log-probability raised by 3 (KL < 0 read as ε = 0,
    # a markov bound of 0 under a head error of ½) or lowered by 3
    raised, lowered = ctx.logp.copy(), ctx.logp.copy()
    raised[:, task.words[0]] += 3.0
    lowered[:, task.words[0]] -= 3.0
    for bad, error_type in ((np.full_like(logp, np.nan), ConfigError), (logp[:, :3], ShapeError),
                            (raised, DistributionError), (lowered, DistributionError)):
        with pytest.raises(error_type, match="^logp_lm"):
            transfer_bound(task, ctx, bulk, bad, rho)
        with pytest.raises(error_type, match="^logp_lm"):
            head_errors(task, ctx, bulk, bad, residual, fit.residual)
        with pytest.raises(error_type, match="^logp_lm"):
            exact_epsilon_rows(ctx, bad)
        with pytest.raises(error_type, match="^logp_lm"):
            lm_residual(ctx, bulk, bad)
    with pytest.raises(ConfigError, match="^residual_lm"):
        head_errors(task, ctx, bulk, logp, np.full_like(residual, np.nan), fit.residual)
    with pytest.raises(ShapeError, match="^residual_star"):
        head_errors(task, ctx, bulk, logp, residual, np.zeros(3))
    with pytest.raises(ShapeError, match="^labels"):
        probe_error(ctx.features, np.ones(3, bool))
    with pytest.raises(ConfigError, match="^n_words"):
        random_tasks(ctx, fit, 0, n_words=10)


def test_an_empty_bulk_row_is_refused_wherever_a_bulk_is_read():
    """An empty B(x) has log p(B|x) = −inf: the fit's R² read 1.0 (a NaN variance), the oracle's head error
    0.125 and γ silently dropped the bulk's floor."""
    world = LogLinearWorld.random(0, n_states=8, n_symbols=6, dim=3)
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    task = random_tasks(ctx, fit, 0)["anchored"]
    empty = bulk.copy()
    empty[0] = False
    for call in (lambda b: anchor_fit(ctx.logits, ctx.features, b),
                 lambda b: head_errors(task, ctx, b, ctx.logp, fit.residual, fit.residual),
                 lambda b: transfer_bound(task, ctx, b, ctx.logp, 0.0)):
        call(bulk)
        with pytest.raises(ConfigError, match="^bulk: context 0 has an empty bulk"):
            call(empty)
        with pytest.raises(ShapeError, match="^bulk"):
            call(bulk[:, :3])


def test_the_markov_tail_of_a_tiny_floor_is_one_not_a_zero_division():
    """γ ≈ 1e-170 (a rare carrier at gap 400) gave t² = 0 and a ZeroDivisionError that ended a sweep."""
    assert markov_tail(1e-170, 1e-3) == 1.0 and markov_tail(0.0, 0.0) == 1.0 and markov_tail(0.0, 1e-3) == 1.0
    assert markov_tail(-0.1, 0.01) == 1.0  # P(TV ≥ −0.1) = 1: it read 0.5 (a review, 2026-12-06)
    assert markov_tail(0.1, 1e-4) == pytest.approx(min(math.sqrt(5e-5) / 0.1, 1e-4 / 0.02))
    world = LogLinearWorld.random(0, n_states=8, n_symbols=6, dim=3, n_carriers=2, carrier_gap=400.0)
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    task = random_tasks(ctx, fit, 0, rare_words=world.carrier_ids)["rare-carrier"]
    logp = analytic_laws(ctx, "logit-noise", 1e-3)
    b = transfer_bound(task, ctx, bulk, logp, 0.0)
    assert b.gamma < 1e-150 and b.bound >= 1.0 and b.trivial


@pytest.mark.parametrize("t", [1e-100, 1e-3, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-3, 1.0, 10.0])
def test_a_markov_tail_is_a_probability_never_above_one(t, eps):
    """P(TV ≥ t) ≤ min(√(ε/2)/t, ε/(2t²), 1): a probability, so at most 1 (t = 0.01, ε = 1 read 70.7, the
    smaller quotient), and either quotient where it is below 1."""
    q = min(math.sqrt(eps / 2) / t, eps / (2 * t * t))
    assert 0.0 <= markov_tail(t, eps) <= 1.0
    assert markov_tail(t, eps) == (1.0 if q >= 1 else pytest.approx(q, rel=1e-12))


@pytest.mark.parametrize("V, d", [(2, 3), (3, 4), (16, 4)])
def test_the_readout_is_exact_on_the_world_only_when_its_direction_is_readable(V, d):
    """q is the least-squares readout of ⟨u*, f*⟩ from log p*: exact when u* is in the row space of
    V*(I − 11ᵀ/V) (V − 1 ≥ d here), and then the world's own readout error is 0; with V − 1 < d the world's
    readout errs too, which the check reports beside the LM's (``world_error``)."""
    world = LogLinearWorld.random(0, n_states=16, n_symbols=V, dim=d)
    ctx = anchor_contexts(world)
    task = random_tasks(ctx, world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=1)), 0)["latent"]
    own = readout_error(task, ctx, ctx.logp)
    assert (own == 0.0) == (V - 1 >= d)


def test_the_angle_is_none_where_it_is_undefined():
    world = LogLinearWorld.random(0, n_states=1, n_symbols=5, dim=3)  # one context: f does not vary
    ctx = anchor_contexts(world)
    assert world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=1)).angle is None
    ctx = anchor_contexts(LogLinearWorld.random(0, n_states=8, n_symbols=6, dim=3))
    bulk = bulk_mask(ctx.logp, top_k=1)
    assert 0 <= world_anchor_fit(ctx, bulk).angle < 90
    assert anchor_fit(ctx.logits, ctx.features, bulk, planted=np.zeros(3)).angle is None  # no direction


# ---- the experiment as the sweep of its shipped config -------------------------------------------------

def test_the_experiment_is_the_sweep_of_its_shipped_config():
    from simlm.experiments import anchors
    from simlm.experiments.sweep import load_config, parse_config

    assert anchors.load_shipped() == anchors.sweep_config()
    assert load_config(anchors.shipped_config()) == parse_config(anchors.sweep_config())


def test_the_quick_runs_summary_and_figure_come_from_its_stored_rows(tmp_path, monkeypatch):
    """The command's anchors.json is the summary of the rows stored in its directory, written under the
    sweep's lock (after it, a rerun let in meanwhile could have its newer files overwritten), and a rerun
    computes no cell again."""
    import json

    from locking import probe_writes
    from simlm.experiments import anchors
    from simlm.experiments.sweep import parse_config, read_results, run_sweep
    from simlm.jsonio import jsonable

    seen = probe_writes(monkeypatch, anchors, tmp_path)
    first = anchors.command(["--quick", "--out", str(tmp_path)])
    assert seen == [True]
    stored = json.loads((tmp_path / "anchors.json").read_text())
    assert stored == json.loads(json.dumps(jsonable(first)))
    assert not first["errors"] and (tmp_path / "anchors.png").stat().st_size > 0
    again = anchors.summarise(read_results(tmp_path))
    assert {k: stored[k] for k in again} == json.loads(json.dumps(jsonable(again)))
    assert json.loads((tmp_path / "summary.json").read_text())["new_cells"] > 0
    assert run_sweep(parse_config(anchors.sweep_config(quick=True)), tmp_path, progress=False)["new_cells"] == 0


def test_the_summarys_worst_slack_is_taken_over_the_rows_that_could_fail():
    """A trivial row cannot fail: its share of the slack is not the bound's worst, as in the sweep's report."""
    from simlm.experiments import anchors
    from simlm.experiments.registry import row

    shared = {"world": "anchor", "lm_seed": 0, "eps": 0.1}
    rows = [{**shared, "lm": "logit-noise@0.1", **row("anchored:head_error", 0.5, 1.0, maximum=1.0)},  # trivial
            {**shared, "lm": "temperature@0.1", **row("anchored:head_error", 0.1, 0.4, maximum=1.0)}]
    bound = anchors.summarise(rows)["bound@markov"]
    assert bound["worst_slack_used"] == 0.25 and bound["worst"]["lm"] == "temperature@0.1"
    only_trivial = anchors.summarise(rows[:1])["bound@markov"]
    assert only_trivial["worst_slack_used"] is None and only_trivial["worst"] is None


@pytest.mark.parametrize("n", [12, 14, 20, 100])
def test_half_of_n_equal_masses_is_reached_at_the_middle_row(n):
    """The shared crossing (balancing bias, median, the constructions' H₊): n/2 rows hold exactly ½."""
    from simlm.theory.anchor_constructions import _half
    from simlm.theory.anchors import half_index

    assert half_index(np.cumsum(np.full(n, 1 / n))) == n // 2 - 1
    ctx = type("Ctx", (), {"states": np.arange(n), "weights": np.full(n, 1 / n)})()
    assert len(_half(ctx, np.random.default_rng(0))) == n // 2


# ---- the sweep check wu/anchors on one small cell ---------------------------------------------------

def _anchor_cell(eps):
    """A flat world (σ = 0.3, V = 8, 64 states, two carriers), 8 × 8 held-out tokens and the check's cell with
    the oracle (``eps`` None: a softmax LM, read through its own f and Φ) or an analytic logit-noise LM at
    ``eps`` (known by its laws only).  Returns the check's rows and, as its docstring defines them, the rows
    ctx, bulk, world fit, the LM's laws (n, V), its anchor residual and the tasks."""
    world = LogLinearWorld.random(0, n_states=64, n_symbols=8, dim=3, sigma=0.3, n_carriers=2, carrier_gap=8.0)
    x = np.asarray(world.sample(0, 8, 8))
    lm = WorldLM(world) if eps is None else perturbed_lm(world, eps, "logit-noise", 0, tokens=x)
    options = {"top_k": 2, "n_words": 2, "task_seed": 0, "n_label": 16}
    cell = Cell(world, {"kind": "loglinear"}, lm, {"source": "analytic", "laws": ["next-token"]}, x, options, 0)
    rows = anchors_check(cell)  # the check wu/anchors
    ctx = anchor_contexts(world, x)
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    logp = ctx.logp if eps is None else log_softmax(np.asarray(lm.next_token_logprobs(x), np.float64).reshape(-1, 8))
    if eps is None:
        f = np.asarray(lm.features(x), np.float64).reshape(len(ctx.weights), -1)
        r_lm = anchor_fit(f @ np.asarray(lm.unembedding, np.float64), f, bulk, ctx.weights).residual
    else:
        r_lm = lm_residual(ctx, bulk, logp)
    tasks = random_tasks(ctx, fit, 0, n_words=2, rare_words=world.carrier_ids)
    return rows, ctx, bulk, fit, logp, r_lm, tasks


@pytest.mark.parametrize("eps", [None, 0.1])
def test_the_checks_head_error_is_the_anchored_heads_error_not_the_zero_shot_one(eps):
    """``<task>:head_error`` measures the anchored head (HeadErrors.error): π·1[prob_LM + Σc(c* + r_LM) + bias
    ≥ 0 ≠ y], by brute force; for the oracle it is 0 in both forms (labels are the world's own head), and so
    is the zero-shot head's (its score cut where its π-mass crosses ½, the rule that cut the labels; it was
    π(contexts at the median) when the head took score ≥ median); at ε = 0.1 the two heads differ."""
    rows, ctx, bulk, fit, logp, r_lm, tasks = _anchor_cell(eps)
    heads = [r for r in rows if ":head_error" in r["quantity"] and not r["quantity"].startswith("worst-case:")]
    assert len(heads) == 6
    for r in heads:
        task = tasks[r["quantity"].split(":")[0]]
        c = task.coef
        score = _brute_prob_part(logp, bulk, task.words, c) + float(np.sum(c)) * (fit.c + r_lm) + task.bias
        assert r["measured"] == pytest.approx(_brute_error(score, task.labels, ctx.weights), abs=1e-12), r["quantity"]
        if eps is None:
            assert r["measured"] == 0.0
    if eps is None:  # the world's own label-free head: its score cut by the rule that made the labels
        assert max(r["zero_shot_error"] for r in heads) == 0
    else:
        assert any(r["measured"] != r["zero_shot_error"] for r in heads)


@pytest.mark.parametrize("eps", [None, 1e-4])
def test_each_head_row_names_its_bounds_form_and_is_trivial_only_at_the_largest_error(eps):
    """The row ``<task>:head_error`` carries the ``markov`` bound and ``<task>:head_error@per-context`` the
    ``per-context`` one (its ``form`` column says which, the bound is transfer_bound's of that form), and a
    row is trivial exactly when it holds with a bound ≥ 1, the largest error there is (a bound of 0.53 is
    not trivial)."""
    rows, ctx, bulk, fit, logp, r_lm, tasks = _anchor_cell(eps)
    heads = [r for r in rows if ":head_error" in r["quantity"] and not r["quantity"].startswith("worst-case:")]
    for r in heads:
        name, _, suffix = r["quantity"].partition(":head_error")
        assert r["form"] == ("per-context" if suffix == "@per-context" else "markov") and suffix in ("", "@per-context")
        b = transfer_bound(tasks[name], ctx, bulk, logp, form=r["form"], residual_lm=r_lm, residual_star=fit.residual)
        assert r["bound"] == pytest.approx(b.bound, rel=1e-12, abs=1e-300)
        assert r["trivial"] == (r["measured"] <= r["bound"] and r["bound"] >= 1.0 and r["measured"] <= 1.0)
    bounds = {r["quantity"]: r["bound"] for r in heads}
    if eps is None:  # the oracle's laws are the world's exactly (not its float32 ones: markov read 9.8e-8 here,
        # and on a rare-carrier task of γ ~ 1e-10, 1.0 — trivial): ε = 0, and every bound 0 in both forms
        assert set(bounds.values()) == {0.0} and max(r["eps_rows"] for r in heads) == 0.0
    else:  # the cases that tell the forms apart (and a largest error of ½ from 1): a per-context bound of 0.53
        assert any(bounds[q] != bounds[q + "@per-context"] for q in bounds if "@" not in q)
        assert any(0.5 <= b < 1.0 for b in bounds.values())


@pytest.mark.parametrize("eps", [None, 0.1])
def test_the_check_builds_the_worst_lm_at_each_lms_eps_and_reports_its_share_of_each_bound(eps):
    """``worst-case:<task>:head_error[@per-context]``: the LM of worst_case_lm at the cell LM's ε on the rows
    (its own rows, named ``adversarial-flips@ε``) against both forms of its bound — how much of the slack an
    LM at that ε can use, which the cell's own LM (a random perturbation) says nothing about.  It never
    violates, and on this flat world at ε = 0.1 it flips contexts until the per-context bound is nearly met;
    the oracle (ε = 0) gets none."""
    rows, ctx, bulk, fit, logp, r_lm, tasks = _anchor_cell(eps)
    worst = [r for r in rows if r["quantity"].startswith("worst-case:")]
    if eps is None:
        assert worst == []
        return
    own = next(r for r in rows if r["quantity"] == "anchored:head_error")
    # each at most the LM's ε: less only where every context that can flip is flipped (error 1)
    assert len(worst) == 6 and all(r["lm"] == f"adversarial-flips@{r['eps']:.6g}" for r in worst)
    assert all(r["holds"] and (r["eps"] == pytest.approx(own["eps_rows"], rel=1e-6) or
                               (r["eps"] < own["eps_rows"] and r["measured"] == 1.0)) for r in worst)
    for r in worst:
        name = r["quantity"].split(":")[1]
        wc = worst_case_lm(tasks[name], ctx, bulk, own["eps_rows"])
        assert r["measured"] == wc.error and r["bound"] == wc.bounds[r["form"]].bound
        assert r["flipped_mass"] == pytest.approx(float(ctx.weights @ wc.flipped), abs=1e-15)
    shares = [r["slack_used"] for r in worst if r["form"] == "per-context" and not r["trivial"]]
    assert shares and max(shares) > 0.9


def test_a_law_only_lms_anchor_fit_reads_its_laws_in_the_worlds_space():
    """For an LM known by its laws the ``anchor_*`` rows fit log Z_B of its logits in the world's gauge,
    ⟨v*_w, f*⟩ + log p − log p*, i.e. log p_LM(B|x) + log Z*(x), on the world's features f* (least squares
    with a constant over the directions in which the unit-spread features vary, brute force here): for a
    noisy LM they are not the world's own fit (``world_*``)."""
    rows, ctx, bulk, _, logp, _, _ = _anchor_cell(0.1)
    log_z = np.array([math.log(sum(math.exp(z) for z in r)) for r in ctx.logits])
    y = np.log(np.where(bulk, np.exp(logp), 0.0).sum(1)) + log_z
    y = y - y.mean()
    f = ctx.features - ctx.features.mean(0)
    u, s, _ = np.linalg.svd(f / np.sqrt(np.mean(f**2, 0)), full_matrices=False)
    u = u[:, s > 1e-5 * s.max()]  # the library's rcond: a direction of spread 1e-5 is rounding, not a feature
    resid = y - u @ (u.T @ y)
    mse = float(np.mean(resid**2))
    got = {r["quantity"]: r for r in rows}
    assert got["anchor_mse"]["reading"] == "world-space"
    assert got["anchor_mse"]["measured"] == pytest.approx(mse, rel=1e-6)
    assert got["anchor_r2"]["measured"] == pytest.approx(1.0 - mse / float(np.mean(y**2)), rel=1e-9)
    assert got["anchor_max_residual"]["measured"] == pytest.approx(np.abs(resid).max(), rel=1e-6)
    assert got["anchor_mse"]["world_mse"] != pytest.approx(mse, rel=0.05)


def test_the_summary_reads_err_over_root_eps_violations_and_the_worst_row_over_every_row():
    """Three markov rows of one world: logit-noise at ε = 0.1 (0.1 ≤ 0.4) and 0.01 (0.5 > 0.4, violated),
    stored in that order, and the oracle (0 ≤ 0.2).  The ε curve is sorted by ε with err/√ε; one row is
    violated; the worst share of the slack is the violated row's 1.25; the non-trivial rows listed are the
    ones the counts count, the oracle's too (left out before, while counted: a review, 2026-12-06)."""
    shared = {"world": "anchor", "lm_seed": 0}
    rows = [{**shared, "lm": "logit-noise@0.1", "eps": 0.1, **row("anchored:head_error", 0.1, 0.4, maximum=1.0)},
            {**shared, "lm": "logit-noise@0.01", "eps": 0.01, **row("anchored:head_error", 0.5, 0.4, maximum=1.0)},
            {**shared, "lm": "oracle", "eps": 0.0, **row("anchored:head_error", 0.0, 0.2, maximum=1.0)}]
    out = summarise(rows)
    curve = out["anchor|anchored|logit-noise"]
    assert curve["eps"] == [0.01, 0.1] and curve["error"] == [0.5, 0.1]
    assert curve["err_over_sqrt_eps"] == pytest.approx([0.5 / math.sqrt(0.01), 0.1 / math.sqrt(0.1)], rel=1e-12)
    bound = out["bound@markov"]
    assert bound["rows"] == 3 and bound["violated"] == 1 and bound["trivial"] == 0
    assert bound["worst_slack_used"] == pytest.approx(1.25) and bound["worst"]["lm"] == "logit-noise@0.01"
    assert sorted(r["lm"] for r in bound["nontrivial"]) == ["logit-noise@0.01", "logit-noise@0.1", "oracle"]


def test_the_checks_latent_readout_and_probe_rows_read_the_lms_laws():
    """``latent:readout_error`` is the world's readout moved to the LM's laws (``world_error`` the world's own),
    ``<task>:probe_error`` a probe on the LM's centred log-laws: by the theory functions, for a noisy LM whose
    numbers differ from the world's (either row computed from the other's laws passed every test)."""
    rows, ctx, _, _, logp, _, tasks = _anchor_cell(0.1)
    got = {r["quantity"]: r for r in rows}
    lm_err, world_err = readout_error(tasks["latent"], ctx, logp), readout_error(tasks["latent"], ctx, ctx.logp)
    assert lm_err != world_err
    assert got["latent:readout_error"]["measured"] == pytest.approx(lm_err, abs=1e-12)
    assert got["latent:readout_error"]["world_error"] == pytest.approx(world_err, abs=1e-12)
    feats = logp - logp.mean(1, keepdims=True)
    for name, task in tasks.items():
        want = probe_error(feats, task.labels, ctx.weights, n_label=16, seed=0)
        assert got[f"{name}:probe_error"]["measured"] == pytest.approx(want, abs=1e-12), name


def test_the_anchor_summary_lists_only_the_trained_lms_block_fits():
    """``trained_anchor_r2`` lists the trained LMs' block fits, not every LM's anchor_r2 row (the quick run's
    summary was compared with itself)."""
    rows = [{"world": "anchor", "lm": "logit-noise@0.1", "lm_seed": 0, "eps": 0.1, **row("anchor_r2", 0.9)},
            {"world": "anchor", "lm": "oracle", "lm_seed": 0, "eps": 0.0, **row("anchor_r2", 1.0)},
            {"world": "small", "lm": "trained@0.1", "lm_seed": 0, "eps": 0.08, **row("block1:anchor_r2", 0.7)}]
    assert summarise(rows)["trained_anchor_r2"] == [{"lm": "trained@0.1", "eps": 0.08, "quantity": "block1:anchor_r2",
                                                     "measured": 0.7}]


def test_the_bound_counts_are_over_the_bounded_head_error_rows_only():
    """The bound's row counts are over the head_error rows that carry a bound (every row counted read 150 for
    30 on the quick run, and passed)."""
    shared = {"world": "anchor", "lm_seed": 0}
    rows = [{**shared, "lm": "logit-noise@0.1", "eps": 0.1, **row("anchored:head_error", 0.1, 0.4, maximum=1.0)},
            {**shared, "lm": "logit-noise@0.01", "eps": 0.01, **row("anchored:head_error", 0.5, 0.4, maximum=1.0)},
            {**shared, "lm": "temperature@0.1", "eps": 0.1, **row("contrast:head_error", 0.3)},  # no bound
            {**shared, "lm": "logit-noise@0.1", "eps": 0.1, **row("anchor_r2", 0.9)}]
    bound = summarise(rows)["bound@markov"]
    assert (bound["rows"], bound["violated"], bound["trivial"]) == (2, 1, 0)
    assert sorted(r["lm"] for r in bound["nontrivial"]) == ["logit-noise@0.01", "logit-noise@0.1"]
