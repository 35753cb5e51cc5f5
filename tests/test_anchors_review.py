"""Review of the anchor-vector code (Wu, Lee & Ge, NeurIPS 2023): laws that are not laws, tasks read on
the wrong rows, a ρ that does not cover the residuals, and R² of a constant in the log-partition fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simlm.errors import ConfigError, DistributionError, ShapeError
from simlm.theory.anchor_bound import per_context_tail, transfer_bound
from simlm.theory.anchor_constructions import analytic_laws, exact_epsilon_rows, lm_residual
from simlm.theory.anchors import (AnchorTask, _balancing_bias, anchor_contexts, anchor_fit, bulk_mask, half_index,
                                  head_errors, random_tasks, readout_error, word_task, world_anchor_fit)
from simlm.theory.log_partition import log_partition_fit
from simlm.models import perturbed_lm
from simlm.worlds import LogLinearWorld
from test_anchor_adversary import _tight


def _flat(seed=0, n_states=64):
    ctx = anchor_contexts(LogLinearWorld.random(seed, n_states=n_states, n_symbols=4, dim=3, sigma=0.3))
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    return ctx, bulk, fit, random_tasks(ctx, fit, 0)


# ---- laws that do not sum to 1 ----------------------------------------------------------------------

def test_a_raised_task_word_no_longer_reads_as_epsilon_zero():
    """The reviewer's case: one task word's log-probability raised by 3 without renormalising gave KL < 0,
    read as ε = 0 and a markov bound of 0 against a head error of ½ — a false certificate.  Refused now by
    every function that reads the LM's laws, naming ``logp_lm``."""
    ctx, bulk, fit, tasks = _flat()
    task = tasks["contrast"]
    lp = ctx.logp.copy()
    lp[:, task.words[np.argmax(task.coef)]] += 3.0
    for call in (lambda: transfer_bound(task, ctx, bulk, lp, 0.0), lambda: exact_epsilon_rows(ctx, lp),
                 lambda: head_errors(task, ctx, bulk, lp, fit.residual, fit.residual),
                 lambda: lm_residual(ctx, bulk, lp), lambda: readout_error(tasks["latent"], ctx, lp)):
        with pytest.raises(DistributionError, match="^logp_lm"):
            call()


def test_rows_off_by_rounding_are_read_as_their_renormalised_law():
    """A row whose log Σ p is 1e-9 (rounding) is accepted: ε, the bound and the head are those of the
    renormalised law."""
    ctx, bulk, fit, tasks = _flat()
    task = tasks["anchored"]
    logp = analytic_laws(ctx, "logit-noise", 1e-3)
    off = logp + 1e-9
    assert exact_epsilon_rows(ctx, off) == pytest.approx(exact_epsilon_rows(ctx, logp), rel=1e-6)
    for form in ("markov", "per-context"):
        assert transfer_bound(task, ctx, bulk, off, 0.0, form=form).bound == \
            pytest.approx(transfer_bound(task, ctx, bulk, logp, 0.0, form=form).bound, rel=1e-6)


# ---- a task read on other rows ------------------------------------------------------------------------

def test_a_task_built_on_other_rows_is_refused_by_name():
    """Another world of the same size was scored silently against the first world's labels (head error 0,
    bound 0); one of another size met numpy's raw broadcast and matmul errors."""
    ca, ba, _, ta = _flat(0, 16)
    cb, bb, fb, _ = _flat(1, 16)
    cc, bc, fc, _ = _flat(1, 9)
    for task in (ta["anchored"], ta["contrast"]):
        with pytest.raises(ConfigError, match="^task: .*other contexts"):
            head_errors(task, cb, bb, cb.logp, fb.residual, fb.residual)
        with pytest.raises(ConfigError, match="^task: .*other contexts"):
            transfer_bound(task, cb, bb, cb.logp, 0.0)
        with pytest.raises(ShapeError, match="^task"):
            head_errors(task, cc, bc, cc.logp, fc.residual, fc.residual)
        with pytest.raises(ShapeError, match="^task"):
            transfer_bound(task, cc, bc, cc.logp, 0.0)
    with pytest.raises(ConfigError, match="^task: .*other contexts"):
        readout_error(ta["latent"], cb, cb.logp)
    with pytest.raises(ShapeError, match="^task"):
        readout_error(ta["latent"], cc, cc.logp)
    # the same rows built again are the same rows
    again = anchor_contexts(LogLinearWorld.random(0, n_states=16, n_symbols=4, dim=3, sigma=0.3))
    assert transfer_bound(ta["anchored"], again, ba, again.logp, 0.0).bound == \
        transfer_bound(ta["anchored"], ca, ba, ca.logp, 0.0).bound


