"""Heads (Wei, Xie & Ma, NeurIPS 2021): small classifiers on a frozen LM's predicted laws, and their maths.

A head reads features f standardised to z = (f − m) ⊘ s (training-set mean and spread, for conditioning —
still affine in f) and has a small public interface, :class:`HeadLogits`: ``init``, ``logits(params, z)``
and ``penalty(params)``, so every fit — a head on fixed features here, a head and a prompt jointly in
:mod:`simlm.downstream.prompt_fit` — minimises the one objective :func:`head_loss`,

    mean cross-entropy(logits(params, z), y) + (l2/2)·penalty(params).

- :class:`LinearLogits`: logits = z W + b, penalty ‖W‖² (convex).  :func:`fit_linear_head` fits it full
  batch to its optimum with L-BFGS (or, on request, a fixed budget of Adam steps) and returns a
  :class:`LinearHead` that records the gradient norm it stopped at.  The optimum exists when every class
  has a training example and l2 > 0 (or the data are not separable); otherwise the fit warns.
- :class:`AttentionLogits`: a single learned query over positions,

      score_t = qᵀ W_k z_t,   w = softmax_t(score),   pooled = Σ_t w_t W_v z_t,   logits = W_o pooled + b,

  penalty Σ‖q, W_k, W_v, W_o‖².  :func:`fit_attention_head` fits it with Adam (full batch), best of
  ``n_restarts`` by training loss, and returns an :class:`AttentionHead`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
import scipy.sparse

from simlm._optim import minimise
from simlm.checks import (as_array, as_key, check_float32_normal, check_float32_range, check_memory, check_positive,
                          check_positive_int)
from simlm.errors import ConfigError, NotConvergedWarning, ShapeError, TrainingDivergedError


# ---- input checks and standardisation ------------------------------------------------------------

def check_features(features, ndim: int, name: str = "features") -> np.ndarray:
    """``features`` as a float array of ``ndim`` axes: float64 kept as float64 (the heads standardise on the
    host in float64 and cast to float32 only after, so float64 features whose signal lies below float32's
    resolution, rows 0.5 ± 1e-9, keep it), everything else as float32."""
    raw = as_array(name, features)
    if raw.dtype == jnp.bfloat16:  # numpy's kind for it is "V"; a real type all the same
        raw = raw.astype(np.float32)
    if raw.dtype.kind not in "biuf":
        raise ConfigError(f"{name}: expected real numbers, got dtype {raw.dtype}")
    with np.errstate(over="ignore"):
        f = raw.astype(np.float64 if raw.dtype == np.float64 else np.float32)
    if f.ndim != ndim or min(f.shape, default=0) == 0:
        want = "(n, V)" if ndim == 2 else "(n, T, V)"
        raise ShapeError(f"{name}: expected a non-empty array of shape {want}, got {f.shape}")
    if not np.all(np.isfinite(raw)):
        raise ConfigError(f"{name}: has non-finite entries (log-probabilities of impossible tokens?); "
                          "use probabilities")
    if not np.all(np.abs(f) <= np.finfo(np.float32).max):
        raise ConfigError(f"{name}: has entries beyond the float32 range the heads compute in")
    return f


def check_labels(labels, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
    """Class ids ``(n,)`` in [0, ``n_classes``) as int32: integers, whole floats, or booleans (False/True are
    classes 0 and 1, the form of a task 1[μᵀP ≥ 0]); a typed error naming ``name`` otherwise."""
    y = as_array(name, labels)
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.shape != (n,):
        raise ShapeError(f"{name}: expected shape ({n},) to match the {n} feature rows, got {y.shape}")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):  # named as given: 1e20 cast to int64 would wrap
            raise ConfigError(f"{name}: class id {float(y.min() if y.min() < 0 else y.max()):g} is outside "
                              f"[0, n_classes = {n_classes})")
        y = y.astype(np.int64)  # 0.0/1.0 labels are class ids
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{name}: expected integer class ids, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ConfigError(f"{name}: class id {int(y.min() if y.min() < 0 else y.max())} is outside "
                          f"[0, n_classes = {n_classes})")
    return y.astype(np.int32)


def check_lr(lr) -> float:
    """A learning rate: positive and finite, and at least float32's smallest normal number, the precision the
    fits compute in (1e-50 became 0 there: Adam took steps of size 0 and the start came back as the fit)."""
    return check_float32_normal("lr", check_positive("lr", lr), "the fits compute")


def check_l2(l2) -> float:
    """The ridge weight: 0, or a positive number in float32's normal range, where the fits compute (1e-50
    became 0 there — the unpenalised fit, without its 'no minimiser' warning — and 1e39 inf: the objective
    was inf from the first step and the random start came back as the fit)."""
    if isinstance(l2, (int, float, np.integer, np.floating)) and not isinstance(l2, (bool, np.bool_)) and l2 == 0:
        return 0.0
    return check_float32_range("l2", check_positive("l2", l2), "the fits compute", "give l2 = 0 for no penalty")


def standardisation(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, scale) that standardise fixed features ``f (..., F)`` on the host: per-coordinate mean
    and spread over all but the last axis.  A coordinate counts as constant, and gets scale 1, when its
    spread is ≤ 1e-6 of the largest coordinate's spread and ≤ 1 (so near-zero probabilities of a law are
    not blown up to unit spread, and no coordinate is left with a spread above 1, which would leave the
    fit ill-conditioned).  (Inside a fit whose features move with the prompt, :func:`standardise` computes
    the same in the graph.)"""
    axes = tuple(range(f.ndim - 1))
    f64 = np.asarray(f, np.float64)  # float32 sums of features near the float range would overflow
    mean, sd = f64.mean(axes), f64.std(axes)
    # float64, as :func:`standardised` computes: a float32 mean of rows 0.5 ± 1e-9 would be off by ~1e-8,
    # ten of their spreads
    return mean, np.where(sd > min(1e-6 * float(sd.max()), 1.0), sd, 1.0)


