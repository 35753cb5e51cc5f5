"""The worst-case LMs of simlm.theory.adversarial against independent worst cases, and the edge cases of
γ_Φ, the log-partition fit and the adversaries' arguments found in review.

The worst (a) at a budget ε for a fixed classifier (v, b) is a split of ε over contexts, max Σ_s h_s(κ_s)
subject to Σ_s p_L(s)κ_s ≤ ε, with h_s(κ) the worst loss of context s at budget κ.  A knapsack over a
grid of N budget units brackets it: taking h_s at the units gives a feasible split (a lower bound),
taking h_s one unit up gives an upper bound (h_s is non-decreasing and a split's units sum to ≤ N).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp, rel_entr

from simlm.errors import ConfigError
from simlm.models.finite import fit_cross_entropy
from simlm.theory import adversarial as adv
from simlm.theory._convex import logistic_loss, polish_softmax_fit, softmax_objective
from simlm.theory.adversarial import adversarial_laws, adversarial_quad_lm, adversarial_softmax_lm
from simlm.theory.log_partition import log_partition_fit, random_embeddings
from simlm.theory.natural_tasks import (check_natural_task, gamma_phi, indicative_task, random_natural_task,
                                        tau)
from simlm.worlds import HMM, LogLinearWorld
from simlm.worlds.contexts import enumerate_contexts

GRID = [0.25, 1.0, 4.0]
N = 400  # budget units of the knapsack


def loss1(z, q):
    return q * np.logaddexp(0, -z) + (1 - q) * np.logaddexp(0, z)


def knapsack(values):
    """``values (S, N + 1)``: context s's value at k units.  (lower, upper): the best split of N units, and
    the same with each context's value read one unit up (an upper bound on the continuous split)."""
    idx = np.arange(N + 1)

    def best(shift):
        total = np.zeros(N + 1)
        for val in values:
            vv = np.append(val[shift:], np.full(shift, val[-1]))
            M = np.where(idx[None, :] <= idx[:, None], total[np.clip(idx[:, None] - idx[None, :], 0, N)] + vv[None, :],
                         -np.inf)
            total = M.max(1)
        return total[N]

    return best(0), best(1)


def extreme_score(p, v, kappas):
    """max ⟨v, p'⟩ over laws p' with KL(p ‖ p') ≤ κ, for each κ: p' ∝ p/(x + max v − v), x by bisection."""
    on = p > 0
    top = v[on].max()
    if np.ptp(v[on]) == 0:
        return np.full(len(kappas), p @ v)
    gap = top - v

    def kl(x):
        d = x[:, None] + gap[None, :]
        return np.log(np.sum(np.where(on, p / d, 0.0), -1)) + np.sum(np.where(on, p * np.log(d), 0.0), -1)

    lo, hi = np.full(len(kappas), -700.0), np.full(len(kappas), 700.0)
    for _ in range(150):
        mid = 0.5 * (lo + hi)
        big = kl(np.exp(mid)) > kappas  # x small: far from p
        lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
    q = np.where(on, p / (np.exp(hi)[:, None] + gap), 0.0)
    z = (q / q.sum(-1, keepdims=True)) @ v
    return np.where(kappas <= 0, p @ v, z)


def case(family, seed, kind, noise):
    world = HMM.random(seed, 3, 4) if family == "hmm" else LogLinearWorld.random(seed, n_states=3, n_symbols=4, dim=4)
    C = enumerate_contexts(world, 2)
    task = random_natural_task(C, seed, noise=noise) if kind == "random" else indicative_task(C, noise=noise)
    return C, task


# The random sign task is drawn on world 2: on world 0 it labels all 21 contexts as the indicative one does, and
# its rows repeated that case's to 6 decimals (on world 2 the two differ on 19 of 21).
CASES = [("hmm", 0, "random", "logistic"), ("hmm", 2, "random", "sign"), ("hmm", 0, "indicative", "sign"),
         ("loglinear", 0, "random", "logistic"), ("loglinear", 0, "indicative", "sign"),
         ("hmm", 1, "random", "logistic")]


def _quad_adversary(C, task, eps, seed, B=1.0):
    """The Quad adversary at ε, checked at ``B``: (ε_quad, its loss (a), the slack bound − τ, τ, h) with
    h(s, κ) = p_T(s)·max ℓ_s(z_s ± ‖v‖₂√(2κ/p_L(s))) the worst loss at context s for a Quad excess κ there
    (per context the excess moves the score by at most ‖v‖₂√(2κ/p_L(s)), Cauchy–Schwarz, either way)."""
    phi = np.asarray(np.asarray(random_embeddings(seed, 3, 4), np.float32), np.float64)
    cache = {}
    lm = adversarial_quad_lm(C, task, eps, phi, B=B, B_grid=GRID, cache=cache)
    r = check_natural_task(C, lm, task, B_grid=GRID, B2_grid=GRID, tau_cache=cache)
    b, i = r.bound("quad"), GRID.index(B)
    sol = tau(C, task, GRID, Phi=phi, norm="2", cache=cache)
    v, b0 = sol.v[i], float(sol.b[i])
    P, p_L = C.next_token_probs, C.weights / C.weights.sum()

    def h(s, kappa):
        d = np.linalg.norm(v) * np.sqrt(2 * kappa / p_L[s])
        z, q = P[s] @ v + b0, task.label_probs[s]
        return task.weights[s] * np.maximum(loss1(z + d, q), loss1(z - d, q))

    return r.eps_quad, b.loss_natural[i], b.bound[i] - b.tau[i], b.tau[i], h


