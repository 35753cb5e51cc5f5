"""The convex programs behind the natural-task bounds: norm-constrained logistic regression.

Every problem here is, for features x_s ∈ R^k (one row per context) and label weights
a_s = p_T(s)·P(y = +1 | s), c_s = p_T(s)·P(y = −1 | s) (Σ_s a_s + c_s = 1),

    F(v, b) = Σ_s a_s ℓ(z_s, +1) + c_s ℓ(z_s, −1),   z_s = ⟨v, x_s⟩ + b,   ℓ(z, y) = log(1 + e^{−yz}),

minimised over a compact convex set C_B ∋ (v, b); the bias is always boxed, |b| ≤ B, so a minimiser
exists even when p_T puts every context in one class.  The constraint sets on v:

- ``"box"``        ‖v‖_∞ ≤ B;
- ``"span-ball"``  v ∈ range(U) and ‖v‖₂ ≤ B, with U (k, r) orthonormal (projection: UUᵀ, then scale);
- ``"span-box"``   v ∈ range(U) and ‖v‖_∞ ≤ B (v = Uα, a polytope in α).

The first two are solved in JAX by accelerated projected gradient (FISTA with O'Donoghue–Candès
gradient restarts, step 1/L with L = ¼ λ_max(Σ_s (a_s + c_s) x̃_s x̃_sᵀ), x̃ = (x, 1)), vmapped over a
grid of B, keeping the best iterate; the box's answer is then polished by L-BFGS-B (scipy; the box is
its native bound constraint), since FISTA stalls at large B where the optimum sits in a flat, badly
conditioned corner (τ up to 0.024 nats above the minimum at B = 64–256 in the natural-task sweep), and the
span-ball's by SLSQP in α (‖α‖₂ ≤ B; τ 7.4e-5 against 4.0e-6 at B = 256 on near-separable data before);
the third by SLSQP in α (scipy) — it has no cheap projection.
The unconstrained optimum over range(U) (Newton, ridge 1e-12) replaces the result wherever it lies in
C_B and is better: first-order methods crawl towards interior optima of ill-conditioned features.
Every returned point is exactly feasible (rescaled into C_B at the end) and comes with its
Frank–Wolfe gap  G = max_{(v', b') ∈ C_B} ⟨∇F(v, b), (v, b) − (v', b')⟩ ≥ F(v, b) − min_{C_B} F,
a certificate of suboptimality (for span-box the inner maximum is a linear program).

:func:`ridge_logistic` is the unconstrained probe: F + ½ρ‖(v, b)‖², solved by Newton's method;
:func:`polish_softmax_fit` refines a softmax cross-entropy fit min_θ ℓ_s(θ) in float64.
All arithmetic is float64.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linprog, minimize
from scipy.special import expit

from simlm.checks import check_non_negative, check_real_array
from simlm.errors import ConfigError, ShapeError
from simlm.precision import exact
from simlm.runtime import one_blas_thread

CONSTRAINTS = ("box", "span-ball", "span-box")
FISTA_STEPS = 3000


@dataclasses.dataclass(frozen=True, eq=False)
class LogisticSolution:
    """Minimisers over a grid of radii: ``v (G, k)``, ``b (G,)``, ``loss (G,)`` = F(v, b) and
    ``gap (G,)`` the Frank–Wolfe certificate (F − min F ≤ gap)."""

    v: np.ndarray
    b: np.ndarray
    loss: np.ndarray
    gap: np.ndarray


def logistic_loss(z, pos, neg) -> float:
    """Σ_s a_s log(1 + e^{−z_s}) + c_s log(1 + e^{z_s}), nats."""
    return float(np.sum(pos * np.logaddexp(0.0, -z) + neg * np.logaddexp(0.0, z)))


def zero_one_error(z, pos, neg) -> float:
    """Σ_s a_s 1[z_s < 0] + c_s 1[z_s ≥ 0]: the 0-1 error of predicting sign(z) (0 ↦ +1)."""
    return float(np.sum(np.where(z < 0, pos, neg)))


def _grad(X, pos, neg, v, b):
    s = expit(X @ v + b)
    dz = neg * s - pos * (1.0 - s)
    return X.T @ dz, float(dz.sum())


def _lipschitz(X, pos, neg) -> float:
    Xt = np.hstack([X, np.ones((len(X), 1))])
    return 0.25 * float(np.linalg.eigvalsh((Xt * (pos + neg)[:, None]).T @ Xt)[-1]) + 1e-12


@partial(jax.jit, static_argnames=("kind", "steps"))
@exact
def _fista(X, pos, neg, Bs, P, v0, b0, step, kind, steps):
    def F(v, b):
        z = X @ v + b
        return jnp.sum(pos * jax.nn.softplus(-z) + neg * jax.nn.softplus(z))

    grad = jax.grad(F, argnums=(0, 1))

    def project(v, b, B):
        b = jnp.clip(b, -B, B)
        if kind == "box":
            return jnp.clip(v, -B, B), b
        v = P @ v
        return v * jnp.minimum(1.0, B / jnp.maximum(jnp.linalg.norm(v), 1e-300)), b

    def solve(B, v, b):
        v, b = project(v, b, B)

        def body(_, c):
            v, b, yv, yb, t, best = c
            gv, gb = grad(yv, yb)
            nv, nb = project(yv - step * gv, yb - step * gb, B)
            restart = jnp.dot(yv - nv, nv - v) + (yb - nb) * (nb - b) > 0
            tn = jnp.where(restart, 1.0, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)))
            mom = jnp.where(restart, 0.0, (t - 1.0) / tn)
            f = F(nv, nb)
            best = jax.tree_util.tree_map(lambda new, old: jnp.where(f < best[2], new, old), (nv, nb, f), best)
            return nv, nb, nv + mom * (nv - v), nb + mom * (nb - b), tn, best

        init = (v, b, v, b, jnp.asarray(1.0, v.dtype), (v, b, F(v, b)))
        return jax.lax.fori_loop(0, steps, body, init)[-1]

    return jax.vmap(solve)(Bs, v0, b0)


def _stacked(X, pos, neg):
    """F and its gradient as scipy's minimisers take them, in x = (v, b) stacked."""
    k = X.shape[1]

    def fun(x):
        gv, gb = _grad(X, pos, neg, x[:k], x[k])
        return logistic_loss(X @ x[:k] + x[k], pos, neg), np.append(gv, gb)

    return fun


