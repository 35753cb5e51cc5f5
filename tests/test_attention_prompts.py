"""Prompt tuning with an attention head (memory tasks): the prompted masked laws equal enumeration over every
joint path of the prompted sequence, a prompt that vanishes off one slot value conditions the world on it,
the exact prompt and head recover a memory task, and the transformer form leaves the model frozen."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from simlm.downstream import attention_prompts, make_memory_task, sample_task_data
from simlm.downstream.attention_prompts import (_laws_at_every_position, _prefixed_laws, fit_exact_attention_prompt,
                                                fit_transformer_attention_prompt)
from simlm.errors import ConfigError, ShapeError, TokenError, ZeroProbabilityError
from simlm.models import TransformerConfig, TransformerLM, init_transformer
from simlm.strategies import hmms, memory_hmms
from simlm.worlds import HMM, MemoryHMM

few = settings(max_examples=max(1, settings.default.max_examples // 3))


def enumerated_prompted_masked_laws(pi, A, B, U, x):
    """(T, V): P(x_t = · | z_1:k, x_−t) summing over every path (s_1..s_k, h_1..h_T) of the joint chain: the
    chain starts at the first prompt position with π, prompt position j contributes U[j, s_j]; and (T,)
    whether each law is defined, P(x_−t | z) > 0 (x itself may be impossible: x_t is never read at t)."""
    k, K = U.shape
    T, V = len(x), B.shape[1]
    laws = np.zeros((T, V))
    for path in itertools.product(range(K), repeat=k + T):
        p = pi[path[0]] * np.prod([A[path[i - 1], path[i]] for i in range(1, len(path))])
        p *= np.prod([U[j, path[j]] for j in range(k)])
        emit = [B[path[k + t], x[t]] for t in range(T)]
        for t in range(T):
            laws[t] += p * np.prod(emit[:t] + emit[t + 1:]) * B[path[k + t]]
    totals = laws.sum(1, keepdims=True)  # an undefined law is a row of zeros, left as it is
    return laws / np.where(totals > 0, totals, 1.0), totals[:, 0] > 0


def _dense(world):
    """(π, A, B) of the joint chain as dense float64 arrays (a MemoryHMM through its joint HMM)."""
    chain = world.joint_hmm() if isinstance(world, MemoryHMM) else world
    return tuple(np.asarray(a, np.float64) for a in (chain.initial, chain.transition, chain.emission))


@few
@given(data=st.data(), memory=st.booleans(), k=st.integers(1, 2))
def test_prompted_masked_laws_equal_enumeration(data, memory, k):
    world = data.draw(memory_hmms(max_cells=1, max_values=2, max_syntactic=2, max_symbols=3) if memory
                      else hmms(max_states=3, max_symbols=3))
    pi, A, B = _dense(world)
    T = data.draw(st.integers(1, 3))
    x = np.asarray(data.draw(st.lists(st.integers(0, B.shape[1] - 1), min_size=T, max_size=T)), np.int32)
    U = np.asarray(data.draw(st.lists(st.floats(0.05, 2.0), min_size=k * len(pi), max_size=k * len(pi)))).reshape(k, -1)
    want, defined = enumerated_prompted_masked_laws(pi, A, B, U, x)
    if not defined.all():  # the prompted world cannot produce x_−t at some t: a typed error, never NaN laws
        with pytest.raises(ZeroProbabilityError, match="tokens: sequence 0 has probability zero"):
            world.prompted_masked_token_probs(x[None], U)
        return
    got = np.asarray(world.prompted_masked_token_probs(x[None], U), np.float64)[0]
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("parallel", [None, "checked", "log-space", True])
def test_every_way_of_computing_the_prompted_masked_laws_is_the_enumeration(parallel):
    """The sequential, checked, log-space and parallel scans of prompting.prompted_masked_token_probs (a batch
    reruns in log space when its checked scan sees a share leave the float range) against the enumeration,
    in float64: k = 2 distinct prompt rows, so the prompt's law differs from π (a log-space branch that started
    from π, not the prompt's law, read laws 7.4e-2 off and survived every test: mutation review 2026-12-07)."""
    from simlm.worlds import hmm_core as core
    from simlm.worlds.prompting import prompted_masked_token_probs

    rng = np.random.default_rng(2)
    pi, A, B = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3), size=3), rng.dirichlet(np.ones(2), size=3)
    U, x = rng.uniform(0.05, 1.0, size=(2, 3)), np.array([1, 0, 1], np.int32)
    want, defined = enumerated_prompted_masked_laws(pi, A, B, U, x)
    with jax.enable_x64(True):
        out = prompted_masked_token_probs(*(jnp.asarray(a) for a in (pi, A, B, U)), jnp.asarray(x), parallel)
        (law, _), low = core._split(parallel, out)
    assert defined.all() and float(low) > 0
    np.testing.assert_allclose(np.asarray(law), want, rtol=1e-10)
    unprompted, _ = enumerated_prompted_masked_laws(pi, A, B, np.ones((1, 3)), x)
    assert np.abs(unprompted - want).max() > 1e-2  # the prompt moves these laws