@pytest.mark.parametrize("family, seed, kind, noise", CASES)
@pytest.mark.parametrize("eps", [1e-3, 0.03])
def test_the_quad_adversary_is_the_worst_quad_lm(family, seed, kind, noise, eps):
    """The adversary's (a) at its ε_quad lies in the knapsack's bracket of the best split of ε_quad over the
    task's contexts.  (The uniform shift it replaced, one t for every context, fell below the bracket by up
    to 0.04 of the slack.)"""
    _quad_in_bracket(family, seed, kind, noise, eps, 1.0)


def _quad_in_bracket(family, seed, kind, noise, eps, B):
    C, task = case(family, seed, kind, noise)
    eps_quad, loss, slack, tau0, h = _quad_adversary(C, task, eps, seed, B)
    units = np.arange(N + 1) * eps_quad / N
    lower, upper = knapsack(np.array([h(s, units) for s in np.flatnonzero(task.weights > 0)]))
    assert loss <= upper + 1e-9  # nothing beats the best split
    assert loss >= lower - 1e-4 * slack, ((loss - tau0) / slack, (lower - tau0) / slack, (upper - tau0) / slack)


@pytest.mark.parametrize("pair, eps", [((0, 5), 0.3), ((2, 9), 0.03)])
def test_the_quad_adversary_on_two_task_contexts_is_their_best_split(pair, eps):
    """A task on two contexts: the best split of ε_quad is one number, the share x of the budget on the first,
    h_1(x·ε) + h_2((1 − x)·ε), searched on a grid of 2·10⁵ shares.  The adversary is within 1e-4 of the slack
    of it, and not above it.  With the Quad excess priced at t² instead of ½t² its split was the one for ε/2
    scaled up to ε, short by 2.3e-3 and 5.5e-3 of the slack (too little for the knapsack over every context
    to tell)."""
    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    w = np.zeros(len(C.weights))
    w[list(pair)] = C.weights[list(pair)]
    task = random_natural_task(C, 0, noise="logistic", weights=w)
    eps_quad, loss, slack, _, h = _quad_adversary(C, task, eps, 0)
    x = np.linspace(0.0, 1.0, 200_001)
    best = (h(pair[0], x * eps_quad) + h(pair[1], (1.0 - x) * eps_quad)).max()
    assert loss <= best + 1e-9
    assert loss >= best - 1e-4 * slack, (best - loss) / slack


def test_the_aligned_tilt_leaves_p_star_where_the_task_has_no_weight():
    """A task on every other context: the aligned tilt moves only the task's contexts (p_f = p* elsewhere,
    the module docstring), to 1e-15; the others were tilted too (by up to 0.076 here), spending budget the
    task never reads.  E_{p_L} KL(p* ‖ p_f) is still ε (rtol 1e-9)."""
    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    w = C.weights.copy()
    w[::2] = 0.0
    task = random_natural_task(C, 0, noise="logistic", weights=w)
    laws = adversarial_laws(C, task, 0.01, method="aligned", B=1.0, B_grid=GRID)
    P, p_L, off = C.next_token_probs, C.weights / C.weights.sum(), task.weights == 0
    assert off.any() and (~off).any()
    np.testing.assert_allclose(laws[off], P[off], rtol=0, atol=1e-15)
    assert p_L @ rel_entr(P, laws).sum(-1) == pytest.approx(0.01, rel=1e-9)


@pytest.mark.parametrize("family, seed, kind, noise", CASES)
@pytest.mark.parametrize("eps", [1e-3, 0.03])
def test_the_search_adversary_is_the_worst_lm(family, seed, kind, noise, eps):
    """Over all laws with E_{p_L} KL(p* ‖ p) = ε: per context the extreme scores at budget κ (laws
    p ∝ p*/(x + max v − v), solved here by bisection on x), split by the knapsack.  The search's (a) is in
    the bracket.  (The search it replaced, ascent from the aligned tilt, was short by up to 0.05.)"""
    _search_in_bracket(family, seed, kind, noise, eps, 1.0)


