"""Analytic ε-optimal language models: the world's exact LM, perturbed to a prescribed exact ε.

Each *kind* is a one-parameter family of causal LMs p_s built from the world's next-token law
p* = p*(·|x_<t), with p_0 = p* and ε(s) = mean KL(p* ‖ p_s) increasing in s ≥ 0.  :func:`perturbed_lm`
solves ε(s) = eps on an evaluation set by bracketing then bisection on s, evaluating ε(s) exactly (over
the vocabulary, :func:`simlm.metrics.epsilon.kl_per_sequence`) from p* computed once.  The pieces are
public for callers that calibrate on other laws (the natural-task sweep calibrates on enumerated
contexts, weighted by p_L): :func:`perturbation_params` (the fixed noise of a family),
:func:`epsilon_of_scale` (ε(s)) and :func:`solve_scale` (the one scale solver of simlm).

Kinds (every one but ``uniform-mixture`` is an exponential tilt p_s ∝ p*·exp(s·h) by a direction h(x_<t)
∈ R^V; then KL(p* ‖ p_s) = log E_{p*}[e^{s h}] − s E_{p*}[h] is convex in s with its minimum 0 at s = 0,
so ε(s) increases for s ≥ 0 at every position):

- ``"logit-noise"`` — h = W p* / ‖p*‖₂ with W ∈ R^{V×V} i.i.d. N(0, 1) fixed by ``seed``: for each
  context h is a N(0, I)-distributed noise field, and a deterministic function of the context (through
  p*), so the model is a genuine LM.
- ``"temperature"`` — log p_s = log_softmax(log p* / τ), a tilt p* exp(t·h) by h = log p* at t = 1/τ − 1.
  Hotter (default): τ = 1 + s, t = −s/(1 + s) ∈ (−1, 0] (ε, convex in t with its minimum at 0, still
  increases with s), saturating at KL(p* ‖ uniform on supp p*) as s → ∞.  Colder (``colder=True``):
  τ = 1 / (1 + s), t = s, ε → ∞.
- ``"uniform-mixture"`` — p_s = (1 − s) p* + s·u, u uniform over V, s ∈ [0, 1]; ε is convex in s (KL
  is convex in its second argument) and reaches at most ε(1) = mean KL(p* ‖ u) = log V − H.
- ``"rare-words"`` — h_v = g_v·1[p*_v < threshold], g ~ N(0, I_V) fixed by ``seed``: p_s is exactly p*
  up to renormalisation except on the words the world makes rare in this context.  The default
  threshold makes rare the nonzero p*(w|x_<t) at or below their 10th percentile over all (position,
  word) pairs of the evaluation set: it sits at the geometric midpoint of the gap between the largest of
  them and the next larger p* (so a law computed along another path, off in its last bits, finds the same
  rare words), fixed from then on.  With no p* above the percentile (a law flat on its support) every word
  is rare and the threshold is twice the largest p*; the test is log p* < log threshold in float32, so where
  the next p* is one ulp above and the two logs round alike the threshold is stepped up until the largest
  rare p* is rare.  A fixed threshold like 1/(10V) often catches no word at all in a dense world.  The
  calibration perturbs the world's laws exactly as the LM does (the same array, bit for bit), so a word is
  rare for the solver iff it is rare for the LM, wherever a given threshold sits.  Needs rare words on the
  evaluation set.
- ``"task-adversarial"`` — h = ``direction`` v ∈ R^V (required): p_s ∝ p*·exp(s·v), mass moved along a
  task direction.

The returned :class:`PerturbedLM` applies the same perturbation, with the solved s, to the world's laws
for ANY tokens: to the next-token law, to the masked laws p*(x_i|x_−i) and to the law at a prepended
mask.  ``law`` chooses which of the three ε is calibrated on (``"next-token"``, the default;
``"masked"``, every masked position; ``"prepended-mask"``, the law a head reads in Wei et al.'s tasks);
the other two are not calibrated.  The masked laws are perturbed in log space where the world gives them
so (``log_masked_token_probs``: a log-linear world); an HMM world's are the log of float32 probabilities,
−inf below ~1e-38 (float32's smallest normal; XLA flushes subnormals) however far a perturbation would lift them.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from simlm.errors import ConfigError, DistributionError, ShapeError
from simlm.precision import mm
from simlm.models.base import WorldLM
from simlm.worlds.base import masked_logprobs_of, prepended_logprobs_of
from simlm.metrics.epsilon import (check_laws, check_world, exact_epsilon, exact_masked_epsilon,
                                   exact_prepended_epsilon, kl_float64, kl_per_sequence)
from simlm.checks import (as_array, as_key, as_rng, check_finite, check_memory, check_positive, check_positive_int,
                          check_real_array, check_stochastic, check_tokens)

KINDS = ("logit-noise", "temperature", "uniform-mixture", "rare-words", "task-adversarial")
#: the kinds that need nothing but the world's laws (``task-adversarial`` needs a direction).
UNDIRECTED_KINDS = tuple(k for k in KINDS if k != "task-adversarial")
#: the kinds whose perturbation ``seed`` draws (the others are the same LM whatever the seed, on given tokens).
SEEDED_KINDS = ("logit-noise", "rare-words")
LAWS = ("next-token", "masked", "prepended-mask")
#: the parameters each kind's perturbation reads (built by :func:`perturbation_params`).
_PARAMS = {"logit-noise": ("W",), "temperature": ("colder",), "uniform-mixture": (),
          "rare-words": ("g", "threshold"), "task-adversarial": ("v",)}
#: the methods of a world that :func:`perturbed_lm` and :class:`PerturbedLM` use.
_WORLD_METHODS = ("next_token_logprobs", "masked_token_probs", "prepended_mask_probs")

#: relative accuracy of the ε that perturbed_lm solves (|ε(s)/eps − 1|); the promise to callers is 1e-3.
RTOL = 1e-4
#: the largest scale :func:`solve_scale` tries (by default) before declaring a target ε unreachable.
S_MAX = 1e4


# ---- the families, as pure functions of (log p*, s, params) --------------------------------------

def _check_kind(kind, params=None) -> str:
    """``kind`` one of :data:`KINDS` and, if given, ``params`` a dict with the entries it reads (trace-safe)."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"kind: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if params is not None:
        if not isinstance(params, dict):
            raise ConfigError(f"params: expected a dict from perturbation_params, got {type(params).__name__}")
        missing = [k for k in _PARAMS[kind] if k not in params]
        if missing:
            raise ConfigError(f"params: kind {kind!r} needs params {list(_PARAMS[kind])}, missing {missing} "
                              "(perturbation_params builds them)")
    return kind