def test_a_task_built_by_hand_without_a_fingerprint_is_still_accepted():
    ctx, bulk, fit, tasks = _flat(0, 16)
    t = tasks["anchored"]
    by_hand = AnchorTask(t.name, t.direction, t.words, t.coef, t.score, t.bias, t.labels, t.margin)
    assert by_hand.rows is None
    assert head_errors(by_hand, ctx, bulk, ctx.logp, fit.residual, fit.residual).error == 0.0


# ---- ρ and the residuals --------------------------------------------------------------------------------

def test_rho_is_read_from_the_residuals_and_a_smaller_one_is_refused():
    """An LM whose anchor residual differs from the world's: with ρ = 0 the bound (per-context) is below
    the head's error; given the residuals, transfer_bound computes ρ = max |Δr| (and covers the error) or
    refuses a ρ below it."""
    ctx, bulk, fit, tasks = _flat()
    task = tasks["anchored"]
    logp = analytic_laws(ctx, "logit-noise", 1e-5)
    residual_lm = fit.residual + np.where(task.labels, -1.0, 1.0) * 3 * task.margin.max() / abs(task.coef.sum())
    error = head_errors(task, ctx, bulk, logp, residual_lm, fit.residual).error
    assert error == 1.0
    assert transfer_bound(task, ctx, bulk, logp, 0.0, form="per-context").bound < error  # the caller's ρ = 0
    needed = float(np.abs(residual_lm - fit.residual).max())
    for form in ("markov", "per-context"):
        b = transfer_bound(task, ctx, bulk, logp, form=form, residual_lm=residual_lm, residual_star=fit.residual)
        assert b.rho == needed and error <= b.bound
        assert transfer_bound(task, ctx, bulk, logp, 2 * needed, form=form, residual_lm=residual_lm,
                              residual_star=fit.residual).rho == 2 * needed
    with pytest.raises(ConfigError, match="^rho: 0.0 is below"):
        transfer_bound(task, ctx, bulk, logp, 0.0, residual_lm=residual_lm, residual_star=fit.residual)
    with pytest.raises(ConfigError, match="^residual_lm, residual_star"):
        transfer_bound(task, ctx, bulk, logp, residual_lm=residual_lm)
    with pytest.raises(ConfigError, match="^rho"):
        transfer_bound(task, ctx, bulk, logp)
    with pytest.raises(ShapeError, match="^residual_star"):
        transfer_bound(task, ctx, bulk, logp, residual_lm=residual_lm, residual_star=np.zeros(3))


# ---- the bound's pieces: its tail, its threshold t(m), its ε ------------------------------------------------

def test_the_per_context_tail_counts_a_tv_equal_to_the_threshold():
    """P_π(TV(x) ≥ t), non-strict: TV = (.1, .05), π = (½, ½) at t = 0.1 is ½ (a strict > read 0), and at
    every t it is the π-mass of the rows with TV ≥ t."""
    tv, w = np.array([0.1, 0.05]), np.array([0.5, 0.5])
    assert per_context_tail(0.1, 0.0, tv, w) == 0.5
    for t, want in ((0.0, 1.0), (0.05, 1.0), (0.07, 0.5), (0.1 + 1e-12, 0.0)):
        assert per_context_tail(t, 0.0, tv, w) == want


@pytest.mark.parametrize("margin, gamma, rho, t_want", [
    (0.5, 0.25, 0.1, 0.25 * (0.5 - 0.1) / 4),  # γ(m − |Σc|ρ)/(4‖c‖₁) = 0.025 < γ/2 = 0.125 binds
    (2.5, 0.005, 0.1, 0.005 / 2),  # γ/2 = 0.0025 < γ(m − |Σc|ρ)/(4‖c‖₁) = 0.003 binds
])
def test_the_tail_is_asked_at_the_threshold_of_the_module_docstring(margin, gamma, rho, t_want):
    """t(m) = min(γ/2, γ(m − |Σc|ρ)/(4‖c‖₁)) in the tight world (one task word, c = 1: ‖c‖₁ = |Σc| = 1; γ
    the floor p*(w|A) = p*(b|A)), recorded by a form that reads only t: each branch of the min binds in one
    case (a 3‖c‖₁ read 0.0333 for 0.025, a min with γ 0.003 for 0.0025)."""
    ctx, bulk, task = _tight(margin, gamma)
    asked = []
    record = {"record": lambda t, eps, tv, w: (asked.append(t), 0.0)[1]}
    b = transfer_bound(task, ctx, bulk, ctx.logp, rho, form="record", forms=record)
    # the world's laws are float32: γ and the margins are the nominal ones to ~1e-7
    assert (b.gamma, b.c1, b.csum) == (pytest.approx(gamma, rel=1e-6), 1.0, 1.0)
    np.testing.assert_allclose(task.margin, margin, rtol=1e-6)
    # the candidates m are the margins and the margins + 1e-12: t moves by at most γ·1e-12/4 between them
    assert asked and np.allclose(asked, t_want, rtol=1e-6, atol=0)
    m = task.margin.min()
    assert asked[0] == pytest.approx(min(b.gamma / 2, b.gamma * (m - rho) / 4), rel=1e-12)


