"""Reviewed defects of simlm.theory.head_prompt: the prompt's soft-zero threshold δ apart from the rank
tolerance, inputs the constructive prompt makes impossible, and relative thresholds ≥ 1."""

import itertools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st

from bruteforce import prompted_state_law
from profiles import scaled
from simlm.errors import ConfigError, ZeroProbabilityError
from simlm.theory import head_prompt as hp
from simlm.theory.head_prompt_margins import feasibility_range, label_margins
from simlm.worlds import HMM, MemoryHMM

EPS = 4e-11  # a transition below 1e-10 × its row's maximum: a soft zero at δ = 1e-10, not at δ = 0
MU = np.array([1.0, -5.0, 0.0])  # S = {0, 1}
PI = np.array([0.5, 0.5 - 1e-8, 1e-8])
B3 = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0.5, 0.5]])


def _leak_world(second_row_leaks: bool) -> HMM:
    """State 0 moves EPS off S; state 1 moves exactly 0 off S (or EPS too); state 2 is off S."""
    A = np.array([[0.5, 0.5 - EPS, EPS], [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    if second_row_leaks:
        A[1] = A[0]
    return HMM(PI, A, B3)


def _possible_inputs(world, T=2):
    keep = []
    for x in itertools.product(range(3), repeat=T):
        try:
            hp.state_posterior0(world, np.array([x]))
            keep.append(x)
        except ZeroProbabilityError:
            pass
    return np.array(keep, np.int32)


# ---- 1: the prompt's δ apart from the rank tol; exact zeros first ------------------------------------

def test_the_bundle_reads_the_prompt_at_exact_zeros_by_default():
    """The graph condition holds at δ = 0 (state 1 has exact zeros off S), yet the bundle's one tol = 1e-10
    also gated state 0 (A[0, 2] = 4e-11): its leaked mass, reweighted by α/π, flipped labels and the record
    read consistent = False.  The prompt half now reads δ = 0 unless told otherwise."""
    world = _leak_world(False)
    x = _possible_inputs(world)
    assert feasibility_range(world, MU).exact
    rec = hp.check_head_prompt_conditions(world, MU, x)
    assert rec.prompt_holds and rec.consistent and rec.prompt_check.max_off_support_mass == 0.0
    assert rec.prompt.allowed == ((1,),) and rec.prompt.delta == 0.0 and rec.prompt.exact


def test_a_positive_delta_still_builds_the_prompt_from_exact_zeros_where_they_cover_s():
    world = _leak_world(False)
    x = _possible_inputs(world)
    pf = hp.prompt_feasibility(world, MU, tol=1e-10)  # δ under its former name
    assert hp.prompt_graph(*hp.chain64(world)[:2], np.asarray(MU) != 0, 1, 1e-10)[1].tolist() == [True, True, False]
    # the graph at δ gates both states; the prompt (and the record, its graph's) uses the exact one's state 1 only
    assert pf.feasible and pf.gate == (1,)
    assert pf.allowed == ((1,),) and pf.exact and pf.off_support_mass == 0.0
    rec = hp.check_head_prompt_conditions(world, MU, x, delta=1e-10)
    assert rec.prompt.exact and rec.consistent and rec.prompt_check.n_errors == 0


def test_soft_gated_states_are_used_only_when_needed_and_the_leak_is_reported():
    world = _leak_world(True)  # no state has exact zeros off S
    assert not hp.prompt_feasibility(world, MU).feasible
    pf = hp.prompt_feasibility(world, MU, delta=1e-10)
    assert pf.feasible and not pf.exact and pf.allowed == ((0, 1),) and pf.off_support_mass > 0
    rec = hp.check_head_prompt_conditions(world, MU, _possible_inputs(world), delta=1e-10)
    assert not rec.prompt.exact and rec.prompt_check.max_off_support_mass > 0.1  # reweighted by β_0(x)


def test_rank_tol_and_prompt_delta_are_separate():
    world = _leak_world(False)
    x = _possible_inputs(world)
    rec = hp.check_head_prompt_conditions(world, MU, x, tol=1e-6, delta=0.0)
    assert rec.emission.tol == rec.head.tol == rec.support.tol == 1e-6 and rec.prompt.delta == 0.0
    with pytest.raises(ConfigError, match="^tol: the former name of delta"):
        hp.prompt_feasibility(world, MU, delta=0.1, tol=0.1)


def test_the_experiments_prompt_feasible_is_the_checks_reading():
    """The records' ``prompt_feasible`` reads δ = 0 like the bundle's default (it read 1e-10, so a task
    could be 'feasible' and not 'exact' at once)."""
    from simlm.experiments.head_prompt import Config, conditions

    for world in (_leak_world(False), _leak_world(True)):
        out = conditions(world, "hmm", SimpleNamespace(mu=MU), Config(trained=False))
        check = hp.check_head_prompt_conditions(world, MU, _possible_inputs(world))
        assert out["prompt_feasible"] == out["prompt_exact"] == check.prompt.feasible



def test_a_soft_gated_prompt_can_fail_and_the_bundle_then_reads_inconsistent():
    """``consistent``'s prompt half can fail only through a leak off S that δ > 0 ignores (the docstring's
    claim): here state 1's row leaks 0.003 and 0.029 (< δ = 0.06 of its largest entry) to the states off
    S = {0, 1}, and the constructive prompt + head on state 1 get inputs outside the margin wrong, so the
    bundle must read inconsistent — the one way this check can fail, shown to fail."""
    world = HMM([0.8636, 0.0717, 0.0, 0.0647],
                [[0.3625, 0.3767, 0.0031, 0.2577], [0.552, 0.4157, 0.0032, 0.0291],
                 [0.7216, 0.0137, 0.0238, 0.2409], [0.029, 0.209, 0.7618, 0.0002]],
                [[0.0436, 0.731, 0.016, 0.2094], [0.1994, 0.4258, 0.1683, 0.2065],
                 [0.2605, 0.2402, 0.1996, 0.2997], [0.7351, 0.0005, 0.2596, 0.0048]])
    mu = np.array([0.34, -3.18, 0.0, 0.0])
    x = np.array(list(itertools.product(range(4), repeat=2)), np.int32)
    rec = hp.check_head_prompt_conditions(world, mu, x, delta=0.06)
    assert rec.prompt.feasible and not rec.prompt.exact and rec.prompt.allowed == ((1,),)
    assert rec.support.full_row_rank and rec.prompt_check.n_errors > 0 and not rec.prompt_holds
    assert rec.head_holds and not rec.consistent and not rec.trivial
    exact = hp.check_head_prompt_conditions(world, mu, x)  # δ = 0: no prompt, nothing to contradict
    assert not exact.prompt.feasible and exact.consistent

# ---- 2: inputs the prompt makes impossible are counted, not fatal --------------------------------------

def _crash_world():
    A = np.array([[.5, .5, 0], [.3, .7, 0], [.2, .2, .6]])
    B = np.array([[.8, .2, 0], [.2, .8, 0], [0, 0, 1.]])
    return HMM(np.full(3, 1 / 3), A, B)


def test_inputs_impossible_under_the_prompt_count_as_errors_without_margin():
    """x_1 = 2 forces H_1 = 2, entered only from state 2 ∉ S: possible in the world, impossible after the
    constructive prompt (P(H_0 ∈ S | x) = 0, so μᵀP(H_0|x) = 0: no margin).  It raised ZeroProbabilityError."""
    world, mu = _crash_world(), np.array([1., -1., 0])
    x = np.asarray(world.sample(0, 50, 4))[:, 1:]
    n2 = int((x[:, 0] == 2).sum())
    assert n2 > 0
    rec = hp.check_head_prompt_conditions(world, mu, x)
    check = rec.prompt_check
    assert check.n_undefined == n2 and check.n_errors == n2 and check.n_within_margin >= n2
    assert check.n_errors_outside_margin == 0 and check.holds and rec.prompt_holds and rec.consistent
    assert check.fraction_correct == pytest.approx(1 - n2 / len(x))


def test_an_input_impossible_in_the_world_still_raises():
    world, mu = _crash_world(), np.array([1., -1., 0])
    pf = hp.prompt_feasibility(world, mu)
    b = hp.prompt_head(world, mu, pf.prompt)
    with pytest.raises(ZeroProbabilityError, match="^tokens"):
        hp.verify_prompt(world, mu, pf.prompt, b, np.array([[0, 2]]))  # state 0 or 1 never enters 2


def test_a_prompt_that_hides_a_labelled_input_is_an_error_outside_the_margin():
    """U keeps only state 0, so an input that pins H_0 = 1 (label 0, margin |μ_1|) has no prompted output."""
    world = HMM(np.full(2, .5), np.eye(2), np.eye(2))
    mu = np.array([1., -1.])
    check = hp.verify_prompt(world, mu, np.array([[1., 0.]]), np.array([1., -1.]), np.array([[0], [1]]))
    assert check.n_undefined == 1 and check.n_errors_outside_margin == 1 and not check.holds


def test_sparse_worlds_with_the_prompt_condition_no_longer_raise():
    rng = np.random.default_rng(0)
    n = 0
    for seed in range(25):
        w = HMM.random(seed, 5, 4, family="sparse", out_degree=2, emission_support=2)
        mu = np.zeros(5)
        mu[rng.choice(5, 2, replace=False)] = [1.0, -1.0]
        if not (hp.prompt_feasibility(w, mu).feasible and hp.support_rank(w, mu).full_row_rank):
            continue
        n += 1
        rec = hp.check_head_prompt_conditions(w, mu, np.asarray(w.sample(seed, 64, 5))[:, 1:])
        assert rec.consistent and rec.prompt_check.n_errors_outside_margin == 0
    assert n >= 3


# ---- 3: relative thresholds ≥ 1 are refused ------------------------------------------------------------

_W = HMM(np.full(2, .5), np.eye(2), np.eye(2))
_MEM = MemoryHMM.one_cell([.5, .5], [.5, .5], [[.5, .5], [.5, .5]],
                          np.array([[[.7, .2, .1], [.5, .5, 0]], [[.1, .2, .7], [.5, .5, 0]]]))
_M2 = np.array([1., -1.])


@pytest.mark.parametrize("bad", [1.0, 2.0])
@pytest.mark.parametrize("call, name", [
    (lambda v: hp.emission_rank(_W, tol=v), "tol"),
    (lambda v: hp.head_realisability(_W, _M2, tol=v), "tol"),
    (lambda v: hp.support_rank(_W, _M2, tol=v), "tol"),
    (lambda v: hp.prompt_head(_W, _M2, np.ones((1, 2)), tol=v), "tol"),
    (lambda v: hp.memory_rank(_MEM, tol=v), "tol"),
    (lambda v: hp.prompt_feasibility(_W, _M2, delta=v), "delta"),
    (lambda v: hp.prompt_feasibility(_W, _M2, tol=v), "tol"),
    (lambda v: hp.check_head_prompt_conditions(_W, _M2, [[0, 0]], tol=v), "tol"),
    (lambda v: hp.check_head_prompt_conditions(_W, _M2, [[0, 0]], delta=v), "delta"),
    (lambda v: hp.verify_head(_W, _M2, _M2, [[0, 0]], margin=v), "margin"),
    (lambda v: hp.failure_certificate(_W, _M2, [[0, 0]], margin=v), "margin"),
    (lambda v: label_margins(_M2, np.eye(2), relative=v), "relative"),
])
def test_relative_thresholds_of_one_or_more_are_refused(call, name, bad):
    """head_realisability(tol=2) called every μ realisable by the zero head; emission_rank(tol=1) gave rank 0."""
    with pytest.raises(ConfigError, match=rf"^{name}: a relative threshold must be below 1"):
        call(bad)


def test_thresholds_just_below_one_and_delta_zero_are_accepted():
    assert hp.emission_rank(_W, tol=0.999).full_row_rank  # σ_min/σ_max = 1 > 0.999
    assert hp.prompt_feasibility(_W, np.array([1., 0.]), delta=0.0).feasible


# ---- 4: the prompt graph against brute force; certificate pairs; ``trivial``; margins ------------------

_BITS3 = st.lists(st.integers(0, 1), min_size=3, max_size=3)


def _some_indicator_prompt_confines_h0_to_s(pi, A, S, k) -> bool:
    """Brute force of the prompt condition at δ = 0: some k 0/1 prompt rows u_1..u_k give P(H_0 | z) ∝ αA,
    α = ((π∘u_1)A∘u_2)…∘u_k, positive on S and 0 off it (real prompt rows have the same supports)."""
    K = len(pi)
    with np.errstate(invalid="ignore"):  # a prompt with α = 0 has no P(H_0 | z): NaN, never counted
        for rows in itertools.product(itertools.product((0.0, 1.0), repeat=K), repeat=k):
            law = prompted_state_law(pi, A, np.eye(K), np.array(rows), ())
            if np.all(law[S] > 0) and np.all(law[~S] == 0):
                return True
    return False


@settings(max_examples=scaled(40), deadline=None)
@given(edges=st.lists(_BITS3, min_size=3, max_size=3), start=_BITS3, task=_BITS3, k=st.integers(1, 3))
@example(edges=[[0, 1, 0], [0, 1, 1], [1, 0, 0]], start=[1, 1, 0], task=[0, 1, 0], k=2)  # infeasible
@example(edges=[[0, 0, 1], [1, 1, 1], [1, 0, 0]], start=[0, 1, 1], task=[0, 0, 1], k=3)  # feasible
def test_prompt_feasibility_at_delta_zero_is_brute_force_over_indicator_prompts(edges, start, task, k):
    """On directed (non-symmetric) supports the graph's forward reach must follow A's edges g → h
    (R_{j+1} = succ(R_j)); following them backwards (predecessors) flipped the verdict both ways on the two
    @examples (3-state worlds, k = 2: 'feasible' where no prompt confines H_0 to S = {1}; k = 3: 'infeasible'
    where one does)."""
    A = np.array(edges, float)
    A[A.sum(1) == 0, 0] = 1.0  # every state goes somewhere
    pi, S = np.array(start, float), np.array(task, bool) & np.array(start, bool)
    assume(S.any())
    world = HMM(pi / pi.sum(), A / A.sum(1, keepdims=True), np.eye(3))
    pf = hp.prompt_feasibility(world, S.astype(float), k=k)
    assert pf.support == tuple(np.flatnonzero(S))
    assert pf.feasible == _some_indicator_prompt_confines_h0_to_s(pi, A, S, k)


def test_certificate_pairs_have_both_labels_outside_the_margin():
    """Docstring: only inputs with |μᵀP(H_0|x)| > margin·max|μ| take part.  μ = (1, −1, 0) − the median score
    (balanced labels) on all 64 inputs of length 3 leaves 25 clear positives, 29 clear negatives and 3
    negatives inside margin 0.01 (|score| ≤ 0.0118); tol = 10 exceeds every feature distance, so the pairs
    are exactly the 25 × 29 = 725 clear opposite pairs.  Letting every negative in gave 800, 75 of them with
    a member inside the margin."""
    world = HMM.random(0, 3, 4)
    x = np.array(list(itertools.product(range(4), repeat=3)), np.int32)
    P = hp.state_posterior0(world, x)
    mu = np.array([1.0, -1.0, 0.0])
    mu -= np.median(P @ mu)  # rows of P sum to 1: shifts every score by the median
    score, margin = P @ mu, 0.01
    clear = np.abs(score) > margin * np.abs(mu).max()
    n1, n0 = int(np.sum(clear & (score >= 0))), int(np.sum(clear & (score < 0)))
    assert (n1, n0, int(np.sum(~clear & (score < 0)))) == (25, 29, 3)
    cert = hp.failure_certificate(world, mu, x, tol=10.0, margin=margin, max_pairs=10_000)
    assert clear[cert.pairs].all()
    assert len(cert.pairs) == n1 * n0 and np.all(cert.labels == [True, False])


def test_trivial_is_false_when_exactly_one_condition_holds():
    """``trivial`` needs both halves unable to fail.  HMM.random(0, 3, 4) has B of rank 3 = K, so every μ
    is a head task; its dense A gates no state, so no prompt confines H_0 to S = {0, 1}.  One condition holds:
    not trivial (reading 'not both hold' made it True)."""
    world = HMM.random(0, 3, 4)
    x = np.array(list(itertools.product(range(4), repeat=3)), np.int32)
    rec = hp.check_head_prompt_conditions(world, np.array([1.0, -1.0, 0.0]), x)
    assert rec.head.realisable and not rec.prompt.feasible
    assert not rec.trivial


def test_trivial_when_every_input_is_within_the_margin():
    """μ = (0, 0, 1) with π = (½, ½, 0): μᵀP(H_0 | x) = 0 for every x — a constant task that μ ≠ 0 hides.
    The head condition holds (B = I), yet no input lies outside the margin, so its check could not fail:
    trivial.  Any μ with weight on a reachable state at once gives the head something to get right."""
    pi, A = np.array([0.5, 0.5, 0.0]), np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)
    world, x = HMM(pi, A, np.eye(3)), np.array([[1], [2]], np.int32)  # x_1 = 0 would need H_0 = 2
    rec = hp.check_head_prompt_conditions(world, np.array([0.0, 0.0, 1.0]), x)
    assert rec.head.realisable and rec.head_holds and rec.consistent
    assert rec.head_check.n_within_margin == rec.head_check.n_samples == 2
    assert rec.trivial
    rec = hp.check_head_prompt_conditions(world, np.array([1.0, 0.0, 1.0]), x)
    assert rec.head_holds and rec.head_check.n_within_margin < rec.head_check.n_samples and not rec.trivial


def test_delta_min_is_the_smallest_feasible_delta_when_the_range_is_not_monotone():
    """π ∝ (0.01, 0.3, 1), S = {0}: feasible on [0, 0.3) (through state 1, which moves only to 0) and again
    on [2/3, 1) (state 2's move to 1, 0.4/0.6 of its largest entry, becomes a soft zero), not in between.
    ``delta_min`` is the smallest δ where prompt_feasibility holds, 0 (reading the last piece gave 2/3)."""
    pi = np.array([0.01, 0.3, 1.0])
    A = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.4, 0.0]])
    world, mu = HMM(pi / pi.sum(), A, np.eye(3)), np.array([1.0, 0.0, 0.0])
    fr = feasibility_range(world, mu)
    assert len(fr.intervals) == 2 and fr.intervals[0][1] == pytest.approx(0.3)
    assert fr.intervals[1][0] == pytest.approx(2 / 3, abs=1e-7)  # π's float rounding of 0.4/0.6
    assert [hp.prompt_feasibility(world, mu, delta=d).feasible for d in (0.0, 0.5, 0.7)] == [True, False, True]
    assert fr.exact and fr.delta_min == 0.0 and fr.delta_max == 1.0


