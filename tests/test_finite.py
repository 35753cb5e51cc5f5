"""Softmax LMs over finite contexts: the Quad identities, cross-entropy moment matching, enumeration."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bruteforce import params, sequence_prob
from profiles import scaled
from simlm.errors import ConfigError, DistributionError, ShapeError
from simlm.models.finite import SoftmaxContextLM, best_achievable_epsilon, context_kl, fit_cross_entropy, fit_cross_entropy_joint, log_partition, quad_excess, quad_fit, quad_loss, quad_minimiser
from simlm.worlds.contexts import enumerate_contexts
from simlm.worlds import HMM

S, D, V = 5, 3, 8  # fixed shapes, so each jitted function compiles once


def problem(seed: int, zeros: bool = False):
    """A random (p*, Φ): p* (S, V) rows on the simplex (some exact zeros if asked), Φ (D, V) Gaussian."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, 0.5), size=S)
    if zeros:
        P[0, :3] = 0.0
        P /= P.sum(-1, keepdims=True)
    return P, rng.standard_normal((D, V))


seeds = st.integers(0, 2**31 - 1)


@pytest.fixture(scope="module")
def world():
    return HMM.random(0, 2, 3)


@pytest.fixture(scope="module")
def contexts(world):
    return enumerate_contexts(world, 3)


# ---- Quad ------------------------------------------------------------------------------------------

@given(seeds)
def test_quad_minimiser_satisfies_the_first_order_condition(seed):
    P, phi = problem(seed)
    f = np.asarray(quad_minimiser(P, phi), np.float64)
    np.testing.assert_allclose(f @ phi @ phi.T, P @ phi.T, atol=1e-5)  # ΦΦᵀf* = Φp*


@given(seeds, seeds)
def test_quad_excess_is_the_loss_gap(seed, f_seed):
    P, phi = problem(seed)
    f = jnp.asarray(np.random.default_rng(f_seed).standard_normal((S, D)), jnp.float32)
    gap = quad_loss(f, P, phi) - quad_loss(quad_minimiser(P, phi), P, phi)
    np.testing.assert_allclose(gap, quad_excess(f, P, phi), rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(quad_excess(f, P, phi)) >= 0)


def test_quad_excess_takes_leading_axes_inside_jit():
    """The trainer's shape: features (n, T, d) and laws (n, T, V) against one Φ."""
    P, phi = problem(0)
    f = np.random.default_rng(1).standard_normal((S, D))
    batched = jax.jit(quad_excess)(jnp.stack([f, 2 * f]), jnp.stack([P, P]), phi)
    np.testing.assert_allclose(batched, np.stack([quad_excess(f, P, phi), quad_excess(2 * f, P, phi)]), rtol=1e-5)


def test_context_kl_and_quad_excess_compute_in_float64_under_x64():
    """One implementation serves float32 and, for the theory's exact ε, float64."""
    P, phi = problem(0)
    f = np.asarray(quad_minimiser(P, phi), np.float64) + 1e-3
    logq = np.log(0.9 * P + 0.1 / V)
    with jax.enable_x64(True):
        kl, q = context_kl(P, logq), quad_excess(f, P, phi)
        assert kl.dtype == q.dtype == jnp.float64
        f_star = P @ np.linalg.pinv(phi)
        np.testing.assert_allclose(q, 0.5 * np.sum(((f - f_star) @ phi) ** 2, -1), rtol=1e-10)
        np.testing.assert_allclose(kl, np.sum(P * (np.log(P) - logq), -1), rtol=1e-10)
    assert context_kl(P, logq).dtype == jnp.float32


def test_p_star_rows_within_tolerance_are_renormalised():
    """Rows summing to 1 + 9e-6 pass as laws and are measured as laws: KL(P(1+δ)/Σ ‖ P) = 0, not ≈ δ."""
    P = problem(0)[0]
    np.testing.assert_allclose(context_kl(P * (1 + 9e-6), np.log(P)), 0.0, atol=1e-6)


