"""The interface every language model offers downstream code, and the exact world as the ε = 0 LM.

Shapes: tokens ``(n, T)`` int32 world symbols in [0, V); log-probs ``(n, T, V)`` over the world's V
symbols (special tokens — MASK, padding, prompt slots — are inputs only, never predicted).

Kinds.  What a model can do is said by the methods it has, and checked statically with ``isinstance``
against the runtime-checkable protocols below: :class:`LanguageModel` (causal: the next-token law and the
law after the last token), :class:`MaskedLanguageModel` (the masked law and the law at a prepended mask)
and :class:`SoftmaxLanguageModel` (a causal LM with features f and unembedding Φ).  A model has the
methods of exactly the laws it defines; reading one it lacks raises :class:`NoSuchLawError`, which says
what to use instead and is an ``AttributeError``, so ``hasattr`` and the protocol checks see it absent.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import check_memory, check_tokens
from simlm.errors import ConfigError, NoSuchLawError, ZeroProbabilityError
from simlm.metrics.epsilon import check_world
from simlm.worlds.base import World, masked_logprobs_of, prepended_logprobs_of
from simlm.worlds.hmm import ChainInference, next_token_logprobs
from simlm.worlds.loglinear import LogLinearWorld


@runtime_checkable
class LanguageModel(Protocol):
    """A causal LM.  Row t of ``next_token_logprobs(x)`` ``(n, T, V)`` is log p(x_t = · | x_<t) (row 0: the
    first token's law); ``appended_token_logprobs(x)`` ``(n, V)`` is the law of a token appended after the
    last one, log p(x_{T+1} = · | x_1:T) — the law a head on the "next" position reads."""

    @property
    def n_symbols(self) -> int: ...

    def next_token_logprobs(self, tokens) -> jax.Array: ...

    def appended_token_logprobs(self, tokens) -> jax.Array: ...


@runtime_checkable
class MaskedLanguageModel(Protocol):
    """A masked LM: log p(x_i = · | x_-i) at the requested positions, ``(n, P, V)``, and the law of a
    masked position prepended before x_1, ``(n, V)``."""

    @property
    def n_symbols(self) -> int: ...

    def masked_token_logprobs(self, tokens, positions=None) -> jax.Array: ...

    def prepended_mask_logprobs(self, tokens) -> jax.Array: ...


@runtime_checkable
class SoftmaxLanguageModel(LanguageModel, Protocol):
    """A causal LM of the form p_f(s) = softmax(Φᵀ f(s)): ``features(tokens)`` gives f(s) ∈ R^d at each
    position ``(n, T, d)`` (the last hidden state the output layer reads) and ``unembedding`` is
    Φ ∈ R^{d×V}.  (Output biases, if any, are folded in as a constant feature coordinate.)
    ``log_softmax(features(x) @ unembedding)`` equals ``next_token_logprobs(x)`` exactly for a float32
    model; for a model computing in bfloat16 or float16 (a transformer's ``dtype``) only up to that dtype's
    rounding, as its features come back in it and it multiplies them by Φ rounded to it."""

    def features(self, tokens) -> jax.Array: ...

    @property
    def unembedding(self) -> jax.Array: ...


class ExplainsAbsentLaws:
    """Mixin for a model of one kind: reading a name in ``absent_laws`` (name → why, a format string over
    ``self``) raises :class:`NoSuchLawError` ``"name: why"``; any other missing name is a plain
    AttributeError.  The model never has the attribute, so protocol checks see it absent."""

    absent_laws: ClassVar[dict[str, str]] = {}

    def __getattr__(self, name):
        why = type(self).absent_laws.get(name)
        if why is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise NoSuchLawError(f"{name}: {why.format(self=self)}")


# ---- the exact world as the ε = 0 LM ----------------------------------------------------------------

class WorldLM(ExplainsAbsentLaws):
    """The exact world wrapped as a language model: the optimal LM, ε = 0, the control of every
    experiment.  Causal and masked.  ``WorldLM(world)`` of a :class:`~simlm.worlds.LogLinearWorld` is a
    :class:`SoftmaxWorldLM`, also a softmax LM with f = f* and Φ = V*."""

    absent_laws = {
        "features": "a WorldLM of a {self.world.__class__.__name__} has no exact representation f*; features() "
                    "exists for log-linear worlds",
        "unembedding": "a WorldLM of a {self.world.__class__.__name__} has no word embeddings Φ; unembedding "
                       "exists for log-linear worlds",
    }

    def __new__(cls, world=None, *args, **kwargs):
        if cls is WorldLM and isinstance(world, LogLinearWorld):
            cls = SoftmaxWorldLM
        return super().__new__(cls)

    def __init__(self, world: World):
        self.world = check_world(world, "next_token_logprobs", "masked_token_probs", "prepended_mask_probs")

    def __repr__(self):
        return f"{type(self).__name__}({self.world!r})"

    @property
    def n_symbols(self) -> int:
        return self.world.n_symbols

    def next_token_logprobs(self, tokens) -> jax.Array:
        return self.world.next_token_logprobs(tokens)

    def appended_token_logprobs(self, tokens) -> jax.Array:
        """log p*(x_{T+1} = · | x_1:T) ``(n, V)`` (``(V,)`` for one sequence ``(T,)``).  For a world with an
        exact chain (HMM, MemoryHMM) the filter's prediction (α_T A) B, as row T of its causal law run one
        position further; for any other world p*(x, w) / Σ_w' p*(x, w') from the likelihoods of the V
        one-token extensions.  Raises :class:`~simlm.errors.ZeroProbabilityError` for a sequence of
        probability zero."""
        toks, single = check_tokens(tokens, self.n_symbols)
        if isinstance(self.world, ChainInference):
            # row T of the exact causal filter run over x and one more position, whose token is never read
            self.world._check_cost("next_token_logprobs", len(toks), toks.shape[1] + 1)
            extended = np.concatenate([toks, np.zeros((len(toks), 1), toks.dtype)], axis=1)
            # in log space (the world's own next_token_logprobs): log of the float32 law was −inf below 1e-38
            logprobs, steps = next_token_logprobs(*self.world.chain, jax.device_put(extended))
            _require_possible(toks, steps[:, :-1])
            out = logprobs[:, -1]
        else:
            out = _appended_by_likelihoods(self.world, toks)
        return out[0] if single else out

    def masked_token_logprobs(self, tokens, positions=None) -> jax.Array:
        return masked_logprobs_of(self.world, tokens, positions)  # in log space where the world can

    def prepended_mask_logprobs(self, tokens) -> jax.Array:
        return prepended_logprobs_of(self.world, tokens)


class SoftmaxWorldLM(WorldLM):
    """The exact :class:`~simlm.worlds.LogLinearWorld` as a softmax LM: f(x_<t) = f*(x_<t) = z_{h_t},
    Φ = V*, so p*(· | x_<t) = softmax(Φᵀ f*(x_<t)) exactly."""

    def __init__(self, world: LogLinearWorld):
        if not isinstance(world, LogLinearWorld):
            raise ConfigError(f"world: a SoftmaxWorldLM needs a LogLinearWorld, got {type(world).__name__}")
        super().__init__(world)

    def appended_token_logprobs(self, tokens) -> jax.Array:
        """log p*(x_{T+1} = · | x_1:T) = log_softmax(Φᵀ z_h) ``(n, V)`` at the automaton state h entered
        after x_T."""
        toks, single = check_tokens(tokens, self.n_symbols)
        last = np.asarray(self.world.states(toks))[:, -1]
        after = np.asarray(self.world.next_state)[last, toks[:, -1]]
        out = jax.nn.log_softmax(self.world.emission_logits()[after], axis=-1)
        return out[0] if single else out

    def features(self, tokens) -> jax.Array:
        """f*(x_<t) ``(n, T, d)``."""
        return self.world.true_representation(tokens)

    @property
    def unembedding(self) -> jax.Array:
        """V* ``(d, V)``."""
        return self.world.word_embeddings


def _require_possible(toks: np.ndarray, steps) -> None:
    bad = ~np.isfinite(np.asarray(steps))
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ZeroProbabilityError(f"tokens: sequence {i} has probability zero under this world (token "
                                   f"{int(toks[i, np.flatnonzero(bad[i])[0]])} at position "
                                   f"{int(np.flatnonzero(bad[i])[0])} is impossible given the tokens before it), "
                                   "so the law after it is undefined")


def _appended_by_likelihoods(world, toks: np.ndarray) -> jax.Array:
    """log p*(x_{T+1} = · | x_1:T) ``(n, V)`` of any world: the likelihoods of the V one-token extensions find
    a token w* that can follow each x (and refuse an x of probability zero); the law is then row T of the
    world's own causal law on (x, w*), which conditions on x only.  (Not log p(x, w) − log Σ_w' p(x, w'):
    both terms are of size T·H, and their difference kept ~1e-4 of float32's precision at T = 3000.)"""
    check_world(world, "log_likelihood")
    (n, T), V = toks.shape, int(world.n_symbols)
    check_memory("tokens", n * V * (T + 1), what=f"the {V} one-token extensions of {n} sequences of length {T}")
    extended = np.concatenate([np.repeat(toks, V, axis=0), np.tile(np.arange(V, dtype=toks.dtype), n)[:, None]], 1)
    joint = np.asarray(world.log_likelihood(extended), np.float64).reshape(n, V)
    if not np.isfinite(joint.max(axis=1)).all():
        i = int(np.flatnonzero(~np.isfinite(joint.max(axis=1)))[0])
        raise ZeroProbabilityError(f"tokens: sequence {i} has probability zero under this world, so the law "
                                   "after it is undefined")
    possible = np.concatenate([toks, joint.argmax(axis=1).astype(toks.dtype)[:, None]], axis=1)
    return jnp.asarray(world.next_token_logprobs(possible))[:, -1]