def _search_in_bracket(family, seed, kind, noise, eps, B):
    C, task = case(family, seed, kind, noise)
    cache = {}
    laws = adversarial_laws(C, task, eps, method="search", B=B, B_grid=GRID, steps=20, cache=cache)
    b, i = check_natural_task(C, laws, task, B_grid=GRID, tau_cache=cache).bound("any-lm"), GRID.index(B)
    sol = tau(C, task, GRID, cache=cache)
    v, b0 = sol.v[i], float(sol.b[i])
    P, p_L = C.next_token_probs, C.weights / C.weights.sum()
    units = np.arange(N + 1) * eps / N
    values = []
    for s in np.flatnonzero(task.weights > 0):
        k = units / p_L[s]
        up, down = extreme_score(P[s], v, k) + b0, -extreme_score(P[s], -v, k) + b0
        values.append(task.weights[s] * np.maximum(loss1(up, task.label_probs[s]), loss1(down, task.label_probs[s])))
    lower, upper = knapsack(np.array(values))
    slack = b.bound[i] - b.tau[i]
    assert b.loss_natural[i] <= upper + 1e-9
    assert b.loss_natural[i] >= lower - 1e-4 * slack, ((b.loss_natural[i] - b.tau[i]) / slack,
                                                       (lower - b.tau[i]) / slack, (upper - b.tau[i]) / slack)
    aligned = adversarial_laws(C, task, eps, method="aligned", B=B, B_grid=GRID, cache=cache)
    assert b.loss_natural[i] >= check_natural_task(C, aligned, task, B_grid=GRID,
                                                   tau_cache=cache).bound("any-lm").loss_natural[i] - 1e-12


@pytest.mark.parametrize("family, seed, kind, noise", CASES[:4])
@pytest.mark.parametrize("eps", [1e-3, 0.03])
def test_the_softmax_adversary_is_the_best_split_of_tilts_along_lambda(family, seed, kind, noise, eps):
    """θ_s = θ*_s + t_s·λ (Φᵀλ = v), t_s of either sign: per context the budget δ_s(t) and the loss at the
    two t with δ_s = κ (bisection here), split by the knapsack.  The adversary is in the bracket, and above
    the uniform tilt it replaced (one |t| for every context)."""
    _softmax_in_bracket(family, seed, kind, noise, eps, 1.0)


def _softmax_in_bracket(family, seed, kind, noise, eps, B):
    C, task = case(family, seed, kind, noise)
    phi = np.asarray(np.asarray(random_embeddings(seed + 7, 3, 4), np.float32), np.float64)
    cache = {}
    lm = adversarial_softmax_lm(C, task, eps, phi, B=B, B_grid=GRID, cache=cache)
    b, i = check_natural_task(C, lm, task, B_grid=GRID, tau_cache=cache).bound("softmax"), GRID.index(B)
    sol = tau(C, task, GRID, Phi=phi, cache=cache)
    v, b0 = sol.v[i], float(sol.b[i])
    lam = np.linalg.lstsq(phi.T, v, rcond=None)[0]
    P, p_L = C.next_token_probs, C.weights / C.weights.sum()
    base = polish_softmax_fit(fit_cross_entropy(P, phi).theta, phi, P)
    on = np.flatnonzero(task.weights > 0)

    floor = softmax_objective(base[on], phi, P[on])[:, None, None]

    def along(t):
        """(δ_s, θ_s) at θ*_s + tλ for ``t (len(on), 2, N + 1)``: every task context, sign and budget at once."""
        th = base[on][:, None, None, :] + t[..., None] * lam
        rows = np.broadcast_to(P[on][:, None, None, :], t.shape + P.shape[1:])
        flat = softmax_objective(th.reshape(-1, th.shape[-1]), phi, rows.reshape(-1, P.shape[1])).reshape(t.shape)
        return flat - floor, th

    units = np.arange(N + 1) * eps / N
    k = (units[None, :] / p_L[on, None])[:, None, :]  # (context, sign, unit)
    sign = np.array([1.0, -1.0])[None, :, None]
    lo, hi = np.zeros((len(on), 2, N + 1)), np.full((len(on), 2, N + 1), 1e3)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        big = along(sign * mid)[0] > k
        lo, hi = np.where(big, lo, mid), np.where(big, mid, hi)
    logits = along(sign * lo)[1] @ phi
    z = np.exp(logits - logsumexp(logits, -1, keepdims=True)) @ v + b0
    loss = loss1(z, task.label_probs[on][:, None, None])
    values = task.weights[on][:, None] * loss.max(1)
    lower, upper = knapsack(np.array(values))
    slack = b.bound[i] - b.tau[i]
    assert b.loss_natural[i] <= upper + 1e-9
    assert b.loss_natural[i] >= lower - 1e-4 * slack, ((b.loss_natural[i] - b.tau[i]) / slack,
                                                       (lower - b.tau[i]) / slack, (upper - b.tau[i]) / slack)
    # the uniform tilt θ_s = θ*_s − t·y_s·λ/B at the same ε_Φ
    y = adv._directions(P, task, v, b0)

    def uniform(t):
        th = base - t * (y[:, None] * lam[None, :]) / B
        return th, float(p_L @ (softmax_objective(th, phi, P) - softmax_objective(base, phi, P)))

    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if uniform(mid)[1] < eps else (lo, mid)
    th = uniform(lo)[0]
    logits = th @ phi
    z = np.exp(logits - logsumexp(logits, -1, keepdims=True)) @ v + b0
    assert b.loss_natural[i] >= np.sum(task.weights * loss1(z, task.label_probs)) - 1e-12