def _check_params(kind: str, params: dict, V: int) -> dict:
    """The entries of ``params`` that ``kind`` reads (present: :func:`_check_kind`), checked as the perturbation
    will read them: ``W`` (V, V), ``v`` and ``g`` (V,) real and finite, ``threshold`` a probability in (0, 1],
    ``colder`` True or False; otherwise :class:`ShapeError` (a shape) or :class:`ConfigError` naming
    ``params['…']``.  Shapes are checked on traced values too (they are static), values only where concrete.
    ``params`` is returned unchanged (no entry converted, so the perturbation is the same bit for bit)."""
    shapes = {"W": (V, V), "v": (V,), "g": (V,), "threshold": (), "colder": ()}
    for key in _PARAMS[kind]:
        name, value = f"params[{key!r}]", params[key]
        traced = isinstance(value, jax.core.Tracer)
        arr = value if traced else as_array(name, value, error=ConfigError, what="an array of real numbers")
        if key == "colder":
            if arr.dtype != np.bool_ or arr.shape != ():
                raise ConfigError(f"{name}: expected True or False, got {value!r}")
            continue
        if np.dtype(arr.dtype).kind not in "iuf":
            raise ConfigError(f"{name}: expected real numbers, got dtype {arr.dtype}")
        if tuple(arr.shape) != shapes[key]:
            what = "a scalar" if key == "threshold" else f"shape {shapes[key]} (V = {V} words)"
            raise ShapeError(f"{name}: expected {what}, got shape {tuple(arr.shape)}")
        if traced:
            continue
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            at = f" at {tuple(int(i) for i in bad[0]) if arr.ndim > 1 else int(bad[0][0])}" if arr.ndim else ""
            raise ConfigError(f"{name}: expected finite numbers, got {arr[tuple(bad[0])]}{at}")
        # what JAX computes in: float64 / int64 entries become float32 / int32 without jax_enable_x64
        canon = np.dtype(jax.dtypes.canonicalize_dtype(arr.dtype))
        lim = np.finfo(canon) if canon.kind == "f" else np.iinfo(canon)
        if arr.size and (arr.min() < lim.min or arr.max() > lim.max):
            raise ConfigError(f"{name}: entries up to {np.abs(arr).max():.3g} overflow {canon}, the dtype JAX "
                              "computes them in")
        # (0, 1], and the float32 just above 1, which perturbation_params picks when p* = 1 is among the rare
        if key == "threshold" and not 0 < float(arr) <= np.nextafter(np.float32(1), np.float32(2)):
            raise ConfigError(f"{name}: expected a probability in (0, 1], got {float(arr)!r}")
    return params


