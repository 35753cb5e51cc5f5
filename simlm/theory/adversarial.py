"""Worst-case ε-optimal LMs for the natural-task bounds (Saunshi, Malladi & Arora, ICLR 2021).

A proven bound evaluated exactly cannot fail; what it *says* is how close an LM at the same ε can come
to it.  Here are LMs built to come close: for a task and a radius B, take the τ-optimal classifier
(v, b) on p* (the one the bound transfers, whose loss on the LM's features is the check's (a)) and move
the features of the task's contexts so that the scores z_s = ⟨v, x_s⟩ + b move against the loss,
spending exactly the budget ε of the bound.

- ``"aligned"`` (:func:`adversarial_laws`): the label-aligned tilt, one t for every task context,
  p_f(·|s) ∝ p*(·|s)·exp(−t·y_s·v/B) for s ∈ supp p_T (p_f = p* elsewhere), y_s = sign(q_s − σ(z_s))
  (the sign of −∂ℓ/∂z: the label for sign tasks), t ≥ 0 solved so that E_{p_L} KL(p* ‖ p_f) = ε.  Simple,
  and not the worst: it spends the budget where the loss gains little.
- ``"search"`` (:func:`adversarial_laws`): the worst case for the transferred classifier.  Per context,
  the laws at KL(p*_s ‖ p) = κ whose score ⟨v, p⟩ is largest are p ∝ p*_s/(ν − v) (ν > max v; −v for the
  smallest), by a Lagrangian, and, where a word off supp p*_s has a v beyond v's range on it (KL(p* ‖ p)
  does not charge for mass there), at ν = that v the laws that move mass onto that word (:func:`_law_curves`;
  confined to the support, on a world with zeros in p* at ε = 0.3, B = 4, they used 0.216 of the slack
  where an SLSQP over every word used 0.316); ℓ is convex in z, so the worst loss at budget κ is
  h_s(κ) = p_T(s)·max(ℓ_s(z_max(κ)), ℓ_s(z_min(κ))), and the split of ε across contexts,
  max Σ_s h_s(κ_s) subject to Σ_s p_L(s)κ_s = ε, is solved by :func:`_allocate`.  Then ``steps`` steps
  of projected ascent on the per-context logits over the sphere {E_{p_L} KL = ε} (a step kept only if
  the loss increases), from the better of this and the aligned tilt, so it is never below the tilt.
- :func:`adversarial_softmax_lm`: a softmax LM at ε_Φ.  θ_s = θ*_s ± t_s·λ (Φᵀλ = v, the τ_Φ-optimal
  direction) on the task's contexts: to first order the best direction per context (the score moves by
  vᵀΣ_sΦᵀδθ and δ_s by ½δθᵀΦΣ_sΦᵀδθ, Σ_s the covariance of p_θ*_s, and λ maximises the one against the
  other when v = Φᵀλ), with the per-context t_s split by :func:`_allocate` (not the best θ_s beyond first
  order: this is a lower bound on the worst softmax LM).
- :func:`adversarial_quad_lm`: Quad features at ε_quad, exactly the worst.  f_s = f*_s ± t_s·w with
  Φᵀw = v/‖v‖₂: per context the score moves by at most ‖v‖₂√(2q_s) (q_s the Quad excess; Cauchy–Schwarz
  is tight for this f), and the budgets q_s = ½t_s² are split by :func:`_allocate`.

:func:`_allocate` starts from a Lagrangian: each context maximises h_s(κ) − μ·p_L(s)·κ along its curves (a
log grid of the curve's parameter, refined by golden section) and μ is bisected to spend ε.  Where every
h_s is concave this is the optimum, and the dual at μ says so; h_s need not be (ℓ is convex in z), and
where the dual leaves a gap above 1e-5 of the gain the split is instead the better of this and a knapsack
over 400 budget units of ε/400 (dynamic programming, exact for budgets in whole units).  A last common scale
of the parameters hits ε exactly.  The Lagrangian alone fell short of the best split by up to 0.042 of the
slack at B = 4 (0.129 of the slack used against 0.171).  The tests (tests/test_natural_adversaries.py)
place the search and Quad adversaries, and the softmax one among the tilts along λ, within 1e-4 of the
slack of an independent knapsack over 400 budget units that brackets the best split, at B = 1 and B = 4.
These constructions are ours; the paper states only the upper bounds.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.optimize import brentq
from scipy.special import expit, logsumexp

from simlm.checks import check_positive, check_positive_int
from simlm.errors import ConfigError
from simlm.models.finite import SoftmaxContextLM, fit_cross_entropy, quad_minimiser
from simlm.theory._convex import logistic_loss, polish_softmax_fit, softmax_objective
from simlm.theory.natural_tasks import (B_GRID, _grid, bound_well_specified, check_phi, check_contexts, check_task_on,
                                      gamma, label_residual, lm_epsilon, tau)

METHODS = ("aligned", "search")
#: the relative error of ε at which an adversary's laws are refused (the root finder reaches ~1e-12).
EPS_RTOL = 1e-6
#: the softmax and Quad adversaries, solved on their float32 parameters: past this relative distance from
#: their ε they are refused (usually ≲ 1e-8; where no single context can take the residual, up to ~1e-5; at
#: ε ≲ 1e-10 one entry's float32 step is a large share of ε: the Quad ε was 9.3e-5 off at ε = 1e-12)
STORED_RTOL = 1e-4
_T_MAX = 2.0**40
#: points of the log grid along each context's curve in :func:`_allocate` (then refined by golden section).
_GRID = 256
#: the grid along a curve starts where its budget κ is this fraction of ε (a negligible share).
_KAPPA_LO = 1e-10
#: budget units of the knapsack in :func:`_allocate` (the split it finds spends whole units of ε/N).
_UNITS = 400
#: :func:`_allocate` keeps the Lagrangian split, without the knapsack, where the dual at its price μ is
#: within this share of the split's gain at ε.
_DUALITY_RTOL = 1e-5
#: largest spread of logits t·ptp(v) along a softmax curve: beyond it the laws underflow float64.
_LOGIT_SPAN = 600.0
#: largest parameter of the law curves p ∝ p*/(1 + t·gap): KL ≈ (1 − m)·log t, 460 nats at 1e200.
_LAW_T_MAX = 1e200


def adversary_radius(contexts, task, eps, *, B_grid=None, Phi=None, norm: str = "inf", cache=None) -> float:
    """B* of the bound at this ε: the grid radius minimising τ(B) + B√(2ε/γ) (the radius at which the
    check reports the bound), from :func:`~simlm.theory.natural_tasks.tau` on ``B_grid``.  ``eps`` must
    be a positive finite number and ``B_grid`` a grid of positive radii (ConfigError naming them)."""
    return _radius(contexts, task, eps, B_grid, Phi, norm, cache,
                   lambda sol, grid, g: sol.loss + grid * math.sqrt(2 * eps / g))


def well_specified_radius(contexts, task, eps, *, B_grid=None, cache=None) -> float:
    """B* of the well-specified bound at this ε: the grid radius minimising τ(B) + r(B)·B√(2ε/γ) + B²ε/(4γ)
    (:func:`~simlm.theory.natural_tasks.bound_well_specified`, r(B) the τ-optimal classifier's label
    residual at B), the radius at which the check reports that row.  It is often larger than
    :func:`adversary_radius`'s (the any-LM bound's): an adversary built there moves another classifier."""
    def bound(sol, grid, g):
        residual = label_residual(np.asarray(contexts.next_token_probs, np.float64), task, sol)
        return [bound_well_specified(t, B, eps, g, r) for t, B, r in zip(sol.loss, grid, residual)]

    return _radius(contexts, task, eps, B_grid, None, "inf", cache, bound)


def _radius(contexts, task, eps, B_grid, Phi, norm, cache, bound) -> float:
    """The radius of ``B_grid`` minimising ``bound(τ's solutions, grid, γ)`` at ``eps``, inputs checked (γ = 0,
    a bound of +∞ at every radius, refused)."""
    contexts = check_contexts(contexts)
    check_task_on(task, contexts)
    check_positive("eps", eps)
    grid = _grid("B_grid", B_grid)
    g = _check_gamma(contexts, task)  # before τ's solve over the grid
    sol = tau(contexts, task, grid, Phi=Phi, norm=norm, cache=cache)
    return float(grid[int(np.argmin(bound(sol, grid, g)))])


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
    (``supremum``: lim f when known, :func:`_tilt_supremum`'s 0 or +∞; else up to t = 2⁴⁰).  f may be a
    step function at float32 resolution (the realised ε of a stored model): the root is then where it
    steps across ε."""
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
    _check_gamma(contexts, task)  # with B given too: the search divided by p_L = 0 (scipy's NaN error, a review)
    return contexts, eps


