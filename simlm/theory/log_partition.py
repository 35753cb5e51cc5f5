"""The quadratic log-partition view of softmax LMs (Saunshi, Malladi & Arora, ICLR 2021, §5).

For θ = f(s) and word embeddings Φ (d × V), fit log Z_θ = logsumexp(Φᵀθ) ≈ ½θᵀAθ + bᵀθ + c by least squares
over the contexts' features, and Φp_θ = ∇_θ log Z_θ ≈ Aθ + b; report R² and residuals of both.  Where
the fit is good, the conditional-mean features Φp_θ are an affine function of θ, so a linear probe on
f(s) and one on Φp_f(s) solve the same tasks.  Gaussian word embeddings fit well; clustered or
heavy-tailed ones worse (:func:`random_embeddings` draws each geometry).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from simlm.errors import ConfigError, ShapeError
from simlm.models.finite import SoftmaxContextLM, _check_logits, _check_pair
from simlm.theory._convex import logistic_loss, ridge_logistic, zero_one_error
from simlm.theory.natural_tasks import NaturalTask, check_contexts, check_task_on, lm_laws
from simlm.worlds.families import softmax
from simlm.checks import as_rng, check_memory, check_positive, check_positive_int, check_real_array

GEOMETRIES = ("gaussian", "clustered", "heavy-tailed")
#: a fitted quantity whose spread is below this times its size is constant up to rounding (R² = 1), as
#: in :mod:`simlm.theory.anchors`
_CONSTANT_RTOL = 1e-12


@dataclasses.dataclass(frozen=True, eq=False)
class LogPartitionFit:
    """log Z_θ ≈ ½θᵀAθ + ⟨b, θ⟩ + c (``A``, ``b``, ``c``, ``r2_logz``, ``rms_logz``) and, separately, Φp_θ ≈ A_mean
    θ + b_mean (``r2_mean`` over all coordinates, ``rms_mean``), least squares.  ``determined`` is False when the
    θ's are too few or too alike to pin the quadratic down: no more rows n than its p = d(d+1)/2 + d + 1
    coefficients (n ≤ p fits any values exactly, R² = 1), or a design matrix (columns scaled to unit norm) with
    σ_min ≤ 1e-6 σ_max: the coefficients are not unique.  ``determined_mean`` says the same of the affine fit of
    Φp_θ (d + 1 coefficients per coordinate).  An R² is NaN where its fit interpolates — no more distinct θ than the
    design's rank, so any values are fitted exactly (it read 1.0); a rank-deficient design with more distinct θ
    still has a least-squares R² (the fitted values are unique where the coefficients are not).  An R² is 1 where
    the fitted quantity is constant up to rounding (identical embeddings, V = 1: Φp_θ is then constant, and its R²
    once read 0.59–0.92, rounding over rounding).  An R² is measured on the points it was fitted to, so it flatters
    a fit with few points to spare: ``dof_logz`` and ``dof_mean`` are the residual degrees of freedom (distinct θ
    less the design's rank; 0 where the fit interpolates), and ``r2_logz_adjusted`` / ``r2_mean_adjusted`` the
    adjusted R², 1 − (1 − R²)(m − 1)/dof over the m distinct θ (10 coefficients and 11 random θ: R² 0.999 where 4000
    θ read 0.957; adjusted 0.991).  (Until 2026-12-02 ``determined`` read the smallest of the min(n, p) singular
    values numpy returns, so it said True, with R² = 1, for n < p.)"""

    A: np.ndarray
    b: np.ndarray
    c: float
    r2_logz: float
    rms_logz: float
    A_mean: np.ndarray
    b_mean: np.ndarray
    r2_mean: float
    rms_mean: float
    determined: bool
    determined_mean: bool = True
    dof_logz: int = 0
    dof_mean: int = 0
    r2_logz_adjusted: float = math.nan
    r2_mean_adjusted: float = math.nan


def log_partition_fit(theta, phi) -> LogPartitionFit:
    """Fit log Z_θ = logsumexp(Φᵀθ) by a quadratic and Φp_θ = ∇_θ log Z_θ by an affine map over the
    rows of ``theta (n, d)``.  If log Z were exactly quadratic, Φp_θ = Aθ + b: a linear probe on the
    conditional-mean features Φp_f is then one on f, and conversely when A is invertible."""
    t, phi = check_real_array("theta", theta), check_real_array("phi", phi)
    if t.ndim != 2 or phi.ndim != 2 or t.shape[1] != phi.shape[0] or 0 in t.shape or 0 in phi.shape:
        raise ShapeError(f"theta, phi: expected non-empty (n, d) and (d, V), got {t.shape} and {phi.shape}")
    n, d = t.shape
    check_memory("theta", n * (d * (d + 1) // 2 + d + 1), itemsize=8, what="the quadratic fit's design (n, p)")
    with np.errstate(over="ignore", invalid="ignore"):
        z, square = t @ phi, np.square(np.abs(t).max())
    if not (np.all(np.isfinite(z)) and np.isfinite(square)):
        raise ConfigError("theta, phi: so large that the logits Φᵀθ or the products θ_iθ_j of the quadratic fit "
                          "overflow float64")
    logz = z.max(-1) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))
    mean = softmax(z) @ phi.T
    # fitted about θ's mean μ (a quadratic in θ is one in θ − μ, mapped back below): the design's conditioning, so
    # `determined` and the coefficients' rounding, then does not depend on where the cloud of θ sits (an offset of
    # 1e3 along a direction that shifts every logit equally, the same fit, read as undetermined: a review 2026-12-07)
    mu = t.mean(0)
    tc = t - mu
    i, j = np.triu_indices(d)
    X = np.hstack([tc[:, i] * tc[:, j] * np.where(i == j, 0.5, 1.0), tc, np.ones((n, 1))])  # ½θᵀAθ, θ, 1 about μ
    lin = np.hstack([tc, np.ones((n, 1))])
    coef, G = _lstsq(X, logz), _lstsq(lin, mean)
    A = np.zeros((d, d))
    A[i, j] = A[j, i] = coef[: len(i)]
    res, rm = logz - X @ coef, mean - lin @ G
    b_c, A_mean = coef[len(i):len(i) + d], G[:d].T  # about μ: ½(θ−μ)ᵀA(θ−μ) + b_cᵀ(θ−μ) + c_c, A_mean(θ−μ) + g_c
    b, c = b_c - A @ mu, float(coef[-1] - b_c @ mu + 0.5 * mu @ A @ mu)
    b_mean = G[d] - A_mean @ mu

    def full_rank(M) -> bool:
        """More rows than columns and σ_min > 1e-6 σ_max with the columns scaled to unit norm (numpy returns
        min(n, p) singular values: with n ≤ p the smallest of them says nothing about the p-th)."""
        if M.shape[0] <= M.shape[1]:
            return False
        M = M / _column_scales(M)  # first by the largest entry: a norm of entries near 1e±160 over/underflows
        sv = np.linalg.svd(M / np.maximum(np.linalg.norm(M, axis=0), 1e-300), compute_uv=False)
        return bool(sv[-1] > 1e-6 * sv[0])

    def spare(M) -> tuple[int, int]:
        """(distinct rows, residual degrees of freedom): the distinct rows less the rank :func:`_lstsq` solves
        with (numpy's cut-off, eps·max(n, p)·σ_max, on the columns scaled as there — a 1e-6 cut-off counted 10
        of 11 ill-conditioned rows and let an R² of 1 through, a review 2026-12-06).  At ≤ 0 the fit
        interpolates: least squares fits any values exactly and an R² of 1 says nothing.  Rows a few ulps apart
        count as distinct."""
        distinct = np.unique(M, axis=0)
        return len(distinct), len(distinct) - int(np.linalg.matrix_rank(distinct / _column_scales(distinct)))

    def r2(res, y, floor, design):
        """NaN where the fit interpolates (:func:`spare`: 1 whatever y is — the quick sweep's world, 11
        distinct θ for 15 coefficients, drew four bars at 1.0, a review 2026-12-06); else 1 − SS_res/SS_tot,
        and 1 when y is constant up to rounding: SS_tot at or below
        (:data:`_CONSTANT_RTOL` · max(floor, max|y|))² per entry (identical embeddings or V = 1 make Φp_θ exactly
        constant, and 1 − rounding/rounding read anywhere in 0.59–0.92).  Computed on y and the residuals
        divided by that scale, so that squares of values beyond ~1e154 do not overflow.  log Z's floor is 1
        (its log V); Φp_θ's is 0, its own size: a floor of 1 read a mean of spread 1e-12 (Φ scaled by 1e-12,
        θ by 1e12, the same logits) as constant, R² 1 for a fit of R² 0.95."""
        if spare(design)[1] <= 0:
            return math.nan
        scale = max(floor, float(np.abs(y).max())) or 1.0
        y, res = y / scale, res / scale
        sst = float(np.sum((y - y.mean(0)) ** 2))
        return float(1.0 - np.sum(res**2) / sst) if sst > y.size * _CONSTANT_RTOL**2 else 1.0

    def rms(res) -> float:  # divided by the largest first: the squares of residuals beyond ~1e154 overflow
        top = float(np.abs(res).max())
        return top * float(np.sqrt(np.mean((res / top) ** 2))) if top > 0 else 0.0

    def adjusted(r, design) -> tuple[int, float]:
        """(dof, the adjusted R² 1 − (1 − R²)(m − 1)/dof over the m distinct rows; R² itself where it is 1)."""
        m, dof = spare(design)
        return max(dof, 0), r if r == 1.0 or not math.isfinite(r) else 1.0 - (1.0 - r) * (m - 1) / dof

    r2_logz, r2_mean = r2(res, logz, 1.0, X), r2(rm, mean, 0.0, lin)
    (dof_logz, adj_logz), (dof_mean, adj_mean) = adjusted(r2_logz, X), adjusted(r2_mean, lin)
    return LogPartitionFit(A, b, c, r2_logz, rms(res), A_mean, b_mean, r2_mean, rms(rm), full_rank(X), full_rank(lin),
                           dof_logz, dof_mean, adj_logz, adj_mean)


def _column_scales(M) -> np.ndarray:
    """Each column's largest |entry| (1 for a column of zeros)."""
    top = np.abs(M).max(0)
    return np.where(top > 0, top, 1.0)