def test_a_three_class_margin_is_the_gap_between_the_two_largest_scores():
    """L = (e_0, e_1, (½, ½)), P = (0.7, 0.3): scores (0.7, 0.3, 0.5), margin 0.7 − 0.5 = 0.2 (top minus the
    smallest score gave 0.4)."""
    L = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    lm = label_margins(L, np.array([[0.7, 0.3]]))
    assert lm.margins == pytest.approx([0.2], abs=1e-12) and lm.scale == 1.0


# ---- 5: boundaries of the thresholds, σ padding, exactness ---------------------------------------------

_WW = HMM([.5, .5], np.eye(2), [[.75, .25], [.25, .75]])  # token 0 gives P(H_0 | x) = (0.75, 0.25) exactly


def test_exact_prompt_falls_back_only_when_exact_zeros_cover_s():
    """State 0 stays put, state 1 leaks 4e-11 (a soft zero at δ = 1e-10) to state 2 ∉ S = {0, 1}.  The exact
    graph gates only state 0, which never enters state 1, so it does not cover S: the prompt must use the
    soft-gated state 1 (``exact`` False, r > 0 on S).  Taking the exact graph's prompt anyway wiped out state
    1 of S (margin 0) yet read feasible and exact."""
    A = np.array([[1.0, 0, 0], [0, 1 - EPS, EPS], [1 / 3, 1 / 3, 1 / 3]])
    world = HMM(np.full(3, 1 / 3), A, np.eye(3))
    pf = hp.prompt_feasibility(world, np.array([1.0, -1.0, 0.0]), delta=1e-10)
    assert pf.feasible and pf.uncovered == () and pf.allowed == ((0, 1),)
    assert pf.margin > 0 and np.all(pf.reweighting[[0, 1]] > 0)  # positive on S, as feasible promises
    assert not pf.exact and pf.off_support_mass > 0