def standardised(f: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(f − mean) ⊘ scale as float32, computed in float64 (f − mean can leave float32 where z does not)."""
    return ((np.asarray(f, np.float64) - mean) / scale).astype(np.float32)


def standardise(f):
    """``(z, mean, scale)``: f standardised over all but the last axis (sequences, and positions for
    ``(n, T, F)``) inside a traced fit, with stop-gradient statistics (so z is an affine map of f for the
    final prompt); the traced twin of :func:`standardisation`."""
    axes = tuple(range(f.ndim - 1))
    mean = jax.lax.stop_gradient(f.mean(axes))
    sd = jax.lax.stop_gradient(f.std(axes))
    sd = jnp.where(sd > jnp.minimum(1e-6 * sd.max(), 1.0), sd, 1.0)
    return (f - mean) / sd, mean, sd


def cross_entropy(logits, labels) -> jax.Array:
    """Mean softmax cross-entropy of integer ``labels (n,)`` under ``logits (n, C)``, nats."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ---- the heads' maths: parameters → logits ------------------------------------------------------

class HeadLogits(Protocol):
    """What a kind of head computes, as pure functions of its parameters (a dict of arrays) and the
    standardised features z: ``init(key, n_features, n_classes)`` a random start, ``logits(params, z)``
    ``(n, C)``, ``penalty(params)`` Σ‖weight‖² (biases not penalised; the fits add (l2/2)·penalty) and
    ``fitted(params, mean, scale, losses, restart_losses)`` the fitted head that reads raw features."""

    def init(self, key, n_features: int, n_classes: int) -> dict: ...

    def logits(self, params, z) -> jax.Array: ...

    def penalty(self, params) -> jax.Array: ...

    def fitted(self, params, mean, scale, losses, restart_losses): ...


@dataclass(frozen=True)
class LinearLogits:
    """logits = z W + b: ``W (F, C)`` initialised N(0, init_scale²), ``b (C,)`` zeros; penalty ‖W‖²."""

    init_scale: float = 0.01

    def init(self, key, n_features: int, n_classes: int) -> dict:
        return {"W": self.init_scale * jax.random.normal(key, (n_features, n_classes)), "b": jnp.zeros(n_classes)}

    @staticmethod
    def logits(params, z) -> jax.Array:
        return z @ params["W"] + params["b"]

    @staticmethod
    def penalty(params) -> jax.Array:
        return jnp.sum(params["W"] ** 2)

    @staticmethod
    def fitted(params, mean, scale, losses, restart_losses=None, gradient_norm=None) -> LinearHead:
        return LinearHead(np.asarray(params["W"]), np.asarray(params["b"]), np.asarray(mean), np.asarray(scale),
                          np.asarray(losses), None if gradient_norm is None else float(gradient_norm))


@dataclass(frozen=True)
class AttentionLogits:
    """The single-query attention head over positions of z ``(n, T, F)`` (module docstring):
    score_t = qᵀ W_k z_t, w = softmax_t(score), logits = W_o Σ_t w_t W_v z_t + b, with ``q (d_key,)``,
    ``W_k (d_key, F)``, ``W_v (d_value, F)``, ``W_o (C, d_value)``, ``b (C,)``; penalty Σ‖q, W_k, W_v, W_o‖²."""

    d_key: int = 8
    d_value: int = 16

    def init(self, key, n_features: int, n_classes: int) -> dict:
        ks = jax.random.split(key, 4)
        F, dv = n_features, self.d_value
        return {"q": jax.random.normal(ks[0], (self.d_key,)),
                "W_k": jax.random.normal(ks[1], (self.d_key, F)) / jnp.sqrt(F),
                "W_v": jax.random.normal(ks[2], (dv, F)) / jnp.sqrt(F),
                "W_o": jax.random.normal(ks[3], (n_classes, dv)) / jnp.sqrt(dv), "b": jnp.zeros(n_classes)}

    @staticmethod
    def weights(params, z) -> jax.Array:
        """The attention w ``(n, T)`` over positions."""
        return jax.nn.softmax(jnp.einsum("ntf,df,d->nt", z, params["W_k"], params["q"]), axis=-1)

    @staticmethod
    def logits(params, z) -> jax.Array:
        pooled = jnp.einsum("nt,ntf->nf", AttentionLogits.weights(params, z), z) @ params["W_v"].T  # Σ_t w_t W_v z_t
        return pooled @ params["W_o"].T + params["b"]

    @staticmethod
    def penalty(params) -> jax.Array:
        return sum(jnp.sum(params[name] ** 2) for name in ("q", "W_k", "W_v", "W_o"))

    @staticmethod
    def fitted(params, mean, scale, losses, restart_losses) -> AttentionHead:
        return AttentionHead({name: np.asarray(params[name]) for name in ("q", "W_k", "W_v", "W_o", "b")},
                             np.asarray(mean), np.asarray(scale), np.asarray(losses), np.asarray(restart_losses))


def head_loss(head: HeadLogits, params, z, labels, l2) -> jax.Array:
    """The objective every head fit minimises: mean cross-entropy + (l2/2)·penalty."""
    return cross_entropy(head.logits(params, z), labels) + 0.5 * l2 * head.penalty(params)


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


# ---- fitted heads -------------------------------------------------------------------------------

class _Classifier:
    def predict(self, features) -> np.ndarray:
        """int32 ``(n,)`` argmax of :meth:`logits`, an exact tie to the lowest class (a :class:`ConfigError` where
        a row's logits are not finite: argmax would read NaN as class 0)."""
        logits = np.asarray(self.logits(features))
        if not np.all(np.isfinite(logits)):
            row = int(np.flatnonzero(~np.isfinite(logits).all(-1))[0])
            raise ConfigError(f"features: the head's logits of row {row} are not finite (features far outside the "
                              "range the head was fitted on, or a head whose fit diverged)")
        return np.argmax(logits, axis=-1).astype(np.int32)

    def accuracy(self, features, labels) -> float:
        """Fraction of ``labels (n,)`` predicted correctly."""
        f = as_array("features", features)
        if f.ndim < 2:
            raise ShapeError(f"features: expected one row per label, (n, …), got shape {f.shape}")
        labels = check_labels(labels, f.shape[0], self.n_classes)  # before predict compiles
        return float(np.mean(self.predict(f) == labels))


@dataclass(frozen=True, eq=False)
class LinearHead(_Classifier):
    """logits = ((f − mean) ⊘ scale) W + b: ``weight (F, C)``, ``bias (C,)``, ``mean (F,)``, ``scale (F,)``;
    ``losses`` the training objective before each step taken; ``gradient_norm`` ‖∇ objective‖₂ w.r.t. (W, b) at
    the returned head, a convergence certificate (:func:`fit_linear_head`; None for a head fitted jointly with
    a prompt, whose objective also moves the features)."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    losses: np.ndarray
    gradient_norm: float | None = None

    @property
    def n_classes(self) -> int:
        return self.weight.shape[1]

    def logits(self, features) -> jax.Array:
        """``(n, C)`` for features ``(n, F)``."""
        f = check_features(features, 2)
        if f.shape[1] != self.weight.shape[0]:
            raise ShapeError(f"features: expected {self.weight.shape[0]} columns, got {f.shape[1]}")
        z = jnp.asarray(standardised(f, self.mean, self.scale))
        return LinearLogits.logits({"W": self.weight, "b": self.bias}, z)


@dataclass(frozen=True, eq=False)
class AttentionHead(_Classifier):
    """Single-query attention over positions (:class:`AttentionLogits`): ``params`` holds ``q (d,)``,
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
        return jnp.asarray(standardised(f, self.mean, self.scale))

    def logits(self, features) -> jax.Array:
        """``(n, C)`` for features ``(n, T, F)``."""
        return AttentionLogits.logits(self.params, self._z(features))

    def attention(self, features) -> jax.Array:
        """The weights w ``(n, T)`` over positions."""
        return AttentionLogits.weights(self.params, self._z(features))


# ---- fitting a head on fixed features ----------------------------------------------------------

def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(tree)))


