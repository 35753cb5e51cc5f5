"""Hypothesis strategies over worlds and token sequences, for property tests (simlm's and yours).

    from hypothesis import given
    from simlm.strategies import hmms, token_sequences

    @given(hmms(max_states=3, max_symbols=3).flatmap(lambda w: token_sequences(w).map(lambda x: (w, x))))
    def test_probabilities_are_probabilities(case):
        world, tokens = case
        assert (world.log_likelihood(tokens) <= 0).all()

Worlds are small by default so that brute-force enumeration of every hidden path stays cheap.  The
arguments are checked when a strategy is built (a :class:`~simlm.errors.ConfigError` naming the argument),
not when hypothesis first draws from it.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from simlm.checks import check_positive_int
from simlm.errors import ConfigError
from simlm.worlds.base import check_flag, check_number
from simlm.worlds.hmm import HMM
from simlm.worlds.loglinear import LogLinearWorld, max_logit
from simlm.worlds.memory import MemoryHMM


def _range(low_name: str, low, high_name: str, high, minimum: int = 1) -> None:
    """``minimum ≤ low ≤ high``, both integers."""
    low = check_positive_int(low_name, low, minimum=minimum)
    if check_positive_int(high_name, high, minimum=minimum) < low:
        raise ConfigError(f"{high_name}: expected an integer ≥ {low_name} = {low}, got {high!r}")


def probability_vectors(size: int, *, allow_zeros: bool = True, min_mass: float = 0.05):
    """A probability vector of ``size`` entries (float64).  With ``allow_zeros`` some entries are
    exactly 0 (at least one stays positive); positive entries are at least ``min_mass`` (in (0, 1]) before
    normalising, so the laws are not numerically degenerate."""
    check_positive_int("size", size)
    check_flag("allow_zeros", allow_zeros)
    return _probability_vectors(size, allow_zeros=allow_zeros,
                                min_mass=check_number("min_mass", min_mass, positive=True, maximum=1.0))


@st.composite
def _probability_vectors(draw, size: int, *, allow_zeros: bool = True, min_mass: float = 0.05):
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


def stochastic_matrices(rows: int, cols: int, *, allow_zeros: bool = True):
    """A row-stochastic ``(rows, cols)`` matrix (float64)."""
    check_positive_int("rows", rows)
    check_positive_int("cols", cols)
    return _stochastic_matrices(rows, cols, allow_zeros=check_flag("allow_zeros", allow_zeros))


@st.composite
def _stochastic_matrices(draw, rows: int, cols: int, *, allow_zeros: bool = True):
    return np.stack([draw(probability_vectors(cols, allow_zeros=allow_zeros)) for _ in range(rows)])


def hmms(*, min_states: int = 1, max_states: int = 4, min_symbols: int = 1, max_symbols: int = 4,
         allow_zeros: bool = True):
    """An :class:`~simlm.worlds.HMM` with K ∈ [min_states, max_states] and V ∈ [min_symbols,
    max_symbols], rows drawn by :func:`probability_vectors` (with exact zeros when ``allow_zeros``)."""
    _range("min_states", min_states, "max_states", max_states)
    _range("min_symbols", min_symbols, "max_symbols", max_symbols)
    return _hmms(min_states=min_states, max_states=max_states, min_symbols=min_symbols, max_symbols=max_symbols,
                 allow_zeros=check_flag("allow_zeros", allow_zeros))


@st.composite
def _hmms(draw, *, min_states, max_states, min_symbols, max_symbols, allow_zeros):
    K = draw(st.integers(min_states, max_states))
    V = draw(st.integers(min_symbols, max_symbols))
    pi = draw(probability_vectors(K, allow_zeros=allow_zeros))
    A = draw(stochastic_matrices(K, K, allow_zeros=allow_zeros))
    B = draw(stochastic_matrices(K, V, allow_zeros=allow_zeros))
    return HMM(pi, A, B)


def sparse_hmms(*, min_states: int = 2, max_states: int = 5, min_symbols: int = 2, max_symbols: int = 4,
                max_out_degree: int = 3):
    """An :class:`~simlm.worlds.HMM` from the ``"sparse"`` family (exact zeros in the transitions: each row
    of A on ``out_degree`` ∈ [1, max_out_degree] states), K ∈ [min_states, max_states], V ∈ [min_symbols,
    max_symbols] — worlds where Wei, Xie & Ma's prompt condition can hold exactly."""
    _range("min_states", min_states, "max_states", max_states)
    _range("min_symbols", min_symbols, "max_symbols", max_symbols)
    check_positive_int("max_out_degree", max_out_degree)
    return _sparse_hmms(min_states=min_states, max_states=max_states, min_symbols=min_symbols,
                        max_symbols=max_symbols, max_out_degree=max_out_degree)