def test_epsilon_is_the_pi_weighted_mean_kl_over_the_contexts():
    """ε = Σ_x π_x KL(p*(·|x) ‖ p(·|x)): with π = (.9, .1) on the tight world and an LM mixing each row with
    the uniform law (20 %, then 50 %), ε is the π-weighted sum of the brute-force KLs (the plain mean over
    the rows weighed the second row 5× too much)."""
    ctx, bulk, task = _tight()
    ctx = dataclasses.replace(ctx, weights=np.array([0.9, 0.1]))
    task = word_task(ctx, world_anchor_fit(ctx, bulk), task.words, task.coef)
    p = np.exp(ctx.logp)
    q = np.array([[0.8], [0.5]]) * p + np.array([[0.2], [0.5]]) / p.shape[1]
    kl = np.sum(p * np.log(p / q), axis=1)
    assert kl[1] > 2 * kl[0] > 0  # the weights matter
    b = transfer_bound(task, ctx, bulk, np.log(q), 0.0)
    assert b.eps == pytest.approx(0.9 * kl[0] + 0.1 * kl[1], rel=1e-9)
    assert b.eps == pytest.approx(exact_epsilon_rows(ctx, np.log(q)), rel=1e-9)


def _brute_floor(task, ctx, bulk) -> float:
    """γ = min_x min(min_{w∈S} p*(w|x), p*(B(x)|x)), context by context."""
    p = np.exp(ctx.logp)
    return min(min(min(p[x, w] for w in task.words), p[x, bulk[x]].sum()) for x in range(len(p)))


def _brute_bound(task, ctx, bulk, logp_lm, rho, form) -> float:
    """The module docstring's bound by hand: min over m on the margins (and the margins + 1e-12) with
    m > |Σc|ρ of P(margin < m) + tail(t(m)), t(m) = min(γ/2, γ(m − |Σc|ρ)/(4‖c‖₁)), the tail the exact
    π-mass of TV ≥ t or min(√(ε/2)/t, ε/(2t²), 1); 1 when no m qualifies."""
    p, q, w = np.exp(ctx.logp), np.exp(logp_lm), ctx.weights
    tv, eps = 0.5 * np.abs(p - q).sum(1), float(w @ np.sum(p * (ctx.logp - logp_lm), 1))
    gamma, c1, csum = _brute_floor(task, ctx, bulk), sum(abs(c) for c in task.coef), abs(sum(task.coef))
    best = 1.0
    for m in list(task.margin) + list(task.margin + 1e-12):
        if m <= csum * rho:
            continue
        t = min(gamma / 2, gamma * (m - csum * rho) / (4 * c1))
        tail = (sum(wx for wx, d in zip(w, tv) if d >= t) if form == "per-context"
                else min(np.sqrt(eps / 2) / t, eps / (2 * t * t), 1.0))
        best = min(best, sum(wx for wx, mx in zip(w, task.margin) if mx < m) + tail)
    return best


def test_the_floor_and_the_coefficient_sums_are_those_of_the_module_docstring():
    """γ is the smallest task-word or bulk probability over all contexts (a max over the words read 0.232 for
    0.122), ‖c‖₁ = Σ|c_w| and |Σc| = |Σ_w c_w|, 0 for the contrast task c = (c, −c) (Σ|c_w| read 0.367)."""
    ctx, bulk, _, tasks = _flat()
    task = tasks["contrast"]
    b = transfer_bound(task, ctx, bulk, analytic_laws(ctx, "logit-noise", 1e-5), 0.05)
    assert len(task.words) == 2 and task.coef[0] == -task.coef[1] != 0
    assert b.gamma == pytest.approx(_brute_floor(task, ctx, bulk), rel=1e-12)
    assert b.c1 == pytest.approx(abs(task.coef[0]) + abs(task.coef[1]), rel=1e-12)
    assert b.csum == pytest.approx(abs(task.coef[0] + task.coef[1]), abs=1e-15)


