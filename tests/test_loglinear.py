"""LogLinearWorld: p*(w | x) = softmax(V*ᵀ f*(x)) exactly, checked against brute-force enumeration."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from profiles import scaled

from simlm.models.base import WorldLM
from simlm.errors import ConfigError, ShapeError, TokenError
from simlm.strategies import loglinear_worlds
from simlm.worlds.loglinear import LogLinearWorld, max_logit

# ---- strategies (the worlds come from simlm.strategies) ----------------------------------------------


@st.composite
def worlds_and_tokens(draw, max_length: int = 5, n_sequences: int = 2):
    world = draw(loglinear_worlds())
    T = draw(st.integers(1, max_length))
    toks = draw(hnp.arrays(np.int32, (n_sequences, T), elements=st.integers(0, world.n_symbols - 1)))
    return world, toks


FAST = settings(max_examples=scaled(8), deadline=None)  # each example compiles its shapes (~0.2 s)

# ---- brute force, plain Python in float64 ------------------------------------------------------------


def _log_table(world) -> np.ndarray:
    logits = np.asarray(world.representations, np.float64) @ np.asarray(world.word_embeddings, np.float64)
    top = logits.max(1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))


def _brute_loglik(world, seq) -> float:
    """Follow the automaton from the start state, adding log p*(x_t | h_t)."""
    table, nxt, h, total = _log_table(world), np.asarray(world.next_state), world.start_state, 0.0
    for x in seq:
        total += table[h, x]
        h = nxt[h, x]
    return total


def _normalised(scores) -> np.ndarray:
    p = np.exp(np.asarray(scores) - max(scores))
    return p / p.sum()


# ---- 1. the exact conditional is the log-linear law ----------------------------------------------------


@FAST
@given(worlds_and_tokens())
def test_next_token_probs_equal_softmax_of_true_representation(case):
    world, toks = case
    f = np.asarray(world.true_representation(toks), np.float64)  # (n, T, d)
    logits = f @ np.asarray(world.word_embeddings, np.float64)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    got = np.exp(np.asarray(world.next_token_logprobs(toks), np.float64))  # = next_token_probs
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ---- 2. brute force ---------------------------------------------------------------------------------


@FAST
@given(worlds_and_tokens())
def test_log_likelihood_equals_automaton_walk(case):
    world, toks = case
    expected = [_brute_loglik(world, seq) for seq in toks.tolist()]
    np.testing.assert_allclose(np.asarray(world.log_likelihood(toks)), expected, rtol=1e-5, atol=1e-5)


@FAST
@given(worlds_and_tokens())
def test_masked_token_probs_equal_enumeration_of_substitutions(case):
    world, toks = case
    got = np.asarray(world.masked_token_probs(toks))  # (n, T, V)
    for n, seq in enumerate(toks.tolist()):
        for i in range(len(seq)):
            scores = [_brute_loglik(world, seq[:i] + [w] + seq[i + 1:]) for w in range(world.n_symbols)]
            np.testing.assert_allclose(got[n, i], _normalised(scores), atol=1e-5)


@FAST
@given(worlds_and_tokens())
def test_prepended_mask_probs_equal_enumeration_of_first_token(case):
    world, toks = case
    got = np.asarray(world.prepended_mask_probs(toks))  # (n, V)
    for n, seq in enumerate(toks.tolist()):
        scores = [_brute_loglik(world, [w] + seq) for w in range(world.n_symbols)]
        np.testing.assert_allclose(got[n], _normalised(scores), atol=1e-5)


def test_log_masked_laws_stay_finite_far_below_the_smallest_float32_probability():
    """The log-space masked and prepended laws, against float64 enumeration: a word 120 nats down has
    probability ~1e-52, 0 in float32, yet its log-probability is finite (what PerturbedLM perturbs)."""
    world = LogLinearWorld(np.ones((2, 1)), np.array([[0.0, -120.0, -3.0]]), np.array([[0, 1, 0], [1, 0, 1]]), 0)
    toks = np.array([[0, 2, 1], [1, 1, 0]])
    got_masked = np.asarray(world.log_masked_token_probs(toks), np.float64)  # (n, T, V)
    got_first = np.asarray(world.log_prepended_mask_probs(toks), np.float64)  # (n, V)
    for n, seq in enumerate(toks.tolist()):
        for i in range(len(seq)):
            scores = np.array([_brute_loglik(world, seq[:i] + [w] + seq[i + 1:]) for w in range(3)])
            np.testing.assert_allclose(got_masked[n, i], scores - np.logaddexp.reduce(scores), rtol=1e-6, atol=1e-4)
        scores = np.array([_brute_loglik(world, [w] + seq) for w in range(3)])
        np.testing.assert_allclose(got_first[n], scores - np.logaddexp.reduce(scores), rtol=1e-6, atol=1e-4)
    assert np.isfinite(got_masked).all() and np.isfinite(got_first).all()
    np.testing.assert_allclose(np.exp(got_masked), world.masked_token_probs(toks), atol=1e-7)
    lm = WorldLM(world)  # the exact LM hands on the same log laws, not log of underflowed probabilities
    np.testing.assert_array_equal(lm.masked_token_logprobs(toks), got_masked.astype(np.float32))
    np.testing.assert_array_equal(lm.prepended_mask_logprobs(toks), got_first.astype(np.float32))


def test_masked_law_of_a_long_sequence_equals_a_float64_backward_pass():
    """Documented: L_t is carried shifted to max_h L_t(h) = 0 so float32 keeps its precision however long the
    sequence.  On 20,000 tokens L_1 reaches ~ −35,000 nats, where a float32 ulp is ~0.004: unshifted messages
    put the law at position 0 off by ~5e-3; shifted it agrees with float64 to ~2e-6.  The reference carries
    L_t unshifted in float64 (exact to ~1e-11 at that size)."""
    world = LogLinearWorld.random(0, n_states=4, n_symbols=32, dim=4)
    T = 20000
    toks = np.asarray(world.sample(0, 1, T))[0]
    positions = [0, 1, T // 4, T // 2, T - 1]
    got = np.asarray(world.log_masked_token_probs(toks, positions=positions), np.float64)
    table, nxt = _log_table(world), np.asarray(world.next_state)
    path = np.empty(T, int)
    h = world.start_state
    for t, x in enumerate(toks):
        path[t], h = h, nxt[h, x]
    after, later = np.zeros(world.n_states), {}  # L_{t+1} over all states, unshifted
    for t in range(T - 1, -1, -1):
        later[t] = after
        after = table[:, toks[t]] + after[nxt[:, toks[t]]]
    assert after.max() < -1e4  # the regime where unshifted float32 messages lose precision
    for k, i in enumerate(positions):
        scores = table[path[i]] + later[i][nxt[path[i]]]
        np.testing.assert_allclose(got[k], scores - np.logaddexp.reduce(scores), rtol=0, atol=1e-4, err_msg=str(i))


# ---- 3. normalisation --------------------------------------------------------------------------------


@FAST
@given(loglinear_worlds(), st.integers(1, 5))
def test_probabilities_of_all_sequences_sum_to_one(world, T):
    T = min(T, int(np.log(1024) / np.log(max(world.n_symbols, 2))))  # at most 1024 sequences
    seqs = np.array(list(itertools.product(range(world.n_symbols), repeat=T)), dtype=np.int32)
    total = np.exp(np.asarray(world.log_likelihood(seqs), np.float64)).sum()
    assert abs(total - 1.0) < 1e-5


# ---- 4. sampling ---------------------------------------------------------------------------------------


def test_sampled_frequencies_match_exact_laws_of_first_two_tokens():
    world = LogLinearWorld.random(3, n_states=3, n_symbols=4, dim=2)
    N = 20000
    toks = np.asarray(world.sample(0, N, 2))
    P, nxt, s = np.asarray(world.state_probs(), np.float64), np.asarray(world.next_state), world.start_state
    p1 = P[s]
    p12 = p1[:, None] * P[nxt[s]]  # p(x1 = a, x2 = b) = p*(a | start) p*(b | next_state[start, a])
    f1 = np.bincount(toks[:, 0], minlength=4) / N
    f12 = np.bincount(toks[:, 0] * 4 + toks[:, 1], minlength=16).reshape(4, 4) / N
    # Binomial frequencies: |f̂ − p| < 4 standard errors sqrt(p(1−p)/N) + 1e-3 (float32 CDF slack).
    for f, p in ((f1, p1), (f12, p12)):
        assert np.all(np.abs(f - p) < 4 * np.sqrt(p * (1 - p) / N) + 1e-3)


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds():
    world = LogLinearWorld.random(0)
    a, b = np.asarray(world.sample(7, 64, 12)), np.asarray(world.sample(7, 64, 12))
    assert a.dtype == np.int32 and a.shape == (64, 12) and np.array_equal(a, b)
    assert np.array_equal(a, np.asarray(world.sample(jax.random.PRNGKey(7), 64, 12)))
    assert not np.array_equal(a, np.asarray(world.sample(8, 64, 12)))


def test_sampled_states_are_the_automaton_states_of_the_tokens():
    world = LogLinearWorld.random(1, n_states=5, n_symbols=6, dim=3)
    toks, states = world.sample(2, 16, 9, return_states=True)
    assert np.array_equal(np.asarray(states), np.asarray(world.states(toks)))
    assert np.all(np.asarray(states)[:, 0] == world.start_state)


# ---- 5. random constructors ------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["anchor", "unstructured"])
@pytest.mark.parametrize("representation", ["constant-norm", "layernorm", "free"])
def test_random_builds_a_valid_world(geometry, representation):
    # mean_norm ≫ radius/√d = 0.75 where s_h has a component along m: the carriers stay rare in every state
    mean = {"mean_norm": 1.0 if representation == "constant-norm" else 6.0}
    world = LogLinearWorld.random(0, 8, 32, 16, geometry=geometry, representation=representation, n_carriers=2,
                                  **mean)
    assert (world.n_states, world.n_symbols, world.dim) == (8, 32, 16)
    assert world.representations.shape == (8, 16) and world.word_embeddings.shape == (16, 32)
    np.testing.assert_allclose(np.asarray(world.state_probs()).sum(1), 1.0, atol=1e-5)
    nxt = np.asarray(world.next_state)
    assert nxt.shape == (8, 32) and nxt.min() >= 0 and nxt.max() < 8
    same = LogLinearWorld.random(0, 8, 32, 16, geometry=geometry, representation=representation, n_carriers=2,
                                 **mean)
    assert same.fingerprint() == world.fingerprint() != LogLinearWorld.random(1).fingerprint()


@pytest.mark.parametrize("representation", ["layernorm", "free"])
def test_carriers_that_would_not_be_rare_in_some_state_are_refused_naming_mean_norm(representation):
    """A carrier's logit sits carrier_gap·⟨m, z_h⟩/‖m‖² below its bulk draw; where s_h has a component along m
    and mean_norm ~ radius/√d (the defaults: 1 against 0.75) that was below zero in some states — a carrier the
    most likely word there (p = 0.97 in a reviewer's world), though documented rare in every context."""
    with pytest.raises(ConfigError, match=r"^mean_norm: with representation=.* the carriers are not rare there"):
        LogLinearWorld.random(1, 8, 32, 16, representation=representation, n_carriers=2)  # 17–18 of 20 seeds
    world = LogLinearWorld.random(1, 8, 32, 16, representation=representation, n_carriers=2, mean_norm=6.0)
    logp = np.log(np.asarray(world.state_probs(), np.float64))
    bulk = np.delete(logp, world.carrier_ids, axis=1)
    assert (logp[:, world.carrier_ids].max(1) < bulk.max(1) - 4.0).all()  # ≥ κ/2 = 4 nats below the top word


def test_constant_norm_representations_have_equal_norms():
    world = LogLinearWorld.random(0, representation="constant-norm", mean_norm=1.0, radius=3.0)
    norms = np.linalg.norm(np.asarray(world.representations, np.float64), axis=1)
    np.testing.assert_allclose(norms, np.sqrt(1.0 + 9.0), atol=1e-5)


def test_constant_norm_geometry_holds_at_a_mean_norm_other_than_one():
    """Documented: s_h = z_h − m ⊥ m and ‖z_h‖² = mean_norm² + radius² for every h.  At mean_norm = 1 the
    projection g − (g·m)m/‖m‖² reads the same with ‖m‖ for ‖m‖²; at mean_norm = 2 it does not (‖z_h‖² from
    9.9 to 17.4 instead of 13, ⟨s_h, m⟩ up to 2.2)."""
    world = LogLinearWorld.random(0, n_states=5, n_symbols=8, dim=6, mean_norm=2.0, radius=3.0)
    Z, m = np.asarray(world.representations, np.float64), np.asarray(world.mean_representation(), np.float64)
    np.testing.assert_allclose((Z**2).sum(1), 4.0 + 9.0, rtol=1e-6)
    np.testing.assert_allclose((Z - m) @ m, 0.0, atol=1e-5)


def test_layernorm_representations_are_standardised_before_gain():
    gain = np.linspace(0.5, 2.0, 16)
    world = LogLinearWorld.random(0, representation="layernorm", gain=gain)
    s = (np.asarray(world.representations, np.float64) - np.asarray(world.mean_representation())) / gain
    np.testing.assert_allclose(s.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(s.var(1), 1.0, atol=1e-4)


def test_layernorm_default_gain_gives_representations_of_norm_radius():
    """Documented: the default gain radius/√d makes ‖s_h‖ = radius — the standardised y_h has ‖·‖² = d exactly
    (a gain of radius/d gave ‖s_h‖ = 0.75 at radius 3, d = 16)."""
    for radius, dim in ((3.0, 16), (2.0, 9)):
        world = LogLinearWorld.random(0, dim=dim, representation="layernorm", radius=radius)
        s = np.asarray(world.representations, np.float64) - np.asarray(world.mean_representation(), np.float64)
        np.testing.assert_allclose(np.linalg.norm(s, axis=1), radius, rtol=1e-5)


def test_free_representation_norms_are_log_normal_with_the_documented_spread():
    """Documented: s_h = r_h u_h, ‖u_h‖ = 1, r_h = radius·exp(norm_spread·N(0, 1)), so log‖s_h‖ is normal with
    mean log radius and std norm_spread.  Over S = 2000 states the sample mean and std have standard errors
    0.5/√2000 ≈ 0.011 and 0.5/√4000 ≈ 0.008: allow 0.05 (a radius drawn per coordinate gave std 0.22)."""
    world = LogLinearWorld.random(0, n_states=2000, n_symbols=8, representation="free", radius=3.0, norm_spread=0.5)
    s = np.asarray(world.representations, np.float64) - np.asarray(world.mean_representation(), np.float64)
    log_norms = np.log(np.linalg.norm(s, axis=1))
    assert abs(log_norms.mean() - np.log(3.0)) < 0.05
    assert abs(log_norms.std() - 0.5) < 0.05
    # norm_spread = 0 (was refused as "not positive"): every context at the radius exactly
    flat = LogLinearWorld.random(0, n_states=50, n_symbols=8, representation="free", radius=3.0, norm_spread=0.0)
    s = np.asarray(flat.representations, np.float64) - np.asarray(flat.mean_representation(), np.float64)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 3.0, rtol=1e-6)


def test_carriers_are_rare_in_every_context_and_bulk_words_are_not():
    world = LogLinearWorld.random(0, n_carriers=4)  # carrier_gap = 8 nats
    P, V = np.asarray(world.state_probs()), world.n_symbols
    assert world.carrier_ids.tolist() == [28, 29, 30, 31]
    assert np.all(P[:, world.carrier_ids].max(0) < 1e-2 / V)
    assert np.all(np.delete(P, world.carrier_ids, axis=1).max(0) > 1e-1 / V)


def test_carrier_logits_sit_exactly_carrier_gap_below_their_bulk_draw_under_constant_norm():
    """Documented: v_c = (bulk draw) − κ m/‖m‖², so ⟨v_c, z_h⟩ is κ⟨m, z_h⟩/‖m‖² = κ below the bulk draw's
    logit for every h under "constant-norm" (⟨m, z_h⟩ = ‖m‖²).  The same seed without carriers draws the same
    embeddings (the carriers only shift theirs), so the gap is read off directly: 8 at mean_norm = 2, where a
    shift of κ m/‖m‖ gave 16."""
    kw = dict(n_states=5, n_symbols=8, dim=6, mean_norm=2.0, radius=3.0, carrier_gap=8.0)
    world, plain = LogLinearWorld.random(0, n_carriers=2, **kw), LogLinearWorld.random(0, n_carriers=0, **kw)
    c = world.carrier_ids
    Z = np.asarray(world.representations, np.float64)
    np.testing.assert_allclose(Z, np.asarray(plain.representations, np.float64))
    shift = np.asarray(plain.word_embeddings, np.float64)[:, c] - np.asarray(world.word_embeddings, np.float64)[:, c]
    np.testing.assert_allclose(Z @ shift, 8.0, rtol=1e-5)


def test_anchor_vector_is_the_mean_of_bulk_embeddings():
    world = LogLinearWorld.random(0, n_symbols=512, geometry="anchor", anchor_norm=2.0, sigma=1.5, n_carriers=2)
    v0 = np.asarray(world.anchor_vector(), np.float64)
    assert abs(np.linalg.norm(v0) - 2.0) < 1e-5
    bulk = np.delete(np.asarray(world.word_embeddings, np.float64), world.carrier_ids, axis=1)
    # the mean of N draws σ n_w, n_w ~ N(0, I/d), has norm ≈ σ/√N
    assert np.linalg.norm(bulk.mean(1) - v0) < 4 * 1.5 / np.sqrt(510)


def test_anchor_linearises_log_partition_when_norms_are_constant():
    def residual_ratio(representation):
        w = LogLinearWorld.random(0, 16, 512, 16, representation=representation)
        logits = np.asarray(w.emission_logits(), np.float64)
        top = logits.max(1)
        log_z = top + np.log(np.exp(logits - top[:, None]).sum(1))
        resid = log_z - np.asarray(w.representations, np.float64) @ np.asarray(w.anchor_vector(), np.float64)
        return resid.std() / log_z.std()

    assert residual_ratio("constant-norm") < 0.1 < 0.2 < residual_ratio("free")


def test_max_logit_is_the_tolerance_over_the_dot_products_rounding_bound():
    """Documented: a d-term dot product rounds by at most (d + 1)·u·Σ_k |z_hk||v*_kw|, u = 2⁻²⁴ in float32
    and 2⁻⁵³ in float64, so the largest Σ allowed is 1e-2 / ((d + 1)·u): 33554.432 at d = 4 in float32 (a
    bound of d·u allowed 41943.04)."""
    for d in (1, 4, 16):
        assert max_logit(d, np.float32) == pytest.approx(1e-2 / ((d + 1) * 2.0**-24), rel=1e-12)
        assert max_logit(d, np.float64) == pytest.approx(1e-2 / ((d + 1) * 2.0**-53), rel=1e-12)
    assert max_logit(4, np.float32) == pytest.approx(33554.432, rel=1e-12)


def test_worlds_are_refused_exactly_above_the_logit_limit():
    """Documented: parameters with Σ_k |z_hk||v*_kw| above max_logit(d) are refused; at or below it they are
    accepted.  Constant Z = s, V* = s' at d = 4 give the bound 4ss': 0.1% below the limit builds, 0.1% above
    raises ConfigError naming the arrays (a limit read as twice max_logit accepted 1.5× it)."""
    limit, nxt = max_logit(4), np.array([[0, 1, 0], [1, 0, 1]])
    for factor in (0.999, 1.001, 1.5):
        s = np.sqrt(factor * limit / 4)
        if factor < 1:
            world = LogLinearWorld(np.full((2, 4), s), np.full((4, 3), s), nxt)
            assert world.dim == 4
        else:
            with pytest.raises(ConfigError, match="representations, word_embeddings"):
                LogLinearWorld(np.full((2, 4), s), np.full((4, 3), s), nxt)


# ---- pytree and single sequences --------------------------------------------------------------------


def test_world_is_a_pytree_that_round_trips_and_passes_through_jit():
    world = LogLinearWorld.random(0, n_carriers=1)
    leaves, treedef = jax.tree_util.tree_flatten(world)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert again.fingerprint() == world.fingerprint() and again.carrier_ids.tolist() == [31]
    probs = jax.jit(lambda w: w.state_probs())(world)
    np.testing.assert_allclose(np.asarray(probs), np.asarray(world.state_probs()), atol=1e-6)


def test_single_sequence_is_answered_without_batch_axis():
    world = LogLinearWorld.random(0, 4, 5, 3)
    seq = np.array([0, 4, 2])
    assert world.log_likelihood(seq).shape == ()
    assert world.masked_token_probs(seq, positions=[1]).shape == (1, 5)
    assert world.prepended_mask_probs(seq).shape == (5,)
    assert world.true_representation(seq).shape == (3, 3) and world.states(seq).shape == (3,)


# ---- 6. typed errors naming the argument -----------------------------------------------------------

Z, W, NXT = np.zeros((2, 3)), np.zeros((3, 4)), np.zeros((2, 4), dtype=int)
ANCHORLESS = LogLinearWorld(Z, W, NXT)

BAD_INPUTS = {
    "non-finite representations": (lambda: LogLinearWorld(np.full((2, 3), np.nan), W, NXT), ConfigError, "representations"),
    "Z and V* disagree on d": (lambda: LogLinearWorld(Z, np.zeros((2, 4)), NXT), ShapeError, "word_embeddings"),
    "next_state wrong shape": (lambda: LogLinearWorld(Z, W, np.zeros((2, 3), int)), ShapeError, "next_state"),
    "next_state out of range": (lambda: LogLinearWorld(Z, W, NXT + 2), ConfigError, "next_state"),
    "next_state not integer": (lambda: LogLinearWorld(Z, W, NXT + 0.5), ConfigError, "next_state"),
    "start out of range": (lambda: LogLinearWorld(Z, W, NXT, 2), ConfigError, "start_state"),
    "anchor wrong shape": (lambda: LogLinearWorld(Z, W, NXT, anchor=np.zeros(2)), ShapeError, "anchor"),
    "token out of range": (lambda: ANCHORLESS.log_likelihood([[0, 4]]), TokenError, "tokens"),
    "empty sequences": (lambda: ANCHORLESS.next_token_probs(np.zeros((2, 0), int)), TokenError, "tokens"),
    "fractional float tokens": (lambda: ANCHORLESS.masked_token_probs([0.5, 1.0]), TokenError, "tokens"),
    "negative seed": (lambda: ANCHORLESS.sample(-1, 2, 3), ConfigError, "key"),
    "bool seed": (lambda: ANCHORLESS.sample(True, 2, 3), ConfigError, "key"),
    "bool seed for random": (lambda: LogLinearWorld.random(False), ConfigError, "seed"),
    "negative seed for random": (lambda: LogLinearWorld.random(-3), ConfigError, "seed"),
    "zero sequences": (lambda: ANCHORLESS.sample(0, 0, 3), ConfigError, "n_sequences"),
    "zero length": (lambda: ANCHORLESS.sample(0, 2, 0), ConfigError, "length"),
    "zero states": (lambda: LogLinearWorld.random(0, n_states=0), ConfigError, "n_states"),
    "float vocabulary size": (lambda: LogLinearWorld.random(0, n_symbols=3.0), ConfigError, "n_symbols"),
    "unknown geometry": (lambda: LogLinearWorld.random(0, geometry="cone"), ConfigError, "geometry"),
    "unknown representation": (lambda: LogLinearWorld.random(0, representation="rms"), ConfigError, "representation"),
    "negative radius": (lambda: LogLinearWorld.random(0, radius=-1.0), ConfigError, "radius"),
    "carriers without a mean": (lambda: LogLinearWorld.random(0, n_carriers=2, mean_norm=0.0), ConfigError, "mean_norm"),
    "no bulk words": (lambda: LogLinearWorld.random(0, n_symbols=4, n_carriers=4), ConfigError, "n_carriers"),
    "gain without layernorm": (lambda: LogLinearWorld.random(0, gain=1.0), ConfigError, "gain"),
    "anchor of an anchorless world": (lambda: ANCHORLESS.anchor_vector(), ConfigError, "anchor"),
    "anchor of an unstructured world": (lambda: LogLinearWorld.random(0, geometry="unstructured").anchor_vector(),
                                        ConfigError, "anchor"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_raises_typed_error_naming_the_argument(case):
    thunk, error, name = BAD_INPUTS[case]
    with pytest.raises(error, match=name):
        thunk()


def test_sample_checks_its_sizes_before_making_a_key(monkeypatch):
    """Making a key from a seed compiles: a bad size is refused before it (errors.py: before anything compiles)."""
    import simlm.worlds.loglinear as module

    def no_key(key):
        raise AssertionError("a key was made before the sizes were checked")

    monkeypatch.setattr(module, "as_key", no_key)
    world = LogLinearWorld.random(0, 2, 3, 2)
    for n, T in ((0, 1), (1, 0)):
        with pytest.raises(ConfigError, match="n_sequences" if n == 0 else "length"):
            world.sample(0, n, T)


def test_a_carrier_embedding_that_overflows_says_to_raise_mean_norm():
    with pytest.raises(ConfigError, match="raise mean_norm"):
        LogLinearWorld.random(0, 2, 3, 2, mean_norm=1e-100, n_carriers=1)


def test_a_world_with_an_anchor_and_one_with_that_vector_as_its_mean_have_fingerprints_of_their_own():
    """Their laws are the same, but one has an anchor vector and the other refuses to give one; both vectors,
    or neither, keep the fingerprint they always had."""
    w = LogLinearWorld.random(0, 2, 3, 2)
    Z, W, N = (np.asarray(a) for a in w.parameter_arrays()[:3])
    v = np.array([1.0, 2.0])
    anchored, meaned = LogLinearWorld(Z, W, N, anchor=v), LogLinearWorld(Z, W, N, mean=v)
    assert anchored.fingerprint() != meaned.fingerprint()
    assert LogLinearWorld(Z, W, N, anchor=v, mean=v).fingerprint() not in (anchored.fingerprint(), meaned.fingerprint())
    assert len(LogLinearWorld(Z, W, N).parameter_arrays()) == 5 and len(w.parameter_arrays()) == 7


@pytest.mark.parametrize("representation, refused, built", [("layernorm", 2.0, 2.1), ("free", 1.7, 1.8)])
def test_the_carrier_refusal_cut_sits_at_half_the_gap(representation, refused, built):
    """Documented: a draw whose carrier sits under κ/2 below its bulk draw in some state is refused.  Seed 1's
    smallest share ⟨m, z_h⟩/‖m‖² straddles 0.5 between these two mean_norms (0.488 | 0.513 under "layernorm",
    0.475 | 0.504 under "free"); the refusal test above only reaches shares ≤ 0.11 and ≈ 1, where any cut in
    [0.11, 0.9) passed."""
    kw = dict(representation=representation, n_carriers=2)
    with pytest.raises(ConfigError, match=r"0\.4\d\d·carrier_gap .*under half the gap"):
        LogLinearWorld.random(1, 8, 32, 16, mean_norm=refused, **kw)
    world = LogLinearWorld.random(1, 8, 32, 16, mean_norm=built, **kw)
    Z, m = np.asarray(world.representations, np.float64), np.asarray(world.mean_representation(), np.float64)
    share = Z @ m / (m @ m)
    assert 0.5 <= share.min() < 0.52


def test_backward_messages_are_the_suffix_loglikelihoods_shifted_to_max_zero():
    """Documented (public): L̃_t = L_t − max_h L_t(h), L_t(h) = log p(x_{t:T} | h_t = h).  The automaton is
    deterministic, so L_t(h) is the log-emissions summed along the one path from h — no recursion.  The masked
    laws cancel any shift, so a message shifted to min 0 (or not at all) passed every law test."""
    from simlm.worlds.loglinear import backward_messages, emission_logprobs
    world = LogLinearWorld.random(3, 5, 7, 4)
    tokens = np.asarray(world.sample(0, 1, 9))[0]
    logB = np.asarray(emission_logprobs(world.representations, world.word_embeddings), np.float64)
    nxt = np.asarray(world.next_state)
    T, S = len(tokens), world.n_states

    def suffix(t, h):
        total = 0.0
        for x in tokens[t:]:
            total, h = total + logB[h, x], nxt[h, x]
        return total

    L = np.array([[suffix(t, h) for h in range(S)] for t in range(T + 1)])  # (T + 1, S)
    want = L - L.max(1, keepdims=True)
    first, after = backward_messages(jax.numpy.asarray(logB, jax.numpy.float32), world.next_state,
                                     jax.numpy.asarray(tokens))
    np.testing.assert_allclose(np.asarray(first), want[0], atol=1e-4)
    np.testing.assert_allclose(np.asarray(after), want[1:], atol=1e-4)


def test_the_repr_names_the_sizes_and_the_fingerprint_as_the_hmms_does():
    world = LogLinearWorld.random(0, 3, 4, 2)
    assert repr(world) == f"LogLinearWorld(n_states=3, n_symbols=4, dim=2, fingerprint={world.fingerprint()})"
    assert repr(LogLinearWorld.random(1, 3, 4, 2)) != repr(world)
