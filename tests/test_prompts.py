"""Prompt tuning: the prompted posterior equals enumeration over every hidden path of the prompted sequence,
a one-token prompt reweights P(H_0 | x) by r(u) (the paper's identity), prompt tuning recovers a task that
head tuning cannot on a world built for it, and transformer prompt tuning leaves the model frozen."""

import itertools

import jax
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import bruteforce as bf
import simlm.downstream.prompts as prompts_module
from simlm.downstream import PosteriorTask, fit_linear_head, sample_task_data, task_features
from simlm.downstream.prompt_fit import check_masked_transformer_tokens
from simlm.downstream.prompts import fit_exact_prompt, fit_transformer_prompt
from simlm.errors import ConfigError, ShapeError, TokenError, TrainingDivergedError, ZeroProbabilityError
from simlm.models import TransformerConfig, TransformerLM, WorldLM, init_transformer
from simlm.strategies import hmms, token_sequences
from simlm.worlds import HMM, MemoryHMM

few = settings(max_examples=max(1, settings.default.max_examples // 3))


def enumerated_prompted_posterior(pi, A, B, U, x):
    """P(H_0 | z_1:k, x_1:T) by summing over every path (h_{-k+1}, …, h_0, h_1, …, h_T): the chain starts at
    the first prompt position with π, prompt position j contributes u_j(h), the masked x_0 contributes 1."""
    k, K = U.shape
    post = np.zeros(K)
    for path in itertools.product(range(K), repeat=k + 1 + len(x)):
        p = pi[path[0]]
        for i in range(1, len(path)):
            p *= A[path[i - 1], path[i]]
        for j in range(k):
            p *= U[j, path[j]]
        for t, token in enumerate(x):
            p *= B[path[k + 1 + t], token]
        post[path[k]] += p
    return post, post.sum()


def prompts(K):
    entry = st.one_of(st.just(0.0), st.floats(0.05, 2.0))
    return st.integers(1, 2).flatmap(
        lambda k: st.lists(st.lists(entry, min_size=K, max_size=K), min_size=k, max_size=k)).map(np.array)


@few
@given(data=st.data())
def test_prompted_posterior_equals_enumeration_over_hidden_paths(data):
    w = data.draw(hmms(max_states=3, max_symbols=3))
    x = data.draw(token_sequences(w, max_length=3, n_sequences=1, possible=False))
    U = data.draw(prompts(w.n_states))
    assume(np.all(U.sum(1) > 0))
    pi, A, B = bf.params(w)
    post, total = enumerated_prompted_posterior(pi, A, B, U, list(x[0]))
    if enumerated_prompted_posterior(pi, A, B, U, [])[1] == 0:  # P(z) = 0: the prompt is refused, naming it
        with pytest.raises(ConfigError, match="^prompt U: the prompt has probability zero"):
            w.prompted_state_posterior(x, U)
        return
    if total == 0:  # impossible after the prompt (possible or not without it): a typed error, never NaN
        with pytest.raises(ZeroProbabilityError, match="^tokens: sequence 0"):
            w.prompted_state_posterior(x, U)
        return
    assume(total > 1e-12)  # whatever x's probability without the prompt (a prompt can make x possible)
    np.testing.assert_allclose(w.prompted_state_posterior(x, U)[0], post / total, rtol=1e-4, atol=1e-5)


@few
@given(data=st.data())
def test_one_prompt_token_reweights_the_posterior_by_r(data):
    """P(H_0 | z, x) ∝ P(H_0 | x) ∘ r(u), r(u) = Aᵀ(π ∘ u) ⊘ π (π > 0)."""
    w = data.draw(hmms(max_states=3, max_symbols=3, allow_zeros=False))
    x = data.draw(token_sequences(w, max_length=3, n_sequences=2, possible=False))
    u = data.draw(prompts(w.n_states).filter(lambda U: U.shape[0] == 1 and U.sum() > 0))[0]
    unprompted = np.asarray(w.prepended_state_posterior(x), np.float64)
    reweighted = unprompted * w.prompt_reweighting(u)
    np.testing.assert_allclose(w.prompted_state_posterior(x, u),
                               reweighted / reweighted.sum(1, keepdims=True), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scale", [1e39, 1e-46, 3.0])
def test_a_prompt_row_is_a_likelihood_up_to_a_constant_even_outside_the_float32_range(scale):
    """Rows scaled by any constant give the same laws — 1e39 overflowed and 1e-46 flushed to 0 in float32."""
    w = HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.1, 0.9]])
    U, x = np.array([[2.0, 1.0], [0.5, 1.0]]), np.array([[0, 1, 1]])
    for fn in (lambda u: w.prompt_reweighting(u), lambda u: w.prompted_state_posterior(x, u),
               lambda u: w.prompted_masked_token_probs(x, u)):
        np.testing.assert_allclose(fn(U * scale), fn(U), rtol=1e-6)