@pytest.mark.parametrize("form", ["per-context", "markov"])
def test_the_bound_of_a_two_word_task_at_positive_rho_is_its_formula(form):
    """The contrast task (Σc = 0) at ρ = 0.05: the tail is asked at t(m) = min(γ/2, γ(m − |Σc|ρ)/(4‖c‖₁))
    for each candidate m, and the bound is the minimum of the formula computed by hand (an m − ‖c‖₁ρ read
    per-context 0.25 for 0.094, markov 0.66 for 0.53)."""
    ctx, bulk, _, tasks = _flat()
    task, rho = tasks["contrast"], 0.05
    logp = analytic_laws(ctx, "logit-noise", 1e-5)
    b = transfer_bound(task, ctx, bulk, logp, rho, form=form)
    assert 0 < b.bound < 1
    assert b.bound == pytest.approx(_brute_bound(task, ctx, bulk, logp, rho, form), rel=1e-9)
    asked = []
    record = {"record": lambda t, eps, tv, w: (asked.append(t), 1.0)[1]}
    transfer_bound(task, ctx, bulk, logp, rho, form="record", forms=record)
    gamma, c1, csum = _brute_floor(task, ctx, bulk), 2 * abs(task.coef[0]), 0.0
    # an m with margin < m at every context is not asked: its bound is ≥ 1 whatever the tail
    ms = [m for m in np.unique(np.concatenate([task.margin, task.margin + 1e-12]))
          if m > csum * rho and not np.all(task.margin < m)]
    np.testing.assert_allclose(asked, [min(gamma / 2, gamma * (m - csum * rho) / (4 * c1)) for m in ms], rtol=1e-12)


# ---- R² of a constant in the log-partition fit --------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_the_r2_of_a_constant_conditional_mean_is_one(seed):
    """Identical word embeddings make Φp_θ = φ exactly for every θ: its R² read 0.59–0.92, rounding over
    rounding; it is 1 (the reviewer's logz2.py)."""
    rng = np.random.default_rng(seed)
    phi = np.repeat(rng.normal(size=(3, 1)), 5, 1)
    fit = log_partition_fit(rng.normal(size=(100, 3)), phi)
    assert fit.rms_mean < 1e-12 and fit.r2_mean == 1.0 and fit.r2_logz == 1.0


def test_the_r2_of_one_word_is_one_and_real_spread_is_still_fitted():
    """V = 1 (the reviewer's logz.py): Φp_θ = φ, R² 1 (was 0.95); Gaussian embeddings still give R² < 1."""
    rng = np.random.default_rng(0)
    phi, theta = rng.normal(size=(3, 7)), rng.normal(size=(200, 3))
    assert log_partition_fit(1e-3 * theta, phi[:, :1]).r2_mean == 1.0
    fit = log_partition_fit(theta, phi)
    assert 0 < fit.r2_mean < 1 and 0 < fit.r2_logz < 1


def test_the_quadratic_fit_of_log_cosh_recovers_its_taylor_coefficients():
    """Words ±φ, φ = (1, ½): log Z_θ = log 2 + log cosh⟨θ, φ⟩ = log 2 + ½⟨θ, φ⟩² + O(⟨θ, φ⟩⁴), so at
    |θ| ~ 0.01 the fit is A = φφᵀ, b = 0, c = log 2 (to the quartic term, ~1e-9); reading b one column late
    gave b = (0, 0.693)."""
    theta = 0.01 * np.random.default_rng(0).standard_normal((50, 2))
    phi = np.array([[1.0, -1.0], [0.5, -0.5]])
    fit = log_partition_fit(theta, phi)
    np.testing.assert_allclose(fit.b, 0.0, atol=1e-7)
    assert fit.c == pytest.approx(np.log(2), abs=1e-8)
    np.testing.assert_allclose(fit.A, np.outer(phi[:, 0], phi[:, 0]), atol=1e-3)
    # Φp_θ = ∇ log Z_θ = φ tanh⟨θ, φ⟩ = φφᵀθ + O(⟨θ, φ⟩³): A_mean = φφᵀ, b_mean = 0 (b_mean read the
    # θ₁ row of the affine fit, (1, ½))
    np.testing.assert_allclose(fit.b_mean, 0.0, atol=1e-6)
    np.testing.assert_allclose(fit.A_mean, np.outer(phi[:, 0], phi[:, 0]), atol=1e-3)


