"""(A mutation review, 2026-12-08.)  :func:`~simlm.theory.log_partition.log_partition_fit` and
:func:`~simlm.theory.log_partition.random_embeddings` beyond what ``compare_probes`` exercises, each against a
float64 brute force or the documented law on a tiny case: a coordinate of θ that is always 0 (a column scale of 0
made the least squares fail), the adjusted R² over *distinct* θ, the residual degrees of freedom at extreme scales
of θ, the documented 1e-6 conditioning cut of ``determined``, numpy's default cut-off in the least squares, the
per-entry tolerance of a constant, log Z's floor of 1, and the clustered and heavy-tailed geometries' parameters
(``spread``, ``n_clusters``, the centres' scale, ``df``).  All but the zero coordinate, ``spread`` and
``n_clusters`` had a mutant that passed every earlier test (a cut of 1e-3 or 1e-12, rcond = 1e-6, the rank of the
unscaled design, m = all rows, the total against 1e-24, a floor of 0, ``df`` or the centres' scale ignored)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp, softmax

from simlm.theory.log_partition import log_partition_fit, random_embeddings


def _conditioning(M) -> float:
    """σ_min/σ_max of ``M`` with its columns scaled to unit norm, as ``determined`` documents it."""
    sv = np.linalg.svd(M / np.linalg.norm(M, axis=0), compute_uv=False)
    return float(sv[-1] / sv[0])


def test_a_coordinate_of_theta_that_is_always_zero_leaves_the_fit_of_the_others():
    """θ₂ ≡ 0: the logits are those of θ₁ alone, so log Z's quadratic is numpy's degree-2 polyfit in θ₁ (A₁₁ twice
    its θ₁² coefficient), with nothing on θ₂, and the fit cannot pin θ₂'s coefficients (not ``determined``).  A
    column of zeros has no largest entry to scale by: divided by 0, the least squares raised LinAlgError."""
    rng = np.random.default_rng(3)
    t1, phi = rng.standard_normal(30), rng.standard_normal((2, 5))
    fit = log_partition_fit(np.stack([t1, np.zeros(30)], 1), phi)
    logz = logsumexp(np.outer(t1, phi[0]), axis=1)
    a2, a1, a0 = np.polyfit(t1, logz, 2)
    np.testing.assert_allclose(fit.A, [[2 * a2, 0.0], [0.0, 0.0]], atol=1e-9)
    np.testing.assert_allclose(fit.b, [a1, 0.0], atol=1e-9)
    assert fit.c == pytest.approx(a0, abs=1e-9)
    res = logz - np.polyval([a2, a1, a0], t1)
    assert fit.r2_logz == pytest.approx(1 - res @ res / np.sum((logz - logz.mean()) ** 2), abs=1e-9)
    assert fit.dof_logz == 30 - 3 and fit.dof_mean == 30 - 2
    assert not fit.determined and not fit.determined_mean


def test_the_adjusted_r2_counts_distinct_theta_not_repeated_rows():
    """Each of 15 distinct θ three times (d = 2: 6 coefficients): the least squares and R² are those of the 15, and
    the adjusted R² is 1 − (1 − R²)(m − 1)/dof over m = 15 distinct θ, dof = 15 − 6 = 9 (the 45 rows counted as m
    read 1 − (1 − R²)·44/9: 0.954 for 0.985)."""
    rng = np.random.default_rng(5)
    theta, phi = rng.standard_normal((15, 2)), 2 * rng.standard_normal((2, 6))
    once, thrice = log_partition_fit(theta, phi), log_partition_fit(np.repeat(theta, 3, 0), phi)
    assert (thrice.dof_logz, thrice.dof_mean) == (once.dof_logz, once.dof_mean) == (9, 12)
    assert thrice.r2_logz == pytest.approx(once.r2_logz, abs=1e-9) and 0 < once.r2_logz < 0.999
    assert thrice.r2_logz_adjusted == pytest.approx(1 - (1 - once.r2_logz) * 14 / 9, abs=1e-9)
    assert thrice.r2_mean_adjusted == pytest.approx(1 - (1 - once.r2_mean) * 14 / 12, abs=1e-9)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_the_degrees_of_freedom_do_not_depend_on_the_scale_of_theta(scale):
    """20 generic θ in d = 2 pin all 6 coefficients of the quadratic and the 3 of the affine fit at any scale: dof
    14 and 17.  The rank of the unscaled design cut the columns θ_iθ_j (~1e-16 beside 1, scale 1e-8) or the
    constant (beside ~1e16, scale 1e8) and counted 3 or 1 spare degrees too many."""
    rng = np.random.default_rng(2)
    fit = log_partition_fit(scale * rng.standard_normal((20, 2)), rng.standard_normal((2, 4)))
    assert (fit.dof_logz, fit.dof_mean) == (14, 17)
    assert fit.determined and fit.determined_mean


@pytest.mark.parametrize("delta, determined", [(1e-3, True), (1e-9, False)])
def test_determined_mean_is_the_documented_conditioning_cut(delta, determined):
    """θ₂ = 2θ₁ + δ·noise: the affine design (θ about its mean, 1) with columns scaled to unit norm has
    σ_min/σ_max ~ δ, so ``determined_mean`` says σ_min > 1e-6 σ_max (a cut at 1e-3 or 1e-12 passed every test)."""
    rng = np.random.default_rng(7)
    t1 = rng.standard_normal(50)
    theta = np.stack([t1, 2 * t1 + delta * rng.standard_normal(50)], 1)
    lin = np.hstack([theta - theta.mean(0), np.ones((50, 1))])
    ratio = _conditioning(lin)
    assert (1e-5 < ratio < 1e-3) if determined else (ratio < 1e-8), ratio  # well inside either side of the cut
    assert log_partition_fit(theta, np.random.default_rng(0).standard_normal((2, 5))).determined_mean == determined


def test_a_direction_theta_barely_spans_is_still_fitted_by_least_squares():
    """θ₂ = 2θ₁ + 1e-4·n and logits that read n alone (Φ's rows ∝ 1e4): a quadratic in θ is one in (θ₁, n), so log Z's
    R² is that of the well-conditioned least squares in (θ₁, n), though the design's θ₂² column carries n² at
    1e-8 of its size (not ``determined``).  numpy's default cut-off keeps that direction; a relative cut of 1e-6
    dropped it, R² 0.38 for 0.996."""
    rng = np.random.default_rng(7)
    t1, n = rng.standard_normal(50), rng.standard_normal(50)
    row = np.array([1.0, 0.0, -0.5])
    fit = log_partition_fit(np.stack([t1, 2 * t1 + 1e-4 * n], 1), np.stack([-2 * row, row]) / 1e-4)
    logz = logsumexp(np.outer(n, row), axis=1)
    X = np.stack([t1**2, t1 * n, n**2, t1, n, np.ones(50)], 1)
    res = logz - X @ np.linalg.lstsq(X, logz, rcond=None)[0]
    r2 = 1 - res @ res / np.sum((logz - logz.mean()) ** 2)
    assert 0.99 < r2 < 0.999 and not fit.determined
    assert fit.r2_logz == pytest.approx(r2, abs=1e-7)


@pytest.mark.parametrize("a", [3e-13, 1e-11])
def test_a_conditional_mean_is_constant_below_1e_12_of_its_size_per_entry(a):
    """Words (1, ±a) and θ₂ ~ 1/a: Φp_θ = (1, a·tanh(aθ₂)), spread ~0.6a beside a size of 1.  At a = 3e-13 the spread
    is below 1e-12 per entry, constant up to rounding (R² 1, as documented: SS_tot ≤ 1e-24 · the number of entries,
    a sum of 1e-23 here); at 1e-11 it is fitted, the float64 least-squares R² (the total against 1e-24 alone read
    the first as a fit too, R² 0.93)."""
    rng = np.random.default_rng(4)
    phi = np.array([[1.0, 1.0], [a, -a]])
    theta = rng.standard_normal((400, 2)) * [1.0, 1 / a]
    y = softmax(theta @ phi, axis=1) @ phi.T
    fit = log_partition_fit(theta, phi)
    if a < 1e-12:
        assert fit.r2_mean == 1.0
        return
    lin = np.hstack([theta * [1.0, a], np.ones((400, 1))])  # θ₂ rescaled: the same affine fit, well scaled
    res = y - lin @ np.linalg.lstsq(lin, y, rcond=None)[0]
    r2 = 1 - np.sum(res**2) / np.sum((y - y.mean(0)) ** 2)
    assert 0.5 < r2 < 0.99
    assert fit.r2_mean == pytest.approx(r2, abs=1e-6)


def test_a_log_z_that_moves_by_rounding_about_zero_has_r2_one():
    """Words of logits 0 and −100θ, θ ∈ [0.30, 0.32]: log Z = log(1 + e^{−100θ}) ~ 1e-13 about 0, below float64's
    resolution of a log Z of size 1 (log(1 + x) keeps ~3 digits of x there), so log Z is constant up to rounding
    and R² is 1 — log Z's floor is 1, not its own size (a floor of 0 fitted the rounding: R² 0.998)."""
    theta = np.linspace(0.30, 0.32, 20)[:, None]
    fit = log_partition_fit(theta, np.array([[0.0, -100.0]]))
    assert fit.dof_logz > 0 and fit.r2_logz == 1.0


def test_clustered_embeddings_are_their_centres_plus_spread_times_gaussian_noise():
    """Same seed, spread 1e-12 and 0.1: the same centres, assignment and noise draws.  At 1e-12 the words sit on
    exactly ``n_clusters`` points (every cluster drawn: 2000 words, 50 clusters) whose entries have s.d.
    scale/√dim; the difference of the two is the noise, of s.d. 0.1·scale/√dim."""
    d, V, k, scale = 4, 2000, 50, 3.0
    tight = random_embeddings(11, d, V, "clustered", scale=scale, n_clusters=k, spread=1e-12)
    loose = random_embeddings(11, d, V, "clustered", scale=scale, n_clusters=k, spread=0.1)
    centres = np.unique(np.round(tight, 8), axis=1)
    assert centres.shape == (d, k)
    assert centres.std() == pytest.approx(scale / np.sqrt(d), rel=0.15)
    assert (loose - tight).std() == pytest.approx(0.1 * scale / np.sqrt(d), rel=0.03)


def test_heavy_tailed_embeddings_follow_their_df():
    """``df`` = 4: |entry|·√dim/scale has the median of |t₄| (0.741; t₁.₅'s, the default, is 0.873)."""
    d, V, scale = 4, 50_000, 2.0
    e = random_embeddings(0, d, V, "heavy-tailed", scale=scale, df=4.0) * np.sqrt(d) / scale
    assert np.median(np.abs(e)) == pytest.approx(stats.t(4.0).ppf(0.75), rel=0.02)