def _check_scale(kind: str, s, name: str = "s") -> float:
    s = check_finite(name, s)
    top = 1.0 if kind == "uniform-mixture" else math.inf
    if not 0 <= s <= top:
        raise ConfigError(f"{name}: expected a scale in [0, {top:g}] for kind {kind!r}, got {s!r}")
    return s


def max_scale(kind: str) -> float:
    """The largest scale :func:`solve_scale` searches for ``kind``: 1 for ``uniform-mixture`` (s ∈ [0, 1]),
    :data:`S_MAX` for the unbounded families."""
    return 1.0 if _check_kind(kind) == "uniform-mixture" else S_MAX


def perturb_logprobs(kind: str, logp, s, params) -> jax.Array:
    """log p_s from log p* ``(..., V)`` for one family (``params`` from :func:`perturbation_params`).

    ``kind`` and ``params`` are always checked: every entry the kind reads present, with its shape (``W``
    (V, V), ``v`` and ``g`` (V,), V = ``logp.shape[-1]``); concrete entries also real and finite, ``threshold``
    in (0, 1], ``colder`` a bool (:class:`ShapeError`/:class:`ConfigError` naming ``params['…']``).
    Concrete ``logp`` and ``s`` are checked on the host too (rows must be laws,
    :func:`~simlm.metrics.epsilon.check_laws`; s ≥ 0, ≤ 1 for uniform-mixture).  Inside ``jax.jit`` the
    traced values pass with their shapes checked only."""
    logp, s = _check_call(kind, logp, s, params)
    return _perturb(kind, logp, s, params)


def epsilon_of_scale(kind: str, logp, s, params, weights=None) -> float:
    """ε(s) = Σ_i w_i KL(p*_i ‖ p_s,i), nats: the mean over the rows i of log p* ``logp (..., V)`` (every
    position of every sequence) of the KL to the family at scale s, or the ``weights`` ``(...)``-weighted
    sum (one weight per row, ≥ 0, summing to 1: p_L over enumerated contexts, say).  ε(0) = 0 and ε
    increases with s (module docstring): the function :func:`solve_scale` inverts — in exact arithmetic.
    Computed in float32, or float64 for float64 input under ``jax.enable_x64(True)``; in float32 the sum
    has a floor of a few 1e-9 (ε(0) ≈ 3e-9 on a 3-word world) and is not monotone below ~1e-6, so
    calibrate small ε in float64 (as :func:`perturbed_lm`, which sums the KL in float64, and the natural-task
    sweep do).  Checked like :func:`perturb_logprobs`."""
    logp, s = _check_call(kind, logp, s, params)
    if weights is not None:
        w = check_real_array("weights", weights, error=DistributionError)
        if w.shape != tuple(logp.shape[:-1]):
            raise ShapeError(f"weights: expected one weight per law, shape {tuple(logp.shape[:-1])}, got {w.shape}")
        weights = jnp.asarray(check_stochastic("weights", w.reshape(-1)).reshape(w.shape))
    return float(_epsilon_of_scale(kind, logp, s, params, weights))


def _check_call(kind, logp, s, params):
    """The checks of :func:`perturb_logprobs` and :func:`epsilon_of_scale` (values where concrete)."""
    _check_kind(kind, params)
    if not isinstance(logp, jax.core.Tracer):
        logp = check_laws("logp", logp)
    _check_params(kind, params, int(logp.shape[-1]))
    if not isinstance(s, jax.core.Tracer):
        s = _check_scale(kind, s)
    return logp, s


@partial(jax.jit, static_argnames=("kind",))
def _perturb(kind: str, logp, s, params) -> jax.Array:
    logp = jnp.asarray(logp)
    s = jnp.asarray(s, logp.dtype)
    if kind == "uniform-mixture":  # renormalised like every kind (p* rows may be off 1 by up to atol)
        V = logp.shape[-1]
        return jax.nn.log_softmax(jnp.logaddexp(jnp.log1p(-s) + logp, jnp.log(s) - math.log(V)), axis=-1)
    if kind == "temperature":
        tau = jnp.where(params["colder"], 1.0 / (1.0 + s), 1.0 + s)
        # shifted first, so the top logit is exactly 0 at every scale: unshifted, XLA:CPU rounded the scaled
        # logits (|log p|·(1 + s) up to ~1e4) one way in log_softmax's max and another in its sum, and a cold
        # law's top word read log-prob +2e-4, its row summing to 1.0002 (a review, 2026-12-06)
        top = jnp.max(jnp.where(jnp.isfinite(logp), logp, -jnp.inf), axis=-1, keepdims=True)
        return jax.nn.log_softmax((logp - top) / tau, axis=-1)
    if kind == "logit-noise":
        p = jnp.exp(logp)
        h = mm(p, params["W"].T) / jnp.linalg.norm(p, axis=-1, keepdims=True)  # full float32: one LM per seed
    elif kind == "rare-words":
        h = jnp.where(logp < jnp.log(params["threshold"]), params["g"], 0.0)
    else:  # task-adversarial
        h = jnp.broadcast_to(params["v"], logp.shape)
    # the where keeps log p* = −inf entries at −inf (a tilt never creates mass off the support)
    return jax.nn.log_softmax(jnp.where(jnp.isfinite(logp), logp + s * h, -jnp.inf), axis=-1)