def test_a_conditional_mean_that_varies_at_1e_6_relative_is_fitted_not_called_constant():
    """Words (1, ±1e-6) and θ₂ ~ 1e6: Φp_θ = (1, 1e-6 tanh(1e-6 θ₂)), whose second coordinate varies
    at 1e-6 of max|y| — real spread, far above rounding, so r2_mean is the least-squares R² of the affine fit
    over both coordinates (≈ 0.92), not the 1 of a constant (a 1e-6 tolerance read 1)."""
    phi = np.array([[1.0, 1.0], [1e-6, -1e-6]])
    theta = np.random.default_rng(0).normal(size=(200, 2)) * [1.0, 1e6]
    y = np.stack([np.ones(200), 1e-6 * np.tanh(1e-6 * theta[:, 1])], 1)
    lin = np.hstack([theta, np.ones((200, 1))])
    res = y - lin @ np.linalg.lstsq(lin, y, rcond=None)[0]
    r2 = 1 - np.sum(res**2) / np.sum((y - y.mean(0)) ** 2)
    assert 0.5 < r2 < 0.99
    assert log_partition_fit(theta, phi).r2_mean == pytest.approx(r2, rel=1e-6)


# ---- pinned edges: the readout, the rare words, the tolerances ---------------------------------------------

def test_the_world_own_readout_of_the_latent_task_is_exact():
    """V = 8 words, d = 4 (V − 1 ≥ d, V* of rank d): u* lies in the row space of V*(I − 11ᵀ/V), so the
    world's readout of its latent task errs nowhere (``readout_error(task, ctx, ctx.logp) == 0``); a q not
    made ⊥ 1 (C = I) reads log p*'s per-row normaliser into the score and erred on 0.23 of the rows."""
    ctx = anchor_contexts(LogLinearWorld.random(0, n_states=64, n_symbols=8, dim=4))
    assert np.linalg.matrix_rank(ctx.embeddings) == 4
    fit = world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=2))
    task = random_tasks(ctx, fit, 0)["latent"]
    assert 0 < ctx.weights @ task.labels < 1
    assert readout_error(task, ctx, ctx.logp) == 0.0


def test_the_rare_carrier_words_are_the_least_frequent_under_pi():
    """``rare-carrier`` defaults to the ``n_words`` least frequent words by E_π p*(w|x), brute-forced here
    (the most frequent, words 0 and 6, were taken for the rarest, words 7 and 5)."""
    ctx = anchor_contexts(LogLinearWorld.random(0, 8, 8, 4))
    fit = world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=2))
    freq = np.array([sum(ctx.weights[x] * np.exp(ctx.logp[x, w]) for x in range(len(ctx.weights)))
                     for w in range(ctx.logp.shape[1])])
    words = random_tasks(ctx, fit, 0)["rare-carrier"].words
    others = np.setdiff1d(np.arange(len(freq)), words)
    assert len(words) == 2 and freq[words].max() < freq[others].min()
    assert set(words.tolist()) == {7, 5}


def test_a_feature_direction_of_relative_spread_3e_5_is_a_feature():
    """_RCOND = 1e-5 is relative to features scaled to unit spread: f = (t, t + 3e-5·s) has a second
    direction at ~2e-5 of the first (far above float32's 1e-7), so log Z_B = s is fitted exactly, R² = 1
    (a 1e-4 cutoff dropped it: R² 0.01)."""
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=50), rng.normal(size=50)
    f = np.stack([t, t + 3e-5 * s], 1)
    fc = (f - f.mean(0)) / f.std(0)
    sv = np.linalg.svd(fc, compute_uv=False)
    assert 1e-5 < sv[1] / sv[0] < 1e-4  # between the documented cutoff and the mutant's
    fit = anchor_fit(s[:, None], f, np.ones((50, 1), bool))
    assert fit.r2 == pytest.approx(1.0, abs=1e-9) and fit.mse < 1e-18


def test_a_feature_varying_at_5e_12_of_its_size_is_not_rounding():
    """A column counts as constant only when its spread is within 1e-12 of its size: f₀ = 1 + 5e-12·s varies
    above that, so log Z_B = s is fitted through it, R² ≈ 1 (a 1e-11 edge zeroed it: R² 0.02)."""
    rng = np.random.default_rng(0)
    s, noise = rng.normal(size=50), rng.normal(size=50)
    f = np.stack([1 + 5e-12 * s, noise], 1)
    assert f[:, 0].std() > 1e-12 * np.abs(f[:, 0]).max()
    assert anchor_fit(s[:, None], f, np.ones((50, 1), bool)).r2 > 1 - 1e-6


