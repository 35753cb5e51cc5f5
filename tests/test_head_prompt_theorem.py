"""Wei, Xie & Ma's head- and prompt-tuning theorems as property tests over sparse worlds (exact zeros in
the transitions, so the prompt hypothesis can hold exactly), with the tolerance-aware conditions, the
soft-zero range and the label margins of simlm.theory.head_prompt(_margins).

Every input x ∈ [V]^T of positive probability is enumerated; labels, features and prompted posteriors
come from brute-force enumeration of hidden paths (tests/bruteforce.py), the head and prompt from the
library's constructions.  No training.  `HYPOTHESIS_PROFILE=thorough` runs 1000 examples per property.
"""

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from bruteforce import params, prepended_state_law, prompted_state_law, sequence_prob
from simlm.errors import ConfigError, ShapeError
from simlm.strategies import hmms, sparse_hmms, task_vectors
from simlm.theory import head_prompt as hp
from simlm.theory.head_prompt_margins import (RELATIVE_MARGIN, feasibility_range, label_margins,
                                              margin_accuracy)
from simlm.worlds import HMM

T = 3  # every input x_1:3: at most 4³ = 64 of them
N_PAD = 64  # inputs are padded (repeated) to one count, so the certificate's posteriors compile once per (K, V)


def _cases(max_states=5, max_symbols=4):
    return sparse_hmms(max_states=max_states, max_symbols=max_symbols).flatmap(
        lambda w: st.tuples(st.just(w), task_vectors(w.n_states, max_support=3), st.integers(1, 2)))


def _every_input(world):
    """(inputs (n, T), P(H_0 | x) (n, K), margin threshold) over every x of positive probability."""
    pi, A, B = params(world)
    xs = [x for x in itertools.product(range(B.shape[1]), repeat=T) if sequence_prob(pi @ A, A, B, x) > 0]
    return np.array(xs, np.int32), np.array([prepended_state_law(pi, A, B, x) for x in xs])


@given(_cases())
def test_head_theorem_where_mu_is_in_the_column_space(case):
    """μ ∈ col(B) (residual ≤ tol) ⇒ the head b = B⁺μ classifies every input with margin correctly;
    the reported margin is tol − residual."""
    world, mu, _ = case
    _, _, B = params(world)
    xs, p = _every_input(world)
    hr = hp.head_realisability(world, mu)
    assert hr.margin == pytest.approx(hr.tol - hr.residual) and hr.realisable == (hr.margin >= 0)
    event(f"head condition holds: {hr.realisable}")
    if not hr.realisable:
        return
    lm = label_margins(mu, p)
    keep = lm.margins >= lm.threshold
    score = p @ B @ hr.head
    np.testing.assert_allclose(score, p @ mu, atol=1e-9 * np.abs(mu).max())
    assert np.array_equal((score >= 0)[keep], (p @ mu >= 0)[keep])


@given(_cases())
def test_prompt_theorem_where_the_conditions_hold_exactly(case):
    """Prompt feasible at δ = 0 (exact zeros) and B_S of full row rank ⇒ the constructive prompt confines
    P(H_0 | z, x) to S exactly and prompt + head b = B_S⁺(μ_S ⊘ r_S) classify every input with margin."""
    _check_prompt_theorem(*case)


@st.composite
def _worlds_with_zeros_in_pi(draw):
    """A sparse world whose π is zero on a nonempty proper subset of the states, so a prompt can carry
    mass onto a state that P(H_0 | x) never visits (sparse worlds draw such π too, but rarely)."""
    world, mu, k = draw(_cases())
    pi, A, B = params(world)
    K = len(pi)
    zero = np.array(draw(st.lists(st.booleans(), min_size=K, max_size=K)))
    if zero.all() or not zero.any():
        zero = np.arange(K) == draw(st.integers(0, K - 1))
    return HMM(np.where(zero, 0.0, pi) / pi[~zero].sum(), A, B), mu, k


@given(_worlds_with_zeros_in_pi())
def test_prompt_theorem_when_pi_has_zeros(case):
    """States with π_h = 0 count as off S = supp μ ∩ supp π: P(H_0 = h | x) = 0 for every x, but a
    prompt could move mass there, where P(H_0 | z, x) ∝ P(H_0 | x) ∘ r fails."""
    _check_prompt_theorem(*case)