def test_quad_loss_is_the_expected_per_word_loss():
    P, phi = problem(1)
    f = np.random.default_rng(2).standard_normal((S, D))
    # E_{w ~ p*_s}[−⟨f, φ_w⟩ + ½‖Φᵀf‖²]
    per_word = -(f @ phi) + 0.5 * np.sum((f @ phi) ** 2, -1, keepdims=True)
    np.testing.assert_allclose(quad_loss(f, P, phi), np.sum(P * per_word, -1), rtol=1e-5, atol=1e-5)


def test_quad_fit_converges_to_the_minimiser():
    P, phi = problem(3)
    np.testing.assert_allclose(quad_fit(P, phi, steps=3000), quad_minimiser(P, phi), atol=1e-4)


# ---- cross-entropy fit ------------------------------------------------------------------------------

@given(seeds)
def test_grad_log_partition_is_the_conditional_mean_feature(seed):
    rng = np.random.default_rng(seed)
    theta, phi = rng.standard_normal((S, D)), rng.standard_normal((D, V))
    grad = jax.grad(lambda t: log_partition(t, phi).sum())(jnp.asarray(theta, jnp.float32))
    lm = SoftmaxContextLM(theta, phi)
    np.testing.assert_allclose(grad, lm.conditional_mean_features(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("zeros", [False, True])
def test_cross_entropy_optimum_matches_moments(zeros):
    P, phi = problem(4, zeros)
    lm = fit_cross_entropy(P, phi)
    assert lm.converged and lm.grad_norm <= 1e-8
    np.testing.assert_allclose(lm.conditional_mean_features(), P @ phi.T, atol=1e-4)  # Φp_θ* = Φp*


def test_quad_fit_takes_the_step_one_over_the_largest_eigenvalue():
    """The default lr is 1/λ_max(ΦΦᵀ) and the gradient from f = 0 is −Φp*_s, so one step gives
    f = Φp*/λ_max per context (1.9/λ_max overshot by 1.9×)."""
    P, phi = problem(3)
    expected = P @ phi.T / np.linalg.eigvalsh(phi @ phi.T)[-1]
    np.testing.assert_allclose(np.asarray(quad_fit(P, phi, steps=1), np.float64), expected, rtol=1e-5, atol=1e-7)


def test_best_achievable_epsilon_is_a_minimum():
    P, phi = problem(5)
    w = np.random.default_rng(0).dirichlet(np.ones(S))
    best = best_achievable_epsilon(P, phi, w)
    assert best > 0  # d = 3 < V − 1: the softmax family cannot represent p*
    rng = np.random.default_rng(1)
    optimum = fit_cross_entropy(P, phi).theta
    for _ in range(5):
        assert SoftmaxContextLM(optimum + 0.1 * rng.standard_normal((S, D)), phi).epsilon(P, w) > best


def test_best_achievable_epsilon_is_zero_for_a_rich_enough_phi():
    P = problem(6)[0]
    phi = np.random.default_rng(6).standard_normal((V - 1, V))  # Φᵀθ + constants span R^V
    assert best_achievable_epsilon(P, phi) == pytest.approx(0.0, abs=1e-10)  # float64 KL of the float32 θ


def _floor_by_scipy(P, phi) -> float:
    """min_θ mean_s KL(p*_s ‖ softmax(Φᵀθ_s)) by float64 BFGS per context, from the definition."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    total = 0.0
    for p in P:
        def f(theta):
            logits = theta @ phi
            lse = logsumexp(logits)
            q = np.exp(logits - lse)
            return lse - logits @ p, phi @ (q - p)
        theta = minimize(f, np.zeros(phi.shape[0]), jac=True, method="BFGS", options={"gtol": 1e-12}).x
        logq = theta @ phi - logsumexp(theta @ phi)
        total += np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - logq), 0.0))
    return total / len(P)


@given(seeds, st.sampled_from([1e-9, 1e-7, 1e-5, 1e-2, 1.0, 1e2]), st.booleans())
def test_best_achievable_epsilon_is_the_floor_at_any_scale_of_phi(seed, scale, zeros):
    # Φ → cΦ leaves the floor unchanged (θ absorbs c); the fit's stopping rule must not see c (it once
    # stopped at ‖gradient‖ ≤ 1e-8 absolute: at c = 1e-7 it reported 0.135 for a floor of 0.036, converged)
    P, phi = problem(seed, zeros)
    lm = fit_cross_entropy(P, scale * phi)
    assert lm.converged
    expected = best_achievable_epsilon(P, phi) if zeros else _floor_by_scipy(P, phi)  # zeros: optimum at ∞
    assert lm.epsilon(P) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_the_stopping_rule_is_relative_to_the_spread_of_phi_not_its_offset():
    """The documented stop is max_s ‖Φ(p_θ(s) − p*_s)‖₂ ≤ tol · max_w ‖φ_w − φ̄‖₂.  A common offset c of Φ's
    columns leaves the floor and the spread unchanged (softmax cancels ⟨θ, c⟩); a tolerance scaled by
    max_w ‖φ_w‖ (≈ 173 here instead of 2.1) stopped at tol = 1e-3 with grad_norm 0.056 and ε 1.1e-3 above the
    floor (seed 0; the spread rule: 3.8e-6 and −2e-7, float32's rounding of Φ + 100)."""
    P, phi = problem(0)
    spread = float(np.linalg.norm(phi - phi.mean(1, keepdims=True), axis=0).max())
    lm = fit_cross_entropy(P, phi + 100.0, tol=1e-3)
    assert lm.converged and lm.grad_norm <= 1e-3 * spread
    assert lm.epsilon(P) == pytest.approx(best_achievable_epsilon(P, phi), abs=1e-5)


def test_a_fit_stopped_by_steps_above_the_tolerance_is_not_converged():
    """``converged`` is grad_norm ≤ tol · max_w ‖φ_w − φ̄‖₂: two Newton steps leave grad_norm g; with tol set to
    g / (5·spread) the same fit stops on ``steps`` at g, five times the tolerance, and is not converged (a
    test against 10·tol called it converged)."""
    rng = np.random.default_rng(0)
    P, phi = rng.dirichlet(np.ones(5), size=4), rng.standard_normal((2, 5))
    g = fit_cross_entropy(P, phi, steps=2, tol=1e-8).grad_norm
    spread = float(np.linalg.norm(phi - phi.mean(1, keepdims=True), axis=0).max())
    lm = fit_cross_entropy(P, phi, steps=2, tol=g / (5 * spread))
    assert lm.n_steps == 2 and lm.grad_norm == pytest.approx(g, rel=1e-12)
    assert not lm.converged


def test_newton_steps_leave_theta_orthogonal_to_the_flat_directions():
    """With d = 6 > V = 4 every Hessian Cov_{p_θ}(φ) is singular along the u with Φᵀu ∝ 1 (the left null space
    of the centred Φ), which leave every law unchanged.  The pseudo-inverse steps from θ = 0 lie in the
    Hessian's range, so θ has no component there (2e-8, float32 storage); a cutoff relative to the *smallest*
    eigenvalue inverted the null directions' rounding noise and sent θ 448 along them."""
    rng = np.random.default_rng(1)
    P, phi = rng.dirichlet(np.ones(4), 3), rng.normal(size=(6, 4))
    U, sv, _ = np.linalg.svd(phi - phi.mean(1, keepdims=True), full_matrices=True)
    flat = U[:, np.sum(sv > 1e-10):]  # (6, 3): uᵀ(φ_w − φ̄) = 0 for every word w
    lm = fit_cross_entropy(P, phi)
    assert lm.converged
    assert np.linalg.norm(np.asarray(lm.theta, np.float64) @ flat) <= 1e-6


def test_epsilon_is_the_weighted_context_kl():
    P, phi = problem(7)
    lm = SoftmaxContextLM(np.random.default_rng(7).standard_normal((S, D)), phi)
    w = np.arange(1.0, S + 1)
    kl = np.sum(P * (np.log(P) - np.asarray(lm.logprobs(), np.float64)), -1)
    assert lm.epsilon(P, w) == pytest.approx(np.sum(w * kl) / w.sum(), rel=1e-4)
    np.testing.assert_allclose(context_kl(P, lm.logprobs()), kl, rtol=1e-4)


def test_model_accessors_have_the_documented_shapes():
    P, phi = problem(8)
    lm = SoftmaxContextLM(np.zeros((S, D)), phi)
    assert lm.features().shape == (S, D) and lm.unembedding.shape == (D, V)
    np.testing.assert_allclose(lm.probs(), 1.0 / V, rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(lm.logprobs()), lm.probs(), rtol=1e-6)


# ---- enumeration ------------------------------------------------------------------------------------

def test_enumeration_counts_every_prefix(contexts):
    assert len(contexts.prefixes) == 1 + 3 + 9 + 27
    assert contexts.prefixes[0] == () and contexts.lengths.max() == 3
    assert contexts.weights.sum() == pytest.approx(1.0, abs=1e-6)


def test_next_token_laws_are_distributions(contexts):
    np.testing.assert_allclose(contexts.next_token_probs.sum(-1), 1.0, atol=1e-12)
    assert np.all(contexts.next_token_probs >= 0)


def test_prefix_probabilities_are_consistent(contexts):
    for s in contexts.prefixes:
        if len(s) == 3:
            continue
        i = contexts.index(s)
        children = np.array([contexts.prefix_probs[contexts.index(s + (w,))] for w in range(3)])
        assert children.sum() == pytest.approx(contexts.prefix_probs[i], rel=1e-5)  # Σ_w p(s, w) = p(s)
        np.testing.assert_allclose(contexts.prefix_probs[i] * contexts.next_token_probs[i], children, rtol=1e-5)


def test_next_token_laws_match_the_world(world, contexts):
    seqs = np.array([[0, 1, 2, 0], [2, 2, 1, 1]])
    laws = np.asarray(world.next_token_probs(seqs))
    for seq, law in zip(seqs, laws):
        for t in range(4):
            np.testing.assert_allclose(contexts.next_token_probs[contexts.index(seq[:t])], law[t], atol=1e-5)


def test_fit_on_enumerated_contexts(contexts):
    phi = np.random.default_rng(0).standard_normal((1, 3))
    lm = fit_cross_entropy(contexts.next_token_probs, phi, weights=contexts.weights)
    assert lm.converged
    # the optimum, context by context (d = 1: one scalar θ_s each), by scipy in float64
    from scipy.optimize import minimize_scalar
    P, w, f = np.asarray(contexts.next_token_probs, np.float64), np.asarray(contexts.weights, np.float64), phi[0]
    w = w / w.sum()

    def kl(p, t):
        logq = t * f - np.logaddexp.reduce(t * f)
        return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - logq), 0.0))
    best = sum(ws * minimize_scalar(lambda t: kl(p, t), bracket=(-5, 5), tol=1e-12).fun for p, ws in zip(P, w))
    assert best > 1e-3  # Φ of rank 1 cannot fit these laws: the optimum is a real number to match
    assert lm.epsilon(contexts.next_token_probs, contexts.weights) == pytest.approx(best, rel=1e-6, abs=1e-9)