def test_a_prompt_entry_below_float32_relative_to_its_row_is_refused_not_flushed_to_zero():
    w = HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.1, 0.9]])
    with pytest.raises(ConfigError, match=r"U: entry \(0, 0\)"):
        w.prompt_reweighting(np.array([1e-50, 1.0]))


# ---- prompt tuning beats head tuning where the emission rank is short ----------------------------

@pytest.fixture(scope="module")
def rank_deficient_world():
    """K = 4, V = 3: state 3 emits like state 0 (rank B = 3), states 1 and 2 move like the average of 0 and 3,
    so with π uniform P(H_0 | x) = (p, ¼, ¼, ½ − p) and the masked law P B = (½ b_0 + ¼ b_1 + ¼ b_2) is the
    same for every x: a head on it can only guess the majority.  The label 1[P_0 ≥ 0.34] = 1[μᵀP ≥ 0] with
    μ = (1, −1.36, 0, 0) is in a gap of the posterior's values.  A[0, 3] = 0, so a prompt on state 0
    (u = e_0, r(u) ∝ A[0] = (0.2, 0.6, 0.2, 0)) removes state 3 and the prompted law reveals p."""
    A = np.array([[0.2, 0.6, 0.2, 0.0], [0.2, 0.3, 0.2, 0.3], [0.2, 0.3, 0.2, 0.3], [0.2, 0.0, 0.2, 0.6]])
    B = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    return HMM(np.full(4, 0.25), A, B), PosteriorTask(mu=[1.0, -1.36, 0.0, 0.0])


def test_prompt_tuning_recovers_a_task_head_tuning_cannot(rank_deficient_world):
    """Measured (seeds 1, 2; n = 256, T = 6): head 0.69 train / 0.69 held-out (majority ≈ 0.68); prompt
    (k = 1, 4 restarts, 300 Adam steps) 1.0 / 1.0; constructive u = e_0 (softplus floor 1e-4) 1.0 / 1.0."""
    world, task = rank_deficient_world
    (x, y), (xt, yt) = sample_task_data(world, task, 1, 256, 6), sample_task_data(world, task, 2, 256, 6)
    majority = max(yt.mean(), 1 - yt.mean())
    lm = WorldLM(world)
    head = fit_linear_head(task_features(lm, x, task), y)
    assert head.accuracy(task_features(lm, xt, task), yt) <= majority + 0.05
    constructive = np.array([1.0, 1e-4, 1e-4, 1e-4])
    np.testing.assert_allclose(world.prompt_reweighting([1.0, 0, 0, 0]), [1 / 3, 1.0, 1 / 3, 0.0], atol=1e-6)
    fixed = fit_linear_head(world.prompted_prepended_mask_probs(x, constructive), y)
    assert fixed.accuracy(world.prompted_prepended_mask_probs(xt, constructive), yt) >= 0.99
    tuned = fit_exact_prompt(world, x, y, k=1, steps=300, test=(xt, yt))
    assert tuned.train_accuracy >= 0.99 and tuned.test_accuracy >= 0.98
    assert tuned.U.shape == (1, 4) and np.all(tuned.U > 0)
    assert tuned.losses[-1] < tuned.losses[0]


# ---- transformer prompt tuning ------------------------------------------------------------------

@pytest.fixture(scope="module")
def masked_transformer():
    cfg = TransformerConfig(n_symbols=8, d_model=16, n_layers=1, n_heads=2, max_len=8, causal=False)
    return TransformerLM(init_transformer(cfg, 0))