@pytest.mark.parametrize("bracket, family, seed, kind, noise, eps, B", [
    ("search", "loglinear", 2, "random", "logistic", 0.3, 4.0),
    ("search", "loglinear", 1, "random", "sign", 0.03, 4.0),
    ("softmax", "hmm", 1, "indicative", "logistic", 0.03, 4.0),
    ("softmax", "hmm", 0, "indicative", "logistic", 1e-3, 4.0),
    ("softmax", "hmm", 2, "indicative", "sign", 1e-3, 0.25),
    ("quad", "loglinear", 0, "indicative", "logistic", 0.3, 4.0)])
def test_the_adversaries_are_the_best_split_where_the_lagrangian_has_a_duality_gap(bracket, family, seed, kind,
                                                                                  noise, eps, B):
    """At B = 4 the worst loss per context is far from concave in its budget, and the Lagrangian split alone
    used 0.129, 0.081, 0.0788, 0.00251 and 0.0846 of the slack where the knapsack's bracket starts at 0.171,
    0.082, 0.0790, 0.00270 and 0.0864 (rows 1–4 and 6); the split is now the better of it and a knapsack over
    budget units.  Row 5: a knapsack split that gains more before the common scale to ε and less after it
    (it was chosen, and fell below the uniform tilt); splits are compared after that scale."""
    bracket = {"search": _search_in_bracket, "softmax": _softmax_in_bracket, "quad": _quad_in_bracket}[bracket]
    bracket(family, seed, kind, noise, eps, B)


@pytest.mark.parametrize("world", ["dense", "zeros"])
@pytest.mark.parametrize("eps", [1e-3, 0.05])
def test_the_softmax_and_quad_adversaries_reach_their_eps_as_the_check_measures_it(world, eps):
    """Solved on θ, f and Φ rounded to float32, as the LM stores them: the check's ε_Φ and ε_quad are the
    target to 1e-7 (solved on float64 θ and Φ, ε_Φ was 3.5e-6 off on the zeros world at ε = 1e-3)."""
    if world == "dense":
        w = HMM.random(0, 3, 4)
    else:  # p* with zeros: θ* far out, where float32 rounds coarsely
        w = HMM(np.array([.5, .5, 0]), np.array([[0, 1, 0], [.3, 0, .7], [0.2, 0, .8]]),
                np.array([[.6, .4, 0, 0], [0, .5, .5, 0], [.2, .3, 0, .5]]))
    C = enumerate_contexts(w, 2)
    task = random_natural_task(C, 1, noise="logistic")
    grid = [0.25, 1, 4, 16]
    for d in (2, 4):
        phi = random_embeddings(0, d, 4)
        lm = adversarial_softmax_lm(C, task, eps, phi, B_grid=grid)
        assert check_natural_task(C, lm, task, B_grid=grid).eps_phi == pytest.approx(eps, rel=1e-7)
        lq = adversarial_quad_lm(C, task, eps, phi, B_grid=grid)
        assert check_natural_task(C, lq, task, B_grid=grid, B2_grid=grid).eps_quad == pytest.approx(eps, rel=1e-7)


# ---- γ_Φ, the log-partition fit, bad arguments -------------------------------------------------------

def test_the_softmax_objective_is_finite_at_logits_beyond_float64_exp():
    """ℓ_s(θ) = log Σ_w e^{⟨θ, φ_w⟩} − ⟨θ, Φp*_s⟩ with logits past 709 (e^z overflows float64): at θ = 800,
    φ = (1, 0), p* = (1, 0) it is log(1 + e^{−800}) ≈ 0, not ∞ − 800; at logits up to ~1500 (row maxima
    340 to 1040) it matches scipy's logsumexp to 1e-9 (a difference of terms ~1e3: float64 resolves ~1e-12)."""
    assert softmax_objective(np.array([[800.0]]), np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]))[0] == \
        pytest.approx(math.log1p(math.exp(-800.0)), abs=1e-12)
    rng = np.random.default_rng(0)
    theta, phi = 1000 * rng.normal(size=(5, 3)), rng.normal(size=(3, 4))
    P = rng.dirichlet(np.ones(4), size=5)
    expected = logsumexp(theta @ phi, -1) - np.sum((theta @ phi) * P, -1)
    np.testing.assert_allclose(softmax_objective(theta, phi, P), expected, rtol=0, atol=1e-9)