def test_next_token_laws_of_rare_prefixes_are_the_emission_law():
    """One hidden state, emission (1e-37, 1): every context's next-token law is p*(·|s) = p(s ⊕ ·)/p(s) =
    the emission row (1e-37, 1), however rare s is — p(0^5) = 1e-185.  Multiplying by p(s) instead of
    dividing underflowed: (0, 1) at s = 0^4, NaN at s = 0^5.  The world keeps float32 likelihoods: rtol 1e-4."""
    c = enumerate_contexts(HMM([1.0], [[1.0]], [[1e-37, 1.0]]), 6)
    assert len(c.prefixes) == 2**7 - 1  # every prefix has p(s) > 0
    law = np.asarray(c.next_token_probs)
    assert np.all(np.isfinite(law)) and np.all(law > 0)
    np.testing.assert_allclose(law, np.broadcast_to([1e-37, 1.0], law.shape), rtol=1e-4)


def test_contexts_are_exactly_the_prefixes_of_positive_probability():
    """π = e_0, every step to state 1; state 0 emits 0, state 1 emits 0 or 1 evenly.  By the path sum, of the
    7 prefixes of length ≤ 2 only (), (0,), (0, 0), (0, 1) have p(s) > 0 (x_1 = 0 surely); the other three
    have no law and are dropped, and each kept one's law is p(s ⊕ ·)/p(s)."""
    w = HMM([1.0, 0.0], [[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [0.5, 0.5]])
    c = enumerate_contexts(w, 2)
    pi, A, B = params(w)
    every = [s for t in range(3) for s in itertools.product(range(2), repeat=t)]
    prob = {s: sequence_prob(pi, A, B, list(s)) for s in every}
    assert list(c.prefixes) == [s for s in every if prob[s] > 0]
    law = np.asarray(c.next_token_probs)
    assert np.all(np.isfinite(law))
    np.testing.assert_allclose(law.sum(-1), 1.0, atol=1e-12)
    for i, s in enumerate(c.prefixes):
        assert c.prefix_probs[i] == pytest.approx(prob[s], rel=1e-6)
        want = [sequence_prob(pi, A, B, list(s) + [v]) / prob[s] for v in range(2)]
        np.testing.assert_allclose(law[i], want, rtol=1e-6, atol=1e-12)


# ---- bad input ------------------------------------------------------------------------------------

def test_too_many_contexts_raise_config_error(world):
    with pytest.raises(ConfigError, match="max_length"):
        enumerate_contexts(world, 4, max_contexts=100)
    with pytest.raises(ConfigError, match="max_length"):
        enumerate_contexts(world, -1)


def test_exactly_max_contexts_contexts_are_enumerated(world):
    """The cap refuses Σ_{t ≤ L} V^t > max_contexts: at L = 2, V = 3 that is 1 + 3 + 9 = 13, built at a cap
    of 13 and refused at 12."""
    assert len(enumerate_contexts(world, 2, max_contexts=13).prefixes) == 13
    with pytest.raises(ConfigError, match="max_contexts = 12"):
        enumerate_contexts(world, 2, max_contexts=12)


def test_unknown_prefix_raises_config_error(contexts):
    with pytest.raises(ConfigError, match="prefix"):
        contexts.index((0, 0, 0, 0))


def test_bad_problems_raise_typed_errors():
    P, phi = problem(9)
    with pytest.raises(DistributionError, match="p_star"):
        fit_cross_entropy(P * 2, phi)
    with pytest.raises(ShapeError, match="phi"):
        quad_minimiser(P, phi[:, :-1])
    with pytest.raises(ConfigError, match="phi"):
        quad_fit(P, np.full_like(phi, np.nan))
    with pytest.raises(ShapeError, match="weights"):
        best_achievable_epsilon(P, phi, np.ones(S + 1))
    with pytest.raises(ConfigError, match="weights"):
        fit_cross_entropy(P, phi, weights=-np.ones(S))
    with pytest.raises(ConfigError, match="steps"):
        fit_cross_entropy(P, phi, steps=0)
    with pytest.raises(ShapeError, match="theta"):
        SoftmaxContextLM(np.zeros((S, D + 1)), phi)
    with pytest.raises(ShapeError, match="init"):
        quad_fit(P, phi, init=np.zeros((S, D + 1)))


def test_learning_phi_jointly_fits_any_law_when_dim_equals_vocabulary():
    from simlm.models.finite import fit_cross_entropy_joint

    P = np.random.default_rng(0).dirichlet(np.ones(4), size=6)
    lm = fit_cross_entropy_joint(P, dim=4, steps=3000)
    assert lm.epsilon(P) < 1e-3


def test_a_learned_phi_beats_a_random_fixed_phi_of_the_same_dimension():
    from simlm.models.finite import best_achievable_epsilon, fit_cross_entropy_joint

    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(5) * 0.5, size=8)
    phi = rng.normal(size=(2, 5))
    joint = fit_cross_entropy_joint(P, dim=2, steps=3000).epsilon(P)
    assert joint <= best_achievable_epsilon(P, phi) + 1e-4
    assert joint > 1e-3  # a 2-dimensional softmax cannot fit 8 generic laws over 5 words


