"""The Bayes-optimal masked predictor under BERT corruption, exactly, by forward–backward (Tzach et al. 2025).

Corruption (Devlin et al. 2019; simlm's ``masked-lm`` objective): each position is *selected* with
probability q (``rate``, 0.15); a selected token is replaced by MASK with probability a (0.8), by a
uniformly random symbol with probability b (0.1) — which may be the token itself — or kept with
probability c (0.1).  Positions are corrupted independently, so the corruption is a memoryless noisy
channel y_t ~ C(· | x_t) on every position, which folds into the HMM's emission likelihoods (derived):

    selected position:  C_sel(MASK | x) = a,          C_sel(v | x) = c·1[v = x] + b/V
    selection unknown:  C(MASK | x) = q·a,            C(v | x) = (1 − q + q·c)·1[v = x] + q·b/V
    ℓ_t(h) = Σ_x B[h, x] C(y_t | x)  =  q·a  (MASK)   or   (1 − q + q·c)·B[h, v] + q·b/V  (symbol v).

The masked-LM loss counts selected positions only, so the Bayes decision at position t is read from
P(x_t | y, s_t = 1): with α, β the forward and backward messages over the likelihoods ℓ_j (j ≠ t),

    P(h_t | y_−t) ∝ P(h_t | y_<t) ∘ β_t,      P(x_t = x | y, s_t = 1) ∝ [P(h_t | y_−t) B]_x · C_sel(y_t | x),

one forward–backward for every position at once (x_t's own likelihood enters neither message).  Where no
selected position can show y_t (a symbol under plain masking) the law is the unselected one, ∝ [P(h_t | y_−t)
B]_x · C(y_t | x) — for plain masking the observed token itself.  The
predictor is argmax_x of that law.  Plain masking is corruption (1, 0, 0): at a MASK the law is
P(h_t | y_−t) B, which equals the single-mask law P(x_t | x_−t) of :meth:`HMM.masked_token_probs` when no
other position is masked.  The scaled recursion is :mod:`simlm.worlds.hmm_core`'s, run on a per-position
"emission" ℓ (``emission = ℓᵀ``, ``tokens = 0..T−1``), so nothing here re-implements it.

:func:`local_bayes_probs` is the best predictor that sees only the corrupted token and its position —
the reference for a transformer's embedding layer (block 0): P(x_t | y_t, t, s_t = 1) ∝ [P(h_t) B]_x C_sel(y_t | x).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import as_rng, check_memory, check_positive_int, check_tokens
from simlm.errors import ConfigError, TokenError
from simlm.precision import exact, in_float64
from simlm.worlds import hmm_core as core
from simlm.worlds.base import check_flag, check_number


class Corruption(NamedTuple):
    """BERT corruption: selection ``rate`` q and, for a selected token, the probabilities of MASK, a random
    symbol and keeping it (``mask``, ``random``, ``keep``), summing to 1."""

    rate: float = 0.15
    mask: float = 0.8
    random: float = 0.1
    keep: float = 0.1


def check_corruption(corruption) -> Corruption:
    """A :class:`Corruption` from itself, a 4-tuple or a 1-D array of 4; a :class:`ConfigError` names the bad
    field.  mask + random + keep must be 1 within 1e-6, and are divided by their sum where it is more than
    rounding off 1 (the channels used them as given, where :func:`corrupt` divided)."""
    if isinstance(corruption, np.ndarray) and corruption.ndim == 1:
        corruption = tuple(corruption.tolist())
    if not isinstance(corruption, (tuple, list)) or len(corruption) != 4:
        raise ConfigError(f"corruption: expected (rate, mask, random, keep), got {corruption!r}")
    vals = [check_number(f"corruption.{f}", v, minimum=0.0, maximum=1.0) for f, v in zip(Corruption._fields, corruption)]
    if vals[0] <= 0:
        raise ConfigError(f"corruption.rate: expected a rate in (0, 1], got {vals[0]!r}")
    total = sum(vals[1:])
    if abs(total - 1) > 1e-6:
        raise ConfigError(f"corruption: mask + random + keep must be 1, got {total!r}")
    if abs(total - 1) <= 1e-12:  # a sum's rounding (0.6 + 0.3 + 0.1): kept, numbers as given
        return Corruption(*vals)
    return Corruption(vals[0], *(v / total for v in vals[1:]))


def channels(corruption: Corruption, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """``(C, C_sel)``, each ``(V + 1, V)`` float64: row y (y = V is MASK), column x = P(y | x) for any position
    (selection marginalised) and for a selected one."""
    q, a, b, c = check_corruption(corruption)
    V = check_positive_int("n_symbols", n_symbols)
    check_memory("n_symbols", 4 * (V + 1) * V, itemsize=8, what="the channel matrices")
    sel = np.vstack([c * np.eye(V) + b / V, np.full((1, V), a)])
    any_ = np.vstack([(1 - q) * np.eye(V), np.zeros((1, V))]) + q * sel
    return any_, sel


def corrupt(seed, tokens, corruption: Corruption, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample BERT corruption of ``tokens (n, T)`` with numpy's generator from ``seed``: returns ``(inputs (n, T),
    selected (n, T) bool)`` with MASK written as id ``n_symbols`` (the transformer's ``mask_id``).  The law of
    the ``masked-lm`` objective's draws (:func:`simlm.train.objectives.masked_lm`), host-side: nothing to
    compile."""
    corruption = check_corruption(corruption)
    if isinstance(n_symbols, (bool, np.bool_)) or not isinstance(n_symbols, (int, np.integer)) or n_symbols < 1:
        raise ConfigError(f"n_symbols: expected a positive integer, got {n_symbols!r}")
    toks, _ = check_tokens(tokens, int(n_symbols))
    rng = as_rng(seed)
    chosen = rng.random(toks.shape) < corruption.rate
    how = rng.choice(3, size=toks.shape, p=np.asarray(corruption[1:]) / sum(corruption[1:]))
    rand = rng.integers(0, n_symbols, toks.shape)
    inputs = np.where(chosen & (how == 0), n_symbols, toks)
    inputs = np.where(chosen & (how == 1), rand, inputs).astype(np.int32)
    return inputs, chosen