def test_a_prompted_masked_law_needs_the_tokens_around_it_possible_not_the_sequence():
    """x = (2) is impossible (no state emits 2), yet its masked law at t = 0 reads no token and is defined;
    in (0, 2) the law at t = 0 reads x_1 = 2 and is not.  Found by hypothesis with fresh draws: the property
    test above expected a ZeroProbabilityError wherever p(x | z) = 0."""
    world = HMM([0.6, 0.4], [[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5, 0.0], [0.1, 0.9, 0.0]])
    U = np.array([[1.0, 0.25]])
    want, defined = enumerated_prompted_masked_laws(*_dense(world), U, np.array([2]))
    assert defined.all()
    np.testing.assert_allclose(np.asarray(world.prompted_masked_token_probs(np.array([[2]], np.int32), U))[0],
                               want, atol=1e-6)
    assert not enumerated_prompted_masked_laws(*_dense(world), U, np.array([0, 2]))[1].all()
    with pytest.raises(ZeroProbabilityError, match="tokens: sequence 0 has probability zero .* position 0"):
        world.prompted_masked_token_probs(np.array([[0, 2]], np.int32), U)


def test_a_prompt_that_vanishes_off_one_slot_conditions_the_world_on_it():
    """u(m, h) = 0 for m ≠ m*: every masked law is that of the world whose slot is m* (its one-cell model
    with prior e_{m*}), one chain step later (the prompt position takes the first step)."""
    M, Q, V = 3, 2, 4
    world = MemoryHMM.random(0, 1, M, Q, V, transition_temp=0.5, emission_temp=0.5)
    x = np.asarray(world.sample(1, 8, 5))
    for m in range(M):
        U = np.zeros((1, M * Q))
        U[0, m * Q:(m + 1) * Q] = 1.0
        pi, A, B = _dense(world)
        q = np.asarray(world.transition, np.float64)
        start = (pi.reshape(M, Q)[m] / pi.reshape(M, Q)[m].sum()) @ q
        conditioned = MemoryHMM.one_cell(np.eye(M)[m], start, q, np.asarray(world.emission, np.float64), atol=1e-5)
        want = np.asarray(conditioned.masked_token_probs(x), np.float64)
        np.testing.assert_allclose(np.asarray(world.prompted_masked_token_probs(x, U)), want, atol=1e-5)


@pytest.fixture(scope="module")
def memory_task():
    w = MemoryHMM.random(0, n_cells=1, n_values=3, n_syntactic=3, n_symbols=8, transition_temp=0.3,
                         emission_temp=0.3)
    task = make_memory_task(w, 0, n_probe=128, probe_length=12)
    return w, sample_task_data(w, task, 1, 128, 12), sample_task_data(w, task, 2, 128, 12)


