"""Hypothesis strategies over worlds and token sequences, for property tests (simlm's and yours).

    from hypothesis import given
    from simlm.strategies import hmms, worlds_with_tokens

    @given(worlds_with_tokens(hmms(max_states=3, max_symbols=3)))
    def test_probabilities_are_probabilities(case):
        world, tokens = case
        assert (world.log_likelihood(tokens) <= 0).all()

Worlds are small by default so that brute-force enumeration of every hidden path stays cheap.  The
arguments are checked when a strategy is built (a :class:`~simlm.errors.ConfigError` naming the argument),
not when hypothesis first draws from it.

Probability rows are not drawn entry by entry (that cost hypothesis ~25 ms for an HMM with K ≤ 5 and
V ≤ 6, most of a property test's time): for each array hypothesis draws its *structure* — the share of
entries that are exactly zero, the kind of positive weights (equal, two extreme values, uniform,
log-uniform) — and a seed, and numpy builds the array from them (:func:`_build_rows`).  Shrinking still
means something: sizes first, then fewer zeros and simpler weights, down to uniform rows; and the hard
cases (exact zeros, deterministic rows, entries at ``min_mass``, a spread of tiny ones) are each one
structure draw away, so hypothesis generates them often (tests/test_strategies.py finds each).
:func:`hmms`, :func:`memory_hmms` and :func:`stochastic_matrices` take ``min_mass`` too (default 0.05; an HMM's
entries go down to 1e-30, near float32's underflow; a memory HMM's to a floor set by its number of cells).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from hypothesis import strategies as st

from simlm.checks import check_positive_int
from simlm.errors import ConfigError
from simlm.worlds.base import check_flag, check_number
from simlm.worlds.hmm import HMM
from simlm.worlds.loglinear import LogLinearWorld, max_logit
from simlm.worlds.memory import MemoryHMM

#: the kinds of positive weights in [min_mass, 1] that :func:`_build_rows` builds, simplest first
WEIGHTS = ("equal", "extremes", "uniform", "log-uniform")
#: the shares of exact zeros (of the entries, where zeros are allowed), fewest first; 1 leaves one entry a row
ZERO_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _range(low_name: str, low, high_name: str, high, minimum: int = 1) -> None:
    """``minimum ≤ low ≤ high``, both integers."""
    low = check_positive_int(low_name, low, minimum=minimum)
    if check_positive_int(high_name, high, minimum=minimum) < low:
        raise ConfigError(f"{high_name}: expected an integer ≥ {low_name} = {low}, got {high!r}")


@functools.lru_cache(maxsize=None)
def _integers(low: int, high: int) -> st.SearchStrategy:
    """``st.integers(low, high)``, built once: a strategy is validated on its first draw, which costs more
    than the draw, so the composites below draw from shared strategies instead of building new ones."""
    return st.integers(low, high)


def _build_rows(seed: int, shape: tuple, zero_share: float, weights: str, min_mass: float) -> np.ndarray:
    """Rows (the last axis of ``shape``) of probabilities, float64, built by numpy from ``seed``.

    Before normalising, each entry is a weight in [``min_mass``, 1] of the kind ``weights`` — ``"equal"`` (all
    1: uniform rows), ``"extremes"`` (``min_mass`` or 1, each with probability ½), ``"uniform"`` or
    ``"log-uniform"`` on [min_mass, 1] (tiny entries as likely as large ones) — and then each entry is set
    to exactly 0 with probability ``zero_share``; a row left all zero gets one random entry 1 (with
    ``zero_share = 1``, every row is one-hot: a deterministic law).  So every positive entry is at least
    ``min_mass`` times the row's largest."""
    rng, cols = np.random.default_rng(seed), shape[-1]
    if weights == "equal":
        w = np.ones(shape)
    elif weights == "extremes":
        w = np.where(rng.random(shape) < 0.5, min_mass, 1.0)
    elif weights == "uniform":
        w = rng.uniform(min_mass, 1.0, shape)
    else:  # "log-uniform"
        w = np.clip(np.exp(rng.uniform(math.log(min_mass), 0.0, shape)), min_mass, 1.0)
    if zero_share > 0:
        w = np.where(rng.random(shape) < zero_share, 0.0, w).reshape(-1, cols)
        dead = np.flatnonzero(w.sum(-1) == 0)
        w[dead, rng.integers(0, cols, dead.size)] = 1.0
        w = w.reshape(shape)
    return w / w.sum(-1, keepdims=True)