def test_gamma_phi_is_finite_when_sigma_T_is_tiny_beside_sigma_L():
    """Σ_L = diag(0.45, 0.45) + 0.1·aaᵀ, Σ_T = aaᵀ with a = 1e-7·(1, 1): γ_Φ = 1/(aᵀΣ_L⁻¹a) = 1/x + 0.1,
    x = aᵀ diag(0.45)⁻¹a (Sherman–Morrison), 2.25e13.  The whitened t_i are ~4e-14: they were dropped
    below 1e-12 and γ_Φ came back +∞, a γ no Σ's obey."""
    delta = np.array([[1.0, 0.0], [0.0, 1.0], [1e-7, 1e-7]])
    x = 2e-14 / 0.45
    assert gamma_phi([0.45, 0.45, 0.1], [0.0, 0.0, 1.0], delta) == pytest.approx(1 / x + 0.1, rel=1e-6)
    assert gamma_phi([0.45, 0.45, 0.1], [0.0, 0.0, 1.0], delta * [1.0, 0.0]) == pytest.approx(0.45 / 1e-14 + 0.1,
                                                                                             rel=1e-6)
    assert gamma_phi([0.45, 0.45, 0.1], [0.0, 0.0, 1.0], [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]) == math.inf


@pytest.mark.parametrize("d", [2, 3])
def test_the_log_partition_fit_is_undetermined_with_too_few_contexts(d):
    """p = d(d+1)/2 + d + 1 coefficients: n ≤ p contexts fit log Z exactly (R² = 1) whatever it is, so the
    fit is undetermined; numpy returns min(n, p) singular values, and the smallest of those said True."""
    rng = np.random.default_rng(0)
    phi = random_embeddings(0, d, 20, "heavy-tailed")
    p = d * (d + 1) // 2 + d + 1
    for n in (d + 1, p - 1, p, p + 1, 10 * p):
        fit = log_partition_fit(3 * rng.standard_normal((n, d)), phi)
        assert fit.determined == (n > p), n
        assert fit.determined_mean == (n > d + 1), n
        if n <= p:  # interpolated: an R² of 1 would say nothing (it read 1.0 until 2026-12-06)
            assert math.isnan(fit.r2_logz) and fit.rms_logz < 1e-9
        else:
            assert 0 < fit.r2_logz <= 1
        assert math.isnan(fit.r2_mean) == (n <= d + 1), n


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e2])
def test_the_log_partition_fit_is_determined_whatever_the_scale_of_theta(scale):
    """Documented: ``determined`` reads σ_min > 1e-6 σ_max of the design matrix with its columns scaled to unit
    norm, so it does not depend on the units of θ: 100 generic θ's in d = 2 pin the 6 coefficients at any scale
    (unscaled, the columns θ_iθ_j ~ 1e-8 beside the constant 1 at scale 1e-4 read undetermined), and θ's on a
    line (θ_2 = 2θ_1, the columns dependent) pin them at none."""
    phi = np.array([[1.0, -1.0], [0.5, -0.5]])
    theta = scale * np.random.default_rng(0).standard_normal((100, 2))
    assert log_partition_fit(theta, phi).determined
    assert log_partition_fit(theta, phi).determined_mean
    on_a_line = theta[:, :1] * np.array([[1.0, 2.0]])
    assert not log_partition_fit(on_a_line, phi).determined


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0, "x", True])
def test_adversary_radius_refuses_a_bad_eps(bad):
    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    task = random_natural_task(C, 0)
    with pytest.raises(ConfigError, match="eps"):
        adv.adversary_radius(C, task, bad)
    with pytest.raises(ConfigError, match="B_grid"):
        adv.adversary_radius(C, task, 0.1, B_grid=[bad] if not isinstance(bad, str) else "x")


def test_adversary_radius_is_the_radius_the_check_reports_the_any_lm_bound_at():
    """B* minimises τ(B) + B√(2ε/γ) over the grid, with τ and γ those of the check: over an ε sweep that
    crosses the grid's switch points (B* 4 → 1 → 0.25 on hmm-0), it is the radius the check of the adversary at
    that ε reports its any-lm bound at (the grid's argmax read 16 for 4; √(ε/γ) read 4 for 1)."""
    C, task = case("hmm", 0, "random", "logistic")
    grid = np.array([0.25, 1.0, 4.0, 16.0])
    radii = []
    for eps in (1e-3, 4e-3, 1e-2):
        radius = adv.adversary_radius(C, task, eps, B_grid=grid)
        b = check_natural_task(C, adversarial_laws(C, task, eps, B_grid=grid), task, B_grid=grid).bound("any-lm")
        assert b.eps == pytest.approx(eps, rel=1e-6)
        assert radius == b.B == grid[np.argmin(b.tau + grid * math.sqrt(2 * eps / b.gamma))]
        radii.append(radius)
    assert radii == [4.0, 1.0, 0.25]


