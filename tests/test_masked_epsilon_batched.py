"""The masked ε over every position, computed in batched chunks, equals the per-position masked ε."""

import dataclasses

import numpy as np
import pytest

from simlm.metrics import epsilon as eps_module
from simlm.metrics.epsilon import divergence_report, exact_masked_epsilon
from simlm.models import TransformerConfig, TransformerLM
from simlm.models.transformer import init_transformer
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
