"""Sampling matches the exact laws (fixed seeds, stated tolerances) and is reproducible."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlm import HMM
from simlm.errors import ShapeError
from simlm.worlds import hmm_core as core

N = 40_000


def test_same_seed_gives_bit_identical_tokens_and_other_seeds_differ():
    hmm = HMM.random(0, 5, 6)
    a, sa = hmm.sample(7, 16, 32, return_states=True)
    b, sb = hmm.sample(7, 16, 32, return_states=True)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert a.dtype == np.int32 and a.shape == (16, 32)
    assert not np.array_equal(a, hmm.sample(8, 16, 32))


def test_unigram_bigram_and_state_frequencies_match_exact_laws():
    hmm = HMM.random(1, 4, 5, family="dirichlet")
    x, h = (np.asarray(a) for a in hmm.sample(2, N, 3, return_states=True))
    pi, A, B = (np.asarray(a, np.float64) for a in (hmm.initial, hmm.transition, hmm.emission))

    def check(empirical, exact):
        # binomial standard errors; 5 s.e. + 1e-3 keeps the false-alarm rate negligible at a fixed seed
        se = np.sqrt(exact * (1 - exact) / N)
        assert np.all(np.abs(empirical - exact) <= 5 * se + 1e-3), (empirical, exact)

    check(np.bincount(h[:, 0], minlength=4) / N, pi)
    check(np.bincount(h[:, 1], minlength=4) / N, pi @ A)
    check(np.bincount(x[:, 0], minlength=5) / N, pi @ B)
    bigram = np.zeros((5, 5))
    np.add.at(bigram, (x[:, 0], x[:, 1]), 1)
    exact_bigram = (pi[:, None] * B).T @ A @ B  # P(x_1 = u, x_2 = v)
    check(bigram / N, exact_bigram)
    # x_3's empirical law given (x_1, x_2) against the exact next-token law, for the commonest pair
    u, v = np.unravel_index(np.argmax(bigram), bigram.shape)
    sel = (x[:, 0] == u) & (x[:, 1] == v)
    law = np.asarray(hmm.next_token_probs(np.array([u, v, 0])))[2]
    n = sel.sum()
    emp = np.bincount(x[sel, 2], minlength=5) / n
    assert np.all(np.abs(emp - law) <= 5 * np.sqrt(law * (1 - law) / n) + 1e-3)


def test_zero_probability_states_and_symbols_are_never_sampled():
    hmm = HMM([0.0, 1.0, 0.0], [[0, 1, 0], [0, 0.5, 0.5], [0, 1.0, 0]], [[1, 0], [0.5, 0.5], [0, 1]])
    x, h = hmm.sample(0, 2000, 5, return_states=True)
    assert not np.any(np.asarray(h) == 0)
    assert np.all(np.isfinite(np.asarray(hmm.log_likelihood(x))))


@given(st.lists(st.sampled_from([0.0, 0.0, 1e-7, 0.1, 0.3, 1.0]), min_size=1, max_size=6).filter(any),
       st.floats(0.0, 1e-6))
def test_inverse_cdf_never_picks_a_zero_probability_entry_of_a_row_summing_a_little_below_one(row, short):
    """A row accepted within tolerance may sum to 1 − 1e-6 and end in zeros: a uniform in the gap must land
    on the last positive entry, not on the zeros after it (only the last column was guarded before)."""
    p = np.asarray(row) / sum(row) * (1 - short)
    u = np.concatenate([np.linspace(0, 1, 2001, endpoint=False), [np.nextafter(np.float32(1), 0)]])
    cum = core.cumulative_rows(jnp.asarray(p, jnp.float32))
    picked = np.asarray(core.inverse_cdf(cum[None], jnp.asarray(u, jnp.float32)))
    assert np.all(p[picked] > 0)


def test_a_world_whose_rows_sum_just_below_one_never_samples_an_impossible_token():
    hmm = HMM([1.0], [[1.0]], [[0.5, 0.499999, 0.0]])  # accepted: within the default 1e-6
    x = np.asarray(hmm.sample(0, 4096, 1024))  # ~4 draws in the gap
    assert not np.any(x == 2) and np.all(np.isfinite(np.asarray(hmm.log_likelihood(x))))


def test_entropy_rate_matches_an_iid_worlds_entropy():
    p = np.array([0.5, 0.25, 0.25])
    hmm = HMM([1.0], [[1.0]], [p])
    rate, se = hmm.entropy_rate(0, n_sequences=64, length=256)
    assert abs(rate - float(-(p * np.log(p)).sum())) <= 4 * se


@given(st.integers(1, 300), st.integers(1, 6), st.integers(0, 2**31 - 1), st.sampled_from(["float32", "float64"]))
def test_binary_search_draw_is_the_counting_draw(n, rows, seed, dtype):
    """``inverse_cdf_at`` (binary search, the sampler's) picks the index ``inverse_cdf`` (count of entries ≤ u)
    picks, for rows with zeros, all-zero rows, rows summing a little below one, and u on the CDF's values."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(n, 0.3), size=rows) * rng.choice([1.0, 1 - 1e-6], size=(rows, 1))
    p[rng.random((rows, n)) < 0.3] = 0.0
    p[rng.integers(rows)] = 0.0 if rng.random() < 0.2 else p[0]
    with jax.enable_x64(dtype == "float64"):
        cum = core.cumulative_rows(jnp.asarray(p, dtype))
        which = jnp.asarray(rng.integers(rows, size=64), jnp.int32)
        on_grid = np.asarray(cum)[np.asarray(which), rng.integers(n, size=64)]  # u equal to a CDF value
        u = jnp.asarray(np.where(rng.random(64) < 0.5, rng.random(64), np.minimum(on_grid, 0.999)), dtype)
        for rows_, u_ in [(which, u), (which.reshape(8, 8), u.reshape(8, 8))]:  # any batch shape
            expected = np.asarray(core.inverse_cdf(cum[rows_], u_))
            assert np.array_equal(np.asarray(core.inverse_cdf_at(cum, rows_, u_)), expected)


@pytest.mark.parametrize("n", [300, 1000, 4096])
def test_long_cdf_rows_never_decrease_and_both_draws_agree_where_the_sum_dipped(n):
    """XLA's cumsum of a long row steps down by an ulp past tiny entries (most Dirichlet(0.1) rows of 1000
    entries did): the running maximum keeps the row monotone, where the count and the binary search agree."""
    rng = np.random.default_rng(n)
    p = rng.dirichlet(np.full(n, 0.1), size=64).astype(np.float32)
    p[rng.random(p.shape) < 0.5] = 0.0
    raw = np.asarray(jnp.cumsum(jnp.asarray(p), axis=-1))
    cum = core.cumulative_rows(jnp.asarray(p))
    assert np.all(np.diff(np.asarray(cum), axis=-1) >= 0)
    r, c = np.nonzero(np.diff(raw, axis=-1) < 0)  # where XLA's sum dipped (none on some backends)
    rows = jnp.asarray(np.concatenate([r, r, np.arange(64)]), jnp.int32)
    u = jnp.asarray(np.concatenate([raw[r, c], raw[r, c + 1], rng.random(64)]), jnp.float32)
    assert np.array_equal(np.asarray(core.inverse_cdf_at(cum, rows, u)), np.asarray(core.inverse_cdf(cum[rows], u)))
    assert np.all(p[np.asarray(rows), np.asarray(core.inverse_cdf_at(cum, rows, u))] > 0)


def test_empty_cdf_rows_are_refused():
    with pytest.raises(ShapeError, match="cum"):
        core.inverse_cdf_at(jnp.zeros((2, 0)), jnp.zeros(3, jnp.int32), jnp.zeros(3))