def _draw_rows(draw, shape: tuple, allow_zeros: bool, min_mass: float) -> np.ndarray:
    """:func:`_build_rows` from three draws — the zero share, the weights and the seed — in the order
    hypothesis should shrink them."""
    zero_share = ZERO_SHARES[draw(_integers(0, len(ZERO_SHARES) - 1))] if allow_zeros else 0.0
    weights = WEIGHTS[draw(_integers(0, len(WEIGHTS) - 1))]
    return _build_rows(draw(_integers(0, 2**32 - 1)), shape, zero_share, weights, min_mass)


@functools.lru_cache(maxsize=None)
def _rows(shape: tuple, allow_zeros: bool, min_mass: float) -> st.SearchStrategy:
    return st.composite(lambda draw: _draw_rows(draw, shape, allow_zeros, min_mass))()


#: the least ``min_mass`` :func:`probability_vectors` takes: a weight that small divided by its row's sum
#: (≤ the row's length) is still a normal float64, so an entry drawn positive stays positive (5e-324 / 2 is 0)
MIN_MASS = 1e-300
#: the least ``min_mass`` of the world strategies: their worlds store float32, whose smallest normal is 1.2e-38
#: (a weight of 1e-30 over a row sum up to 1e7 stays one)
MIN_MASS_FLOAT32 = 1e-30


def _min_mass(min_mass, floor: float) -> float:
    return check_number("min_mass", min_mass, minimum=floor, maximum=1.0)


def _memory_floor(max_cells: int, longest_row: int) -> float:
    """The least ``min_mass`` of :func:`memory_hmms`: a MemoryHMM's joint start probability multiplies one
    entry of each cell's prior and one of the initial law (N + 1 entries, each ≥ min_mass / its row's length),
    and refuses a product below float32's smallest normal number: min_mass ≥ row length × (100 × that number)
    to the power 1/(N + 1) keeps the product at least 100 times it.  (The 100 stood outside the root until
    2026-12-07, a margin of 100^(N + 1): from N = 12 no min_mass at all was accepted, a review.)"""
    tiny = float(np.finfo(np.float32).tiny)
    return max(MIN_MASS_FLOAT32, longest_row * (100.0 * tiny) ** (1.0 / (max_cells + 1)))


def probability_vectors(size: int, *, allow_zeros: bool = True, min_mass: float = 0.05):
    """A probability vector of ``size`` entries (float64).  With ``allow_zeros`` some entries are
    exactly 0 (at least one stays positive); positive entries are at least ``min_mass`` (in
    [:data:`MIN_MASS`, 1]) before normalising, so the laws are not numerically degenerate, and without
    ``allow_zeros`` no entry is 0.

    Hypothesis draws the share of exact zeros (:data:`ZERO_SHARES`; where zeros are allowed), the kind of
    positive weights (:data:`WEIGHTS`) and a numpy seed, and shrinks towards uniform vectors without zeros;
    with a zero share of 1 the vector is one-hot (:func:`_build_rows`)."""
    check_positive_int("size", size)
    return _rows((size,), check_flag("allow_zeros", allow_zeros), _min_mass(min_mass, MIN_MASS))


def stochastic_matrices(rows: int, cols: int, *, allow_zeros: bool = True, min_mass: float = 0.05):
    """A row-stochastic ``(rows, cols)`` matrix (float64), rows as in :func:`probability_vectors`."""
    check_positive_int("rows", rows)
    check_positive_int("cols", cols)
    return _rows((rows, cols), check_flag("allow_zeros", allow_zeros), _min_mass(min_mass, MIN_MASS))