def _check_gamma(contexts, task) -> float:
    """γ of the task on ``contexts``, or a ConfigError where it is 0."""
    g = gamma(contexts.weights / contexts.weights.sum(), task.weights)
    if not g > 0:
        raise ConfigError("task: γ = 0 (the task weighs a context of p_L = 0): its bound is +∞ at every radius, "
                          "so no radius is B* and no LM can violate it")
    return g


def _loss(z, pos, neg) -> np.ndarray:
    """pos·ℓ(z, +1) + neg·ℓ(z, −1), elementwise: a context's weighted logistic loss."""
    return pos * np.logaddexp(0.0, -z) + neg * np.logaddexp(0.0, z)


# ---- the budget split -------------------------------------------------------------------------------

def _bracket(evaluate, S, C, E, kappa_lo, t_cap):
    """Per (context, curve): t_lo with budget K(t_lo) ≤ ``kappa_lo`` and t_hi, the least t with
    K(t) ≥ E_s (``t_cap (S, C)`` if K stays below, where the curve's laws would leave float64), by
    bisection on log t (K is increasing in t ≥ 0); t_hi ≥ 4·t_lo."""
    def K(logt):
        return evaluate(np.exp(logt)[:, :, None])[1][:, :, 0]

    top = np.log(t_cap) * np.ones((S, C))
    out = []
    for level in (E[:, None] * np.ones((S, C)), np.full((S, C), kappa_lo)):
        lo, hi = np.full((S, C), math.log(1e-300)), top.copy()
        for _ in range(48):
            mid = 0.5 * (lo + hi)
            below = ~(K(mid) >= level)
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        out.append((lo, hi))
    t_hi, t_lo = np.exp(out[0][1]), np.exp(out[1][0])
    return t_lo, np.maximum(t_hi, 4.0 * t_lo)


