"""The O(√ε) transfer bound on the anchored head of :mod:`simlm.theory.anchors` (Wu, Lee & Ge, NeurIPS
2023), derived here (the paper's theorem text is not available): with TV(x) = ½‖p(·|x) − p*(·|x)‖₁,
γ ≤ p*(A|x) for every task word and the bulk, and TV(x) ≤ γ/2, the mean value theorem gives
|log p(A|x) − log p*(A|x)| ≤ TV(x)/(γ − TV(x)) ≤ 2 TV(x)/γ.  Through the score identity the head's score
moves by Δ(x) ≤ 4‖c‖₁ TV(x)/γ + |Σc| ρ, ρ = max_x |r_LM(x) − r*(x)| (anchor residuals), and a context
with margin ≥ m is misclassified only if TV(x) ≥ t(m) = min(γ/2, γ(m − |Σc|ρ)/(4‖c‖₁)).  Hence

    err ≤ P(margin < m) + P(TV(x) ≥ t(m)) ≤ P(margin < m) + min(√(ε/2)/t(m), ε/(2 t(m)²)),

the last by Markov over contexts on TV (Pinsker and Jensen: E TV ≤ √(ε/2)) or on KL (P(KL ≥ 2t²) ≤
ε/(2t²)).  ``"markov"`` is that form, from ε alone; ``"per-context"`` keeps the exact P(TV(x) ≥ t(m)).
Each tail is a small replaceable function (:data:`FORMS`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from simlm.checks import check_non_negative
from simlm.errors import ConfigError
from simlm.metrics.epsilon import kl_per_sequence, tv_per_sequence
from simlm.theory.anchors import AnchorContexts, AnchorTask, check_bulk, check_shaped, log_bulk_partition


def context_divergences(logp_star, logp_lm) -> tuple[np.ndarray, np.ndarray]:
    """KL(p*(·|x) ‖ p(·|x)) and TV(x), each ``(n,)``, in float64 (N2's ε is ~1e-9): the metrics'
    :func:`~simlm.metrics.epsilon.kl_per_sequence` and ``tv_per_sequence``, one position per row."""
    a, b = np.asarray(logp_star, np.float64)[:, None], np.asarray(logp_lm, np.float64)[:, None]
    with jax.enable_x64(True):
        return np.asarray(kl_per_sequence(a, b), np.float64), np.asarray(tv_per_sequence(a, b), np.float64)


def markov_tail(t, eps, tv=None, weights=None) -> float:
    """P(TV(x) ≥ t) ≤ min(√(ε/2)/t, ε/(2t²)), Markov on TV (Pinsker, Jensen) or on KL (Pinsker); 1 (no
    information) at t = 0 and wherever a quotient overflows (t below ~1e-154 when γ, the floor, is tiny)."""
    if not t * t > 0:  # t = 0, or t² below the floats
        return 1.0
    with np.errstate(over="ignore"):  # a quotient past the floats is +inf: the tail is then 1
        return float(min(np.sqrt(eps / 2) / t, eps / (2 * t * t), 1.0))


def per_context_tail(t, eps, tv, weights) -> float:
    """P_π(TV(x) ≥ t), exactly."""
    return float(weights @ (tv >= t))


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
    """γ = min_x min(min_{w∈S} p*(w|x), p*(B(x)|x)): the probability floor of the task words and the bulk."""
    words = np.exp(ctx.logp[:, task.words]).min()
    return float(min(words, np.exp(log_bulk_partition(ctx.logp, check_bulk(bulk, ctx.logp.shape))).min()))


def transfer_bound(task: AnchorTask, ctx: AnchorContexts, bulk, logp_lm, rho: float, *, form: str = "markov",
                   forms=None) -> TransferBound:
    """The O(√ε) bound of the module docstring on :func:`head_errors`' ``error``, minimised over m on the
    margins.  ``forms`` maps a form name to ``tail(t, eps, tv, weights)`` (default :data:`FORMS`)."""
    forms = FORMS if forms is None else forms
    if form not in forms:
        raise ConfigError(f"form: expected one of {sorted(forms)}, got {form!r}")
    if task.words is None:
        raise ConfigError(f"task: the {task.name!r} task has no words; the bound is on the anchored head")
    rho = check_non_negative("rho", rho, finite=True)  # a NaN ρ would drop the margin term: a false certificate
    w, lp = ctx.weights, check_shaped("logp_lm", logp_lm, ctx.logp.shape)
    kl, tv = context_divergences(ctx.logp, lp)
    eps = float(w @ kl)
    gamma, c1, csum = task_gamma(task, ctx, bulk), float(np.abs(task.coef).sum()), float(abs(task.coef.sum()))
    best, best_m = 1.0, 0.0
    for m in np.unique(np.concatenate([task.margin, task.margin + 1e-12])):
        if m <= csum * rho:
            continue
        t = gamma / 2 if c1 == 0 else min(gamma / 2, gamma * (m - csum * rho) / (4 * c1))
        value = float(w @ (task.margin < m)) + forms[form](t, max(eps, 0.0), tv, w)
        if value < best:
            best, best_m = value, float(m)
    return TransferBound(best, best_m, gamma, c1, csum, float(rho), eps, form, best >= 1.0)


__all__ = ["context_divergences", "markov_tail", "per_context_tail", "FORMS", "TransferBound", "task_gamma",
           "transfer_bound"]