@partial(jax.jit, static_argnames=("head", "n_classes", "steps", "method"))
def _fit_linear(head, z, labels, l2, lr, tol, key, n_classes: int, steps: int, method: str):
    """``(params, losses (steps,), number of losses recorded, ‖∇ objective‖ at params, stopped)``; stopped:
    L-BFGS ended before its budget (stationary to ``tol``, stalled, or a rejected step)."""
    params = head.init(key, z.shape[1], n_classes)

    def loss(p):
        return head_loss(head, p, z, labels, l2)

    if method == "adam":
        params, losses = minimise(loss, params, optax.adam(lr), steps)
        return params, losses, steps, _norm(jax.grad(loss)(params)), False
    opt = optax.lbfgs()
    value_and_grad_state = optax.value_and_grad_from_state(loss)

    def body(carry):  # one L-BFGS step from p, unless p is already stationary to ``tol``
        p, state, k, losses, done, best, since = carry
        value, grad = value_and_grad_state(p, state=state)
        stationary = _norm(grad) <= tol
        updates, new_state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        new_p = optax.apply_updates(p, updates)
        ok = ~stationary & jnp.isfinite(loss(new_p))  # a converged line search can step to NaN: keep p
        p, state = jax.lax.cond(ok, lambda: (new_p, new_state), lambda: (p, state))
        since = jnp.where(value < best, 0, since + 1)
        return p, state, k + 1, losses.at[k].set(value), ~ok, jnp.minimum(best, value), since

    def running(c):
        return (c[2] < steps) & ~c[4] & (c[6] < _STALL)

    dt = jax.eval_shape(loss, params).dtype  # float64 under jax_enable_x64 (the parameters are drawn in it)
    init = (params, opt.init(params), 0, jnp.full(steps, jnp.nan, dt), False, jnp.asarray(jnp.inf, dt), 0)
    params, _, k, losses, done, _, since = jax.lax.while_loop(running, body, init)
    return params, losses, k, _norm(jax.grad(loss)(params)), done | (since >= _STALL)