def test_a_log_partition_is_constant_only_below_1e_12_of_its_size():
    """_CONSTANT_RTOL = 1e-12: log Z_B alternating 0 / 1e-11 (spread 5e-12 of size 1) is real spread —
    constant_mse its variance 2.5e-23 and, with constant features, R² = 0 (a 1e-11 tolerance read R² = 1,
    variance 0); alternating 0 / 1e-13 (spread 5e-14) is constant up to rounding, R² = 1."""
    B, f = np.ones((50, 1), bool), np.ones((50, 1))
    y = np.tile([0.0, 1e-11], 25)
    fit = anchor_fit(y[:, None], f, B)
    assert fit.constant_mse == pytest.approx(np.var(y), rel=1e-9) and fit.r2 == 0.0
    fit = anchor_fit(np.tile([0.0, 1e-13], 25)[:, None], f, B)
    assert fit.constant_mse == 0.0 and fit.r2 == 1.0


def test_the_threshold_bulk_is_strictly_below_the_threshold():
    """B(x) = the words with p*(w|x) < threshold, strictly: p = (½, ¼, ⅛, ⅛) at ¼ leaves word 1 out."""
    mask = bulk_mask(np.log([[0.5, 0.25, 0.125, 0.125]]), threshold=0.25)
    np.testing.assert_array_equal(mask, [[False, False, True, True]])


def test_the_balancing_bias_ties_only_scores_within_rounding():
    """Scores (0, 1, 1 + 5e-9), π = (.2, .2, .6): the mass crosses ½ at 1 + 5e-9, and 1 is 5e-9 below it —
    far above rounding, a distinct score — so the cut is their midpoint, −1.0000000025 (a 1e-8 tie merged
    them and cut at −0.5); 1 + 1e-15 is a tie, and the cut falls below both."""
    w = np.array([0.2, 0.2, 0.6])
    assert _balancing_bias(np.array([0.0, 1.0, 1 + 5e-9]), w) == pytest.approx(-(1 + 1 + 5e-9) / 2, abs=1e-15)
    assert _balancing_bias(np.array([0.0, 1.0, 1 + 1e-15]), w) == pytest.approx(-0.5, abs=1e-12)


def test_half_index_counts_a_mass_reaching_half_within_its_tolerance():
    """The first index where the cumulative mass reaches ½ within _HALF_RTOL = 1e-9: 0.5 − 1e-9 of a total 1
    reaches it (index 0; a strict crossing read 1), 0.5 − 2e-9 does not (index 1)."""
    assert half_index(np.array([0.5 - 1e-9, 1.0])) == 0
    assert half_index(np.array([0.5, 1.0])) == 0
    assert half_index(np.array([0.5 - 2e-9, 1.0])) == 1


@pytest.mark.parametrize("form", ["per-context", "markov"])
def test_a_bound_whose_events_cover_every_context_is_1_whatever_its_sum_rounds_to(form):
    """30 contexts of weight 1/30: for the two-word tasks the best m's events (margin < m, or TV ≥ t in
    the per-context tail) cover every context, where P(…) + P(…) summed in floats read 1 − 1.1e-16 and
    the row not trivial.  The bound is 1.0 (no LM could violate it) wherever the events cover every
    context, and otherwise the sum over an uncovered context set, at least 1/30 below 1."""
    world = LogLinearWorld.random(0, n_states=4, n_symbols=6, dim=3, geometry="anchor")
    x = np.asarray(world.sample(0, 6, 5))
    ctx = anchor_contexts(world, x)
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    logp = np.asarray(perturbed_lm(world, 0.01, "logit-noise", 0, tokens=x).next_token_logprobs(x), np.float64)
    logp = logp.reshape(-1, world.n_symbols)
    r_lm = lm_residual(ctx, bulk, logp)
    covered_somewhere = False
    for task in random_tasks(ctx, fit, 0).values():
        if task.words is None:
            continue
        b = transfer_bound(task, ctx, bulk, logp, form=form, residual_lm=r_lm, residual_star=fit.residual)
        assert b.bound == 1.0 and b.trivial or b.bound <= 1 - 1 / 30 + 1e-12, (task.name, b.bound)
        covered_somewhere |= b.bound == 1.0
    assert covered_somewhere


# ---- second review (2026-12-05): inputs past float64's range, and several LM seeds ------------------

