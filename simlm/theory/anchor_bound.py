"""The O(√ε) transfer bound on the anchored head of :mod:`simlm.theory.anchors` (Wu, Lee & Ge, NeurIPS
2023), derived here (the paper's theorem text is not available): with TV(x) = ½‖p(·|x) − p*(·|x)‖₁,
γ ≤ p*(A|x) for every task word and the bulk, and TV(x) ≤ γ/2, the mean value theorem gives
|log p(A|x) − log p*(A|x)| ≤ TV(x)/(γ − TV(x)) ≤ 2 TV(x)/γ.  Through the score identity the head's score
moves by Δ(x) ≤ 4‖c‖₁ TV(x)/γ + |Σc| ρ, ρ = max_x |r_LM(x) − r*(x)| (anchor residuals), and a context
with margin ≥ m is misclassified only if TV(x) ≥ t(m) = min(γ/2, γ(m − |Σc|ρ)/(4‖c‖₁)).  Hence

    err ≤ P(margin < m) + P(TV(x) ≥ t(m)) ≤ P(margin < m) + min(ε/(2 t(m)²), 1),

the last by Markov over contexts on KL (Pinsker: TV(x) ≥ t implies KL(x) ≥ 2t², and P(KL ≥ 2t²) ≤ ε/(2t²)).
Markov on TV instead (Pinsker and Jensen: E TV ≤ √(ε/2)) gives √(ε/2)/t, whose square that is, so it is
never the smaller of the two below 1 and is not used.  ``"markov"`` is that form, from ε alone;
``"per-context"`` keeps the exact P(TV(x) ≥ t(m)).
Each tail is a small replaceable function (:data:`FORMS`).

How tight (measured with the worst LM of :func:`simlm.theory.anchor_constructions.worst_case_lm`, whose
docstring derives the limits): the per-context form is reached exactly by any LM that touches only the
contexts it flips (at m = the smallest margin its tail counts them all), so it is the threshold t(m) that
says how tight the constant is.  The factor 2 for the task words and the bulk is attained; the factor 2 of
TV/(γ − TV) ≤ 2TV/γ is not at small TV, where no LM flips a margin m with less than ≈ 2t(m) — a
bound with half the constant is violated by the worst LM of a tight world, one with the constant 4 is
not.  The markov form adds Markov's and Pinsker's inequalities: in the tight world the Markov term alone
is used to ≈ γ/2 (0.24 at γ = 0.48): (t/TV)² ≈ ¼ times Pinsker's 2TV²/KL ≈ 2γ for mass moved between two
words of mass γ.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from simlm.checks import check_non_negative, check_real_array
from simlm.errors import ConfigError, ShapeError
from simlm.metrics.epsilon import kl_float64, tv_per_sequence
from simlm.theory.anchors import (AnchorContexts, AnchorTask, check_bulk, check_lm_laws, check_shaped, check_task,
                                  log_bulk_partition)


def context_divergences(logp_star, logp_lm) -> tuple[np.ndarray, np.ndarray]:
    """KL(p*(·|x) ‖ p(·|x)) and TV(x), each ``(n,)``, in float64 (N2's ε is ~1e-9): the metrics'
    :func:`~simlm.metrics.epsilon.kl_float64` and ``tv_per_sequence``, one position per row.  Both arguments
    must be rows of probability laws (:func:`~simlm.theory.anchors.check_lm_laws`).  ``kl_float64`` keeps a
    move of rare words only (p* below ~1e-16) that shifts the other words' log p below their last bit: the
    plain Σ p*(log p* − log p) read N2's ε twice its value on a carrier gap of 40."""
    star = check_real_array("logp_star", logp_star)
    if star.ndim != 2:
        raise ShapeError(f"logp_star: expected (n, V), got {star.shape}")
    lm = check_shaped("logp_lm", logp_lm, star.shape)  # both shapes before either's laws are checked (compiles)
    star = check_lm_laws("logp_star", star, star.shape)
    a, b = star[:, None], check_lm_laws("logp_lm", lm, star.shape)[:, None]
    with jax.enable_x64(True):
        return kl_float64(a, b), np.asarray(tv_per_sequence(a, b), np.float64)


def markov_tail(t, eps, tv=None, weights=None) -> float:
    """P(TV(x) ≥ t) ≤ min(ε/(2t²), 1), Markov on KL (Pinsker); Markov on TV's √(ε/2)/t is this bound's
    square root, so never the smaller below 1.  1 (no information) at t ≤ 0 (t = −0.1 gave 0.5 of a
    certain event) and wherever the quotient overflows (t below ~1e-154 when γ, the floor, is tiny).
    ``eps`` must be finite and ≥ 0 (a ConfigError names it: −1 gave a tail of −50)."""
    eps = check_non_negative("eps", eps, finite=True)
    if not (t > 0 and t * t > 0):  # t ≤ 0 (TV ≥ t always), or t² below the floats
        return 1.0
    with np.errstate(over="ignore"):  # a quotient past the floats is +inf: the tail is then 1
        return float(min(eps / (2 * t * t), 1.0))


def per_context_tail(t, eps, tv, weights) -> float:
    """P_π(TV(x) ≥ t), exactly: ``tv (n,)`` the contexts' TVs in [0, 1], ``weights (n,)`` their π (any weights
    ≥ 0, summed as given: a tail of weights that sum past 1 can pass 1), ``t``
    a real threshold (a typed error names the argument: a negative weight gave a "probability" of −1, a NaN TV
    or t read as TV < t).  ``eps`` is not read (the tail is of the TVs themselves)."""
    t = check_real_array("t", t)
    tv, weights = check_real_array("tv", tv), check_real_array("weights", weights)
    if t.ndim or tv.ndim != 1 or weights.shape != tv.shape:
        raise ShapeError(f"t, tv, weights: expected a number and two arrays of one shape (n,), got {t.shape}, "
                         f"{tv.shape} and {weights.shape}")
    out = (tv < -TV_ROUNDING) | (tv > 1 + TV_ROUNDING)  # a TV summed in floats may pass 1 by its rounding
    if out.any() or (weights < 0).any():
        bad = "tv" if out.any() else "weights"
        raise ConfigError(f"{bad}: expected {'TVs in [0, 1]' if bad == 'tv' else 'weights ≥ 0'}")
    return _tail_mass(t, eps, tv, weights)


def _tail_mass(t, eps, tv, weights) -> float:
    """:func:`per_context_tail` on checked arguments."""
    return float(weights @ (tv >= t))


#: how far outside [0, 1] :func:`per_context_tail` takes a TV as rounding
TV_ROUNDING = 1e-9

FORMS = {"markov": markov_tail, "per-context": per_context_tail}


@dataclasses.dataclass(frozen=True, eq=False)
class TransferBound:
    """err ≤ ``bound`` = P(margin < m) + tail(t(m)) at the best ``m``; with ``gamma`` γ, ``c1`` ‖c‖₁,
    ``csum`` |Σc|, ``rho`` ρ, ``eps`` ε, ``form``; ``trivial`` when the bound is ≥ 1 (any error satisfies it)."""

    bound: float
    m: float
    gamma: float
    c1: float
    csum: float
    rho: float
    eps: float
    form: str
    trivial: bool


def task_gamma(task: AnchorTask, ctx: AnchorContexts, bulk) -> float:
    """γ = min_x min(min_{w∈S} p*(w|x), p*(B(x)|x)): the probability floor of the task words and the bulk,
    over the contexts x of weight > 0 (the error and ε see no other; a context of weight 0 with p*(w|x) ≈ 1e-6
    set γ and made a bound of 0.0012 read 1.0, trivial, a review 2026-12-06)."""
    on = ctx.weights > 0
    words = np.exp(ctx.logp[on][:, task.words]).min()
    bulk_mass = np.exp(log_bulk_partition(ctx.logp, check_bulk(bulk, ctx.logp.shape)))[on]
    return float(min(words, bulk_mass.min()))


def transfer_bound(task: AnchorTask, ctx: AnchorContexts, bulk, logp_lm, rho: float | None = None, *,
                   form: str = "markov", forms=None, residual_lm=None, residual_star=None) -> TransferBound:
    """The O(√ε) bound of the module docstring on :func:`head_errors`' ``error``, minimised over m on the
    margins.  ``forms`` maps a form name to ``tail(t, eps, tv, weights)`` (default :data:`FORMS`).

    ρ must cover the anchor residuals the head is read with: give ``residual_lm`` and ``residual_star``
    (those passed to :func:`head_errors`) and ρ = max_x |r_LM(x) − r*(x)| over the contexts of weight > 0 is
    computed from them, or checked
    — a ``rho`` below it is refused (ρ = 0 with r_LM ≠ r* gave a bound under the head's error).  A ``rho``
    alone is taken as given: the caller vouches that it covers the residuals.

    An m whose events cover every context (P(margin < m) alone, or with the per-context tail's TV ≥ t) gives
    a bound ≥ 1 however its float sum rounds (1 − 1e-16 over 30 contexts of weight 1/30 read as a bound
    below 1, and the row as not trivial): it is skipped, so such a bound is 1.0 and ``trivial``.  The bound at
    the best m is summed exactly (``math.fsum``, as :func:`head_errors` sums the error): a float dot product
    read an ulp below an error it equals, and its row "violated" (a review 2026-12-06)."""
    forms = FORMS if forms is None else forms
    if form not in forms:
        raise ConfigError(f"form: expected one of {sorted(forms)}, got {form!r}")
    task = check_task(task, ctx)
    if task.words is None:
        raise ConfigError(f"task: the {task.name!r} task has no words; the bound is on the anchored head")
    w = ctx.weights
    if (residual_lm is None) != (residual_star is None):
        raise ConfigError("residual_lm, residual_star: give both (ρ = max |r_LM − r*| is read from them) or neither")
    if residual_lm is not None:
        gap = check_shaped("residual_lm", residual_lm, w.shape) - check_shaped("residual_star", residual_star, w.shape)
        needed = float(np.abs(gap[w > 0]).max())  # the head's error sees the contexts of weight > 0 alone
        if rho is None:
            rho = needed
        elif check_non_negative("rho", rho, finite=True) < needed:
            raise ConfigError(f"rho: {rho!r} is below max_x |residual_lm − residual_star| = {needed!r}: the bound "
                              "would not cover the anchor part of the head's score")
    elif rho is None:
        raise ConfigError("rho: give rho, or residual_lm and residual_star to compute it from")
    rho = check_non_negative("rho", rho, finite=True)  # a NaN ρ would drop the margin term: a false certificate
    kl, tv = context_divergences(ctx.logp, logp_lm)
    eps = float(w @ kl)
    gamma, c1, csum = task_gamma(task, ctx, bulk), float(np.abs(task.coef).sum()), float(abs(task.coef.sum()))
    exact_tail = forms[form] is per_context_tail  # its tail is P_π of a set of contexts
    # tv of checked laws, w the contexts': per_context_tail's checks at each margin cost the bound 25 %
    tail = _tail_mass if exact_tail else forms[form]
    best, best_m = 1.0, 0.0
    for m in np.unique(np.concatenate([task.margin, task.margin + 1e-12])):
        if m <= csum * rho:
            continue
        t = gamma / 2 if c1 == 0 else min(gamma / 2, gamma * (m - csum * rho) / (4 * c1))
        covered = (task.margin < m) | (tv >= t) if exact_tail else task.margin < m
        if covered[w > 0].all():  # P(…) + P(…) ≥ P_π(every context) = 1; a sum below 1 is rounding
            continue
        value = float(w @ (task.margin < m)) + tail(t, max(eps, 0.0), tv, w)
        if value < best:
            best, best_m, best_t = value, float(m), t
    if best < 1.0:  # the scan's float sums rank the m; the one chosen is summed exactly
        terms = w[tv >= best_t].tolist() if exact_tail else [tail(best_t, max(eps, 0.0), tv, w)]
        best = min(math.fsum(w[task.margin < best_m].tolist() + terms), 1.0)
    return TransferBound(best, best_m, gamma, c1, csum, float(rho), eps, form, best >= 1.0)


__all__ = ["context_divergences", "markov_tail", "per_context_tail", "FORMS", "TransferBound", "task_gamma",
           "transfer_bound"]