def hmms(*, min_states: int = 1, max_states: int = 4, min_symbols: int = 1, max_symbols: int = 4,
         allow_zeros: bool = True, min_mass: float = 0.05):
    """An :class:`~simlm.worlds.HMM` with K ∈ [min_states, max_states] and V ∈ [min_symbols,
    max_symbols], rows drawn as in :func:`probability_vectors` (with exact zeros when ``allow_zeros``),
    each of π, A and B with its own structure.  Positive weights are at least ``min_mass`` (in
    [:data:`MIN_MASS_FLOAT32`, 1]) before normalising: the default keeps every entry above ~0.01; a tiny
    one (1e-30) reaches the near-underflow paths (the log-space reruns) — it was fixed at 0.05 until
    2026-12-06, whatever the module docstring promised."""
    _range("min_states", min_states, "max_states", max_states)
    _range("min_symbols", min_symbols, "max_symbols", max_symbols)
    return _hmms(min_states=min_states, max_states=max_states, min_symbols=min_symbols, max_symbols=max_symbols,
                 allow_zeros=check_flag("allow_zeros", allow_zeros), min_mass=_min_mass(min_mass, MIN_MASS_FLOAT32))


@st.composite
def _hmms(draw, *, min_states, max_states, min_symbols, max_symbols, allow_zeros, min_mass):
    K = draw(_integers(min_states, max_states))
    V = draw(_integers(min_symbols, max_symbols))
    return HMM(*(_draw_rows(draw, shape, allow_zeros, min_mass) for shape in ((K,), (K, K), (K, V))))


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
    K = draw(_integers(min_states, max_states))
    V = draw(_integers(min_symbols, max_symbols))
    d = draw(_integers(1, min(max_out_degree, K)))
    return HMM.random(draw(_integers(0, 2**31 - 1)), K, V, family="sparse", out_degree=d)


def task_vectors(n_states: int, *, max_support: int | None = None):
    """A task vector μ (K,) float64 for y = 1[μᵀP ≥ 0]: a nonempty support of at most ``max_support``
    states (default K), each weight ±[0.1, 1] (never 0 on the support, so supp μ is what was drawn).  A μ of
    0s and 1s alone (every weight +1; it labels every input 1) is never drawn: it is a documented refusal of
    :func:`~simlm.theory.head_prompt.failure_certificate`, which reads such an array as ambiguous labels, and
    shrinking went straight to it (weights shrink towards 1), so a failing property reported that refusal."""
    K = check_positive_int("n_states", n_states)
    top = K if max_support is None else min(check_positive_int("max_support", max_support), K)
    return _task_vectors(K, top).filter(lambda mu: not np.isin(mu, (0.0, 1.0)).all())


_WEIGHT, _SIGN = st.floats(0.1, 1.0), st.sampled_from([-1.0, 1.0])


@st.composite
def _task_vectors(draw, K, top):
    support = draw(st.lists(_integers(0, K - 1), min_size=1, max_size=top, unique=True))
    mu = np.zeros(K)
    for h in support:
        mu[h] = draw(_WEIGHT) * draw(_SIGN)
    return mu


def memory_hmms(*, max_cells: int = 2, max_values: int = 3, max_syntactic: int = 2, min_symbols: int = 2,
                max_symbols: int = 4, allow_zeros: bool = False, min_mass: float = 0.05):
    """A :class:`~simlm.worlds.memory.MemoryHMM` with N ≤ max_cells cells, M ≤ max_values values,
    Q ≤ max_syntactic syntactic states and V ∈ [min_symbols, max_symbols], rows drawn as in
    :func:`probability_vectors` (exact zeros only with ``allow_zeros``; ``min_mass`` as in :func:`hmms`, down
    to :func:`_memory_floor` — 4.2e-12 at the default sizes — where the joint start probability, a product of
    N + 1 entries, stays a normal float32)."""
    for name, value in (("max_cells", max_cells), ("max_values", max_values), ("max_syntactic", max_syntactic)):
        check_positive_int(name, value)
    _range("min_symbols", min_symbols, "max_symbols", max_symbols)
    floor = _memory_floor(max_cells, max(max_values, max_cells * max_syntactic))
    return _memory_hmms(max_cells=max_cells, max_values=max_values, max_syntactic=max_syntactic,
                        min_symbols=min_symbols, max_symbols=max_symbols,
                        allow_zeros=check_flag("allow_zeros", allow_zeros), min_mass=_min_mass(min_mass, floor))


@st.composite
def _memory_hmms(draw, *, max_cells, max_values, max_syntactic, min_symbols, max_symbols, allow_zeros, min_mass):
    N, M = draw(_integers(1, max_cells)), draw(_integers(1, max_values))
    Q, V = draw(_integers(1, max_syntactic)), draw(_integers(min_symbols, max_symbols))
    prior, initial, transition, emission = (_draw_rows(draw, shape, allow_zeros, min_mass) for shape in
                                            ((N, M), (N * Q,), (N * Q, N * Q), (M * Q, V)))
    return MemoryHMM(prior, initial, transition, emission.reshape(M, Q, V))


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


