"""The log-space scans (``parallel=core.LOG_SPACE``, the rerun of a batch whose scaled filter could have
left the float range) equal the scaled sequential filter where that one is exact, and stay exact where
it is not: evidence that first buries a block of a reducible chain and later favours it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from scipy.linalg import block_diag
from scipy.special import logsumexp

import bruteforce as bf
from simlm import HMM
from simlm.worlds import MemoryHMM
from simlm.worlds import hmm_core as core
from simlm.worlds import prompting
from test_hmm_parallel import EXACT, _assert_same, _modes, chains_and_tokens

FORWARD_FAMILY = ("forward", "token_logprobs", "log_likelihood", "next_token_probs")
POSTERIORS = ("smoothed_posterior", "masked_state_posterior", "masked_token_probs", "prepended_state_posterior",
              "prepended_mask_probs")


def _both(names, *args):
    """``core.<name>`` for each name by the scaled sequential scan and in log space, in float64, as numpy:
    ``{(name, mode): output}``, all from one compiled program."""
    return _modes(names, (False, core.LOG_SPACE), *args)


@given(chains_and_tokens())
def test_the_forward_family_equals_the_scaled_filter_including_impossible_tokens(case):
    out = _both(FORWARD_FAMILY + ("backward",), *case)  # backward reads (A, B, x)
    for name in FORWARD_FAMILY + ("backward",):
        _assert_same(out[name, False], out[name, core.LOG_SPACE])


@given(chains_and_tokens(allow_zeros=False))
def test_every_posterior_equals_the_scaled_filter(case):
    out = _both(POSTERIORS, *case)
    for name in POSTERIORS:
        _assert_same(out[name, False], out[name, core.LOG_SPACE])


@given(chains_and_tokens())
def test_the_float64_log_space_references_equal_enumeration(case):
    """tests/bruteforce.py's recursions in log space, the references where a sequence is too long to enumerate,
    equal its enumeration over every hidden path (zeros in π, A and B included) wherever p(x) > 0."""
    pi, A, B, x = case
    assume(bf.sequence_prob(pi, A, B, x) > 0)
    predicted, log_c = bf.log_forward(pi, A, B, x)
    law = bf.next_token_law(pi, A, B, x)
    np.testing.assert_allclose(np.exp(log_c), law[np.arange(len(x)), x], rtol=1e-12)
    np.testing.assert_allclose(np.exp(predicted) @ B, law, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bf.log_smoothed_states(pi, A, B, x), bf.smoothed_states(pi, A, B, x),
                               rtol=1e-12, atol=1e-15)


@given(chains_and_tokens(K=4, allow_zeros=False))
def test_block_diagonal_transitions_equal_their_dense_matrix(case):
    pi, A, B, x = case
    blocks = np.stack([A[:2, :2] / A[:2, :2].sum(1, keepdims=True), A[2:, 2:] / A[2:, 2:].sum(1, keepdims=True)])
    dense = block_diag(*blocks)
    names = ("forward", "masked_token_probs", "prepended_state_posterior")  # _log_predict, _log_retrodict
    block, full = (_modes(names, (core.LOG_SPACE,), pi, a, B, x) for a in (blocks, dense))
    for name in names:
        for u, w in zip(jax.tree.leaves(block[name, core.LOG_SPACE]), jax.tree.leaves(full[name, core.LOG_SPACE])):
            np.testing.assert_allclose(u, w, **EXACT)


def _buried_then_favoured():
    """Two memory values; 60 tokens favour the first, 80 the second (float32: the second's share of α is
    9⁻⁶⁰ ≈ 6e-58 at t = 60, far below the float range, and the evidence then turns)."""
    E = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])
    x = np.array([0] * 60 + [1] * 80)
    log_odds = (80 - 60) * np.log(9.0)  # log P(m = 1 | x) − log P(m = 0 | x)
    exact_ll = logsumexp([np.log(0.5) + 60 * np.log(0.9) + 80 * np.log(0.1),
                          np.log(0.5) + 60 * np.log(0.1) + 80 * np.log(0.9)])
    return MemoryHMM.one_cell([0.5, 0.5], [1.0], [[1.0]], E), HMM([0.5, 0.5], np.eye(2), E[:, 0, :]), x, \
        log_odds, exact_ll


def test_a_buried_block_comes_back_in_every_law_and_posterior():
    memory, dense, x, log_odds, exact_ll = _buried_then_favoured()
    last = [1 / (1 + np.exp(log_odds)), 1 / (1 + np.exp(-log_odds))]  # P(m | x): the block's weight anywhere
    for world in (memory, dense):
        assert float(world.log_likelihood(x)) == pytest.approx(exact_ll, abs=1e-3)
        assert np.asarray(world.next_token_probs(x))[-1] == pytest.approx([0.1, 0.9], abs=1e-5)
        np.testing.assert_allclose(np.asarray(world.masked_token_probs(x))[60], [0.1, 0.9], rtol=1e-4)
    # smoothed at t = 60, where past and future disagree most: the state is the memory, P(m | x)
    np.testing.assert_allclose(np.asarray(dense.state_posterior(x))[60], last, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(memory.memory_posterior(x))[0], last, rtol=1e-4)


def test_the_raw_scaled_filter_alone_would_have_lost_the_block():
    """The failure the rerun exists for (so the test above cannot pass by accident)."""
    _, dense, x, _, exact_ll = _buried_then_favoured()
    pi, A, B = dense.parameter_arrays()
    raw = float(core.log_likelihood(pi, A, B, jnp.asarray(x), False))
    assert raw < exact_ll - 40
    _, low = core.token_logprobs(pi, A, B, jnp.asarray(x), core.CHECKED)
    assert float(low) < float(core.floor(A, B))


@pytest.mark.parametrize("n", [1, 4, 5])
def test_a_state_whose_start_share_is_flushed_comes_back_in_the_next_token_law(n):
    """K ≥ V: π_1 · B[1, x_1] = 1e-30 · 1e-9 is 0 in float32; the absorbing chain would never bring state 1
    back, and nine 1s later it is the only state left.  The floor check must see π's own shares (it once
    tracked only p_t ∘ B[:, x_t], where the flushed share is no positive entry: [1, 1e-6] for [1.5e-9, 1]
    at n = 4, a bucket size without padding rows).  The memory world's prior is the same trap."""
    pi = np.array([0.5, 1e-30, 0.5 - 1e-30])
    B = np.array([[1.0, 0.0], [1e-9, 1 - 1e-9], [1 - 1e-6, 1e-6]])
    x = np.repeat(np.array([[0] + [1] * 9]), n, axis=0)
    alpha = pi * B[:, 0] * B[:, 1] ** 8  # A = I: p(h, x_1:9) = π_h B[h, 0] B[h, 1]^8; state 1 at 1e-39
    expected = alpha / alpha.sum() @ B  # [1.5e-9, 1]
    np.testing.assert_allclose(np.asarray(HMM(pi, np.eye(3), B).next_token_probs(x))[:, 9], np.tile(expected, (n, 1)),
                               rtol=1e-4)
    memory = MemoryHMM.one_cell([1 - 1e-30, 1e-30], [0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]],
                                [[[1.0, 0.0], [1.0, 0.0]], [[1e-9, 1 - 1e-9], [1e-9, 1 - 1e-9]]])
    law = np.asarray(memory.next_token_probs(x))[:, 9]
    assert np.all(law[:, 1] > 0.999), law  # the slot of prior 1e-30 is certain after 1 ×9