def test_prompt_holds_needs_b_s_of_full_row_rank():
    """States 0 and 1 of S have the same emission row: B_S has rank 1 < |S| = 2, so the prompt condition
    fails even though the prompt is feasible (and every score is a tie, so the check itself holds)."""
    B = np.array([[.8, .2], [.8, .2], [.2, .8]])
    A = np.array([[.5, .5, 0], [.5, .5, 0], [1 / 3, 1 / 3, 1 / 3]])
    world = HMM(np.full(3, 1 / 3), A, B)
    x = np.array(list(itertools.product(range(2), repeat=2)), np.int32)
    rec = hp.check_head_prompt_conditions(world, np.array([1.0, -1.0, 0.0]), x)
    assert rec.prompt.feasible and not rec.support.full_row_rank and not rec.head.realisable
    assert not rec.prompt_holds and rec.trivial


def test_emission_sigma_min_is_zero_when_there_are_more_states_than_tokens():
    """B (3, 2) has K − V = 1 zero singular value: the padded spectrum ends in 0, so σ_min = σ_K = 0."""
    world = HMM(np.full(3, 1 / 3), np.full((3, 3), 1 / 3), [[1, 0], [0, 1], [.5, .5]])
    e = hp.emission_rank(world)
    assert len(e.singular_values) == 3 and e.singular_values[-1] == 0.0
    assert e.sigma_min == 0.0 and e.condition_number == np.inf
    assert e.rank == 2 and not e.full_row_rank and e.margin < 0


