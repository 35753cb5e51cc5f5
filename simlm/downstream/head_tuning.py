"""Head tuning (Wei, Xie & Ma, NeurIPS 2021): a head trained on the frozen LM's predicted distribution.

Features.  The head reads the LM's *predicted distribution* over the V world symbols, as the authors do,
asked of the LM through its protocol (:mod:`simlm.models.base`):

- :func:`task_features` ``(n, V)`` for a posterior task: ``"prepended"`` → p(x_0 = · | x_1:T) from a
  masked LM (for the exact HMM this is P(H_0 | x) B); ``"next"`` → p(x_{T+1} = · | x_1:T) from a causal LM
  (P(H_{T+1} | x) B).  When B has rank K, P = f B⁺ and any label 1[μᵀP ≥ 0] is linear in f — a linear
  head on the ε = 0 model's features can then be exact, and the fit approaches it as ``l2`` → 0 (at the
  default l2 = 1e-4 a task whose smallest margin is 3.5e-5 was fitted to 0.96 on its training set, 1.0 at
  l2 = 0: the regularised optimum, not an optimiser's shortfall).
- :func:`attention_features` ``(n, T, V)`` for a memory task: the masked law at every position (masked LMs)
  or the next-token law after every prefix (causal LMs).

Probabilities are the default; ``log=True`` gives log-probabilities instead.  :func:`head_tuning` fits the
task's head (:mod:`simlm.downstream.heads`) on them and scores it, with the Bayes ceiling of a truncated
input.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import check_positive_int, check_tokens
from simlm.downstream.heads import AttentionHead, LinearHead, check_labels, fit_attention_head, fit_linear_head
from simlm.downstream.tasks import MemoryTask, bayes_ceiling, check_position, check_task
from simlm.errors import ConfigError, ShapeError, ZeroProbabilityError
from simlm.models.base import LanguageModel, MaskedLanguageModel


# ---- features -----------------------------------------------------------------------------------

def task_features(lm, tokens, position, *, log: bool = False) -> jax.Array:
    """The LM's predicted law the head reads, ``(n, V)`` (see the module docstring).  ``position`` is
    ``"prepended"`` (a :class:`~simlm.models.MaskedLanguageModel`'s ``prepended_mask_logprobs``) or
    ``"next"`` (a causal :class:`~simlm.models.LanguageModel`'s ``appended_token_logprobs``), or a task
    carrying one."""
    position = check_position(getattr(position, "position", position))
    _check_lm(lm, MaskedLanguageModel if position == "prepended" else LanguageModel)
    _check_log(log)
    toks, _ = check_tokens(tokens, lm.n_symbols)
    if position == "prepended":
        out = jnp.asarray(lm.prepended_mask_logprobs(toks))
    else:
        out = jnp.asarray(lm.appended_token_logprobs(toks))
    return out if log else jnp.exp(out)


_KINDS = {LanguageModel: "a causal LanguageModel (next_token_logprobs, appended_token_logprobs)",
          MaskedLanguageModel: "a MaskedLanguageModel (masked_token_logprobs, prepended_mask_logprobs)"}


def _check_lm(lm, *kinds) -> None:
    """:class:`ConfigError` naming ``lm`` unless it is a language model of one of ``kinds`` (protocols)."""
    if not (any(isinstance(lm, kind) for kind in kinds) and isinstance(lm.n_symbols, (int, np.integer))):
        raise ConfigError(f"lm: expected {' or '.join(_KINDS[k] for k in kinds)} — a WorldLM, PerturbedLM or "
                          f"TransformerLM of that kind — got {type(lm).__name__}")


def _check_log(log) -> None:
    if not isinstance(log, (bool, np.bool_)):
        raise ConfigError(f"log: expected True or False, got {log!r}")


def attention_features(lm, tokens, *, log: bool = False) -> jax.Array:
    """Per-position predicted laws ``(n, T, V)``: row t is p(x_t = · | x_−t) for a masked LM (WorldLM and
    PerturbedLM are masked too), else p(x_{t+1} = · | x_≤t), the causal law after the prefix ending at t
    (the next-token law of rows 1..T−1, then the law appended after x_T)."""
    _check_lm(lm, MaskedLanguageModel, LanguageModel)
    _check_log(log)
    toks, _ = check_tokens(tokens, lm.n_symbols)
    if isinstance(lm, MaskedLanguageModel):
        out = jnp.asarray(lm.masked_token_logprobs(toks))
    else:
        after = jnp.asarray(lm.appended_token_logprobs(toks))[:, None]
        out = jnp.concatenate([jnp.asarray(lm.next_token_logprobs(toks))[:, 1:], after], axis=1)
    return out if log else jnp.exp(out)


# ---- head tuning --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadTuningResult:
    """Accuracies of a head on the frozen LM; ``bayes_ceiling`` (± ``bayes_ceiling_se``) is the best
    accuracy any predictor of the visible tokens can reach on the test set, for the task's labels (NaN when
    not computed: no ``visible_length``, or test labels given that are not the task's)."""

    head: LinearHead | AttentionHead
    train_accuracy: float
    test_accuracy: float
    bayes_ceiling: float = float("nan")
    bayes_ceiling_se: float = float("nan")


def head_tuning(lm, world, task, train, test, *, visible_length: int | None = None, n_continuations: int = 64,
                seed: int = 0, **head_options) -> HeadTuningResult:
    """Fit a head on ``lm``'s features of ``train`` and score it on ``test``.

    ``train``/``test``: tokens ``(n, T)`` (labelled here by ``task`` from ``world``) or ``(tokens,
    labels)``.  A :class:`~simlm.downstream.tasks.MemoryTask` gets :func:`attention_features` and
    :func:`fit_attention_head`; a posterior task :func:`task_features` at its position and
    :func:`fit_linear_head`.  Without ``visible_length`` the head reads every sequence whole (train and test
    may differ in length).  With ``visible_length`` T' the head sees only x_1:T' of each sequence while
    the labels stay those of x_1:T, and the Bayes ceiling of the test set is computed
    (:func:`~simlm.downstream.tasks.bayes_ceiling`, seeded by ``seed``) — for the task's labels: where the test
    labels given are other labels (noisy, permuted) it is NaN, not the task's ceiling beside an accuracy on
    other labels (which read 1.0 beside 0.49 on random labels: a review, 2026-12-06)."""

    task = check_task(task, world)
    _check_lm(lm, MaskedLanguageModel, LanguageModel)
    if lm.n_symbols != world.n_symbols:
        raise ShapeError(f"lm: has {lm.n_symbols} symbols but the world {world.n_symbols}")
    memory = isinstance(task, MemoryTask)
    fit = fit_attention_head if memory else fit_linear_head
    allowed = set(inspect.signature(fit).parameters) - {"features", "labels", "n_classes", "seed"}
    if unknown := sorted(set(head_options) - allowed):
        raise ConfigError(f"{unknown[0]}: not an option of {fit.__name__}; the options are {sorted(allowed)}")

    def split(data, name):
        if isinstance(data, tuple) and len(data) != 2:
            raise ConfigError(f"{name}: expected tokens (n, T) or a pair (tokens, labels), got a tuple of {len(data)}")
        toks, labels = data if isinstance(data, tuple) else (data, None)
        return check_tokens(toks, world.n_symbols, name)[0], labels

    seed = check_positive_int("seed", seed, minimum=0)  # both before any feature is computed (a review)
    if visible_length is not None:
        check_positive_int("n_continuations", n_continuations)
    (x_tr, y_tr), (x_te, y_te) = split(train, "train"), split(test, "test")
    T_min = min(x_tr.shape[1], x_te.shape[1])
    T_vis = visible_length  # None: each set is read whole, whatever its length
    if T_vis is not None and (isinstance(T_vis, (bool, np.bool_)) or not isinstance(T_vis, (int, np.integer))
                              or not 1 <= T_vis <= T_min):
        raise ConfigError(f"visible_length: expected an integer in [1, {T_min}] (the shorter of train and test), "
                          f"got {visible_length!r}")
    if T_vis is not None and x_te.shape[0] < 2:  # before any fit: the Bayes ceiling's standard error needs two
        raise ConfigError(f"test: with visible_length the Bayes ceiling (a mean with its standard error over the "
                          f"test sequences) needs at least 2 sequences, got {x_te.shape[0]}")
    own = y_te is None

    def named(name, call):  # the world's or the LM's refusal of a sequence, named by its set (it said "tokens")
        try:
            return call()
        except ZeroProbabilityError as err:
            raise ZeroProbabilityError(f"{name}: {str(err).removeprefix('tokens: ')}") from None

    y_tr, y_te = ((named(name, lambda: task.labels(world, x)) if y is None
                   else check_labels(y, x.shape[0], task.n_classes, f"{name} labels"))
                  for x, y, name in ((x_tr, y_tr, "train"), (x_te, y_te, "test")))
    own = own or (T_vis is not None and np.array_equal(y_te, named("test", lambda: task.labels(world, x_te))))
    read = (lambda x: attention_features(lm, x[:, :T_vis])) if memory else \
        (lambda x: task_features(lm, x[:, :T_vis], task.position))
    f_tr, f_te = named("train", lambda: read(x_tr)), named("test", lambda: read(x_te))  # each read once
    head = fit(f_tr, y_tr, n_classes=task.n_classes, seed=seed, **head_options)
    ceiling = (float("nan"), float("nan"))
    if visible_length is not None and own:
        ceiling = bayes_ceiling(world, task, x_te, T_vis, n_continuations=n_continuations, key=seed)
    return HeadTuningResult(head, head.accuracy(f_tr, y_tr), head.accuracy(f_te, y_te), *ceiling)


__all__ = ["task_features", "attention_features", "HeadTuningResult", "head_tuning"]