def test_n1_refuses_a_height_past_float64s_resolution_with_a_config_error():
    """From height 1e12 the shifted logits' rounding broke N1's internal law check, a bare AssertionError
    (and unchecked under ``python -O``); heights up to 1e6 keep the laws to 1e-9 and are accepted."""
    from simlm.theory.anchor_constructions import n1_construction

    ctx = anchor_contexts(LogLinearWorld.random(0, n_states=6, n_symbols=5, dim=3, sigma=0.3))
    assert n1_construction(ctx, 0, height=1e6).eps == 0.0
    for height in (1e7, 1e12, 1e300):
        with pytest.raises(ConfigError, match="height"):
            n1_construction(ctx, 0, height=height)


def test_tight_world_refuses_a_margin_whose_exponential_overflows():
    from simlm.theory.anchor_constructions import tight_world

    with pytest.raises(ConfigError, match="margin"):  # was a raw OverflowError from math.exp
        tight_world(margin=400.0)


def test_a_task_whose_score_overflows_is_refused_not_labelled_from_nan():
    """coef = 1e308 (finite) overflowed the score: bias NaN, NaN margins, every label False, no error."""
    ctx, bulk, fit, _ = _flat()
    word_task(ctx, fit, [0, 1], [1e300, 1e300])  # large but in range
    with pytest.raises(ConfigError, match="coef"):
        word_task(ctx, fit, [0, 1], [1e308, 1e308])


def test_a_task_of_zero_coefficients_is_refused_not_one_class_every_lm_gets_right():
    """coef = 0 gave a constant score: labels all one class, error 0 and every bound held, silently (a review,
    2026-12-07)."""
    ctx, bulk, fit, _ = _flat()
    with pytest.raises(ConfigError, match="coef: all zero"):
        word_task(ctx, fit, [0, 1], [0.0, 0.0])
    word_task(ctx, fit, [0, 1], [0.0, 1e-300])  # one non-zero coefficient is a task


def test_ragged_bulk_words_are_a_config_error():
    ctx, *_ = _flat()
    with pytest.raises(ConfigError, match="words"):
        bulk_mask(ctx.logp, words=[[1], [2, 3]])
    with pytest.raises(ConfigError, match="words"):
        bulk_mask(ctx.logp, words=[True, False])


def test_the_summary_keeps_each_lm_seeds_curve_apart():
    """Two seeds' rows at the same ε were one unlabelled curve (errors 0.05 and 0.2 side by side)."""
    from simlm.experiments.anchors import summarise
    from simlm.experiments.registry import row

    rows = [{"world": "anchor", "lm": "logit-noise@0.1", "lm_seed": s, "eps": 0.1,
             **row("anchored:head_error", e, 1.0, maximum=1.0)} for s, e in ((0, 0.05), (1, 0.2))]
    curves = {k: v["error"] for k, v in summarise(rows).items() if k.startswith("anchor|")}
    assert curves == {"anchor|anchored|logit-noise|seed=0": [0.05], "anchor|anchored|logit-noise|seed=1": [0.2]}
    assert list(summarise(rows[:1]))[0] == "anchor|anchored|logit-noise"  # one seed: the key as before


def test_contexts_whose_weights_are_not_a_law_are_refused():
    """π weighs every ε and error: weights ×3 read ε ×3, negated weights a negative ε."""
    ctx = anchor_contexts(LogLinearWorld.random(0, n_states=3, n_symbols=4, dim=2))
    for weights in (3 * ctx.weights, -ctx.weights):
        with pytest.raises(DistributionError, match="^weights"):
            dataclasses.replace(ctx, weights=weights)
    with pytest.raises(ShapeError, match="^weights: expected one weight per row"):
        dataclasses.replace(ctx, weights=np.array([1.0]))


def _rows(seed=0, n=4, d=2, V=3):
    r = np.random.default_rng(seed)
    f, E = r.normal(size=(n, d)), r.normal(size=(d, V))
    z = f @ E
    return z - np.log(np.exp(z).sum(-1, keepdims=True)), f, E, np.full(n, 1 / n), np.arange(n), None


@pytest.mark.parametrize("field, value, error", [
    ("logp", lambda lp: np.where(np.arange(3) == 0, np.nan, lp), ConfigError),  # NaN: readout_error read 0.5
    ("logp", lambda lp: lp - np.log(2), DistributionError),  # rows summing to ½: finite flip KLs
    ("logp", lambda lp: lp[0], ShapeError),
    ("features", lambda f: f[:3], ShapeError),  # word_task raised numpy's unnamed matmul error
    ("features", lambda f: np.where(f > 0, np.inf, f), ConfigError),
    ("embeddings", lambda E: E[:, :2], ShapeError),
    ("states", lambda s: s[:2], ShapeError),
    ("planted", lambda _: np.ones(5), ShapeError),
])
def test_anchor_contexts_refuse_rows_that_are_not_a_worlds(field, value, error):
    """AnchorContexts checked only its weights: NaN or unnormalised log-laws and mismatched features were
    accepted and gave numbers (a readout error of 0.5, finite flip KLs) without an error."""
    from simlm.theory.anchors import AnchorContexts

    fields = dict(zip(("logp", "features", "embeddings", "weights", "states", "planted"), _rows()))
    fields[field] = value(fields[field])
    with pytest.raises(error, match=f"^{field}"):
        AnchorContexts(**fields)


