"""Bad input raises a typed error naming the argument, before any jit compile."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bruteforce as bf

from simlm import HMM
from simlm.strategies import hmms
from simlm.errors import ConfigError, DistributionError, ShapeError, SimlmError, TokenError, ZeroProbabilityError

PI = [0.5, 0.5]
A = [[0.9, 0.1], [0.2, 0.8]]
B = [[0.7, 0.3, 0.0], [0.1, 0.1, 0.8]]


@pytest.mark.parametrize("args, error, words", [
    ((PI, [[0.9, 0.07], [0.2, 0.8]], B), DistributionError, "transition row 0 sums to 0.97, expected 1"),
    (([0.6, 0.6], A, B), DistributionError, "initial sums to 1.2"),
    ((PI, A, [[1.2, -0.2, 0.0], [0.1, 0.1, 0.8]]), DistributionError, "emission: entry (0, 1) is -0.2"),
    ((PI, [[np.nan, 1.0], [0.2, 0.8]], B), DistributionError, "transition: entry (0, 0) is nan"),
    ((PI, [[np.inf, 1.0], [0.2, 0.8]], B), DistributionError, "finite"),
    (([1.0], A, B), ShapeError, "transition: expected shape (1, 1)"),
    ((PI, A, [[1.0, 0.0]]), ShapeError, "emission: expected shape (2, V)"),
    ((PI, A, np.zeros((2, 0))), ShapeError, "emission: last axis is empty"),
])
def test_invalid_parameters_raise_typed_errors(args, error, words):
    with pytest.raises(error) as info:
        HMM(*args)
    assert words in str(info.value)
    assert isinstance(info.value, (SimlmError, ValueError))


@pytest.mark.parametrize("tokens, words", [
    ([0, 3, 1], "token id 3 at sequence 0, position 1 is outside [0, 3)"),
    ([[0, -1]], "token id -1"),
    (np.zeros((2, 0), np.int32), "empty"),
    (np.zeros((0, 3), np.int32), "no sequences"),
    ([0.5, 1.0], "integer token ids"),
    (np.zeros((1, 2, 3), np.int32), "shape (T,) or (n, T)"),
    ([True, False], "integer token ids"),
])
def test_invalid_tokens_raise_token_error(tokens, words):
    hmm = HMM(PI, A, B)
    for method in (hmm.log_likelihood, hmm.next_token_probs, hmm.masked_token_probs, hmm.state_posterior):
        with pytest.raises(TokenError, match="tokens") as info:
            method(tokens)
        assert words in str(info.value)


def test_zero_probability_sequence_gives_minus_inf_and_a_clear_error_for_conditionals():
    hmm = HMM([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    x = np.array([[0, 1, 0], [0, 2, 1]])
    ll = np.asarray(hmm.log_likelihood(x))
    assert np.isfinite(ll[0]) and ll[1] == -np.inf and not np.isnan(ll).any()
    steps = np.asarray(hmm.token_logprobs(x))
    assert not np.isnan(steps).any() and steps[1, 1] == -np.inf
    for method in (hmm.next_token_probs, hmm.state_posterior, hmm.prepended_mask_probs):
        with pytest.raises(ZeroProbabilityError, match="sequence 1 has probability zero.*token 2 at position 1"):
            method(x)
    # x_1 = 2 is a placeholder the masked law at 1 never reads: (0, ·, 1) is possible, (·, 2, 1) is not
    np.testing.assert_allclose(np.asarray(hmm.masked_token_probs(x, [1]))[1, 0], [0.5, 0.5, 0.0], atol=1e-7)
    with pytest.raises(ZeroProbabilityError, match="sequence 1 .* whatever token is at masked position 0"):
        hmm.masked_token_probs(x)
    np.testing.assert_allclose(np.asarray(hmm.masked_state_posterior(x, [1]))[1, 0], [1.0, 0.0], atol=1e-7)
    with pytest.raises(ZeroProbabilityError, match="sequence 1 .* whatever token is at masked position 0"):
        hmm.masked_state_posterior(x)


def test_the_prepended_masks_refusal_says_x_is_impossible_after_the_mask_not_under_the_world():
    """x = (0, 0) has probability 1/4, but after a prepended masked position (h_1 ~ πA) position 1 can only come
    from states 2 or 3, which never emit 0: the prepended law is undefined, and the message said that x had
    probability zero under this world."""
    hmm = HMM([0.5, 0.5, 0, 0], [[0, 1, 0, 0], [0, 0, 0.5, 0.5], [1, 0, 0, 0], [0.3, 0, 0, 0.7]],
              [[1, 0, 0], [0.5, 0.5, 0], [0, 0.2, 0.8], [0, 0, 1]])
    x = np.array([[0, 0]])
    assert np.exp(float(hmm.log_likelihood(x)[0])) == pytest.approx(0.25, rel=1e-6)
    assert all(bf.sequence_prob(*bf.params(hmm), [v, 0, 0]) == 0 for v in range(3))
    for method in (hmm.prepended_mask_probs, hmm.prepended_state_posterior, hmm.log_prepended_state_posterior):
        with pytest.raises(ZeroProbabilityError, match="with a masked position prepended to it") as err:
            method(x)
        assert "under this world" not in str(err.value)


@pytest.mark.parametrize("call, error, words", [
    (lambda h: h.sample(-1, 2, 3), ConfigError, "key: expected a non-negative integer seed"),
    (lambda h: h.sample(True, 2, 3), ConfigError, "key"),
    (lambda h: h.sample("seed", 2, 3), ConfigError, "key"),
    (lambda h: h.sample(0, 0, 3), ConfigError, "n_sequences: expected an integer ≥ 1, got 0"),
    (lambda h: h.sample(0, 2, 2.5), ConfigError, "length"),
    (lambda h: h.entropy_rate(0, n_sequences=1), ConfigError, "n_sequences"),
    (lambda h: h.masked_token_probs([0, 1], positions=[2]), TokenError, "positions: 2 is outside [0, 2)"),
    (lambda h: HMM.random(-3, 2, 2), ConfigError, "seed"),
    (lambda h: HMM.random(0, 0, 2), ConfigError, "n_states"),
    (lambda h: HMM.random(0, 2, 2, family="gaussian"), ConfigError, "family: unknown HMM family 'gaussian'"),
    (lambda h: HMM.random(0, 2, 2, family="dirichlet", temperature=1), ConfigError, "temperature: not an option"),
    (lambda h: HMM.random(0, 2, 2, family="dirichlet", emission_concentration=0), ConfigError, "emission_concentration"),
    (lambda h: HMM.random(0, 5, 2, family="ginc", n_concepts=2), ConfigError, "not divisible"),
])
def test_invalid_options_raise_typed_errors(call, error, words):
    with pytest.raises(error) as info:
        call(HMM(PI, A, B))
    assert words in str(info.value)


@pytest.mark.parametrize("bad", [[[0.5, 0.5], [1.0]], "probabilities", [[0.5, "a"], [0.5, 0.5]]])
def test_ragged_or_non_numeric_parameters_raise_distribution_error(bad):
    with pytest.raises(DistributionError, match="transition: expected a numeric array"):
        HMM(PI, bad, B)


def test_a_two_dimensional_initial_raises_shape_error_naming_initial():
    """``initial`` is a law over the K states, shape (K,): a (2, 2) matrix is refused even when transition
    and emission would fit its first axis."""
    with pytest.raises(ShapeError, match=r"initial: expected shape \(K,\), got \(2, 2\)"):
        HMM(np.eye(2), np.eye(2), [[0.5, 0.5], [0.5, 0.5]])


def test_an_impossible_sequence_is_named_by_its_first_impossible_position():
    """State 0 then state 1 forever, both emitting token 0 only: token 1 at position 1 is the first impossible
    token (position 2 follows an impossible prefix)."""
    hmm = HMM([1.0, 0.0], [[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ZeroProbabilityError, match="token 1 at position 1 is impossible"):
        hmm.next_token_probs([0, 1, 1, 0])


@given(hmms(max_states=3, min_symbols=2, max_symbols=3), st.integers(1, 3), st.booleans())
def test_a_law_is_refused_exactly_where_it_is_undefined_not_wherever_the_sequence_is_impossible(hmm, T, log):
    """p*(x_i | x_−i) needs p*(x_−i) > 0 and row t of the next-token law p*(x_<t) > 0, not p*(x) > 0 (the token
    at a masked position is a placeholder; x_T conditions no next-token row): over every sequence of a
    world with exact zeros, each law equals enumeration over the hidden paths where it is defined and is a
    ZeroProbabilityError where it is not (before, any impossible token refused every law of its sequence:
    (0, 2, 1) with its placeholder 2 impossible, and (0, 0, 2) for the next-token law)."""
    pi, A, B = bf.params(hmm)
    masked = hmm.log_masked_token_probs if log else hmm.masked_token_probs
    for x in itertools.product(range(hmm.n_symbols), repeat=T):
        x = np.array(x)
        for i in range(T):
            joint = np.array([bf.sequence_prob(pi, A, B, np.r_[x[:i], v, x[i + 1:]]) for v in range(hmm.n_symbols)])
            if joint.sum() == 0:
                with pytest.raises(ZeroProbabilityError, match=f"masked position {i}"):
                    masked(x, [i])
                continue
            got = np.asarray(masked(x, [i]))[0]
            np.testing.assert_allclose(np.exp(got) if log else got, joint / joint.sum(), atol=2e-6)
        defined = [any(bf.sequence_prob(pi, A, B, np.r_[x[:i], v, x[i + 1:]]) for v in range(hmm.n_symbols))
                   for i in range(T)]
        for i in range(T):  # the masked state law p*(h_i | x_−i), likewise
            if defined[i]:
                np.testing.assert_allclose(hmm.masked_state_posterior(x, [i])[0], bf.masked_states(pi, A, B, x, i),
                                           atol=2e-6)
            else:
                with pytest.raises(ZeroProbabilityError, match=f"masked position {i}"):
                    hmm.masked_state_posterior(x, [i])
        if all(defined):
            np.testing.assert_allclose(hmm.masked_state_posterior(x), [bf.masked_states(pi, A, B, x, i)
                                                                     for i in range(T)], atol=2e-6)
        for law, to_probs in ((hmm.next_token_probs, np.asarray), (hmm.next_token_logprobs, np.exp)):
            if T > 1 and bf.sequence_prob(pi, A, B, x[:-1]) == 0:
                with pytest.raises(ZeroProbabilityError):
                    law(x)
            else:
                np.testing.assert_allclose(to_probs(law(x)), bf.next_token_law(pi, A, B, x), atol=2e-6)



@pytest.mark.parametrize("parallel", [True, False, "log-space"])
def test_every_scan_answers_a_masked_law_whose_placeholder_is_impossible(parallel):
    """The associative scans, the sequential one and the log-space one: the law at a masked position reads
    the forward pass before it and the backward pass after it, never the placeholder (here impossible)."""
    from simlm.worlds import hmm_core

    pi, A, B = [1.0, 0.0], np.eye(2), [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]
    x = jnp.array([0, 2, 1, 0, 1])
    probs, steps = hmm_core.masked_token_probs(*(jnp.asarray(a, jnp.float32) for a in (pi, A, B)), x, parallel)
    assert not np.isfinite(np.asarray(steps)).all()
    np.testing.assert_allclose(np.asarray(probs)[1], [0.5, 0.5, 0.0], atol=1e-6)


# ---- a 3-D emission is a ShapeError naming it, not a bare ValueError later in sample -------------------
def test_an_emission_that_is_not_a_matrix_is_a_shape_error_naming_emission():
    from simlm.errors import ShapeError

    with pytest.raises(ShapeError, match="^emission: "):
        HMM([1.0], [[1.0]], np.full((1, 2, 2), 0.5))


def test_a_traced_call_names_the_checked_functions_and_they_give_the_methods_number():
    """Under jax.jit the methods refuse traced tokens, and the message said to call "the pure functions in
    simlm.worlds.hmm_core" — whose bare scans are unchecked on chains with zeros: for two absorbing states and
    300 tokens they read −471.7 where the world says −252.0 (a review, 2026-12-08).  The message names
    simlm.worlds.hmm's functions, which under jit give the method's number."""
    import jax

    from simlm.worlds import hmm as hmm_functions

    world = HMM([0.5, 0.5], [[1.0, 0.0], [0.0, 1.0]], [[0.9, 0.1], [0.1, 0.9]])
    x = np.array([[0] * 100 + [1] * 200], np.int32)
    with pytest.raises(TokenError) as refused:
        jax.jit(world.log_likelihood)(x)
    said = str(refused.value)
    assert "simlm.worlds.hmm's" in said and "token_logprobs(*hmm.chain, tokens)" in said
    assert "not simlm.worlds.hmm_core's bare scans" in said and "instead" not in said
    exact = np.logaddexp(np.log(0.5) + 100 * np.log(0.9) + 200 * np.log(0.1),
                         np.log(0.5) + 100 * np.log(0.1) + 200 * np.log(0.9))
    jitted = jax.jit(lambda t: hmm_functions.log_likelihood(*world.chain, t))(x)
    assert float(jitted[0]) == pytest.approx(exact, rel=1e-6)
    assert float(jitted[0]) == pytest.approx(float(world.log_likelihood(x)[0]), rel=1e-7)
