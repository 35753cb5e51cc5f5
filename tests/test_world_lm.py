"""WorldLM, the exact world as the ε = 0 LM: the law after the last token, log p*(x_{T+1} = · | x_1:T),
by each of its three routes (a log-linear world's automaton state, an exact chain's filter, and the
likelihoods of the V one-token extensions), each checked against brute force, and the kind
(SoftmaxWorldLM or not) that WorldLM(world) picks."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bruteforce import params, sequence_prob
from simlm.errors import ConfigError, NoSuchLawError, ZeroProbabilityError
from simlm.models.base import SoftmaxLanguageModel, SoftmaxWorldLM, WorldLM
from simlm.worlds import HMM, LogLinearWorld

# a chain whose token 3 is never emitted, and whose token 2 comes only from state 1
SPARSE = HMM([0.6, 0.4], [[0.7, 0.3], [0.2, 0.8]], [[0.5, 0.5, 0.0, 0.0], [0.0, 0.3, 0.7, 0.0]])


class LikelihoodWorld:
    """An HMM seen only through its likelihoods: no exact chain, so WorldLM takes the law after the last
    token from the V one-token extensions."""

    def __init__(self, hmm):
        self.hmm = hmm

    @property
    def n_symbols(self):
        return self.hmm.n_symbols

    def log_likelihood(self, tokens):
        return self.hmm.log_likelihood(tokens)

    def next_token_logprobs(self, tokens):
        return self.hmm.next_token_logprobs(tokens)

    def masked_token_probs(self, tokens, positions=None):
        return self.hmm.masked_token_probs(tokens, positions)

    def prepended_mask_probs(self, tokens):
        return self.hmm.prepended_mask_probs(tokens)


def _appended_law(hmm, x) -> np.ndarray:
    """log p(x_{T+1} = · | x_1:T) by enumerating every hidden path, float64."""
    pi, A, B = params(hmm)
    joint = np.array([sequence_prob(pi, A, B, list(x) + [v]) for v in range(B.shape[1])])
    with np.errstate(divide="ignore"):
        return np.log(joint / joint.sum())


def _loglinear_appended_law(world, x) -> np.ndarray:
    """log p*(x_{T+1} = · | x_1:T) from the world's likelihoods of the V one-token extensions."""
    V = world.n_symbols
    extended = np.concatenate([np.tile(x, (V, 1)), np.arange(V, dtype=np.int32)[:, None]], axis=1)
    joint = np.asarray(world.log_likelihood(extended), np.float64)
    return joint - np.logaddexp.reduce(joint)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_world_lm_appended_law_is_the_next_position_and_the_brute_force_law(seed):
    world = LogLinearWorld.random(seed, n_states=4, n_symbols=6, dim=3)
    lm = WorldLM(world)
    x = np.asarray(world.sample(seed, 2, 5), np.int32)
    got = np.asarray(lm.appended_token_logprobs(x))
    assert got.shape == (2, 6)
    for w in (0, 5):  # row T of the causal law one position further, whatever token fills it
        further = np.asarray(lm.next_token_logprobs(np.concatenate([x, np.full((2, 1), w, np.int32)], 1)))
        np.testing.assert_allclose(got, further[:, -1], atol=1e-6)
    for i in range(2):
        np.testing.assert_allclose(got[i], _loglinear_appended_law(world, x[i]), atol=1e-5)
    single = lm.appended_token_logprobs(x[1])
    assert single.shape == (6,)
    np.testing.assert_allclose(single, got[1], atol=1e-6)


def test_world_lm_of_a_loglinear_world_is_a_softmax_lm():
    world = LogLinearWorld.random(0, n_states=4, n_symbols=6, dim=3)
    lm = WorldLM(world)
    assert isinstance(lm, SoftmaxWorldLM) and isinstance(lm, SoftmaxLanguageModel)
    x = np.asarray(world.sample(1, 2, 5), np.int32)
    logits = np.asarray(lm.features(x), np.float64) @ np.asarray(lm.unembedding, np.float64)
    np.testing.assert_allclose(jax.nn.log_softmax(logits, axis=-1), lm.next_token_logprobs(x), atol=1e-5)


def test_world_lm_of_an_hmm_has_no_features():
    lm = WorldLM(HMM.random(0, 3, 4))
    assert not isinstance(lm, SoftmaxWorldLM) and not isinstance(lm, SoftmaxLanguageModel)
    with pytest.raises(NoSuchLawError, match="features"):
        lm.features  # noqa: B018
    with pytest.raises(NoSuchLawError, match="unembedding"):
        lm.unembedding  # noqa: B018


def test_appended_law_from_likelihoods_equals_the_filter_and_brute_force():
    hmm = HMM.random(0, 3, 4)
    x = np.asarray(hmm.sample(0, 2, 5), np.int32)
    by_filter = np.asarray(WorldLM(hmm).appended_token_logprobs(x))
    by_likelihoods = np.asarray(WorldLM(LikelihoodWorld(hmm)).appended_token_logprobs(x))
    assert by_likelihoods.shape == (2, 4)
    np.testing.assert_allclose(by_likelihoods, by_filter, atol=1e-6)
    for i in range(2):
        np.testing.assert_allclose(by_likelihoods[i], _appended_law(hmm, x[i]), atol=1e-5)
    for world in (hmm, LikelihoodWorld(hmm)):  # one sequence (T,) gives one law (V,)
        single = WorldLM(world).appended_token_logprobs(x[1])
        assert single.shape == (4,)
        np.testing.assert_allclose(single, by_filter[1], atol=1e-6)