#: L-BFGS stops once the objective has not decreased for this many steps: it is then constant to float32's
#: resolution, where the gradient norm can stay at 1e-6–1e-4 (measured on the trained-feature heads of
#: docs/head_prompt.md: the loss equal to 9 digits from step 300 on, the gradient norm flat at 1.9e-5).
_STALL = 50
#: a stalled fit whose gradient norm is still above this is reported as not converged
_STALLED_GRADIENT = 1e-3
#: …or whose worst-case gap to the optimum, g²/(2·l2) nats, is above this (at the default l2 = 1e-4 it is the
#: same rule: g ≤ 1e-3)
_STALL_GAP = 5e-3


_LINEAR_METHODS = {"adam": 1000, "lbfgs": 1000}  # method → default number of steps


def fit_linear_head(features, labels, *, n_classes: int = 2, l2: float = 1e-4, method: str = "lbfgs",
                    steps: int | None = None, lr: float = 0.2, tol: float = 1e-6, seed: int = 0) -> LinearHead:
    """Multinomial logistic regression on ``features (n, F)`` (standardised), ``labels (n,)`` int: full-batch
    minimisation of mean cross-entropy + (l2/2)‖W‖².

    The objective is convex (strictly in W for l2 > 0), so the head is a property of the features and the
    labels, not of the optimiser — when the optimiser reaches the optimum.  ``method``:

    - ``"lbfgs"`` (default): optax L-BFGS with zoom line search until the objective's gradient norm is
      ≤ ``tol``, or the objective has not decreased for 50 steps (it is then constant to float32's
      resolution; the gradient norm can stay at 1e-6–1e-4 there), or ``steps`` steps (default 1000) are
      taken; ``gradient_norm`` of the result says how close it came.  On 43 of experiment 1's laws it
      stopped after 22–141 steps (median 62); a 32-dimensional hidden-state head needed 629.  Compiles
      in ~1 s on CPU.
    - ``"adam"``: a fixed budget of Adam steps at ``lr`` (default 1000): a cheaper compile, but at the
      default lr it ends oscillating around the optimum, so its accuracy can hinge on the features' last
      bits.  Measured on a trained experiment-1 law (|H| = 10, seed 1): features perturbed by 1e-7
      relative moved Adam's held-out accuracy between 0.863 and 0.908 (final loss 0.2254–0.2272); L-BFGS
      gave 0.867 every time (loss 0.22528).  Use it as an early-stopped probe, knowing it is one.

    ``lr`` is read by Adam only, ``tol`` by L-BFGS only; ``losses`` of the result holds the objective
    before each step taken.  An L-BFGS fit that spends ``steps`` without reaching ``tol``, or stalls with
    a gradient norm g above min(1e-3, √(2·l2·5e-3)) — the ridge bounds the gap a stall leaves by about g²/(2·l2)
    nats, so the rule is g ≤ 1e-3 at the default l2 and tightens below it — or above ``tol`` when ``l2 = 0``, where
    nothing bounds the gap a small gradient leaves, warns (:class:`~simlm.errors.NotConvergedWarning`).  So does
    an L-BFGS fit whose objective has no minimiser, whatever its gradient norm says: a class without a training
    example (its bias, unpenalised, falls without end) or, with ``l2 = 0``, training data the head separates completely
    (training accuracy 1; ‖W‖ grows without end) or separates in part — one class apart from others that overlap, or
    classes apart but for points on the boundary (:func:`separated`, a linear program of up to 5 s; past that, only
    complete separation is caught; before it a review, 2026-12-06, saw ‖W‖ 8.7 at tol 1e-6, 24.2 at 1e-8, silently);
    its parameters then depend on ``tol``, not on the data: keep ``l2 > 0`` (the default) for a head that is the
    data's.  With two classes the penalty (l2/2)(‖W₀‖² + ‖W₁‖²) is (l2/4)‖W₁ − W₀‖² at the optimum (W₀ = −W₁):
    scikit-learn's binary LogisticRegression with C = 2 / (n · l2) on the standardised
    features (:func:`standardisation`) fits the same W₁ − W₀."""
    f = check_features(features, 2)
    C = check_positive_int("n_classes", n_classes, minimum=2)
    y = check_labels(labels, f.shape[0], C)
    if not isinstance(method, str) or method not in _LINEAR_METHODS:
        raise ConfigError(f"method: expected one of {tuple(_LINEAR_METHODS)}, got {method!r}")
    steps = _LINEAR_METHODS[method] if steps is None else check_positive_int("steps", steps)
    check_memory("steps", steps, what="the loss per step")
    l2 = check_l2(l2)
    check_memory("n_classes", (f.shape[1] + 1) * C, itemsize=16, what="the head's parameters and optimiser state")
    mean, scale = standardisation(f)
    head = LinearLogits()
    params, losses, taken, grad_norm, stopped = _fit_linear(
        head, jnp.asarray(standardised(f, mean, scale)), jnp.asarray(y), jnp.float32(l2),
        jnp.float32(check_lr(lr)), jnp.float32(check_float32_range("tol", check_positive("tol", tol), "the fits compute",
                                                                   "tol = 0 is no tolerance: give a positive one")),
        as_key(check_positive_int("seed", seed, minimum=0), "seed"), C, steps, method)
    g, taken = float(grad_norm), int(taken)
    if not (np.isfinite(g) and np.isfinite(np.asarray(losses)[:taken]).all()):  # Adam at lr = 1e30: W ≈ ±1e30
        raise TrainingDivergedError(f"lr: fit_linear_head ({method}) ended at a non-finite loss or gradient "
                                    f"(gradient norm {g:.3g} after {taken} steps); lower lr, or check the features")
    # a stall certifies the optimum only where the objective has curvature: with l2 = 0 and nearly collinear
    # features a gradient norm of 2e-5 sat 2.4e-3 nats above it.  The ridge gives it curvature l2 in W, so a stall
    # at gradient norm g sits about g²/(2·l2) above it at worst: at l2 = 1e-9 a stall at g = 2e-5 (below 1e-3) sat
    # 1.7e-3 nats above the optimum, W off by half its norm, and passed (a review, 2026-12-07)
    stall_ok = l2 > 0 and g <= min(_STALLED_GRADIENT, float(np.sqrt(2.0 * l2 * _STALL_GAP)))
    if method == "lbfgs" and not (g <= tol or (bool(stopped) and stall_ok)):
        why = "spent its steps" if not bool(stopped) else "stalled"
        warnings.warn(f"fit_linear_head: L-BFGS {why} after {taken} steps with gradient norm {g:.3g} > tol = {tol:g}; "
                      "the head is not at the optimum of its objective (raise steps, or check the features' scales)",
                      NotConvergedWarning, stacklevel=2)
    trajectory = np.asarray(losses)[:taken]
    if method != "lbfgs" and taken:  # L-BFGS's line search never ends above its start; Adam at a large lr can
        _refuse_divergence(trajectory[0], trajectory[-1:], f"fit_linear_head ({method})")
    fitted = head.fitted(params, mean, scale, trajectory, gradient_norm=g)
    _warn_without_minimiser(fitted, f, y, C, l2)  # a property of the objective, whatever the optimiser
    return fitted