def test_transformer_prompt_trains_the_prompt_and_leaves_the_model_frozen(masked_transformer):
    lm = masked_transformer
    world = HMM.random(0, 4, 8, family="permutation-mixture", transition_temp=0.3, emission_temp=0.3)
    x = np.random.default_rng(0).integers(0, 8, (64, 6)).astype(np.int32)  # every sequence is possible here
    y = PosteriorTask(mu=[1.0, -1.0, 0.0, 0.0]).labels(world, x)
    before = [np.array(a) for a in jax.tree.leaves(lm.state)]
    result = fit_transformer_prompt(lm, x, y, k=2, steps=40, lr=0.05, test=(x, y))
    after = [np.array(a) for a in jax.tree.leaves(lm.state)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert result.prefix.shape == (2, 16) and result.losses.shape == (40,)
    assert result.losses[-1] < result.losses[0] - 0.02
    assert result.test_accuracy == result.train_accuracy and 0 <= result.train_accuracy <= 1
    probs = np.asarray(result.features(lm, x))
    assert probs.shape == (64, 8) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_transformer_prompt_minibatches_of_every_sequence_start_as_the_full_batch_fit(masked_transformer):
    """``batch_size`` ≥ n reads every sequence each step (in a permuted order): the full-batch fit's loss at
    the start (the minibatch fit then keeps the start's standardisation, the full batch recomputes it); a
    smaller batch still trains the prompt (40 steps of 16 of the 64 sequences)."""
    world = HMM.random(0, 4, 8, family="permutation-mixture", transition_temp=0.3, emission_temp=0.3)
    x = np.random.default_rng(0).integers(0, 8, (64, 6)).astype(np.int32)
    y = PosteriorTask(mu=[1.0, -1.0, 0.0, 0.0]).labels(world, x)
    full = fit_transformer_prompt(masked_transformer, x, y, k=2, steps=40, lr=0.05)
    every = fit_transformer_prompt(masked_transformer, x, y, k=2, steps=40, lr=0.05, batch_size=100)
    assert every.losses[0] == pytest.approx(full.losses[0], rel=1e-5)
    np.testing.assert_allclose(every.losses, full.losses, rtol=0.05)  # a standardisation apart
    small = fit_transformer_prompt(masked_transformer, x, y, k=2, steps=40, lr=0.05, batch_size=16)
    assert small.losses.shape == (40,) and np.mean(small.losses[-10:]) < np.mean(small.losses[:10]) - 0.02
    with pytest.raises(ConfigError, match="batch_size"):
        fit_transformer_prompt(masked_transformer, x, y, batch_size=0)


@pytest.mark.parametrize("batch_size", [2, 4, 64])
def test_a_minibatch_fit_returns_the_standardisation_its_head_was_trained_with(batch_size):
    """Features that do not move with the prompt: a minibatch fit is a plain head fit, and its head, applied
    with the returned statistics, separates the (separable) training set.  Each batch standardised by its own
    statistics while the head was then applied with the full set's: 0.84 (b = 2) and ~0.97 (b = 4–64)."""
    import jax.numpy as jnp
    from simlm.downstream.heads import LinearLogits, standardise
    from simlm.downstream.prompt_fit import fit_prompt, minibatch_indices

    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.dirichlet(np.ones(4), size=256).astype(np.float32))
    y = jnp.asarray((np.asarray(X) @ [1.0, -1.0, 0.5, 0.0] > 0.1).astype(np.int32))
    head = LinearLogits(0.1)
    start = {"prompt": jnp.zeros(1), "head": head.init(jax.random.PRNGKey(2), 4, 2)}
    batches = minibatch_indices(jax.random.PRNGKey(1), 256, batch_size, 300)
    p, _, _, (mean, scale) = jax.jit(lambda s, b: fit_prompt(lambda th, idx: X[idx] + 0 * th.sum(), head, y, s,
                                                             l2=1e-4, lr=0.05, steps=300, batches=b))(start, batches)
    np.testing.assert_allclose(mean, standardise(X)[1], rtol=1e-6)  # every sequence, at the starting prompt
    z = (X - mean) / scale
    assert float(jnp.mean(jnp.argmax(head.logits(p["head"], z), -1) == y)) >= 0.98


def test_a_prompt_fit_that_ends_at_a_non_finite_loss_is_refused_naming_lr():
    """Its prompt or head is NaN; scoring it would have blamed the features (a ConfigError on NaN logits)."""
    from simlm.downstream.prompt_fit import check_finite_fit
    from simlm.errors import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="^lr: the exact prompt fit ended at a non-finite loss"):
        check_finite_fit(np.array([np.nan, np.inf]), "the exact prompt fit")
    check_finite_fit(np.array([np.nan, 0.3]), "the best restart is finite")


# ---- typed errors -------------------------------------------------------------------------------