def test_exact_attention_prompt_recovers_a_memory_task(memory_task):
    """Measured (seed 0, n = 128, T = 12): train 1.0, held-out ≥ 0.95, as the attention head alone."""
    w, (x, y), (xt, yt) = memory_task
    result = fit_exact_attention_prompt(w, x, y, k=1, steps=150, n_restarts=2, test=(xt, yt))
    assert result.U.shape == (1, 9) and np.all(result.U >= 0)
    assert result.train_accuracy >= 0.97 and result.test_accuracy >= 0.9
    assert result.losses[-1] < result.losses[0]
    assert result.accuracy(w, xt, yt) == result.test_accuracy


@pytest.fixture(scope="module")
def masked_transformer():
    cfg = TransformerConfig(n_symbols=8, d_model=16, n_layers=1, n_heads=2, max_len=12, causal=False)
    return TransformerLM(init_transformer(cfg, 0))


def test_prefixed_laws_are_the_model_read_at_each_masked_position(masked_transformer):
    lm = masked_transformer
    x = np.random.default_rng(0).integers(0, 8, (3, 5)).astype(np.int32)
    prefix = 0.1 * np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    got = np.asarray(_prefixed_laws(lm.graphdef, lm.state, prefix, x))
    # the model's own forward pass, jitted (eagerly each of its operations compiled on its own)
    model = jax.jit(lambda state, tokens, prefix: nnx.merge(lm.graphdef, state)(tokens, prefix=prefix))
    for t in range(5):
        masked = x.copy()
        masked[:, t] = lm.config.mask_id
        want = jax.nn.softmax(model(lm.state, masked, prefix)[:, t], axis=-1)
        np.testing.assert_allclose(got[:, t], np.asarray(want), atol=1e-5)


def test_transformer_attention_prompt_trains_the_prompt_and_leaves_the_model_frozen(masked_transformer, memory_task):
    lm = masked_transformer
    _, (x, y), (xt, yt) = memory_task
    before = [np.array(a) for a in jax.tree.leaves(lm.state)]
    result = fit_transformer_attention_prompt(lm, x[:, :10], y, k=1, steps=30, batch_size=32, lr=0.05,
                                              test=(xt[:, :10], yt))
    after = [np.array(a) for a in jax.tree.leaves(lm.state)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert result.prefix.shape == (1, 16) and result.losses.shape == (30,)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert 0 <= result.train_accuracy <= 1 and 0 <= result.test_accuracy <= 1
    probs = np.asarray(result.features(lm, xt[:4, :10]))
    assert probs.shape == (4, 10, 8) and np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_bad_inputs_raise_typed_errors_naming_the_argument(masked_transformer, memory_task):
    w, (x, y), _ = memory_task
    with pytest.raises(ShapeError, match="U"):
        w.prompted_masked_token_probs(x, np.ones((1, 4)))
    with pytest.raises(ConfigError, match="k"):
        fit_exact_attention_prompt(w, x, y, k=0)
    with pytest.raises(ShapeError, match="labels"):
        fit_exact_attention_prompt(w, x, y[:3])
    causal = TransformerLM(init_transformer(TransformerConfig(n_symbols=8, d_model=16, n_heads=2, n_layers=1,
                                                              max_len=12), 0))  # masked_transformer's sizes
    with pytest.raises(ConfigError, match="lm"):
        fit_transformer_attention_prompt(causal, x, y)
    with pytest.raises(ConfigError, match="lm: expected a TransformerLM"):
        fit_transformer_attention_prompt(w, x, y)
    with pytest.raises(TokenError, match="exceeds"):
        fit_transformer_attention_prompt(masked_transformer, x, y, k=2)  # 2 + 12 > 13 positions
    with pytest.raises(ConfigError, match="batch_size"):
        fit_transformer_attention_prompt(masked_transformer, x[:, :10], y, batch_size=0)


def test_the_fitted_laws_are_the_worlds_prompted_masked_laws(memory_task):
    """The law the exact fit differentiates is P(x_t = · | z, x_−t) under the prompt's prior — the world's
    checked prompted masked laws — not the unprompted ones."""
    w, (x, _), _ = memory_task
    U = np.random.default_rng(0).uniform(0.1, 3.0, (1, 9))
    got = np.asarray(jax.jit(_laws_at_every_position)(*w.chain, jnp.asarray(U), jnp.asarray(x[:8])))
    want = np.asarray(w.prompted_masked_token_probs(x[:8], U))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want - np.asarray(w.masked_token_probs(x[:8]))).max() > 1e-3  # the prompt moves the laws