@pytest.mark.parametrize("wrap", [lambda w: w, LikelihoodWorld], ids=["filter", "likelihoods"])
def test_appended_law_may_give_an_impossible_token_probability_zero(wrap):
    law = np.asarray(WorldLM(wrap(SPARSE)).appended_token_logprobs([[0, 1, 2]]))[0]
    expected = _appended_law(SPARSE, [0, 1, 2])  # after token 2 the chain is in state 1: [.1, .34, .56, 0]
    np.testing.assert_allclose(np.exp(expected), [0.1, 0.34, 0.56, 0.0], atol=1e-12)
    assert law[3] == -np.inf
    np.testing.assert_allclose(law[:3], expected[:3], atol=1e-5)


def test_filter_law_after_a_chain_that_never_emits_the_padding_token():
    # token 0 is never emitted: the filter's extra position (filled with 0) is impossible, the prefix is not
    hmm = HMM([0.6, 0.4], [[0.7, 0.3], [0.2, 0.8]], [[0.0, 0.5, 0.5], [0.0, 0.2, 0.8]])
    law = np.asarray(WorldLM(hmm).appended_token_logprobs([[1, 2]]))[0]
    expected = _appended_law(hmm, [1, 2])
    assert law[0] == expected[0] == -np.inf
    np.testing.assert_allclose(law[1:], expected[1:], atol=1e-5)


def test_filter_law_after_an_impossible_sequence_names_it():
    with pytest.raises(ZeroProbabilityError, match=r"sequence 1 .*token 3 at position 1"):
        WorldLM(SPARSE).appended_token_logprobs([[0, 1, 2], [0, 3, 1]])
    with pytest.raises(ZeroProbabilityError, match=r"sequence 2 .*token 3 at position 0"):
        WorldLM(SPARSE).appended_token_logprobs([[0, 1, 2], [0, 1, 2], [3, 1, 1]])


def test_the_appended_law_below_float32s_range_is_finite_as_the_causal_law_is():
    """p(x_4 = 1 | 000) = e^−91.54 here: the appended law was log of the float32 law, −inf, where the world's
    own next_token_logprobs (and brute force) read −91.54."""
    world = HMM([1.0, 0.0], [[1 - 1e-30, 1e-30], [0.5, 0.5]], [[1.0, 0.0], [1 - 1e-10, 1e-10]])
    x = np.zeros((2, 3), np.int32)
    appended = np.asarray(WorldLM(world).appended_token_logprobs(x), np.float64)
    causal = np.asarray(world.next_token_logprobs(np.zeros((2, 4), np.int32)), np.float64)[:, 3]
    np.testing.assert_array_equal(appended, causal)
    pi, A, B = (np.asarray(a, np.float64) for a in world.chain)  # brute force over the stored parameters
    joint = lambda seq: sum(np.prod([pi[h[0]] * B[h[0], seq[0]]] + [A[h[t - 1], h[t]] * B[h[t], seq[t]]
                                    for t in range(1, len(seq))]) for h in np.ndindex(*[2] * len(seq)))
    np.testing.assert_allclose(appended[0, 1], np.log(joint([0, 0, 0, 1]) / joint([0, 0, 0])), rtol=1e-6)


def test_appended_law_from_likelihoods_keeps_float32_precision_on_long_sequences():
    """The law after x from the V extensions' likelihoods was log p(x, w) − log Σ p(x, w'): two numbers of
    size ~3000 nats at T = 3000, whose difference was 1.4e-4 off a float64 filter (700× the filter's own
    error).  Row T of the world's causal law on (x, w*) is as exact as the filter (≤ 1e-6 here)."""
    pi, A, B = np.array([0.6, 0.4]), np.array([[0.7, 0.3], [0.2, 0.8]]), np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    hmm = HMM(pi, A, B)
    x = np.asarray(hmm.sample(0, 2, 3000), np.int32)
    expected = []
    for seq in x:  # float64 normalised forward filter
        a = pi * B[:, seq[0]]
        for t in seq[1:]:
            a = (a / a.sum()) @ A * B[:, t]
        expected.append(np.log((a / a.sum()) @ A @ B))
    got = np.asarray(WorldLM(LikelihoodWorld(hmm)).appended_token_logprobs(x), np.float64)
    np.testing.assert_allclose(got, np.array(expected), atol=1e-6)


def test_appended_law_of_a_chain_world_is_refused_before_it_is_built_when_it_cannot_fit(monkeypatch):
    """The chain path builds the causal law of x and one more position: the world's size check covers it
    (it ran unchecked where next_token_logprobs on the same tokens was refused)."""
    import simlm.worlds.base as worlds_base

    monkeypatch.setattr(worlds_base, "MAX_ARRAY_ELEMENTS", 26)
    lm, x = WorldLM(HMM.random(0, 2, 3)), np.zeros((2, 4), np.int32)
    with pytest.raises(ConfigError, match="next_token_logprobs on 2 sequences × 5 tokens"):
        lm.appended_token_logprobs(x)
