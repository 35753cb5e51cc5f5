"""What every world provides.

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

from simlm.checks import as_key, check_memory, check_positions, check_positive_int, check_stochastic, check_tokens, \
    mean_and_sem
from simlm.errors import ConfigError, ZeroProbabilityError

#: the most elements one array may have: XLA indexes some buffers with int32, and arrays of 2**31 elements or
#: more abort the interpreter (SIGABRT) or hang instead of raising, so every world refuses them up front.
MAX_ARRAY_ELEMENTS = 2**31 - 1
#: the loosest ``atol`` a world accepts for its probability rows.  Rows off 1 by more than float64 rounding
#: are renormalised (:func:`check_probabilities`), so the tolerance says how far a row may be from a law and
#: still be read as one: a looser one would silently rescale rows that are not distributions at all.
MAX_ATOL = 1e-3
_REAL_TYPES = (int, float, np.integer, np.floating)
#: where a law conditions on x_1:T after a masked first position (an HMM's h_1 ~ πA, not π): x may be possible
#: under the world and impossible there, so a refusal says which
PREPENDED = "with a masked position prepended to it"


# ---- host-side checks shared by the worlds (candidates for simlm.checks) -------------------------------

def check_flag(name: str, value) -> bool:
    """A real ``bool`` (or numpy bool); anything else — ``"no"``, ``0``, ``None`` — is a :class:`ConfigError`,
    since Python's truthiness would silently read ``"no"`` as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 positive: bool = False) -> float:
    """A finite real number (int or float, numpy scalar or 0-d array; not bool, str, complex or None) in
    [``minimum``, ``maximum``] (and > 0 with ``positive``), as a float; otherwise :class:`ConfigError`."""
    ok = isinstance(value, _REAL_TYPES) or (isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0
                                            and value.dtype.kind in "iuf")
    if isinstance(value, (bool, np.bool_)) or not ok:
        raise ConfigError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if positive and not v > 0:
        raise ConfigError(f"{name}: expected a positive number, got {value!r}")
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "" if minimum is None else f"≥ {minimum:g}"
        hi = "" if maximum is None else f"≤ {maximum:g}"
        raise ConfigError(f"{name}: expected a number {' and '.join(b for b in (lo, hi) if b)}, got {value!r}")
    return v


def check_atol(atol) -> float:
    """The tolerance on probability rows: a number in (0, :data:`MAX_ATOL`]."""
    return check_number("atol", atol, positive=True, maximum=MAX_ATOL)


def check_float_dtype(dtype) -> np.dtype:
    """float32 or float64 (the latter only with ``jax_enable_x64``).  Integer dtypes would truncate every
    probability to 0, complex ones carry a meaningless imaginary part, and float16/bfloat16 round the rows
    off 1 by more than any ``atol``; without x64, JAX would silently store float64 as float32."""
    if dtype is None or isinstance(dtype, bool):
        raise ConfigError(f"dtype: expected float32 or float64, got {dtype!r}")
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise ConfigError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype: expected float32 or float64, got {dt}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ConfigError("dtype: float64 needs 64-bit JAX (jax.config.update('jax_enable_x64', True) at start-up); "
                          "without it the arrays would silently be float32")
    return dt


def stored(array, dtype) -> np.ndarray:
    """``array`` cast to ``dtype`` on the host, with entries below the dtype's smallest normal number set to
    0: XLA flushes such subnormals to 0 in every computation, so a world that kept them would read one
    chain on the device (every law, posterior and sample) and another wherever its parameters are read
    back on the host (a float64 label or rank).  Stored flushed, the two are one world."""
    a = np.array(array, dtype=dtype)
    a[np.abs(a) < np.finfo(a.dtype).tiny] = 0
    return a