@partial(jax.jit, static_argnames=("kind",))
def _epsilon_of_scale(kind, logp, s, params, weights=None):
    """ε of the perturbation of ``logp`` against ``logp``."""
    logq = _perturb(kind, logp, s, params)
    if weights is None:
        if logp.ndim == 1:  # one law: its own row
            return kl_per_sequence(logp[None, None], logq[None, None])[0]
        return kl_per_sequence(logp, logq).mean()
    return jnp.sum(weights * kl_per_sequence(logp[..., None, :], logq[..., None, :]))


class PerturbedLM:
    """The world's exact LM perturbed by one of the families above with scale s (= ``scale``).

    ``params`` (hand-built or from :func:`perturbation_params`) are checked as :func:`perturb_logprobs`
    checks them, with V = ``world.n_symbols``.

    Attributes: ``world``, ``kind``, ``scale``, ``params`` (the fixed perturbation), ``target_eps``,
    ``achieved_eps`` ± ``achieved_eps_se`` (exact ε of the calibrated ``law`` on ``eval_tokens``,
    nats/token; nats per sequence for ``law="prepended-mask"``, one law each)."""

    def __init__(self, world, kind, scale, params, *, target_eps=None, achieved_eps=None,
                 achieved_eps_se=None, eval_tokens=None, law="next-token"):
        self.world = check_world(world, *_WORLD_METHODS)
        if not isinstance(params, dict):
            raise ConfigError(f"params: expected a dict from perturbation_params, got {type(params).__name__}")
        self.kind = _check_kind(kind, params)
        _check_params(kind, params, int(self.world.n_symbols))
        self.scale, self.params, self.law = _check_scale(kind, scale, "scale"), params, _check_law(law)
        # None until calibrated (perturbed_lm sets them): no NaN placeholders to flow into tables
        self.target_eps, self.achieved_eps, self.achieved_eps_se = target_eps, achieved_eps, achieved_eps_se
        self.eval_tokens = eval_tokens

    def __repr__(self):
        num = lambda x: "None" if x is None else f"{x:.6g}"
        return (f"PerturbedLM(kind={self.kind!r}, scale={self.scale:.6g}, law={self.law!r}, "
                f"target_eps={num(self.target_eps)}, achieved_eps={num(self.achieved_eps)}, world={self.world!r})")

    @property
    def n_symbols(self) -> int:
        return self.world.n_symbols

    def _perturb(self, logp) -> jax.Array:
        return _perturb(self.kind, logp, self.scale, self.params)

    def next_token_logprobs(self, tokens) -> jax.Array:
        """log p_s(x_t = · | x_<t), ``(n, T, V)`` (``(T, V)`` for a single sequence)."""
        return self._perturb(jnp.asarray(self.world.next_token_logprobs(tokens)))

    def appended_token_logprobs(self, tokens) -> jax.Array:
        """The same perturbation of p*(x_{T+1} = · | x_1:T), ``(n, V)`` (``WorldLM.appended_token_logprobs``)."""
        return self._perturb(jnp.asarray(WorldLM(self.world).appended_token_logprobs(tokens)))

    def masked_token_logprobs(self, tokens, positions=None) -> jax.Array:
        """The same perturbation of p*(x_i = · | x_−i), ``(n, P, V)`` (calibrated only if ``law="masked"``)."""
        return self._perturb(jnp.asarray(masked_logprobs_of(self.world, tokens, positions)))

    def prepended_mask_logprobs(self, tokens) -> jax.Array:
        """The same perturbation of the prepended-mask law, ``(n, V)`` (calibrated only if
        ``law="prepended-mask"``)."""
        return self._perturb(jnp.asarray(prepended_logprobs_of(self.world, tokens)))


