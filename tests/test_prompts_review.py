"""Prompts, reviewed: an input the prompt makes possible is answered (its per-step log-probs are the prompted
chain's), a prompt fit checks its data against the support of the prompts it can reach before fitting, a
fit that diverged is refused naming lr, a fit reports the objective it minimised at the parameters it
returns (never a restart that ended at NaN), the prior the fits differentiate is the prompt's law, a prefix of
token embeddings is those tokens, and a prompt with no reweighting is refused.

The periodic worlds: π = e_0 and A = swap, so the unprompted position 0 is in state 0 and x_1 in state 1,
while after k prompt tokens (the first in state 0) position 0 is in state k mod 2 and x_1 in state k + 1."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import logsumexp

from bruteforce import prompted_state_law, sequence_prob
import simlm.downstream.attention_prompts as attention_prompts
import simlm.downstream.prompts as prompts
from simlm.downstream.attention_prompts import _prefixed_laws_jit, fit_exact_attention_prompt, \
    fit_transformer_attention_prompt
from simlm.downstream.heads import LinearLogits, fit_attention_head, standardise
from simlm.downstream.prompt_fit import check_prompt_fit, fit_prompt, objective
from simlm.downstream.prompts import (_law_at_prepended_mask, _prefixed_prepended_mask_probs_jit,
                                     _prepended_backward, fit_exact_prompt, fit_transformer_prompt)
from simlm.errors import ConfigError, TrainingDivergedError, ZeroProbabilityError
from simlm.models import TransformerConfig, TransformerLM, init_transformer
from simlm.worlds import HMM, prompting


def _cycle(emission=((1.0, 0.0), (0.0, 1.0))):
    return HMM([1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], emission)


# ---- 1. the prompted laws read possibility in the prompted chain ---------------------------------

def test_an_input_only_the_prompt_makes_possible_gets_its_prompted_posterior():
    """x = (0): impossible without a prompt (x_1 in state 1 emits 1), certain after U = (1, 1) (position 0
    in state 1, x_1 in state 0).  Both raised ZeroProbabilityError, reading the unprompted chain's log-probs."""
    w, U, x = _cycle(), [[1.0, 1.0]], np.array([[0]])
    np.testing.assert_allclose(np.asarray(w.prompted_state_posterior(x, U)), [[0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(w.prompted_prepended_mask_probs(x, U)), [[0.0, 1.0]], atol=1e-6)
    with pytest.raises(ZeroProbabilityError, match="^tokens: sequence 0 has probability zero after this prompt"):
        w.prompted_state_posterior(np.array([[1]]), U)  # possible without the prompt, impossible after it


@pytest.mark.parametrize("method", ["prompted_state_posterior", "prompted_prepended_mask_probs",
                                    "prompted_masked_token_probs"])
def test_a_prompt_of_probability_zero_is_refused_naming_the_prompt(method):
    """The cycle starts in state 0, which emits 0 surely; U = (0, 1) asks state 0 for likelihood 0, so P(z) = 0
    and no x has a law after it.  The error names the prompt (it named token 0 of x, which any x would do)."""
    with pytest.raises(ConfigError, match="^prompt U: the prompt has probability zero under this world"):
        getattr(_cycle(), method)(np.array([[0, 1]]), [[0.0, 1.0]])


def test_the_prompted_posteriors_log_probs_are_those_of_the_prompted_chain():
    """log p(x_t | z, x_<t) with position 0 marginalised, = the prompted masked filter's, which starts at
    x_1: for the noisy cycle (state 0 emits 0 w.p. 0.9) and U = (1, 1), x = (0, 1, 0) has log-probs
    (log 0.9, 0, log 0.9) — the unprompted chain's were (−inf, …)."""
    w = _cycle([[0.9, 0.1], [0.0, 1.0]])
    pi, A, B = w.chain
    u, x = jnp.asarray([[1.0, 1.0]]), jnp.asarray([0, 1, 0])
    _, steps = prompting.prompted_state_posterior(pi, A, B, u, x, False)
    np.testing.assert_allclose(np.asarray(steps), np.log([0.9, 1.0, 0.9]), rtol=1e-6)
    # the prompted chain with position 0 dropped: x_1 starts at P(H | z) A
    prior = prompting.prompt_prior(pi, A, u)
    direct = HMM(np.asarray(prior @ A), np.asarray(A), np.asarray(B))
    np.testing.assert_allclose(np.asarray(steps), np.asarray(direct.token_logprobs(np.asarray(x)[None]))[0],
                               rtol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_the_prior_a_prompt_fit_differentiates_is_the_prompts_law(k):
    """fit_prompt_prior (the normalised-product recursion the fits differentiate) = prompt_prior (the log-space
    one the fitted prompt is scored with) = the enumeration of every prompt path, α = [(π∘u_1)A … ∘ u_k]A, for
    k ≥ 2 rows that differ (k = 2: (0.218, 0.201, 0.581)); a scan that fed u_1..u_{k−1} after u_1 instead of
    u_2..u_k gave (0.574, 0.334, 0.092).  float32 inputs: rtol 1e-5."""
    rng = np.random.default_rng(0)
    pi, A = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3), 3)
    U = np.array([[1.0, 0.1, 0.5], [0.2, 1.0, 0.05], [0.3, 0.02, 1.0]])[:k]
    want = prompted_state_law(pi, A, np.eye(3), U, ())  # no input: the law of the first state after the prompt
    args = [jnp.asarray(a, jnp.float32) for a in (pi, A, U)]
    np.testing.assert_allclose(np.asarray(prompting.fit_prompt_prior(*args)), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(prompting.prompt_prior(*args)), want, rtol=1e-5)


# ---- 2. the fits check their data against the prompts they can reach, before fitting -------------

def _no_fit(*args, **kwargs):
    raise AssertionError("the fit ran on data no prompt of its length can produce")


def test_an_attention_prompt_fit_of_k_tokens_takes_the_data_k_tokens_make_possible(monkeypatch):
    """After k = 2 tokens x_1 is in state 0: x = (0, 1, 0, 1) is certain (the k = 1 check refused it) and
    x = (1, 0, 1, 0) impossible (the k = 1 check let it through, and the whole fit ran before scoring raised)."""
    w, y = _cycle(), np.arange(8) % 2
    good, bad = np.array([[0, 1, 0, 1]] * 8, np.int32), np.array([[1, 0, 1, 0]] * 8, np.int32)
    assert fit_exact_attention_prompt(w, good, y, k=2, steps=2, n_restarts=1).U.shape == (2, 2)
    monkeypatch.setattr(attention_prompts, "fit_chain_prompt", _no_fit)
    with pytest.raises(ZeroProbabilityError, match="^tokens: sequence 0 .*every prompt of k = 2 tokens"):
        fit_exact_attention_prompt(w, bad, y, k=2, steps=2, n_restarts=1)


def test_an_exact_prompt_fit_takes_the_data_its_prompts_make_possible(monkeypatch):
    """Noisy cycle, k = 1: x_1 is in state 0 after the prompt.  (0, 1, 0, 1) and (1, 1, 0, 1) are possible
    after it (the unprompted check refused them: x_1 in state 1 never emits 0); (1, 0, 1, 1) is possible
    without it but not after it (x_2 in state 1 never emits 0), so it is refused before the fit.  16 sequences,
    20 steps, 2 restarts: the fit the divergence tests below compile (the same K, V and data shapes)."""
    w, y = _cycle([[0.9, 0.1], [0.0, 1.0]]), np.arange(16) % 2
    good = np.array([[0, 1, 0, 1]] * 8 + [[1, 1, 0, 1]] * 8, np.int32)
    assert fit_exact_prompt(w, good, y, k=1, steps=20, n_restarts=2).U.shape == (1, 2)
    bad = np.array([[1, 0, 1, 1]] * 8 + [[1, 1, 1, 1]] * 8, np.int32)
    monkeypatch.setattr(prompts, "fit_chain_prompt", _no_fit)
    with pytest.raises(ZeroProbabilityError, match="^tokens: sequence 0 .*every prompt of k = 1 tokens"):
        fit_exact_prompt(w, bad, y, k=1, steps=2, n_restarts=1)


# ---- 3. a diverged fit is refused naming lr ---------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    w = HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.1, 0.9]])
    cfg = TransformerConfig(n_symbols=2, d_model=8, n_layers=1, n_heads=2, max_len=6, causal=False)
    return w, TransformerLM(init_transformer(cfg, 0)), np.asarray(w.sample(0, 16, 4)), np.arange(16) % 2


@pytest.mark.parametrize("fit", ["exact", "exact-attention", "transformer", "transformer-attention"])
def test_a_prompt_fit_that_ends_far_above_its_start_is_refused_naming_lr(small, fit):
    """Adam at lr 1e6 took the training loss from 0.69 to 1e6–1e13 and the fit came back as a success."""
    w, lm, x, y = small
    run = {"exact": lambda lr: fit_exact_prompt(w, x, y, steps=20, n_restarts=2, lr=lr),
           "exact-attention": lambda lr: fit_exact_attention_prompt(w, x, y, steps=20, n_restarts=2, lr=lr),
           "transformer": lambda lr: fit_transformer_prompt(lm, x, y, steps=20, lr=lr),
           "transformer-attention": lambda lr: fit_transformer_attention_prompt(lm, x, y, steps=20, batch_size=8,
                                                                                lr=lr)}[fit]
    with pytest.raises(TrainingDivergedError, match="^lr: .* diverged: it ended at training loss"):
        run(1e6)
    assert run(0.01).losses.shape == (20,)  # a sane rate passes


def test_the_divergence_check_reads_the_final_loss_and_refuses_an_empty_prompt_row():
    check_prompt_fit(0.69, np.array([np.nan, 0.69 + 1.0 - 1e-6]), "a fit within the tolerance")
    check_prompt_fit(3.0, np.array([5.99]), "a fit within the tolerance")  # max(1 nat, the start)
    with pytest.raises(TrainingDivergedError, match="^lr: a fit diverged: it ended at training loss 1.7"):
        check_prompt_fit(0.69, np.array([1.7, 5.0]), "a fit")
    with pytest.raises(TrainingDivergedError, match="^lr: a fit diverged: it ended at training loss 6.1"):
        check_prompt_fit(3.0, np.array([6.1]), "a fit")
    with pytest.raises(TrainingDivergedError, match="^lr: a fit diverged: row 1 of its prompt likelihoods is all zero"):
        check_prompt_fit(0.69, np.array([0.5]), "a fit", np.array([[1.0, 0.5], [0.0, 0.0]]))


def test_a_single_run_reports_its_loss_at_the_returned_parameters():
    """Not the last step's, which is the loss before the last update: a fit whose last step overshoots
    reported the loss it had before overshooting."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.dirichlet(np.ones(3), size=32).astype(np.float32))
    y = jnp.asarray(np.arange(32) % 2)
    head = LinearLogits(0.1)
    start = {"prompt": jnp.ones(3), "head": head.init(jax.random.PRNGKey(0), 3, 2)}
    features = lambda th: X * th  # noqa: E731
    p, losses, final, _ = jax.jit(lambda s: fit_prompt(features, head, y, s, l2=1e-4, lr=0.5, steps=5))(start)
    want = objective(features, head, y, p, l2=1e-4)
    np.testing.assert_allclose(np.asarray(final), [float(want)], rtol=1e-6)
    assert float(final[0]) != float(losses[-1])


def test_restarts_keep_the_best_finite_run_when_some_end_at_nan():
    """Prompt θ = ±1 by key and features X·√θ: the runs from θ = −1 are NaN from their first step, those
    from θ = +1 finite.  The kept run is the finite one with the least final loss (NaN sorted as +∞); NaN
    sorted as −∞ returned a NaN prompt with a NaN loss."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.dirichlet(np.ones(3), size=32).astype(np.float32))
    y = jnp.asarray(np.arange(32) % 2)
    head = LinearLogits(0.1)
    features = lambda th: X * jnp.sqrt(th)  # noqa: E731

    def start(key):
        sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        return {"prompt": sign * jnp.ones(3), "head": head.init(key, 3, 2)}

    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    p, losses, final, _ = jax.jit(lambda k: fit_prompt(features, head, y, start, l2=1e-4, lr=0.05, steps=20,
                                                       restart_keys=k))(keys)
    final = np.asarray(final)
    assert np.isnan(final).any() and np.isfinite(final).any(), final  # the case: some runs NaN, some not
    assert np.all(np.isfinite(np.asarray(p["prompt"]))) and np.all(np.isfinite(np.asarray(losses)))
    np.testing.assert_allclose(float(objective(features, head, y, p, l2=1e-4)), np.nanmin(final), rtol=1e-6)


def test_a_minibatch_fits_objective_standardises_by_its_stats():
    """objective(stats = (m, s)) reads every sequence's features as (f − m) ⊘ s, as the fit's batches do:
    the linear head's mean cross-entropy + (l2/2)‖W‖² on those z, by hand in float64 (0.568 here, with
    s = (5.9, 0.13, 0.58) far from 1; (f − m) ∘ s gave 2.21).  rtol 1e-5 (float32)."""
    rng = np.random.default_rng(0)
    F = (rng.normal(size=(8, 3)) * [5.0, 0.2, 1.0]).astype(np.float32)
    y = rng.integers(0, 2, 8)
    W = rng.normal(size=(3, 2)).astype(np.float32)
    mean, scale = F.mean(0), F.std(0)
    params = {"prompt": jnp.float32(1.0), "head": {"W": jnp.asarray(W), "b": jnp.zeros(2)}}
    features = lambda th, idx: jnp.asarray(F)[idx] * th  # noqa: E731
    got = objective(features, LinearLogits(), jnp.asarray(y), params, l2=1e-2,
                    stats=(jnp.asarray(mean), jnp.asarray(scale)))
    logits = ((F.astype(np.float64) - mean) / scale) @ W
    want = np.mean(logsumexp(logits, 1) - logits[np.arange(8), y]) + 0.5 * 1e-2 * np.sum(W.astype(np.float64) ** 2)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_an_attention_heads_reported_loss_includes_the_penalty_on_w_o():
    """The attention head's final objective (restart_losses) at its returned parameters = mean cross-entropy
    + (l2/2)(‖q‖² + ‖W_k‖² + ‖W_v‖² + ‖W_o‖²), recomputed in float64 from the head's params (0.679 at
    l2 = 0.5; without ‖W_o‖² in the penalty the fit reported 0.500 at parameters whose objective is 8.7).
    rtol 1e-5 (float32)."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(32, 3, 4)).astype(np.float32)
    y = (f[:, 1, 0] > 0).astype(int)
    l2 = 0.5
    h = fit_attention_head(f, y, l2=l2, steps=50, n_restarts=1)
    P = {k: np.asarray(v, np.float64) for k, v in h.params.items()}
    z = (f - h.mean) / h.scale
    score = np.einsum("ntf,df,d->nt", z, P["W_k"], P["q"])
    w = np.exp(score - logsumexp(score, 1, keepdims=True))
    logits = np.einsum("nt,ntf->nf", w, z) @ P["W_v"].T @ P["W_o"].T + P["b"]
    ce = np.mean(logsumexp(logits, 1) - logits[np.arange(32), y])
    want = ce + 0.5 * l2 * sum(np.sum(P[k] ** 2) for k in ("q", "W_k", "W_v", "W_o"))
    assert float(h.restart_losses[0]) == pytest.approx(want, rel=1e-5)


# ---- 4. a prefix of token embeddings is those tokens ----------------------------------------------

@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_prefix_of_token_embeddings_gives_the_laws_of_those_tokens_before_the_input(positions):
    """prefix = E[z] (the model adds the positions to prefix and tokens alike) against z fed as real tokens
    before every masked copy of x (the attention prompt) and before (MASK, x) (the prepended-mask prompt).
    The attention is sharpened (q, k and v × 8): at its initial scale it is nearly uniform, and under rotary
    positions, which act only through it, the prefix read in reverse order moved the laws by 4e-6 — below the
    tolerance, so the test could not tell the order (a review, 2026-12-07); now by ≥ 4e-4."""
    cfg = TransformerConfig(n_symbols=3, d_model=16, n_layers=2, n_heads=2, max_len=8, causal=False,
                            positions=positions)
    network = init_transformer(cfg, 1)
    for block in network.blocks:
        block.attn.qkv.kernel[...] = 8 * block.attn.qkv.kernel[...]
    lm = TransformerLM(network)
    mask = cfg.mask_id
    # the model's forward pass and the laws under test, each jitted (eagerly every operation compiled on its own)
    model = jax.jit(lambda tokens: nnx.merge(lm.graphdef, lm.state)(tokens))
    x = np.random.default_rng(0).integers(0, 3, (3, 4)).astype(np.int32)
    laws = lambda p: _prefixed_laws_jit(lm.graphdef, lm.state, p, jnp.asarray(x))  # noqa: E731
    z = np.array([2, 0], np.int32)
    prefix = jnp.asarray(np.asarray(lm.model.token_embed.embedding[...])[z])
    got = np.asarray(laws(prefix))
    n, T = x.shape
    copies = np.repeat(x[:, None], T, 1)  # copies[i, t] is x_i with x_t masked, after the tokens z
    copies[:, np.arange(T), np.arange(T)] = mask
    full = np.concatenate([np.broadcast_to(z, (n, T, 2)), copies], -1).reshape(n * T, 2 + T)
    want = np.asarray(jax.nn.softmax(model(full), -1)).reshape(n, T, 2 + T, -1)
    np.testing.assert_allclose(got, want[:, np.arange(T), 2 + np.arange(T)], atol=1e-5)
    got = np.asarray(_prefixed_prepended_mask_probs_jit(lm.graphdef, lm.state, prefix, jnp.asarray(x)))
    full = np.concatenate([np.broadcast_to(z, (n, 2)), np.full((n, 1), mask), x], 1)
    np.testing.assert_allclose(got, np.asarray(jax.nn.softmax(model(full)[:, 2])), atol=1e-5)
    # and the prefix is read: scaled, it moves every law; reversed, every law by far more than the tolerance
    assert (np.abs(np.asarray(laws(50 * prefix)) - np.asarray(laws(prefix))).max(-1) > 1e-6).all()
    assert (np.abs(np.asarray(laws(prefix[::-1])) - np.asarray(laws(prefix))).max(-1) > 1e-4).all()


# ---- 5. a prompt with no reweighting is refused; a huge row warns nothing ---------------------------

def test_a_prompt_whose_law_lives_where_pi_vanishes_has_no_reweighting():
    """U = (1, 1) on the cycle: P(H | z) = e_1 and π = e_0, so r = α ⊘ π was all zero (max r = 0, not 1)."""
    w = _cycle()
    with pytest.raises(ConfigError, match="^prompt U: its law P"):
        w.prompt_reweighting([1.0, 1.0])
    with pytest.raises(ConfigError, match="^prompt U: the prompt has probability zero"):
        w.prompt_reweighting([0.0, 1.0])  # π ∘ u = 0
    np.testing.assert_allclose(np.asarray(w.prompt_reweighting([[1.0, 1.0], [1.0, 1.0]])), [1.0, 0.0])


def test_a_prompt_row_of_1e308s_warns_nothing():
    import warnings

    w = HMM([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.1, 0.9]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(np.asarray(w.prompt_reweighting([[1e308, 1e308]])),
                                   np.asarray(w.prompt_reweighting([[1.0, 1.0]])))


def test_a_minibatch_fit_of_a_task_with_nothing_to_learn_is_no_divergence():
    """Random labels, batch 1 at lr 0.05: the training loss wanders around log 2 (0.72 → 0.80 in one seed),
    which the divergence check once called a divergence."""
    w = HMM.random(0, 4, 6)
    lm = TransformerLM(init_transformer(TransformerConfig(n_symbols=6, d_model=16, n_layers=1, n_heads=2, max_len=8,
                                                          causal=False), 0))
    x = np.asarray(w.sample(0, 200, 6))
    rng = np.random.default_rng(0)
    for trial in range(2):
        y = rng.integers(0, 2, 200)
        fit_transformer_prompt(lm, x, y, steps=200, seed=trial, batch_size=1, lr=0.05)


def test_an_impossible_product_stays_an_all_zero_row():
    """reweight and fit_prompt_prior normalise each row, and a row that is all zero — a prompt incompatible
    with x (P(H_0 | z) ∘ β_0 = 0), or a prompt of probability zero (α = 0) — stays zero, as prompt_prior's
    law of an impossible prompt does, rather than 0/0 = NaN; the other rows of a batch are still laws."""
    prior = jnp.asarray([1.0, 0.0], jnp.float32)
    beta0 = jnp.asarray([[0.0, 1.0], [1.0, 3.0]], jnp.float32)
    np.testing.assert_array_equal(np.asarray(prompting.reweight(prior, beta0)), [[0.0, 0.0], [1.0, 0.0]])
    args = [jnp.asarray(a, jnp.float32) for a in ([1.0, 0.0], np.eye(2), [[0.0, 1.0]])]
    np.testing.assert_array_equal(np.asarray(prompting.fit_prompt_prior(*args)), [0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(prompting.prompt_prior(*args)), [0.0, 0.0])


# ---- 6. the exact fit runs its restarts on its penalised objective, over the prompted law -----------

def test_an_exact_prompt_fit_runs_n_restarts_restarts(small):
    """restart_losses has one final loss per restart (n_restarts = 4 here), from starts drawn by their own
    keys, so the restarts end apart; the kept run is the best of them.  Splitting the key into one ran one."""
    w, _, x, y = small
    result = fit_exact_prompt(w, x, y, steps=20, n_restarts=4)
    assert result.restart_losses.shape == (4,)
    assert len(np.unique(result.restart_losses)) == 4, result.restart_losses
    assert np.all(np.isfinite(result.restart_losses))


def test_an_exact_fits_reported_loss_includes_the_penalty_on_w(small):
    """The kept restart's final objective (the least of restart_losses) at its returned U and head = mean
    cross-entropy of the head on the world's prompted laws P(H_0 | z, x) B standardised by their own
    statistics (a full-batch fit) + (l2/2)‖W‖², recomputed in float64 (0.685 at l2 = 1; a fit that dropped
    l2 reported the cross-entropy alone, 0.675).  rtol 1e-4 (float32 laws)."""
    w, _, x, y = small
    l2 = 1.0
    result = fit_exact_prompt(w, x, y, steps=20, n_restarts=2, l2=l2)
    F = np.asarray(w.prompted_prepended_mask_probs(x, result.U), np.float64)
    W, b = np.asarray(result.head.weight, np.float64), np.asarray(result.head.bias, np.float64)
    logits = (F - F.mean(0)) / F.std(0) @ W + b
    ce = np.mean(logsumexp(logits, 1) - logits[np.arange(len(y)), y])
    want = ce + 0.5 * l2 * np.sum(W ** 2)
    assert float(np.min(result.restart_losses)) == pytest.approx(want, rel=1e-4)
    assert 0.5 * l2 * np.sum(W ** 2) > 1e-3  # the penalty is visible at this tolerance


def test_the_exact_fits_law_is_the_worlds_prompted_prepended_mask_law(small):
    """The law the exact fit differentiates, from β_0 computed once, is P(H_0 | z, x) B under the prompt's
    prior — the world's checked prompted_prepended_mask_probs — for k = 2 rows that differ (the rows fed in
    reverse order gave 0.6447 for 0.6408)."""
    w, _, x, _ = small
    U = np.random.default_rng(0).uniform(0.1, 3.0, (2, 2))
    beta0, _ = _prepended_backward(*w.chain, jnp.asarray(x[:3]))
    got = np.asarray(jax.jit(_law_at_prepended_mask)(*w.chain, jnp.asarray(U, jnp.float32), beta0))
    want = np.asarray(w.prompted_prepended_mask_probs(x[:3], U))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(np.asarray(w.prompted_prepended_mask_probs(x[:3], U[::-1])) - want).max() > 1e-3  # order matters


def test_a_fitted_prompt_entry_that_underflowed_is_refused_naming_it():
    """A fitted prompt is softplus(θ) > 0: an entry of 0 or below float32's smallest normal (relative to its
    row's largest) underflowed at a diverging rate.  It was scored as another prompt — a zero changes the
    support check_promptable vouched for — or failed the scoring, after the whole fit, with an error about a
    prompt U the caller never gave (lr = 11: 2.29e-39).  Rows of very different scales are fine."""
    check_prompt_fit(0.69, np.array([0.5]), "a fit", np.array([[1.0, 1e-30], [1e-30, 1e-37]]))
    for u, entry in (([[1.0, 0.0]], "(0, 1)"), ([[1.0, 0.5], [2.29e-39, 1.0]], "(1, 0)"),
                     ([[1e-20, 1e-60]], "(0, 1)")):
        with pytest.raises(TrainingDivergedError, match=f"^lr: a fit diverged: entry {re.escape(entry)} of its"):
            check_prompt_fit(0.69, np.array([0.5]), "a fit", np.array(u))


def test_an_exact_fit_is_checked_against_the_kept_restarts_start(small, monkeypatch):
    """The divergence check compares the final loss with the kept run's loss at its start (losses[0]), not
    with its last step's: a run from 0.69 whose last step was at 50 and that ended at 60 diverged."""
    w, _, x, y = small

    def diverged(law, chain, data, labels, l2, lr, key, *, head, k, n_classes, steps, n_restarts):
        U = jnp.ones((k, w.n_states))
        features = law(*chain, U, data)
        _, mean, scale = standardise(features)
        return (U, head.init(key, w.n_symbols, n_classes), mean, scale, jnp.asarray([0.69, 50.0]),
                jnp.asarray([60.0]), features)

    monkeypatch.setattr(prompts, "fit_chain_prompt", diverged)
    with pytest.raises(TrainingDivergedError,
                       match="^lr: the exact prompt fit diverged: it ended at training loss 60, above its start 0.69"):
        fit_exact_prompt(w, x, y, steps=2, n_restarts=1)