def test_the_joint_fit_minimises_the_weighted_kl():
    """The joint fit minimises Σ_s w_s KL(p*_s ‖ softmax(Φᵀθ_s)): with all the weight on one context a
    2-dimensional softmax fits that law, so the weighted ε goes to 0 (4e-12 after 300 steps); minimising the
    unweighted mean left it at 0.027."""
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(5), size=4)
    w = np.array([1.0, 0.0, 0.0, 0.0])
    assert fit_cross_entropy_joint(P, 2, weights=w, steps=300).epsilon(P, w) < 1e-6


def test_the_joint_fit_draws_theta_and_phi_from_their_own_keys():
    """A draw-order pin: θ₀ = 0.1·N(k_θ), Φ₀ = 0.1·N(k_Φ) with (k_θ, k_Φ) = split(PRNGKey(seed)), then one Adam
    step of lr 0.05 moves every entry by 0.05 against the sign of its gradient w_s Φ₀(q_s − p*_s)
    (w = ¼).  For seed 0 θ[0] is (0.0504, −0.1406); drawing θ₀ from k_Φ gave another start."""
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(5), size=4)
    k_theta, k_phi = jax.random.split(jax.random.PRNGKey(0))
    theta0 = np.asarray(0.1 * jax.random.normal(k_theta, (4, 2)), np.float64)
    phi0 = np.asarray(0.1 * jax.random.normal(k_phi, (2, 5)), np.float64)
    logits = theta0 @ phi0
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    grad = 0.25 * (q - P) @ phi0.T
    theta = np.asarray(fit_cross_entropy_joint(P, 2, steps=1, seed=0).theta, np.float64)
    np.testing.assert_allclose(theta, theta0 - 0.05 * np.sign(grad), atol=1e-5)  # float32
    np.testing.assert_allclose(theta[0], [0.0504, -0.1406], atol=1e-4)


