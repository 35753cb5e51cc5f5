"""The masked ε over every position, computed in batched chunks, equals the per-position masked ε; the
trainer's held-out ε, scored in chunks of sequences, equals the one-batch ε."""

import dataclasses

import jax
import jax.extend.core
import numpy as np
import pytest

from simlm.errors import ConfigError
from simlm.metrics import epsilon as eps_module
from simlm.metrics.epsilon import divergence_report, exact_masked_epsilon
from simlm.models import TransformerConfig, TransformerLM
from simlm.models.transformer import init_transformer
from simlm.train import TrainConfig
from simlm.train.trainer import EVAL_CHUNK_TOKENS, Training, eval_chunk_sequences
from simlm.worlds import HMM

V, T, N = 4, 6, 3


@pytest.fixture(scope="module")
def case():
    world = HMM.random(0, 3, V)
    lm = TransformerLM(init_transformer(TransformerConfig(n_symbols=V, d_model=8, n_layers=1, n_heads=2,
                                                          max_len=T, causal=False), 0))
    return world, lm, np.asarray(world.sample(1, N, T))


def test_masked_epsilon_at_every_position_is_the_mean_of_the_per_position_ones(case):
    world, lm, x = case
    every, _ = exact_masked_epsilon(world, lm, x)
    one_by_one = [exact_masked_epsilon(world, lm, x, positions=[t])[0] for t in range(T)]
    assert every > 0
    np.testing.assert_allclose(every, np.mean(one_by_one), rtol=1e-6)


def test_chunking_the_positions_changes_nothing(case, monkeypatch):
    world, lm, x = case
    whole_eps = exact_masked_epsilon(world, lm, x)
    whole = divergence_report(world, lm, x, masked=True)
    # a budget of 3 masked copies per LM call: P = 6 positions in two chunks (one compiled shape)
    monkeypatch.setattr(eps_module, "MASKED_CHUNK_FLOATS", 3 * N * T * V)
    np.testing.assert_allclose(exact_masked_epsilon(world, lm, x), whole_eps, rtol=1e-6)
    chunked = divergence_report(world, lm, x, masked=True)
    np.testing.assert_allclose(dataclasses.astuple(chunked)[:10], dataclasses.astuple(whole)[:10], rtol=1e-6, atol=1e-9)
    assert (chunked.n_positions, chunked.n_sequences) == (whole.n_positions, whole.n_sequences) == (N * T, N)


def _recording(lm, calls):
    """``lm`` seen through an LM that records the positions of each masked call."""
    class Recording:
        n_symbols = V

        def masked_token_logprobs(self, tokens, positions=None):
            calls.append(list(np.asarray(positions)))
            return lm.masked_token_logprobs(tokens, positions)

    return Recording()


def _chunked(case, positions, copies, monkeypatch):
    """(one call's report, the report with a budget of ``copies`` masked copies per call, the calls made)."""
    world, lm, x = case
    whole = divergence_report(world, lm, x, masked=True, positions=positions)
    calls = []
    monkeypatch.setattr(eps_module, "MASKED_CHUNK_FLOATS", copies * N * T * V)
    chunked = divergence_report(world, _recording(lm, calls), x, masked=True, positions=positions)
    np.testing.assert_allclose(dataclasses.astuple(chunked)[:10], dataclasses.astuple(whole)[:10], rtol=1e-6, atol=1e-9)
    return whole, chunked, calls


def test_an_uneven_last_chunk_weighs_its_positions_alone(case, monkeypatch):
    """P = 5 positions in chunks of 2: 2 + 2 + 1, the last chunk's mean weighted by 1 of 5 — the same ε, TV
    and cross-entropies as one call, and ε the mean of the five single-position ε.  (A repeated position is
    refused: the mean is over a set of positions.)"""
    world, lm, x = case
    positions = [4, 0, 3, 2, 1]
    _, chunked, calls = _chunked(case, positions, 2, monkeypatch)
    assert calls == [[4, 0], [3, 2], [1]]
    assert (chunked.n_positions, chunked.n_sequences) == (5 * N, N)
    one_by_one = [exact_masked_epsilon(world, lm, x, positions=[t])[0] for t in positions]
    np.testing.assert_allclose(exact_masked_epsilon(world, _recording(lm, []), x, positions=positions)[0],
                               np.mean(one_by_one), rtol=1e-6)


