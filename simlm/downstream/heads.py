"""Head tuning (Wei, Xie & Ma, NeurIPS 2021): a small head trained on the frozen LM's predicted distribution.

Features.  The head reads the LM's *predicted distribution* over the V world symbols, as the authors do:

- :func:`task_features` ``(n, V)`` for a posterior task: ``"prepended"`` → p(x_0 = · | x_1:T) from a
  masked LM (for the exact HMM this is P(H_0 | x) B); ``"next"`` → p(x_{T+1} = · | x_1:T) from a causal LM
  (P(H_{T+1} | x) B).  When B has rank K, P = f B⁺ and any label 1[μᵀP ≥ 0] is linear in f — head tuning
  then recovers the task exactly from the ε = 0 model.
- :func:`attention_features` ``(n, T, V)`` for a memory task: the masked law at every position (masked LMs)
  or the next-token law after every prefix (causal LMs).

Probabilities are the default; ``log=True`` gives log-probabilities instead.  The heads standardise their
inputs (z = (f − m) ⊘ s with training-set mean and spread, for conditioning) — still affine in f.

Heads.  :func:`fit_linear_head`: logits = z W + b, softmax cross-entropy + (l2/2)‖W‖², full batch, Adam
or L-BFGS (convex).  :func:`fit_attention_head`: a single learned query over positions,

    score_t = qᵀ W_k z_t,   w = softmax_t(score),   pooled = Σ_t w_t W_v z_t,   logits = W_o pooled + b,

trained jointly with Adam (full batch), best of ``n_restarts`` by training loss.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simlm._optim import minimise

from simlm.errors import ConfigError, ShapeError
from simlm.checks import check_memory, check_positive, check_positive_int, check_tokens
from simlm.worlds.hmm import ChainInference
from simlm.downstream.tasks import MemoryTask, _predicted_state, bayes_ceiling, check_position, check_task


# ---- features -----------------------------------------------------------------------------------

def task_features(lm, tokens, position, *, log: bool = False) -> jax.Array:
    """The LM's predicted law the head reads, ``(n, V)`` (see the module docstring).  ``position`` is
    ``"prepended"`` or ``"next"``, or a task carrying one.  Works for any LM with
    ``prepended_mask_logprobs`` / ``next_token_logprobs`` (WorldLM, PerturbedLM, TransformerLM)."""
    position = check_position(getattr(position, "position", position))
    _check_lm(lm, "prepended_mask_logprobs" if position == "prepended" else "next_token_logprobs")
    _check_log(log)
    toks, _ = check_tokens(tokens, lm.n_symbols)
    if position == "prepended":
        out = jnp.asarray(lm.prepended_mask_logprobs(toks))
    else:
        extended = np.concatenate([toks, _possible_next_token(lm, toks)[:, None]], axis=1)
        out = jnp.asarray(lm.next_token_logprobs(extended))[:, -1]
    return out if log else jnp.exp(out)


def _check_lm(lm, *methods) -> None:
    """:class:`ConfigError` naming ``lm`` unless it is a language model with one of ``methods``."""
    if not isinstance(getattr(lm, "n_symbols", None), (int, np.integer)) or not any(hasattr(lm, m) for m in methods):
        raise ConfigError(f"lm: expected a language model with {' or '.join(methods)} (WorldLM, PerturbedLM, "
                          f"TransformerLM), got {type(lm).__name__}")


def _check_log(log) -> None:
    if not isinstance(log, (bool, np.bool_)):
        raise ConfigError(f"log: expected True or False, got {log!r}")


def _possible_next_token(lm, toks) -> np.ndarray:
    """A placeholder x_{T+1} ``(n,)``: its own row is never read, but an LM backed by an exact world rejects
    a token of probability zero, so for those the most likely next token is used (else token 0)."""
    world = getattr(lm, "world", None)
    if isinstance(world, ChainInference):
        initial, transition, emission = world.chain
        pred, _ = _predicted_state(initial, transition, emission, jnp.asarray(toks))
        return np.asarray(jnp.argmax(pred @ emission, axis=-1), np.int32)
    return np.zeros(toks.shape[0], np.int32)


def attention_features(lm, tokens, *, log: bool = False) -> jax.Array:
    """Per-position predicted laws ``(n, T, V)``: row t is p(x_t = · | x_−t) for a masked LM (an LM with
    ``masked_token_logprobs`` whose ``config`` is not causal — WorldLM and PerturbedLM count as masked),
    else p(x_{t+1} = · | x_≤t), the causal next-token law after the prefix ending at t."""
    _check_lm(lm, "masked_token_logprobs", "next_token_logprobs")
    _check_log(log)
    toks, _ = check_tokens(tokens, lm.n_symbols)
    config = getattr(lm, "config", None)
    if hasattr(lm, "masked_token_logprobs") and not getattr(config, "causal", False):
        out = jnp.asarray(lm.masked_token_logprobs(toks))
    else:
        extended = np.concatenate([toks, _possible_next_token(lm, toks)[:, None]], axis=1)
        out = jnp.asarray(lm.next_token_logprobs(extended))[:, 1:]
    return out if log else jnp.exp(out)


# ---- input checks -------------------------------------------------------------------------------

def check_features(features, ndim: int, name: str = "features") -> np.ndarray:
    raw = np.asarray(features)
    if raw.dtype.kind not in "biuf":
        raise ConfigError(f"{name}: expected real numbers, got dtype {raw.dtype}")
    with np.errstate(over="ignore"):
        f = raw.astype(np.float32)
    if f.ndim != ndim or min(f.shape, default=0) == 0:
        want = "(n, V)" if ndim == 2 else "(n, T, V)"
        raise ShapeError(f"{name}: expected a non-empty array of shape {want}, got {f.shape}")
    if not np.all(np.isfinite(raw)):
        raise ConfigError(f"{name}: has non-finite entries (log-probabilities of impossible tokens?); "
                          "use probabilities")
    if not np.all(np.isfinite(f)):
        raise ConfigError(f"{name}: has entries beyond the float32 range the heads compute in")
    return f


def check_labels(labels, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ShapeError(f"{name}: expected shape ({n},) to match the {n} feature rows, got {y.shape}")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)  # 0.0/1.0 labels are class ids
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{name}: expected integer class ids, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ConfigError(f"{name}: class id {int(y.min() if y.min() < 0 else y.max())} is outside "
                          f"[0, n_classes = {n_classes})")
    return y.astype(np.int32)


def check_l2(l2) -> float:
    """The ridge weight: 0 or a positive finite number."""
    if isinstance(l2, (int, float, np.integer, np.floating)) and not isinstance(l2, (bool, np.bool_)) and l2 == 0:
        return 0.0
    return check_positive("l2", l2)


def _standardiser(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and spread over all but the last axis; constant coordinates get spread 1."""
    axes = tuple(range(f.ndim - 1))
    mean, sd = f.mean(axes), f.std(axes)
    return mean, np.where(sd > 1e-6 * max(float(sd.max()), 1e-30), sd, 1.0).astype(np.float32)