def _check_prompt_theorem(world, mu, k):
    pi, A, B = params(world)
    pf, sr = hp.prompt_feasibility(world, mu, k=k), hp.support_rank(world, mu)  # δ = 0 by default
    assert pf.delta == 0.0 and pf.exact == pf.feasible and sr.full_row_rank == (sr.margin > 0)
    assert feasibility_range(world, mu, k=k).exact == pf.feasible  # the δ scan agrees at δ = 0
    S = (mu != 0) & (pi > 0)
    assert pf.support == tuple(np.flatnonzero(S)) and sr.support == pf.support
    event(f"prompt condition holds: {pf.feasible and sr.full_row_rank}")
    if not (pf.feasible and sr.full_row_rank):
        return
    xs, p = _every_input(world)
    lm = label_margins(mu, p)
    b = hp.prompt_head(world, mu, pf.prompt)
    for x, post, m in zip(xs, p, lm.margins):
        q = prompted_state_law(pi, A, B, pf.prompt, x)
        if q.sum() > 0:  # the identity the theory rests on: P(H_0 | z, x) ∝ P(H_0 | x) ∘ r
            np.testing.assert_allclose(q, post * pf.reweighting / (post @ pf.reweighting), atol=1e-9)
        if m < lm.threshold:  # no margin: includes every x the prompt makes impossible (P(S | x) = 0)
            continue
        assert np.all(q[~S] == 0)
        assert (q @ B @ b >= 0) == (post @ mu >= 0)


@given(_cases(max_states=4, max_symbols=3))
@example((HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]), np.array([1.0, 0.0]), 1))
def test_failure_certificates_are_verified_and_only_where_the_head_condition_fails(case):
    """Every pair a certificate reports has equal masked features and different labels by enumeration,
    so no head on the masked law gets both right; a pair with margin on both sides never appears where
    μ ∈ col(B) (the head theorem's contrapositive)."""
    world, mu, _ = case
    _, _, B = params(world)
    xs, p = _every_input(world)
    padded = np.resize(np.arange(len(xs)), N_PAD)  # repeats: equal features, equal labels, never a pair
    if np.isin(mu, (0, 1)).all():  # every weight +1 (it labels every input 1): refused as ambiguous labels
        with pytest.raises(ConfigError, match="^mu_or_labels: an array of 0s and 1s is ambiguous"):
            hp.failure_certificate(world, mu, xs[padded], tol=1e-9)
        return
    cert = hp.failure_certificate(world, mu, xs[padded], tol=1e-9)
    realisable = hp.head_realisability(world, mu).realisable
    lm = label_margins(mu, p[padded])
    event(f"certificate found: {cert.found}, head condition holds: {realisable}")
    for i, j in cert.pairs:
        assert np.abs(p[padded[i]] @ B - p[padded[j]] @ B).max() <= 1e-8
        assert (p[padded[i]] @ mu >= 0) != (p[padded[j]] @ mu >= 0)
        assert not realisable or min(lm.margins[i], lm.margins[j]) < 1e-6


@st.composite
def _twin_worlds(draw):
    """A sparse world where head tuning must fail: states 0 and 1 share an emission row, 0 → 2 and 1 → 3
    only, and 2, 3 alone emit tokens 0, 1 and are entered from nowhere else, so x_1 = 0 reveals H_0 = 0 and
    x_1 = 1 reveals H_0 = 1 while both give the masked law B[0] = B[1]; μ_0 > 0 > μ_1."""
    K, V = 4, 3  # one shape: the certificate's posteriors compile once
    base = HMM.random(draw(st.integers(0, 2**31 - 1)), K, V, family="sparse", out_degree=2)
    pi, A, B = params(base)
    A[:, 2:4] = 0.0
    A[:, 0] += 1e-3  # keep every row stochastic after removing the columns of 2 and 3
    A[0], A[1] = np.eye(K)[2], np.eye(K)[3]
    B[:, :2] = 0.0
    B[:, 2] += 1e-3
    B[1], B[2], B[3] = B[0], np.eye(V)[0], np.eye(V)[1]
    world = HMM(np.full(K, 1 / K), A / A.sum(1, keepdims=True), B / B.sum(1, keepdims=True))
    mu = draw(task_vectors(K))
    mu[0], mu[1] = draw(st.floats(0.1, 1)), -draw(st.floats(0.1, 1))
    return world, mu, 1


@given(_twin_worlds())
def test_twin_worlds_always_yield_a_verified_certificate(case):
    """Where the head condition fails by construction, the certificate is produced (pairs verified by
    enumeration in the test above's way)."""
    world, mu, _ = case
    _, _, B = params(world)
    xs, p = _every_input(world)
    padded = np.resize(np.arange(len(xs)), N_PAD)
    cert = hp.failure_certificate(world, mu, xs[padded], tol=1e-9)
    assert not hp.head_realisability(world, mu).realisable and cert.found
    for i, j in cert.pairs:
        pi_, pj = p[padded[i]], p[padded[j]]
        assert np.abs(pi_ @ B - pj @ B).max() <= 1e-8 and (pi_ @ mu >= 0) != (pj @ mu >= 0)