def test_a_singular_value_at_exactly_tol_times_sigma_max_does_not_count():
    """Docstrings: σ_i counts when σ_i > tol·σ_max, and margin = σ_K/σ_1 − tol > 0 ⇔ full row rank.  At
    tol = σ_2/σ_1 exactly the margin is 0, so σ_2 does not count: rank 1."""
    world = HMM([.5, .5], np.eye(2), [[.6, .4], [.4, .6]])
    s = hp.emission_rank(world).singular_values
    tol = s[1] / s[0]
    assert s[1] == tol * s[0]  # the boundary is hit exactly in floating point
    e = hp.emission_rank(world, tol=tol)
    assert e.margin == 0.0 and e.rank == 1 and not e.full_row_rank


def test_verify_head_margin_is_inclusive_and_relative_to_max_abs_mu():
    """μ = (1, −1), P(H_0 | 0) = (0.75, 0.25): score 0.5, label 1; b = (−1, 1) scores −0.25, wrong.  With
    margin 0.5 the input is within it (|0.5| ≤ 0.5·max|μ|): holds.  With margin 0.3 it is outside it
    (0.5 > 0.3·max|μ| = 0.3; Σ|μ| = 2 would put it inside): does not hold."""
    mu, b, x = np.array([1.0, -1.0]), np.array([-1.0, 1.0]), np.array([[0]])
    at = hp.verify_head(_WW, mu, b, x, margin=0.5)
    assert at.n_errors == 1 and at.n_within_margin == 1 and at.n_errors_outside_margin == 0 and at.holds
    out = hp.verify_head(_WW, mu, b, x, margin=0.3)
    assert out.n_errors == 1 and out.n_within_margin == 0 and out.n_errors_outside_margin == 1 and not out.holds