@exact
def corrupted_posterior(initial, transition, emission, channel, channel_selected, inputs, parallel=None):
    """One sequence: ``(P(x_t = · | y, s_t = 1) (T, V), P(h_t | y_−t) (T, K))`` for corrupted ``inputs (T,)``
    (ids 0..V, V = MASK) and the channel matrices of :func:`channels`.  Pure, jit/vmap-able; ``parallel``
    as in :mod:`simlm.worlds.hmm_core` (:func:`bayes_corrupted_probs` checks the float range and reruns in
    log space)."""
    like = (emission @ channel.T).T[inputs]  # (T, K): ℓ_t(h) = Σ_x B[h, x] C(y_t | x)
    steps = jnp.arange(inputs.shape[0])
    (state, _), low = core._split(parallel, core.masked_state_posterior(initial, transition, like.T, steps, parallel))
    prior = state @ emission
    law = prior * channel_selected[inputs]
    # a token no selected position can show (plain masking: any symbol) is unselected: P(x_t | y, s_t = 0)
    law = jnp.where(law.sum(-1, keepdims=True) > 0, law, prior * channel[inputs])
    out = (law / law.sum(-1, keepdims=True), state)
    return (out, low < core.floor(transition, like.T)) if core._is_checked(parallel) else out


def _batched(parallel):
    return jax.jit(jax.vmap(partial(corrupted_posterior, parallel=parallel), in_axes=(None, None, None, None, None, 0)))


#: every sequence by the scaled filter, with whether a share left the float range; the log-space rerun
_batched_posterior, _exact_posterior = _batched(core.CHECKED), _batched(core.LOG_SPACE)


def check_chain_world(world, *, states: bool = False):
    """``world`` if it has an exact hidden chain (an HMM-backed world: ``.chain``, ``.sample``), else a
    ConfigError naming ``world``.  With ``states``, its hidden states must also be its chain's — ``n_states``
    of them, the states ``sample(..., return_states=True)`` and ``state_posterior`` give — as an HMM's are: a
    MemoryHMM's chain runs over (memory, cell, state), its states over (cell, state), and is refused (its
    ``joint_hmm()`` is the chain as an HMM)."""
    if not callable(getattr(world, "sample", None)) or not isinstance(getattr(world, "chain", None), core.Chain):
        raise ConfigError(f"world: expected a world with an exact hidden chain (an HMM), got {type(world).__name__}")
    if check_flag("states", states) and not (callable(getattr(world, "state_posterior", None))
                                             and getattr(world, "n_states", None) == world.chain.initial.shape[-1]):
        hint = "; its joint_hmm() is its chain as an HMM" if callable(getattr(world, "joint_hmm", None)) else ""
        raise ConfigError(f"world: expected an HMM, whose hidden states are its chain's, got {type(world).__name__}"
                          f"{hint}")
    return world