def test_the_fitted_laws_differentiate_on_an_accelerators_path(monkeypatch):
    """An accelerator picks the associative scan from T = 64 on (default parallel=None): its while_loop has
    no reverse-mode derivative, and the exact attention-prompt fit raised there (a review, 2026-12-06); the
    law the fit differentiates is the sequential scan's on every backend.  The gradient against central
    differences in float64, the backend patched as in test_hmm_parallel."""
    from simlm.worlds import HMM

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    w = HMM.random(0, 3, 4)
    x, y = np.asarray(w.sample(0, 8, 64)), np.arange(8) % 2
    fit_exact_attention_prompt(w, x, y, steps=2, n_restarts=1, d_key=2, d_value=2)  # raised ValueError
    with jax.enable_x64(True):
        chain = [jnp.asarray(a, jnp.float64) for a in w.chain]
        U = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, (1, 3)))
        # jitted once: called eagerly, each finite difference compiled the scans anew (one program for all)
        f = jax.jit(lambda u: _laws_at_every_position(*chain, u, jnp.asarray(x[:2]))[:, ::7, 1].sum())
        grad = np.asarray(jax.grad(f)(U))
        h = 1e-6
        fd = [(f(U + h * np.eye(3)[[j]]) - f(U - h * np.eye(3)[[j]])) / (2 * h) for j in range(3)]
    assert np.all(np.isfinite(grad)) and np.allclose(grad[0], fd, rtol=1e-5, atol=1e-8)


class _Drawn(Exception):
    """Stops a fit once it has drawn its minibatches."""


def test_transformer_prompt_fit_draws_minibatches_of_batch_size(masked_transformer, memory_task, monkeypatch):
    """Each step reads ``batch_size`` of the n sequences, or every sequence when there are fewer."""
    lm = masked_transformer
    _, (x, y), _ = memory_task
    drawn = []

    def recording(key, n, batch_size, steps):
        drawn.append((n, batch_size, steps))
        raise _Drawn

    monkeypatch.setattr(attention_prompts, "minibatch_indices", recording)
    for batch_size, n in [(8, 32), (32, 128), (64, 16)]:
        with pytest.raises(_Drawn):
            fit_transformer_attention_prompt(lm, x[:n, :10], y[:n], k=1, steps=5, batch_size=batch_size)
        assert drawn[-1] == (n, min(batch_size, n), 5)


def test_transformer_train_accuracy_is_scored_at_the_fitted_prefix(masked_transformer, memory_task):
    """train_accuracy is the accuracy of the returned classifier (fitted prefix and head) on the training data.
    Same k, steps and shapes as the frozen-model test (one compiled fit); at lr 0.2 these seeds move the prefix
    enough that the laws at the initial prefix score differently."""
    lm = masked_transformer
    _, (x, y), _ = memory_task
    for seed in (1, 2, 3):
        result = fit_transformer_attention_prompt(lm, x[:, :10], y, k=1, steps=30, batch_size=32, lr=0.2, seed=seed)
        assert result.train_accuracy == result.accuracy(lm, x[:, :10], y)