def test_a_tie_is_label_one_and_prediction_one():
    """B uninformative: P(H_0 | x) = π = (½, ½), so μᵀP = 0 (label 1) and the zero head scores 0 (predicts 1)."""
    world = HMM([.5, .5], np.eye(2), np.full((2, 2), .5))
    v = hp.verify_head(world, np.array([1.0, -1.0]), np.zeros(2), np.array([[0]]))
    assert v.n_errors == 0 and v.fraction_correct == 1.0 and v.holds


def test_allowed_prompt_states_are_reachable():
    """π = (½, ½, 0): R_1 = {0, 1}.  State 2 leads to state 0 (∈ W_2) but cannot be used at step 1:
    W_1 = {g ∈ R_1 : succ(g) ∩ W_2 ≠ ∅} = {0, 1}."""
    world = HMM([.5, .5, 0], [[1, 0, 0], [.5, .5, 0], [1, 0, 0]], np.eye(3))
    pf = hp.prompt_feasibility(world, np.array([1.0, 0, 0]), k=2)
    assert pf.allowed == ((0, 1), (0,)) and pf.reachable[0] == (0, 1)
    assert all(set(W) <= set(R) for W, R in zip(pf.allowed, pf.reachable))
    assert np.array_equal(pf.prompt[0], [1, 1, 0])