@st.composite
def _sparse_hmms(draw, *, min_states, max_states, min_symbols, max_symbols, max_out_degree):
    K = draw(st.integers(min_states, max_states))
    V = draw(st.integers(min_symbols, max_symbols))
    d = draw(st.integers(1, min(max_out_degree, K)))
    return HMM.random(draw(st.integers(0, 2**31 - 1)), K, V, family="sparse", out_degree=d)


def task_vectors(n_states: int, *, max_support: int | None = None):
    """A task vector μ (K,) float64 for y = 1[μᵀP ≥ 0]: a nonempty support of at most ``max_support``
    states (default K), each weight ±[0.1, 1] (never 0 on the support, so supp μ is what was drawn)."""
    K = check_positive_int("n_states", n_states)
    top = K if max_support is None else min(check_positive_int("max_support", max_support), K)
    return _task_vectors(K, top)


@st.composite
def _task_vectors(draw, K, top):
    support = draw(st.lists(st.integers(0, K - 1), min_size=1, max_size=top, unique=True))
    mu = np.zeros(K)
    for h in support:
        mu[h] = draw(st.floats(0.1, 1.0)) * draw(st.sampled_from([-1.0, 1.0]))
    return mu


def memory_hmms(*, max_cells: int = 2, max_values: int = 3, max_syntactic: int = 2, min_symbols: int = 2,
                max_symbols: int = 4, allow_zeros: bool = False):
    """A :class:`~simlm.worlds.memory.MemoryHMM` with N ≤ max_cells cells, M ≤ max_values values,
    Q ≤ max_syntactic syntactic states and V ∈ [min_symbols, max_symbols], rows drawn by
    :func:`probability_vectors` (exact zeros only with ``allow_zeros``)."""
    for name, value in (("max_cells", max_cells), ("max_values", max_values), ("max_syntactic", max_syntactic)):
        check_positive_int(name, value)
    _range("min_symbols", min_symbols, "max_symbols", max_symbols)
    return _memory_hmms(max_cells=max_cells, max_values=max_values, max_syntactic=max_syntactic,
                        min_symbols=min_symbols, max_symbols=max_symbols,
                        allow_zeros=check_flag("allow_zeros", allow_zeros))


@st.composite
def _memory_hmms(draw, *, max_cells, max_values, max_syntactic, min_symbols, max_symbols, allow_zeros):
    N, M = draw(st.integers(1, max_cells)), draw(st.integers(1, max_values))
    Q, V = draw(st.integers(1, max_syntactic)), draw(st.integers(min_symbols, max_symbols))
    prior = draw(stochastic_matrices(N, M, allow_zeros=allow_zeros))
    initial = draw(probability_vectors(N * Q, allow_zeros=allow_zeros))
    transition = draw(stochastic_matrices(N * Q, N * Q, allow_zeros=allow_zeros))
    emission = draw(stochastic_matrices(M * Q, V, allow_zeros=allow_zeros)).reshape(M, Q, V)
    return MemoryHMM(prior, initial, transition, emission)


def loglinear_worlds(*, max_states: int = 4, max_symbols: int = 4, max_dim: int = 3, scale: float = 2.0):
    """A :class:`~simlm.worlds.LogLinearWorld` with S ≤ max_states automaton states, V ≤ max_symbols
    words, d ≤ max_dim, representations and embeddings with entries in [−scale, scale], a random
    automaton table and start state.  ``scale`` is rounded down to a float32, and the logits, up to
    max_dim·scale², must be within :func:`simlm.worlds.loglinear.max_logit`."""
    for name, value in (("max_states", max_states), ("max_symbols", max_symbols), ("max_dim", max_dim)):
        check_positive_int(name, value)
    top = math.sqrt(max_logit(max_dim) / max_dim)  # LogLinearWorld's limit on the logits, d·scale²
    s = check_number("scale", scale, positive=True, maximum=top)
    s32 = np.float32(s)
    s32 = float(s32 if s32 <= s else np.nextafter(s32, np.float32(0)))  # exactly a float32 (width=32 below)
    if s32 <= 0:
        raise ConfigError(f"scale: {scale!r} is below the smallest positive float32")
    return _loglinear_worlds(max_states=max_states, max_symbols=max_symbols, max_dim=max_dim, scale=s32)


