"""Worst-case ε-optimal LMs for the natural-task bounds (Saunshi, Malladi & Arora, ICLR 2021).

A proven bound evaluated exactly cannot fail; what it *says* is how close an LM at the same ε can come
to it.  Here are LMs built to come close: for a task and a radius B, take the τ-optimal classifier
(v, b) on p* (the one the bound transfers) and move each task context's law so that its score
z_s = ⟨v, p_f(s)⟩ + b moves against the loss gradient, spending exactly the KL budget ε.

- ``"aligned"``: the label-aligned tilt on the task's contexts only,
  p_f(·|s) ∝ p*(·|s)·exp(−t·y_s·v/B) for s ∈ supp p_T (p_f = p* elsewhere), y_s = sign(q_s − σ(z_s))
  (the sign of −∂ℓ/∂z: the label for sign tasks), t ≥ 0 solved so that E_{p_L} KL(p* ‖ p_f) = ε.  To
  first order Δz_s = −t·y_s·Var_{p*_s}(v)/B: the score moves by √KL, as Pinsker allows.
- ``"search"``: maximise the transferred classifier's loss F(η) = ℓ_T(⟨v, softmax(log p* + η)⟩ + b)
  over per-context logit shifts η on the task's contexts, by ascent on the sphere {E_{p_L} KL = ε}:
  a step along the p_L-preconditioned gradient, then the retraction η ↦ c·η with c solved so that the
  KL is exactly ε (KL(p* ‖ softmax(log p* + cη)) increases with c ≥ 0); started from ``"aligned"``,
  a step kept only if F increases, so the result is never worse than the tilt.

The same tilt for the other feature maps of :func:`~simlm.theory.natural_tasks.check_natural_task`:
:func:`adversarial_softmax_lm` (θ_s = θ*_s − t·y_s·λ/B with Φᵀλ = v, the τ_Φ-optimal direction, ε_Φ
exact) and :func:`adversarial_quad_lm` (f_s = f*_s − t·y_s·w, Φᵀw = v/‖v‖₂, the τ⁽²⁾-optimal
direction, ε_quad = ½t²·p_L(supp p_T) exactly: Cauchy–Schwarz is tight for this f).  These
constructions are ours; the paper states only the upper bounds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logsumexp

from simlm.checks import check_positive, check_positive_int
from simlm.errors import ConfigError
from simlm.models.finite import SoftmaxContextLM, fit_cross_entropy, quad_minimiser
from simlm.theory._convex import logistic_loss, polish_softmax_fit, softmax_objective
from simlm.theory.natural_tasks import (B_GRID, check_phi, check_contexts, check_task_on, gamma, lm_epsilon,
                                      quad_epsilon, tau)

METHODS = ("aligned", "search")
#: relative accuracy of the solved ε (the tests ask 1e-3; the root finder gets ~1e-12).
EPS_RTOL = 1e-10
_T_MAX = 2.0**40


def adversary_radius(contexts, task, eps, *, B_grid=None, Phi=None, norm: str = "inf", cache=None) -> float:
    """B* of the bound at this ε: the grid radius minimising τ(B) + B√(2ε/γ) (the radius at which the
    check reports the bound), from :func:`~simlm.theory.natural_tasks.tau` on ``B_grid``."""
    sol = tau(contexts, task, B_grid, Phi=Phi, norm=norm, cache=cache)
    g = gamma(contexts.weights / contexts.weights.sum(), task.weights)
    grid = np.asarray(B_GRID if B_grid is None else B_grid, np.float64)
    return float(grid[int(np.argmin(sol.loss + grid * math.sqrt(2 * eps / g)))])


def _classifier(contexts, task, B, Phi, norm, cache, B_grid=None):
    """The τ-optimal (v, b) at radius B: read off the grid's solution (cached) when B is on the grid."""
    grid = np.asarray(B_GRID if B_grid is None else B_grid, np.float64)
    on = np.flatnonzero(np.isclose(grid, B, rtol=1e-12, atol=0))
    sol = tau(contexts, task, grid if on.size else [B], Phi=Phi, norm=norm, cache=cache)
    i = int(on[0]) if on.size else 0
    return sol.v[i], float(sol.b[i])


def _directions(P, task, v, b) -> np.ndarray:
    """y_s = sign(q_s − σ(z_s)) on supp p_T (0 elsewhere; the label's sign where the gradient is 0)."""
    g = task.label_probs - expit(P @ v + b)
    y = np.where(np.abs(g) > 1e-15, np.sign(g), np.where(task.label_probs >= 0.5, 1.0, -1.0))
    return y * (task.weights > 0)


def _kl_of_shift(logP, eta, p_L) -> float:
    """E_{p_L} KL(p* ‖ softmax(log p* + η)) = Σ p_L(s)(log Σ_w p*_s(w)e^{η_s(w)} − ⟨η_s, p*_s⟩), nats."""
    P = np.exp(logP)
    return float(p_L @ (logsumexp(logP + eta, axis=-1) - np.sum(np.where(P > 0, P * eta, 0.0), -1)))