def test_bad_inputs_raise_typed_errors_naming_the_argument(rank_deficient_world, masked_transformer):
    world, _ = rank_deficient_world
    x, y = np.zeros((4, 3), np.int32), np.zeros(4, np.int32)
    with pytest.raises(ConfigError, match="k"):
        fit_exact_prompt(world, x, y, k=0)
    with pytest.raises(ConfigError, match="n_classes"):
        fit_exact_prompt(world, x, y, n_classes=1)
    with pytest.raises(ShapeError, match="labels"):
        fit_exact_prompt(world, x, y[:3])
    with pytest.raises(ConfigError, match="world"):
        fit_exact_prompt(MemoryHMM.random(0, 1, 2, 2, 3), x, y)
    with pytest.raises(ConfigError, match="U"):
        world.prompted_state_posterior(x, -np.ones((1, 4)))
    with pytest.raises(ShapeError, match="U"):
        world.prompted_state_posterior(x, np.ones((1, 3)))
    causal = TransformerLM(init_transformer(TransformerConfig(n_symbols=8, d_model=16, n_heads=2, n_layers=1,
                                                              max_len=8), 0))  # masked_transformer's sizes
    with pytest.raises(ConfigError, match="lm"):
        fit_transformer_prompt(causal, x, y)
    with pytest.raises(ConfigError, match="k"):
        fit_transformer_prompt(masked_transformer, np.zeros((4, 3), np.int32) + 7, y, k=0)
    with pytest.raises(ConfigError, match="lm"):
        fit_transformer_prompt(WorldLM(world), x, y)


def test_seeds_beyond_2_32_start_their_own_prompts(masked_transformer):
    """jax.random.PRNGKey keeps a seed's low 32 bits without x64: seeds 0 and 2**32 drew one prefix.  The fit
    of the frozen-model test above (64 × 6 tokens, k = 2, 40 steps), whose program is compiled already."""
    lm = masked_transformer
    x = np.random.default_rng(0).integers(0, 8, (64, 6)).astype(np.int32)
    y = np.arange(64) % 2
    fit = lambda seed: fit_transformer_prompt(lm, x, y, k=2, steps=40, lr=0.05, seed=seed).prefix
    assert not np.array_equal(fit(0), fit(2**32))
    assert np.array_equal(fit(7), fit(7))
    with pytest.raises(ConfigError, match="^seed"):
        fit(2**63)


# ---- the transformer fit: positions, divergence, minibatches, initial scales ----------------------

@pytest.fixture(scope="module")
def tiny():
    """A 2-state HMM's 16 sequences of length 4, alternating labels, and a masked LM of max_len 6 (7 positions)."""
    w = HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.1, 0.9]])
    cfg = TransformerConfig(n_symbols=2, d_model=8, n_layers=1, n_heads=2, max_len=6, causal=False)
    return TransformerLM(init_transformer(cfg, 0)), np.asarray(w.sample(0, 16, 4)), np.arange(16) % 2


def test_a_prefix_mask_and_input_filling_every_position_are_taken(tiny):
    """k + MASK + T = n_positions (1 + 1 + 5 = 7) fits the model; one token more does not."""
    lm, _, _ = tiny
    assert lm.config.n_positions == 7
    assert check_masked_transformer_tokens(lm, np.zeros((2, 5), np.int32), 1).shape == (2, 5)
    with pytest.raises(TokenError, match="^tokens: prefix k = 1 \\+ MASK \\+ 6 tokens exceeds the model's 7"):
        check_masked_transformer_tokens(lm, np.zeros((2, 6), np.int32), 1)


def test_a_transformer_prompt_fit_that_overshoots_is_refused_naming_lr(tiny):
    """lr 30: the training loss goes from 0.68 at the start to 2.95 at the returned parameters, above the
    start by more than max(1 nat, the start).  Its last step's loss (before the last update) is itself far
    above the start; checked against that instead, the fit came back as a success."""
    lm, x, y = tiny
    with pytest.raises(TrainingDivergedError, match="^lr: the transformer prompt fit diverged: it ended at training"):
        fit_transformer_prompt(lm, x, y, steps=20, lr=30)


