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
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import check_positions, check_positive_int, check_tokens, mean_and_sem
from simlm.errors import ZeroProbabilityError


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