def test_quad_excess_projects_an_ill_conditioned_concrete_phi_in_float64():
    """float32's pinv cutoff (~5e-6 of σ_max) dropped real directions of Φ: at the minimiser f* of a Φ of
    condition 1e6 the excess read 0.023 where it is 0 (a review, 2026-12-06).  A concrete Φ is projected in
    float64 on the host; what is left is float32's rounding of f·Φ (|f*| ~ 2e5 here)."""
    from simlm.models.finite import quad_excess
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), 3)
    U, _, Vt = np.linalg.svd(rng.standard_normal((3, 4)), full_matrices=False)
    phi = (U @ np.diag([1, 1e-3, 1e-6]) @ Vt).astype(np.float32).astype(np.float64)
    f_star = np.linalg.lstsq(phi.T, P.T, rcond=None)[0].T
    assert float(np.max(quad_excess(f_star, P, phi))) < 1e-5
    f = f_star + 0.1 * rng.standard_normal(f_star.shape)
    np.testing.assert_allclose(quad_excess(f, P, phi), 0.5 * np.sum(((f - f_star) @ phi) ** 2, -1), rtol=0, atol=5e-5)


def test_quad_excess_projects_a_rank_deficient_phi_given_in_float64_at_its_rank():
    """A Φ of rank 2 (row 3 = row 1 + row 2) given in float64: Π_Φ was taken from Φ rounded to float32, whose
    rounding left a third singular value ~1e-7, above float64 pinv's cutoff: the projection gained a spurious
    direction and the excess at the exact minimiser read up to 0.05 where it is 0 (a review, 2026-12-06)."""
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(2, 6))
    phi = np.vstack([phi, phi[0] + phi[1]])
    P = rng.dirichlet(np.ones(6), 4)
    f_star = P @ np.linalg.pinv(phi)
    assert float(np.max(quad_excess(f_star, P, phi))) < 1e-6
    f = f_star + 0.3 * rng.standard_normal(f_star.shape)
    np.testing.assert_allclose(quad_excess(f, P, phi), 0.5 * np.sum(((f - f_star) @ phi) ** 2, -1), rtol=1e-5,
                               atol=1e-6)


