"""The interface every language model offers downstream code, and the exact world as the ε = 0 LM.

Shapes: tokens ``(n, T)`` int32 world symbols in [0, V); log-probs ``(n, T, V)`` over the world's V
symbols (special tokens — MASK, padding, prompt slots — are inputs only, never predicted).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from simlm.errors import ConfigError
from simlm.metrics.epsilon import check_world
from simlm.worlds.base import World


class NoSuchLawError(ConfigError, AttributeError):
    """A model asked for a law or representation it does not have (also an AttributeError, so
    ``hasattr(lm, "unembedding")`` stays False for such a model)."""


@runtime_checkable
class LanguageModel(Protocol):
    """A causal LM: row t of ``next_token_logprobs`` is log p(x_t = · | x_<t) (row 0: the first token)."""

    @property
    def n_symbols(self) -> int: ...

    def next_token_logprobs(self, tokens) -> jax.Array: ...


@runtime_checkable
class MaskedLanguageModel(Protocol):
    """A masked LM: log p(x_i = · | x_-i) at the requested positions, ``(n, P, V)``, and the law of a
    masked position prepended before x_1, ``(n, V)``."""

    @property
    def n_symbols(self) -> int: ...

    def masked_token_logprobs(self, tokens, positions=None) -> jax.Array: ...

    def prepended_mask_logprobs(self, tokens) -> jax.Array: ...


@runtime_checkable
class SoftmaxLanguageModel(Protocol):
    """An LM of the form p_f(s) = softmax(Φᵀ f(s)): ``features(tokens)`` gives f(s) ∈ R^d at each
    position ``(n, T, d)`` (the last hidden state the output layer reads) and ``unembedding`` is
    Φ ∈ R^{d×V}.  (Output biases, if any, are folded in as a constant feature coordinate.)"""

    @property
    def n_symbols(self) -> int: ...

    def next_token_logprobs(self, tokens) -> jax.Array: ...

    def features(self, tokens) -> jax.Array: ...

    @property
    def unembedding(self) -> jax.Array: ...


class WorldLM:
    """The exact world wrapped as a language model: the optimal LM, ε = 0, the control of every
    experiment.  Causal and masked; for a :class:`~simlm.worlds.LogLinearWorld` also a softmax LM with
    f = f* and Φ = V*."""

    def __init__(self, world: World):
        self.world = check_world(world, "next_token_logprobs", "masked_token_probs", "prepended_mask_probs")

    def __repr__(self):
        return f"WorldLM({self.world!r})"

    @property
    def n_symbols(self) -> int:
        return self.world.n_symbols

    def next_token_logprobs(self, tokens) -> jax.Array:
        return self.world.next_token_logprobs(tokens)

    def masked_token_logprobs(self, tokens, positions=None) -> jax.Array:
        return jnp.log(self.world.masked_token_probs(tokens, positions))

    def prepended_mask_logprobs(self, tokens) -> jax.Array:
        return jnp.log(self.world.prepended_mask_probs(tokens))

    def features(self, tokens) -> jax.Array:
        if not hasattr(self.world, "true_representation"):
            raise NoSuchLawError(f"features: a WorldLM of a {type(self.world).__name__} has no exact representation "
                                 "f*; features() exists for log-linear worlds")
        return self.world.true_representation(tokens)

    @property
    def unembedding(self) -> jax.Array:
        if not hasattr(self.world, "word_embeddings"):
            raise NoSuchLawError(f"unembedding: a WorldLM of a {type(self.world).__name__} has no word embeddings Φ; "
                                 "unembedding exists for log-linear worlds")
        return self.world.word_embeddings