def test_certificate_distance_at_tol_counts():
    """Docstring: pairs with max|φ(x_i) − φ(x_j)| ≤ tol: distance 0.5 at tol 0.5 is a pair."""
    cert = hp.failure_certificate(_WW, np.array([True, False]), np.array([[0], [1]]),
                                  features=lambda t: np.array([[0.0], [0.5]]), tol=0.5)
    assert cert.found and cert.pairs.tolist() == [[0, 1]] and cert.distances.tolist() == [0.5]


def test_certificate_inputs_at_the_margin_take_no_part():
    """Scores ±0.5 with margin 0.5·max|μ| = 0.5: neither input is clearly labelled (|score| > margin is
    needed), so equal features make no pair."""
    cert = hp.failure_certificate(_WW, np.array([1.0, -1.0]), np.array([[0], [1]]),
                                  features=lambda t: np.zeros((len(t), 1)), tol=0.1, margin=0.5)
    assert not cert.found and len(cert.pairs) == 0


def test_certificate_keeps_the_closest_pairs():
    """Docstring: the ``max_pairs`` closest pairs are returned: of (0, 1) at 0.1 and (0, 2) at 0.3, (0, 1)."""
    cert = hp.failure_certificate(_WW, np.array([True, False, False]), np.array([[0], [1], [0]]),
                                  features=lambda t: np.array([[0.0], [0.1], [0.3]]), tol=1.0, max_pairs=1)
    assert cert.pairs.tolist() == [[0, 1]] and cert.distances == pytest.approx([0.1])


# ---- review 2026-12-05 (afternoon): one unit for the margins, supp π for the head, no positive margin when infeasible

_PI0 = HMM([.75, .25, 0], [[.5, .5, 0], [.5, .5, 0], [1 / 3, 1 / 3, 1 / 3]],
           [[.7, .2, .1], [.1, .6, .3], [.3, .3, .4]])  # state 2 is never H_0


def _all_inputs(V, T):
    return np.array(list(itertools.product(range(V), repeat=T)))


def test_the_head_condition_reads_mu_on_supp_pi_only():
    """μ = (1, −2, 5) on π = (¾, ¼, 0): P(H_0 | x) has no mass on state 2, so μ_2 never reaches a label, and
    b = B_P⁺μ_P (rows of supp π) makes no error on any input (brute force over all 27).  The residual of μ
    on every row read 0.82 and the head condition failed, while the prompt condition, on supp π, held."""
    x = _all_inputs(3, 3)
    for mu in ([1.0, -2.0, 5.0], [1.0, -2.0, 5000.0]):
        h = hp.head_realisability(_PI0, mu)
        assert h.realisable and h.residual < 1e-12 and h.margin > 0
        assert hp.verify_head(_PI0, mu, h.head, x).n_errors == 0
    only_off = hp.head_realisability(_PI0, [0.0, 0.0, 5.0])  # every label 1 (score 0): b = 0
    assert only_off.realisable and not only_off.head.any()
    assert hp.verify_head(_PI0, [0.0, 0.0, 5.0], only_off.head, x).n_errors == 0


def test_head_and_prompt_count_the_margin_in_one_unit():
    """The margin is relative to max|μ| over every state for both: verify_prompt zeroed μ off supp π first and
    took that max (here 2 where verify_head took 5000), so the two halves of one check counted 4 and 8 of
    the 8 inputs within the margin."""
    mu, x = np.array([1.0, -2.0, 5000.0]), _all_inputs(2, 3)
    world = HMM([.75, .25, 0], np.full((3, 3), 1 / 3), [[.8, .2], [.3, .7], [.5, .5]])
    U = np.ones((1, 3))
    head = hp.verify_head(world, mu, np.zeros(2), x, margin=0.1)
    prompt = hp.verify_prompt(world, mu, U, np.zeros(2), x, margin=0.1)
    scores = np.abs(hp.state_posterior0(world, x) @ mu)
    assert head.n_within_margin == prompt.n_within_margin == int((scores <= 0.1 * 5000).sum()) == 8