def _lstsq(M, y) -> np.ndarray:
    """Least squares on ``M``'s columns scaled to a largest |entry| of 1, the solution scaled back: the
    quadratic fit's columns θ_iθ_j, θ and 1 differ in size by the square of θ's, and numpy's cut-off of
    small singular values (eps·max(n, p)·σ_max) dropped the constant column once θ ~ 1e7 (R² 0.71 for 0.89,
    ``determined`` still True) and the quadratic ones for θ ~ 1e-7 (A = 0)."""
    scales = _column_scales(M)
    sol = np.linalg.lstsq(M / scales, y, rcond=None)[0]
    return sol / (scales[:, None] if sol.ndim == 2 else scales)


@dataclasses.dataclass(frozen=True, eq=False)
class ProbeComparison:
    """Ridge logistic probes on f, on Φp_f and on p* (the natural features): ``loss``/``error`` dicts
    keyed by ``"f"``, ``"Φp_f"``, ``"p*"``; ``log_partition`` the fit over θ = f(s)."""

    loss: dict
    error: dict
    log_partition: LogPartitionFit


def compare_probes(contexts, task: NaturalTask, f, phi, *, l2: float = 1e-4) -> ProbeComparison:
    """Probe the task on the softmax LM's features f ``(S, d)`` and on its conditional means Φp_f,
    p_f = softmax(Φᵀf); near-equal losses are what a quadratic log-partition predicts."""
    contexts = check_contexts(contexts)
    task = check_task_on(task, contexts)
    f, phi = _check_logits(*_check_pair(f, phi, "f"), "f")  # real, finite matrices of matching d, within float32
    S, V = contexts.next_token_probs.shape
    if f.shape[0] != S or phi.shape[1] != V:
        raise ShapeError(f"f, phi: expected a row of f per context and a column of phi per word ({S} and {V}), "
                         f"got {f.shape[0]} and {phi.shape[1]}")
    lm = SoftmaxContextLM(f, phi)
    laws = lm_laws(lm, contexts)
    loss, error = {}, {}
    for key, X in (("f", f), ("Φp_f", laws @ phi.T), ("p*", contexts.next_token_probs)):
        w, b = ridge_logistic(X, task.pos, task.neg, check_positive("l2", l2))
        z = X @ w + b
        loss[key], error[key] = logistic_loss(z, task.pos, task.neg), zero_one_error(z, task.pos, task.neg)
    return ProbeComparison(loss, error, log_partition_fit(f, phi))


