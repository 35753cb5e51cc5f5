"""Wei, Xie & Ma's head- and prompt-tuning conditions (simlm.theory.head_prompt) on tiny worlds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bruteforce import params, prepended_state_law, prompted_state_law, sequence_prob
from simlm.errors import ConfigError, ShapeError
from simlm.strategies import hmms, probability_vectors
from simlm.theory import head_prompt as hp
from simlm.worlds import HMM, MemoryHMM, prompting


def _inputs(world, n=200, T=5, seed=0):
    """x_1:T drawn as positions 1..T of sampled sequences, so each is possible after a prepended x_0."""
    return np.asarray(world.sample(seed, n, T + 1))[:, 1:]


def _dirichlet_rows(rng, rows, cols):
    return rng.dirichlet(np.ones(cols), size=rows)


@pytest.fixture(scope="module")
def full_rank_world():
    rng = np.random.default_rng(0)
    return HMM(rng.dirichlet(np.ones(3)), _dirichlet_rows(rng, 3, 3), _dirichlet_rows(rng, 3, 5))


@pytest.fixture(scope="module")
def twin_world():
    """States 0 and 1 emit token 0 identically; 0 → 2 (emits 1), 1 → 3 (emits 2); 2, 3 → {0, 1}.  So
    x_1 = 1 ⇒ H_0 = 0 and x_1 = 2 ⇒ H_0 = 1, with the same masked law B[0] = B[1]."""
    A = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [.5, .5, 0, 0], [.5, .5, 0, 0]])
    B = np.array([[1., 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    return HMM(np.full(4, .25), A, B)


def _prompt_world(gate_row):
    """Rank-2 B (states 2, 3 copy the rows of 0, 1), S = {0, 1} has full-rank B_S; state 2's
    transition row is ``gate_row``, every other row has full support."""
    rng = np.random.default_rng(1)
    A = _dirichlet_rows(rng, 4, 4)
    A[2] = gate_row
    b0, b1 = [.7, .2, .1], [.1, .2, .7]
    return HMM(np.full(4, .25), A, np.array([b0, b1, b0, b1]))


MU_S = np.array([1., -1., 0., 0.])


def test_full_rank_emission_makes_every_task_realisable(full_rank_world):
    er = hp.emission_rank(full_rank_world)
    assert er.rank == 3 and er.full_row_rank and er.sigma_min > 1e-3 and np.isfinite(er.condition_number)
    mu = np.random.default_rng(2).normal(size=3)
    head = hp.head_realisability(full_rank_world, mu)
    assert head.realisable and head.residual < 1e-12
    check = hp.verify_head(full_rank_world, mu, head.head, _inputs(full_rank_world))
    assert check.fraction_correct == 1.0 and check.n_errors == 0 and check.holds


def test_full_rank_bundle_holds(full_rank_world):
    mu = np.array([1., -2., .5])
    rec = hp.check_head_prompt_conditions(full_rank_world, mu, _inputs(full_rank_world))
    assert rec.head_holds and rec.consistent and rec.certificate is None


def test_identical_emission_rows_leave_a_residual_and_a_certificate(twin_world):
    mu = MU_S
    assert hp.emission_rank(twin_world).rank == 3
    head = hp.head_realisability(twin_world, mu)
    assert not head.realisable and head.residual == pytest.approx(1.0)
    tokens = np.concatenate([[[1, 0, 1], [2, 0, 2]], _inputs(twin_world, n=100, T=3)])
    cert = hp.failure_certificate(twin_world, mu, tokens)
    assert cert.found and cert.min_cross_distance == 0.0
    assert any(set(map(int, pair)) == {0, 1} for pair in cert.pairs)
    masked = np.asarray(twin_world.prepended_mask_probs(tokens))  # the world's own masked LM
    post = np.asarray(twin_world.prepended_state_posterior(tokens))
    for (i, j), lab in zip(cert.pairs, cert.labels):
        assert np.abs(masked[i] - masked[j]).max() < 1e-6
        assert lab[0] != lab[1]
        assert (post[i] @ mu >= 0) == lab[0] and (post[j] @ mu >= 0) == lab[1]


def test_certificate_accepts_labels_and_feature_callables(twin_world):
    tokens = np.array([[1, 0, 1], [2, 0, 2], [0, 1, 0]])
    cert = hp.failure_certificate(twin_world, np.array([True, False, True]), tokens,
                                  features=lambda x: np.asarray(x)[:, 1:2])
    assert cert.found and {tuple(sorted(p)) for p in cert.pairs.tolist()} == {(0, 1)}


def test_an_invertible_ill_conditioned_emission_makes_every_task_realisable():
    """det B = 1.5e-8 (exact in float32): rank 3 by the rank test, and so every μ is in col(B); the
    residual of Bb − μ (~1e-7, rounding of order ε·cond B) once called all of them unrealisable."""
    d = 2.0**-24
    world = HMM(np.full(3, 1 / 3), np.full((3, 3), 1 / 3), np.array([[.5, .5, 0], [.5 - d, .5, d], [0, .25, .75]]))
    assert hp.emission_rank(world).full_row_rank
    for mu in np.random.default_rng(0).normal(size=(20, 3)):
        head = hp.head_realisability(world, mu)
        assert head.realisable and head.residual < 1e-12
        np.testing.assert_allclose(hp.chain64(world)[2] @ head.head, mu, atol=1e-6 * np.abs(mu).max())


def test_a_certificate_needs_two_labels_decided_outside_the_margin():
    """Two inputs whose features differ by 3e-12 and whose scores are ±9e-12, labelled apart by a μ at
    their boundary: no certificate (a head splits them, and B⁺μ does); one label clearly set by μ is."""
    world = HMM(np.full(2, .5), np.array([[.75, .25], [.25, .75]]), np.array([[.75, .25], [.25, .75]]))
    x = np.zeros((2, 20), np.int32)
    x[1, -1] = 1
    P = hp.state_posterior0(world, x)
    mu = np.array([1.0, -np.mean(P[:, 0] / P[:, 1])])
    assert (P @ mu >= 0).tolist() == [True, False] and np.abs(P @ mu).max() < 1e-10
    cert = hp.failure_certificate(world, mu, x)
    assert not cert.found and cert.pairs.shape == (0, 2)
    assert hp.failure_certificate(world, np.array([True, False]), x).found  # labels given: no margin to apply
    # the same labels as 0/1 integers are refused (with n = K = 2 they would be read as μ = (1, 0): no pair);
    # an integer μ with a negative entry is a task vector as before
    with pytest.raises(ConfigError, match="mu_or_labels"):
        hp.failure_certificate(world, np.array([1, 0]), x)
    assert not hp.failure_certificate(world, np.array([1, -1]), x).found
    head = hp.head_realisability(world, mu)
    assert head.realisable and hp.verify_head(world, mu, head.head, x, margin=1e-30).n_errors == 0


def test_verification_margins_scale_with_the_task_vector(full_rank_world):
    """The labels 1[μᵀP ≥ 0] do not change with μ's scale, so neither does what counts as within the
    margin: a head wrong everywhere fails at μ and at 1e-10 μ alike (an absolute margin once excused it)."""
    mu = np.array([1., -2., .5])
    x = _inputs(full_rank_world)
    wrong = -hp.head_realisability(full_rank_world, mu).head
    checks = [hp.verify_head(full_rank_world, s * mu, wrong, x) for s in (1.0, 1e-10, 1e10)]
    assert all(not c.holds and c.n_within_margin == checks[0].n_within_margin < len(x) for c in checks)
    rec = hp.check_head_prompt_conditions(full_rank_world, 1e-10 * mu, x)
    assert rec.head_holds and rec.head_check.n_within_margin == checks[0].n_within_margin


def test_the_prompt_margin_is_the_smallest_weight_on_s_over_the_largest_anywhere():
    """At a soft zero (δ = 1e-5) the constructive prompt can favour a state off S: r = (0.031, 0, 1) with
    S = {0}; the margin is min_S r / max r = 0.031, not min_S r / max_S r = 1."""
    e = 2.0**-26
    B = np.eye(3) * .5 + .5 / 3
    world = HMM(np.array([.5, .5 - e, e]), np.array([[.5, .5, 0], [1 - 2.0**-20, 0, 2.0**-20], [.5, .25, .25]]),
                B / B.sum(1, keepdims=True))
    pf = hp.prompt_feasibility(world, np.array([1., 0, 0]), k=1, delta=1e-5)
    assert pf.feasible and pf.reweighting.max() == 1.0 and pf.reweighting[2] == 1.0
    assert pf.margin == pytest.approx(pf.reweighting[0]) and pf.margin < 0.05


def test_prompt_tuning_works_where_head_tuning_cannot():
    world = _prompt_world([.8, .2, 0, 0])
    tokens = _inputs(world, n=300, T=4)
    rec = hp.check_head_prompt_conditions(world, MU_S, tokens)
    assert not rec.emission.full_row_rank and not rec.head.realisable and rec.head.residual > 0.5
    assert rec.support.full_row_rank and rec.support.rank == 2
    assert rec.prompt.feasible and rec.prompt.allowed == ((2,),) and rec.prompt.off_support_mass == 0.0
    assert rec.prompt.margin == pytest.approx(0.25)  # r ∝ A[2] / π = (.8, .2) / .25 on S
    assert rec.prompt_holds and rec.consistent
    assert rec.prompt_check.fraction_correct == 1.0 and rec.prompt_check.max_off_support_mass == 0.0
    labels = hp.state_posterior0(world, tokens) @ MU_S >= 0
    assert 0 < labels.mean() < 1  # the task is not constant on these inputs


@pytest.mark.parametrize("k", [1, 2, 3])
def test_longer_prompts_stay_feasible_and_correct(k):
    world = _prompt_world([.5, .5, 0, 0])
    tokens = _inputs(world, n=100, T=3)
    pf = hp.prompt_feasibility(world, MU_S, k=k)
    assert pf.feasible and pf.prompt.shape == (k, 4) and pf.allowed[-1] == (2,)
    b = hp.prompt_head(world, MU_S, pf.prompt)
    check = hp.verify_prompt(world, MU_S, pf.prompt, b, tokens)
    assert check.fraction_correct == 1.0 and check.max_off_support_mass == 0.0


def test_prompt_infeasible_when_every_state_leaks_off_the_support():
    world = _prompt_world(np.full(4, .25))
    pf = hp.prompt_feasibility(world, MU_S)
    assert not pf.feasible and pf.gate == () and "no hidden state transitions only into S" in pf.reason
    rec = hp.check_head_prompt_conditions(world, MU_S, _inputs(world, n=100, T=3))
    assert not rec.prompt_holds and rec.prompt_check is None and rec.consistent


def test_prompt_infeasible_when_a_support_state_cannot_be_entered():
    world = _prompt_world([1., 0, 0, 0])
    pf = hp.prompt_feasibility(world, MU_S)
    assert not pf.feasible and pf.gate == (2,) and pf.uncovered == (1,) and "(1,)" in pf.reason


def test_tiny_transitions_count_as_zero_below_delta():
    """1e-30 is a soft zero at δ = 1e-10 (a leaking prompt: ``exact`` False), not at the default δ = 0
    (the theorem's exact hypothesis) nor at δ = 1e-40; ``tol`` is δ's former name."""
    world = _prompt_world([.5, .5 - 1e-30, 1e-30, 0])
    soft = hp.prompt_feasibility(world, MU_S, delta=1e-10)
    assert soft.feasible and not soft.exact and soft.off_support_mass > 0 and soft.delta == soft.tol == 1e-10
    assert hp.prompt_feasibility(world, MU_S, tol=1e-10).feasible
    assert not hp.prompt_feasibility(world, MU_S).feasible
    assert not hp.prompt_feasibility(world, MU_S, delta=1e-40).feasible


# Jitted once here: called eagerly, each lax.scan inside compiled anew on every call (a fresh closure each time).
_prompt_prior = jax.jit(prompting.prompt_prior)
_prompted_state_posterior = jax.jit(prompting.prompted_state_posterior)
_prompt_reweighting = jax.jit(prompting.prompt_reweighting)


@given(hmms(max_states=3, max_symbols=3), st.data())
def test_prompt_reweighting_matches_enumeration(world, data):
    pi, A, B = params(world)
    K = len(pi)
    k = data.draw(st.integers(1, 2))
    U = np.stack([data.draw(probability_vectors(K)) for _ in range(k)])
    x = np.asarray(world.sample(data.draw(st.integers(0, 2**31 - 1)), 1, data.draw(st.integers(2, 4))))[0, 1:]
    assume(sequence_prob(pi @ A, A, B, x) > 0)
    with jax.enable_x64(True):
        f64 = [jnp.asarray(a, jnp.float64) for a in (pi, A, B, U)]
        prior = np.asarray(_prompt_prior(*f64[:2], f64[3]))
        assume(sum(prior[h] * sequence_prob(np.eye(K)[h] @ A, A, B, x) for h in range(K)) > 1e-12)
        prompted = np.asarray(_prompted_state_posterior(*f64[:3], f64[3], jnp.asarray(x))[0])
        r = np.asarray(_prompt_reweighting(*f64[:2], f64[3]))
    brute = prompted_state_law(pi, A, B, U, x)
    np.testing.assert_allclose(prompted, brute, atol=1e-9)
    p = prepended_state_law(pi, A, B, x)
    np.testing.assert_allclose(hp.state_posterior0(world, x)[0], p, atol=1e-9)
    on = (p > 1e-9) & (pi > 0)  # where the ratio P(H_0|z,x)/P(H_0|x) is defined
    assume(brute[on].sum() > 1e-9)
    assert np.isclose(r.max(), 1.0) and np.all(r[pi == 0] == 0)  # scaled to max 1; 0 where π = 0
    ratio = brute[on] / p[on]
    np.testing.assert_allclose(r[on] / r[on].sum(), ratio / ratio.sum(), atol=1e-7)


def test_memory_rank_per_syntactic_state():
    emission = np.array([[[.7, .2, .1], [.5, .5, 0]],
                         [[.1, .2, .7], [.5, .5, 0]]])  # (M=2, Q=2, V=3): q=0 rank 2, q=1 rank 1
    world = MemoryHMM.one_cell([.5, .5], [.5, .5], [[.5, .5], [.5, .5]], emission)
    mr = hp.memory_rank(world)
    assert mr.n_values == 2 and mr.ranks.tolist() == [2, 1] and mr.full_rank.tolist() == [True, False]
    assert mr.any_full_rank and not mr.all_full_rank and mr.sigma_min[1] < 1e-12 < mr.sigma_min[0]
    assert hp.emission_rank(world).n_states == world.n_joint_states  # general checks read the joint HMM


@pytest.mark.parametrize("call, error, name", [
    (lambda w: hp.head_realisability(w, np.ones(4)), ShapeError, "mu"),
    (lambda w: hp.support_rank(w, np.zeros(3)), ConfigError, "mu"),
    (lambda w: hp.prompt_feasibility(w, np.ones(3), k=0), ConfigError, "k"),
    (lambda w: hp.emission_rank(w, tol=0.0), ConfigError, "tol"),
    (lambda w: hp.head_realisability(w, np.ones(3), tol=-1.0), ConfigError, "tol"),
    (lambda w: hp.memory_rank(w), ConfigError, "world"),
    (lambda w: hp.emission_rank(object()), ConfigError, "world"),
    (lambda w: hp.verify_head(w, np.ones(3), np.ones(2), [[0, 1]]), ShapeError, "b"),
    (lambda w: hp.prompt_head(w, np.ones(3), -np.ones(3)), ConfigError, "U"),
])
def test_bad_inputs_raise_typed_errors_naming_the_argument(full_rank_world, call, error, name):
    with pytest.raises(error, match=rf"^{name}\b"):
        call(full_rank_world)