def test_a_context_of_weight_zero_adds_nothing_to_epsilon_and_a_task_on_it_has_no_adversary():
    """A hand-built context set may weigh a context 0: its KL, +inf where the LM misses p*'s support there,
    adds nothing to ε = E_{p_L} KL (0 · inf read NaN); a task on such a context has γ = 0 and its bound is +∞
    at every radius — no B*, so no adversary (a ZeroDivisionError before)."""
    import dataclasses

    from simlm.theory import natural_tasks as nt
    from simlm.theory.adversarial import adversary_radius

    C = enumerate_contexts(HMM.random(0, 3, 3), 2)
    P = C.next_token_probs
    weights = C.weights.copy()
    weights[5] = 0.0
    C0 = dataclasses.replace(C, weights=weights)
    laws = 0.9 * P + 0.1 / P.shape[1]
    laws[5] = np.eye(P.shape[1])[np.argmin(P[5])]  # misses p*'s support where p_L = 0
    p_L = weights / weights.sum()
    with np.errstate(divide="ignore"):
        kl = np.array([sum(p * np.log(p / q) for p, q in zip(P[s], laws[s]) if p > 0) for s in range(len(P))])
    assert nt.lm_epsilon(C0, laws) == pytest.approx(sum(p_L[s] * kl[s] for s in range(len(P)) if s != 5), rel=1e-12)
    on_zero = np.zeros(len(P))
    on_zero[[5, 6]] = 1.0
    task = nt.random_natural_task(C0, 3, noise="logistic", weights=on_zero)
    with pytest.raises(ConfigError, match="^task: γ = 0"):
        adversary_radius(C0, task, 0.01, B_grid=[0.25, 1.0])
    with pytest.raises(ConfigError, match="^task: γ = 0"):
        adversarial_laws(C0, task, 0.01, B_grid=[0.25, 1.0])
    # with B given as well (the search divided by p_L = 0 and scipy's brentq raised on a NaN, a review 2026-12-06)
    from simlm.theory.adversarial import adversarial_quad_lm, adversarial_softmax_lm
    phi = np.eye(P.shape[1])
    for build in (lambda: adversarial_laws(C0, task, 0.01, method="search", B=1.0, B_grid=[0.25, 1.0]),
                  lambda: adversarial_laws(C0, task, 0.01, method="aligned", B=1.0),
                  lambda: adversarial_softmax_lm(C0, task, 0.01, phi, B=1.0),
                  lambda: adversarial_quad_lm(C0, task, 0.01, phi, B=1.0)):
        with pytest.raises(ConfigError, match="^task: γ = 0"):
            build()


def test_an_eps_below_float64_resolution_is_refused_as_rounding_not_underflow():
    """At ε = 1e-15 both candidate laws miss ε by the KL's rounding; the message said the laws needed
    probabilities below float64's smallest number."""
    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    task = random_natural_task(C, 0, noise="logistic")
    with pytest.raises(ConfigError, match="too small to resolve in float64"):
        adversarial_laws(C, task, 1e-15, method="search", B=1.0, B_grid=[0.25, 1.0, 4.0], steps=5)