def random_embeddings(seed, dim: int, n_words: int, geometry: str = "gaussian", *, scale: float = 1.0,
                      n_clusters: int = 4, spread: float = 0.1, df: float = 1.5) -> np.ndarray:
    """Word embeddings Φ ``(dim, n_words)``: ``"gaussian"`` φ_w ~ N(0, scale²/dim·I); ``"clustered"``
    φ_w = μ_k(w) + spread·N(0, scale²/dim·I), centres μ_k ~ N(0, scale²/dim·I), k uniform over
    ``n_clusters``; ``"heavy-tailed"`` i.i.d. Student-t(``df``)·scale/√dim entries."""
    rng = as_rng(seed)
    d, V = check_positive_int("dim", dim), check_positive_int("n_words", n_words)
    check_memory("dim, n_words", d * V, itemsize=8, what="the embeddings")
    s = check_positive("scale", scale) / math.sqrt(d)
    if not isinstance(geometry, str) or geometry not in GEOMETRIES:
        raise ConfigError(f"geometry: expected one of {GEOMETRIES}, got {geometry!r}")
    if geometry == "gaussian":
        return s * rng.standard_normal((d, V))
    if geometry == "clustered":
        check_memory("n_clusters", d * check_positive_int("n_clusters", n_clusters), itemsize=8, what="the centres")
        mu = s * rng.standard_normal((d, n_clusters))
        noise = check_positive("spread", spread) * s * rng.standard_normal((d, V))
        return mu[:, rng.integers(0, n_clusters, V)] + noise
    return s * rng.standard_t(check_positive("df", df), (d, V))  # "heavy-tailed"



__all__ = ["LogPartitionFit", "log_partition_fit", "ProbeComparison", "compare_probes", "random_embeddings",
           "GEOMETRIES"]