def _tilt_supremum(P, eta, p_L) -> float:
    """lim_{t→∞} E_{p_L} KL(p* ‖ softmax(log p* + tη)): +∞ if some context with p_L > 0 has η_s non-constant
    on supp p*_s (the tilt sends the words below η_s's maximum there to 0, and p* keeps their mass), else 0
    (a shift constant on the support moves no law).  −log p*_s(argmax η_s) is the limit of the *reverse* KL."""
    on = np.where(P > 0, eta, np.nan)
    with np.errstate(invalid="ignore"):
        top, low = np.nanmax(on, axis=-1), np.nanmin(on, axis=-1)
    moves = (p_L > 0) & (top - low > 1e-12 * np.maximum(np.abs(top), 1.0))
    return math.inf if np.any(moves) else 0.0


def _solve(f, eps, what, supremum=None) -> float:
    """The t ≥ 0 with f(t) = ε, f increasing from f(0) = 0; ConfigError if ε is beyond f's range
    (``supremum``: lim f when known, :func:`_tilt_supremum`'s 0 or +∞; else up to t = 2⁴⁰)."""
    if supremum is not None and supremum <= 1e-12:
        raise ConfigError(f"eps: no law moves the scores: the τ-optimal v is constant on the support of every task "
                          f"context's p* (at small B it spends its box on the bias), so {what} cannot spend {eps:g} nats")
    hi = 1.0
    while f(hi) < eps:
        if hi >= _T_MAX:
            raise ConfigError(f"eps: {eps:g} nats is beyond what {what} reaches within t ≤ {_T_MAX:g}")
        hi *= 4.0
    return brentq(lambda t: f(t) - eps, 0.0, hi, xtol=1e-300, rtol=1e-15, maxiter=500)


def _check(contexts, task, eps, method):
    contexts = check_contexts(contexts)
    check_task_on(task, contexts)
    eps = check_positive("eps", eps)
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"method: expected one of {METHODS}, got {method!r}")
    return contexts, eps


def adversarial_laws(contexts, task, eps, *, method: str = "aligned", B=None, B_grid=None, steps: int = 200,
                     cache=None) -> np.ndarray:
    """Laws p_f ``(S, V)`` with E_{p_L} KL(p*_s ‖ p_f(s)) = ``eps`` exactly (relative :data:`EPS_RTOL`)
    that make the τ-optimal classifier at radius ``B`` (default :func:`adversary_radius`) transfer badly:
    ``method`` ``"aligned"`` (the tilt) or ``"search"`` (``steps`` ascent steps from the tilt); see the
    module docstring.  ``cache`` is τ's cache (:func:`~simlm.theory.natural_tasks.tau`).  ConfigError if no
    law moves (v constant on every task context's support: the tilt's KL stays 0; else it grows without
    bound in t) or if the tilt solving ε underflows float64 (too large a budget per context)."""
    contexts, eps = _check(contexts, task, eps, method)
    steps = check_positive_int("steps", steps, minimum=1)
    B = adversary_radius(contexts, task, eps, B_grid=B_grid, cache=cache) if B is None else check_positive("B", B)
    P = np.asarray(contexts.next_token_probs, np.float64)
    p_L = contexts.weights / contexts.weights.sum()
    with np.errstate(divide="ignore"):
        logP = np.log(P)
    v, b = _classifier(contexts, task, B, None, "inf", cache, B_grid)
    eta = -(_directions(P, task, v, b)[:, None] * v[None, :]) / B
    if not np.any(np.abs(eta) > 0):
        raise ConfigError(f"task: the τ-optimal classifier at B = {B:g} is 0, so no law moves its scores")
    t = _solve(lambda t: _kl_of_shift(logP, t * eta, p_L), eps, "the aligned tilt", _tilt_supremum(P, eta, p_L))
    eta = t * eta
    if method == "search":
        eta = _ascend(logP, eta, v, b, task, p_L, eps, steps)
    laws = np.exp(logP + eta - logsumexp(logP + eta, axis=-1, keepdims=True))
    reached = lm_epsilon(contexts, laws)
    if not math.isfinite(reached):
        raise ConfigError(f"eps: {eps:g} nats needs p_f(w | s) below float64's smallest number on the task's contexts "
                          f"(the tilt at t = {t:g} underflows: the budget per context, ε/p_L(contexts), is too large)")
    if not abs(reached - eps) <= 1e-6 * eps:
        raise ConfigError(f"eps: the adversary reached {reached:.6g} nats, not {eps:g} (float64 rounding at t = {t:g})")
    return laws