def _span_box(X, pos, neg, B, U, v0, b0):
    """SLSQP in (α, b) with v = Uα, |Uα| ≤ B, |b| ≤ B, from (v0, b0) made feasible; the better of its answer
    (made feasible) and that start, as (v, b, loss)."""
    r = U.shape[1]
    XU = X @ U
    fun = _stacked(XU, pos, neg)

    def feasible(v, b):
        v = U @ (U.T @ v)
        return v * min(1.0, B / max(np.abs(v).max(), 1e-300)), float(np.clip(b, -B, B))

    v0, b0 = feasible(v0, b0)
    cons = {"type": "ineq", "fun": lambda x: np.concatenate([B - U @ x[:r], B + U @ x[:r]]),
            "jac": lambda x: np.hstack([np.vstack([-U, U]), np.zeros((2 * len(U), 1))])}
    res = minimize(fun, np.append(U.T @ v0, b0), jac=True, method="SLSQP", constraints=[cons],
                   bounds=[(None, None)] * r + [(-B, B)], options={"ftol": 1e-14, "maxiter": 1000})
    cands = [feasible(U @ res.x[:r], res.x[r]), (v0, b0)]
    losses = [logistic_loss(X @ v + b, pos, neg) for v, b in cands]
    v, b = cands[int(np.argmin(losses))]
    return v, b, min(losses)


def _polish_box(X, pos, neg, B, v, b, loss):
    """L-BFGS-B over the box |v|, |b| ≤ B, unless (v, b) is already certified (Frank–Wolfe gap ≤ 1e-9):
    from (v, b), and, if that ends with a gap above 1e-7, from (0, 0) too (a start deep in a saturated
    corner can leave it short).  The best of the answers (clipped into the box) and the start, as
    (v, b, loss)."""
    k, fun = X.shape[1], _stacked(X, pos, neg)
    best = (v, b, loss)
    for start, enough in ((np.append(v, b), 1e-9), (np.zeros(k + 1), 1e-7)):
        if frank_wolfe_gap(X, pos, neg, best[0], best[1], B, "box", None) <= enough:
            break
        res = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=[(-B, B)] * (k + 1),
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
        x = np.clip(res.x, -B, B)
        new = logistic_loss(X @ x[:k] + x[k], pos, neg)
        if new < best[2]:
            best = (x[:k], float(x[k]), new)
    return best