def _allocate(evaluate, t_lo, t_hi, w, eps, what):
    """Split the budget Σ_s w_s κ_s = ε over contexts to maximise Σ_s H_s.  Context s moves along one of C
    curves (the two directions of its score) with parameter t ≥ 0: ``evaluate(T)`` with ``T (S, C, n)`` gives
    ``(H, K)``, the context's weighted loss and its budget κ at t (t = 0: unmoved, κ = 0; κ increasing in
    t).  ``t_lo``, ``t_hi (S, C)``: the range of t to search (from a negligible budget to the most the
    context could get).  Returns ``(t (S,), curve (S,))``.

    Lagrangian: for a price μ each context takes the t maximising H − μ·w_s·K (on a log grid of t, then
    golden section between the grid neighbours) and μ is bisected so that the budget spent is just below
    ε (the caller scales the t's to ε exactly).  A split that maximises the Lagrangian and spends ε is
    optimal; H need not be concave in κ, and where the dual at μ, Σ_s max(H − μ·w_s·K) + μ·ε, is above
    the split's gain (after the common scale to ε) by more than :data:`_DUALITY_RTOL` of it, the better of
    this split and :func:`_knapsack`'s is returned."""
    S, C = t_hi.shape
    log_lo, log_hi = np.log(t_lo), np.log(t_hi)
    n = int(min(max(_GRID, 12 * np.max(log_hi - log_lo)), 4 * _GRID))  # ≥ ~5 points per factor e
    u = np.linspace(0.0, 1.0, n)
    T = np.concatenate([np.zeros((S, C, 1)), np.exp(log_lo[:, :, None] + u * (log_hi - log_lo)[:, :, None])], -1)
    H, K = evaluate(T)
    gain = H - H[:, :, :1]
    ok = np.isfinite(gain) & np.isfinite(K)
    gain, K = np.where(ok, gain, -np.inf), np.where(ok, np.maximum(K, 0.0), np.inf)
    gain[:, :, 0], K[:, :, 0] = 0.0, 0.0
    g2, k2, rows = gain.reshape(S, -1), K.reshape(S, -1), np.arange(S)
    useful = (g2 > 0) & (k2 > 0) & np.isfinite(k2)
    if not useful.any():
        raise ConfigError(f"eps: no law moves the scores: the τ-optimal v is constant on the support of every task "
                          f"context's law, so {what} cannot spend {eps:g} nats")

    def pick(mu):
        j = np.argmax(g2 - mu * w[:, None] * k2, 1)
        return j, float(w @ k2[rows, j])

    ratio = g2[useful] / (w[:, None] * k2)[useful]
    hi, lo = math.log(2.0 * ratio.max()), math.log(max(ratio.min(), 1e-300)) - 30.0
    if pick(math.exp(lo))[1] >= eps:
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if pick(math.exp(mid))[1] >= eps else (lo, mid)
        mu = math.exp(hi)
    else:  # every context saturated below ε: the most each can gain, then the caller scales up
        mu = math.exp(lo)
    j = pick(mu)[0]
    curve, g = j // (n + 1), j % (n + 1)
    t = T[rows, curve, g]
    moved = g > 0
    if moved.any():  # golden section on log t between the grid neighbours, on the chosen curves
        du = u[1] - u[0]
        span = (log_hi - log_lo)[rows, curve]
        at = log_lo[rows, curve] + u[np.maximum(g - 1, 0)] * span
        a, bnd = at - du * span, at + du * span

        def value(logt):
            Hx, Kx = evaluate(np.ascontiguousarray(np.broadcast_to(np.exp(logt)[:, None, None], (S, C, 1))))
            hx, kx = Hx[rows, curve, 0] - H[rows, curve, 0], Kx[rows, curve, 0]
            return np.where(np.isfinite(hx) & np.isfinite(kx), hx - mu * w * np.maximum(kx, 0.0), -np.inf)

        r = (math.sqrt(5.0) - 1.0) / 2.0
        x1, x2 = bnd - r * (bnd - a), a + r * (bnd - a)
        f1, f2 = value(x1), value(x2)
        for _ in range(40):
            left = f1 >= f2  # the maximum is in [a, x2]; else in [x1, bnd]
            a, bnd = np.where(left, a, x1), np.where(left, x2, bnd)
            keep_x, keep_f = np.where(left, x1, x2), np.where(left, f1, f2)
            new_x = np.where(left, bnd - r * (bnd - a), a + r * (bnd - a))
            new_f = value(new_x)
            x1, f1 = np.where(left, new_x, keep_x), np.where(left, new_f, keep_f)
            x2, f2 = np.where(left, keep_x, new_x), np.where(left, keep_f, new_f)
        best = np.where(f1 >= f2, x1, x2)
        better = np.maximum(f1, f2) >= g2[rows, j] - mu * w * k2[rows, j]
        t = np.where(moved & better, np.exp(best), t)
    t = np.where(moved, t, 0.0)
    gained = _gain_at(evaluate, H, t, curve, w, eps)
    ceiling = float(np.sum(np.max(g2 - mu * w[:, None] * k2, 1))) + mu * eps  # the Lagrangian dual at μ
    if ceiling - gained <= _DUALITY_RTOL * abs(gained):
        return t, curve
    t_k, curve_k = _knapsack(evaluate, T, K, H[:, :, 0], w, eps)
    if _gain_at(evaluate, H, t_k, curve_k, w, eps) > gained:
        return t_k, curve_k
    return t, curve