def _ascend(logP, eta, v, b, task, p_L, eps, steps) -> np.ndarray:
    """Projected ascent of F(η) on {E_{p_L} KL = ε}; every kept iterate has F above the last."""
    on = task.weights > 0
    w = np.where(on, p_L, 1.0)

    def loss(eta):
        laws = np.exp(logP + eta - logsumexp(logP + eta, axis=-1, keepdims=True))
        return laws, logistic_loss(laws @ v + b, task.pos, task.neg)

    def retract(eta):
        c = _solve(lambda c: _kl_of_shift(logP, c * eta, p_L), eps, "the search")
        return c * eta

    laws, F = loss(eta)
    step = 0.3
    for _ in range(steps):
        z = laws @ v + b
        g = task.neg * expit(z) - task.pos * expit(-z)  # ∂F/∂z_s
        grad = g[:, None] * laws * (v[None, :] - z[:, None] + b)  # ∂F/∂η_s = g_s p_s ⊙ (v − ⟨v, p_s⟩)
        d = np.where(on[:, None], grad / w[:, None], 0.0)
        norm = np.linalg.norm(d)
        if norm == 0 or step < 1e-8:
            break
        try:
            cand = retract(eta + step * np.linalg.norm(eta) * d / norm)
        except ConfigError:
            step *= 0.5
            continue
        cand_laws, cand_F = loss(cand)
        if cand_F > F:
            eta, laws, F, step = cand, cand_laws, cand_F, min(step * 1.5, 2.0)
        else:
            step *= 0.5
    return eta


def adversarial_softmax_lm(contexts, task, eps_phi, phi, *, B=None, B_grid=None, cache=None) -> SoftmaxContextLM:
    """A softmax LM softmax(Φᵀθ_s) with ε_Φ = E_{p_L}[ℓ_s(θ_s) − min ℓ_s] = ``eps_phi`` exactly: the
    cross-entropy optimum θ* (float64-polished, as :func:`~simlm.theory.natural_tasks.softmax_excess`)
    tilted along the τ_Φ-optimal direction at ``B`` on the task's contexts, θ_s = θ*_s − t·y_s·λ/B with
    Φᵀλ = v (the aligned tilt within the family: p_θ ∝ p_θ*·exp(−t·y_s·v/B))."""
    contexts, eps_phi = _check(contexts, task, eps_phi, "aligned")
    P = np.asarray(contexts.next_token_probs, np.float64)
    phi = check_phi(phi, P.shape[1], "phi")
    p_L = contexts.weights / contexts.weights.sum()
    if B is None:
        B = adversary_radius(contexts, task, eps_phi, B_grid=B_grid, Phi=phi, cache=cache)
    v, b = _classifier(contexts, task, check_positive("B", B), phi, "inf", cache, B_grid)
    lam = np.linalg.lstsq(phi.T, v, rcond=None)[0]
    base = polish_softmax_fit(fit_cross_entropy(P, phi).theta, phi, P)
    shift = -(_directions(P, task, v, b)[:, None] * lam[None, :]) / B
    if not np.any(np.abs(shift @ phi) > 0):
        raise ConfigError(f"task: the τ_Φ-optimal classifier at B = {B:g} is 0, so no θ moves its scores")
    floor = softmax_objective(base, phi, P)
    t = _solve(lambda t: float(p_L @ np.maximum(softmax_objective(base + t * shift, phi, P) - floor, 0.0)), eps_phi,
               "the aligned tilt of θ")
    return SoftmaxContextLM(base + t * shift, phi)


def adversarial_quad_lm(contexts, task, eps_quad, phi, *, B=None, B_grid=None, cache=None) -> SoftmaxContextLM:
    """Quad features f ``(S, d)`` (as the θ of a :class:`SoftmaxContextLM` with Φ = ``phi``) with
    ε_quad = ``eps_quad`` exactly: f_s = f*_s − t·y_s·w on the task's contexts, Φᵀw = v/‖v‖₂ for the
    τ⁽²⁾-optimal v at ``B``, t = √(2ε_quad/p_L(supp p_T)); each score moves by −t·y_s·‖v‖₂, the most a
    Quad excess ½t² allows (Cauchy–Schwarz is tight)."""
    contexts, eps_quad = _check(contexts, task, eps_quad, "aligned")
    P = np.asarray(contexts.next_token_probs, np.float64)
    phi = check_phi(phi, P.shape[1], "phi")
    if B is None:
        B = adversary_radius(contexts, task, eps_quad, B_grid=B_grid, Phi=phi, norm="2", cache=cache)
    v, b = _classifier(contexts, task, check_positive("B", B), phi, "2", cache, B_grid)
    size = np.linalg.norm(v)
    if size == 0:
        raise ConfigError(f"task: the τ⁽²⁾-optimal classifier at B = {B:g} is 0, so no feature moves its scores")
    shift = -_directions(P, task, v, b)[:, None] * np.linalg.lstsq(phi.T, v / size, rcond=None)[0][None, :]
    base = np.asarray(quad_minimiser(P, phi), np.float64)
    # ε_quad(t) = ½t²·p_L(supp p_T) up to f*'s float32 rounding: solved on the exact ε_quad instead
    t = _solve(lambda t: quad_epsilon(contexts, base + t * shift, phi), eps_quad, "the Quad shift")
    return SoftmaxContextLM(base + t * shift, phi)


__all__ = ["METHODS", "adversarial_laws", "adversarial_softmax_lm", "adversarial_quad_lm", "adversary_radius"]