def test_a_budget_of_one_masked_copy_asks_for_one_position_per_call(case, monkeypatch):
    """P_c is the largest count with n·P_c·T·V ≤ MASKED_CHUNK_FLOATS: a budget of exactly n·T·V floats is one
    masked position per LM call, and the report is that of one call."""
    _, _, calls = _chunked(case, [4, 0, 3], 1, monkeypatch)
    assert calls == [[4], [0], [3]]


def test_the_trainers_chunked_evaluation_equals_one_batch(case):
    """``Training.evaluate`` scores the held-out set a few sequences at a time on a CPU; chunks of 2 of 3
    sequences (the last chunk padded with a copy of the first sequence, whose values are dropped) give the
    one-batch ε and TV and their standard errors, for each seed."""
    world = case[0]  # the same world and shapes as above, so the world's compiled laws are reused
    model = TransformerConfig(n_symbols=V, d_model=8, n_layers=1, n_heads=2, max_len=T, causal=False)
    config = TrainConfig(objective="masked-lm", seeds=(0, 1), seq_len=T, eval_sequences=N, eval_positions=4)
    whole = Training(world, model, config, eval_chunk=N)
    params = whole.init_state().params
    chunked = Training(world, model, config, eval_chunk=2).evaluate(params)
    np.testing.assert_allclose(chunked, whole.evaluate(params), rtol=1e-5, atol=1e-8)
    assert chunked[0] != chunked[1]  # two members, each scored on its own parameters


def _products(jaxpr) -> int:
    """dot_general equations in a jaxpr, its sub-jaxprs (scan bodies, calls) included."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == "dot_general"
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            n += _products(sub)
    return n


def test_a_chunk_that_does_not_divide_the_held_out_set_compiles_the_model_once(case):
    """The last chunk is padded rather than scored as a shorter remainder, which was a second compiled copy of
    the model: its compile cost an experiment-1 run ~0.8 s and each evaluation ~10 % of its time."""
    model = TransformerConfig(n_symbols=V, d_model=8, n_layers=1, n_heads=2, max_len=T, causal=False)
    config = TrainConfig(objective="masked-lm", seeds=(0, 1), seq_len=T, eval_sequences=N, eval_positions=4)
    counts = {}
    for chunk in (N, 2):
        run = Training(case[0], model, config, eval_chunk=chunk)
        counts[chunk] = _products(jax.make_jaxpr(run._evaluate)(run.init_state().params, run.eval_tokens,
                                                                 run.eval_ref).jaxpr)
    assert counts[N] > 0 and counts[2] == counts[N]


def test_the_default_chunk_follows_the_backend():
    config = TrainConfig(objective="masked-lm", seq_len=17, eval_sequences=64, eval_positions=8)
    budget = EVAL_CHUNK_TOKENS // (8 * 17)
    assert budget == 7 and eval_chunk_sequences(config, "cpu") == 8  # 7 would score 70 sequences, 8 scores 64
    assert eval_chunk_sequences(config, "gpu") == 64
    assert eval_chunk_sequences(TrainConfig(seq_len=4096, eval_sequences=64), "cpu") == 1
    assert eval_chunk_sequences(dataclasses.replace(config, eval_sequences=61), "cpu") == 7  # 63 scored, nearest 7
    assert eval_chunk_sequences(dataclasses.replace(config, eval_sequences=5), "cpu") == 5  # the budget covers it
    with pytest.raises(ConfigError, match="eval_chunk"):
        Training(HMM.random(0, 3, V), TransformerConfig(n_symbols=V, d_model=8, n_layers=1, n_heads=2, max_len=T),
                 TrainConfig(seq_len=T), eval_chunk=0)