def _inputs(world, inputs) -> np.ndarray:
    check_chain_world(world)
    V = int(world.n_symbols)
    try:
        y = np.asarray(inputs)
    except ValueError:
        raise TokenError("inputs: expected corrupted ids of shape (n, T), got rows of unequal length") from None
    if y.ndim != 2 or y.dtype.kind not in "iu" or y.size == 0:
        raise TokenError(f"inputs: expected non-empty integer ids of shape (n, T), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() > V:
        raise TokenError(f"inputs: ids must lie in [0, {V}] ({V} is MASK), got range [{y.min()}, {y.max()}]")
    return y.astype(np.int32)


def bayes_corrupted_probs(world, inputs, corruption=Corruption()) -> np.ndarray:
    """The Bayes-optimal masked LM on BERT-corrupted ``inputs (n, T)`` (MASK = id V) of an HMM-backed
    ``world`` (anything with ``.chain``): P(x_t = · | y, s_t = 1), ``(n, T, V)`` float64, every position.
    An input is possible when some corruption of some sequence the world allows yields it: every input of
    symbols is when b > 0 (the channel gives every symbol probability ≥ q·b/V > 0), not one holding MASK
    when mask = 0; an impossible input raises ``TokenError``.

    Computed in float64 (from the world's parameters as stored): the Bayes predictor is this law's argmax,
    and in float32 its rounding (~1e-7) broke exact ties — 0.5 and 0.5 read 0.50000006 and 0.5, and the
    predictor's accuracy credited one token where a tie splits evenly.  Score it with
    :data:`~simlm.theory.token_accuracy.TIE_RTOL`."""
    corruption, y = check_corruption(corruption), _inputs(world, inputs)
    C, Cs = channels(corruption, int(world.n_symbols))
    initial, transition, emission = world.chain
    args = (initial, transition, emission, C, Cs, y)
    (probs, _), lost = in_float64(_batched_posterior, *args)
    if np.asarray(lost).any():  # a block buried below even float64's range (simlm.worlds.hmm_core)
        probs, _ = in_float64(_exact_posterior, *args)
    probs = np.asarray(probs, np.float64)
    if not np.isfinite(probs).all():
        i = int(np.flatnonzero(~np.isfinite(probs).all(axis=(1, 2)))[0])
        raise TokenError(f"inputs: sequence {i} is impossible under this world and corruption")
    return probs


def chain_law64(fn, world, tokens, *, impossible: str = "raise"):
    """``fn(*world.chain, tokens)`` — an exact law of :mod:`simlm.worlds.hmm` that returns ``(law, per-step
    log-probs)``, e.g. ``masked_token_probs`` or ``smoothed_posterior`` — computed in float64 from the world's
    parameters as stored, as numpy: the law whose argmax is a Bayes decision, scored with ties as ties
    (:data:`~simlm.theory.token_accuracy.TIE_RTOL`; float32 rounding breaks them).  ``tokens (n, T)`` must be
    possible (every step's probability positive) or a ``TokenError`` names the first impossible sequence;
    with ``impossible="keep"`` the answer is ``(law, possible (n,) bool)`` instead, the impossible rows' laws
    meaningless."""
    if impossible not in ("raise", "keep"):
        raise ConfigError(f"impossible: expected 'raise' or 'keep', got {impossible!r}")
    toks, _ = check_tokens(tokens, int(check_chain_world(world).n_symbols))
    law, steps = in_float64(fn, *world.chain, toks)
    possible = np.isfinite(np.asarray(steps)).all(-1)
    if impossible == "keep":
        return np.asarray(law, np.float64), possible
    if not possible.all():
        raise TokenError(f"tokens: sequence {int(np.flatnonzero(~possible)[0])} is impossible under this world")
    return np.asarray(law, np.float64)


def state_marginals(world, length: int) -> np.ndarray:
    """P(h_t) for t = 0..T−1, ``(T, K)`` float64: π, πA, πA², …"""
    length = check_positive_int("length", length)
    initial, _, _ = check_chain_world(world).chain
    check_memory("length", 2 * length * int(initial.shape[-1]), itemsize=8, what="the state marginals")
    A = np.asarray(world.chain.dense_transition(), np.float64)
    p, out = np.asarray(initial, np.float64), []
    for _ in range(length):
        out.append(p)
        p = p @ A
    return np.array(out)


def local_bayes_probs(world, inputs, corruption=Corruption()) -> np.ndarray:
    """The best predictor from the corrupted token and its position alone, P(x_t | y_t, t, s_t = 1) ∝
    [P(h_t) B]_x · C_sel(y_t | x), ``(n, T, V)`` — the ceiling of a readout of the embedding layer."""
    corruption, y = check_corruption(corruption), _inputs(world, inputs)
    prior = state_marginals(world, y.shape[1]) @ np.asarray(world.chain.emission, np.float64)  # (T, V)
    C, Cs = channels(corruption, int(world.n_symbols))
    law = prior[None] * Cs[y]
    law = np.where(law.sum(-1, keepdims=True) > 0, law, prior[None] * C[y])  # as in corrupted_posterior
    total = law.sum(-1, keepdims=True)
    if not (total > 0).all():  # b = 0 and a token no state can emit at that position
        i, t = (int(v) for v in np.argwhere(total[..., 0] <= 0)[0])
        raise TokenError(f"inputs: sequence {i} is impossible under this world and corruption (position {t})")
    return law / total


__all__ = ["Corruption", "check_corruption", "channels", "corrupt", "corrupted_posterior", "bayes_corrupted_probs",
           "state_marginals", "local_bayes_probs", "check_chain_world"]
