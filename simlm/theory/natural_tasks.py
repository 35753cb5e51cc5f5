"""Natural tasks: Saunshi, Malladi & Arora, "A Mathematical Exploration of Why Language Models Help
Solve Downstream Tasks" (ICLR 2021), checked exactly on enumerable contexts.

Contexts s come with p_L(s) (``ContextSet.weights``) and the exact next-word law p*_s ∈ Δ_V.  A task
reweights them, p_T(s), and labels y ∈ {−1, +1}.  The loss of a score z on the task is
ℓ_T = E_{p_T} ℓ(z_s, y), ℓ(z, y) = log(1 + e^{−yz}) (1-Lipschitz in z).  An LM p_f has
ε = E_{p_L} KL(p*_s ‖ p_f(s)), its excess cross-entropy (nats).  The quantities, as defined below:

    γ(p_T)    = min_{s ∈ supp p_T} p_L(s)/p_T(s)                    (so p_T ≤ p_L/γ),
    τ(B)      = min_{‖v‖_∞ ≤ B, |b| ≤ B} E_{p_T} ℓ(⟨v, p*_s⟩ + b, y)   (the task is (τ, B)-natural),
    τ_Φ(B)    = the same over v = Φᵀλ,   τ⁽²⁾_Φ(B₂) = over v = Φᵀλ, ‖v‖₂ ≤ B₂,  |b| ≤ B₂.

Our choice: the bias is boxed, |b| ≤ B, so every minimum is attained; it cancels in every proof below.
The bounds are the forms we derive from these definitions (each a small function, replaceable through
``check_natural_task(forms=...)``); each is minimised over a grid of B (default 2^-2 … 2^8).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Mapping, MutableMapping
from typing import Callable

import jax
import numpy as np
from scipy.optimize import linprog
from scipy.special import expit

from simlm.errors import ConfigError, ShapeError, TokenError
from simlm.metrics.epsilon import lm_call
from simlm.models.finite import SoftmaxContextLM, context_kl, fit_cross_entropy, quad_excess
from simlm.worlds.contexts import ContextSet, enumerate_contexts
from simlm.worlds.families import softmax
from simlm.theory._convex import (CONSTRAINTS, LogisticSolution, constrained_logistic, frank_wolfe_gap,
                                  logistic_loss, polish_softmax_fit, ridge_logistic, softmax_objective, zero_one_error)
from simlm.checks import (as_rng, check_distributions, check_finite, check_non_negative, check_positive,
                          check_real_array)

#: default grid of B (and B₂): 0.25, 0.5, …, 256.
B_GRID = 2.0 ** np.arange(-2, 9)
NOISES = ("sign", "logistic")
#: singular values of diag(√(p_L + p_T)) Δ below this fraction of the largest count as 0 in γ_Φ (their
#: squares, the eigenvalues of Σ_{p_L} + Σ_{p_T}, below 1e-26 of the largest: rounding).
RANGE_RTOL = 1e-13
#: the rounding a bound's verdict forgives by default (``atol`` of :func:`check_natural_task`).
ATOL = 1e-7


# ---- tasks --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class NaturalTask:
    """Labels from p*: margin m_s = ⟨v, p*_s⟩ + b; ``noise="sign"``: y = sign(m_s) (0 ↦ +1);
    ``"logistic"``: P(y = +1 | s) = σ(m_s), both labels weighted.  ``weights (S,)`` = p_T(s),
    ``label_probs (S,)`` = P(y = +1 | s); ``prompt`` the token suffix the slice requires."""

    v: np.ndarray
    b: float
    noise: str
    weights: np.ndarray
    label_probs: np.ndarray
    max_length: int
    prompt: tuple | None = None
    contexts_key: str | None = None  # digest of the contexts the task was built on (see _contexts_key)

    @property
    def pos(self) -> np.ndarray:
        """p_T(s)·P(y = +1 | s), ``(S,)``."""
        return self.weights * self.label_probs

    @property
    def neg(self) -> np.ndarray:
        return self.weights * (1.0 - self.label_probs)


def check_contexts(contexts) -> ContextSet:
    """``contexts`` if it is a :class:`ContextSet` (from :func:`enumerate_contexts`), else :class:`ConfigError`."""
    if not isinstance(contexts, ContextSet):
        raise ConfigError(f"contexts: expected a ContextSet from enumerate_contexts, got {type(contexts).__name__}")
    return contexts


def _contexts_key(contexts) -> str:
    """A digest of the contexts' laws and weights: a task built on other contexts (another world with the
    same V and L) has another key, so it is refused rather than silently scored against these."""
    h = hashlib.sha256()
    for a in (contexts.next_token_probs, contexts.weights):
        h.update(np.ascontiguousarray(a, np.float64).tobytes())
    return h.hexdigest()[:16]


def check_task_on(task, contexts=None) -> NaturalTask:
    """``task`` if it is a :class:`NaturalTask` — built on ``contexts`` when given (their number, length
    and, where recorded, their laws and weights) — else a typed error naming ``task``."""
    if not isinstance(task, NaturalTask):
        raise ConfigError(f"task: expected a NaturalTask, got {type(task).__name__}")
    if contexts is None:
        return task
    S = len(contexts.prefixes)
    if task.weights.shape != (S,) or task.max_length != contexts.max_length:
        raise ShapeError(f"task: built on {task.weights.shape[0]} contexts of length ≤ {task.max_length}, "
                         f"but these are {S} of length ≤ {contexts.max_length}")
    if task.contexts_key is not None and task.contexts_key != _contexts_key(contexts):
        raise ConfigError("task: built on the contexts of another world (their laws or weights differ from these); "
                          "build the task on these contexts")
    return task


def _distribution(name: str, p, S: int | None = None) -> np.ndarray:
    p = check_distributions(name, p)
    if p.ndim != 1 or (S is not None and p.shape != (S,)):
        raise ShapeError(f"{name}: expected a distribution over the contexts, shape ({S or 'S'},), got {p.shape}")
    return p


def _task_weights(contexts, prompt, weights) -> tuple[np.ndarray, tuple | None]:
    S, V = contexts.next_token_probs.shape
    base = contexts.weights
    if weights is not None:
        base = check_real_array("weights", weights)
        if base.shape != (S,):
            raise ShapeError(f"weights: expected shape ({S},) (one per context), got {base.shape}")
        if not np.all(np.isfinite(base)) or np.any(base < 0) or base.sum() <= 0:
            raise ConfigError("weights: expected finite non-negative weights with a positive sum")
    if prompt is not None:
        p = np.asarray(prompt)
        if p.ndim != 1 or not p.size or not np.issubdtype(p.dtype, np.integer) or p.min() < 0 or p.max() >= V:
            raise TokenError(f"prompt: expected a non-empty sequence of token ids in [0, {V}) (None: every "
                             f"context), got {prompt!r}")
        prompt = tuple(int(x) for x in p)
        k = len(prompt)
        base = base * np.array([len(s) >= k and s[len(s) - k:] == prompt for s in contexts.prefixes])
        if base.sum() <= 0:
            raise ConfigError(f"prompt: no context of length ≤ {contexts.max_length} with weight > 0 ends "
                              f"with {prompt}")
    return base / base.sum(), prompt


def _labels(margins, noise: str) -> np.ndarray:
    if not isinstance(noise, str) or noise not in NOISES:
        raise ConfigError(f"noise: expected one of {NOISES}, got {noise!r}")
    return (margins >= 0).astype(np.float64) if noise == "sign" else expit(margins)


def natural_task(contexts, v, b, *, prompt=None, weights=None, noise: str = "sign") -> NaturalTask:
    """The task with margins ⟨v, p*_s⟩ + b on ``contexts``; p_T ∝ (``weights`` or p_L) restricted to
    the prefixes that end with ``prompt`` (the sentence-completion slice; None: every context)."""
    contexts = check_contexts(contexts)
    V = contexts.next_token_probs.shape[1]
    v = check_real_array("v", v)
    if v.shape != (V,):
        raise ShapeError(f"v: expected shape ({V},) (one coefficient per word), got {v.shape}")
    b = check_finite("b", b)
    p_T, prompt = _task_weights(contexts, prompt, weights)
    q = _labels(contexts.next_token_probs @ v + b, noise)
    return NaturalTask(v, b, noise, p_T, q, contexts.max_length, prompt, _contexts_key(contexts))


def random_natural_task(contexts, seed, *, noise: str = "sign", prompt=None, weights=None,
                        scale: float = 4.0) -> NaturalTask:
    """v = ``scale``·g/sd_{p_T}(⟨g, p*_s⟩), g ~ N(0, I_V) from ``seed``; b puts the threshold halfway
    between the two distinct scores ⟨v, p*_s⟩ where the p_T-mass below is nearest ½, so the classes
    are balanced-ish (all +1 if p_T sees a single score)."""
    contexts = check_contexts(contexts)
    scale = check_positive("scale", scale)
    P = contexts.next_token_probs
    g = as_rng(seed).standard_normal(P.shape[1])
    p_T, _ = _task_weights(contexts, prompt, weights)
    z = P @ g
    sd = math.sqrt(max(p_T @ (z - p_T @ z) ** 2, 0.0))
    v = scale * g / sd if sd > 1e-12 else g
    return natural_task(contexts, v, _balanced_bias(P @ v, p_T, 1.0), prompt=prompt, weights=weights, noise=noise)


def _balanced_bias(z, p_T, above: float) -> float:
    """b putting the threshold halfway between the two distinct scores z where the p_T-mass below is
    nearest ½ (``above`` − min z, i.e. every label +1, if p_T sees a single score)."""
    on = np.flatnonzero(p_T > 0)
    order = np.argsort(z[on])
    z, w = z[on][order], np.cumsum(p_T[on][order])
    # split only between distinct scores: contexts with equal laws (up to float32 rounding) share a label
    cuts = np.flatnonzero(np.diff(z) > 1e-6 * max(1.0, z[-1] - z[0]))
    k = cuts[np.argmin(np.abs(w[cuts] - 0.5))] if cuts.size else None
    return float(above - z[0] if k is None else -0.5 * (z[k] + z[k + 1]))


def indicative_task(contexts, *, noise: str = "sign", prompt=None, weights=None, scale: float = 1.0) -> NaturalTask:
    """The task whose label is carried by *indicative* words: v = ``scale``·u with u ∈ {−1, 0, +1}^V (every
    such u for V ≤ 8, else u ∈ {−1, +1}^V for V ≤ 14, else the signs of the top principal component of the
    task's laws), b the balanced threshold (as :func:`random_natural_task`), choosing among the u whose
    classes are balanced (p_T-mass of either class ≥ ¼) the one whose scores spread most, max
    E_T|⟨u, p*_s⟩ + b_u|, a proxy for a large c = −τ′(0⁺) (:func:`tau_slope`) and so a large ε_c = γc²/2,
    up to which the bound keeps content (c ≤ ½·TV(class means) ≤ ½ when the classes are balanced).  With
    sign labels the spread is at most 2c, not equal to it (on the sweep's HMM, 0.012–0.29 against 2c =
    0.10–0.60), so the chosen u need not maximise ε_c among balanced tasks.  ‖v‖_∞ = ``scale``: the
    labelling classifier lies in the B-box from B = scale on.  Our construction (the paper's motivating
    example, sentiment carried by a few words, made enumerable); nothing here is from the paper."""
    contexts = check_contexts(contexts)
    scale = check_positive("scale", scale)
    P = contexts.next_token_probs
    V = P.shape[1]
    p_T, _ = _task_weights(contexts, prompt, weights)
    if V <= 14:
        U = np.array(list(itertools.product(*[(-1.0, 0.0, 1.0) if V <= 8 else (-1.0, 1.0)] * V)))[1:]
    else:
        centred = P - p_T @ P
        U = np.sign(np.linalg.eigh((centred * p_T[:, None]).T @ centred)[1][:, -1:].T)
    best, u_best, b_best = -1.0, U[-1], _balanced_bias(P @ U[-1], p_T, 1.0)  # (no balanced u: the last one)
    for u in U:
        z = P @ u
        b = _balanced_bias(z, p_T, 1.0)
        spread, positive = p_T @ np.abs(z + b), p_T @ (z + b >= 0)
        if 0.25 <= positive <= 0.75 and spread > best + 1e-12:  # balanced classes only (one class is trivial)
            best, u_best, b_best = spread, u, b
    return natural_task(contexts, scale * u_best, scale * b_best, prompt=prompt, weights=weights, noise=noise)


# ---- LM laws and the quantities -------------------------------------------------------------------

def lm_laws(lm, contexts) -> np.ndarray:
    """p_f(s) for every context, ``(S, V)`` float64: a :class:`SoftmaxContextLM` (its softmax(Φᵀθ_s),
    recomputed in float64), an ``(S, V)`` array of laws, or any LanguageModel (row |s| of
    ``next_token_logprobs(s ⊕ w)``, with w a word p* allows after s; the empty prefix gives the law of
    the first token).  Rows are renormalised in float64."""
    contexts = check_contexts(contexts)
    P = contexts.next_token_probs
    S, V = P.shape
    if isinstance(lm, SoftmaxContextLM):
        if (lm.n_contexts, lm.n_symbols) != (S, V):
            raise ShapeError(f"lm: has {lm.n_contexts} contexts and {lm.n_symbols} words, expected {S} and {V}")
        return softmax(np.asarray(lm.theta, np.float64) @ np.asarray(lm.phi, np.float64))
    if hasattr(lm, "next_token_logprobs"):
        if getattr(lm, "n_symbols", V) != V:
            raise ShapeError(f"lm: has {lm.n_symbols} symbols, the contexts' world {V}")
        laws = np.empty((S, V))
        for t in np.unique(contexts.lengths):
            rows = np.flatnonzero(contexts.lengths == t)
            toks = np.array([contexts.prefixes[i] + (int(P[i].argmax()),) for i in rows], np.int32)
            laws[rows] = np.exp(np.asarray(lm_call("next-token laws", lambda: lm.next_token_logprobs(toks)),
                                           np.float64)[:, t])
        laws = check_distributions("lm (its next-token laws on the contexts)", laws)
    elif isinstance(lm, (np.ndarray, list)) or hasattr(lm, "__array__"):
        laws = check_distributions("lm", lm)
        if laws.shape != (S, V):
            raise ShapeError(f"lm: expected laws of shape ({S}, {V}), got {laws.shape}")
    else:
        raise ConfigError(f"lm: expected a SoftmaxContextLM, a LanguageModel or (S, V) laws, got {type(lm).__name__}")
    return laws / laws.sum(-1, keepdims=True)


def _p_L(contexts) -> np.ndarray:
    """p_L(s), renormalised in float64 (the enumerated p(s) carry float32 rounding)."""
    return contexts.weights / contexts.weights.sum()


def lm_epsilon(contexts, laws) -> float:
    """ε = E_{p_L} KL(p*_s ‖ p_f(s)), nats, for ``laws (S, V)`` (checked to be laws, one row per context):
    :func:`~simlm.models.finite.context_kl` in float64 (0·log 0 = 0; +inf where p_f misses p*'s support)."""
    P = check_contexts(contexts).next_token_probs
    laws = check_distributions("laws", laws)
    if laws.shape != P.shape:
        raise ShapeError(f"laws: expected one law per context, shape {P.shape}, got {laws.shape}")
    with np.errstate(divide="ignore"), jax.enable_x64(True):
        kl = np.asarray(context_kl(P, np.log(laws)), np.float64)
    p_L = _p_L(contexts)
    on = p_L > 0  # a context of weight 0 adds nothing, whatever its KL (0 · inf would read NaN)
    return float(p_L[on] @ kl[on])


def softmax_excess(theta, phi, p_star) -> np.ndarray:
    """δ_s = ℓ_s(θ_s) − min_θ' ℓ_s(θ'), ℓ_s(θ) = log Z_θ − ⟨θ, Φp*_s⟩ (= KL(p*_s ‖ p_θ) + const), per
    context, float64.  The minimum is :func:`fit_cross_entropy`'s, polished by float64 Newton steps (it
    returns θ in float32, whose rounding costs ~1e-13 nats: too much as δ_s → 0)."""
    phi, P = check_real_array("phi", phi), check_distributions("p_star", p_star)
    theta = check_real_array("theta", theta)
    if phi.ndim != 2 or P.ndim != 2 or theta.shape != (P.shape[0], phi.shape[0]) or P.shape[1] != phi.shape[1]:
        raise ShapeError(f"theta, phi, p_star: expected (S, d), (d, V) and (S, V), got {theta.shape}, {phi.shape} "
                         f"and {P.shape}")
    best = polish_softmax_fit(fit_cross_entropy(P, phi).theta, phi, P)
    return np.maximum(softmax_objective(theta, phi, P) - softmax_objective(best, phi, P), 0.0)


def quad_epsilon(contexts, f, phi) -> float:
    """ε_quad = E_{p_L} ½‖Φᵀ(f(s) − f*(s))‖², f* = (ΦΦᵀ)⁺Φp*_s: the Quad excess
    :func:`~simlm.models.finite.quad_excess` per context, in float64, averaged under p_L."""
    P = check_contexts(contexts).next_token_probs
    phi, f = check_phi(phi, P.shape[1], "phi"), check_real_array("f", f)
    if f.shape != (P.shape[0], phi.shape[0]):
        raise ShapeError(f"f: expected features of shape ({P.shape[0]}, {phi.shape[0]}) (one per context), got {f.shape}")
    with jax.enable_x64(True):
        excess = np.asarray(quad_excess(f, P, phi), np.float64)
    return float(_p_L(contexts) @ excess)


def gamma(p_L, p_T) -> float:
    """γ(p_T) = min_{s: p_T(s) > 0} p_L(s)/p_T(s), the largest γ with p_L ⪰ γ p_T pointwise."""
    p_L = _distribution("p_L", p_L)
    p_T = _distribution("p_T", p_T, p_L.shape[0])
    on = p_T > 0
    return float(np.min(p_L[on] / p_T[on]))


def gamma_phi(p_L, p_T, delta) -> float:
    """γ_Φ(p_T) = sup{γ : Σ_{p_L} ⪰ γ Σ_{p_T}}, Σ_p = E_p[Δ_s Δ_sᵀ], ``delta (S, d)`` = Φ(p_f(s) − p*_s).

    Computed without forming Σ (whose eigenvalues square Δ's scales): A = diag(√(p_L + p_T)) Δ has
    AᵀA = Σ_{p_L} + Σ_{p_T}, and on its range (A = U S Vᵀ, singular values above RANGE_RTOL·s_max) the
    whitened Σ_{p_T} is Uᵀ diag(r) U with r_s = p_T(s)/(p_L(s) + p_T(s)), the whitened Σ_{p_L} Uᵀ diag(1 − r) U:
    they sum to I, so they share eigenvectors u_i, and γ_Φ = min_i l_i/t_i over those with t_i > 0 (l_i
    read off diag(1 − r), not as 1 − t_i, which would lose a small γ_Φ to rounding).  A direction only
    p_T's contexts reach has l_i = 0: γ_Φ = 0.  +inf if and only if Σ_{p_T} = 0 (Δ = 0 on p_T's support;
    a Σ_{p_T} tiny beside Σ_{p_L} gives a large finite γ_Φ).  Whitened t_i below 1e-13 of the largest are
    rounding, directions Σ_{p_T} does not reach.  γ_Φ ≥ γ: Σ_{p_L} − γΣ_{p_T} = Σ_s (p_L(s) − γp_T(s))
    Δ_sΔ_sᵀ has non-negative coefficients, so a value below γ (rounding on a nearly rank-deficient Δ) is
    returned as γ.  (Until 2026-12-05 the range was read off the eigenvalues of Σ_{p_L} + Σ_{p_T} with a
    cutoff of 1e-10 of the largest: a Φ-error 1e-6 the size of another's — eigenvalue 1e-12 — fell out
    of the range, and γ_Φ read 50 or 0 where it is 0.505.  Until 2026-12-02 the cutoff was applied to Σ_{p_L} in
    Δ's own units, and whitened t_i ≤ 1e-12 were dropped: +inf where the definition gives 3.8e12.)"""
    p_L = _distribution("p_L", p_L)
    p_T = _distribution("p_T", p_T, p_L.shape[0])
    D = check_real_array("delta", delta)
    if D.ndim != 2 or D.shape[0] != p_L.shape[0]:
        raise ShapeError(f"delta: expected shape ({p_L.shape[0]}, d) (one row per context), got {D.shape}")
    size = np.abs(D).max(0)
    D = D[:, size > 0] / size[size > 0]  # γ_Φ does not change under Δ → ΔM: columns of unit size
    if not np.any(D[p_T > 0]):
        return math.inf
    rows = p_L + p_T > 0
    total, D = (p_L + p_T)[rows], D[rows]
    U, sv, _ = np.linalg.svd(np.sqrt(total)[:, None] * D, full_matrices=False)
    U = U[:, sv > RANGE_RTOL * sv[0]]
    r_T, r_L = p_T[rows] / total, p_L[rows] / total
    _, E = np.linalg.eigh(U.T @ (r_T[:, None] * U))
    M = U @ E  # u_i in the contexts' coordinates: t_i = Σ_s r_T(s) M_si², l_i = Σ_s r_L(s) M_si²
    t, l = r_T @ M**2, r_L @ M**2
    on = t > 1e-13 * t.max() if t.max() > 0 else np.zeros(t.shape, bool)
    if not on.any():  # Σ_{p_T} ≠ 0 (checked above) yet not resolved on the range: the safe answer
        return gamma(p_L, p_T)
    return max(float(np.min(l[on] / t[on])), gamma(p_L, p_T))


def _constraint(norm, Phi, V: int) -> tuple:
    """The constraint set of τ for ``norm`` and ``Phi`` (checked): ``(kind, basis)`` as
    :func:`~simlm.theory._convex.constrained_logistic` and :func:`tau_slope` read them."""
    if not isinstance(norm, str) or norm not in ("inf", "2") or (norm == "2" and Phi is None):
        raise ConfigError(f"norm: expected 'inf', or '2' with Phi given, got {norm!r} (Phi is {type(Phi).__name__})")
    basis = None if Phi is None else _row_basis(check_phi(Phi, V))
    return ("box" if Phi is None else "span-box" if norm == "inf" else "span-ball"), basis


def tau(contexts, task: NaturalTask, B_grid=None, *, Phi=None, norm: str = "inf",
        cache: dict | None = None) -> LogisticSolution:
    """τ(B) (``Phi`` None), τ_Φ(B) (v = Φᵀλ) or, with ``norm="2"``, τ⁽²⁾_Φ(B) on ``B_grid`` (default
    :data:`B_GRID`): the minimisers ``v (G, V)``, ``b (G,)``, ``loss`` = τ and the certificate ``gap``
    (τ ≥ loss − gap), from :func:`simlm.theory._convex.constrained_logistic`; looked up in ``cache``
    (a dict, shared with :func:`check_natural_task`'s ``tau_cache``) when given."""
    P = check_contexts(contexts).next_token_probs
    check_task_on(task, contexts)
    kind, basis = _constraint(norm, Phi, P.shape[1])
    if cache is not None and not isinstance(cache, MutableMapping):
        raise ConfigError(f"cache: expected None or a dict, got {type(cache).__name__}")
    return _tau(P, task, _grid("B_grid", B_grid), kind, basis, cache)


# ---- the bounds ---------------------------------------------------------------------------------

def _slack(B, eps, gamma_) -> float:
    """B√(2ε/γ), checked: B finite ≥ 0, ε and γ ≥ 0 with +∞ allowed (B = 0: 0, the classifier a constant that
    no LM moves; else γ = 0: +∞, ε = E_{p_L} KL cannot see the task's contexts of p_L = 0, whatever ε, 0
    included — which read as a slack of 0 until a review of 2026-12-06; else ε = 0: 0)."""
    B = check_finite("B", B)
    eps, gamma_ = check_non_negative("eps", eps), check_non_negative("gamma", gamma_)
    if B < 0:
        raise ConfigError(f"B: expected a radius ≥ 0, got {B!r}")
    if math.isinf(eps) and math.isinf(gamma_):
        raise ConfigError("eps, gamma: both infinite, so the slack B√(2ε/γ) is undefined")
    if B == 0:
        return 0.0
    return math.inf if gamma_ == 0 else 0.0 if eps == 0 else B * math.sqrt(2.0 * eps / gamma_)


def bound_any_lm(tau, B, eps, gamma_) -> float:
    """ℓ_T(v on p_f) ≤ τ(B) + B√(2ε/γ) for the τ-optimal v (‖v‖_∞ ≤ B), any LM.

    Proof: ℓ 1-Lipschitz ⇒ ℓ_T(v, p_f) − ℓ_T(v, p*) ≤ E_{p_T}|⟨v, p_f(s) − p*_s⟩| ≤ B E_{p_T}‖p_f − p*‖₁;
    Pinsker ‖p* − p_f‖₁ = 2TV ≤ √(2 KL(p*‖p_f)); Jensen E√X ≤ √(EX); change of measure p_T ≤ p_L/γ."""
    return check_finite("tau", tau) + _slack(B, eps, gamma_)


def bound_softmax(tau_phi, B, eps_phi, gamma_) -> float:
    """ℓ_T(λ on Φp_f) ≤ τ_Φ(B) + B√(2ε_Φ/γ) for a softmax LM p_f = softmax(Φᵀθ_s), with
    ε_Φ = E_{p_L} δ_s (:func:`softmax_excess`); the same with γ_Φ in place of γ.

    Per-context lemma, v = Φᵀλ, ‖v‖_∞ ≤ B: ⟨v, p_θ − p*⟩² ≤ 2B² δ_s.  The minimiser θ* matches moments,
    Φp_θ* = Φp*, so ⟨v, p_θ − p*⟩ = ⟨v, p_θ − p_θ*⟩ and δ_s = KL(p_θ* ‖ p_θ); then Pinsker.  (With zeros
    in p*, θ* may lie at infinity: take a limit of the family.)  Then Lipschitz, Jensen, γ as for
    :func:`bound_any_lm`; with γ_Φ: E_{p_T}|λᵀΔ| ≤ √(λᵀΣ_{p_T}λ) ≤ √(λᵀΣ_{p_L}λ/γ_Φ) ≤ B√(2ε_Φ/γ_Φ)."""
    return check_finite("tau", tau_phi) + _slack(B, eps_phi, gamma_)


def bound_quad(tau2, B2, eps_quad, gamma_) -> float:
    """ℓ_T(u on f) ≤ τ⁽²⁾_Φ(B₂) + B₂√(2ε_quad/γ) with u = Φv, v = Φᵀλ the τ⁽²⁾-optimal direction.

    ⟨v, p*_s⟩ = λᵀΦp*_s = λᵀΦΦᵀf*(s) = ⟨v, Φᵀf*(s)⟩, so the score on f differs by ⟨v, Φᵀ(f − f*)⟩,
    at most ‖v‖₂‖Φᵀ(f − f*)‖₂ = B₂√(2q_s) with q_s the Quad excess; then Jensen and γ."""
    return check_finite("tau", tau2) + _slack(B2, eps_quad, gamma_)


def bound_well_specified(tau, B, eps, gamma_, residual=0.0) -> float:
    """ℓ_T(v on p_f) ≤ τ(B) + r·B√(2ε/γ) + B²ε/(4γ), r = ‖σ(z) − q‖_{L²(p_T)} the residual of the τ-optimal
    classifier's scores z_s = ⟨v, p*_s⟩ + b against the labels q_s = P(y = +1 | s); for well-specified
    logistic labels (q = σ(z) on supp p_T) r = 0 and the bound is τ(B) + B²ε/(4γ), second order in √ε.

    Derived here, not stated in the paper.  Taylor in z with ℓ″ ≤ ¼: E_y ℓ(z + Δ) ≤ E_y ℓ(z) +
    (σ(z) − q)Δ + Δ²/8.  First-order term: Cauchy–Schwarz, E_T|r_sΔ_s| ≤ r √(E_T Δ²); second: Δ_s =
    ⟨v, p_f − p*⟩, |Δ_s| ≤ B‖p_f − p*‖₁ = 2B·TV, (2·TV)² ≤ 2 KL, so E_T Δ² ≤ 2B² E_T KL ≤ 2B²ε/γ.
    The assumption (r = 0) is not assumed: r is measured on each task and enters the bound, so the
    form holds for every task and reduces to B²ε/(4γ) exactly where the labels are well specified."""
    s = _slack(B, eps, gamma_)
    r = check_non_negative("residual", residual, finite=True)  # ≤ 1 by construction; ∞·0 read NaN
    return check_finite("tau", tau) + (r * s if r > 0 else 0.0) + s * s / 8.0


DEFAULT_FORMS: dict[str, Callable] = {"any-lm": bound_any_lm, "well-specified": bound_well_specified,
                                      "softmax": bound_softmax, "softmax-gamma-phi": bound_softmax,
                                      "quad": bound_quad}
#: the forms that take the classifier's label residual r as a keyword argument ``residual``.
RESIDUAL_FORMS = ("well-specified",)
#: the loss of the all-zero classifier, which lies in every ball: a bound ≥ log 2 at every B says nothing
#: about (b), the best classifier in the ball.  It says something about (a): see :func:`loss_ceiling`.
LOG2 = math.log(2.0)


def loss_ceiling(v, b, pos, neg) -> np.ndarray:
    """The largest loss the fixed classifiers z = ⟨v_i, x⟩ + b_i (``v (G, V)``, ``b (G,)``) can score on
    features x that are laws (rows of Δ_V), ``(G,)``: the (a) loss of the worst LM.  z ranges over
    [min v + b, max v + b] and each context's loss is convex in z, so the maximum is at an end:
    Σ_s max(ℓ_s(min v + b), ℓ_s(max v + b)), attained by the LM that puts each context's mass on one word.
    It is ≥ log 2 whenever [min v + b, max v + b] holds 0 (each ℓ_s(0) is p_T(s)·log 2), and grows with B:
    that is how (a) can violate a bound ≥ log 2."""
    v, b = np.atleast_2d(check_real_array("v", v)), np.atleast_1d(check_real_array("b", b))
    if v.ndim != 2 or b.shape != (v.shape[0],):
        raise ShapeError(f"v, b: expected classifiers v (G, V) and biases b (G,), got {v.shape} and {b.shape}")
    pos, neg = (a[:, None] for a in _label_weights(pos, neg))
    ends = [v.min(1) + b, v.max(1) + b]
    return np.maximum(*(pos * np.logaddexp(0.0, -z) + neg * np.logaddexp(0.0, z) for z in ends)).sum(0)


def _label_weights(pos, neg) -> tuple[np.ndarray, np.ndarray]:
    """``pos, neg (S,)``, the label weights p_T(s)·P(y = ±1 | s), checked: real, finite, ≥ 0, one shape."""
    pos, neg = check_real_array("pos", pos), check_real_array("neg", neg)
    if pos.ndim != 1 or pos.shape != neg.shape:
        raise ShapeError(f"pos, neg: expected label weights of one shape (S,), got {pos.shape} and {neg.shape}")
    if np.any(pos < 0) or np.any(neg < 0):
        raise ConfigError("pos, neg: expected non-negative label weights")
    return pos, neg


def best_loss_ceiling(pos, neg, B, constraint: str, basis=None) -> np.ndarray:
    """The largest loss (b), the best classifier in the ball, any LM can give at radius ``B`` (scalar or
    ``(G,)``): every ball holds the constant scores z of the bias alone (|b| ≤ B), and on laws under the box —
    or under ``"span-box"`` where the all-ones vector lies in the span of ``basis (V, r)`` (orthonormal
    columns; the softmax bounds' range(Φᵀ), which a full-rank Φ spans) — also v = c·1 (⟨v, p⟩ = c for every
    law p), so |z| ≤ 2B; (b) is at most the task's loss at the best such constant,
    min_{|z| ≤ z_max} π₊ log(1 + e^{−z}) + π₋ log(1 + e^{z}) (π± = Σ_s pos_s, neg_s).  On laws an LM whose law
    is the same after every context reaches it under the box and where 1 ∈ span(basis); under the span-box
    otherwise only if some law is orthogonal to the span (else a classifier of the span scores every law above
    0 and that LM's (b) is lower): there it is an upper bound, never too low, perhaps not reached (a review,
    2026-12-06: the shipped natural-tasks worlds' Φ (4, 6) span neither).  Below log 2 wherever π₊ ≠ π₋ (the
    entropy of the labels for large B): a bound between it and log 2 is one no LM can make (b) fail.  (Until
    2026-12-06 the span-box took |z| ≤ B alone, a ceiling one radius too high where 1 ∈ span(basis): rows no
    LM could fail went unflagged — a review.)"""
    if not isinstance(constraint, str) or constraint not in CONSTRAINTS:
        raise ConfigError(f"constraint: expected one of {CONSTRAINTS}, got {constraint!r}")
    radii = check_real_array("B", B)
    if np.any(radii <= 0):
        raise ConfigError(f"B: expected positive finite radii, got {B!r}")
    pos, neg = _label_weights(pos, neg)
    if not pos.sum() + neg.sum() > 0:
        raise ConfigError("pos, neg: expected non-negative label weights with a positive total")
    p, n = float(np.sum(pos)), float(np.sum(neg))
    z_max = (2.0 if constraint == "box" or (constraint == "span-box" and _spans_ones(basis)) else 1.0) * radii
    z = np.clip(np.log(p / n) if p > 0 and n > 0 else (np.inf if p > 0 else -np.inf), -z_max, z_max)
    return p * np.logaddexp(0.0, -z) + n * np.logaddexp(0.0, z)


def _spans_ones(basis) -> bool:
    """Whether the all-ones vector lies in the span of ``basis (V, r)`` (orthonormal columns; None: no span),
    to 1e-9 of its norm."""
    if basis is None:
        return False
    U = check_real_array("basis", basis)
    ones = np.ones(U.shape[0])
    return bool(np.linalg.norm(ones - U @ (U.T @ ones)) <= 1e-9 * np.sqrt(U.shape[0]))


def label_residual(P, task, sol) -> np.ndarray:
    """r(B) = ‖σ(z) − q‖_{L²(p_T)} at every radius of ``sol`` (τ's solutions): the τ-optimal classifier's scores
    z_s = ⟨v, P_s⟩ + b on the features ``P (S, V)`` against the labels q_s = P(y = +1 | s), ``(G,)`` — the
    residual the well-specified bound (:func:`bound_well_specified`) reads."""
    return np.sqrt(task.weights @ (expit(P @ sol.v.T + sol.b) - task.label_probs[:, None]) ** 2)


def tau_slope(P, pos, neg, constraint: str = "box", basis=None) -> float:
    """c = −τ′(0⁺) = ½ max_{(v, b) ∈ C_1} (⟨m, v⟩ + m₀b), m = Σ_s (a_s − c_s) p*_s, m₀ = Σ_s (a_s − c_s):
    the gradient of the task loss at (v, b) = 0 is −½(m, m₀).  Box: ½(‖m‖₁ + |m₀|); span-ball:
    ½(‖Uᵀm‖₂ + |m₀|); span-box: a linear program.  c ≤ 1 for the box (|⟨v, p*⟩| ≤ ‖v‖_∞)."""
    if not isinstance(constraint, str) or constraint not in CONSTRAINTS:
        raise ConfigError(f"constraint: expected one of {CONSTRAINTS}, got {constraint!r}")
    if constraint != "box" and basis is None:
        raise ConfigError(f"basis: the {constraint!r} constraint needs the orthonormal basis U of range(Φ)")
    P, (pos, neg) = check_real_array("P", P), _label_weights(pos, neg)
    if P.ndim != 2 or P.shape[0] != pos.shape[0]:
        raise ShapeError(f"P: expected one law per context, shape ({pos.shape[0]}, V), got {P.shape}")
    m, m0 = (pos - neg) @ P, float(np.sum(pos - neg))
    if constraint == "box":
        top = np.abs(m).sum()
    elif constraint == "span-ball":
        top = np.linalg.norm(np.asarray(basis).T @ m)
    else:
        U = np.asarray(basis, np.float64)
        lp = linprog(-(U.T @ m), A_ub=np.vstack([U, -U]), b_ub=np.ones(2 * len(U)),
                     bounds=[(None, None)] * U.shape[1], method="highs")
        top = -lp.fun if lp.status == 0 else np.abs(m).sum()  # ‖m‖₁ ≥ the LP's value: an upper bound
    return 0.5 * float(top + abs(m0))


def critical_epsilon(contexts, task: NaturalTask, *, gamma_=None, Phi=None, norm: str = "inf") -> float:
    """ε_c = γc²/2 with c = −τ′(0⁺) (:func:`tau_slope`): for ε ≥ ε_c a bound τ(B) + B√(2ε/γ) is ≥ log 2
    at every B ≥ 0, so no LM can make (b), the best classifier in the ball, violate it (the all-zero
    classifier scores log 2).  (a), the τ-optimal classifier transferred, still can: its loss on an LM's
    laws reaches :func:`loss_ceiling`, ≥ log 2 wherever its scores can take both signs.  Proof: τ is convex
    in B (a mixture of feasible points is feasible for the mixed radius) with τ(0) = log 2, so τ(B) ≥
    log 2 − cB and the bound is ≥ log 2 + B(√(2ε/γ) − c).  Below ε_c the bound dips under log 2 at small
    enough B.  ``gamma_`` defaults to γ(p_T); ``Phi``/``norm`` as for :func:`tau`.  Derived here."""
    P = check_contexts(contexts).next_token_probs
    check_task_on(task, contexts)
    g = gamma(_p_L(contexts), task.weights) if gamma_ is None else check_non_negative("gamma_", gamma_)
    # checked as tau checks it: any other norm was read as the 2-norm ("1", 2, "Inf"), '2' without Phi as the box
    kind, basis = _constraint(norm, Phi, P.shape[1])
    return 0.5 * g * tau_slope(P, task.pos, task.neg, kind, basis) ** 2


# ---- the check ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class TransferBound:
    """One bound over the B grid: ``tau``, ``tau_gap`` (solver certificate: τ ≥ tau − tau_gap),
    ``bound``; measured on the LM's features: ``loss_natural`` (a: the τ-optimal classifier
    transferred), ``loss_best`` (b: best in the same ball; its solver certificate ``loss_best_gap``: the
    ball's minimum ≥ loss_best − loss_best_gap, as for τ), their 0-1 errors; the ridge ``probe_*`` (c);
    ``B``/``value`` at the grid's minimum ``index``; ``holds`` = (a) and (b) ≤ bound + atol at every B.
    How much the check says: ``residual (G,)`` = ‖σ(z) − q‖_{L²(p_T)} of the τ-optimal classifier on p*
    (0: well-specified labels); ``critical_eps`` = γc²/2 (:func:`critical_epsilon`, with this bound's
    γ and constraint; NaN for the residual forms, whose threshold has no closed form); ``loss_ceiling (G,)``
    = the largest (a) any LM can give (:func:`loss_ceiling`; +inf on unbounded Quad features);
    ``loss_best_ceiling (G,)`` = the largest (b) any LM can give (:func:`best_loss_ceiling`, ≤ log 2);
    ``trivial`` = bound ≥ loss_ceiling − atol at every B of the grid: no LM can violate it (by more than the
    atol ``holds`` allows), as (a) ≤ the ceiling and (b) ≤ (a) (the best-in-ball solve starts from the
    τ-optimal classifier and never ends above it; a bound equal to the ceiling but summed in another order
    read 1 ulp below it, non-trivial); ``trivial_best`` = bound ≥ log 2 − atol at every B: (b) alone cannot
    violate it (the all-zero classifier, in
    every ball, scores log 2) — ε ≥ ``critical_eps`` gives this, not ``trivial``; ``slack_used`` =
    (loss (a) − τ)/(bound − τ) at ``index``, NaN where bound − τ ≤ atol (no slack beyond rounding)."""

    name: str
    features: str
    constraint: str
    eps: float
    gamma: float
    B_grid: np.ndarray
    tau: np.ndarray
    tau_gap: np.ndarray
    bound: np.ndarray
    loss_natural: np.ndarray
    loss_best: np.ndarray
    loss_best_gap: np.ndarray
    error_natural: np.ndarray
    error_best: np.ndarray
    probe_loss: float
    probe_error: float
    index: int
    B: float
    value: float
    holds: bool
    residual: np.ndarray
    critical_eps: float
    loss_ceiling: np.ndarray
    loss_best_ceiling: np.ndarray
    trivial: bool
    trivial_best: bool
    slack_used: float

    def worst_index(self, atol: float = 0.0) -> int:
        """The grid radius where this bound comes nearest to failing (``holds`` is its verdict at every radius;
        the rows at B* and B_tau see two of them): where (a) or (b) is NaN or exceeds the bound most by more
        than ``atol``; else where (a) uses the largest share of the slack bound − τ (radii with slack > ``atol``);
        else (no slack beyond rounding anywhere) ``index``."""
        top = np.maximum(self.loss_natural, self.loss_best)
        if np.isnan(top).any():
            return int(np.flatnonzero(np.isnan(top))[0])
        with np.errstate(invalid="ignore"):  # +inf against a bound of +inf holds (not NaN)
            over = np.where(top == self.bound, 0.0, top - self.bound)
        if over.max() > atol:
            return int(np.argmax(over))
        slack = self.bound - self.tau
        room = (slack > atol) & np.isfinite(slack)
        if not room.any():
            return self.index
        return int(np.argmax(np.where(room, (self.loss_natural - self.tau) / np.where(room, slack, 1.0), -np.inf)))

    def worst(self, atol: float = 0.0) -> dict:
        """The radius of :meth:`worst_index` as numbers: ``B``, ``tau``, ``bound``, ``residual``, and the loss
        that comes nearer the bound there — ``loss_name`` "loss_natural" (a), or "loss_best" where (b) is NaN
        or above (a) — with its value ``loss`` and ``ceiling`` (the most any LM can make it)."""
        j = self.worst_index(atol)
        best = bool(np.isnan(self.loss_best[j]) or self.loss_best[j] > self.loss_natural[j])
        loss, ceiling = ((self.loss_best[j], self.loss_best_ceiling[j]) if best
                         else (self.loss_natural[j], self.loss_ceiling[j]))
        return {"B": float(self.B_grid[j]), "tau": float(self.tau[j]), "bound": float(self.bound[j]),
                "residual": float(self.residual[j]), "loss_name": "loss_best" if best else "loss_natural",
                "loss": float(loss), "ceiling": float(ceiling)}


@dataclasses.dataclass(frozen=True, eq=False)
class NaturalTaskCheck:
    """Every quantity (nats) and bound of :func:`check_natural_task`; ``eps_best``/``eps_phi``/
    ``gamma_phi`` are NaN without a softmax LM, ``eps_quad`` without features; ``skipped`` says why."""

    n_contexts: int
    eps: float
    eps_best: float
    eps_phi: float
    eps_quad: float
    gamma: float
    gamma_phi: float
    positive_rate: float
    bounds: tuple
    skipped: tuple
    atol: float
    holds: bool

    def bound(self, name: str) -> TransferBound:
        """The bound called ``name``."""
        match = [b for b in self.bounds if b.name == name]
        if match:
            return match[0]
        raise ConfigError(f"name: no bound {name!r} here; have {[b.name for b in self.bounds]}")


def _grid(name, values) -> np.ndarray:
    raw = B_GRID if values is None else values
    g = np.atleast_1d(check_real_array(name, raw))
    if isinstance(raw, (bool, np.bool_)) or np.asarray(raw).dtype == bool or g.ndim != 1 or not g.size \
            or np.any(g <= 0):
        raise ConfigError(f"{name}: expected a non-empty 1-d grid of positive finite radii, got {values!r}")
    return g


def check_phi(phi, V: int, name: str = "Phi") -> np.ndarray:
    """``phi`` as word embeddings ``(d, V)``, float64, else a typed error naming ``name``."""
    phi = check_real_array(name, phi)
    if phi.ndim != 2 or phi.shape[1] != V or phi.shape[0] == 0:
        raise ShapeError(f"{name}: expected word embeddings of shape (d, {V}), got {phi.shape}")
    return phi


def _row_basis(phi) -> np.ndarray:
    U, s, _ = np.linalg.svd(phi.T, full_matrices=False)
    return U[:, s > 1e-10 * s[0]]


def _tau(P, task, Bs, constraint, basis, cache):
    """τ(B) at every radius (the LM-free natural-task solve), looked up in ``cache`` when one is given:
    the key is a digest of every array the solution depends on, so a hit is always the same problem."""
    if cache is None:
        return constrained_logistic(P, task.pos, task.neg, Bs, constraint, basis=basis)
    h = hashlib.sha256(constraint.encode())
    for a in (P, task.pos, task.neg, Bs, np.zeros(0) if basis is None else basis):
        a = np.ascontiguousarray(a, np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    key = h.hexdigest()
    if key not in cache:
        cache[key] = constrained_logistic(P, task.pos, task.neg, Bs, constraint, basis=basis)
    return cache[key]


def _transfer(variants, features, task, P, lm_x, probe_x, constraint, basis, Bs, l2, atol, cache, *,
              simplex: bool) -> list:
    """The bounds ``variants`` = [(name, form, ε, γ)] sharing one constraint and one set of features;
    ``simplex``: the rows of ``lm_x`` are the LM's laws, so (a) is at most :func:`loss_ceiling`
    (otherwise, as for Quad features f, it is unbounded)."""
    pos, neg = task.pos, task.neg
    nat = _tau(P, task, Bs, constraint, basis, cache)
    best = constrained_logistic(lm_x, pos, neg, Bs, constraint, basis=basis, init=(nat.v, nat.b))
    zero = logistic_loss(np.zeros(len(pos)), pos, neg)  # in every ball: (b) ≤ log 2 whatever the solver did
    if np.any(worse := best.loss > zero):  # the all-zero classifier, with its own certificate
        gap = [frank_wolfe_gap(lm_x, pos, neg, np.zeros(lm_x.shape[1]), 0.0, B, constraint,
                               np.eye(lm_x.shape[1]) if basis is None else basis) if w else g
               for w, g, B in zip(worse, best.gap, Bs)]
        best = LogisticSolution(np.where(worse[:, None], 0.0, best.v), np.where(worse, 0.0, best.b),
                                np.minimum(best.loss, zero), np.asarray(gap))
    za, zb = lm_x @ nat.v.T + nat.b, lm_x @ best.v.T + best.b
    la = np.array([logistic_loss(za[:, i], pos, neg) for i in range(len(Bs))])
    ea = np.array([zero_one_error(za[:, i], pos, neg) for i in range(len(Bs))])
    eb = np.array([zero_one_error(zb[:, i], pos, neg) for i in range(len(Bs))])
    w, b = ridge_logistic(probe_x, pos, neg, l2)
    probe = (logistic_loss(probe_x @ w + b, pos, neg), zero_one_error(probe_x @ w + b, pos, neg))
    residual = label_residual(P, task, nat)
    slope = tau_slope(P, pos, neg, constraint, basis)
    ceiling = loss_ceiling(nat.v, nat.b, pos, neg) if simplex else np.full(len(Bs), math.inf)
    best_ceiling = best_loss_ceiling(pos, neg, Bs, constraint, basis)
    out = []
    for name, form, eps, gamma_ in variants:
        bound = np.array([_bound_value(name, form, t, B, eps, gamma_, **({"residual": r} if name in RESIDUAL_FORMS
                                                                          else {}))
                          for t, B, r in zip(nat.loss, Bs, residual)])
        i = int(np.argmin(bound))
        holds = bool(np.all(la <= bound + atol) and np.all(best.loss <= bound + atol))
        slack = bound[i] - nat.loss[i]
        used = float((la[i] - nat.loss[i]) / slack) if atol < slack < math.inf else math.nan
        trivial, trivial_best = bool(np.all(bound >= ceiling - atol)), bool(np.all(bound >= LOG2 - atol))
        out.append(TransferBound(name, features, constraint, eps, gamma_, Bs, nat.loss, nat.gap, bound, la,
                                 best.loss, best.gap, ea, eb, *probe, i, float(Bs[i]), float(bound[i]), holds, residual,
                                 math.nan if name in RESIDUAL_FORMS else 0.5 * gamma_ * slope**2, ceiling,
                                 best_ceiling, trivial, trivial_best, used))
    return out


def _bound_value(name, form, tau_, B, eps, gamma_, **extra) -> float:
    """``form(τ, B, ε, γ, **extra)`` as a float; a replacement form that returns NaN or a non-number is
    refused."""
    value = form(tau_, B, eps, gamma_, **extra)
    try:
        ok = not isinstance(value, (bool, np.bool_)) and not math.isnan(value := float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"forms: the bound {name!r} returned {value!r} at B = {B:g}; a bound must be a real "
                          "number (+inf allowed)")
    return value


def _check_forms(forms) -> dict:
    if forms is None:
        return dict(DEFAULT_FORMS)
    if not isinstance(forms, Mapping):
        raise ConfigError(f"forms: expected a dict from bound names to functions (τ, B, ε, γ) ↦ bound, "
                          f"got {type(forms).__name__}")
    unknown = [k for k in forms if k not in DEFAULT_FORMS]
    if unknown:
        raise ConfigError(f"forms: unknown bound(s) {unknown}; the bounds are {list(DEFAULT_FORMS)}")
    if bad := [k for k, f in forms.items() if not callable(f)]:
        raise ConfigError(f"forms: {bad} are not functions (τ, B, ε, γ) ↦ bound")
    return {**DEFAULT_FORMS, **forms}


def check_natural_task(world_or_contexts, lm, task: NaturalTask, *, Phi=None, features=None, B_grid=None,
                       B2_grid=None, l2: float = 1e-4, atol: float = ATOL, forms=None,
                       tau_cache: dict | None = None) -> NaturalTaskCheck:
    """Compute ε, γ, and the bounds that apply, with the losses measured on the LM's features:

    - ``any-lm`` (always): features p_f(s), ‖v‖_∞ ≤ B; ``well-specified`` (always) the second-order
      form on the same classifier (:func:`bound_well_specified`, with its measured label residual);
    - ``softmax`` and ``softmax-gamma-phi`` (``lm`` a :class:`SoftmaxContextLM`; Φ = its ``phi``):
      features Φp_f(s), v = Φᵀλ, ‖v‖_∞ ≤ B, with γ and with γ_Φ;
    - ``quad`` (Quad features f ``(S, d)``: ``features``, or the θ of a SoftmaxContextLM; Φ from
      ``Phi`` or the LM): features f(s), v = Φᵀλ, ‖v‖₂ ≤ B₂ (``B2_grid``).  It holds for any f.

    (a), (b) are measured at every B; (c) is a ridge (``l2``) logistic probe on the same features.
    ``atol`` absorbs float64 rounding.  ``forms`` maps bound names to replacement functions
    (τ, B, ε, γ) ↦ bound (those in :data:`RESIDUAL_FORMS` also get ``residual=r``).  τ depends on the task, the contexts and Φ but not on the LM: pass the same dict
    as ``tau_cache`` to checks of many LMs on one task and each τ is solved once."""
    contexts = world_or_contexts
    if not isinstance(contexts, ContextSet):
        if not (hasattr(contexts, "n_symbols") and hasattr(contexts, "log_likelihood")):
            raise ConfigError(f"world_or_contexts: expected a world (HMM, MemoryHMM, LogLinearWorld) or the "
                              f"ContextSet of enumerate_contexts, got {type(contexts).__name__}")
        contexts = enumerate_contexts(world_or_contexts, check_task_on(task).max_length)
    P = contexts.next_token_probs
    S, V = P.shape
    check_task_on(task, contexts)
    Bs, B2s = _grid("B_grid", B_grid), _grid("B2_grid", B2_grid)
    l2, atol = check_positive("l2", l2), check_non_negative("atol", atol, finite=True)
    forms = _check_forms(forms)
    if tau_cache is not None and not isinstance(tau_cache, MutableMapping):
        raise ConfigError(f"tau_cache: expected None or a dict, got {type(tau_cache).__name__}")
    Phi = None if Phi is None else check_phi(Phi, V)
    features = None if features is None else check_real_array("features", features)
    laws, p_L = lm_laws(lm, contexts), _p_L(contexts)
    eps = lm_epsilon(contexts, laws)
    g = gamma(p_L, task.weights)
    if isinstance(lm, SoftmaxContextLM):
        if Phi is not None and (np.shape(Phi) != lm.phi.shape or not np.allclose(Phi, lm.phi, rtol=1e-6)):
            raise ConfigError("Phi: differs from the SoftmaxContextLM's phi, the Φ its laws are built on")
        Phi = lm.phi
        features = lm.theta if features is None else features
    eps_best = eps_phi = eps_quad = g_phi = float("nan")
    skipped = []
    bounds = _transfer([(n, forms[n], eps, g) for n in ("any-lm", "well-specified")], "p_f", task, P, laws, laws,
                       "box", None, Bs, l2, atol, tau_cache, simplex=True)
    if isinstance(lm, SoftmaxContextLM):
        phi = np.asarray(Phi, np.float64)
        eps_phi = float(p_L @ softmax_excess(lm.theta, phi, P))
        eps_best = eps - eps_phi
        g_phi = gamma_phi(p_L, task.weights, (laws - P) @ phi.T)
        variants = [(n, forms[n], eps_phi, gm) for n, gm in (("softmax", g), ("softmax-gamma-phi", g_phi))]
        bounds += _transfer(variants, "Φp_f", task, P, laws, laws @ phi.T, "span-box", _row_basis(phi), Bs, l2, atol,
                            tau_cache, simplex=True)  # v = Φᵀλ scores the laws: (a) is bounded as for p_f
    else:
        skipped.append(("softmax", "lm is not a SoftmaxContextLM (θ, Φ)"))
    if features is not None and Phi is not None:
        phi, f = np.asarray(Phi, np.float64), np.asarray(features, np.float64)
        if phi.ndim != 2 or phi.shape[1] != V or f.shape != (S, phi.shape[0]):
            raise ShapeError(f"features: expected f of shape ({S}, d) with Phi (d, {V}), got {f.shape}, {phi.shape}")
        eps_quad = quad_epsilon(contexts, f, phi)
        bounds += _transfer([("quad", forms["quad"], eps_quad, g)], "f", task, P, f @ phi, f, "span-ball",
                            _row_basis(phi), B2s, l2, atol, tau_cache, simplex=False)
    else:
        skipped.append(("quad", "no Quad features f with their Φ (pass features= and Phi=)"))
    return NaturalTaskCheck(S, eps, eps_best, eps_phi, eps_quad, g, g_phi, float(task.pos.sum()), tuple(bounds),
                            tuple(skipped), atol, all(b.holds for b in bounds))


__all__ = ["ATOL", "NaturalTask", "natural_task", "random_natural_task", "indicative_task", "bound_well_specified",
           "label_residual",
           "RESIDUAL_FORMS", "LOG2", "loss_ceiling", "best_loss_ceiling", "tau_slope", "critical_epsilon", "check_phi",
           "check_contexts", "check_task_on", "lm_laws",
           "lm_epsilon", "softmax_excess", "quad_epsilon", "gamma", "gamma_phi", "tau", "LogisticSolution",
           "bound_any_lm", "bound_softmax", "bound_quad", "DEFAULT_FORMS", "TransferBound", "NaturalTaskCheck",
           "check_natural_task", "B_GRID"]