# ---- construction --------------------------------------------------------------------------------

def _check_law(law) -> str:
    if not isinstance(law, str) or law not in LAWS:
        raise ConfigError(f"law: expected one of {', '.join(LAWS)}, got {law!r}")
    return law


def _check_options(kind, V: int, direction, threshold, colder):
    """The options of one family, checked before anything is sampled; returns the direction (V,) or None."""
    _check_kind(kind)
    if not isinstance(colder, (bool, np.bool_)):
        raise ConfigError(f"colder: expected True or False, got {colder!r}")
    if direction is not None and kind != "task-adversarial":
        raise ConfigError(f"direction: only used by kind 'task-adversarial', not {kind!r}")
    if threshold is not None and kind != "rare-words":
        raise ConfigError(f"threshold: only used by kind 'rare-words', not {kind!r}")
    if colder and kind != "temperature":
        raise ConfigError(f"colder: only used by kind 'temperature', not {kind!r}")
    if threshold is not None and check_positive("threshold", threshold) > 1:
        raise ConfigError(f"threshold: expected a probability in (0, 1], got {threshold!r}")
    if kind != "task-adversarial":
        return None
    if direction is None:
        raise ConfigError("direction: kind 'task-adversarial' needs a direction v ∈ R^V, got None")
    if np.asarray(direction).dtype == bool:  # a mask: True would read as a tilt of 1
        raise ConfigError("direction: expected real numbers v ∈ R^V, got booleans")
    v = check_real_array("direction", direction)
    if v.shape != (V,):
        raise ShapeError(f"direction: expected shape ({V},) (the world's vocabulary), got {v.shape}")
    if np.abs(v).max() > np.finfo(np.float32).max:
        raise ConfigError(f"direction: entries up to {np.abs(v).max():.3g} overflow float32 (max 3.4e38)")
    if np.ptp(v) == 0:
        raise ConfigError("direction: is constant over the vocabulary, and a tilt by a constant leaves every "
                          "law unchanged (ε = 0 at every scale)")
    return v


def perturbation_params(kind: str, V: int, seed: int, logp=None, *, direction=None, threshold=None,
                        colder: bool = False) -> dict:
    """The fixed part of one family's perturbation over ``V`` words, as :func:`perturb_logprobs` and
    :func:`epsilon_of_scale` read it: ``{"W"}`` (V, V) i.i.d. N(0, 1) for ``logit-noise``, ``{"g",
    "threshold"}`` with g (V,) N(0, I) for ``rare-words`` (both drawn from numpy's Generator seeded by
    ``seed``), ``{"colder"}`` for ``temperature``, ``{"v"}`` = ``direction`` for ``task-adversarial``,
    ``{}`` for ``uniform-mixture``.  ``logp (..., V)`` — the laws the scale will be calibrated on — is
    read by ``rare-words`` only: its default ``threshold`` lies in the gap above the 10th percentile of
    the nonzero p* there, and some word must be rare there (:class:`ConfigError` otherwise)."""
    V = check_positive_int("V", V)
    rng = as_rng(seed)
    v = _check_options(kind, V, direction, threshold, colder)
    check_memory("V", 4 * V * (V if kind == "logit-noise" else 1), what=f"the noise of kind {kind!r} over {V} words")
    if kind == "logit-noise":
        return {"W": jnp.asarray(rng.standard_normal((V, V)), jnp.float32)}
    if kind == "temperature":
        return {"colder": jnp.asarray(bool(colder))}
    if kind == "task-adversarial":
        return {"v": jnp.asarray(v, jnp.float32)}
    if kind == "uniform-mixture":
        return {}
    # rare-words
    if logp is None:
        if threshold is None:
            raise ConfigError("logp: kind 'rare-words' fixes its default threshold on the laws it is calibrated "
                              "on; pass them (logp, (..., V)) or a threshold")
        return {"g": jnp.asarray(rng.standard_normal(V), jnp.float32), "threshold": jnp.float32(threshold)}
    logp = check_laws("logp", logp)
    if logp.shape[-1] != V:
        raise ShapeError(f"logp: expected laws over the V = {V} words, got shape {tuple(logp.shape)}")
    return {"g": jnp.asarray(rng.standard_normal(V), jnp.float32), "threshold": _rare_threshold(logp, threshold)}