def test_an_infeasible_prompt_never_carries_a_positive_margin():
    """At δ = 0.2 the entry A[0, 1] = 1/32 counts as zero, so state 1 of S cannot be entered and the verdict
    is infeasible — yet the record carried margin 0.0645 (the real r_1 of its prompt) and a reason saying
    the posterior vanishes there.  Margin > 0 exactly when feasible; the reason says what δ did."""
    world = HMM([.5, .25, .25], [[.96875, .03125, 0], [.5, 0, .5], [0, .5, .5]], [[1, 0], [0, 1], [.5, .5]])
    exact, soft = (hp.prompt_feasibility(world, [1.0, -1.0, 0.0], delta=d) for d in (0.0, 0.2))
    assert exact.feasible and exact.margin == pytest.approx(0.0645, abs=1e-4)
    assert not soft.feasible and soft.margin == 0.0 and soft.reweighting[1] > 0
    assert "δ = 0.2" in soft.reason and "vanishes" not in soft.reason


def test_label_margins_refuse_posteriors_that_are_not_laws():
    """[[-3, 5]] is no law over the states; its 'margin' read 8."""
    from simlm.errors import DistributionError
    with pytest.raises(DistributionError, match="^posterior"):
        label_margins(np.array([1.0, -1.0]), np.array([[-3.0, 5.0]]))
    with pytest.raises(DistributionError, match="^posterior"):
        label_margins(np.array([1.0, -1.0]), np.array([[0.7, 0.7]]))
    assert label_margins(np.array([1.0, -1.0]), np.array([[0.7, 0.3]])).margins == pytest.approx([0.4])


def test_the_bundles_certificate_reads_a_feature_distance_not_the_rank_tol():
    """B = [[.8, .2], [.6, .4]] is invertible (σ_min/σ_max = 0.24), so the head B⁻¹μ gets both inputs right;
    at a rank tol of 0.3 μ reads as outside col(B), and the certificate took the same 0.3 as a feature
    distance: it paired the two inputs, whose masked laws are 0.048 apart, as a proof no head separates them."""
    world = HMM([.5, .5], np.eye(2), [[.8, .2], [.6, .4]])
    x, mu = np.array([[0], [1]]), np.array([1.0, -1.0])
    rec = hp.check_head_prompt_conditions(world, mu, x, tol=0.3)
    assert not rec.head.realisable and rec.certificate is not None
    assert not rec.certificate.found and rec.certificate.tol == 1e-10
    assert rec.certificate.min_cross_distance == pytest.approx(0.0476, abs=1e-3)
    assert hp.check_head_prompt_conditions(world, mu, x, tol=0.3, feature_tol=0.05).certificate.found
    with pytest.raises(ConfigError, match="^feature_tol"):
        hp.check_head_prompt_conditions(world, mu, x, feature_tol=0.0)


def test_the_prompt_record_reads_the_graph_its_prompt_comes_from():
    """At δ = 1e-6 the graph drops π_0 = 1e-9 and gates states 0 and 2; exact zeros also cover S = {2}, so the
    prompt is the exact graph's — whose reach includes state 0, the prompt's own state (the record read the
    δ graph's reach (1, 2) beside allowed (0, 2))."""
    world = HMM([1e-9, .5, .5 - 1e-9], [[0, 0, 1], [0, .5, .5], [0, 0, 1]], np.eye(3))
    pf = hp.prompt_feasibility(world, np.array([0.0, 0.0, 1.0]), delta=1e-6)
    assert pf.feasible and pf.exact
    assert pf.allowed == ((0, 2),) and pf.reachable == ((0, 1, 2),) and pf.gate == (0, 2)
    assert all(set(W) <= set(R) for W, R in zip(pf.allowed, pf.reachable))


def test_the_bundle_takes_a_task_vector_of_0s_and_1s_where_its_certificate_is_needed():
    """μ = (1, 0, 0) is a task vector every check accepts; the bundle passed it on to failure_certificate, which
    refuses 0/1 arrays as ambiguous labels, so a μ ∉ col(B) of 0s and 1s crashed the bundle."""
    world = HMM(np.full(3, 1 / 3), np.full((3, 3), 1 / 3), np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]))
    x = np.array(list(itertools.product(range(2), repeat=2)), np.int32)
    for mu in (np.array([1.0, 0.0, 0.0]), np.array([1, 0, 1])):
        assert not hp.head_realisability(world, mu).realisable
        rec = hp.check_head_prompt_conditions(world, mu, x)
        # μ ≥ 0 labels every input 1: no pair of different labels, and the record says so
        assert rec.certificate is not None and not rec.certificate.found and rec.certificate.n_samples == len(x)
    with pytest.raises(ConfigError, match="ambiguous"):  # the public certificate still refuses them
        hp.failure_certificate(world, np.array([1, 0, 1]), x)


