"""Margins for Wei, Xie & Ma's head- and prompt-tuning statements: how far a world is from the soft-zero
threshold its prompt condition needs, and how far each input is from its label's decision boundary.

Soft zeros (derived here).  :func:`simlm.theory.head_prompt.prompt_feasibility` reads the transition graph
at a threshold δ: A[g,h] is an edge when A[g,h] > δ·max_h' A[g,h'] (π likewise).  The graph, and so the
verdict, changes only where δ crosses a relative entry ρ = A[g,h]/max_h' A[g,h'] (or π_h/max π), so the
verdict is piecewise constant on [ρ_(i), ρ_(i+1)) and :func:`feasibility_range` evaluates it once per piece.
It is *not* monotone in δ — a larger δ puts more states in the gate G = {g : A[g, S^c] ≈ 0} but removes
edges that reach and cover S — so the answer is a union of intervals.  ``delta_min`` = 0 with
``exact`` True means the theorem's hypothesis (exact zeros) holds; otherwise ``delta_min`` is the mass a
reader must agree to call zero before the paper's construction applies, and ``delta_max`` (the
supremum of the feasible δ, the issue's "largest δ for which it holds") how far that reading can go.

Label margins (derived here).  A binary task y = 1[μᵀP ≥ 0] has margin |μᵀP|; a C-class task
argmax(L P) the gap between its two largest scores.  Where the margin is below ``relative`` × the task's
scale (max|μ|, or max|L_i − L_j|) the label is decided by posterior mass at the rounding level — a coin
flip in leftover mass that no theorem about heads speaks to — so :func:`margin_accuracy` reports the share
of such inputs and the accuracy on the others apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simlm.checks import check_distributions, check_real_array
from simlm.errors import ConfigError, ShapeError
from simlm.theory.head_prompt import _relative, chain64, prompt_graph, prompt_task_vector, relative_entries
from simlm.worlds import prompting

#: inputs with label margin below this × the task's scale count as having no margin.
RELATIVE_MARGIN = 1e-6


@dataclass(frozen=True)
class FeasibilityRange:
    """Where in δ ∈ [0, 1) the prompt condition's graph part holds for task support S and k prompt tokens.

    ``intervals``: disjoint [lo, hi) pieces (hi = 1 for the last piece) on which it holds;
    ``exact``: it holds at δ = 0; ``delta_min`` / ``delta_max``: the smallest δ and the supremum of δ
    where it holds (NaN when nowhere); ``breakpoints``: every relative entry at which the graph changes."""
    support: tuple
    k: int
    exact: bool
    intervals: tuple
    delta_min: float
    delta_max: float
    breakpoints: np.ndarray


def feasibility_range(world, mu, *, k: int = 1) -> FeasibilityRange:
    """The soft-zero thresholds δ for which k prompt tokens can confine P(H_0 | z, x) to S = supp(μ) ∩ supp(π)
    (:func:`~simlm.theory.head_prompt.prompt_graph` at one δ per piece; module docstring)."""
    k = prompting.check_prompt_length(k)
    pi, A, _ = chain64(world)
    S = prompt_task_vector(mu, pi) != 0
    rel = np.concatenate([relative_entries(A).ravel(), relative_entries(pi)])
    cuts = np.unique(np.concatenate([[0.0], rel[(rel > 0) & (rel < 1)]]))  # δ at which the graph changes
    ok = np.array([_holds(*prompt_graph(pi, A, S, k, d)) for d in cuts])
    ends = np.append(cuts[1:], 1.0)
    intervals, i = [], 0
    while i < len(cuts):
        if ok[i]:
            j = i
            while j + 1 < len(cuts) and ok[j + 1]:
                j += 1
            intervals.append((float(cuts[i]), float(ends[j])))
            i = j + 1
        else:
            i += 1
    lo = intervals[0][0] if intervals else float("nan")
    hi = intervals[-1][1] if intervals else float("nan")
    return FeasibilityRange(tuple(int(h) for h in np.flatnonzero(S)), k, bool(ok[0]), tuple(intervals), lo, hi,
                            cuts[1:])


def _holds(reach, gate, allowed, uncovered) -> bool:
    return bool(allowed[-1].any() and not uncovered.any())


@dataclass(frozen=True)
class LabelMargins:
    """Per-input label margins ``margins (n,)`` (|μᵀP|, or the gap between the two largest scores of L P),
    the task's ``scale`` (max|μ| or max|L_i − L_j|), ``threshold`` = relative·scale and the share of inputs
    below it (``share_without_margin``)."""
    margins: np.ndarray
    scale: float
    threshold: float
    share_without_margin: float


def label_margins(weights, posterior, *, relative: float = RELATIVE_MARGIN) -> LabelMargins:
    """Margins of the labels 1[μᵀP ≥ 0] (``weights`` μ (K,)) or argmax(L P) (``weights`` L (C, K)) of
    posteriors ``posterior (n, K)`` — e.g. a task's ``mu`` or ``label_matrix`` and ``task.posteriors``; rows
    with a negative entry, or whose sum is off 1 by more than 1e-5, are refused
    (:class:`~simlm.errors.DistributionError`)."""
    relative = _relative("relative", relative)  # in (0, 1): at ≥ 1 no input has a margin
    W = check_real_array("weights", weights)
    P = check_real_array("posterior", posterior)
    if W.ndim not in (1, 2) or (W.ndim == 2 and W.shape[0] < 2) or not W.size:
        raise ShapeError(f"weights: expected μ (K,) or a label matrix L (C ≥ 2, K), got shape {W.shape}")
    if P.ndim != 2 or P.shape[1] != W.shape[-1]:
        raise ShapeError(f"posterior: expected shape (n, {W.shape[-1]}) to match weights of shape {W.shape}, "
                         f"got {P.shape}")
    if P.size:  # laws over the states (rows [-3, 5] gave a margin of 8)
        check_distributions("posterior", P)
    if W.ndim == 1:
        margins, scale = np.abs(P @ W), float(np.abs(W).max())
    else:
        scores = np.sort(P @ W.T, axis=1)
        margins = scores[:, -1] - scores[:, -2]
        scale = float(np.abs(W[:, None, :] - W[None, :, :]).max())
    if not scale > 0:  # every label a tie (μ = 0, or L with equal rows): no input has a margin
        raise ConfigError(f"weights: every label is a tie (scale {scale:g}: μ = 0 or L with equal rows), so no "
                          "input has a margin")
    threshold = relative * scale
    share = float(np.mean(margins < threshold)) if len(margins) else float("nan")
    return LabelMargins(margins, scale, threshold, share)


@dataclass(frozen=True)
class MarginAccuracy:
    """Accuracy on all inputs, the share without margin, and the accuracy on the ``n_with_margin``
    inputs whose margin is at least the threshold (NaN when there are none)."""
    accuracy: float
    share_without_margin: float
    accuracy_with_margin: float
    n_with_margin: int


def margin_accuracy(predictions, labels, margins: LabelMargins) -> MarginAccuracy:
    """Accuracy of ``predictions (n,)`` against ``labels (n,)``, stratified by :class:`LabelMargins`."""
    if not isinstance(margins, LabelMargins):
        raise ConfigError(f"margins: expected LabelMargins (from label_margins), got {type(margins).__name__}")
    pred, lab = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    for name, a in (("labels", lab), ("predictions", pred)):
        if a.shape != margins.margins.shape:
            raise ShapeError(f"{name}: expected shape {margins.margins.shape} like the margins, got {a.shape}")
    right, keep = pred == lab, margins.margins >= margins.threshold
    above = float(right[keep].mean()) if keep.any() else float("nan")
    overall = float(right.mean()) if right.size else float("nan")  # (no "mean of empty slice" warning)
    return MarginAccuracy(overall, margins.share_without_margin, above, int(keep.sum()))


__all__ = ["RELATIVE_MARGIN", "FeasibilityRange", "feasibility_range", "LabelMargins", "label_margins",
           "MarginAccuracy", "margin_accuracy"]
