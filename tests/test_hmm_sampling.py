"""Sampling matches the exact laws (fixed seeds, stated tolerances) and is reproducible."""

import numpy as np

from simlm import HMM

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


def test_entropy_rate_matches_an_iid_worlds_entropy():
    p = np.array([0.5, 0.25, 0.25])
    hmm = HMM([1.0], [[1.0]], [p])
    rate, se = hmm.entropy_rate(0, n_sequences=64, length=256)
    assert abs(rate - float(-(p * np.log(p)).sum())) <= 4 * se