def test_a_state_whose_predicted_share_is_flushed_comes_back_in_the_next_token_law_when_k_below_v():
    """K = 2 < V = 3 (the loop that stores p_t and multiplies by B after it): 60 zeros put state 1's share
    at (0.1/0.89)⁶⁰ ≈ 1e-57, below float32, and 99 ones then favour it by 8.9⁹⁹.  The floor check must read
    p_t's own shares: A = I, so p(h_t = 1 | x_<t) = σ((n₁ − n₀)·log 8.9) with n₀, n₁ the zeros and ones
    before t, and the law at t = 159 is ≈ B[1] = [0.1, 0.89, 0.01], not B[0]."""
    B = np.array([[0.89, 0.1, 0.01], [0.1, 0.89, 0.01]])
    x = np.array([[0] * 60 + [1] * 100])
    t = np.arange(160)
    n0, n1 = np.minimum(t, 60), np.maximum(t - 60, 0)
    p1 = 1 / (1 + np.exp(-(n1 - n0) * np.log(8.9)))
    expected = np.stack([1 - p1, p1], axis=1) @ B
    law = np.asarray(HMM([0.5, 0.5], np.eye(2), B).next_token_probs(x))[0]
    np.testing.assert_allclose(law, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(law[159], [0.1, 0.89, 0.01], rtol=1e-5)


def test_a_next_token_law_below_the_float_range_is_its_finite_log_not_minus_infinity():
    """π = (1 − 1e-10, 1e-10), A = I, token 1 emitted only by state 1 with B = 1e-30: p(x_1 = 1) = 1e-40,
    below float32, so the world reruns in log space.  The law's log was taken of exp(log p_t) B, flushed to
    0: log p(x_1 = 1) read −∞ for a token whose own log-prob (token_logprobs, log_likelihood) the world
    gives as −92.10.  The log law at the observed tokens is now the world's token log-probs, and the law at
    every token its brute force (float64: Σ_h p(h | x_<t) B[h, v]); the same through a memory world."""
    pi, B, x = np.array([1 - 1e-10, 1e-10]), np.array([[1.0, 0.0], [1 - 1e-30, 1e-30]]), np.array([[1, 1], [0, 0]])
    world = HMM(pi, np.eye(2), B)
    law = np.asarray(world.next_token_logprobs(x))
    steps = np.asarray(world.token_logprobs(x))
    np.testing.assert_allclose(np.take_along_axis(law, x[..., None], -1)[..., 0], steps, rtol=1e-6)
    expected = [[[np.log1p(-1e-40), np.log(1e-40)], [np.log1p(-1e-30), np.log(1e-30)]],  # after x_1 = 1: h = 1
                [[0.0, np.log(1e-40)], [0.0, np.log(1e-40)]]]  # after x_1 = 0: p(h = 1) ≈ 1e-10, law 1e-40
    np.testing.assert_allclose(law, expected, rtol=1e-5, atol=1e-6)
    memory = MemoryHMM.one_cell([1 - 1e-10, 1e-10], [1.0], [[1.0]], [[[1.0, 0.0]], [[1 - 1e-30, 1e-30]]])
    np.testing.assert_allclose(np.asarray(memory.next_token_logprobs(x)), expected, rtol=1e-5, atol=1e-6)


def test_sampled_sequences_of_a_dense_world_never_need_the_rerun():
    """Every entry of A positive: the smallest share the scan reads stays far above the floor."""
    hmm = HMM.random(0, 6, 5)
    x = jnp.asarray(hmm.sample(0, 4, 200))
    pi, A, B = hmm.parameter_arrays()
    _, low = jax.vmap(lambda t: core.token_logprobs(pi, A, B, t, core.CHECKED))(x)
    assert float(low.min()) > 1e6 * float(core.floor(A, B))


def test_a_law_below_the_float_range_after_an_unlikely_token_is_recomputed_not_zero():
    """K ≥ V: the law is joint·(AB) ÷ c_t, so after a token of probability 1e-30 the product leaves the
    float range although no share of the filter does (it was [0, 1]; the exact law is [1e-30, 1])."""
    hmm = HMM([0.5, 0.5], np.full((2, 2), 0.5), [[1e-30, 1 - 1e-30], [1e-30, 1 - 1e-30]])
    law = np.asarray(hmm.next_token_probs(np.array([0, 0, 1])))
    np.testing.assert_allclose(law[1:, 0], 1e-30, rtol=1e-5)


def test_the_accelerator_path_reruns_a_token_only_a_buried_block_can_emit(monkeypatch):
    """The associative scans read p_t off e^{ℓ − max ℓ}, where the buried block's share is 0, so token 2
    (emitted by the second block only) got c_t = 0 and the sequence was called impossible."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    hmm = HMM([0.5, 0.5], np.eye(2), [[0.9, 0.1, 0.0], [0.1, 0.8, 0.1]])
    x = np.array([[0] * 60 + [2] + [1] * 10])
    exact = np.log(0.5) + 60 * np.log(0.1) + np.log(0.1) + 10 * np.log(0.8)  # only the second block emits 2
    assert float(hmm.log_likelihood(x)[0]) == pytest.approx(exact, abs=1e-3)
    np.testing.assert_allclose(np.asarray(hmm.state_posterior(x))[0, 60], [0.0, 1.0], atol=1e-6)


def test_the_corrupted_channel_posterior_reruns_in_log_space_too():
    """bayes_corrupted_probs runs the masked posterior under its own vmap: it checks and reruns itself
    (before, the float32 world called the masked sequence impossible)."""
    from simlm.theory.corrupted_channel import Corruption, bayes_corrupted_probs

    memory, dense, x, _, _ = _buried_then_favoured()
    y = x[None].copy()
    y[0, 60] = 2  # MASK (id V = 2) where past and future disagree most
    for world in (memory, dense):
        law = bayes_corrupted_probs(world, y, Corruption(0.15, 1.0, 0.0, 0.0))
        np.testing.assert_allclose(law[0, 60], [0.1, 0.9], rtol=1e-4)


# ---- prompts: the same check and rerun (simlm.worlds.prompting) -------------------------------------------

def test_a_prompted_posterior_keeps_the_block_its_input_buries_and_then_favours():
    """x = 80 ones, then 60 zeros: reading x backwards, β_0 first buries the first memory value (9⁻⁶⁰) and
    then favours it by 9²⁰ — the unchecked backward pass lost it and put P(m = 1 | z, x) at 0, not 1."""
    memory, dense, _, _, _ = _buried_then_favoured()
    x = np.array([1] * 80 + [0] * 60)
    for world in (memory, dense):
        np.testing.assert_allclose(np.asarray(world.prompted_state_posterior(x, [1.0, 1.0])), [0.0, 1.0], atol=1e-6)
        np.testing.assert_allclose(np.asarray(world.prompted_prepended_mask_probs(x, [1.0, 1.0])), [0.1, 0.9],
                                   rtol=1e-5)
        np.testing.assert_allclose(np.asarray(world.prompted_masked_token_probs(x, [1.0, 1.0]))[0], [0.1, 0.9],
                                   rtol=1e-5)


def test_a_prompt_that_buries_a_state_the_input_then_favours_keeps_it():
    """The prompt puts state 1 at 10⁻⁵⁰ (below float32) and 140 tokens then favour it by 9¹⁴⁰: the prompted
    law is state 1's, which a prompt law flushed to 0 would have ruled out."""
    _, dense, _, _, _ = _buried_then_favoured()
    x = np.ones(140, np.int64)
    U = [[1.0, 1e-25], [1.0, 1e-25]]
    np.testing.assert_allclose(np.asarray(dense.prompted_state_posterior(x, U)), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(dense.prompted_masked_token_probs(x, U))[[0, 70, 139]],
                               [[0.1, 0.9]] * 3, rtol=1e-5)


@pytest.mark.parametrize("method, law", [("prompted_state_posterior", [0.0, 1.0]),
                                         ("prompted_prepended_mask_probs", [0.5, 0.5])])
def test_a_prompt_law_below_the_float_range_on_the_only_state_the_input_allows_is_recomputed(method, law):
    """The prompt puts state 1 at 10⁻⁵⁰ (0 in float32) and x = (1, 1, 0) only state 1 can emit (A = I,
    B[0, 1] = 0): exactly P(H_0 | z, x) ∝ (1·0, 10⁻⁵⁰·0.5³) = e_1 and the masked law is B[1] = (0.5, 0.5).
    Only the prompt law's own least share sees the flush; without it x was called impossible."""
    hmm = HMM([0.5, 0.5], np.eye(2), [[1.0, 0.0], [0.5, 0.5]])
    U = [[1.0, 1e-25], [1.0, 1e-25]]
    x = np.array([1, 1, 0])
    np.testing.assert_allclose(np.asarray(getattr(hmm, method)(x, U)), law, rtol=1e-5, atol=1e-6)


def test_the_masked_prompted_filter_counts_the_prompt_laws_flushed_shares_as_lost():
    """The filter starts from the prompt's law: a state it rules in but holds below the float range (0 as
    float32) is a lost share, flagged even where nothing downstream of it is small (one token, β uniform)."""
    pi, A, B = _buried_then_favoured()[1].chain
    U = jnp.asarray([[1.0, 1e-25], [1.0, 1e-25]], jnp.float32)
    _, low = prompting.prompted_masked_token_probs(pi, A, B, U, jnp.asarray([1]), core.CHECKED)
    assert float(low) < float(core.floor(A, B))
    _, low = prompting.prompted_masked_token_probs(pi, A, B, U ** 0.01, jnp.asarray([1]), core.CHECKED)  # 10⁻¹
    assert float(low) > float(core.floor(A, B))


def test_the_prompt_prior_keeps_a_state_its_tokens_bury_and_then_favour():
    """Two tokens at 10⁻³⁰ on state 1, two at 10⁻³⁰ on state 0, A = I: α ∝ (10⁻⁶⁰, 10⁻⁶⁰), so r = (1, 1);
    the normalised products flushed state 1 after the first two and answered (1, 0)."""
    _, dense, _, _, _ = _buried_then_favoured()
    U = [[1.0, 1e-30], [1.0, 1e-30], [1e-30, 1.0], [1e-30, 1.0]]
    np.testing.assert_allclose(np.asarray(dense.prompt_reweighting(U)), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dense.prompted_state_posterior(np.array([0, 1]), U)), [0.5, 0.5],
                               rtol=1e-5)