@st.composite
def _loglinear_worlds(draw, *, max_states, max_symbols, max_dim, scale):
    from hypothesis.extra import numpy as hnp

    S = draw(st.integers(1, max_states))
    V = draw(st.integers(1, max_symbols))
    d = draw(st.integers(1, max_dim))
    floats = st.floats(-scale, scale, allow_nan=False, allow_infinity=False, width=32)
    Z = draw(hnp.arrays(np.float64, (S, d), elements=floats))
    W = draw(hnp.arrays(np.float64, (d, V), elements=floats))
    next_state = draw(hnp.arrays(np.int64, (S, V), elements=st.integers(0, S - 1)))
    return LogLinearWorld(Z, W, next_state, draw(st.integers(0, S - 1)))


def token_sequences(world, *, min_length: int = 1, max_length: int = 6, n_sequences: int = 2,
                    possible: bool = True, after_first: bool = False):
    """An int32 ``(n, T)`` array of tokens for ``world``, T ∈ [min_length, max_length].

    ``possible=True`` samples from the world itself (from a drawn seed), so every sequence has positive
    probability; ``possible=False`` draws arbitrary ids in [0, V), which may be impossible.
    ``after_first=True`` returns positions 1..T of a sampled sequence (dropping x_0) — the input of a
    masked position prepended before x_1.  Sampling draws ``(n, max_length + 1)`` and slices, so one
    compiled sampler serves every T."""
    if not (hasattr(world, "n_symbols") and callable(getattr(world, "sample", None))):
        raise ConfigError(f"world: expected a simlm world (with n_symbols and sample), got {type(world).__name__}")
    return _token_sequences(world, **_token_options(min_length=min_length, max_length=max_length,
                                                    n_sequences=n_sequences, possible=possible,
                                                    after_first=after_first))


def _token_options(*, min_length: int = 1, max_length: int = 6, n_sequences: int = 2, possible: bool = True,
                   after_first: bool = False) -> dict:
    """The options of :func:`token_sequences`, checked (an unknown one is a ConfigError naming it)."""
    _range("min_length", min_length, "max_length", max_length)
    check_positive_int("n_sequences", n_sequences)
    return dict(min_length=min_length, max_length=max_length, n_sequences=n_sequences,
                possible=check_flag("possible", possible), after_first=check_flag("after_first", after_first))


@st.composite
def _token_sequences(draw, world, *, min_length, max_length, n_sequences, possible, after_first):
    T = draw(st.integers(min_length, max_length))
    if possible:
        seed = draw(st.integers(0, 2**31 - 1))
        full = np.asarray(world.sample(seed, n_sequences, max_length + 1))
        return full[:, 1:T + 1] if after_first else full[:, :T]
    ids = draw(st.lists(st.integers(0, world.n_symbols - 1), min_size=n_sequences * T, max_size=n_sequences * T))
    return np.asarray(ids, dtype=np.int32).reshape(n_sequences, T)


def worlds_with_tokens(world_strategy, **token_options):
    """Pairs ``(world, tokens)``: a world from ``world_strategy`` and sequences for it (``token_options``
    are those of :func:`token_sequences`)."""
    if not isinstance(world_strategy, st.SearchStrategy):
        raise ConfigError(f"world_strategy: expected a hypothesis strategy of worlds (e.g. hmms()), got "
                          f"{type(world_strategy).__name__}")
    unknown = sorted(set(token_options) - {"min_length", "max_length", "n_sequences", "possible", "after_first"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: not an option of token_sequences")
    options = _token_options(**token_options)
    return world_strategy.flatmap(lambda w: token_sequences(w, **options).map(lambda x: (w, x)))


__all__ = ["probability_vectors", "stochastic_matrices", "hmms", "sparse_hmms", "task_vectors", "memory_hmms", "loglinear_worlds", "token_sequences",
           "worlds_with_tokens"]
