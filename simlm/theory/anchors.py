"""Anchor vectors in log-linear worlds (Wu, Lee & Ge, NeurIPS 2023, "Connecting Pre-trained Language
Model and Downstream Task via Properties of Representation").

The paper's model is p(w | x) ∝ exp⟨v_w, f(x)⟩.  Its theorem text is not available here: every statement
below is *derived* from that model and the paper's abstract, and each is a small function a user can
replace.  Everything works on rows (contexts) x = 1..n with weights π_x (:class:`AnchorContexts`),
float64 numpy throughout.

- Only logit differences are identified: log p(w|x) − log p(w'|x) = ⟨v_w − v_w', f(x)⟩.  A change of f
  along a direction e with ⟨v_w, e⟩ equal for every w leaves p unchanged (construction N1).
- Anchor (the paper's property): for a bulk B(x) of words, log Z_B(x) = log Σ_{w∈B(x)} e^{⟨v_w, f(x)⟩}
  ≈ ⟨v_0, f(x)⟩ + c.  :func:`anchor_fit` fits (v_0, c) by weighted least squares; r(x) is its residual.
- Score identity (derived, exact for every softmax LM and every v_0, c): with u = Σ_{w∈S} c_w (v_w − v_0),

      ⟨u, f(x)⟩ = Σ_{w∈S} c_w [log p(w|x) − log p(B(x)|x)] + (Σ_w c_w)(c + r(x)),

  because log p(w|x) − log p(B|x) = ⟨v_w, f⟩ − log Z_B = ⟨v_w − v_0, f⟩ − c − r.  The first term (the
  *probability part*) is identified by p; the second (the *anchor part*) is not, unless Σ c_w = 0.
- Transfer bound (derived): err ≤ P(margin < m) + min(ε/(2t(m)²), 1) with t(m) set by ‖c‖₁,
  a probability floor γ and the anchor residuals — in :mod:`simlm.theory.anchor_bound`, with its proof.
- The negative constructions N1, N2 and the analytic LMs on these rows: :mod:`simlm.theory.anchor_constructions`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import jax
import numpy as np

from simlm.checks import as_rng, check_distributions, check_positive, check_positive_int, check_real_array
from simlm.errors import ConfigError, ShapeError
from simlm.metrics.epsilon import check_laws
from simlm.theory._convex import ridge_logistic

TASKS = ("anchored", "contrast", "rare-carrier", "latent")
#: relative singular-value cutoff of the anchor fit, on features scaled to unit spread each (so that no
#: feature's units decide whether it counts): features stored in float32 carry ~1e-7 relative rounding,
#: which must not count as a direction in which f varies (the shift ambiguity of v_0).
_RCOND = 1e-5
#: a log Z_B whose spread is below this times its size is constant up to rounding (R² = 1)
_CONSTANT_RTOL = 1e-12
#: relative tolerance of a cumulative π-mass reaching ½ (a cumsum of n weights rounds by ~n·1e-16).
_HALF_RTOL = 1e-9


# ---- contexts --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class AnchorContexts:
    """Rows x of a log-linear world: ``logp (n, V)`` = log p*(·|x), ``features (n, d)`` = f*(x),
    ``embeddings (d, V)`` = V*, ``weights (n,)`` π_x summing to 1, ``states (n,)`` h(x), and
    ``planted`` v_0 (d,) of the world (None for an unstructured world)."""

    logp: np.ndarray
    features: np.ndarray
    embeddings: np.ndarray
    weights: np.ndarray
    states: np.ndarray
    planted: np.ndarray | None

    def __post_init__(self):  # π weighs every ε and error: unnormalised weights scaled them silently (×3 → 3ε)
        lp = check_real_array("logp", self.logp)  # the others are read against p*: NaN rows read as errors of ½
        if lp.ndim != 2:
            raise ShapeError(f"logp: expected the rows' log-laws (n, V), got shape {lp.shape}")
        check_lm_laws("logp", lp, lp.shape)  # every row a law (a row summing to ½ gave finite flip KLs)
        (n, V), f = lp.shape, check_real_array("features", self.features)
        if f.ndim != 2 or len(f) != n:
            raise ShapeError(f"features: expected f*(x) for each of the {n} rows, (n, d), got shape {f.shape}")
        E = check_shaped("embeddings", self.embeddings, (f.shape[1], V))
        w = check_distributions("weights", self.weights, atol=1e-9)
        if w.ndim != 1 or len(w) != n:
            raise ShapeError(f"weights: expected one weight per row, shape ({n},), got {w.shape}")
        if np.shape(self.states) != (n,):
            raise ShapeError(f"states: expected one state per row, shape ({n},), got {np.shape(self.states)}")
        if self.planted is not None:
            check_shaped("planted", self.planted, (E.shape[0],))

    @property
    def logits(self) -> np.ndarray:
        """⟨v*_w, f*(x)⟩, ``(n, V)``."""
        return self.features @ self.embeddings


def anchor_contexts(world, tokens=None) -> AnchorContexts:
    """The rows of a :class:`~simlm.worlds.LogLinearWorld`: one per automaton state (uniform weights) when
    ``tokens`` is None, else one per position of ``tokens (n, T)`` (uniform over positions)."""
    from simlm.worlds import LogLinearWorld

    if not isinstance(world, LogLinearWorld):
        raise ConfigError(f"world: anchor vectors are defined for a LogLinearWorld, got {type(world).__name__}")
    Z, W = np.asarray(world.representations, np.float64), np.asarray(world.word_embeddings, np.float64)
    if tokens is None:
        states = np.arange(world.n_states)
    else:
        states = np.asarray(world.states(tokens)).reshape(-1)
    f = Z[states]
    try:
        planted = np.asarray(world.anchor_vector(), np.float64)
    except ConfigError:  # an unstructured world: no planted anchor
        planted = None
    return AnchorContexts(log_softmax(f @ W), f, W, np.full(len(states), 1.0 / len(states)), states, planted)


def log_softmax(logits) -> np.ndarray:
    """log_softmax over the last axis, float64."""
    z = np.asarray(logits, np.float64)
    top = z.max(-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(-1, keepdims=True))


def log_bulk_partition(logits, bulk=None) -> np.ndarray:
    """log Z_B(x) = log Σ_{w∈B(x)} exp(logits(x, w)), ``(n, V)`` → ``(n,)`` float64 (all words when ``bulk`` is
    None); on log-probabilities it is log p(B(x)|x)."""
    z = np.asarray(logits, np.float64)
    z = np.where(bulk, z, -np.inf) if bulk is not None else z
    top = z.max(-1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(-1, keepdims=True)))[..., 0]


def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = check_real_array("weights", weights)
    if w.shape != (n,) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(f"weights: expected {n} non-negative weights with a positive sum, got shape {w.shape}")
    return w / w.sum()


def check_bulk(bulk, shape) -> np.ndarray:
    """B(x) as a bool ``shape`` = (n, V) array with at least one word in every row, or a typed error naming
    ``bulk`` (an empty row has log p(B|x) = −inf: every fit, score and floor built on it would be NaN)."""
    B = np.asarray(bulk)
    if B.dtype != bool or B.shape != tuple(shape):
        raise ShapeError(f"bulk: expected a bool array of shape {tuple(shape)}, got {B.dtype} {B.shape}")
    if not B.any(1).all():
        raise ConfigError(f"bulk: context {int(np.flatnonzero(~B.any(1))[0])} has an empty bulk")
    return B


def check_shaped(name: str, values, shape) -> np.ndarray:
    """A finite float64 array of shape ``shape`` (an LM's laws (n, V), a residual per context (n,)), or a
    typed error naming ``name``."""
    v = check_real_array(name, values)
    if v.shape != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)}, got {v.shape}")
    return v


def check_lm_laws(name: str, logp, shape) -> np.ndarray:
    """An LM's laws ``(n, V)`` as float64 log-probabilities, renormalised, or a typed error naming ``name``:
    finite (:func:`check_shaped`) and every row a probability law by the project's rule
    (:func:`simlm.metrics.epsilon.check_laws`: |logsumexp| within its rounding tolerance, else a
    DistributionError).
    Rows that do not sum to 1 fake a certificate: a task word's log-probability raised by 3 gave KL < 0,
    read as ε = 0 and a bound of 0 under a head error of ½.  Rows within the tolerance are renormalised,
    so ε, TV and the head (which is invariant to a shift of a row) all read one and the same law."""
    v = check_shaped(name, logp, shape)
    with jax.enable_x64(True):
        return np.asarray(check_laws(name, v), np.float64)


# ---- the bulk and the anchor fit -------------------------------------------------------------------

def bulk_mask(logp_star, *, top_k: int | None = None, threshold: float | None = None, words=None) -> np.ndarray:
    """B(x), ``(n, V)`` bool: the complement of the ``top_k`` most likely words under p*(·|x), or the words
    with p*(w|x) < ``threshold``, or the fixed set ``words`` — exactly one of the three."""
    lp = check_real_array("logp_star", logp_star)
    if lp.ndim != 2:
        raise ShapeError(f"logp_star: expected (n, V), got {lp.shape}")
    n, V = lp.shape
    if sum(o is not None for o in (top_k, threshold, words)) != 1:
        raise ConfigError("bulk: give exactly one of top_k, threshold, words")
    if top_k is not None:
        k = check_positive_int("top_k", top_k, minimum=0, maximum=V - 1)
        mask = np.ones((n, V), bool)
        np.put_along_axis(mask, np.argsort(-lp, axis=1)[:, :k], False, axis=1)
        return mask
    if threshold is not None:
        mask = np.exp(lp) < check_positive("threshold", threshold)
    else:
        ids = _word_ids(words, V, distinct=False)
        mask = np.zeros((n, V), bool)
        mask[:, ids] = True
    if not mask.any(1).all():
        raise ConfigError(f"bulk: context {int(np.flatnonzero(~mask.any(1))[0])} has an empty bulk; raise the threshold")
    return mask


@dataclasses.dataclass(frozen=True, eq=False)
class AnchorFit:
    """log Z_B(x) ≈ ⟨``v0``, f(x)⟩ + ``c``: ``residual (n,)`` r(x) (π-mean 0), ``mse`` = E_π r², ``r2``,
    ``max_residual``, ``constant_mse`` = Var_π log Z_B (the constant-only fit), and the same fit of the
    full log Z (``full_mse``, ``full_r2``, ``full_constant_mse``).  ``angle`` (degrees) between v0 and the
    planted anchor after projecting both on the span of the centred features (components along directions
    in which f does not vary are the shift ambiguity: only their constant reaches log Z_B); None if no
    anchor was planted, or where the angle is undefined (f constant, or v0 or the planted anchor with no
    component along the directions in which f varies)."""

    v0: np.ndarray
    c: float
    residual: np.ndarray
    mse: float
    r2: float
    max_residual: float
    constant_mse: float
    full_mse: float
    full_r2: float
    full_constant_mse: float
    angle: float | None


def _centred(f, w):
    """(f − its π-mean, each column's weighted RMS), with the columns constant up to the rounding of that mean
    set to exactly 0 and given spread 1 (scaled to unit spread, a one-ulp spread would count as a direction
    in which f varies)."""
    fc = f - w @ f
    s = np.sqrt(w @ fc**2)
    constant = s <= 1e-12 * np.abs(f).max(0)
    return np.where(constant, 0.0, fc), np.where(constant, 1.0, s)


def _linear_fit(y, f, w):
    """Weighted least squares y ≈ f·a + c, returns (a, c, residual, mse, var).  Solved on the features
    scaled to unit spread, with a of least norm there (a feature's units change neither the fit nor which
    directions count); var is 0 when y is constant up to rounding (:data:`_CONSTANT_RTOL`)."""
    mean_f, mean_y = w @ f, w @ y
    (fc, scale), yc = _centred(f, w), y - mean_y
    sw = np.sqrt(w)[:, None]
    a = np.linalg.lstsq(sw * fc / scale, sw[:, 0] * yc, rcond=_RCOND)[0] / scale
    res = yc - fc @ a
    var = float(w @ yc**2)
    var = 0.0 if var <= (_CONSTANT_RTOL * max(1.0, abs(float(mean_y))))**2 else var
    return a, float(mean_y - mean_f @ a), res, float(w @ res**2), var


def anchor_fit(logits, features, bulk, weights=None, *, planted=None) -> AnchorFit:
    """Fit log Z_B(x) = logsumexp_{w∈B(x)} logits(x, w) ≈ ⟨v0, f(x)⟩ + c over the rows ``logits (n, V)``,
    ``features (n, d)``, ``bulk (n, V)`` bool, weighted by ``weights (n,)`` (uniform by default).
    ``planted (d,)``: the world's anchor, to report the angle.  R² = 1 − mse/constant_mse (1 when log Z_B
    is constant)."""
    z, f = check_real_array("logits", logits), check_real_array("features", features)
    if z.ndim != 2 or f.ndim != 2 or f.shape[0] != z.shape[0]:
        raise ShapeError(f"logits, features: expected (n, V) and (n, d), got {z.shape} and {f.shape}")
    B = check_bulk(bulk, z.shape)
    w = _weights(weights, z.shape[0])
    v0, c, res, mse, var = _linear_fit(log_bulk_partition(z, B), f, w)
    _, _, _, full_mse, full_var = _linear_fit(log_bulk_partition(z), f, w)
    angle = None
    if planted is not None:
        p = check_real_array("planted", planted)
        if p.shape != (f.shape[1],):
            raise ShapeError(f"planted: expected shape ({f.shape[1]},), got {p.shape}")
        fc, scale = _centred(f, w)  # the directions in which f varies, found as in the fit, back in f's units
        U, s, _ = np.linalg.svd((fc / scale).T * np.sqrt(w), full_matrices=False)
        U = np.linalg.qr(scale[:, None] * U[:, s > _RCOND * max(s.max(), 1e-300)])[0]
        a, b = U.T @ v0, U.T @ p
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        # a projection that is rounding only (relative to the vector projected) has no direction
        if na > 1e-12 * np.linalg.norm(v0) and nb > 1e-12 * np.linalg.norm(p):
            angle = float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))
    r2 = lambda m, v: 1.0 - m / v if v > 0 else 1.0
    return AnchorFit(v0, c, res, mse, r2(mse, var), float(np.abs(res).max()), var, full_mse, r2(full_mse, full_var),
                     full_var, angle)


def world_anchor_fit(ctx: AnchorContexts, bulk) -> AnchorFit:
    """:func:`anchor_fit` of the world itself (logits ⟨v*_w, f*(x)⟩, features f*), angle to the planted v_0."""
    return anchor_fit(ctx.logits, ctx.features, bulk, ctx.weights, planted=ctx.planted)


# ---- non-identifiability ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class WordErrors:
    """Per word w: ``frequency (V,)`` = E_π p*(w|x) and ``error (V,)`` = E_π |log p(w|x) − log p*(w|x)|;
    ``order (V,)`` sorts the words from most to least frequent."""

    frequency: np.ndarray
    error: np.ndarray
    order: np.ndarray


def word_errors(logp_star, logp_lm, weights=None) -> WordErrors:
    """Per-word log-probability errors of an LM against p*, by word frequency: logits are not identified
    (a shift common to every word is invisible), log-probabilities are."""
    a, b = check_real_array("logp_star", logp_star), check_real_array("logp_lm", logp_lm)
    if a.shape != b.shape or a.ndim != 2:
        raise ShapeError(f"logp_star, logp_lm: expected equal (n, V) shapes, got {a.shape} and {b.shape}")
    w = _weights(weights, a.shape[0])
    freq = w @ np.exp(a)
    return WordErrors(freq, w @ np.abs(b - a), np.argsort(-freq))


# ---- tasks -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class AnchorTask:
    """Labels y(x) = 1[score*(x) + bias ≥ 0] with score*(x) = ⟨``direction``, f*(x)⟩.  Word tasks have
    ``words (k,)``, ``coef (k,)`` and direction u* = Σ c_w (v*_w − v_0) (v_0 the world's fitted anchor);
    the latent task has none (its direction picks a half of the states).  ``bias`` balances the classes
    under π; ``margin (n,)`` = |score* + bias|.  ``rows``: the :func:`rows_fingerprint` of the contexts the
    task was built on (None for a task built by hand: then only its shape is checked against the rows)."""

    name: str
    direction: np.ndarray
    words: np.ndarray | None
    coef: np.ndarray | None
    score: np.ndarray
    bias: float
    labels: np.ndarray
    margin: np.ndarray
    rows: str | None = None


def array_digest(*arrays, salt: str = "") -> str:
    """A digest of ``arrays`` (each as float64, with its shape) after ``salt``: equal inputs, equal digests."""
    h = hashlib.blake2b(salt.encode(), digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a, np.float64)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def rows_fingerprint(ctx: AnchorContexts) -> str:
    """A digest of the rows a task is defined on: f*(x), V* and π (the labels, margins and scores are
    functions of them).  Two context sets with equal rows have equal fingerprints."""
    return array_digest(ctx.features, ctx.embeddings, ctx.weights)


def check_task(task, ctx: AnchorContexts) -> AnchorTask:
    """``task`` if it was built on the rows ``ctx``, else a typed error naming ``task``: a ShapeError when
    its score has another number of rows (which numpy met as a raw broadcast or matmul error), a
    ConfigError when its fingerprint is another context set's (of the same size: silently scored
    against labels that are not these rows')."""
    if not isinstance(task, AnchorTask):
        raise ConfigError(f"task: expected an AnchorTask, got {type(task).__name__}")
    n = len(ctx.weights)
    if np.shape(task.score) != (n,) or np.shape(task.labels) != (n,) or np.shape(task.margin) != (n,):
        raise ShapeError(f"task: the {task.name!r} task has {np.shape(task.score)} scores, built on other "
                         f"contexts than these {n} rows")
    if np.shape(task.direction) != (ctx.features.shape[1],):
        raise ShapeError(f"task: the {task.name!r} task's direction has shape {np.shape(task.direction)}, "
                         f"the rows' features have dimension {ctx.features.shape[1]}")
    if task.rows is not None and task.rows != rows_fingerprint(ctx):
        raise ConfigError(f"task: the {task.name!r} task was built on other contexts than these (its rows' "
                          "fingerprint differs); build it with word_task or random_tasks on these rows")
    return task


def half_index(cumulative) -> int:
    """The first index where a cumulative π-mass reaches ½ of its total, within :data:`_HALF_RTOL`, so that
    rounding does not move it (6 × fl(1/12) sums to 0.49999999999999994: an exact comparison puts the
    crossing one row, or one group of tied rows, too far)."""
    return int(np.searchsorted(cumulative, (0.5 - _HALF_RTOL) * cumulative[-1]))


def _half_crossing(x, w):
    """x sorted and the first sorted index where its cumulative π-mass reaches ½ (:func:`half_index`)."""
    i = np.argsort(x, kind="stable")
    return x[i], half_index(np.cumsum(w[i]))


def _balancing_bias(score, w) -> float:
    """−(the midpoint between the two scores where the π-mass crosses ½): balanced classes and no
    context on the threshold (its margin would be 0 and rounding alone would decide its label).  When the
    crossing is at the top score the cut goes below it, so the labels are constant only if every score is.
    Read on the contexts of weight > 0: a context of weight 0 is invisible (its score, just above the crossing,
    set the cut and shrank the margins of the weighted ones tenfold, a review 2026-12-06)."""
    score, w = np.asarray(score)[np.asarray(w) > 0], np.asarray(w)[np.asarray(w) > 0]
    s, k = _half_crossing(score, w)
    tie = 1e-9 * (1 + abs(s[k]))  # rows may share a state: their scores agree up to rounding
    above, below = s[s > s[k] + tie], s[s < s[k] - tie]
    if above.size:
        return float(-(s[k] + above[0]) / 2)
    return float(-(below[-1] + s[k]) / 2) if below.size else float(-s[k] + 1.0)


def _task(name, ctx, direction, words=None, coef=None) -> AnchorTask:
    with np.errstate(over="ignore", invalid="ignore"):
        score = ctx.features @ direction
    if not (np.isfinite(direction).all() and np.isfinite(score).all()):
        raise ConfigError(f"coef: the task's direction or score overflows float64 (largest |coef| "
                          f"{np.abs(coef).max() if coef is not None else float('nan'):g}); scale the coefficients down")
    bias = _balancing_bias(score, ctx.weights)
    return AnchorTask(name, direction, words, coef, score, bias, score + bias >= 0, np.abs(score + bias),
                      rows_fingerprint(ctx))


def _word_ids(words, V: int, *, distinct: bool = True, name: str = "words") -> np.ndarray:
    """Words as a flat int array of ids in [0, V) (``distinct``: no id twice), or a ConfigError naming ``name``."""
    want = f"{name}: expected {'distinct ' if distinct else ''}word ids in [0, {V}), got {words!r}"
    try:
        ids = np.asarray(words).reshape(-1)
    except ValueError:  # ragged nesting
        raise ConfigError(want) from None
    if ids.size == 0 or ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 \
            or ids.max() >= V or (distinct and np.unique(ids).size != ids.size):
        raise ConfigError(want)
    return ids


def word_task(ctx: AnchorContexts, fit: AnchorFit, words, coef, name: str = "anchored") -> AnchorTask:
    """score*(x) = Σ_{w∈S} c_w ⟨v*_w − v_0, f*(x)⟩ over the task ``words`` with ``coef`` c, v_0 = ``fit.v0``
    (so the world's own anchored head is exact)."""
    ids = _word_ids(words, ctx.embeddings.shape[1])
    c = check_real_array("coef", coef).reshape(-1)
    if ids.shape != c.shape or ids.size == 0:
        raise ShapeError(f"words, coef: expected equal non-empty lengths, got {ids.shape} and {c.shape}")
    if not c.any():  # a constant score: one class, error 0 for every LM and every bound trivially held
        raise ConfigError(f"coef: all zero; a task needs a non-zero coefficient (got {c.tolist()})")
    return _task(name, ctx, ctx.embeddings[:, ids] @ c - c.sum() * fit.v0, ids, c)


def random_tasks(ctx: AnchorContexts, fit: AnchorFit, seed, *, n_words: int = 2, rare_words=None) -> dict:
    """The four tasks: ``anchored`` (the ``n_words`` most frequent words, c_w ~ U(0.5, 1.5), Σc ≠ 0),
    ``contrast`` (the same words, c centred so Σc = 0), ``rare-carrier`` (a contrast over ``rare_words``,
    default the ``n_words`` least frequent) and ``latent`` (1[h(x) ∈ H₊], H₊ the states where ⟨a, f*⟩ is
    above its median, a random)."""
    rng = as_rng(seed)
    k = check_positive_int("n_words", n_words, minimum=2, maximum=ctx.logp.shape[1])
    order = np.argsort(-(ctx.weights @ np.exp(ctx.logp)))
    top = order[:k]
    rare = order[-k:] if rare_words is None else _word_ids(rare_words, ctx.logp.shape[1], name="rare_words")
    c = rng.uniform(0.5, 1.5, k)
    cr = rng.normal(size=len(rare))
    if len(rare) < 2:
        raise ConfigError(f"rare_words: a contrast needs at least two words, got {rare_words!r}")
    return {"anchored": word_task(ctx, fit, top, c, "anchored"),
            "contrast": word_task(ctx, fit, top, c - c.mean(), "contrast"),
            "rare-carrier": word_task(ctx, fit, rare, cr - cr.mean(), "rare-carrier"),
            "latent": _task("latent", ctx, rng.normal(size=ctx.features.shape[1]))}


# ---- the score identity and the heads --------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class ScoreIdentity:
    """⟨u, f(x)⟩ (``lhs``) against ``probability`` Σ c_w [log p(w|x) − log p(B|x)] + ``anchor`` (Σc)(c + r(x));
    ``gap`` = max_x |lhs − probability − anchor| (0 up to rounding)."""

    lhs: np.ndarray
    probability: np.ndarray
    anchor: np.ndarray
    gap: float


def probability_part(logp, bulk, words, coef) -> np.ndarray:
    """Σ_{w∈S} c_w [log p(w|x) − log p(B(x)|x)], ``(n,)``: the part of an anchored score that p identifies."""
    lp = check_real_array("logp", logp)
    if lp.ndim != 2:
        raise ShapeError(f"logp: expected (n, V), got {lp.shape}")
    B = check_bulk(bulk, lp.shape)
    ids = _word_ids(words, lp.shape[1])  # −1 wrapped to the last word, V raised an IndexError
    c = check_shaped("coef", coef, ids.shape)
    return (lp[:, ids] - log_bulk_partition(lp, B)[:, None]) @ c


def score_identity(features, embeddings, bulk, words, coef, fit: AnchorFit) -> ScoreIdentity:
    """Both sides of the score identity (module docstring) for a softmax LM (``features (n, d)``,
    ``embeddings (d, V)``) and its anchor ``fit`` over ``bulk``."""
    f, E = check_real_array("features", features), check_real_array("embeddings", embeddings)
    if f.ndim != 2 or E.ndim != 2 or f.shape[1] != E.shape[0]:
        raise ShapeError(f"features, embeddings: expected (n, d) and (d, V), got {f.shape} and {E.shape}")
    words, c = _word_ids(words, E.shape[1]), check_real_array("coef", coef).reshape(-1)
    if c.shape != words.shape:
        raise ShapeError(f"words, coef: expected equal lengths, got {words.shape} and {c.shape}")
    lhs = f @ (E[:, words] @ c - c.sum() * fit.v0)
    prob = probability_part(log_softmax(f @ E), bulk, words, c)
    anchor = c.sum() * (fit.c + fit.residual)
    return ScoreIdentity(lhs, prob, anchor, float(np.abs(lhs - prob - anchor).max()))


def error_rate(pred, labels, weights) -> float:
    """The ``weights``' mass (a probability vector over the contexts) where ``pred != labels``, summed exactly
    (``math.fsum``) and at most 1: a dot product of n weights 1/n can read 1 + 2⁻⁵² with every context
    wrong (n = 9, 11, 20 …), above a bound of 1 that no LM can exceed."""
    wrong = np.asarray(pred) != np.asarray(labels)
    return min(math.fsum(np.asarray(weights, np.float64)[wrong]), 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class HeadErrors:
    """The anchored head's error at the task's threshold (``error``), with the LM's probability part and
    the world's anchor part (``probability_error``), and the world's probability part with the LM's anchor
    part (``anchor_error``); ``zero_shot_error`` with the label-free threshold: the LM's score cut where its
    π-mass crosses ½, by the rule that cut the world's score into the task's labels (so the world's own
    zero-shot error is 0 — it was π(contexts at the median score) while the cut was ``score ≥ median``)."""

    error: float
    probability_error: float
    anchor_error: float
    zero_shot_error: float


def head_errors(task: AnchorTask, ctx: AnchorContexts, bulk, logp_lm, residual_lm, residual_star) -> HeadErrors:
    """The zero-shot anchored head u = Σ c_w (v_w − v_0) of an LM, read through the score identity:
    score_LM(x) = Σ c_w [log p(w|x) − log p(B|x)] + (Σc) r_LM(x), compared at the threshold of the same
    task on the world (whose score is Σ c_w [log p* …] + (Σc)(c* + r*(x)))."""
    task = check_task(task, ctx)
    if task.words is None:
        raise ConfigError(f"task: the {task.name!r} task has no words; the anchored head needs a word task")
    c, w = task.coef, ctx.weights
    bulk = check_bulk(bulk, ctx.logp.shape)
    logp_lm = check_lm_laws("logp_lm", logp_lm, ctx.logp.shape)
    residual_lm = check_shaped("residual_lm", residual_lm, w.shape)
    residual_star = check_shaped("residual_star", residual_star, w.shape)
    # score* + bias = prob* + Σc (c* + r*) + bias: the threshold on prob + Σc r is −bias − Σc c*
    offset = task.score + task.bias - probability_part(ctx.logp, bulk, task.words, c) - c.sum() * residual_star
    prob_lm = probability_part(logp_lm, bulk, task.words, c)
    prob_star = probability_part(ctx.logp, bulk, task.words, c)
    full = prob_lm + c.sum() * residual_lm
    return HeadErrors(error_rate(full + offset >= 0, task.labels, w),
                      error_rate(prob_lm + c.sum() * residual_star + offset >= 0, task.labels, w),
                      error_rate(prob_star + c.sum() * residual_lm + offset >= 0, task.labels, w),
                      error_rate(full + _balancing_bias(full, w) >= 0, task.labels, w))


def probe_error(features, labels, weights=None, *, n_label: int = 64, seed=0, l2: float = 1e-3) -> float:
    """π-weighted 0-1 error on every row of a ridge-logistic probe on frozen ``features (n, d)`` (each
    column standardised), fitted on ``n_label`` rows drawn from π with ``seed``."""
    f = check_real_array("features", features)
    if f.ndim != 2:
        raise ShapeError(f"features: expected (n, d), got {f.shape}")
    y = np.asarray(labels)
    if y.shape != (f.shape[0],) or y.dtype != bool:
        raise ShapeError(f"labels: expected {f.shape[0]} bool labels, one per row of features, got {y.dtype} {y.shape}")
    w = _weights(weights, f.shape[0])
    idx = as_rng(seed).choice(f.shape[0], check_positive_int("n_label", n_label), p=w)
    mu, sd = f[idx].mean(0), f[idx].std(0)
    X = (f - mu) / np.where(sd > 1e-12, sd, 1.0)
    v, b = ridge_logistic(X[idx], y[idx].astype(float), (~y[idx]).astype(float), check_positive("l2", l2))
    return error_rate(X @ v + b >= 0, y, w)


def readout_error(task: AnchorTask, ctx: AnchorContexts, logp_lm) -> float:
    """The world's linear readout of the task moved to the LM: ⟨q, log p(·|x)⟩ with q ⊥ 1 the minimum-norm
    (least-squares) solution of ⟨q, log p*(·|x)⟩ = ⟨u*, f*(x)⟩ − const, at the task's threshold.  It is
    exact on the world (``readout_error(task, ctx, ctx.logp) == 0``) when u* lies in the row space of
    V*(I − 11ᵀ/V) — e.g. V − 1 ≥ d with V* of rank d; otherwise the world's own readout errs too, and that
    error (report it beside the LM's) is the readout's, not the LM's."""
    task = check_task(task, ctx)
    lp = check_lm_laws("logp_lm", logp_lm, ctx.logp.shape)
    cq, offset = _readout(task, ctx)
    return error_rate(lp @ cq + offset + task.bias >= 0, task.labels, ctx.weights)


def _readout(task: AnchorTask, ctx: AnchorContexts) -> tuple[np.ndarray, float]:
    """The world's readout of a checked task: C q ``(V,)`` (C = I − 11ᵀ/V, q the minimum-norm solution of
    V*C q = u*) and the offset E_w[score* − ⟨C q, log p*⟩] that puts it on the task's scale (constant over x
    up to rounding when u* is in the row space); a law's readout score is ⟨C q, log p⟩ + offset + bias."""
    V = ctx.embeddings.shape[1]
    C = np.eye(V) - 1.0 / V
    cq = C @ (np.linalg.pinv(ctx.embeddings @ C) @ task.direction)
    return cq, ctx.weights @ (task.score - ctx.logp @ cq)


@dataclasses.dataclass(frozen=True, eq=False)
class ReadoutRadii:
    """How far an LM's laws must move for :func:`readout_error` to read a context otherwise than the world's
    own readout does.  ``radius (n,)``: per context, the smallest ‖C(log p(·|x) − log p*(·|x))‖₂ (C = I − 11ᵀ/V:
    the change of the log-probabilities up to a shift, to which the readout is blind) at which the readout can
    give x another label — |readout score| ÷ ‖Cq‖₂ by Cauchy–Schwarz, and reached: every Cδ ⊥ 1 is a law's
    change (log_softmax(log p* + δ)), so the law moved by that much along ∓Cq flips x (a score of exactly 0,
    labelled 1, flips at any distance: radius 0).  ``shift (n,)``: the LM's ‖C(log p − log p*)‖₂ per context.
    ``at_risk``: the contexts' weight where shift ≥ radius, the only ones whose label can differ, so
    |readout_error(LM) − readout_error(world)| ≤ at_risk.  ``margin``: the least radius over contexts of
    positive weight (an LM nearer than it everywhere reads every context as the world does)."""

    radius: np.ndarray
    shift: np.ndarray
    at_risk: float
    margin: float


def readout_radii(task: AnchorTask, ctx: AnchorContexts, logp_lm) -> ReadoutRadii:
    """The :class:`ReadoutRadii` of :func:`readout_error` for the LM's laws ``logp_lm (n, V)``: why a latent
    readout errs at a small ε (one heavy context whose score sits near the threshold flips at the smallest
    noise, and then the same contexts flip at every larger ε), or why it cannot."""
    task = check_task(task, ctx)
    lp = check_lm_laws("logp_lm", logp_lm, ctx.logp.shape)
    cq, offset = _readout(task, ctx)
    score = ctx.logp @ cq + offset + task.bias  # the world's readout score, as readout_error computes it
    norm = float(np.linalg.norm(cq))
    radius = np.abs(score) / norm if norm > 0 else np.full(len(score), np.inf)
    moved = lp - ctx.logp
    moved = np.linalg.norm(moved - moved.mean(1, keepdims=True), axis=1)
    w = np.asarray(ctx.weights, np.float64)
    return ReadoutRadii(radius=radius, shift=moved, at_risk=min(math.fsum(w[moved >= radius]), 1.0),
                        margin=float(radius[w > 0].min()))


__all__ = ["AnchorContexts", "anchor_contexts", "log_softmax", "log_bulk_partition", "bulk_mask", "AnchorFit", "anchor_fit",
           "world_anchor_fit", "WordErrors", "word_errors", "AnchorTask", "word_task", "random_tasks", "ScoreIdentity",
           "probability_part", "score_identity", "HeadErrors", "head_errors", "probe_error", "readout_error",
           "ReadoutRadii", "readout_radii",
           "error_rate", "half_index", "check_bulk", "check_shaped", "check_lm_laws", "check_task", "rows_fingerprint",
           "array_digest", "TASKS"]
