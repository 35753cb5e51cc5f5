"""Regression tests for two numbers a mutation review found unpinned: ``HeadErrors.probability_error`` (and its
siblings) read with an LM whose anchor residual differs from the world's (r_LM ≠ r*), and ``WorstCase.tv_share``
in the tight world, against its analytic value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simlm.theory.anchor_constructions import analytic_laws, flip_costs, lm_residual, tight_world, worst_case_lm
from simlm.theory.anchors import anchor_contexts, bulk_mask, head_errors, random_tasks, word_task, world_anchor_fit
from simlm.worlds import LogLinearWorld


def _brute_prob_part(logp, bulk, words, coef) -> np.ndarray:
    """Σ_{w∈S} c_w [log p(w|x) − log p(B(x)|x)], one context at a time with math.log / math.exp."""
    out = []
    for row, mask in zip(np.asarray(logp, np.float64), bulk):
        log_pb = math.log(sum(math.exp(z) for z, b in zip(row, mask) if b))
        out.append(sum(float(c) * (row[w] - log_pb) for w, c in zip(words, coef)))
    return np.array(out)


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
    anchor_error = π·1[prob* + Σc(c* + r_LM) + bias ≥ 0 ≠ y], zero_shot_error = π·1[full ≥ π-median(full) ≠ y]
    with full = prob_LM + Σc r_LM."""
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
    log_zb = np.array([math.log(sum(math.exp(z) for z, b in zip(row, mask) if b)) for row, mask in zip(ctx.logits, bulk)])
    r_star = log_zb - ctx.features @ fit.v0 - fit.c
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
    assert h.zero_shot_error == pytest.approx(_brute_error(full - _brute_lower_median(full, w), y, w), abs=1e-12)
    # the fields can tell the residuals apart on this world: swapping r_LM and r* moves them
    assert _brute_error(prob_lm + sc * (fit.c + r_lm) + task.bias, y, w) != h.probability_error
    assert _brute_error(prob_star + sc * (fit.c + r_star) + task.bias, y, w) != h.anchor_error


def test_worst_case_tv_share_in_the_tight_world_is_its_analytic_value():
    """Pins WorstCase.tv_share = max over the flipped contexts of t(margin_x)/TV_x in the tight world (m = ½, γ = ¼,
    two states, π = ½ each) at ε = KL of A's cheapest flip × π_A: only A flips, by moving a fraction tanh(m/2) of
    the task word's mass γ onto the bulk word, so TV_A = γ tanh(m/2) (checked from the laws) and
    tv_share = (γm/4)/TV_A = m/(4 tanh(m/2)) ≈ 0.5104 (a halved tv_share survived every other test)."""
    m, gamma = 0.5, 0.25
    world, words, coef, bulk_words = tight_world(m, gamma, 2)
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, words=bulk_words)
    task = word_task(ctx, world_anchor_fit(ctx, bulk), words, coef)
    eps = float(flip_costs(task, ctx, bulk).kl[0]) / 2
    wc = worst_case_lm(task, ctx, bulk, eps)
    assert wc.flipped.tolist() == [True, False]
    tv_a = 0.5 * float(np.abs(np.exp(wc.logp_lm[0]) - np.exp(ctx.logp[0])).sum())
    assert tv_a == pytest.approx(gamma * math.tanh(m / 2), rel=1e-6)
    assert wc.tv[0] == pytest.approx(tv_a, rel=1e-9)
    assert wc.tv_share == pytest.approx((gamma * m / 4) / tv_a, rel=1e-6)
    assert wc.tv_share == pytest.approx(m / (4 * math.tanh(m / 2)), rel=1e-6)