def _refuse_divergence(start, final, what: str) -> None:
    """The prompt fits' divergence rule (:func:`~simlm.downstream.prompt_fit.check_prompt_fit`) for a head fit:
    TrainingDivergedError naming ``lr`` where it ended above its start by more than the tolerance (Adam at
    lr = 1e6 ended at 84804 from 0.69, at lr = 30 an attention head at 66.6 from 0.76: returned as fits)."""
    from simlm.downstream.prompt_fit import check_prompt_fit  # prompt_fit imports this module

    check_prompt_fit(float(start), final, what)


def _missing_classes(y, n_classes: int) -> str | None:
    """"class(es) [...] ha(s/ve) no training example", or None when every class has one."""
    missing = np.flatnonzero(np.bincount(np.asarray(y), minlength=n_classes) == 0)
    if not missing.size:
        return None
    many = missing.size > 1
    return f"class{'es' if many else ''} {missing.tolist()} ha{'ve' if many else 's'} no training example"


def warn_missing_classes(y, n_classes: int, who: str, *, stacklevel: int = 3) -> None:
    """:class:`NotConvergedWarning` from the fit ``who`` when a class of ``n_classes`` has no label in ``y``:
    its objective then has no minimiser (the missing class's logit is pushed down for ever), and a training
    accuracy of 1 on one class says nothing about the task."""
    why = _missing_classes(y, n_classes)
    if why:
        warnings.warn(f"{who}: {why}, so its objective has no minimiser and its training accuracy says nothing "
                      "about the missing classes", NotConvergedWarning, stacklevel=stacklevel)


