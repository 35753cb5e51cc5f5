"""The typed errors of simlm.

Every error a user can trigger with bad input is a subclass of :class:`SimlmError`, itself a
:class:`ValueError`, so ``except ValueError`` keeps working.  Messages name the argument and the
problem (``"transition row 3 sums to 0.97, expected 1 within 1e-06"``).  They are raised on the host,
before anything is traced or compiled.
"""

from __future__ import annotations


class SimlmError(ValueError):
    """Base class of every error simlm raises for bad input."""


class DistributionError(SimlmError):
    """A probability vector or stochastic matrix is not one: negative, NaN/inf, or rows not summing to 1."""


class ShapeError(SimlmError):
    """Arrays whose shapes do not fit together (e.g. emission rows ≠ number of hidden states)."""


class TokenError(SimlmError):
    """Token sequences that are not integer arrays of shape (T,) or (n, T) with ids in [0, V) and T ≥ 1."""


class ZeroProbabilityError(SimlmError):
    """A law was asked given tokens of probability zero under the world, where it is undefined: a next-token
    row after an impossible prefix, a masked law whose other tokens are impossible together (the token at
    the masked position itself is never read), a posterior given an impossible sequence."""


class ConfigError(SimlmError):
    """An invalid seed, size, family, option or configuration value."""


class NoSuchLawError(ConfigError, AttributeError):
    """A model asked for a law or representation its kind does not have (a masked LM's next-token law, an
    HMM's features).  Also an AttributeError, so ``hasattr`` and the runtime protocol checks of
    :mod:`simlm.models.base` see the method absent."""


class TrainingDivergedError(SimlmError):
    """The training loss became NaN or infinite; the last good checkpoint is kept.

    ``reached``: the ladder's rungs checkpointed before the divergence (``LadderRecord`` s of
    :mod:`simlm.train.trainer`, ``path`` under the run directory; empty where none was), each a model at its
    recorded ε that :func:`~simlm.train.load_lm` loads — a divergence does not take them with it."""

    def __init__(self, message: str, reached=()):
        super().__init__(message)
        self.reached = tuple(reached)


class NotConvergedWarning(RuntimeWarning):
    """A fit of a convex objective stopped before its optimum (step budget spent with the gradient norm
    above the tolerance): the result depends on the optimiser, not only on the data."""


class UntrainedPositionWarning(RuntimeWarning):
    """A trained model with learned positions read an input longer than those it was trained on: the
    positions beyond keep their initial (random) embeddings, and the law read there measures them."""


__all__ = [
    "NotConvergedWarning",
    "UntrainedPositionWarning",
    "TrainingDivergedError",
    "SimlmError",
    "DistributionError",
    "ShapeError",
    "TokenError",
    "ZeroProbabilityError",
    "ConfigError",
    "NoSuchLawError",
]