def _rare_threshold(logp, threshold) -> jax.Array:
    p, lp = np.asarray(jnp.exp(logp), np.float32), np.asarray(logp, np.float32)
    log_of = lambda t: float(jnp.log(jnp.float32(t)))  # the threshold's log as :func:`_perturb` computes it
    if threshold is None:
        # the words at or below the 10th percentile are rare; the threshold sits at the geometric midpoint of
        # the gap between the largest of them and the next larger p* (the rare test is in log space), so that
        # p* computed along another path, off in its last bits, is classified the same way.  (One ulp above
        # the percentile, as before, flipped a word at the percentile between paths and put ε 2e-3 off.)
        values = np.unique(p[p > 0])  # sorted; the quantile is ≥ their minimum, so some value is at or below it
        rare_max = values[values <= np.quantile(p[p > 0], 0.1)][-1]
        above = values[values > rare_max]
        up = np.nextafter(rare_max, np.float32(np.inf))
        # every p* is rare when none is above the percentile (a law flat on its support): twice the largest,
        # whose log is above every p*'s computed along any path (one ulp above 1/3 had log 1/3's float32 log:
        # no word was rare, and ε(s) = 0 at every scale)
        # (capped at the float32 just above 1, the largest threshold a params check accepts: every law one-hot
        # put it at 2.0, which epsilon_of_scale then refused as no probability — a review, 2026-12-06)
        threshold = (max(np.float32(np.sqrt(np.float64(rare_max) * np.float64(above[0]))), up) if above.size
                     else min(np.float32(2 * rare_max), np.nextafter(np.float32(1), np.float32(2))))
        # the test is log p* < log(threshold) in float32, where rare_max's log and a threshold a few ulps above
        # it can round alike (the next p* one ulp above rare_max): step the threshold up until rare_max is rare as
        # :func:`_perturb` tests it
        top = float(np.max(lp[(p > 0) & (p <= rare_max)]))
        for _ in range(256):
            if log_of(threshold) > top:
                break
            threshold = np.nextafter(np.float32(threshold), np.float32(np.inf))
    if not np.any(np.isfinite(lp) & (lp < log_of(threshold))):  # the words _perturb tilts
        raise ConfigError(f"threshold: no word has 0 < p* < {float(threshold):.4g} anywhere on the evaluation "
                          "set, so kind 'rare-words' cannot move ε from 0; raise the threshold")
    return jnp.float32(threshold)


def solve_scale(eps_of, target, upper: float = S_MAX, *, start: float = 1e-3, rtol: float = 1e-12,
                resolution: float = 1e-15, accept: float | None = None, what: str = "", hint: str = "") -> float:
    """The scale s ∈ (0, ``upper``] with ``eps_of(s)`` = ``target`` (nats), for an ε(·) increasing from
    ε(0) = 0 — every calibration to an exact ε in simlm goes through here.

    Bracket by doubling from ``start`` (capped at ``upper``), then bisect until |ε(s)/target − 1| <
    ``rtol`` or the bracket is narrower than ``resolution``·s (what the floating point of ε can resolve:
    ~1e-15 in float64, 1e-7 in float32); the last midpoint is accepted within ``accept`` (default
    ``rtol``).  Bisection needs only monotonicity, so it is safe on an ε computed in float32.  Raises
    :class:`ConfigError` if ``target`` is not positive and finite, if ε(s) is not finite, if ε(``upper``)
    < target ("unreachable ``what``: the maximum reachable ε is about …", then ``hint``), or if the
    bisection ends off the target (ε jumps there: at large scales perturbed laws underflow), naming the ε
    reached."""
    if not callable(eps_of):
        raise ConfigError(f"eps_of: expected a function of the scale, got {type(eps_of).__name__}")
    target = check_positive("eps", target)
    upper, start, rtol, resolution = (check_positive(k, v) for k, v in (("upper", upper), ("start", start),
                                                                         ("rtol", rtol), ("resolution", resolution)))
    accept = rtol if accept is None else check_positive("accept", accept)
    by = f" by {what}" if what else ""

    def eps(s):
        val = eps_of(s)
        try:
            val = float(val)
        except (TypeError, ValueError):
            raise ConfigError(f"eps_of: returned {type(val).__name__} at s = {s:.6g}, expected ε (a number)") from None
        if not math.isfinite(val):  # a comparison with NaN would steer the bisection silently
            raise ConfigError(f"eps: ε(s) is {val} at s = {s:.6g}{by}, so ε = {target:g} cannot be solved for")
        return val

    lo, hi = 0.0, min(start, upper)
    while (val := eps(hi)) < target:
        if hi >= upper:
            raise ConfigError(f"eps: {target:g} is unreachable{by}: the maximum reachable ε is about {val:.6g} "
                              f"(at s = {hi:g}){hint}")
        lo, hi = hi, min(2 * hi, upper)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        val = eps(mid)
        if abs(val / target - 1) < rtol:
            return mid
        lo, hi = (mid, hi) if val < target else (lo, mid)
        if hi - lo <= resolution * hi:
            break
    if abs(val / target - 1) <= accept:
        return mid
    why = ("ε jumps there, try another eps" if hi - lo > resolution * hi else
           f"the bracket on s closed to its resolution ({resolution:g} relative) with ε still off: ε jumps there, "
           "or the target is below what the laws' floating point resolves (float32 laws: below ~1e-6 nats)")
    raise ConfigError(f"eps: {target:g} is not reached{by}: the calibration ends at ε = {val:.6g} (s = {mid:.6g}), "
                      f"off by more than the relative tolerance {accept:g}; {why}")