def _polish_span_ball(X, pos, neg, B, U, v, b, loss):
    """SLSQP in (α, b) with v = Uα, ‖α‖₂ ≤ B (U orthonormal: ‖v‖₂ = ‖α‖₂), |b| ≤ B, unless (v, b) is already
    certified (Frank–Wolfe gap ≤ 1e-9): FISTA approaches a saturated optimum (near-separable data, large B)
    slowly.  From (v, b), and, if that ends with a gap above 1e-7, from (0, 0) too, as :func:`_polish_box`.
    The best of the answers (made feasible) and the start, as (v, b, loss)."""
    r = U.shape[1]
    fun = _stacked(X @ U, pos, neg)
    cons = {"type": "ineq", "fun": lambda x: B * B - x[:r] @ x[:r],
            "jac": lambda x: np.append(-2.0 * x[:r], 0.0)}
    best = (v, b, loss)
    for start, enough in ((np.append(U.T @ v, b), 1e-9), (np.zeros(r + 1), 1e-7)):  # as _polish_box
        if frank_wolfe_gap(X, pos, neg, best[0], best[1], B, "span-ball", U) <= enough:
            break
        res = minimize(fun, start, jac=True, method="SLSQP", constraints=[cons],
                       bounds=[(None, None)] * r + [(-B, B)], options={"ftol": 1e-15, "maxiter": 2000})
        a = res.x[:r] * min(1.0, B / max(np.linalg.norm(res.x[:r]), 1e-300))
        v_new, b_new = U @ a, float(np.clip(res.x[r], -B, B))
        new = logistic_loss(X @ v_new + b_new, pos, neg)
        if new < best[2]:
            best = (v_new, b_new, new)
    return best


def frank_wolfe_gap(X, pos, neg, v, b, B, constraint, U) -> float:
    """max_{(v', b') ∈ C_B} ⟨∇F(v, b), (v − v', b − b')⟩ ≥ F(v, b) − min_{C_B} F (convexity)."""
    gv, gb = _grad(X, pos, neg, v, b)
    if constraint == "box":
        low = -B * np.abs(gv).sum()
    elif constraint == "span-ball":
        low = -B * np.linalg.norm(U.T @ gv)
    else:  # min over the polytope {α : |Uα| ≤ B} of ⟨c, α⟩, c = Uᵀg: a linear program, solved for c/‖c‖;
        c = U.T @ gv  # if it fails, ‖α‖₂ = ‖Uα‖₂ ≤ B√V still gives the (looser) −B√V‖c‖
        scale = np.linalg.norm(c)
        lp = linprog(c / scale, A_ub=np.vstack([U, -U]), b_ub=np.full(2 * len(U), B),
                     bounds=[(None, None)] * U.shape[1], method="highs") if scale > 0 else None
        low = 0.0 if scale == 0 else scale * (lp.fun if lp.status == 0 else -B * np.sqrt(len(U)))
    return max(float(gv @ v + gb * b - low + B * abs(gb)), 0.0)