@given(st.one_of(sparse_hmms(max_states=5), hmms(min_states=2, max_states=4, min_symbols=2, max_symbols=3)),
       st.data())
def test_feasibility_range_matches_the_condition_at_every_threshold(world, data):
    """The scanned intervals agree with prompt_feasibility read at δ drawn anywhere in [0, 1)."""
    mu = data.draw(task_vectors(world.n_states, max_support=2))
    k = data.draw(st.integers(1, 2))
    fr = feasibility_range(world, mu, k=k)
    deltas = [0.0, *fr.breakpoints[:3], *data.draw(st.lists(st.floats(0, 0.999), max_size=3))]
    for d in deltas:
        inside = any(lo <= d < hi for lo, hi in fr.intervals)
        pf = hp.prompt_feasibility(world, mu, k=k, delta=float(d))
        assert pf.feasible == inside, d
        # the prompt is built from exact zeros whenever they suffice, so it leaks only where they do not
        assert not pf.feasible or pf.exact == fr.exact, d
    if fr.intervals:
        assert fr.delta_min == fr.intervals[0][0] and fr.delta_max == fr.intervals[-1][1]
        assert fr.exact == (fr.delta_min == 0.0)
    # the breakpoints: every distinct relative entry A[g, h]/max_h' A[g, h'] and π_h/max π strictly inside (0, 1)
    # of the float64 chain (0 among them passed every test: a mutation review, 2026-12-07)
    pi, A, _ = hp.chain64(world)
    relative = [*(A / A.max(1, keepdims=True)).ravel(), *(pi / pi.max())]
    assert list(fr.breakpoints) == sorted({r for r in relative if 0 < r < 1})


def test_sparse_family_has_exact_zeros_and_the_stated_out_degree():
    w = HMM.random(3, 6, 4, family="sparse", out_degree=2, initial_support=3)
    A, pi = np.asarray(w.transition), np.asarray(w.initial)
    assert (np.count_nonzero(A, axis=1) == 2).all() and np.count_nonzero(pi) == 3
    again = HMM.random(3, 6, 4, family="sparse", out_degree=2, initial_support=3)
    assert np.array_equal(np.asarray(again.transition), A)  # seeded
    with pytest.raises(ConfigError, match="^out_degree"):
        HMM.random(0, 4, 3, family="sparse", out_degree=0)


def test_sparse_memory_worlds_have_exact_zeros():
    from simlm.worlds import MemoryHMM

    w = MemoryHMM.random(0, 2, 2, 3, 5, family="sparse", out_degree=2)
    assert (np.count_nonzero(np.asarray(w.transition), axis=1) == 2).all()
    with pytest.raises(ConfigError, match="^family"):
        MemoryHMM.random(0, 1, 2, 3, 5, family="dense")


def test_conditions_report_margins_and_triviality():
    """The rank margins are σ_min/σ_max − tol; a world where neither condition holds is flagged trivial."""
    B = np.array([[.7, .3], [.7, .3], [.1, .9]])  # rank 2 < K = 3
    world = HMM(np.full(3, 1 / 3), np.full((3, 3), 1 / 3), B)
    er = hp.emission_rank(world, tol=1e-8)
    s = np.linalg.svd(np.asarray(world.emission, np.float64)[[0, 2]], compute_uv=False)  # B_S, S = {0, 2}
    assert not er.full_row_rank and er.margin < 0 and er.tol == 1e-8
    er2 = hp.emission_rank(HMM(np.full(2, .5), np.full((2, 2), .5), B[1:]))
    assert er2.full_row_rank and er2.margin > 0
    assert np.isclose(hp.support_rank(world, np.array([1., 0, -1])).margin, s[1] / s[0] - 1e-10, rtol=1e-6)
    rec = hp.check_head_prompt_conditions(world, np.array([1., -1, 0]), np.array([[0, 1], [1, 1], [1, 0]]))
    assert rec.trivial and rec.consistent and not rec.head.realisable and not rec.prompt.feasible