def check_probabilities(name: str, array, *, atol: float, dtype=np.float64) -> np.ndarray:
    """:func:`simlm.checks.check_stochastic` (rows within ``atol`` of summing to 1, returned as float64; it
    refuses complex values, strings and booleans, which a cast would convert silently).

    Rows off 1 by more than the rounding of a law stored in ``dtype`` (the world's storage dtype) —
    |Σ_v p_v − 1| > u + n·2⁻⁵¹ for a row of n entries, u = eps(dtype)/2 (:func:`rows_within_rounding`) — are
    returned renormalised, p / Σ p in float64; the others exactly as given, bit for bit.  A world keeps one chain: its exact laws (forward recursions normalise each step, so
    they read a row off 1 proportionally) and its samples (the inverse CDF gives a row's whole shortfall or
    excess to its last positive entry) would otherwise differ by up to ``atol``, and a float64 world built
    from float32-rounded rows would compute laws off 1 by ~1e-8.  The bound holds for every row normalised
    in float64 as x / Σ x (a softmax, a Dirichlet draw, every family of :mod:`simlm.worlds.families`) and
    then rounded to ``dtype``: the normaliser Σ x and the check's own sum each add at most (n − 1)·2⁻⁵³ in
    any summation order, and rounding each entry to ``dtype`` moves it by ≤ u relative, ≤ u in total over
    the row.  So such rows — and the stored parameters and fingerprints of the worlds built from them — are
    unchanged, and a world rebuilt from its own stored parameters (``HMM(*w.parameter_arrays())``, a
    round trip through hmmlearn or dynamax) is the same world, while rows of a float32 law given to a
    float64 world (off by ~1e-8) and rows accepted with a loose ``atol`` are renormalised."""
    if isinstance(array, jax.core.Tracer):
        raise ConfigError(f"{name}: a world validates its parameters on the host, so it cannot be built inside "
                          "jax.jit; build it outside and pass the world in (it is a pytree)")
    rows = check_stochastic(name, array, atol=atol)
    # decided on the rows as they will be stored: a row within rounding in float64 could round to one off 1 by
    # more (1 + 1.5u), which a rebuild from the stored parameters would renormalise — another world
    exact = rows_within_rounding(stored(rows, dtype), dtype)
    if exact.all():
        return rows
    # Σ ≥ 1 − atol > 0: every row has mass; rows within rounding keep their bits
    return np.where(exact[..., None], rows, rows / rows.sum(axis=-1, keepdims=True))