def test_an_exact_attention_fit_whose_prompt_underflowed_is_refused_naming_lr():
    """At lr = 20 Adam drives a raw θ to ≈ −90 and below, where softplus(θ) is a float32 subnormal or 0: the fit
    ran to the end and then failed its own scoring with a ConfigError about a 'prompt U' the caller never gave.
    It is a fit that diverged, refused naming lr.  (At lr = 11 it diverged in three of the four builds,
    optimised or not × XLA's newer or older fusion emitters, but not in the suite's, unoptimised with the
    older emitters: the path of a fit at such a rate is chaotic.  lr = 20 diverges in all four.)"""
    from simlm.errors import TrainingDivergedError

    world = MemoryHMM.random(0, 1, 2, 2, 3, transition_temp=0.5, emission_temp=0.5)
    x = np.asarray(world.sample(0, 16, 3))
    with pytest.raises(TrainingDivergedError, match="^lr: the exact attention prompt fit diverged: entry"):
        fit_exact_attention_prompt(world, x, (x[:, 0] == x[:, 2]).astype(int), steps=500, n_restarts=2, lr=20.0,
                                   d_key=2, d_value=3, l2=0, seed=0)


@pytest.mark.parametrize("k", [2, 3])
def test_the_fitted_laws_are_the_worlds_prompted_masked_laws_for_a_longer_prompt(memory_task, k):
    """As above with k > 1 prompt positions, whose order matters (u_1 is read first, from π): at k = 1 a prompt
    read in reverse, or any permutation of its rows, gave the same law, and the fit would differentiate the
    reversed prompt's laws while the result is scored on the checked ones."""
    w, (x, _), _ = memory_task
    U = np.random.default_rng(k).uniform(0.05, 3.0, (k, 9))
    got = np.asarray(jax.jit(_laws_at_every_position)(*w.chain, jnp.asarray(U), jnp.asarray(x[:8])))
    want = np.asarray(w.prompted_masked_token_probs(x[:8], U))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the prompt's order moves the laws (else the test could not tell a reversed prompt)
    assert np.abs(want - np.asarray(w.prompted_masked_token_probs(x[:8], U[::-1]))).max() > 1e-3


# ---- the numbers a transformer attention-prompt fit returns (a mutation review, 2026-12-07) ---

def _objective64(head, features, y, l2):
    """The attention head's objective in float64 from its params (heads.AttentionLogits' docstring):
    mean cross-entropy + (l2/2)(‖q‖² + ‖W_k‖² + ‖W_v‖² + ‖W_o‖²) on z = (f − mean) ⊘ scale."""
    P = {k: np.asarray(v, np.float64) for k, v in head.params.items()}
    z = (np.asarray(features, np.float64) - head.mean) / head.scale
    score = np.einsum("ntf,df,d->nt", z, P["W_k"], P["q"])
    w = np.exp(score - logsumexp(score, 1, keepdims=True))
    logits = np.einsum("nt,ntf->nf", w, z) @ P["W_v"].T @ P["W_o"].T + P["b"]
    ce = np.mean(logsumexp(logits, 1) - logits[np.arange(len(y)), y])
    return ce + 0.5 * l2 * sum(np.sum(P[k] ** 2) for k in ("q", "W_k", "W_v", "W_o"))


def _fit(lm, x, y, **kw):
    return fit_transformer_attention_prompt(lm, x, y, k=1, steps=30, batch_size=32, **kw)


