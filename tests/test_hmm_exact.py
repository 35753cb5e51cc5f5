"""Every exact HMM quantity equals enumeration over all hidden paths (hypothesis-generated worlds)."""

import numpy as np
from hypothesis import given

import bruteforce as bf
from simlm import HMM
from simlm.strategies import hmms, worlds_with_tokens

# Few distinct shapes: each new (K, V, T) is an XLA compile; the parameter values are what vary.
worlds = hmms(min_states=3, max_states=3, min_symbols=3, max_symbols=3)
cases = worlds_with_tokens(worlds, min_length=4, max_length=4)
suffix_cases = worlds_with_tokens(worlds, min_length=4, max_length=4, after_first=True)
TOL = dict(rtol=2e-4, atol=2e-5)


@given(cases)
def test_log_likelihood_equals_sum_over_paths(case):
    hmm, x = case
    pi, A, B = bf.params(hmm)
    expected = [np.log(bf.sequence_prob(pi, A, B, s)) for s in x]
    np.testing.assert_allclose(hmm.log_likelihood(x), expected, **TOL)


@given(cases)
def test_next_token_law_equals_ratio_of_prefix_probabilities(case):
    hmm, x = case
    pi, A, B = bf.params(hmm)
    got = np.asarray(hmm.next_token_probs(x))
    for i, s in enumerate(x):
        np.testing.assert_allclose(got[i], bf.next_token_law(pi, A, B, s), **TOL)
    np.testing.assert_allclose(np.exp(hmm.next_token_logprobs(x)), got, **TOL)


@given(cases)
def test_token_logprobs_are_the_observed_entries_of_the_next_token_law(case):
    hmm, x = case
    law = np.asarray(hmm.next_token_probs(x))
    observed = np.take_along_axis(law, x[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(np.exp(hmm.token_logprobs(x)), observed, **TOL)


@given(cases)
def test_masked_law_equals_substitution_enumeration(case):
    hmm, x = case
    pi, A, B = bf.params(hmm)
    got = np.asarray(hmm.masked_token_probs(x))
    for i, s in enumerate(x):
        for t in range(len(s)):
            np.testing.assert_allclose(got[i, t], bf.masked_law(pi, A, B, s, t), **TOL)


@given(cases)
def test_masked_law_at_requested_positions_is_a_slice_of_all_positions(case):
    hmm, x = case
    positions = np.arange(x.shape[1])[::-1][:2]
    np.testing.assert_allclose(hmm.masked_token_probs(x, positions),
                               np.asarray(hmm.masked_token_probs(x))[:, positions], **TOL)


@given(suffix_cases)
def test_prepended_mask_law_and_state_posterior_equal_enumeration(case):
    hmm, x = case
    pi, A, B = bf.params(hmm)
    law = np.asarray(hmm.prepended_mask_probs(x))
    states = np.asarray(hmm.prepended_state_posterior(x))
    log_states = np.asarray(hmm.log_prepended_state_posterior(x))
    for i, s in enumerate(x):
        np.testing.assert_allclose(law[i], bf.prepended_masked_law(pi, A, B, s), **TOL)
        np.testing.assert_allclose(states[i], bf.prepended_state_law(pi, A, B, s), **TOL)
        _assert_log_equal(log_states[i], bf.prepended_state_law(pi, A, B, s))


@given(worlds_with_tokens(worlds, min_length=5, max_length=5))
def test_prepended_mask_equals_masking_position_0_of_the_longer_sequence(case):
    hmm, full = case
    np.testing.assert_allclose(hmm.prepended_mask_probs(full[:, 1:]),
                               np.asarray(hmm.masked_token_probs(full, [0]))[:, 0], **TOL)


@given(cases)
def test_state_posteriors_equal_enumeration(case):
    hmm, x = case
    pi, A, B = bf.params(hmm)
    smooth = np.asarray(hmm.state_posterior(x))
    filt = np.asarray(hmm.state_posterior(x, smoothed=False))
    log_smooth, log_filt = (np.asarray(hmm.log_state_posterior(x, smoothed=f)) for f in (True, False))
    for i, s in enumerate(x):
        np.testing.assert_allclose(smooth[i], bf.smoothed_states(pi, A, B, s), **TOL)
        np.testing.assert_allclose(filt[i], bf.filtered_states(pi, A, B, s), **TOL)
        _assert_log_equal(log_smooth[i], bf.smoothed_states(pi, A, B, s))
        _assert_log_equal(log_filt[i], bf.filtered_states(pi, A, B, s))


def _assert_log_equal(log_got, exact):
    """A log-posterior equals the log of the enumerated one: −inf exactly where that is 0, else within TOL
    in probability and 1e-4 relative in log (the log keeps shares the probabilities round to 0)."""
    zero = exact == 0
    assert np.all(np.isneginf(log_got[zero]))
    np.testing.assert_allclose(np.exp(log_got[~zero]), exact[~zero], **TOL)
    np.testing.assert_allclose(log_got[~zero], np.log(exact[~zero]), rtol=1e-4, atol=1e-4)


@given(hmms(max_states=3, max_symbols=3))
def test_probabilities_of_all_sequences_of_a_length_sum_to_one(hmm):
    import itertools

    V, T = hmm.n_symbols, 3
    allx = np.array(list(itertools.product(range(V), repeat=T)), dtype=np.int32)
    np.testing.assert_allclose(np.exp(np.asarray(hmm.log_likelihood(allx), np.float64)).sum(), 1.0, rtol=1e-5)


@given(worlds_with_tokens(worlds, min_length=1, max_length=1))
def test_single_sequence_input_drops_the_batch_axis(case):
    hmm, x = case
    np.testing.assert_allclose(hmm.next_token_probs(x[0]), np.asarray(hmm.next_token_probs(x))[0], rtol=1e-6)
    assert np.shape(hmm.log_likelihood(x[0])) == ()


def test_next_token_logprobs_are_minus_inf_exactly_where_the_law_is_zero():
    """log p*(x_1 = ·) of a chain starting in state 0, which emits token 0 surely: [0, −inf, −inf] — the log of
    a zero probability is −inf, not a large negative number."""
    hmm = HMM([1.0, 0.0], [[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_array_equal(np.asarray(hmm.next_token_logprobs([0, 1, 2]))[0], [0.0, -np.inf, -np.inf])