def test_a_minibatch_transformer_fits_head_carries_the_starting_prompts_statistics(tiny, monkeypatch):
    """A minibatch fit standardises by the statistics of every training sequence at the starting prompt and
    returns the head with them (prompt_fit's docstring).  The starting prompt is the seed's: a full-batch fit
    at lr 1e-9 returns it to ~2e-8 (each Adam step moves an entry by about lr).  The prompt moves in 20
    steps at lr 0.5, so the final prompt's statistics differ (by 6e-5 here; the head carried those).  Its
    divergence check compares with the objective on every training sequence at the start — the full-batch
    fit's first loss — not with its first minibatch's loss (4 of the 16 sequences)."""
    lm, x, y = tiny
    starts, check = [], prompts_module.check_prompt_fit
    monkeypatch.setattr(prompts_module, "check_prompt_fit",
                        lambda start_loss, *args: (starts.append(float(start_loss)), check(start_loss, *args))[1])
    fit = fit_transformer_prompt(lm, x, y, steps=20, lr=0.5, batch_size=4)
    start = fit_transformer_prompt(lm, x, y, steps=20, lr=1e-9)
    assert starts[0] == pytest.approx(start.losses[0], rel=1e-5) and starts[0] != pytest.approx(fit.losses[0])
    F0 = np.asarray(start.features(lm, x), np.float64)
    np.testing.assert_allclose(fit.head.mean, F0.mean(0), atol=1e-6)
    np.testing.assert_allclose(fit.head.scale, F0.std(0), rtol=1e-4)
    moved = np.asarray(fit.features(lm, x), np.float64).mean(0)
    assert np.abs(moved - F0.mean(0)).max() > 2e-5


def test_a_full_batch_transformer_fits_head_carries_the_returned_prompts_statistics(tiny):
    """A full-batch fit recomputes the standardisation every step and returns the head with the statistics of
    the features at the returned prefix (prompt_fit's docstring): the float64 mean and std of
    ``fit.features``, to float32 rounding (2e-8 here).  At lr 0.5 the prefix moves the mean by 1.3e-3 from
    the starting prefix's (a fit at lr 1e-9 returns its start), so a head carrying the start's statistics
    fails.  The fit of the tests above (tiny, 20 full-batch steps), whose program is compiled already."""
    lm, x, y = tiny
    fit = fit_transformer_prompt(lm, x, y, steps=20, lr=0.5)
    F = np.asarray(fit.features(lm, x), np.float64)
    np.testing.assert_allclose(fit.head.mean, F.mean(0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit.head.scale, F.std(0), rtol=1e-4)
    F0 = np.asarray(fit_transformer_prompt(lm, x, y, steps=20, lr=1e-9).features(lm, x), np.float64)
    assert np.abs(F.mean(0) - F0.mean(0)).max() > 1e-4  # the starting prefix's statistics are far from these


class _Drawn(Exception):
    """Stops a fit once it has drawn its minibatches."""


def test_transformer_prompt_fit_draws_minibatches_of_batch_size(tiny, monkeypatch):
    """Each step reads ``batch_size`` of the n sequences, or every sequence when there are fewer."""
    lm, x, y = tiny
    drawn = []

    def recording(key, n, batch_size, steps):
        drawn.append((n, batch_size, steps))
        raise _Drawn

    monkeypatch.setattr(prompts_module, "minibatch_indices", recording)
    for batch_size, n in [(4, 16), (8, 12), (64, 16)]:
        with pytest.raises(_Drawn):
            fit_transformer_prompt(lm, x[:n], y[:n], steps=5, batch_size=batch_size)
        assert drawn[-1] == (n, min(batch_size, n), 5)


def test_a_transformer_prompt_starts_at_its_documented_scales(masked_transformer):
    """prefix ~ N(0, 0.02²) (7 × 16 entries) and head W ~ N(0, 0.1²) (8 × 32 entries): a 1-step fit at
    lr 1e-9 returns its start to ~1e-9.  Sample std within 25% of 0.02 (3.7 of its standard errors, ~6.7%)
    and 20% of 0.1 (4.5 of ~4.4%); the means within 5 standard errors of 0."""
    x = np.zeros((8, 1), np.int32)
    result = fit_transformer_prompt(masked_transformer, x, np.arange(8) % 2, k=7, n_classes=32, steps=1, lr=1e-9)
    prefix, W = result.prefix.astype(np.float64), result.head.weight.astype(np.float64)
    assert prefix.shape == (7, 16) and W.shape == (8, 32)
    assert prefix.std() == pytest.approx(0.02, rel=0.25) and abs(prefix.mean()) < 5 * 0.02 / np.sqrt(112)
    assert W.std() == pytest.approx(0.1, rel=0.2) and abs(W.mean()) < 5 * 0.1 / np.sqrt(256)