def _gain(evaluate, H, t, curve):
    """(Σ_s of context s's gain H_s(t_s) − H_s(0) on its ``curve``, each context's budget K_s(t_s))."""
    S, C, _ = H.shape
    Hx, Kx = evaluate(np.ascontiguousarray(np.broadcast_to(t[:, None, None], (S, C, 1))))
    rows = np.arange(S)
    return float(np.sum(Hx[rows, curve, 0] - H[rows, curve, 0])), Kx[rows, curve, 0]


def _gain_at(evaluate, H, t, curve, w, eps) -> float:
    """The gain of the split ``t`` after the common scale c that spends ε, Σ_s w_s·K_s(c·t_s) = ε (c by
    bisection on log c; the caller's last step, so two splits are compared as they will be used)."""
    def spent(log_c):
        return float(w @ _gain(evaluate, H, math.exp(log_c) * t, curve)[1])

    lo, hi = -40.0, 0.0
    while spent(hi) < eps and hi < 40.0:
        lo, hi = hi, hi + 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if spent(mid) < eps else (lo, mid)  # NaN (out of range) counts as above
    return _gain(evaluate, H, math.exp(lo) * t, curve)[0]


def _knapsack(evaluate, T, K, H0, w, eps):
    """The best split of ε over contexts in whole units of ε/N (N = :data:`_UNITS`), by dynamic
    programming: context s at k units takes the better of its curves at budget κ = k·ε/(N·w_s), or any
    fewer units (t solved by regula falsi on log K(log t) inside the cell of :func:`_allocate`'s grid ``T``,
    ``K (S, C, n + 1)`` that holds κ, K increasing in t).  Exact for budgets in whole units, where the Lagrangian
    is not (its duality gap where H is not concave in κ).  ``H0 (S, C)``: H at t = 0.  Returns ``(t (S,),
    curve (S,))``, spending ≤ ε."""
    S, C, m = T.shape
    N = _UNITS
    kappa = (np.arange(N + 1) * eps / N)[None, None, :] / w[:, None, None]
    K = np.maximum.accumulate(K, -1)
    cell = np.empty((S, C, N + 1), np.int64)  # the last grid point with K ≤ κ (point 0: t = 0, K = 0)
    for s in range(S):
        for c in range(C):
            cell[s, c] = np.searchsorted(K[s, c], kappa[s, 0], side="right") - 1
    up = np.minimum(cell + 1, m - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logT, logK, target = np.log(T), np.log(K), np.log(kappa)
        a, b = np.take_along_axis(logT, np.maximum(cell, 1), -1), np.take_along_axis(logT, up, -1)
        fa, fb = np.take_along_axis(logK, np.maximum(cell, 1), -1) - target, np.take_along_axis(logK, up, -1) - target
        a = np.where(cell == 0, a - 0.5 * fa, a)  # below the grid's first point, K ≈ K_1·(t/t_1)² (t → 0)
        side = np.zeros(a.shape, np.int8)
        for _ in range(8):  # Illinois regula falsi on log K(log t) − log κ, kept bracketed: K(e^a) ≤ κ
            x = b - fb * (b - a) / (fb - fa)
            live = (cell > 0) & (up > cell) & (fa < 0)
            x = np.where(live & np.isfinite(x) & (x > a) & (x < b), x, 0.5 * (a + b))
            fx = np.where(live, np.log(evaluate(np.exp(np.where(live, x, a)))[1]) - target, 0.0)
            left = live & ~(fx > 0)  # NaN (out of range) counts as above
            right = live & (fx > 0) | live & np.isnan(fx)
            fb = np.where(left & (side == -1), 0.5 * fb, fb)
            fa = np.where(right & (side == 1), 0.5 * fa, fa)
            a, fa = np.where(left, x, a), np.where(left, fx, fa)
            b, fb = np.where(right, x, b), np.where(right, np.where(np.isnan(fx), np.inf, fx), fb)
            side = np.where(left, -1, np.where(right, 1, side)).astype(np.int8)
    t = np.exp(a)  # K(t) ≤ κ: feasible
    t[:, :, 0] = 0.0
    Hk, Kk = evaluate(t)
    gain = np.where(np.isfinite(Hk) & np.isfinite(Kk), Hk - H0[:, :, None], -np.inf)
    gain[:, :, 0] = 0.0
    curve = np.argmax(gain, 1)  # (S, N + 1)
    value = np.take_along_axis(gain, curve[:, None, :], 1)[:, 0, :]
    k = np.arange(N + 1)
    best = np.maximum.accumulate(value, 1)  # with at most k units; reached at at[s, k] units
    at = np.maximum.accumulate(np.where(value > np.concatenate([np.full((S, 1), -np.inf), best[:, :-1]], 1), k, 0), 1)
    value = best
    total, choice = np.zeros(N + 1), np.zeros((S, N + 1), np.int64)
    padded = np.full(2 * N + 1, -np.inf)
    for s in range(S):  # total'[k] = max_{j ≤ k} total[k − j] + value[s, j]; M[k, j] = padded[N + k − j]
        padded[N:] = total
        M = sliding_window_view(padded, N + 1)[:, ::-1] + value[s]
        choice[s] = np.argmax(M, 1)
        total = M[k, choice[s]]
    left, units = N, np.zeros(S, np.int64)
    for s in range(S - 1, -1, -1):
        units[s] = at[s, choice[s, left]]
        left -= choice[s, left]
    rows = np.arange(S)
    c = curve[rows, units]
    return t[rows, c, units], c


def _scale_to(measure, eps, what) -> float:
    """The common factor c ≥ 0 of the allocated parameters with ``measure(c)`` = ε (:func:`_solve`);
    ConfigError where the model at c leaves float32 (``measure`` is not finite there)."""
    def f(c):
        m = measure(c)
        if not math.isfinite(m):
            raise ConfigError(f"eps: {eps:g} nats needs {what} beyond float32's range on the task's contexts (the "
                              "budget per context, ε/p_L(contexts), is too large)")
        return m

    with np.errstate(over="ignore", invalid="ignore"):
        return _solve(f, eps, what)


def _stored_at(params, excess, p_L, eps, t, what):
    """The float32 parameters ``params(x)`` (``x (S,)``: each context's signed distance along its direction)
    whose per-context ``excess`` averages to ε under p_L, solved on the rounded values the LM stores: a
    common factor c of the allocation ``t`` first; the realised ε is then a step function of c (one entry
    rounding the other way moves it by up to ~1e-6 of ε), so the last nats are put on one moved context —
    the one whose entries round in the smallest steps, p_L(s)·max|θ_s| least, among those holding ≥ 10× the
    residual — by solving its own factor (relative error ≲ 1e-9 where that context exists; 6.3e-6 seen where
    none does).  Where the rounded parameters cannot come within :data:`STORED_RTOL` of ε (parameters so
    large that one rounding jumps ε: the indicative-sign task's softmax tilt at |θ| ≈ 9e7 landed 31 % off), a
    ConfigError says so: an LM is never returned at another ε than it was asked for."""
    def measure(x):
        return float(p_L @ excess(params(x)))

    c = _scale_to(lambda c: measure(c * t), eps, what)
    x = c * t
    best = params(x)
    r = eps - measure(x)
    ex = excess(best)
    ok = (t != 0) & (p_L * ex >= 10.0 * abs(r))
    if abs(r) > 1e-12 * eps and ok.any():
        k = np.flatnonzero(ok)[np.argmin((p_L * np.abs(best).max(-1))[ok])]

        def f(a):
            y = x.copy()
            y[k] *= a
            return measure(y)

        hi = 2.0
        while f(hi) < eps and hi < 2.0**20:
            hi *= 2.0
        if f(0.0) <= eps <= f(hi):
            with np.errstate(over="ignore", invalid="ignore"):
                a = brentq(lambda a: f(a) - eps, 0.0, hi, xtol=1e-300, rtol=1e-15, maxiter=500)
            if abs(f(a) - eps) < abs(r):
                x = x.copy()
                x[k] *= a
                best = params(x)
    reached = measure(x)
    if not abs(reached - eps) <= STORED_RTOL * eps:  # labelled ε, but another ε: refused, never yielded as it
        raise ConfigError(f"eps: the float32 parameters of {what} cannot realise {eps:g} nats on the task's "
                          f"contexts: the nearest solved is {reached:.6g} (off by {abs(reached / eps - 1):.2g} "
                          f"relative; the parameters reach |θ| ≈ {float(np.abs(best).max()):.3g}, where ε jumps "
                          f"as entries round)")
    return best


# ---- the law adversaries ----------------------------------------------------------------------------

def _law_curves(P, v, b, pos, neg):
    """The extreme laws of each context along two curves, the score up (curve 0) and down (curve 1), with
    parameter t ≥ 0: ``(evaluate, gap, laws)``, ``evaluate`` and ``gap`` for :func:`_allocate`, ``laws(t (S,),
    curve (S,))`` the laws ``(S, V)`` at those points.

    Branch A: p ∝ p*/(1 + t·gap), gap = top − v on supp p*, top the largest v (curve 1: −v) over every word
    if a word off the support has it, else over the support — the KKT laws p ∝ p*/(ν − v), ν = top + 1/t.
    Where a word off the support is beyond v's range on it, KL(p* ‖ p) does not charge for its mass: past
    t₁ = 1e8/min gap (branch A within 1e-8 of its limit p ∝ p*/gap) branch B moves the mass 1 − m, m = t₁/t,
    onto that word, p = m·p_A(t₁) + (1 − m)·e_w, KL = KL_A(t₁) − log m (the KKT laws at ν = top)."""
    on = P > 0
    sv = np.array([1.0, -1.0])[:, None] * v[None, :]  # (2, V): the score up, and down as −v up
    top_on = np.max(np.where(on[:, None, :], sv, -np.inf), -1)  # (S, 2)
    off_best = np.where(on[:, None, :], -np.inf, sv)  # (S, 2, V)
    beyond = off_best.max(-1) > top_on  # a word off the support moves the score further than any on it
    top = np.where(beyond, off_best.max(-1), top_on)
    word = off_best.argmax(-1)  # (S, 2): the word branch B fills
    gap = np.where(on[:, None, :], top[..., None] - sv, 0.0)  # (S, 2, V)
    with np.errstate(divide="ignore"):
        t1 = np.where(beyond, 1e8 / np.min(np.where(on[:, None, :], gap, np.inf), -1), np.inf)  # (S, 2)
    v_word = v[word]

    def along(T, gap, t1, v_word, Pc, onc):
        """(law on the support scaled by m, Z, m, KL, score) at T, broadcast over leading axes."""
        d = 1.0 + np.minimum(T, t1)[..., None] * gap
        q = Pc / d
        Z = q.sum(-1)
        m = np.where(T > t1, t1 / np.maximum(T, 1e-300), 1.0)
        K = np.sum(np.where(onc, Pc * np.log(d), 0.0), -1) + np.log(Z) - np.log(m)
        z = m * ((q @ v) / Z) + (1.0 - m) * v_word + b
        return q, Z, m, K, z

    def evaluate(T):
        _, _, _, K, z = along(T, gap[:, :, None, :], t1[..., None], v_word[..., None], P[:, None, None, :],
                              on[:, None, None, :])
        return _loss(z, pos[:, None, None], neg[:, None, None]), K

    def laws(t, curve):
        rows = np.arange(len(P))
        q, Z, m, _, _ = along(t, gap[rows, curve], t1[rows, curve], v_word[rows, curve], P, on)
        out = m[:, None] * q / Z[:, None]
        out[rows, word[rows, curve]] += np.where(beyond[rows, curve], 1.0 - m, 0.0)
        return out

    return evaluate, gap, laws


def _exact_laws(P, logP, task, v, b, p_L, eps):
    """:func:`_allocate` over the extreme laws of the task's contexts, scaled to ε exactly: laws ``(S, V)``."""
    on = np.flatnonzero(task.weights > 0)
    evaluate, gap, curve_laws = _law_curves(P[on], v, b, task.pos[on], task.neg[on])
    S = len(on)
    cap = np.where(gap.max(-1) > 1e-12, _LAW_T_MAX, 1.0)  # a curve that moves nothing stays at t ≤ 1
    t_lo, t_hi = _bracket(evaluate, S, 2, eps / np.maximum(p_L[on], 1e-300), _KAPPA_LO * eps, cap)
    t, curve = _allocate(evaluate, t_lo, t_hi, p_L[on], eps, "the worst-case laws")

    def laws(c):
        out = P.copy()
        out[on] = curve_laws(c * t, curve)
        return out

    try:
        c = _scale_to(lambda c: _kl_fast(P, laws(c), p_L), eps, "the worst-case laws")
    except ConfigError:  # every context saturated: spending the rest would push laws out of float64
        raise ConfigError(f"eps: {eps:g} nats is more than the task's contexts absorb: the worst-case laws that spend "
                          "it underflows float64 (the budget per context, ε/p_L(contexts), is too large)") from None
    return laws(c)


def _kl_fast(P, laws, p_L) -> float:
    """E_{p_L} KL(p* ‖ laws) in float64 (0·log 0 = 0), without :func:`lm_epsilon`'s checks (the root finder
    calls it many times; the result is checked with :func:`lm_epsilon`)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # 0·∞ where p* = 0 = laws: masked out
        return float(p_L @ np.sum(np.where(P > 0, P * (np.log(np.where(P > 0, P, 1.0)) - np.log(laws)), 0.0), -1))


def adversarial_laws(contexts, task, eps, *, method: str = "aligned", B=None, B_grid=None, steps: int = 200,
                     cache=None) -> np.ndarray:
    """Laws p_f ``(S, V)`` with E_{p_L} KL(p*_s ‖ p_f(s)) = ``eps`` (~1e-12 relative; refused past :data:`EPS_RTOL`)
    that make the τ-optimal classifier at radius ``B`` (default :func:`adversary_radius`) transfer badly:
    ``method`` ``"aligned"`` (the tilt) or ``"search"`` (the worst-case split, then ``steps`` ascent steps);
    see the module docstring.  ``cache`` is τ's cache (:func:`~simlm.theory.natural_tasks.tau`).
    ConfigError if no law moves (v constant on every task context's support: the tilt's KL stays 0; else it
    grows without bound in t) or if the laws solving ε underflow float64 (too large a budget per context)."""
    contexts, eps = _check(contexts, task, eps, method)
    steps = check_positive_int("steps", steps, minimum=1)
    B = adversary_radius(contexts, task, eps, B_grid=B_grid, cache=cache) if B is None else check_positive("B", B)
    P = np.asarray(contexts.next_token_probs, np.float64)
    p_L = contexts.weights / contexts.weights.sum()
    with np.errstate(divide="ignore"):
        logP = np.log(P)
    v, b = _classifier(contexts, task, B, None, "inf", cache, B_grid)
    if not np.any(np.abs(v) > 0):
        raise ConfigError(f"task: the τ-optimal classifier at B = {B:g} is 0, so no law moves its scores")

    def tilt():
        eta = -(_directions(P, task, v, b)[:, None] * v[None, :]) / B
        t = _solve(lambda t: _kl_of_shift(logP, t * eta, p_L), eps, "the aligned tilt", _tilt_supremum(P, eta, p_L))
        return np.exp(logP + t * eta - logsumexp(logP + t * eta, axis=-1, keepdims=True)), t

    if method == "aligned":
        laws, t = tilt()
        where = f"the tilt at t = {t:g}"
    else:
        found, errors = [], []
        for build in (lambda: _exact_laws(P, logP, task, v, b, p_L, eps), lambda: tilt()[0]):
            try:
                cand = build()
            except ConfigError as e:
                errors.append(e)
                continue
            if np.all(np.where(P > 0, cand, 1.0) > 0) and abs(_kl_fast(P, cand, p_L) - eps) <= EPS_RTOL * eps:
                found.append(cand)
        if not found:
            raise errors[0] if errors else ConfigError(
                f"eps: {eps:g} nats is too small to resolve in float64 on the task's contexts: both candidate "
                f"laws miss it by more than {EPS_RTOL:g} relative (the KL's rounding)")
        def loss(q):
            return logistic_loss(q @ v + b, task.pos, task.neg)

        start = max(found, key=loss)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.where(P > 0, np.log(start) - logP, 0.0)
        eta = _ascend(np.where(P > 0, logP, -np.inf), eta, v, b, task, p_L, eps, steps)
        # the ascent moves the logits of supp p* only: from laws with mass off the support (a word beyond
        # v's range there) it starts without that mass, and is kept only where it ends higher
        laws = max([start, np.exp(logP + eta - logsumexp(logP + eta, axis=-1, keepdims=True))], key=loss)
        where = "the worst-case split"
    reached = lm_epsilon(contexts, laws)
    if not math.isfinite(reached):
        raise ConfigError(f"eps: {eps:g} nats needs p_f(w | s) below float64's smallest number on the task's contexts "
                          f"({where} underflows: the budget per context, ε/p_L(contexts), is too large)")
    if not abs(reached - eps) <= EPS_RTOL * eps:
        raise ConfigError(f"eps: the adversary reached {reached:.6g} nats, not {eps:g} (float64 rounding in {where})")
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
        # along the tangent space of {E_{p_L} KL = ε} (∂KL/∂η_s = p_L(s)(p_s − p*_s)) in the metric diag(1/w): the
        # preconditioned gradient itself, then scaled back to ε by c·η, is no ascent direction on the constraint,
        # and the ascent stalled where it started (a review, 2026-12-07: from the aligned tilt 0.2545 of the slack
        # against the worst case's 0.2990, 60 steps or 600 alike)
        kg = np.where(on[:, None], p_L[:, None] * (laws - np.exp(logP)), 0.0)
        Dg, Dk = np.where(on[:, None], grad / w[:, None], 0.0), kg / w[:, None]
        den = float(np.sum(kg * Dk))
        d = Dg - (float(np.sum(kg * Dg)) / den) * Dk if den > 0 else Dg
        norm = np.linalg.norm(d)
        if norm == 0 or step < 1e-8:
            break
        try:
            cand = retract(eta + step * np.linalg.norm(eta) * d / norm)
        except ConfigError:
            step *= 0.5
            continue
        cand_laws, cand_F = loss(cand)
        if cand_F > F and np.all(np.isfinite(cand)):
            eta, laws, F, step = cand, cand_laws, cand_F, min(step * 1.5, 2.0)
        else:
            step *= 0.5
    return eta


# ---- the softmax and Quad adversaries ---------------------------------------------------------------

def _float32(a) -> np.ndarray:
    """``a`` rounded to float32, as float64: what a :class:`SoftmaxContextLM` stores and the check reads."""
    return np.asarray(np.asarray(a, np.float32), np.float64)


def _phi32(phi, V) -> np.ndarray:
    return _float32(check_phi(phi, V, "phi"))


def adversarial_softmax_lm(contexts, task, eps_phi, phi, *, B=None, B_grid=None, cache=None) -> SoftmaxContextLM:
    """A softmax LM softmax(Φᵀθ_s) with ε_Φ = E_{p_L}[ℓ_s(θ_s) − min ℓ_s] = ``eps_phi``, solved on the θ
    and Φ rounded to float32 as the LM stores them (:func:`_stored_at`; relative error ≲ 1e-8 where the
    check measures it, against 3.5e-6 when it was solved on float64 θ and Φ — but up to 3e-5 where θ is large
    and its float32 steps coarse: 1e-4 asked, 9.9997e-5 made, at max |θ| ≈ 1.3e3 on a 2-state world, a
    review 2026-12-08; refused past :data:`STORED_RTOL`, where rounding jumps ε across it): the cross-entropy
    optimum θ* (float64-polished, as :func:`~simlm.theory.natural_tasks.softmax_excess`) moved along the
    τ_Φ-optimal direction at ``B`` on the task's contexts, θ_s = θ*_s ± t_s·λ with Φᵀλ = v (the first-order
    best direction per context), the t_s split across contexts by :func:`_allocate`.
    Φ is used as the LM stores it, rounded to float32."""
    contexts, eps_phi = _check(contexts, task, eps_phi, "aligned")
    P = np.asarray(contexts.next_token_probs, np.float64)
    phi = _phi32(phi, P.shape[1])
    p_L = contexts.weights / contexts.weights.sum()
    if B is None:
        B = adversary_radius(contexts, task, eps_phi, B_grid=B_grid, Phi=phi, cache=cache)
    v, b = _classifier(contexts, task, check_positive("B", B), phi, "inf", cache, B_grid)
    lam = np.linalg.lstsq(phi.T, v, rcond=None)[0]
    u = lam @ phi
    if not np.any(np.abs(u) > 0):
        raise ConfigError(f"task: the τ_Φ-optimal classifier at B = {B:g} is 0, so no θ moves its scores")
    base = polish_softmax_fit(fit_cross_entropy(P, phi).theta, phi, P)  # the floor softmax_excess measures from
    floor = softmax_objective(base, phi, P)
    on = np.flatnonzero(task.weights > 0)
    logits0 = base[on] @ phi
    lse0, m = logsumexp(logits0, -1), (P[on] @ phi.T) @ lam
    sign = np.array([1.0, -1.0])

    def evaluate(T):
        ts = sign[None, :, None] * T
        logits = logits0[:, None, None, :] + ts[..., None] * u
        lse = logsumexp(logits, -1)
        z = np.exp(logits - lse[..., None]) @ v + b
        return _loss(z, task.pos[on][:, None, None], task.neg[on][:, None, None]), lse - lse0[:, None, None] - ts * m[:, None, None]

    cap = np.full((len(on), 2), _LOGIT_SPAN / np.ptp(u) if np.ptp(u) > 0 else 1.0)  # beyond: laws underflow
    t_lo, t_hi = _bracket(evaluate, len(on), 2, eps_phi / np.maximum(p_L[on], 1e-300), _KAPPA_LO * eps_phi, cap)
    t, curve = _allocate(evaluate, t_lo, t_hi, p_L[on], eps_phi, "the softmax tilt")
    step = np.zeros(len(P))
    step[on] = sign[curve] * t
    theta = _stored_at(lambda x: _float32(base + x[:, None] * lam[None, :]),
                       lambda th: np.maximum(softmax_objective(th, phi, P) - floor, 0.0), p_L, eps_phi, step,
                       "the softmax tilt")
    return SoftmaxContextLM(theta, phi)


def adversarial_quad_lm(contexts, task, eps_quad, phi, *, B=None, B_grid=None, cache=None) -> SoftmaxContextLM:
    """Quad features f ``(S, d)`` (as the θ of a :class:`SoftmaxContextLM` with Φ = ``phi``, rounded to
    float32) with ε_quad = ``eps_quad``, solved on the rounded f and Φ as the LM stores them
    (:func:`_stored_at`; relative error ≲ 1e-8, refused past :data:`STORED_RTOL`), the worst for the τ⁽²⁾-optimal v
    at ``B``: f_s = f*_s ± t_s·w on the task's contexts,
    Φᵀw = v/‖v‖₂, so each score moves by t_s‖v‖₂ at Quad excess ½t_s², the most that excess allows
    (Cauchy–Schwarz is tight); the t_s split across contexts by :func:`_allocate`."""
    contexts, eps_quad = _check(contexts, task, eps_quad, "aligned")
    P = np.asarray(contexts.next_token_probs, np.float64)
    phi = _phi32(phi, P.shape[1])
    p_L = contexts.weights / contexts.weights.sum()
    if B is None:
        B = adversary_radius(contexts, task, eps_quad, B_grid=B_grid, Phi=phi, norm="2", cache=cache)
    v, b = _classifier(contexts, task, check_positive("B", B), phi, "2", cache, B_grid)
    size = np.linalg.norm(v)
    if size == 0:
        raise ConfigError(f"task: the τ⁽²⁾-optimal classifier at B = {B:g} is 0, so no feature moves its scores")
    w = np.linalg.lstsq(phi.T, v / size, rcond=None)[0]
    u = w @ phi
    base = np.asarray(quad_minimiser(P, phi), np.float64)
    on = np.flatnonzero(task.weights > 0)
    z0, gain, cost = (base[on] @ phi) @ v + b, float(u @ v), float(u @ u)
    sign = np.array([1.0, -1.0])

    def evaluate(T):
        z = z0[:, None, None] + sign[None, :, None] * T * gain
        return _loss(z, task.pos[on][:, None, None], task.neg[on][:, None, None]), 0.5 * cost * T**2

    t_hi = np.repeat(np.sqrt(2.0 * eps_quad / np.maximum(p_L[on], 1e-300) / cost)[:, None], 2, 1)
    t_lo = np.full_like(t_hi, math.sqrt(2.0 * _KAPPA_LO * eps_quad / cost))
    t, curve = _allocate(evaluate, np.minimum(t_lo, t_hi / 4.0), t_hi, p_L[on], eps_quad, "the Quad shift")
    step = np.zeros(len(P))
    step[on] = sign[curve] * t
    target = P @ (np.linalg.pinv(phi) @ phi)  # Φᵀf* = Π_Φ p*, as quad_excess measures it
    f = _stored_at(lambda x: _float32(base + x[:, None] * w[None, :]),
                   lambda f: 0.5 * np.sum((f @ phi - target) ** 2, -1), p_L, eps_quad, step, "the Quad shift")
    return SoftmaxContextLM(f, phi)


__all__ = ["METHODS", "adversarial_laws", "adversarial_softmax_lm", "adversarial_quad_lm", "adversary_radius",
           "well_specified_radius"]