def separated(z, y, n_classes: int, *, time_limit: float = 5.0) -> bool | None:
    """Whether labels ``y (n,)`` are separated, in whole or in part, by an affine head on ``z (n, F)``: is there
    (W, b) whose margins d_ik = (W_{y_i} − W_k)·z_i + b_{y_i} − b_k are all ≥ 0 and not all 0?  Then the
    unpenalised cross-entropy falls without end along (W, b) and has no minimiser (Albert & Anderson, 1984,
    for the multinomial model); otherwise, with every class present, it has one.  Decided exactly by a linear
    program (HiGHS, float64): maximise Σ d_ik subject to 0 ≤ d_ik ≤ 1, whose optimum is 0 or — scaling a
    separating direction until its largest margin is 1 — at least 1 (to HiGHS's feasibility tolerance, 1e-7:
    points 2e-10 apart read as separated, which a fit sees as ‖W‖ ~ 1e10).  None where HiGHS stops undecided:
    after ``time_limit`` seconds (measured: 0.2 s at 2000 × 16 features, 3 classes; 7–11 s at 3000–5000 × 32,
    10 classes, on 2 cores) or on numerical trouble.  Every class is assumed present (a missing one is
    :func:`_missing_classes`'s case)."""
    z, y = np.asarray(z, np.float64), np.asarray(y)
    n, F = z.shape
    rows, cols = np.nonzero(np.arange(n_classes)[None, :] != y[:, None])  # every margin (i, k ≠ y_i)
    m, x = rows.size, np.hstack([z, np.ones((n, 1))])[rows]  # (m, F + 1): θ = (W_c; b_c) for each class c
    at = np.arange(F + 1)
    A = scipy.sparse.csr_matrix((np.concatenate([x, -x], 1).ravel(),  # d = θ_{y_i}·x_i − θ_k·x_i, sparse
                                 np.concatenate([y[rows, None] * (F + 1) + at, cols[:, None] * (F + 1) + at],
                                                1).ravel(),
                                 np.arange(0, 2 * (F + 1) * m + 1, 2 * (F + 1))), shape=(m, n_classes * (F + 1)))
    lp = scipy.optimize.linprog(-np.asarray(A.sum(0)).ravel(), A_ub=scipy.sparse.vstack([A, -A]),
                                b_ub=np.concatenate([np.ones(m), np.zeros(m)]), bounds=(None, None), method="highs",
                                options={"time_limit": time_limit})
    if lp.status != 0:  # feasible (θ = 0) and bounded (Σ d ≤ m): HiGHS's time limit, or its numerical trouble
        return None
    return bool(-lp.fun > 0.5)