def test_a_fit_that_meets_the_tolerance_of_the_largest_spread_is_converged():
    """The other side of the test above: with tol just above g / max_w ‖φ_w − φ̄‖₂ the two-step fit meets the
    documented stop and is converged.  The columns' spreads differ here (0.097 to 1.17), so a rule scaled by
    another spread (the smallest, or ‖φ_w‖) keeps stepping and is cut by steps = 2 unconverged; the tests
    above only set tolerances the fit misses by 5× or beats by orders of magnitude."""
    rng = np.random.default_rng(0)
    P, phi = rng.dirichlet(np.ones(5), size=4), rng.standard_normal((2, 5))
    spreads = np.linalg.norm(phi - phi.mean(1, keepdims=True), axis=0)
    assert spreads.max() > 2 * spreads.min()
    one = fit_cross_entropy(P, phi, steps=1, tol=1e-8).grad_norm
    g = fit_cross_entropy(P, phi, steps=2, tol=1e-8).grad_norm
    tol = 1.01 * g / float(spreads.max())
    assert one > tol * spreads.max()  # one step does not meet it
    lm = fit_cross_entropy(P, phi, steps=2, tol=tol)
    assert lm.converged and lm.n_steps == 2 and lm.grad_norm == pytest.approx(g, rel=1e-12)