def test_the_search_puts_mass_off_the_support_where_a_word_there_moves_the_score_further():
    """KL(p* ‖ p) does not charge for mass where p* = 0: on context 0 (p* = (.3, .45, .25, 0), v = (1.1, 4, 4,
    −4)) moving mass onto word 3 lowers the score past any law on the support.  Confined to the support the
    search used 0.216 of the slack at B = 4, ε = 0.3, where an SLSQP over every word's logit (from the
    search's laws and from p*) reaches 0.316; it reaches that SLSQP's value now, within 1e-5 of the slack."""
    from scipy.optimize import minimize
    from scipy.special import expit, softmax

    world = HMM([.5, .5, 0], [[0, 1, 0], [.3, 0, .7], [.2, 0, .8]], [[.6, .4, 0, 0], [0, .5, .5, 0], [.2, .3, 0, .5]])
    C = enumerate_contexts(world, 2)
    P, p_L = np.asarray(C.next_token_probs, np.float64), C.weights / C.weights.sum()
    task, grid, eps, B, cache = random_natural_task(C, 1, noise="logistic"), [0.25, 1.0, 4.0], 0.3, 4.0, {}
    laws = adversarial_laws(C, task, eps, method="search", B=B, B_grid=grid, cache=cache, steps=50)
    assert np.sum(rel_entr(P, laws), -1) @ p_L == pytest.approx(eps, rel=1e-9)
    r = check_natural_task(C, laws, task, B_grid=grid, tau_cache=cache).bound("any-lm")
    i = grid.index(B)
    used = (r.loss_natural[i] - r.tau[i]) / (r.bound[i] - r.tau[i])
    assert laws[0, 3] > 0.5 and r.holds  # the mass moved off p*'s support; the bound still holds

    v, b = adv._classifier(C, task, B, None, "inf", cache, grid)
    on = np.flatnonzero(task.weights > 0)

    def laws_of(x):
        out = P.copy()
        out[on] = softmax(x.reshape(len(on), -1), -1)
        return out

    def kl(x):
        return float(p_L @ np.sum(rel_entr(P, laws_of(x)), -1))

    def loss_and_grad(x):  # −(a) and its gradient: dz_s/dx_s = q_s ⊙ (v − ⟨q_s, v⟩), q_s = softmax(x_s)
        q, z = softmax(x.reshape(len(on), -1), -1), laws_of(x) @ v + b
        dz = task.pos * expit(-z) - task.neg * expit(z)
        return -logistic_loss(z, task.pos, task.neg), (dz[on, None] * q * (v - q @ v[:, None])).ravel()

    def kl_grad(x):  # d KL(p*_s ‖ q_s)/dx_s = q_s − p*_s, weighted by p_L(s)/ε
        return (p_L[on, None] * (softmax(x.reshape(len(on), -1), -1) - P[on]) / eps).ravel()

    best = -np.inf
    with np.errstate(divide="ignore"):
        starts = [np.log(np.maximum(laws[on], 1e-6)), np.log(np.where(P[on] > 0, P[on], 1e-3))]
    for x0 in starts:  # analytic gradients: the same optimum as finite differences (to 1e-8), 50× fewer evaluations
        res = minimize(loss_and_grad, x0.ravel(), jac=True, method="SLSQP",
                       constraints=[{"type": "eq", "fun": lambda x: kl(x) / eps - 1, "jac": kl_grad}],
                       options={"maxiter": 1000, "ftol": 1e-14})
        if abs(kl(res.x) / eps - 1) < 1e-7:
            best = max(best, -res.fun)
    reference = (best - r.tau[i]) / (r.bound[i] - r.tau[i])
    assert reference == pytest.approx(0.3163, abs=1e-3)
    assert used >= reference - 1e-5, (used, reference)


@pytest.mark.parametrize("family, seed, kind, noise, eps, before", [
    ("hmm", 0, "random", "logistic", 1e-3, 0.614), ("loglinear", 0, "indicative", "sign", 1e-3, 0.142)])
def test_the_well_specified_row_is_attacked_at_its_own_radius(family, seed, kind, noise, eps, before):
    """The law adversaries are built at the any-LM bound's B*; the well-specified row reads its bound at its
    own B* (here 8 and 16 against 4), where that adversary had moved another classifier: it used 0.614 and
    0.142 of the row's slack where the search built at the row's radius uses 0.863 and 0.456 (a review's
    SLSQP found 0.863 and 0.237).  well_specified_radius is the radius the check reports the row at."""
    from simlm.experiments.natural_tasks_adversaries import _well_specified_search

    C, task = case(family, seed, kind, noise)
    cache = {}
    at_any = check_natural_task(C, adversarial_laws(C, task, eps, method="search", steps=60, cache=cache), task,
                                tau_cache=cache).bound("well-specified")
    assert at_any.slack_used == pytest.approx(before, abs=2e-3)
    B_ws = adv.well_specified_radius(C, task, eps, cache=cache)
    assert B_ws == at_any.B and B_ws > adv.adversary_radius(C, task, eps, cache=cache)

    class Config:
        search_steps = 60

    [(labels, lm)] = list(_well_specified_search(C, task, eps, "absolute", Config, [], cache, {}))
    assert labels["lm"] == "adversarial-search-ws" and labels["adversary_bound"] == "well-specified"
    b = check_natural_task(C, lm, task, tau_cache=cache).bound("well-specified")
    assert b.holds and b.B == B_ws and b.slack_used > before + 0.2


def test_random_embedding_entries_follow_their_documented_laws():
    """"gaussian": N(0, scale²/dim) entries; "heavy-tailed": Student-t(df)·scale/√dim — so |entry|·√dim/scale
    has the median of |N(0, 1)| and of |t_df| (200 000 entries: within 2 %).  The heavy-tailed rows of the
    log-partition table were only checked to fit worse than the Gaussian ones, which a scale √dim too large
    does too."""
    from scipy import stats

    d, V, scale = 4, 50_000, 2.0
    for geometry, law in (("gaussian", stats.norm()), ("heavy-tailed", stats.t(1.5))):
        e = random_embeddings(0, d, V, geometry, scale=scale) * np.sqrt(d) / scale
        assert np.median(np.abs(e)) == pytest.approx(law.ppf(0.75), rel=0.02), geometry