def test_a_transformer_attention_fit_carries_the_starting_prompts_statistics(masked_transformer, memory_task):
    """A minibatch fit standardises by every training sequence's features at the starting prefix, for the
    whole fit, and returns its head with them (prompt_fit's docstring), as the prepended-mask fit's test in
    test_prompts.py checks for that fit.  The start: a fit at lr 1e-9 returns it (each Adam step moves an
    entry by about lr).  At lr 0.2 the prefix moves the features' mean by ~1e-3, so a head carrying the final
    prefix's statistics fails."""
    lm = masked_transformer
    _, (x, y), _ = memory_task
    x = x[:, :10]
    fit = _fit(lm, x, y, lr=0.2, seed=1)
    F0 = np.asarray(_fit(lm, x, y, lr=1e-9, seed=1).features(lm, x), np.float64)
    np.testing.assert_allclose(fit.head.mean, F0.mean((0, 1)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit.head.scale, F0.std((0, 1)), rtol=1e-4)
    moved = np.asarray(fit.features(lm, x), np.float64).mean((0, 1))
    assert np.abs(moved - F0.mean((0, 1))).max() > 1e-4  # the final prefix's statistics are far from these


def test_a_transformer_attention_fits_final_loss_is_its_objective_at_the_returned_prompt(masked_transformer,
                                                                                        memory_task):
    """head.restart_losses = (the objective at the returned prefix and head on every training sequence,
    standardised as the head is), recomputed in float64 from the result; rtol 1e-5 (float32)."""
    lm = masked_transformer
    _, (x, y), _ = memory_task
    x = x[:, :10]
    fit = _fit(lm, x, y, lr=0.2, seed=1, l2=1e-2)
    want = _objective64(fit.head, fit.features(lm, x), np.asarray(y), 1e-2)
    assert float(np.ravel(fit.head.restart_losses)[0]) == pytest.approx(want, rel=1e-5)
    assert fit.head.restart_losses.shape == (1,)
    assert abs(want - float(fit.losses[-1])) > 1e-4  # not the last minibatch's loss


def test_a_transformer_attention_fit_is_checked_against_its_objective_at_the_start(masked_transformer, memory_task,
                                                                                  monkeypatch):
    """The divergence check compares with the objective on every training sequence at the starting prefix
    and head — a fit at lr 1e-9 ends there (its final loss) — not with the first minibatch's loss (32 of the
    128 sequences), as test_prompts.py checks for the prepended-mask fit."""
    lm = masked_transformer
    _, (x, y), _ = memory_task
    x = x[:, :10]
    starts, check = [], attention_prompts.check_prompt_fit
    monkeypatch.setattr(attention_prompts, "check_prompt_fit",
                        lambda start_loss, *args: (starts.append(float(start_loss)), check(start_loss, *args))[1])
    fit = _fit(lm, x, y, lr=1e-9, seed=1, l2=1e-2)
    want = _objective64(fit.head, fit.features(lm, x), np.asarray(y), 1e-2)
    assert starts[0] == pytest.approx(want, rel=1e-5)
    assert abs(starts[0] - float(fit.losses[0])) > 1e-4  # the first minibatch's loss is another number


def test_a_transformer_attention_prompt_starts_at_its_documented_scale(masked_transformer, memory_task):
    """prefix ~ N(0, 0.02²) (the docstring): a fit at lr 1e-9 returns its start to ~3e-8; 4 seeds × 16
    entries, sample std within 30 % of 0.02 (its standard error ~9 %)."""
    lm = masked_transformer
    _, (x, y), _ = memory_task
    prefix = np.concatenate([_fit(lm, x[:, :10], y, lr=1e-9, seed=s).prefix.ravel() for s in range(4)])
    assert prefix.shape == (64,) and prefix.std() == pytest.approx(0.02, rel=0.3)
    assert abs(prefix.mean()) < 5 * 0.02 / np.sqrt(64)


def test_a_transformer_attention_results_features_take_inputs_filling_every_position(masked_transformer,
                                                                                     memory_task):
    """The attention prompt masks in place: k + T = n_positions (1 + 12 = 13) fits the model, for the fit and
    for the result's features alike (checked as the prepended-mask prompt's, one position short, the
    features of a fitted result refused inputs its own fit took); one token more does not."""
    from simlm.errors import TokenError

    lm = masked_transformer
    _, (x, y), _ = memory_task
    fit = _fit(lm, x[:, :10], y, lr=1e-9)
    assert lm.config.n_positions == 13 and x.shape[1] == 12
    F = np.asarray(fit.features(lm, x[:4]))
    assert F.shape == (4, 12, 8) and np.allclose(F.sum(-1), 1, atol=1e-5)
    with pytest.raises(TokenError, match="^tokens: prefix k = 1 \\+ 13 tokens exceeds the model's 13 positions"):
        fit.features(lm, np.zeros((2, 13), np.int32))