@one_blas_thread
def constrained_logistic(X, pos, neg, B_grid, constraint: str, *, basis=None, init=None) -> LogisticSolution:
    """min_{(v, b) ∈ C_B} F(v, b) for each B in ``B_grid (G,)``: ``X (n, k)``, ``pos, neg (n,)``;
    ``basis`` U (k, r) orthonormal for the span constraints; ``init`` optional ((G, k), (G,)) start
    (the returned loss is never above the start's, projected into C_B)."""
    if not isinstance(constraint, str) or constraint not in CONSTRAINTS:
        raise ConfigError(f"constraint: expected one of {CONSTRAINTS}, got {constraint!r}")
    X, pos, neg, Bs = (check_real_array(name, a) for name, a in
                       (("X", X), ("pos", pos), ("neg", neg), ("B_grid", B_grid)))
    if X.ndim != 2 or pos.shape != (len(X),) or neg.shape != (len(X),) or Bs.ndim != 1:
        raise ShapeError(f"X, pos, neg, B_grid: expected (n, k), (n,), (n,) and (G,), got {X.shape}, {pos.shape}, "
                         f"{neg.shape} and {Bs.shape}")
    for name, a in (("pos", pos), ("neg", neg), ("B_grid", Bs)):
        if np.any(a < 0) or (name == "B_grid" and np.any(a == 0)):
            raise ConfigError(f"{name}: expected {'positive' if name == 'B_grid' else 'non-negative'} entries, "
                              f"got {a.min()!r}")
    G, k = len(Bs), X.shape[1]
    v0, b0 = (np.zeros((G, k)), np.zeros(G)) if init is None else (check_real_array("init", init[0]),
                                                                   check_real_array("init", init[1]))
    if v0.shape != (G, k) or b0.shape != (G,):
        raise ShapeError(f"init: expected ((G, k), (G,)) = ({(G, k)}, {(G,)}), got ({v0.shape}, {b0.shape})")
    U = np.eye(k) if basis is None else check_real_array("basis", basis)
    # both the projection UUᵀ and the span-ball polish (‖α‖ = ‖Uα‖) assume orthonormal columns: others gave an
    # infeasible v with a loss below the true minimum and a gap of 7e-10 (a review, 2026-12-06)
    if U.ndim != 2 or U.shape[0] != k or U.shape[1] > k:
        raise ShapeError(f"basis: expected (k, r) with r ≤ k = {k} (X's columns), got {U.shape}")
    if not np.allclose(U.T @ U, np.eye(U.shape[1]), rtol=0, atol=1e-10):
        raise ConfigError("basis: expected orthonormal columns (UᵀU = I to 1e-10), got |UᵀU − I| up to "
                          f"{np.abs(U.T @ U - np.eye(U.shape[1])).max():.3g}")
    if constraint == "span-box":
        v, b, loss = (np.asarray(a) for a in zip(*[_span_box(X, pos, neg, B, U, v0[i], b0[i])
                                                   for i, B in enumerate(Bs)]))
    else:
        with jax.enable_x64(True):
            res = _fista(X, pos, neg, Bs, U @ U.T, v0, b0, 1.0 / _lipschitz(X, pos, neg), constraint, FISTA_STEPS)
            v, b, loss = (np.array(a, np.float64) for a in res)
        polish = _polish_box if constraint == "box" else partial(_polish_span_ball, U=U)
        for i, B in enumerate(Bs):
            v[i], b[i], loss[i] = polish(X, pos, neg, B, v=v[i], b=b[i], loss=loss[i])
    # where the unconstrained optimum (in range(U)) lies inside C_B it is the answer, and first-order
    # methods approach it slowly when the features are ill-conditioned
    a_u, b_u = ridge_logistic(X @ U, pos, neg, 1e-12)
    v_u = U @ a_u
    loss_u = logistic_loss(X @ v_u + b_u, pos, neg)
    size = np.linalg.norm(v_u) if constraint == "span-ball" else np.abs(v_u).max()
    for i, B in enumerate(Bs):
        if size <= B and abs(b_u) <= B and loss_u < loss[i]:
            v[i], b[i], loss[i] = v_u, b_u, loss_u
    gap = np.array([frank_wolfe_gap(X, pos, neg, v[i], b[i], B, constraint, U) for i, B in enumerate(Bs)])
    return LogisticSolution(v, b, loss, gap)


@one_blas_thread
def ridge_logistic(X, pos, neg, l2: float, *, steps: int = 100, tol: float = 1e-10):
    """argmin_{v, b} F(v, b) + ½ l2 ‖(v, b)‖² by Newton's method with backtracking; returns (v, b).  With l2 = 0 on
    data a direction separates (or of one class) there is no argmin: the ``steps``-th iterate is returned, its
    loss near 0 and its norm set by ``steps`` (every caller in simlm passes l2 > 0)."""
    X, pos, neg = (check_real_array(name, a) for name, a in (("X", X), ("pos", pos), ("neg", neg)))
    if X.ndim != 2 or pos.shape != (len(X),) or neg.shape != (len(X),):
        raise ShapeError(f"X, pos, neg: expected (n, k), (n,) and (n,), got {X.shape}, {pos.shape} and {neg.shape}")
    if np.any(pos < 0) or np.any(neg < 0):
        raise ConfigError("pos, neg: expected non-negative weights, got "
                          f"{min(pos.min(initial=0), neg.min(initial=0))!r}")
    l2 = check_non_negative("l2", l2, finite=True)  # a negative ridge is no convex problem
    Xt = np.hstack([X, np.ones((len(X), 1))])
    w = np.zeros(Xt.shape[1])

    def obj(w):
        return logistic_loss(Xt @ w, pos, neg) + 0.5 * l2 * w @ w

    for _ in range(steps):
        s = expit(Xt @ w)
        g = Xt.T @ (neg * s - pos * (1.0 - s)) + l2 * w
        if np.linalg.norm(g) <= tol:
            break
        H = (Xt * ((pos + neg) * s * (1.0 - s))[:, None]).T @ Xt + l2 * np.eye(len(w))
        try:
            d = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:  # H singular in float64 (saturated scores, ridge ~1e-12): least squares
            d = np.linalg.lstsq(H, g, rcond=None)[0]
        t, f0 = 1.0, obj(w)
        while obj(w - t * d) > f0 - 1e-4 * t * (g @ d) and t > 1e-12:
            t *= 0.5
        w = w - t * d
    return w[:-1], float(w[-1])


