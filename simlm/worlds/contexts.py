"""The contexts of a small world, enumerated exactly: every prefix s of length ≤ L with p(s) > 0, its
probability and its next-token law p*(·|s) — the finite problem of Saunshi, Malladi & Arora (ICLR 2021)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from simlm.checks import check_positive_int
from simlm.errors import ConfigError
from simlm.worlds.base import check_request

#: largest number of contexts Σ_{t ≤ L} V^t that :func:`enumerate_contexts` builds by default.
MAX_CONTEXTS = 100_000


@dataclasses.dataclass(frozen=True, eq=False)
class ContextSet:
    """Every prefix s of length 0..L of a world with p(s) > 0, in order of length then lexicographic.

    ``prefixes`` tuple of S tuples of token ids; ``lengths (S,)``; ``prefix_probs (S,)`` = p(s) = P(x_1:|s|
    = s); ``weights (S,)`` = p_L(s) = p(s)/(L + 1), a length uniform on 0..L then a prefix of that
    length, which sums to 1 up to the rounding of the world's float32 likelihoods (~1e-7: 4.7e-8 measured on
    HMMs, 1.1e-7 on log-linear worlds; the checks that weight by p_L renormalise it in float64);
    ``next_token_probs (S, V)`` = p*(·|s).  Float64 numpy arrays.  A context is kept where its float32
    log p(s) is finite, so one below e^−745 (float64's smallest) is kept with p_L(s) = 0.0 — at least five
    tokens of an HMM's least likely emissions, one of a log-linear world with logits ~1e3 apart."""

    prefixes: tuple
    lengths: np.ndarray
    prefix_probs: np.ndarray
    weights: np.ndarray
    next_token_probs: np.ndarray
    max_length: int

    def index(self, prefix) -> int:
        """Row of ``prefix`` (a sequence of token ids) in the arrays above."""
        try:
            ids = np.asarray(prefix)
        except (TypeError, ValueError):
            ids = None
        if ids is None or isinstance(prefix, (str, bytes)) or ids.ndim != 1 \
                or (ids.size and (ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer))):
            raise ConfigError(f"prefix: expected a 1-d sequence of integer token ids, got {prefix!r}")
        try:
            return self._rows[tuple(int(x) for x in ids)]
        except KeyError:
            raise ConfigError(f"prefix: {tuple(prefix)} is not a context here (too long, or p(prefix) = 0)") from None

    @functools.cached_property
    def _rows(self) -> dict:
        return {p: i for i, p in enumerate(self.prefixes)}


def enumerate_contexts(world, max_length: int, *, max_contexts: int = MAX_CONTEXTS) -> ContextSet:
    """All prefixes of length ≤ ``max_length`` (the empty one included) with their exact probabilities
    and next-token laws, by brute force from ``world.log_likelihood`` alone:

        p*(w | s) = p(s ⊕ w) / p(s),   p(∅) = 1,

    scoring all V^{L+1} sequences of length L + 1 (and the shorter ones); rows are renormalised.  A world's
    log-likelihoods are float32, so each law is off by about 6e-8 · |log p(s ⊕ w)| relative (the difference
    of two rounded logs): ~1e-7 where log-likelihoods are of order 1, but 1e-3 for a log-linear world whose
    logits reach 3e4 in the earlier states that push log p(s) to ~−1.5e4 (``world.next_token_logprobs`` there:
    2e-8; where the context's own state has logits of 3e4 — a common offset — every law inherits their float32
    rounding, 1e-3 relative, ``next_token_logprobs`` too).  Prefixes with p(s) = 0 (log p(s) = −∞ in
    float32) are dropped (their law is undefined); one below e^−745 stays, with weight 0.0.  Raises
    :class:`ConfigError` if Σ_{t ≤ L} V^t exceeds ``max_contexts`` (default 100 000)."""
    if not (hasattr(world, "n_symbols") and callable(getattr(world, "log_likelihood", None))):
        raise ConfigError("world: expected a simlm world (with n_symbols and log_likelihood), got "
                          f"{type(world).__name__}")
    L = check_positive_int("max_length", max_length, minimum=0)
    V = check_positive_int("world.n_symbols", world.n_symbols)
    check_context_count(V, L, max_contexts)
    logp = [np.zeros(1)]  # log p(s) for every s of length t, lexicographic
    for t in range(1, L + 2):
        seqs = np.stack(np.unravel_index(np.arange(V**t), (V,) * t), axis=-1).astype(np.int32)
        logp.append(np.asarray(world.log_likelihood(seqs), np.float64))
    keep, laws = [], []
    for t in range(L + 1):
        with np.errstate(invalid="ignore", divide="ignore"):
            law = np.exp(logp[t + 1].reshape(V**t, V) - logp[t][:, None])
        ok = np.isfinite(logp[t])
        keep.append(ok)
        laws.append(law[ok] / law[ok].sum(-1, keepdims=True))
    prefixes, lengths = [], []
    for t in range(L + 1):
        rows = np.flatnonzero(keep[t])
        grid = np.stack(np.unravel_index(rows, (V,) * t), axis=-1) if t else np.zeros((rows.size, 0), int)
        prefixes.extend(tuple(int(x) for x in r) for r in grid)
        lengths.extend([t] * rows.size)
    probs = np.exp(np.concatenate([lp[k] for lp, k in zip(logp[: L + 1], keep)]))
    return ContextSet(tuple(prefixes), np.asarray(lengths), probs, probs / (L + 1), np.concatenate(laws), L)


def check_context_count(n_symbols: int, max_length: int, max_contexts: int = MAX_CONTEXTS, *,
                        advice: str = "lower max_length or raise max_contexts") -> int:
    """Σ_{t ≤ L} V^t, the number of contexts :func:`enumerate_contexts` would list, or :class:`ConfigError`
    (naming ``max_length``, then ``advice``) when it exceeds ``max_contexts`` or the V^{L+1} sequences it
    scores cannot fit in memory — so a caller that knows V and L can refuse them before building a world."""
    L = check_positive_int("max_length", max_length, minimum=0)
    cap = check_positive_int("max_contexts", max_contexts)
    V = check_positive_int("world.n_symbols", n_symbols)
    total, count = 0, 1
    for _ in range(L + 1) if V > 1 else ():  # Σ_{t ≤ L} V^t, stopping once past the cap (L may be huge)
        total, count = total + count, count * V
        if total > cap:
            break
    total = total if V > 1 else L + 1
    if total > cap:
        raise ConfigError(f"max_length: {L} gives Σ_(t≤{L}) {V}^t ≥ {total} contexts, over the limit "
                          f"max_contexts = {cap}; {advice}")
    check_request("max_length, max_contexts", [(V ** (L + 1) * (L + 1), 8 * 2 + 4), (total * V, 8 * 3)],
                   f"the {V}^{L + 1} sequences of length {L + 1} that are scored, and the laws")
    return total


__all__ = ["ContextSet", "enumerate_contexts", "check_context_count", "MAX_CONTEXTS"]