def perturbed_lm(world, eps, kind: str, seed: int, *, tokens=None, direction=None, threshold=None,
                 colder: bool = False, n_eval: int = 64, eval_length: int = 64,
                 law: str = "next-token") -> PerturbedLM:
    """An LM whose exact ε against ``world`` equals ``eps`` (nats/token; nats per sequence for
    ``law="prepended-mask"``) within 1e-3 relative (solved to 1e-4 where float32 resolves it, accepted within 1e-3)
    on the evaluation set: ``tokens (n, T)`` if given, else ``n_eval`` sequences of ``eval_length`` tokens sampled
    from the world with ``seed`` (for ``law="prepended-mask"`` the last ``eval_length`` of ``eval_length + 1``: the
    tokens after a prepended position, whose first is drawn from πA, not π).  ``seed`` also fixes the noise of
    ``logit-noise`` and ``rare-words``.  ``kind`` is one of :data:`KINDS` (see the module docstring);
    ``direction`` (V,) is for ``task-adversarial``, ``threshold`` for ``rare-words`` (default: the 10th percentile
    of p* on the evaluation set), ``colder`` for ``temperature``.
    ``law`` (one of :data:`LAWS`) is the law whose ε is calibrated: the next-token law, the masked law at every
    position, or the law at a mask prepended before the tokens.  The laws are float32 (ε(s) is summed in float64),
    so an eps below ~1e-6 nats/token may not be resolvable: a calibration whose exact ε misses the target by more
    than 1e-3 relative raises.  That ε is of the laws as :mod:`simlm.metrics.epsilon` reads them, each float32 row
    renormalised: a raw Σ −log q over the served float32 rows adds their normalisation error, ~1e-7 nats/token
    absolute (1.6–1.8 % of ε = 1e-6, 0.3 % of 1e-5: a review).  That is the world's laws as its float32 inference
    computes them from the stored parameters: the exact laws of those parameters (a float64 forward pass) differ by
    ~1e-7 relative, which moves ε by more than 1e-3 relative below ε ≈ 1e-10 (−3.6e-3 at 1e-11, unflagged: a
    review); and a float32 world holds its parameters rounded to float32, so at ε ≲ 1e-7 the same LM measured
    against the float64 parameters a world was built from can read another ε (−54 % at 1e-7 on one HMM).  Build the
    world in float64 (``dtype=jnp.float64`` under ``jax_enable_x64``) for such targets.  Raises :class:`ConfigError`
    if eps is not positive and finite, the kind is unknown, or eps exceeds what the family reaches on the evaluation
    set (the message gives the maximum), :class:`DistributionError` if the world's laws on the evaluation set are
    not distributions.
    The evaluation set needs ≥ 2 sequences (the achieved ε carries a standard error over sequences)."""
    check_world(world, "sample", *_WORLD_METHODS)
    eps = check_positive("eps", eps)
    law = _check_law(law)
    as_rng(seed)  # it draws the perturbation's noise,
    as_key(seed, "seed")  # and samples the evaluation set: refuse what a PRNG key cannot take
    V = int(world.n_symbols)
    _check_options(kind, V, direction, threshold, colder)  # before anything is sampled
    n_eval, eval_length = check_positive_int("n_eval", n_eval), check_positive_int("eval_length", eval_length)
    if tokens is None:
        if n_eval < 2:
            raise ConfigError(f"n_eval: the achieved ε has a standard error over sequences, which needs n_eval ≥ 2, "
                              f"got {n_eval}")
        check_memory("n_eval × eval_length", 4 * n_eval * eval_length * (V + 1),
                     what=f"the laws of {n_eval} × {eval_length} evaluation tokens over {V} words, a few copies")
        # the prepended-mask law is read after a masked x_0: x_1:T drawn as the suffix of a sequence (x_1 from πA,
        # as sample_task_data draws them), not from π — which on a chain with zeros drew sequences impossible
        # after the mask, refused as "tokens" the caller never passed (a review, 2026-12-08)
        first = 1 if law == "prepended-mask" else 0
        toks = world.sample(int(seed), n_eval, eval_length + first)[:, first:]
    else:
        toks, _ = check_tokens(tokens, V)
        if toks.shape[0] < 2:
            raise ConfigError(f"tokens: the achieved ε has a standard error over sequences, which needs at least 2 "
                              f"sequences, got {toks.shape[0]}; pass a batch (n, T) with n ≥ 2")
        check_memory("tokens", 4 * toks.size * V, what=f"the laws of {toks.shape} tokens over {V} words, a few copies")
    where = lambda i: f"sequence {i[0]}, position {i[1]}"
    if law == "next-token":
        name, raw = "world: next_token_logprobs", world.next_token_logprobs(toks)
    elif law == "masked":
        name, raw = "world: masked_token_probs", jnp.asarray(masked_logprobs_of(world, toks))
    else:
        name, raw = "world: prepended_mask_probs", jnp.asarray(prepended_logprobs_of(world, toks))
        where = lambda i: f"sequence {i[0]} (the law at the prepended mask)"
    logp = check_laws(name, raw, where=where)
    # the solver perturbs the world's laws exactly as the LM will (``raw``, not their renormalised copy
    # ``logp``, which differs in the last bits): rare-words decides each word by comparing log p* with the
    # threshold, and a word within an ulp of it flipped between the two, putting ε up to 7 % off the target
    source = jnp.asarray(raw, logp.dtype)
    logp, source = (logp[:, None, :], source[:, None, :]) if law == "prepended-mask" else (logp, source)
    # raw, not logp: perturbation_params checks (renormalises) the laws itself
    params = perturbation_params(kind, V, seed, raw, direction=direction, threshold=threshold, colder=colder)

    def eps_at(s):  # the laws are checked: the jitted perturbation, then the KL summed in float64, as
        # achieved_eps is below (in float32 the solver and the report disagreed by 1e-3 at ε of a few 1e-6)
        val = float(kl_float64(logp, _perturb(kind, source, jnp.asarray(s, source.dtype), params)).mean())
        if not math.isfinite(val):
            raise ConfigError(f"{'direction' if kind == 'task-adversarial' else 'kind'}: ε(s) is {val} at "
                              f"s = {s:.6g} for kind {kind!r}: the perturbed laws overflow float32 here; use a "
                              "smaller direction or eps")
        return val

    hint = {"uniform-mixture": "; s = 1 is the uniform law",
            "temperature": "; colder=True is unbounded" if not colder else  # colder: only S_MAX caps it
            f"; the search stops at s = {S_MAX:g}, and a p* flat on its support is left as it is by any temperature"}
    # aimed at RTOL, accepted within the promise below (1e-3): at RTOL alone a bisection closed to float32's
    # resolution 2e-4 off the target raised, for an LM the promise allows (a review 2026-12-06)
    scale = solve_scale(eps_at, eps, max_scale(kind), start=1.0 if kind == "uniform-mixture" else 1e-2, rtol=RTOL,
                        resolution=1e-7, accept=1e-3, what=f"kind {kind!r} on this evaluation set",
                        hint=hint.get(kind, ""))
    lm = PerturbedLM(world, kind, scale, params, target_eps=eps, eval_tokens=np.asarray(toks), law=law)
    # measured through the public path, so achieved_eps is exactly what callers will measure
    if law == "next-token":
        lm.achieved_eps, lm.achieved_eps_se = exact_epsilon(world, lm, toks)
    elif law == "masked":
        lm.achieved_eps, lm.achieved_eps_se = exact_masked_epsilon(world, lm, toks)
    else:
        lm.achieved_eps, lm.achieved_eps_se = exact_prepended_epsilon(world, lm, toks)
    if not abs(lm.achieved_eps / eps - 1) <= 1e-3:  # the promise; never return an LM that misses it silently
        raise ConfigError(f"eps: the calibrated LM's exact ε is {lm.achieved_eps:.6g}, off the target {eps:g} by more "
                          "than 1e-3 relative (float32 laws cannot resolve it here); use a larger eps, or a float64 "
                          "world (jax_enable_x64)")
    return lm


__all__ = ["KINDS", "UNDIRECTED_KINDS", "SEEDED_KINDS", "LAWS", "S_MAX", "PerturbedLM", "perturb_logprobs",
           "perturbed_lm", "perturbation_params", "epsilon_of_scale", "max_scale", "solve_scale"]
