"""Hypothesis strategies over worlds and token sequences, for property tests (simlm's and yours).

    from hypothesis import given
    from simlm.strategies import hmms, token_sequences

    @given(hmms(max_states=3, max_symbols=3).flatmap(lambda w: token_sequences(w).map(lambda x: (w, x))))
    def test_probabilities_are_probabilities(case):
        world, tokens = case
        assert (world.log_likelihood(tokens) <= 0).all()

Worlds are small by default so that brute-force enumeration of every hidden path stays cheap.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from simlm.worlds.hmm import HMM
from simlm.worlds.loglinear import LogLinearWorld
from simlm.worlds.memory import MemoryHMM


@st.composite
def probability_vectors(draw, size: int, *, allow_zeros: bool = True, min_mass: float = 0.05):
    """A probability vector of ``size`` entries (float64).  With ``allow_zeros`` some entries are
    exactly 0 (at least one stays positive); positive entries are at least ``min_mass`` before
    normalising, so the laws are not numerically degenerate."""
    entry = st.floats(min_mass, 1.0)
    if allow_zeros:
        entry = st.one_of(st.just(0.0), entry)
    w = np.array(draw(st.lists(entry, min_size=size, max_size=size)), dtype=np.float64)
    if w.sum() == 0:
        w[draw(st.integers(0, size - 1))] = 1.0
    return w / w.sum()


@st.composite
def stochastic_matrices(draw, rows: int, cols: int, *, allow_zeros: bool = True):
    """A row-stochastic ``(rows, cols)`` matrix (float64)."""
    return np.stack([draw(probability_vectors(cols, allow_zeros=allow_zeros)) for _ in range(rows)])


@st.composite
def hmms(draw, *, min_states: int = 1, max_states: int = 4, min_symbols: int = 1, max_symbols: int = 4,
         allow_zeros: bool = True):
    """An :class:`~simlm.worlds.HMM` with K ∈ [min_states, max_states] and V ∈ [min_symbols,
    max_symbols], rows drawn by :func:`probability_vectors` (with exact zeros when ``allow_zeros``)."""
    K = draw(st.integers(min_states, max_states))
    V = draw(st.integers(min_symbols, max_symbols))
    pi = draw(probability_vectors(K, allow_zeros=allow_zeros))
    A = draw(stochastic_matrices(K, K, allow_zeros=allow_zeros))
    B = draw(stochastic_matrices(K, V, allow_zeros=allow_zeros))
    return HMM(pi, A, B)


@st.composite
def memory_hmms(draw, *, max_cells: int = 2, max_values: int = 3, max_syntactic: int = 2, min_symbols: int = 2,
                max_symbols: int = 4, allow_zeros: bool = False):
    """A :class:`~simlm.worlds.memory.MemoryHMM` with N ≤ max_cells cells, M ≤ max_values values,
    Q ≤ max_syntactic syntactic states and V ∈ [min_symbols, max_symbols], rows drawn by
    :func:`probability_vectors` (exact zeros only with ``allow_zeros``)."""
    N, M = draw(st.integers(1, max_cells)), draw(st.integers(1, max_values))
    Q, V = draw(st.integers(1, max_syntactic)), draw(st.integers(min_symbols, max_symbols))
    prior = draw(stochastic_matrices(N, M, allow_zeros=allow_zeros))
    initial = draw(probability_vectors(N * Q, allow_zeros=allow_zeros))
    transition = draw(stochastic_matrices(N * Q, N * Q, allow_zeros=allow_zeros))
    emission = draw(stochastic_matrices(M * Q, V, allow_zeros=allow_zeros)).reshape(M, Q, V)
    return MemoryHMM(prior, initial, transition, emission)


@st.composite
def loglinear_worlds(draw, *, max_states: int = 4, max_symbols: int = 4, max_dim: int = 3, scale: float = 2.0):
    """A :class:`~simlm.worlds.LogLinearWorld` with S ≤ max_states automaton states, V ≤ max_symbols
    words, d ≤ max_dim, representations and embeddings with entries in [−scale, scale], a random
    automaton table and start state."""
    from hypothesis.extra import numpy as hnp

    S = draw(st.integers(1, max_states))
    V = draw(st.integers(1, max_symbols))
    d = draw(st.integers(1, max_dim))
    floats = st.floats(-scale, scale, allow_nan=False, allow_infinity=False, width=32)
    Z = draw(hnp.arrays(np.float64, (S, d), elements=floats))
    W = draw(hnp.arrays(np.float64, (d, V), elements=floats))
    next_state = draw(hnp.arrays(np.int64, (S, V), elements=st.integers(0, S - 1)))
    return LogLinearWorld(Z, W, next_state, draw(st.integers(0, S - 1)))


@st.composite
def token_sequences(draw, world, *, min_length: int = 1, max_length: int = 6, n_sequences: int = 2,
                    possible: bool = True, after_first: bool = False):
    """An int32 ``(n, T)`` array of tokens for ``world``, T ∈ [min_length, max_length].

    ``possible=True`` samples from the world itself (from a drawn seed), so every sequence has positive
    probability; ``possible=False`` draws arbitrary ids in [0, V), which may be impossible.
    ``after_first=True`` returns positions 1..T of a sampled sequence (dropping x_0) — the input of a
    masked position prepended before x_1.  Sampling draws ``(n, max_length + 1)`` and slices, so one
    compiled sampler serves every T."""
    T = draw(st.integers(min_length, max_length))
    if possible:
        seed = draw(st.integers(0, 2**31 - 1))
        full = np.asarray(world.sample(seed, n_sequences, max_length + 1))
        return full[:, 1:T + 1] if after_first else full[:, :T]
    ids = draw(st.lists(st.integers(0, world.n_symbols - 1), min_size=n_sequences * T, max_size=n_sequences * T))
    return np.asarray(ids, dtype=np.int32).reshape(n_sequences, T)


def worlds_with_tokens(world_strategy, **token_options):
    """Pairs ``(world, tokens)``: a world from ``world_strategy`` and sequences for it."""
    return world_strategy.flatmap(lambda w: token_sequences(w, **token_options).map(lambda x: (w, x)))


__all__ = ["probability_vectors", "stochastic_matrices", "hmms", "memory_hmms", "loglinear_worlds", "token_sequences",
           "worlds_with_tokens"]