def test_off_support_mass_counts_states_where_pi_vanishes():
    """S = supp μ ∩ supp π: a prompt that carries all of H_0 onto state 2 (π_2 = 0, μ_2 ≠ 0) leaves the
    whole prompted posterior off S, so max_off_support_mass is 1 (reading supp μ alone gave 0, and no test saw it: a
    mutation review, 2026-12-07)."""
    pi = np.array([.5, .5, 0.])
    A = np.array([[0., 0., 1.], [.5, .5, 0.], [.5, .5, 0.]])
    B = np.array([[.7, .2, .1], [.1, .7, .2], [.2, .1, .7]])
    world = HMM(pi, A, B)
    mu = np.array([1., -1., 1.])
    x = np.asarray(world.sample(0, 20, 4))[:, 1:]
    U = np.array([[1., 0., 0.]])  # prompt state 0 → H_0 = 2 surely
    q = hp._posterior_where_defined(world, x, U)[0]
    assert np.allclose(q[:, 2], 1.0)  # brute fact: all prompted mass on the π-zero state
    check = hp.verify_prompt(world, mu, U, np.zeros(3), x)
    assert check.max_off_support_mass == 1.0


@pytest.mark.parametrize("rel, realisable", [(5e-11, True), (2e-10, False)])
def test_realisable_is_residual_at_most_tol(rel, realisable):
    """B of rank 2 (row 2 the mean of rows 0, 1); μ = (a part in col B) + rel·‖μ‖ along the left null
    vector n = (1, 1, −2)/√6: residual rel, realisable ⇔ rel ≤ tol = 1e-10 (not 1e-13, not 1e-9)."""
    b0, b1 = np.array([.7, .2, .1]), np.array([.1, .3, .6])
    B = np.stack([b0, b1, (b0 + b1) / 2])
    with jax.enable_x64(True):  # float64: a float32 B's rounding gives it rank 3 at tol 1e-10
        world = HMM(np.full(3, 1 / 3), np.full((3, 3), 1 / 3), B, dtype=jnp.float64)
    n = np.array([1., 1., -2.]) / np.sqrt(6)
    c = np.array([1., -1., 0.])  # ⊥ n, so in col B
    mu = c + rel * np.linalg.norm(c) * n / np.sqrt(1 - rel**2)
    P = B @ np.linalg.pinv(B, rcond=1e-8)  # brute projection on col B
    brute = np.linalg.norm(mu - P @ mu) / np.linalg.norm(mu)
    assert brute == pytest.approx(rel, rel=1e-3)
    head = hp.head_realisability(world, mu)
    assert head.residual == pytest.approx(rel, rel=1e-3)
    assert head.realisable is realisable and (head.margin >= 0) is realisable


# ---- a leaking prompt's off-support mass, by enumeration ------------------------------------------

LEAK_PI = np.array([0.5, 0.3, 0.2])
LEAK_A = np.array([[0.5, 0.45, 0.05], [0.3, 0.4, 0.3], [0.25, 0.25, 0.5]])  # every state leaks off S = {0, 1}
LEAK_B = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
LEAK_MU = np.array([1.0, -5.0, 0.0])


def test_max_off_support_mass_is_the_brute_force_maximum_over_inputs():
    """The largest P(H_0 ∉ S | z, x) over the inputs: the mean, or any one input's, passed every test (a mutation
    review, 2026-12-07)."""
    world = HMM(LEAK_PI, LEAK_A, LEAK_B)
    pf = hp.prompt_feasibility(world, LEAK_MU, delta=0.2)  # soft gate: a leaking prompt
    assert pf.feasible and not pf.exact
    x = np.array(list(itertools.product(range(3), repeat=2)), np.int32)
    b = hp.prompt_head(world, LEAK_MU, pf.prompt)
    check = hp.verify_prompt(world, LEAK_MU, pf.prompt, b, x)
    pi, a, e = (np.asarray(t, np.float64) for t in hp.chain64(world))
    off = np.array([prompted_state_law(pi, a, e, pf.prompt, list(row))[2] for row in x])
    assert np.ptp(off) > 1e-3  # the inputs' leaks differ: max, mean and any one input are apart
    assert check.max_off_support_mass == pytest.approx(off.max(), rel=1e-9)


def test_the_prompts_off_support_mass_is_its_prior_leak_by_brute_force():
    """PromptFeasibility.off_support_mass = P(H_0 ∉ S | z): the off-S share of α = ((π∘u_1)A ∘ …∘u_k)A.  The
    tests read it only as == 0 or > 0 (its 'sum → max' mutant was killed only by a crash on an empty S^c)."""
    world = HMM(LEAK_PI, LEAK_A, LEAK_B)
    pf = hp.prompt_feasibility(world, LEAK_MU, delta=0.2)
    pi, a, _ = hp.chain64(world)  # the world's parameters as stored (float32), in float64
    alpha = pi * pf.prompt[0]
    for row in pf.prompt[1:]:
        alpha = (alpha @ a) * row
    alpha = alpha @ a
    assert pf.off_support_mass == pytest.approx(alpha[2] / alpha.sum(), rel=1e-12)