@functools.lru_cache(maxsize=None)
def _arrays(dtype, shape: tuple, elements: st.SearchStrategy) -> st.SearchStrategy:
    from hypothesis.extra import numpy as hnp

    return hnp.arrays(dtype, shape, elements=elements)


@functools.lru_cache(maxsize=None)
def _bounded_floats(scale: float) -> st.SearchStrategy:
    return st.floats(-scale, scale, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def _loglinear_worlds(draw, *, max_states, max_symbols, max_dim, scale):
    S = draw(_integers(1, max_states))
    V = draw(_integers(1, max_symbols))
    d = draw(_integers(1, max_dim))
    floats = _bounded_floats(scale)
    Z = draw(_arrays(np.float64, (S, d), floats))
    W = draw(_arrays(np.float64, (d, V), floats))
    next_state = draw(_arrays(np.int64, (S, V), _integers(0, S - 1)))
    return LogLinearWorld(Z, W, next_state, draw(_integers(0, S - 1)))


def token_sequences(world, *, min_length: int = 1, max_length: int = 6, n_sequences: int = 2,
                    possible: bool = True, after_first: bool = False):
    """An int32 ``(n, T)`` array of tokens for ``world``, T ∈ [min_length, max_length].

    ``possible=True`` samples from the world itself (from a drawn seed), so every sequence has positive
    probability; ``possible=False`` draws arbitrary ids in [0, V), which may be impossible.
    ``after_first=True`` returns positions 1..T of a sampled sequence (dropping x_0) — the input of a masked position
    prepended before x_1: possible after that position (an HMM's chain started from πA), not necessarily as a
    sequence of its own (from π), so ``log_likelihood`` may be −inf on it and the next-token laws may refuse it,
    while the prepended laws answer. Sampling draws ``(n, max_length + 1)`` and slices, so one compiled sampler
    serves every T."""
    if not (hasattr(world, "n_symbols") and callable(getattr(world, "sample", None))):
        raise ConfigError(f"world: expected a simlm world (with n_symbols and sample), got {type(world).__name__}")
    options = _token_options(min_length=min_length, max_length=max_length, n_sequences=n_sequences,
                             possible=possible, after_first=after_first)
    return st.composite(lambda draw: _draw_tokens(draw, world, **options))()


def _token_options(*, min_length: int = 1, max_length: int = 6, n_sequences: int = 2, possible: bool = True,
                   after_first: bool = False) -> dict:
    """The options of :func:`token_sequences`, checked (an unknown one is a ConfigError naming it)."""
    _range("min_length", min_length, "max_length", max_length)
    check_positive_int("n_sequences", n_sequences)
    return dict(min_length=min_length, max_length=max_length, n_sequences=n_sequences,
                possible=check_flag("possible", possible), after_first=check_flag("after_first", after_first))


@functools.lru_cache(maxsize=None)
def _token_ids(n_symbols: int, size: int) -> st.SearchStrategy:
    return st.lists(_integers(0, n_symbols - 1), min_size=size, max_size=size)


def _draw_tokens(draw, world, *, min_length, max_length, n_sequences, possible, after_first):
    T = draw(_integers(min_length, max_length))
    if possible:
        seed = draw(_integers(0, 2**31 - 1))
        full = np.asarray(world.sample(seed, n_sequences, max_length + 1))
        return full[:, 1:T + 1] if after_first else full[:, :T]
    ids = draw(_token_ids(world.n_symbols, n_sequences * T))
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
    return _worlds_with_tokens(world_strategy, _token_options(**token_options))


@st.composite
def _worlds_with_tokens(draw, world_strategy, options):
    # not flatmap: that builds (and validates) a new token strategy for every world drawn
    world = draw(world_strategy)
    return world, _draw_tokens(draw, world, **options)


__all__ = ["probability_vectors", "stochastic_matrices", "hmms", "sparse_hmms", "task_vectors", "memory_hmms",
           "loglinear_worlds", "token_sequences", "worlds_with_tokens"]