def test_label_margins_and_stratified_accuracy():
    P = np.array([[.5, .5, 0], [.9, .1, 0], [0, 1, 0], [.25, .25, .5]])
    mu = np.array([1., -1, 0])
    lm = label_margins(mu, P)
    np.testing.assert_allclose(lm.margins, [0, .8, 1, 0])
    assert lm.threshold == RELATIVE_MARGIN and lm.share_without_margin == 0.5
    acc = margin_accuracy([0, 1, 0, 1], [1, 1, 0, 1], lm)
    assert acc.accuracy == 0.75 and acc.accuracy_with_margin == 1.0 and acc.n_with_margin == 2
    L = np.stack([np.zeros(3), mu])  # the two-class form of the same task: the same margins
    np.testing.assert_allclose(label_margins(L, P).margins, lm.margins)
    with pytest.raises(ShapeError, match="^posterior"):
        label_margins(mu, P[:, :2])
    with pytest.raises(ShapeError, match="^labels"):
        margin_accuracy([0, 1, 0, 1], [1, 1], lm)
    with pytest.raises(ShapeError, match="^predictions"):
        margin_accuracy([0, 1], [1, 1, 0, 1], lm)
    with pytest.raises(ConfigError, match="^margins"):
        margin_accuracy([0, 1], [1, 1], None)
    with warnings.catch_warnings():  # no input: NaN as documented, without numpy's "mean of empty slice"
        warnings.simplefilter("error")
        empty = margin_accuracy([], [], label_margins(mu, np.zeros((0, 3))))
    assert np.isnan(empty.accuracy) and np.isnan(empty.accuracy_with_margin) and empty.n_with_margin == 0


def test_labels_that_are_all_ties_have_no_margin_and_say_so():
    """μ = 0 (or L with equal rows) made every label a tie, yet the threshold 0 counted each as having a margin."""
    P = np.array([[.5, .5, 0], [.9, .1, 0]])
    for weights in (np.zeros(3), np.ones((2, 3))):
        with pytest.raises(ConfigError, match="^weights: every label is a tie"):
            label_margins(weights, P)
    for weights in (np.ones((1, 3)), np.array(2.0)):  # one class, a scalar: raw IndexErrors before
        with pytest.raises(ShapeError, match="^weights"):
            label_margins(weights, P)


@pytest.mark.parametrize("call, name", [
    (lambda: sparse_hmms(min_states=0), "min_states"),
    (lambda: sparse_hmms(max_out_degree=0), "max_out_degree"),
    (lambda: task_vectors(0), "n_states"),
    (lambda: feasibility_range(HMM(np.full(2, .5), np.eye(2), np.eye(2)), np.ones(2), k=0), "k"),
    (lambda: feasibility_range(HMM(np.full(2, .5), np.eye(2), np.eye(2)), np.zeros(2)), "mu"),
    (lambda: hp.prompt_feasibility(HMM(np.full(2, .5), np.eye(2), np.eye(2)), np.ones(2), tol=-1.0), "tol"),
    (lambda: label_margins(np.ones(2), np.ones((3, 2)), relative=0.0), "relative"),
])
def test_bad_inputs_to_the_new_functions_raise_typed_errors_naming_the_argument(call, name):
    with pytest.raises(ConfigError, match=rf"^{name}\b"):
        call()


def test_a_margin_exactly_at_the_threshold_counts_as_a_margin():
    """Margins *below* relative·scale have no margin, those *at least* it have one: at equality, a margin.

    μ = (1, −1): scale max|μ| = 1, threshold 0.5·1 = 0.5; |μᵀP| = (0.5, 1) (exact powers of two)."""
    mu, P = np.array([1., -1]), np.array([[.75, .25], [1, 0]])
    lm = label_margins(mu, P, relative=0.5)
    np.testing.assert_array_equal(lm.margins, [0.5, 1.0])
    assert lm.scale == 1.0 and lm.threshold == 0.5
    assert lm.share_without_margin == 0.0  # neither margin is below the threshold
    acc = margin_accuracy([1, 0], [1, 1], lm)
    assert acc.n_with_margin == 2 and acc.accuracy_with_margin == 0.5 and acc.share_without_margin == 0.0


def test_a_label_matrix_scale_is_its_largest_row_difference_not_the_spread_of_its_entries():
    """L = (0, μ), μ = (1, −1, 0): max|L_i − L_j| = 1 (as for μ itself) while max L − min L = 2.  The margin
    1.5e-6 is above the threshold 1e-6 · 1 (it would be below 1e-6 · 2; every matrix the tests used had the
    two scales equal, so the spread of the entries passed)."""
    L = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
    P = np.array([[0.5 + 7.5e-7, 0.5 - 7.5e-7, 0.0], [0.9, 0.1, 0.0]])
    lm = label_margins(L, P)
    assert lm.scale == 1.0 and lm.threshold == RELATIVE_MARGIN
    assert lm.share_without_margin == 0.0
    assert label_margins(L[1], P).scale == lm.scale  # the two-class form of the same task