def test_the_prompt_fits_backward_messages_are_checked_too():
    """downstream.prompts fits on β_0 computed once; it is the checked, rerun one."""
    from simlm.downstream.prompts import _prepended_backward

    _, dense, _, _, _ = _buried_then_favoured()
    beta0, steps = _prepended_backward(*dense.chain, jnp.asarray([[1] * 80 + [0] * 60]))
    assert np.asarray(beta0)[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(np.asarray(steps)).all()


@pytest.mark.parametrize("n0", [150, 600])
def test_the_rerun_of_a_long_buried_block_keeps_its_laws_to_float32_rounding(n0):
    """Two blocks that never leave themselves; n0 tokens bury the second block (its share's log falls to
    about −n0/2), n0 + 400 favour it.  Run in float32 the log-space rerun added its shares' rounding (1e-5 to
    6e-5 an entry at these magnitudes) at every step: next-token laws 2.6e-5 (T = 700) and 2.3e-4 (T = 1600)
    off, the log-likelihood 2e-3.  It runs in float64 now, rounded once."""
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    world = HMM(np.full(4, 0.25), block_diag(a, a), [[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    x = np.array([0] * n0 + [1] * (n0 + 400))
    pi, A, B = world.parameter_arrays()
    predicted, log_c = bf.log_forward(pi, A, B, x)  # float64 of the stored float32 chain
    laws, ll = np.exp(predicted - logsumexp(predicted, axis=1, keepdims=True)) @ np.asarray(B, np.float64), log_c.sum()
    np.testing.assert_allclose(np.asarray(world.next_token_probs(x[None]))[0], laws, rtol=0, atol=2e-7)
    assert float(world.log_likelihood(x[None])[0]) == pytest.approx(ll, abs=2 * float(np.spacing(np.float32(abs(ll)))))
    chain = world.parameter_arrays()
    _, low = core.token_logprobs(*chain, jnp.asarray(x), core.CHECKED)
    assert float(low) < float(core.floor(*chain[1:]))  # the case the rerun is for
