"""Shape buckets are exact: padded states, symbols, positions and sequences change no law (enumeration), and
a bucketed draw is bit-identical to an unbucketed one."""

import functools
import logging

import jax
import numpy as np
import pytest
from hypothesis import given, strategies as st

import bruteforce as bf
from simlm.strategies import hmms, token_sequences
from simlm.worlds import HMM, buckets
from simlm.worlds import hmm as hmm_module
from simlm.worlds import hmm_core as core

TOL = dict(rtol=2e-4, atol=2e-5)
# K ≤ 3 and T ≤ 4 keep enumeration cheap; every shape is padded (K → 4, V + 1 → 4 or 8, T → 4, n → 4)
small = hmms(min_states=1, max_states=3, min_symbols=1, max_symbols=4, allow_zeros=False)


@st.composite
def small_cases(draw):
    hmm = draw(small)
    return hmm, draw(token_sequences(hmm, min_length=1, max_length=4))


@given(small_cases())
def test_bucketed_laws_equal_enumeration_over_hidden_paths(case):
    hmm, x = case
    pi, A, B = bf.params(hmm)
    # the causal law pads T after the sequence, the masked laws read through the padded backward pass
    nxt, masked = np.asarray(hmm.next_token_probs(x)), np.asarray(hmm.masked_token_probs(x))
    for i, s in enumerate(x):
        np.testing.assert_allclose(nxt[i], bf.next_token_law(pi, A, B, s), **TOL)
        np.testing.assert_allclose(masked[i], [bf.masked_law(pi, A, B, s, t) for t in range(len(s))], **TOL)
    np.testing.assert_allclose(hmm.log_likelihood(x), [np.log(bf.sequence_prob(pi, A, B, s)) for s in x], **TOL)
    assert nxt.shape == masked.shape == x.shape + (hmm.n_symbols,)


@functools.lru_cache(maxsize=None)
def _unbucketed(name):
    return jax.jit(jax.vmap(getattr(core, name), in_axes=(None, None, None, 0)))


@pytest.mark.parametrize("shape", [(2, 3, 5), (5, 6, 8)])
@given(data=st.data())
def test_bucketed_equals_unbucketed_with_zeros_and_impossible_tokens(shape, data):
    K, V, T = shape
    hmm = data.draw(hmms(min_states=K, max_states=K, min_symbols=V, max_symbols=V, allow_zeros=True))
    x = data.draw(token_sequences(hmm, min_length=T, max_length=T, n_sequences=3, possible=False))
    chain = hmm.chain
    for name, fn in (("next_token_probs", hmm_module.next_token_probs),
                     ("masked_token_probs", hmm_module.masked_token_probs)):
        (got, got_steps), (want, want_steps) = fn(*chain, x), _unbucketed(name)(*chain, x)
        np.testing.assert_array_equal(np.isneginf(got_steps), np.isneginf(want_steps))
        np.testing.assert_allclose(np.where(np.isneginf(got_steps), 0, got_steps),
                                   np.where(np.isneginf(want_steps), 0, want_steps), **TOL)
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("shape", [(1, 1), (5, 6)])
def test_a_bucketed_draw_is_bit_identical_to_an_unbucketed_one(shape):
    K, V = shape
    hmm = HMM.random(K + V, K, V)
    reference = jax.jit(lambda a, b, c, key: core.sample(*(core.cumulative_rows(m) for m in (a, b, c)), key, 16, 9))
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        tokens, states = hmm.sample(key, 16, 9, return_states=True)
        want_tokens, want_states = reference(*hmm.chain, key)
        np.testing.assert_array_equal(tokens, want_tokens)
        np.testing.assert_array_equal(states, want_states)


def test_a_new_shape_in_a_warm_bucket_compiles_nothing(caplog):
    # what a property test does per example: build a world, sample (n, max_length + 1) as token_sequences
    # does, slice, ask for laws — none of it may compile once the (4, 4, 4) buckets are warm
    def example(K, V, T, seed):
        hmm = HMM.random(seed, K, V)
        x = np.asarray(hmm.sample(seed, 2, 5))[:, :T]
        return hmm.next_token_probs(x), hmm.masked_token_probs(x), hmm.log_likelihood(x)

    example(1, 1, 1, 0)
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        for K, V, T in [(2, 3, 4), (4, 2, 3), (3, 1, 2)]:
            example(K, V, T, K + V + T)
    assert [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()] == []


@pytest.mark.parametrize("T", [2, 5])  # T = 2 is summed over 4 positions, where tree_sum alone pads to 2
def test_the_bucketed_log_likelihood_is_the_tree_sum_of_the_real_positions_bit_for_bit(T):
    hmm = HMM.random(T, 3, 4)
    x = np.asarray(hmm.sample(T, 3, 5))[:, :T]
    want = jax.jit(core.tree_sum)(hmm_module.token_logprobs(*hmm.chain, x))
    np.testing.assert_array_equal(hmm.log_likelihood(x), want)


def test_padding_is_inert_by_construction():
    pi, A, B = buckets.padded_chain(np.array([1.0]), np.array([[1.0]]), np.array([[0.25, 0.75]]), 4, 4)
    np.testing.assert_array_equal(pi, [1, 0, 0, 0])
    assert (A[0, 1:] == 0).all() and np.allclose(A.sum(1), 1)  # nothing enters the new states
    np.testing.assert_array_equal(B[:, -1], 1)  # the blank: likelihood 1 everywhere
    np.testing.assert_array_equal(B[1:, :-1], 0)
    assert [buckets.bucket(s) for s in (1, 4, 5, 64, 65)] == [4, 4, 8, 64, 65]


@pytest.mark.parametrize("bad", [3, -1, 7])
@pytest.mark.parametrize("name", ["token_logprobs", "log_likelihood", "next_token_probs", "masked_token_probs",
                                  "smoothed_posterior", "prepended_mask_probs"])
def test_the_module_functions_refuse_a_token_id_outside_the_vocabulary(name, bad):
    """Padded to its bucket, an id V (V + 1 a bucket size: the blank column) or −1 (wrapping to it) was read as
    no observation, log p = 0; another id past V read a zero column (−inf); unpadded, XLA clamps it to V − 1 —
    a number, not an error, from the module functions (the class refused it).  A review, 2026-12-06."""
    from simlm.errors import TokenError

    world = HMM(np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    x = np.array([[0, bad, 1]], np.int32)
    with pytest.raises(TokenError, match=rf"^tokens: .*{bad}"):
        getattr(hmm_module, name)(*world.chain, x)


def test_the_module_functions_refuse_one_sequence_with_a_token_error():
    """The module-level functions take a batch (n, T): one sequence (T,) raised numpy's "not enough values to
    unpack" before any check (a review, 2026-12-06).  A TokenError now names the shape; the methods take (T,)."""
    import jax.numpy as jnp
    from simlm.errors import TokenError
    from simlm.worlds import hmm
    chain = [jnp.asarray(np.float32(a)) for a in ([1.0], [[1.0]], [[1.0]])]
    with pytest.raises(TokenError, match=r"^tokens: expected a batch of shape \(n, T\), got shape \(3,\)"):
        hmm.token_logprobs(*chain, jnp.zeros(3, jnp.int32))
