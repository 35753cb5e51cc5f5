"""What every world provides, and the host-side checks they share.

A *world* is a generative distribution over token sequences whose optimal language model is known
exactly.  The :class:`World` protocol names the exact computations later layers (trainers, tasks,
bounds) rely on; :class:`WorldBase` derives the ones that follow from the others, so each world
implements only its own inference.

Conventions: tokens are int32 arrays of shape ``(n, T)`` (a single ``(T,)`` sequence is accepted and
answered without the batch axis); probabilities are float arrays over the vocabulary, last axis ``V``;
log-probabilities are natural logs, so cross-entropies are in nats per token.
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from simlm.errors import ConfigError, DistributionError, ShapeError, TokenError, ZeroProbabilityError


@runtime_checkable
class World(Protocol):
    """A generative world with an exact optimal language model.

    Shapes: ``n`` sequences, ``T`` positions, ``V = n_symbols`` token ids, ``P`` masked positions.
    """

    @property
    def n_symbols(self) -> int:
        """Vocabulary size V; token ids are 0..V-1."""

    def sample(self, key, n_sequences: int, length: int, *, return_states: bool = False):
        """Draw ``(n, T)`` int32 tokens (and the hidden states with ``return_states=True``)."""

    def log_likelihood(self, tokens) -> jax.Array:
        """Exact log p(x_1:T), shape ``(n,)``; ``-inf`` for sequences of probability zero."""

    def next_token_logprobs(self, tokens) -> jax.Array:
        """The optimal causal LM: row t is log p*(x_t = · | x_<t), shape ``(n, T, V)``."""

    def next_token_probs(self, tokens) -> jax.Array:
        """``exp`` of :meth:`next_token_logprobs`."""

    def masked_token_probs(self, tokens, positions=None) -> jax.Array:
        """The optimal masked LM: p*(x_i = · | x_-i) at each position i, shape ``(n, P, V)``."""

    def prepended_mask_probs(self, tokens) -> jax.Array:
        """Law of a masked position 0 prepended before x_1 given x_1:T, shape ``(n, V)``."""

    def entropy_rate(self, key, n_sequences: int = 64, length: int = 1024) -> tuple[float, float]:
        """Optimal per-token cross-entropy (nats/token) and its standard error, by Monte Carlo."""

    def fingerprint(self) -> str:
        """A short hash of the parameters: equal worlds have equal fingerprints."""


class WorldBase:
    """Shared behaviour for worlds.

    Subclasses define ``n_symbols``, ``sample``, ``_param_arrays`` and these jit-friendly internals on
    validated int32 ``(n, T)`` tokens.  The last three return their answer together with the per-step
    log-probs log p*(x_t | x_<t), shape ``(n, T)``, from the same pass (used to detect impossible
    sequences without a second pass):

    - ``_token_logprobs(toks)`` → (n, T)
    - ``_log_likelihood(toks)`` → (n,)
    - ``_next_token_logprobs(toks)`` → ((n, T, V), steps)
    - ``_masked_token_probs(toks, positions)`` → ((n, P, V), steps)
    - ``_prepended_mask_probs(toks)`` → ((n, V), steps)
    """

    # ---- derived exact quantities -------------------------------------------------------------
    def log_likelihood(self, tokens) -> jax.Array:
        toks, single = check_tokens(tokens, self.n_symbols)
        out = self._log_likelihood(jax.device_put(toks))
        return out[0] if single else out

    def token_logprobs(self, tokens) -> jax.Array:
        """log p*(x_t | x_<t) of each observed token, shape ``(n, T)`` (−inf where impossible)."""
        toks, single = check_tokens(tokens, self.n_symbols)
        out = self._token_logprobs(jax.device_put(toks))
        return out[0] if single else out

    def next_token_logprobs(self, tokens) -> jax.Array:
        toks, single = check_tokens(tokens, self.n_symbols)
        out, steps = self._next_token_logprobs(jax.device_put(toks))
        self._require_possible(toks, steps)
        return out[0] if single else out

    def next_token_probs(self, tokens) -> jax.Array:
        return jnp.exp(self.next_token_logprobs(tokens))

    def masked_token_probs(self, tokens, positions=None) -> jax.Array:
        toks, single = check_tokens(tokens, self.n_symbols)
        pos = check_positions(positions, toks.shape[1])
        out, steps = self._masked_token_probs(jax.device_put(toks), jax.device_put(pos))
        self._require_possible(toks, steps)
        return out[0] if single else out

    def prepended_mask_probs(self, tokens) -> jax.Array:
        toks, single = check_tokens(tokens, self.n_symbols)
        out, steps = self._prepended_mask_probs(jax.device_put(toks))
        self._require_possible(toks, steps)
        return out[0] if single else out

    def cross_entropy(self, tokens) -> tuple[float, float]:
        """Mean −log p*(x_t | x_<t) over all positions of ``tokens`` (nats/token) and its standard error
        over sequences."""
        toks, _ = check_tokens(tokens, self.n_symbols)
        per_seq = -np.asarray(self._log_likelihood(jax.device_put(toks)), dtype=np.float64) / toks.shape[1]
        return mean_and_sem(per_seq)

    def entropy_rate(self, key, n_sequences: int = 64, length: int = 1024) -> tuple[float, float]:
        """H = lim −(1/T) log p(x_1:T), estimated as the mean of −log p(x)/T over ``n_sequences``
        sampled sequences of ``length`` tokens; returns (estimate, standard error), nats/token.

        The finite-T estimate carries an O(1/T) bias from the initial law; its standard error is over
        sequences."""
        check_positive_int("n_sequences", n_sequences, minimum=2)
        check_positive_int("length", length)
        tokens = self.sample(key, n_sequences, length)
        return self.cross_entropy(tokens)

    def fingerprint(self) -> str:
        h = hashlib.sha256(type(self).__name__.encode())
        for a in self._param_arrays():
            a = np.ascontiguousarray(np.asarray(a))
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    @staticmethod
    def _require_possible(toks: np.ndarray, steps) -> None:
        """Raise :class:`ZeroProbabilityError` naming the first impossible sequence and position."""
        steps = np.asarray(steps)
        bad = ~np.isfinite(steps)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            i = int(rows[0])
            t = int(np.flatnonzero(bad[i])[0])
            raise ZeroProbabilityError(
                f"tokens: sequence {i} has probability zero under this world (token {int(toks[i, t])} at "
                f"position {t} is impossible given the tokens before it; {rows.size} of {len(steps)} "
                "sequences are impossible), so its conditional laws are undefined"
            )


# ---- host-side validation, shared by every world ------------------------------------------------

def check_tokens(tokens, n_symbols: int, name: str = "tokens") -> tuple[np.ndarray, bool]:
    """Return ``(tokens as int32 (n, T), was_single)`` or raise :class:`TokenError`."""
    if isinstance(tokens, jax.core.Tracer):
        raise TokenError(
            f"{name}: the World methods validate their input on the host and cannot be traced; "
            "inside jax.jit call the pure functions in simlm.worlds.hmm_core instead"
        )
    arr = np.asarray(tokens)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        if np.issubdtype(arr.dtype, np.floating) and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TokenError(f"{name}: expected integer token ids, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise TokenError(f"{name}: expected shape (T,) or (n, T), got {arr.shape}")
    single = arr.ndim == 1
    arr = arr.reshape((1, -1)) if single else arr
    if arr.shape[0] == 0:
        raise TokenError(f"{name}: no sequences (shape {arr.shape})")
    if arr.shape[1] == 0:
        raise TokenError(f"{name}: sequences are empty (length 0); every sequence needs at least one token")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_symbols:
        bad = lo if lo < 0 else hi
        idx = np.argwhere(arr == bad)[0]
        raise TokenError(
            f"{name}: token id {bad} at sequence {idx[0]}, position {idx[1]} is outside [0, {n_symbols})"
        )
    return arr.astype(np.int32), single


def check_positions(positions, length: int) -> np.ndarray:
    """Masked positions as int32 ``(P,)`` in [0, T); ``None`` means every position."""
    if positions is None:
        return np.arange(length, dtype=np.int32)
    pos = np.asarray(positions)
    if pos.ndim == 0:
        pos = pos.reshape(1)
    if pos.ndim != 1 or pos.size == 0 or not np.issubdtype(pos.dtype, np.integer):
        raise TokenError(f"positions: expected a non-empty 1-d array of integer positions, got {np.asarray(positions)!r}")
    if pos.min() < 0 or pos.max() >= length:
        raise TokenError(f"positions: {int(pos.min() if pos.min() < 0 else pos.max())} is outside [0, {length})")
    return pos.astype(np.int32)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{name}: expected a positive finite number, got {value!r}")
    return v


def as_key(key_or_seed, name: str = "key") -> jax.Array:
    """A JAX PRNG key from a key or a non-negative integer seed."""
    if isinstance(key_or_seed, (bool, np.bool_)):
        raise ConfigError(f"{name}: expected a PRNG key or a non-negative integer seed, got {key_or_seed!r}")
    if isinstance(key_or_seed, (int, np.integer)):
        if key_or_seed < 0 or key_or_seed >= 2**63:
            raise ConfigError(f"{name}: seed must be a non-negative integer below 2**63, got {key_or_seed}")
        return jax.random.PRNGKey(int(key_or_seed))
    if isinstance(key_or_seed, jax.Array) and (
        jnp.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key)
        or (key_or_seed.dtype == jnp.uint32 and key_or_seed.shape == (2,))
    ):
        return key_or_seed
    raise ConfigError(f"{name}: expected a PRNG key or a non-negative integer seed, got {key_or_seed!r}")


def as_rng(seed, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from a non-negative integer seed (construction-time randomness)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"{name}: expected a non-negative integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def check_stochastic(name: str, array, *, atol: float = 1e-6, axis_names=("row",)) -> np.ndarray:
    """Validate a probability vector / row-stochastic array (last axis sums to 1) and return float64."""
    try:
        arr = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise DistributionError(f"{name}: expected a numeric array of probabilities (rows of equal length), "
                                f"got {type(array).__name__}") from None
    if arr.ndim == 0:
        raise ShapeError(f"{name}: expected an array with at least one axis, got a scalar")
    if arr.shape[-1] == 0:
        raise ShapeError(f"{name}: last axis is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise DistributionError(f"{name}: entry {idx if len(idx) > 1 else idx[0]} is {arr[idx]}, expected a finite probability")
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise DistributionError(f"{name}: entry {idx if len(idx) > 1 else idx[0]} is {arr[idx]:.6g}, expected ≥ 0")
    sums = arr.sum(axis=-1)
    off = np.abs(sums - 1.0) > atol
    if np.any(off):
        idx = tuple(int(i) for i in np.argwhere(np.atleast_1d(off))[0])
        s = float(np.atleast_1d(sums)[idx])
        what = "sums" if arr.ndim == 1 else f"{axis_names[0]} {idx[0] if len(idx) == 1 else idx} sums"
        raise DistributionError(f"{name} {what} to {s:.6g}, expected 1 within {atol:g}")
    return arr


def mean_and_sem(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