def rows_within_rounding(rows: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Whether each row (last axis, n entries; summed in float64) sums to 1 within the rounding of a law
    stored in ``dtype``, |Σ − 1| ≤ eps(dtype)/2 + n·2⁻⁵¹ (the bound of :func:`check_probabilities`), shape
    ``rows.shape[:-1]``."""
    rows = np.asarray(rows, np.float64)
    bound = np.finfo(dtype).eps / 2 + 2 * rows.shape[-1] * np.finfo(np.float64).eps
    return np.abs(rows.sum(axis=-1) - 1.0) <= bound


def check_request(name: str, arrays, what: str) -> None:
    """Refuse, before anything is allocated or compiled, a request whose arrays — ``(n_elements, itemsize)``
    pairs, Python ints so nothing overflows — do not fit: one above :data:`MAX_ARRAY_ELEMENTS` elements, or
    all together above this host's memory (:func:`simlm.checks.check_memory`).  ``name`` is the argument(s)
    that set the size and ``what`` says what is built."""
    arrays = [(int(e), int(s)) for e, s in arrays]
    biggest = max(e for e, _ in arrays)
    if biggest > MAX_ARRAY_ELEMENTS:
        raise ConfigError(f"{name}: this request builds an array of {biggest:.3g} elements ({what}), over the "
                          "limit of 2**31 − 1 elements per array; split it into smaller requests, or use a smaller "
                          "world")
    check_memory(name, sum(e * s for e, s in arrays), itemsize=1, what=what)


def masked_logprobs_of(world, tokens, positions=None) -> jax.Array:
    """log p*(x_i = · | x_−i) ``(n, P, V)``: ``world.log_masked_token_probs`` where the world has it (log space
    in a log-linear world), else the log of its ``masked_token_probs`` (a world that defines only those)."""
    law = getattr(world, "log_masked_token_probs", None)
    if callable(law):
        return law(tokens, positions)
    return jnp.log(jnp.asarray(world.masked_token_probs(tokens, positions)))


def prepended_logprobs_of(world, tokens) -> jax.Array:
    """The law at a prepended mask in log space ``(n, V)``, as :func:`masked_logprobs_of`."""
    law = getattr(world, "log_prepended_mask_probs", None)
    return law(tokens) if callable(law) else jnp.log(jnp.asarray(world.prepended_mask_probs(tokens)))


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

    Subclasses define ``n_symbols``, ``sample``, ``parameter_arrays`` and these jit-friendly internals on
    validated int32 ``(n, T)`` tokens.  The last three return their answer together with the per-step
    log-probs log p*(x_t | x_<t), shape ``(n, T)``, from the same pass (used to detect impossible
    sequences without a second pass):

    - ``_token_logprobs(toks)`` → (n, T)
    - ``_log_likelihood(toks)`` → (n,)
    - ``_next_token_logprobs(toks)`` → ((n, T, V), steps)
    - ``_masked_token_probs(toks, positions)`` → ((n, P, V), steps)
    - ``_prepended_mask_probs(toks)`` → ((n, V), steps)

    A world that computes the last two in log space overrides ``_log_masked_token_probs`` and
    ``_log_prepended_mask_probs`` (same shapes, log-probabilities) so that :meth:`log_masked_token_probs`
    keeps log-probabilities whose probabilities underflow float32; the defaults take the log.

    and, so that a request that cannot fit is refused before anything is allocated or compiled, the
    ``(n_elements, itemsize)`` of the arrays their sampling and inference build: ``_sample_arrays(n, T)``
    and ``_inference_arrays(method, n, T, P)`` (see :func:`check_request`).
    """

    # ---- derived exact quantities -------------------------------------------------------------
    def log_likelihood(self, tokens) -> jax.Array:
        toks, single = self._tokens(tokens, "log_likelihood")
        out = self._log_likelihood(jax.device_put(toks))
        return out[0] if single else out

    def token_logprobs(self, tokens) -> jax.Array:
        """log p*(x_t | x_<t) of each observed token, shape ``(n, T)`` (−inf where impossible).  After an
        impossible token x_<t has probability 0 and the conditional is undefined: each later entry is read
        from the filter as it stood before that token (it skips it), a finite number that conditions on the
        other tokens only — the sum, ``log_likelihood``, is −inf all the same."""
        toks, single = self._tokens(tokens, "token_logprobs")
        out = self._token_logprobs(jax.device_put(toks))
        return out[0] if single else out

    def next_token_logprobs(self, tokens) -> jax.Array:
        toks, single = self._tokens(tokens, "next_token_logprobs")
        out, steps = self._next_token_logprobs(jax.device_put(toks))
        self._require_possible(toks, np.asarray(steps)[:, :-1])  # x_T conditions no row: it may be impossible
        return out[0] if single else out

    def next_token_probs(self, tokens) -> jax.Array:
        return jnp.exp(self.next_token_logprobs(tokens))

    def masked_token_probs(self, tokens, positions=None) -> jax.Array:
        return self._masked(self._masked_token_probs, tokens, positions)

    def prepended_mask_probs(self, tokens) -> jax.Array:
        return self._prepended(self._prepended_mask_probs, tokens)

    def log_masked_token_probs(self, tokens, positions=None) -> jax.Array:
        """log of :meth:`masked_token_probs`, ``(n, P, V)``: computed in log space by a world that can (a
        :class:`~simlm.worlds.LogLinearWorld`: finite below float32's smallest normal probability, ~1e-38, and
        accurate relative to |log p| there, not to a fixed number of nats, as ``loglinear.max_logit`` says); by
        default (the HMM worlds) the log of the probabilities, −inf where they underflowed."""
        return self._masked(self._log_masked_token_probs, tokens, positions)

    def log_prepended_mask_probs(self, tokens) -> jax.Array:
        """log of :meth:`prepended_mask_probs`, ``(n, V)``, in log space where the world can
        (:meth:`log_masked_token_probs`)."""
        return self._prepended(self._log_prepended_mask_probs, tokens)

    def _masked(self, law, tokens, positions, method: str = "masked_token_probs"):
        toks, single = check_tokens(tokens, self.n_symbols)
        pos = check_positions(positions, toks.shape[1])
        self._check_cost(method, *toks.shape, len(pos))
        out, steps = law(jax.device_put(toks), jax.device_put(pos))
        self._require_masked_possible(toks, pos, steps)
        return out[0] if single else out

    def _require_masked_possible(self, toks: np.ndarray, pos: np.ndarray, steps, log_likelihood=None,
                                 under: str = "under this world") -> None:
        """p*(x_i = · | x_−i) needs p*(x_−i) > 0, not p*(x) > 0: the token at a masked position is a placeholder
        the law never reads (the forward pass before i and the backward pass after it), so a placeholder
        that makes x impossible leaves the law defined.  For the sequences x of probability zero (rare: a
        world's own samples never are), p*(x_−i) = Σ_v p*(x with x_i = v) is read off the likelihoods of the
        V substitutions at each requested position; a position where all V are impossible is refused.
        ``log_likelihood`` scores the substitutions (default: this world's; a prompted law passes the
        prompted chain's), ``under`` says under what they are impossible."""
        impossible = np.flatnonzero(~np.isfinite(np.asarray(steps)).all(axis=1))
        if impossible.size == 0:
            return
        T, V, at = toks.shape[1], int(self.n_symbols), np.unique(pos)
        self._check_cost("log_likelihood", impossible.size * at.size * V, T)
        subs = np.repeat(toks[impossible], at.size * V, axis=0).reshape(impossible.size, at.size, V, T)
        subs[:, np.arange(at.size), :, at] = np.arange(V, dtype=toks.dtype)  # (rows, P', V) at position at[p]
        score = self._log_likelihood if log_likelihood is None else log_likelihood
        ll = np.asarray(score(jax.device_put(subs.reshape(-1, T)))).reshape(impossible.size, at.size, V)
        undefined = ~np.isfinite(ll).any(axis=2)
        if undefined.any():
            r, p = (int(a[0]) for a in np.nonzero(undefined))
            raise ZeroProbabilityError(
                f"tokens: sequence {int(impossible[r])} has probability zero {under} whatever token is "
                f"at masked position {int(at[p])} (the tokens around it are impossible together), so the masked "
                f"law there is undefined")

    def _prepended(self, law, tokens):
        toks, single = self._tokens(tokens, "prepended_mask_probs")
        out, steps = law(jax.device_put(toks))
        # the steps are those of x after a masked first position: x may be possible without it (an HMM: h_1 ~ πA)
        self._require_possible(toks, steps, "the prepended mask's law is undefined", under=PREPENDED)
        return out[0] if single else out

    # log-space laws: the log of the probability-space ones unless a world overrides them
    def _log_masked_token_probs(self, toks, positions):
        out, steps = self._masked_token_probs(toks, positions)
        return jnp.log(out), steps

    def _log_prepended_mask_probs(self, toks):
        out, steps = self._prepended_mask_probs(toks)
        return jnp.log(out), steps

    def cross_entropy(self, tokens) -> tuple[float, float]:
        """Mean −log p*(x_t | x_<t) over all positions of ``tokens`` (nats/token) and its standard error
        over sequences.  A sequence of probability zero (infinite cross-entropy, and no standard error) is a
        :class:`ZeroProbabilityError` naming it, as for the conditional laws."""
        toks, _ = self._tokens(tokens, "log_likelihood")
        ll = np.asarray(self._log_likelihood(jax.device_put(toks)), dtype=np.float64)
        if not np.all(np.isfinite(ll)):
            self._require_possible(toks, self._token_logprobs(jax.device_put(toks)),  # names the token
                                   "its cross-entropy is infinite")
            rows = np.flatnonzero(~np.isfinite(ll))
            raise ZeroProbabilityError(f"tokens: sequence {int(rows[0])} has probability zero under this world "
                                       f"({rows.size} of {len(ll)} sequences are impossible), so the "
                                       "cross-entropy is infinite")
        return mean_and_sem(-ll / toks.shape[1])

    def entropy_rate(self, key, n_sequences: int = 64, length: int = 1024) -> tuple[float, float]:
        """H = lim −(1/T) log p(x_1:T), estimated as the mean of −log p(x)/T over ``n_sequences``
        sampled sequences of ``length`` tokens; returns (estimate, standard error), nats/token.

        The finite-T estimate carries an O(1/T) bias from the initial law; its standard error is over
        sequences."""
        as_key(key)
        n = check_positive_int("n_sequences", n_sequences, minimum=2)
        T = check_positive_int("length", length)
        self._check_sample(n, T, extra=self._inference_arrays("log_likelihood", n, T, 0))
        tokens = self.sample(key, n, T)
        return self.cross_entropy(tokens)

    # ---- sizes: refuse what cannot fit before allocating ------------------------------------------
    @property
    def _itemsize(self) -> int:
        """Bytes per float of this world's arrays."""
        return self.parameter_arrays()[0].dtype.itemsize

    def _sample_arrays(self, n: int, T: int) -> list:
        """``(n_elements, itemsize)`` of the arrays :meth:`sample` builds for n sequences of T tokens."""
        raise NotImplementedError

    def _inference_arrays(self, method: str, n: int, T: int, P: int) -> list:
        """``(n_elements, itemsize)`` of the arrays ``method`` builds on (n, T) tokens (P masked positions)."""
        raise NotImplementedError

    def _check_sample(self, n: int, T: int, extra=(), names: str = "n_sequences, length") -> None:
        check_request(names, [*self._sample_arrays(n, T), *extra], f"sampling {n} sequences × {T} tokens")

    def _check_cost(self, method: str, n: int, T: int, P: int = 0) -> None:
        check_request("tokens", [(n * T, 4), *self._inference_arrays(method, n, T, P)],
                       f"{method} on {n} sequences × {T} tokens")

    def _tokens(self, tokens, method: str):
        """Checked ``(int32 (n, T) tokens, was_single)``, refused if ``method`` on them cannot fit."""
        toks, single = check_tokens(tokens, self.n_symbols)
        self._check_cost(method, *toks.shape)
        return toks, single

    def fingerprint(self) -> str:
        h = hashlib.sha256(type(self).__name__.encode())
        for a in self.parameter_arrays():
            a = np.ascontiguousarray(np.asarray(a))
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    @staticmethod
    def _require_possible(toks: np.ndarray, steps, consequence: str = "its conditional laws are undefined",
                          under: str = "under this world") -> None:
        """Raise :class:`ZeroProbabilityError` naming the first impossible sequence and position, ``under``
        what it is impossible, and what follows for it (``consequence``)."""
        steps = np.asarray(steps)
        bad = ~np.isfinite(steps)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            i = int(rows[0])
            t = int(np.flatnonzero(bad[i])[0])
            raise ZeroProbabilityError(
                f"tokens: sequence {i} has probability zero {under} (token {int(toks[i, t])} at "
                f"position {t} is impossible given the tokens before it; {rows.size} of {len(steps)} "
                f"sequences are impossible), so {consequence}"
            )