def softmax_objective(theta, phi, P) -> np.ndarray:
    """ℓ_s(θ_s) = log Σ_w e^{⟨θ_s, φ_w⟩} − ⟨θ_s, Φp*_s⟩ per context, ``(S,)`` float64."""
    t = np.asarray(theta, np.float64)
    z = t @ phi
    mx = z.max(-1)
    return mx + np.log(np.exp(z - mx[:, None]).sum(-1)) - np.sum(t * (P @ phi.T), -1)


def polish_softmax_fit(theta, phi, P, steps: int = 64) -> np.ndarray:
    """Float64 Newton steps on each ℓ_s from ``theta (S, d)`` (a near-optimum; the Hessian Cov_{p_θ}(φ)
    pseudo-inverted, as ℓ_s is flat along Φᵀu ∝ 1; where that step gains nothing, its halvings, then gradient
    steps), until no context keeps its step or after ``steps``.  A step is kept where it lowers ℓ_s, or, once ℓ_s
    moves by less than float64 resolves, where it shrinks the gradient Φ(p_θ − p*_s).  Where p*_s has zeros the
    infimum is reached only as θ → ∞ and each step gains about a factor e on the rest: four steps (the former count)
    stopped 7e-11 nats above it (Φ = I,
    p* = (½, ½, 0)), the floor every ε above it is measured from."""
    t = np.asarray(theta, np.float64)
    m = P @ phi.T

    def moments(t):
        q = np.exp(t @ phi - (t @ phi).max(-1, keepdims=True))
        q /= q.sum(-1, keepdims=True)
        return q, q @ phi.T

    for _ in range(steps):
        q, mean = moments(t)
        g = mean - m
        H = np.einsum("sv,dv,ev->sde", q, phi, phi) - mean[:, :, None] * mean[:, None, :]
        step = np.stack([np.linalg.lstsq(h, r, rcond=1e-12)[0] for h, r in zip(H, g)])
        f_old = softmax_objective(t, phi, P)
        new, f_new = t - step, softmax_objective(t - step, phi, P)
        # Newton's full step can overshoot far from the optimum (θ = (3, 0, 0) for p* = (.7, .2, .1), Φ = I), and
        # where p_θ nearly misses tokens p*_s holds the pseudo-inverse drops their directions (curvature e⁻⁴⁰):
        # kept nowhere or kept as a step that barely moves, the fit came back up to 2.9 nats above the floor (a
        # review, 2026-12-06).  Where the full step does not lower ℓ_s by more than float64 resolves and the
        # gradient is not yet negligible: the longest of Newton's step halved that does, else the lowest of the
        # gradient steps 2¹⁰ … 2⁻⁴⁰ that does (Newton first: a greedy gradient jump taken while Newton still
        # gained landed where a token is nearly missed, 0.015 nats above the floor after 64 steps).
        # ℓ_s is a difference of terms as large as max_w |⟨θ, φ_w⟩|: float64 resolves it only to ~eps·that
        resolution = 16 * np.finfo(float).eps * (1.0 + np.abs(t @ phi).max(-1))
        stuck = (f_new >= f_old - resolution) & (np.linalg.norm(g, axis=-1) > 1e-9 * (1.0 + np.abs(phi).max()))
        for first, direction, scales in ((True, step, 0.5 ** np.arange(1, 41)), (False, g, 2.0 ** -np.arange(-10, 41))):
            live = np.flatnonzero(stuck)
            if not live.size:
                break
            t_live, d_live = t[live], direction[live]
            best_f, best = f_old[live] - resolution[live], np.full(live.size, -1)
            for i, c in enumerate(scales):
                f = softmax_objective(t_live - c * d_live, phi, P[live])
                lower = (f < best_f) & (best < 0) if first else f < best_f  # the longest halving; the lowest step
                best_f, best = np.where(lower, f, best_f), np.where(lower, i, best)
            hit = best >= 0
            new[live[hit]] = t_live[hit] - scales[best[hit]][:, None] * d_live[hit]
            f_new[live[hit]], stuck[live[hit]] = best_f[hit], False
        flat = (f_new <= f_old + resolution) & (
            np.linalg.norm(moments(new)[1] - m, axis=-1) < np.linalg.norm(g, axis=-1))
        keep = (f_new < f_old) | flat
        t = np.where(keep[:, None], new, t)
        if not keep.any():
            break
    return t


__all__ = ["CONSTRAINTS", "LogisticSolution", "constrained_logistic", "frank_wolfe_gap", "ridge_logistic",
           "logistic_loss", "zero_one_error", "softmax_objective", "polish_softmax_fit"]