def test_probability_part_and_markov_tail_refuse_bad_words_coefficients_and_eps():
    from simlm.theory.anchor_bound import markov_tail
    from simlm.theory.anchors import probability_part

    lp = _rows()[0]
    bulk = np.zeros(lp.shape, bool)
    bulk[:, 2] = True
    assert np.isfinite(probability_part(lp, bulk, [0, 1], [1.0, 0.5])).all()
    for words, coef, name in (([-1], [1.0], "words"), ([9], [1.0], "words"), ([0, 1], [1.0], "coef"),
                              ([0, 1], [1.0, np.nan], "coef")):
        with pytest.raises((ConfigError, ShapeError), match=f"^{name}"):
            probability_part(lp, bulk, words, coef)
    for eps in (-1.0, np.nan, np.inf):
        with pytest.raises(ConfigError, match="^eps"):
            markov_tail(0.1, eps)
    assert markov_tail(0.1, 0.001) == pytest.approx(0.05)


def test_the_experiments_constructions_read_the_bulk_its_check_reads():
    """``constructions`` fitted the anchors on a bulk of top_k = 4 whatever the config's ``wu/anchors`` top_k."""
    from simlm.experiments.anchors import build_world, constructions, sweep_config
    from simlm.theory.anchors import world_anchor_fit

    raw = sweep_config(quick=True)
    raw["checks"]["wu/anchors"]["top_k"] = 2
    raw["worlds"] = raw["worlds"][1:2]  # the unstructured world alone: its fit, no N1/N2
    ctx = anchor_contexts(build_world(raw["worlds"][0]))
    fits = {k: world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=k)).r2 for k in (2, 4)}
    assert fits[2] != fits[4]
    assert constructions(raw)["fit:unstructured"]["r2"] == fits[2]


# ---- the markov bound by its formula, a task whose coefficients sum below 0 -----------------------

def _brute_markov_bound(task, ctx, bulk, lp, rho):
    w, on = ctx.weights, ctx.weights > 0
    eps = float(w @ (np.exp(ctx.logp) * (ctx.logp - lp)).sum(1))
    words = np.exp(ctx.logp[on][:, task.words]).min()
    bulk_mass = np.exp(np.logaddexp.reduce(np.where(bulk, ctx.logp, -np.inf), axis=1))[on].min()
    gamma, c1, csum = min(words, bulk_mass), np.abs(task.coef).sum(), abs(task.coef.sum())
    best = 1.0
    for m in np.unique(np.concatenate([task.margin, task.margin + 1e-12])):
        if m <= csum * rho or np.all((task.margin < m)[on]):
            continue
        t = min(gamma / 2, gamma * (m - csum * rho) / (4 * c1))
        best = min(best, float(w @ (task.margin < m)) + min(eps / (2 * t * t), 1.0))
    return best


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_bound_reads_the_absolute_coefficient_sum(sign):
    """With Σc < 0 and ρ > 0 a signed Σc passed every test and gave a bound 31 % too low (0.313 against 0.456;
    a mutation review, 2026-12-07): random_tasks draws positive coefficients, word_task takes any."""
    world = LogLinearWorld.random(0, n_states=4, n_symbols=6, dim=3, geometry="anchor")
    ctx = anchor_contexts(world, np.asarray(world.sample(1, n_sequences=3, length=3)))
    bulk = bulk_mask(ctx.logp, top_k=2)
    fit = world_anchor_fit(ctx, bulk)
    ref = random_tasks(ctx, fit, 0, n_words=2)["anchored"]
    task = word_task(ctx, fit, ref.words, sign * ref.coef, "anchored")
    lp = ctx.logp + 0.002 * np.random.default_rng(0).standard_normal(ctx.logp.shape)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    b = transfer_bound(task, ctx, bulk, lp, 0.02, form="markov")
    assert b.csum == pytest.approx(abs(task.coef.sum()), rel=1e-12)
    brute = _brute_markov_bound(task, ctx, bulk, lp, 0.02)
    assert brute < 1.0  # an informative bound
    assert b.bound == pytest.approx(brute, rel=1e-9)
