"""simlm.strategies: what each strategy promises holds, the hard cases are still generated now that rows are
built by numpy from a drawn structure, and shrinking goes to small worlds with simple laws."""

import numpy as np
import pytest
from hypothesis import find, given, settings, strategies as st

from simlm.strategies import hmms, memory_hmms, probability_vectors, stochastic_matrices

# find() stops at the first example that fits, then shrinks it; 500 tries is far more than any case needs
FIND = settings(max_examples=500, database=None)


def _check_rows(p, min_mass, allow_zeros):
    assert p.dtype == np.float64 and (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=0, atol=1e-12)
    largest = p.max(-1, keepdims=True)
    positive = np.where(p > 0, p, np.inf)
    assert (positive >= min_mass * largest * (1 - 1e-12)).all()  # before normalising: in [min_mass, 1]
    if not allow_zeros:
        assert (p > 0).all()


@given(st.data())
def test_probability_vectors_are_laws_with_every_positive_entry_at_least_min_mass_of_the_largest(data):
    size, allow_zeros = data.draw(st.integers(1, 7)), data.draw(st.booleans())
    min_mass = data.draw(st.sampled_from([1e-6, 0.05, 0.5, 1.0]))
    p = data.draw(probability_vectors(size, allow_zeros=allow_zeros, min_mass=min_mass))
    assert p.shape == (size,)
    _check_rows(p, min_mass, allow_zeros)


@given(st.data())
def test_stochastic_matrices_have_rows_that_are_laws(data):
    rows, cols, allow_zeros = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)), data.draw(st.booleans())
    P = data.draw(stochastic_matrices(rows, cols, allow_zeros=allow_zeros))
    assert P.shape == (rows, cols)
    _check_rows(P, 0.05, allow_zeros)


def _ratio(p):
    return p[p > 0].min() / p.max()


# (strategy, the hard case): each must still be generated
HARD_CASES = {
    "exact-zero": (probability_vectors(4), lambda p: (p == 0).any()),
    "one-hot-vector": (probability_vectors(4), lambda p: p.max() == 1),
    "entry-at-min-mass": (probability_vectors(4, allow_zeros=False), lambda p: np.isclose(_ratio(p), 0.05)),
    "many-tiny-entries": (probability_vectors(6, allow_zeros=False),
                          lambda p: (p < 0.2 * p.max()).sum() >= 3 and np.unique(p).size == 6),
    "uniform-without-zeros": (probability_vectors(5, allow_zeros=False), lambda p: (p == p[0]).all()),
    "deterministic-and-dense-rows": (stochastic_matrices(4, 4),
                                     lambda P: (P.max(1) == 1).any() and (P > 0).all(1).any()),
    "hmm-with-a-deterministic-transition": (hmms(min_states=2), lambda h: (np.asarray(h.transition) == 1).any()),
    "hmm-with-a-symbol-some-state-never-emits": (hmms(min_symbols=2), lambda h: (np.asarray(h.emission) == 0).any()),
    "hmm-with-zeros-in-pi-a-and-b": (hmms(min_states=2, min_symbols=2),
                                     lambda h: all((np.asarray(a) == 0).any() for a in h.chain)),
    "hmm-with-a-tiny-emission": (hmms(allow_zeros=False, min_symbols=4),
                                 lambda h: np.asarray(h.emission).min() < 0.02),
    "memory-hmm-with-exact-zeros": (memory_hmms(max_cells=1, allow_zeros=True),
                                    lambda w: (np.asarray(w.transition) == 0).any()),
}


@pytest.mark.parametrize("name", sorted(HARD_CASES))
def test_the_hard_cases_are_still_generated(name):
    strategy, case = HARD_CASES[name]
    assert case(find(strategy, case, settings=FIND))


def test_shrinking_goes_to_the_smallest_world_with_uniform_laws():
    hmm = find(hmms(max_states=4, max_symbols=4), lambda h: h.n_states >= 2 and h.n_symbols >= 3, settings=FIND)
    assert (hmm.n_states, hmm.n_symbols) == (2, 3)
    np.testing.assert_allclose(hmm.initial, 1 / 2)
    np.testing.assert_allclose(hmm.transition, 1 / 2)
    np.testing.assert_allclose(hmm.emission, 1 / 3)


def test_a_law_needed_with_zeros_shrinks_to_uniform_on_its_support():
    p = find(probability_vectors(5), lambda p: (p == 0).sum() >= 2, settings=FIND)
    assert (p == 0).sum() >= 2
    np.testing.assert_allclose(p[p > 0], 1 / (p > 0).sum())