def _sparse_world():
    return HMM([0.5, 0.5, 0.0], [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0]],
               [[0.9, 0.1, 0.0], [0.1, 0.0, 0.9], [0.5, 0.5, 0.0]])


@pytest.mark.parametrize("fit", ["prepended", "attention"])
def test_an_impossible_test_sequence_is_refused_before_the_fit_naming_the_test_tokens(fit, monkeypatch):
    """A test sequence whose law no prompt makes defined was scored after every restart had been trained (7.6 s
    here), and the error named the training ``tokens``; bad ``lr`` and ``seed`` are refused before the world's
    prompted law is compiled.  (2, 2) is impossible (only state 1 emits 2, and A[1, 1] = 0): the prepended law
    is undefined there; the masked laws of (2, 2) are defined (each reads one token 2), those of (2, 2, 0) at
    position 2 are not."""
    from simlm.downstream import fit_exact_attention_prompt, fit_exact_prompt

    world = _sparse_world()
    x = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]])[:, :2 if fit == "prepended" else 3]
    y = np.array([0, 1, 0, 1])
    run = fit_exact_prompt if fit == "prepended" else fit_exact_attention_prompt
    with pytest.raises(ZeroProbabilityError, match="^test tokens: sequence 0"):
        run(world, x, y, steps=5, n_restarts=1, test=(np.array([[2, 2, 0]])[:, :x.shape[1]], [0]))
    law = "prompted_prepended_mask_probs" if fit == "prepended" else "prompted_masked_token_probs"

    def no_law(*args, **kwargs):
        raise AssertionError("the prompted law ran before the arguments were checked")

    monkeypatch.setattr(HMM, law, no_law)
    for bad, name in (({"lr": -1.0}, "lr"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed")):
        with pytest.raises(ConfigError, match=f"^{name}"):
            run(world, x, y, steps=5, n_restarts=1, **bad)


def test_a_prompt_that_moves_mass_onto_states_position_0_never_takes_has_no_reweighting():
    """r = [1, 0.625, 0] read P(H_0 | z, x) = [0.516, 0.484, 0] where it is [0.345, 0.323, 0.332]: the prompt's
    law puts mass on state 2, which π never gives position 0."""
    w = HMM([0.5, 0.5, 0.0], [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]], [[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    np.testing.assert_allclose(np.asarray(w.prompted_state_posterior(np.array([[0, 1]]), np.ones(3)))[0],
                               [0.345, 0.323, 0.332], atol=1e-3)
    with pytest.raises(ConfigError, match="never takes"):
        w.prompt_reweighting(np.ones(3))


# ---- review 2026-12-05 (afternoon) -------------------------------------------------------------------------

def test_a_learning_rate_below_float32s_range_is_refused_before_the_fit():
    """lr = 1e-50 became 0 in float32: Adam took steps of size 0 and the initial prompt and head came back as
    the fit, with their accuracies, and no warning."""
    from simlm.downstream import fit_exact_prompt, fit_linear_head
    world = HMM([.5, .5], [[.9, .1], [.2, .8]], [[.7, .3], [.1, .9]])
    x = np.asarray(world.sample(0, 12, 4))
    y = np.arange(12) % 2
    with pytest.raises(ConfigError, match="^lr: 1e-50 is below float32's smallest normal number"):
        fit_exact_prompt(world, x, y, steps=3, lr=1e-50)
    with pytest.raises(ConfigError, match="^lr"):
        fit_linear_head(np.eye(12)[:, :4], y, method="adam", lr=1e-50)


def test_an_exact_prompt_too_long_names_k():
    from simlm.downstream import fit_exact_prompt
    world = HMM([.5, .5], [[.9, .1], [.2, .8]], [[.7, .3], [.1, .9]])
    with pytest.raises(ConfigError, match="^k: expected a prompt length"):
        fit_exact_prompt(world, np.zeros((4, 3), int), np.arange(4) % 2, k=10001)


def _prompt_law_by_enumeration(pi, A, U):
    """The law of x_1's state after the prompt, by every path of the prompt's k states (float64)."""
    K, alpha = len(pi), np.zeros(len(pi))
    for h in itertools.product(range(K), repeat=len(U)):
        p = pi[h[0]] * U[0][h[0]]
        for j in range(1, len(U)):
            p *= A[h[j - 1], h[j]] * U[j][h[j]]
        alpha += p * A[h[-1]]
    with np.errstate(invalid="ignore"):
        return alpha / alpha.sum()  # NaN where P(z) = 0


@pytest.mark.parametrize("seed", [0, 1, 5, 7, 39])
def test_the_prompted_masked_law_is_answered_wherever_each_masked_position_is_possible(seed):
    """p(x_t = · | z, x_−t) needs p(x_−t | z) > 0, not p(x | z) > 0 (the token at t is a placeholder): the
    prompted masked law refused every x of probability zero after the prompt, while the unprompted one
    answered them.  Every x of length 3 over V = 3, one at a time, on worlds with exact zeros in π, A, B
    and U, against enumeration (float64): answered where every position's law is defined, refused (naming
    the position) where one is not."""
    rng = np.random.default_rng(seed)
    zeros = lambda shape: rng.dirichlet(np.ones(shape[-1]), shape[:-1]) * (rng.random(shape) > 0.35)
    while True:
        pi, A, B = zeros((3,)), zeros((3, 3)), zeros((3, 3))
        U = rng.random((2, 3)) * (rng.random((2, 3)) > 0.3)
        if pi.sum() > 0 and (A.sum(1) > 0).all() and (B.sum(1) > 0).all() and U.sum(1).all():
            pi, A, B = pi / pi.sum(), A / A.sum(1, keepdims=True), B / B.sum(1, keepdims=True)
            if np.isfinite(_prompt_law_by_enumeration(pi, A, U)).all():  # P(z) > 0
                break
    with jax.enable_x64(True):
        w, rho = HMM(pi, A, B, dtype="float64"), _prompt_law_by_enumeration(pi, A, U)
        answered = 0
        for x in itertools.product(range(3), repeat=3):
            joint = [np.array([sequence_prob(rho, A, B, x[:t] + (v,) + x[t + 1:]) for v in range(3)]) for t in range(3)]
            if all(j.sum() > 0 for j in joint):
                got = np.asarray(w.prompted_masked_token_probs(np.array(x), U))
                np.testing.assert_allclose(got, [j / j.sum() for j in joint], atol=1e-12)
                answered += sequence_prob(rho, A, B, x) == 0  # the case that was refused
            else:
                t = next(t for t, j in enumerate(joint) if j.sum() == 0)
                with pytest.raises(ZeroProbabilityError, match=f"prompt whatever token is at masked position {t}"):
                    w.prompted_masked_token_probs(np.array(x), U)
    assert answered or seed not in (5, 7, 39)  # the first 60 seeds' worlds with such inputs (1–2 of 27 each)


def test_a_prompt_fit_warns_where_it_reads_positions_the_model_was_never_trained_at():
    """A trained LM's laws warned (UntrainedPositionWarning) when their input was longer than it was trained
    on, but the prompt fits, which reach the network through its state with a prefix, read k + MASK + T
    positions past it without a word: those positions' learned embeddings were still random."""
    import warnings

    from simlm.errors import UntrainedPositionWarning

    cfg = TransformerConfig(n_symbols=3, d_model=8, n_layers=1, n_heads=2, max_len=8, causal=False)
    x, y = np.asarray(HMM.random(0, 2, 3).sample(0, 8, 4)), np.arange(8) % 2
    fits = ((fit_transformer_prompt, "a prompt of k = 2 vectors and a MASK before 4 tokens reads inputs of 7"),
            (fit_transformer_attention_prompt, "a prompt of k = 2 vectors before 4 tokens reads inputs of 6"))
    for fit, message in fits:
        lm = TransformerLM(init_transformer(cfg, 0), trained_length=4)
        with pytest.warns(UntrainedPositionWarning, match=message):
            fit(lm, x, y, k=2, steps=2)
        lm = TransformerLM(init_transformer(cfg, 0), trained_length=7)  # every position read was trained
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fit(lm, x, y, k=2, steps=2)


def test_a_prompt_result_predicts_one_sequence_given_without_its_batch_axis():
    """An exact world's law drops the batch axis of a 1-D input, and the head then refused its "features"
    (an argument the caller never gave; a review, 2026-12-06): one sequence is a batch of one, as the
    transformer results already took it."""
    w = HMM(np.array([.5, .5]), np.array([[.7, .3], [.4, .6]]), np.array([[.6, .1, .3], [.1, .6, .3]]))
    x = np.random.default_rng(0).integers(0, 3, (30, 3))
    y = (x[:, 0] == x[:, 2]).astype(int)
    r = fit_exact_prompt(w, x, y, steps=3, n_restarts=1)
    assert r.predict(w, x[0]).tolist() == r.predict(w, x[:1]).tolist() == r.predict(w, list(x[0])).tolist()
    assert r.accuracy(w, x[0], y[:1]) == r.accuracy(w, x[:1], y[:1])


def test_a_prompt_entry_whose_ratio_to_its_row_is_past_float64_is_refused_not_scaled_to_0():
    """Scaling U = (1e300, 1e-300) by its row's largest made the second entry exactly 0, which took a state out
    of the prompt's support: a possible input then raised ZeroProbabilityError, the prompt unnamed (a review
    2026-12-06).  Such an entry is refused, naming U, and only a narrower cast advises float64."""
    with pytest.raises(ConfigError, match=r"^U: entry \(0, 1\) is 1e-300, below the smallest normal float64"):
        prompting.check_prompt(np.array([1e300, 1e-300]), 2)
    assert prompting.check_prompt(np.array([1.0, 1e-300]), 2)[0, 1] == 1e-300  # a ratio float64 holds: kept
    with pytest.raises(ConfigError, match=r"^U: entry \(0, 1\) is 1e-320, below the smallest normal float64 times"):
        prompting.prompt_rows(np.array([1.0, 1e-320]), 2, np.float64)  # subnormal: refused before the cast
    with pytest.raises(ConfigError, match="float32; set it to 0 or compute in float64$"):
        prompting.prompt_rows(np.array([1.0, 1e-40]), 2, np.float32)


def test_the_underflow_check_is_relative_to_each_rows_largest_entry():
    """A row [1e10, 1e-30] (ratio 1e-40: flushed when read to scale) is refused and one of small scale [1e-37,
    5e-39] (ratio 0.05) kept; an absolute test passed every other test (a mutation review, 2026-12-07)."""
    from simlm.downstream.prompt_fit import check_prompt_fit
    from simlm.errors import TrainingDivergedError

    check_prompt_fit(0.69, np.array([0.5]), "a fit", np.array([[1e-37, 5e-39]]))  # ratio 0.05: fine
    with pytest.raises(TrainingDivergedError, match=r"^lr: a fit diverged: entry \(0, 1\) of its"):
        check_prompt_fit(0.69, np.array([0.5]), "a fit", np.array([[1e10, 1e-30]]))  # ratio 1e-40 < tiny