def test_quad_minimiser_keeps_a_weak_but_real_direction_of_phi():
    """f* = (ΦΦᵀ)⁻¹Φp* for a full-rank Φ whatever its condition: Φ here has singular values 1 and 1e-4 (condition
    1e4, far inside float64's pinv cutoff), so f* has a component ~1e4 along the weak direction.  The tests above
    draw well-conditioned Φ, where a pinv cutoff of 1e-3 (dropping that direction) passed."""
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((2, 2)))
    Vt, _ = np.linalg.qr(rng.standard_normal((5, 2)))
    phi = U @ np.diag([1.0, 1e-4]) @ Vt.T
    P = rng.dirichlet(np.ones(5), size=3)
    want = np.linalg.solve(phi @ phi.T, phi @ P.T).T  # float64 normal equations
    got = np.asarray(quad_minimiser(P, phi), np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("lr", [100.0, 1e4, 1e20])
def test_a_joint_fit_that_diverged_is_refused_naming_lr(lr):
    """Adam at a too large lr ended at ε 4.0 (lr 100) and 6.6e6 (1e4) from ~0.4 at its start, returned as fits;
    at 1e20 the NaN parameters were refused as "phi: entry (0, 0) is nan", an argument the joint fit has not
    (a review, 2026-12-07)."""
    from simlm.errors import TrainingDivergedError
    from simlm.models.finite import fit_cross_entropy_joint

    P = np.random.default_rng(0).dirichlet(np.ones(5), 4)
    with pytest.raises(TrainingDivergedError, match="^lr: fit_cross_entropy_joint diverged"):
        fit_cross_entropy_joint(P, 2, steps=200, lr=lr)
    assert fit_cross_entropy_joint(P, 2, steps=200, lr=0.05).epsilon(P) < 0.1


@settings(max_examples=scaled(60), deadline=None)
@given(V=st.integers(1, 4), L=st.integers(0, 6), cap=st.integers(1, 400))
def test_the_context_count_and_its_cap_are_the_brute_force_sum(V, L, cap):
    """For every V, V = 1 included (a count of L for L + 1 contexts, and a cap letting max_contexts + 1 through,
    passed every test; a mutation review, 2026-12-07)."""
    from simlm.worlds.contexts import check_context_count

    total = sum(V ** t for t in range(L + 1))
    if total > cap:
        with pytest.raises(ConfigError, match="^max_length"):
            check_context_count(V, L, cap)
    else:
        assert check_context_count(V, L, cap) == total


def test_a_one_symbol_world_lists_exactly_the_counted_contexts_and_the_cap_is_exact():
    from simlm.worlds.contexts import check_context_count

    world = HMM([1.0], [[1.0]], [[1.0]])
    assert len(enumerate_contexts(world, 2, max_contexts=3).prefixes) == check_context_count(1, 2) == 3
    with pytest.raises(ConfigError, match="^max_length"):
        enumerate_contexts(world, 2, max_contexts=2)


# ---- numbers no test read before (mutation review 2026-12-07): each test kills a mutant that passed the rest ----

def _problem(seed, S=4, d=2, V=5):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(V), size=S), rng.normal(size=(d, V)), rng.normal(size=(S, d))