def _warn_without_minimiser(head, features, y, n_classes: int, l2: float) -> None:
    """:class:`NotConvergedWarning` when the linear head's objective has no minimiser (its docstring)."""
    why = _missing_classes(y, n_classes)
    if why is None and l2 == 0:
        whole = head.accuracy(features, y) == 1.0
        # undecided (a large problem past the time limit): complete separation is still caught, by the fit
        apart = whole or separated((np.asarray(features, np.float64) - head.mean) / head.scale, y, n_classes)
        if apart:
            why = ("l2 = 0 and the head separates the training data" if whole else
                   "l2 = 0 and a direction of the head separates the training data in whole or in part (all "
                   "margins ≥ 0, one > 0), though the fit stopped below training accuracy 1")
    if why is None:
        return
    warnings.warn(f"fit_linear_head: {why}, so its objective has no minimiser: the parameters (and the gradient norm "
                  "they stop at) depend on where the optimiser stops (tol, steps, lr), not on the data (its "
                  "predictions can still be right)",
                  NotConvergedWarning, stacklevel=3)


@partial(jax.jit, static_argnames=("head", "n_classes", "steps", "n_restarts"))
def _fit_attention(head, z, labels, l2, lr, key, n_classes, steps, n_restarts):
    init = partial(head.init, n_features=z.shape[-1], n_classes=n_classes)
    return adam_restarts(lambda p: head_loss(head, p, z, labels, l2), init, jax.random.split(key, n_restarts),
                         steps=steps, lr=lr)