def _xent(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class _Classifier:
    def predict(self, features) -> np.ndarray:
        """int32 ``(n,)`` argmax of :meth:`logits`."""
        return np.asarray(jnp.argmax(self.logits(features), axis=-1), np.int32)

    def accuracy(self, features, labels) -> float:
        """Fraction of ``labels (n,)`` predicted correctly."""
        pred = self.predict(features)
        return float(np.mean(pred == check_labels(labels, pred.shape[0], self.n_classes)))


# ---- linear head --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LinearHead(_Classifier):
    """logits = ((f − mean) ⊘ scale) W + b: ``weight (F, C)``, ``bias (C,)``, ``mean (F,)``, ``scale (F,)``;
    ``losses (steps,)`` the training objective per step."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    losses: np.ndarray

    @property
    def n_classes(self) -> int:
        return self.weight.shape[1]

    def logits(self, features) -> jax.Array:
        """``(n, C)`` for features ``(n, F)``."""
        f = check_features(features, 2)
        if f.shape[1] != self.weight.shape[0]:
            raise ShapeError(f"features: expected {self.weight.shape[0]} columns, got {f.shape[1]}")
        return jnp.asarray((f - self.mean) / self.scale) @ self.weight + self.bias


@partial(jax.jit, static_argnames=("n_classes", "steps", "method"))
def _fit_linear(z, labels, l2, lr, key, n_classes: int, steps: int, method: str):
    params = (0.01 * jax.random.normal(key, (z.shape[1], n_classes)), jnp.zeros(n_classes))

    def loss(p):
        W, b = p
        return _xent(z @ W + b, labels) + 0.5 * l2 * jnp.sum(W**2)

    if method == "adam":
        return minimise(loss, params, optax.adam(lr), steps)
    opt = optax.lbfgs()
    value_and_grad_state = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        p, state = carry
        value, grad = value_and_grad_state(p, state=state)
        updates, new_state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        new_p = optax.apply_updates(p, updates)
        ok = jnp.isfinite(loss(new_p))  # a converged line search can step to NaN: keep the last good point
        return jax.lax.cond(ok, lambda: (new_p, new_state), lambda: (p, state)), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params, losses


_LINEAR_METHODS = {"adam": 1000, "lbfgs": 100}  # method → default number of steps


def fit_linear_head(features, labels, *, n_classes: int = 2, l2: float = 1e-4, method: str = "adam",
                    steps: int | None = None, lr: float = 0.2, seed: int = 0) -> LinearHead:
    """Multinomial logistic regression on ``features (n, F)`` (standardised), ``labels (n,)`` int: full-batch
    minimisation of mean cross-entropy + (l2/2)‖W‖², by ``method`` ``"adam"`` (at ``lr``, default 1000
    steps; compiles in well under a second) or ``"lbfgs"`` (optax L-BFGS with zoom line search, default 100
    steps; converges tighter, compiles in ~2 s on CPU).  On the oracle tasks of the tests both reach the
    same accuracy and Adam's final loss is within 1e-3 of L-BFGS's."""
    f = check_features(features, 2)
    C = check_positive_int("n_classes", n_classes, minimum=2)
    y = check_labels(labels, f.shape[0], C)
    if not isinstance(method, str) or method not in _LINEAR_METHODS:
        raise ConfigError(f"method: expected one of {tuple(_LINEAR_METHODS)}, got {method!r}")
    steps = _LINEAR_METHODS[method] if steps is None else check_positive_int("steps", steps)
    check_memory("steps", steps, what="the loss per step")
    l2 = check_l2(l2)
    mean, scale = _standardiser(f)
    (W, b), losses = _fit_linear(jnp.asarray((f - mean) / scale), jnp.asarray(y), jnp.float32(l2),
                                 jnp.float32(check_positive("lr", lr)),
                                 jax.random.PRNGKey(check_positive_int("seed", seed, minimum=0)), C, steps, method)
    return LinearHead(np.asarray(W), np.asarray(b), mean, scale, np.asarray(losses))


# ---- attention head -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class AttentionHead(_Classifier):
    """Single-query attention over positions (module docstring): ``params`` holds ``q (d,)``,
    ``W_k (d, F)``, ``W_v (d_v, F)``, ``W_o (C, d_v)``, ``b (C,)``; inputs standardised by ``mean``,
    ``scale (F,)``; ``losses (steps,)`` of the chosen restart, ``restart_losses (R,)`` final losses."""

    params: dict
    mean: np.ndarray
    scale: np.ndarray
    losses: np.ndarray
    restart_losses: np.ndarray

    @property
    def n_classes(self) -> int:
        return self.params["b"].shape[0]

    def _z(self, features):
        f = check_features(features, 3)
        if f.shape[2] != self.mean.shape[0]:
            raise ShapeError(f"features: expected {self.mean.shape[0]} features per position, got {f.shape[2]}")
        return jnp.asarray((f - self.mean) / self.scale)

    def logits(self, features) -> jax.Array:
        """``(n, C)`` for features ``(n, T, F)``."""
        return _attention_logits(self.params, self._z(features))

    def attention(self, features) -> jax.Array:
        """The weights w ``(n, T)`` over positions."""
        return _attention_weights(self.params, self._z(features))


def _attention_weights(p, z):
    return jax.nn.softmax(jnp.einsum("ntf,df,d->nt", z, p["W_k"], p["q"]), axis=-1)


def _attention_logits(p, z):
    pooled = jnp.einsum("nt,ntf->nf", _attention_weights(p, z), z) @ p["W_v"].T  # Σ_t w_t W_v z_t
    return pooled @ p["W_o"].T + p["b"]


def adam_restarts(loss, init, keys, *, steps: int, lr: float):
    """Minimise ``loss(params)`` from ``init(key)`` for each key with Adam, vmapped over restarts; returns
    ``(params of the best restart, its per-step losses (steps,), final loss per restart (R,))``.  Call
    inside ``jax.jit``."""
    opt = optax.adam(lr)

    def run(key):
        p, losses = minimise(loss, init(key), opt, steps)
        return p, losses, loss(p)

    params, losses, final = jax.vmap(run)(keys)
    best = jnp.argmin(jnp.where(jnp.isfinite(final), final, jnp.inf))
    return jax.tree.map(lambda a: a[best], params), losses[best], final


@partial(jax.jit, static_argnames=("n_classes", "d_key", "d_value", "steps", "n_restarts"))
def _fit_attention(z, labels, l2, lr, key, n_classes, d_key, d_value, steps, n_restarts):
    def loss(p):
        return _xent(_attention_logits(p, z), labels) + 0.5 * l2 * _attention_l2(p)

    init = partial(_init_attention, F=z.shape[-1], n_classes=n_classes, d_key=d_key, d_value=d_value)
    return adam_restarts(loss, init, jax.random.split(key, n_restarts), steps=steps, lr=lr)


def _init_attention(key, F, n_classes, d_key, d_value) -> dict:
    """A random attention head for ``F`` features per position (the head's own parameters, no prompt)."""
    ks = jax.random.split(key, 4)
    return {"q": jax.random.normal(ks[0], (d_key,)), "W_k": jax.random.normal(ks[1], (d_key, F)) / jnp.sqrt(F),
            "W_v": jax.random.normal(ks[2], (d_value, F)) / jnp.sqrt(F),
            "W_o": jax.random.normal(ks[3], (n_classes, d_value)) / jnp.sqrt(d_value), "b": jnp.zeros(n_classes)}


def _attention_l2(p):
    """Σ‖weight‖² over the head's weights (the bias is not penalised)."""
    return sum(jnp.sum(p[name] ** 2) for name in ("q", "W_k", "W_v", "W_o"))


def fit_attention_head(features, labels, *, n_classes: int = 2, d_key: int = 8, d_value: int = 16,
                       l2: float = 1e-4, steps: int = 300, lr: float = 0.05, n_restarts: int = 4,
                       seed: int = 0) -> AttentionHead:
    """Train the single-query attention head (module docstring) on ``features (n, T, F)``, ``labels (n,)``
    with Adam at ``lr`` for ``steps`` full-batch steps, best of ``n_restarts`` random initialisations."""
    f = check_features(features, 3)
    C = check_positive_int("n_classes", n_classes, minimum=2)
    y = check_labels(labels, f.shape[0], C)
    l2 = check_l2(l2)
    R, d_key, d_value = (check_positive_int(k, v) for k, v in (("n_restarts", n_restarts), ("d_key", d_key),
                                                                 ("d_value", d_value)))
    n, T, F = f.shape
    check_memory("n_restarts, d_key, d_value, steps", 4 * R * (n * (T + F + d_value) + (d_key + d_value) * F
                                                              + check_positive_int("steps", steps)),
                 what="the restarts' parameters, activations and losses")
    mean, scale = _standardiser(f)
    params, losses, final = _fit_attention(
        jnp.asarray((f - mean) / scale), jnp.asarray(y), jnp.float32(l2), jnp.float32(check_positive("lr", lr)),
        jax.random.PRNGKey(check_positive_int("seed", seed, minimum=0)), C,
        check_positive_int("d_key", d_key), check_positive_int("d_value", d_value),
        check_positive_int("steps", steps), check_positive_int("n_restarts", n_restarts))
    return AttentionHead({k: np.asarray(v) for k, v in params.items()}, mean, scale, np.asarray(losses),
                         np.asarray(final))


# ---- head tuning --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadTuningResult:
    """Accuracies of a head on the frozen LM; ``bayes_ceiling`` (± ``bayes_ceiling_se``) is the best
    accuracy any predictor of the visible tokens can reach on the test set (NaN when not computed)."""

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
    :func:`fit_linear_head`.  With ``visible_length`` T' the head sees only x_1:T' of each sequence while
    the labels stay those of x_1:T, and the Bayes ceiling of the test set is computed
    (:func:`~simlm.downstream.tasks.bayes_ceiling`, seeded by ``seed``)."""

    task = check_task(task, world)
    _check_lm(lm, "masked_token_logprobs", "next_token_logprobs")
    if lm.n_symbols != world.n_symbols:
        raise ShapeError(f"lm: has {lm.n_symbols} symbols but the world {world.n_symbols}")
    fit = fit_attention_head if isinstance(task, MemoryTask) else fit_linear_head
    allowed = set(inspect.signature(fit).parameters) - {"features", "labels", "n_classes", "seed"}
    if unknown := sorted(set(head_options) - allowed):
        raise ConfigError(f"{unknown[0]}: not an option of {fit.__name__}; the options are {sorted(allowed)}")

    def split(data, name):
        if isinstance(data, tuple) and len(data) != 2:
            raise ConfigError(f"{name}: expected tokens (n, T) or a pair (tokens, labels), got a tuple of {len(data)}")
        toks, labels = data if isinstance(data, tuple) else (data, None)
        return check_tokens(toks, world.n_symbols, name)[0], labels

    (x_tr, y_tr), (x_te, y_te) = split(train, "train"), split(test, "test")
    T_min = min(x_tr.shape[1], x_te.shape[1])
    T_vis = T_min if visible_length is None else visible_length
    if isinstance(T_vis, (bool, np.bool_)) or not isinstance(T_vis, (int, np.integer)) or not 1 <= T_vis <= T_min:
        raise ConfigError(f"visible_length: expected an integer in [1, {T_min}] (the shorter of train and test), "
                          f"got {visible_length!r}")
    y_tr, y_te = ((task.labels(world, x) if y is None else check_labels(y, x.shape[0], task.n_classes, name))
                  for x, y, name in ((x_tr, y_tr, "train labels"), (x_te, y_te, "test labels")))
    if isinstance(task, MemoryTask):
        feats = lambda x: attention_features(lm, x[:, :T_vis])  # noqa: E731
        head = fit_attention_head(feats(x_tr), y_tr, n_classes=task.n_classes, seed=seed, **head_options)
    else:
        feats = lambda x: task_features(lm, x[:, :T_vis], task.position)  # noqa: E731
        head = fit_linear_head(feats(x_tr), y_tr, n_classes=task.n_classes, seed=seed, **head_options)
    ceiling = (float("nan"), float("nan"))
    if visible_length is not None:
        ceiling = bayes_ceiling(world, task, x_te, T_vis, n_continuations=n_continuations, key=seed)
    return HeadTuningResult(head, head.accuracy(feats(x_tr), y_tr), head.accuracy(feats(x_te), y_te), *ceiling)


__all__ = ["task_features", "attention_features", "LinearHead", "fit_linear_head", "AttentionHead",
           "fit_attention_head", "HeadTuningResult", "head_tuning", "adam_restarts", "check_features",
           "check_labels", "check_l2"]