def _kl64(p, q):
    return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0.0), -1)


def _softmax64(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_log_partition_is_the_logsumexp_of_the_logits():
    """The value, not only its gradient (a log-mean-exp, −log V off, passed: Newton reads differences)."""
    from scipy.special import logsumexp

    _, phi, theta = _problem(0)
    np.testing.assert_allclose(log_partition(theta, phi), logsumexp(theta @ phi, -1), rtol=1e-6)


def test_epsilon_weighs_contexts_by_the_normalised_weights_in_float64():
    """ε = Σ_s w_s KL(p*_s ‖ p_θ(s)) / Σw from the stored θ and Φ in float64, to 1e-9 relative (laws taken in
    float32 first passed the old tests); and ≈ 0 to float64 for a realisable p* (float32 laws read −6.5e-9)."""
    P, phi, theta = _problem(2)
    w = np.array([3.0, 0.0, 1.0, 0.5])
    lm = SoftmaxContextLM(theta, phi)
    kl = _kl64(P, _softmax64(np.asarray(lm.theta, np.float64) @ np.asarray(lm.phi, np.float64)))
    np.testing.assert_allclose(lm.epsilon(P, w), np.sum(w / w.sum() * kl), rtol=1e-9)
    np.testing.assert_allclose(lm.epsilon(P), kl.mean(), rtol=1e-9)
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(2, 5))
    P = _softmax64(rng.normal(size=(3, 2)) @ phi)
    assert abs(fit_cross_entropy(P, phi).epsilon(P)) < 1e-12


def test_best_achievable_epsilon_uses_the_weights_and_is_the_brute_force_floor():
    """The weighted floor of a d = 1 problem against a dense grid over each context's θ (float64): all the
    weight on context 0 gives its floor, 0.25 here, not the unweighted mean's 0.10 (weights dropped passed)."""
    P, phi, _ = _problem(4, S=3, d=1, V=4)
    grid = np.linspace(-30, 30, 200001)
    floors = np.array([_kl64(P[s][None], _softmax64(grid[:, None] * phi[0][None])).min() for s in range(3)])
    np.testing.assert_allclose(best_achievable_epsilon(P, phi, np.array([1.0, 0.0, 0.0])), floors[0], rtol=1e-5)
    np.testing.assert_allclose(best_achievable_epsilon(P, phi), floors.mean(), rtol=1e-5)
    assert abs(floors[0] - floors.mean()) > 0.1  # the weights matter on this problem


def test_quad_fit_keeps_inits_component_in_phis_null_space():
    """∇ = ΦΦᵀf − Φp* lies in Φ's column space, so gradient descent never moves the part of ``init`` along
    ker Φᵀ: f = (init's part there) + a minimiser (an init read only for its shape passed)."""
    P, _, _ = _problem(10, V=4)
    phi = np.array([[1.0, 0.0, -1.0, 0.5], [2.0, 0.0, -2.0, 1.0], [0.0, 1.0, 0.0, 1.0]])  # rank 2, d = 3
    init = np.random.default_rng(1).normal(size=(4, 3))
    null = np.linalg.svd(phi.T)[2][-1]  # ker Φᵀ in R^3
    f = np.asarray(quad_fit(P, phi, init=init, steps=3000), np.float64)
    np.testing.assert_allclose(f @ null, init @ null, atol=1e-4)
    assert np.abs(init @ null).max() > 0.1
    np.testing.assert_allclose(f @ phi, np.asarray(quad_minimiser(P, phi)) @ phi, atol=1e-3)