def test_the_search_ascent_climbs_from_the_aligned_tilt_to_the_worst_case(monkeypatch):
    """With the worst-case split disabled the search is the aligned tilt and the ascent: the ascent must reach the
    worst case (the default search) within 1e-3 of the slack.  The preconditioned gradient scaled back to ε
    radially is no ascent direction on {E KL = ε}: it stalled at 0.2545 of the slack against 0.2990, 60 steps or
    600 alike (a review, 2026-12-07)."""
    C, task = case("loglinear", 0, "indicative", "sign")
    grid, B, eps, cache = [0.25, 1.0, 4.0], 4.0, 0.3, {}
    best = adv.adversarial_laws(C, task, eps, method="search", B=B, B_grid=grid, steps=60, cache=cache)

    def off(*args, **kwargs):
        raise ConfigError("disabled")

    monkeypatch.setattr(adv, "_exact_laws", off)
    climbed = adv.adversarial_laws(C, task, eps, method="search", B=B, B_grid=grid, steps=60, cache=cache)
    i = grid.index(B)
    rb = check_natural_task(C, best, task, B_grid=grid, tau_cache=cache).bound("any-lm")
    rc = check_natural_task(C, climbed, task, B_grid=grid, tau_cache=cache).bound("any-lm")
    slack = rb.bound[i] - rb.tau[i]
    assert (rb.loss_natural[i] - rb.tau[i]) / slack == pytest.approx(0.299, abs=2e-3)
    assert rc.loss_natural[i] >= rb.loss_natural[i] - 1e-3 * slack


def test_the_aligned_tilt_moves_every_score_against_the_loss():
    """From the definition, independently: y_s = sign(q_s − σ(z_s)) on p*'s scores, log p_f − log p* = −t·y_s·v/B
    + c_s with one t > 0 on every task context, E KL = ε, and the transferred classifier's loss above τ.  The
    tests read the tilt only through "search ≥ aligned": with y's sign flipped (the loss lowered: 0.532 for τ
    0.568 where the tilt gives 0.611) every one passed (a mutation review, 2026-12-07)."""
    from scipy.special import expit

    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    task = random_natural_task(C, 0, noise="logistic")
    eps, B, cache = 1e-2, 1.0, {}
    laws = adv.adversarial_laws(C, task, eps, method="aligned", B=B, B_grid=[1.0, 4.0], cache=cache)
    sol = tau(C, task, [1.0, 4.0], cache=cache)
    v, b = sol.v[0], float(sol.b[0])
    P, p_L = np.asarray(C.next_token_probs, np.float64), C.weights / C.weights.sum()
    on = task.weights > 0
    y = np.sign(task.label_probs - expit(P @ v + b))[on]
    assert np.all(y != 0)
    # log p_f − log p* = −t·y_s·v/B + c_s: regress each task context's log-ratio on −y_s·v/B
    ratio = np.log(laws[on]) - np.log(P[on])
    d = -(y[:, None] * v[None, :]) / B
    dc, rc = d - d.mean(1, keepdims=True), ratio - ratio.mean(1, keepdims=True)
    t = np.sum(dc * rc) / np.sum(dc * dc)
    assert t > 0
    np.testing.assert_allclose(rc, t * dc, atol=1e-9)
    np.testing.assert_allclose(laws[~on], P[~on], atol=1e-15)
    kl = float(p_L @ np.sum(P * (np.log(P) - np.log(laws)), 1))
    assert abs(kl - eps) <= 1e-9 * eps
    loss = lambda Q: float(np.sum(task.pos * np.logaddexp(0, -(Q @ v + b)) + task.neg * np.logaddexp(0, Q @ v + b)))
    assert loss(laws) > loss(P) + 1e-3


def test_the_well_specified_radius_minimises_the_bound_with_its_residual_term():
    """The whole bound τ(B) + r(B)·B√(2ε/γ) + B²ε/(4γ): the radius of a bound without its residual term (16 here,
    against 8) passed every test, whose cases have one argmin either way (a mutation review, 2026-12-07)."""
    from simlm.theory.natural_tasks import bound_well_specified, gamma, label_residual

    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    task = indicative_task(C, noise="sign")
    eps, cache, grid = 1e-3, {}, np.array([4.0, 8.0, 16.0])  # a slice of B_GRID around both argmins
    sol = tau(C, task, grid, cache=cache)
    g = gamma(C.weights / C.weights.sum(), task.weights)
    r = label_residual(np.asarray(C.next_token_probs, np.float64), task, sol)
    # the bound written out here, term by term (bound_well_specified's form, natural_tasks' docstring)
    bound = sol.loss + r * grid * np.sqrt(2 * eps / g) + grid**2 * eps / (4 * g)
    np.testing.assert_allclose(bound, [bound_well_specified(t, B, eps, g, ri)
                                       for t, B, ri in zip(sol.loss, grid, r)], rtol=1e-12)
    without = sol.loss + grid**2 * eps / (4 * g)
    assert grid[np.argmin(bound)] != grid[np.argmin(without)]  # the case discriminates (8 against 16)
    assert adv.well_specified_radius(C, task, eps, B_grid=grid, cache=cache) == grid[np.argmin(bound)] == 8.0