def fit_attention_head(features, labels, *, n_classes: int = 2, d_key: int = 8, d_value: int = 16,
                       l2: float = 1e-4, steps: int = 300, lr: float = 0.05, n_restarts: int = 4,
                       seed: int = 0) -> AttentionHead:
    """Train the single-query attention head (module docstring) on ``features (n, T, F)``, ``labels (n,)``
    with Adam at ``lr`` for ``steps`` full-batch steps, best of ``n_restarts`` random initialisations.

    Unlike :func:`fit_linear_head` the objective is not convex, and the restart with the least final loss
    need not be the one that generalises: on experiment 2's two-cell memory worlds two restarts ended within
    0.002 nats of each other at heads 7 points apart in held-out accuracy, so multiplying the features by
    1 + 1e-7·N(0, 1) moved a seed's accuracy by up to 0.07 (docs/head_prompt.md, "Experiment 2 with N = 2, 3
    memory cells").  Compare attention-head accuracies over seeds, not to the last digit."""
    f = check_features(features, 3)
    C = check_positive_int("n_classes", n_classes, minimum=2)
    y = check_labels(labels, f.shape[0], C)
    warn_missing_classes(y, C, "fit_attention_head")
    l2 = check_l2(l2)
    R, d_key, d_value = (check_positive_int(k, v) for k, v in (("n_restarts", n_restarts), ("d_key", d_key),
                                                                 ("d_value", d_value)))
    n, T, F = f.shape
    check_memory("n_classes, n_restarts, d_key, d_value, steps", 4 * R * (n * (T + F + d_value) + (d_key + d_value) * F
                                                                         + d_value * C + check_positive_int("steps", steps)),
                 what="the restarts' parameters, activations and losses")
    mean, scale = standardisation(f)
    head = AttentionLogits(d_key, d_value)
    params, losses, final = _fit_attention(
        head, jnp.asarray(standardised(f, mean, scale)), jnp.asarray(y), jnp.float32(l2),
        jnp.float32(check_lr(lr)), as_key(check_positive_int("seed", seed, minimum=0), "seed"), C,
        check_positive_int("steps", steps), R)
    if not np.isfinite(np.asarray(final)).any():
        raise TrainingDivergedError(f"lr: every one of fit_attention_head's {R} restarts ended at a non-finite loss "
                                    "(lower lr, or check the features)")
    _refuse_divergence(np.asarray(losses)[0], np.asarray(final), "fit_attention_head")  # the kept restart's start
    return head.fitted(params, mean, scale, losses, final)


__all__ = ["HeadLogits", "LinearLogits", "AttentionLogits", "head_loss", "cross_entropy", "standardise",
           "standardisation", "adam_restarts", "LinearHead", "fit_linear_head", "AttentionHead", "fit_attention_head",
           "check_features", "check_labels", "check_l2", "warn_missing_classes"]
