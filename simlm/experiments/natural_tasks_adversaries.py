"""The natural-task sweep's tasks with content and its worst-case LMs (Saunshi, Malladi & Arora 2021), and
the numbers that say how much the sweep's checks could have failed.

- :func:`make_tasks`: every (task kind, label noise) on every prompt slice — ``random``
  (:func:`~simlm.theory.natural_tasks.random_natural_task`) and ``indicative``
  (:func:`~simlm.theory.natural_tasks.indicative_task`), logistic or sign labels — each labelled with
  its critical ε (:func:`~simlm.theory.natural_tasks.critical_epsilon`; the bound is ≥ log 2 at every
  B from there on, so (b), the best classifier in the ball, cannot fail it; (a), the transferred one, still
  can).
- :func:`adversarial_lms`: per task, the worst-case LMs of :mod:`simlm.theory.adversarial` at every ε of
  the grid and at fractions of the task's critical ε (so that every task, however rare its slice, has
  rows where the bound says something).
- :func:`targets`: the issue's targets measured on the rows — the share of non-trivial rows, the least
  slack an adversary uses per ε on γ = 1 and on the rarest slice, and the log–log slope of the
  adversarial excess against ε.
"""

from __future__ import annotations

import math

import numpy as np

from simlm.errors import ConfigError
from simlm.theory.adversarial import (adversarial_laws, adversarial_quad_lm, adversarial_softmax_lm, adversary_radius,
                                     well_specified_radius)
from simlm.theory.natural_tasks import critical_epsilon, indicative_task, random_natural_task

TASK_KINDS = ("random", "indicative")
#: the worst-case LMs: laws (aligned tilt; search, the worst-case split — built at the any-LM bound's radius,
#: and with the search also at the well-specified bound's where it differs: "adversarial-search-ws"), a softmax
#: LM (θ tilts split across contexts, ε_Φ) and Quad features (the worst Quad LM, ε_quad); see
#: :mod:`simlm.theory.adversarial`.
ADVERSARIES = ("adversarial-aligned", "adversarial-search", "adversarial-softmax", "adversarial-quad")
_BOUND_OF = {"adversarial-aligned": "any-lm", "adversarial-search": "any-lm", "adversarial-softmax": "softmax",
             "adversarial-quad": "quad"}


def make_tasks(contexts, prompts, config) -> list:
    """``[(labels, task)]`` for every prompt × "kind-noise" in ``config.tasks`` (noise in ``config.noises``);
    labels carry
    ``task`` ("p_L" or "u=…"), ``prompt``, ``noise``, ``task_kind`` ("kind-noise"), ``task_contexts``
    and ``task_critical_eps`` (the any-LM bound's)."""
    out = []
    for prompt in prompts:
        for kind, noise in (t.split("-") for t in config.tasks):
            if noise in config.noises:
                task = (random_natural_task(contexts, config.task_seed, noise=noise, prompt=prompt) if kind == "random"
                        else indicative_task(contexts, noise=noise, prompt=prompt))
                out.append(({"task": "p_L" if prompt is None else "u=" + ",".join(map(str, prompt)),
                             "prompt": None if prompt is None else list(prompt), "noise": noise,
                             "task_kind": f"{kind}-{noise}", "task_contexts": int(np.count_nonzero(task.weights)),
                             "task_critical_eps": critical_epsilon(contexts, task)}, task))
    return out


def adversarial_lms(contexts, task, phi, config, skipped: list, cache: dict, task_labels: dict, *,
                    laws_only: bool = False):
    """Yield ``(labels, lm)`` for every kind in ``config.adversaries`` at every ε of ``config.eps_grid``
    (``eps_kind`` "absolute") and at ``config.critical_fractions`` × the critical ε of the bound it
    targets (``eps_kind`` "critical×f"), each built at the radius B* of its bound at that ε; the law
    adversaries also at each fixed radius of ``config.adversary_radii`` (lm "kind@B=…", absolute ε only:
    the ε-exponent of the excess is read at a fixed B).  ``laws_only``: the law adversaries only (the
    softmax and Quad ones cost a span-constrained solve per check).  An ε the task's contexts cannot
    absorb is appended to ``skipped`` with the reason, never yielded."""
    phi = np.asarray(phi, np.float64)
    for kind in config.adversaries:
        if laws_only and kind not in ("adversarial-aligned", "adversarial-search"):
            continue
        if kind == "adversarial-aligned":
            for B in config.adversary_radii:
                for eps in config.eps_grid:
                    try:
                        lm = adversarial_laws(contexts, task, eps, method="aligned", B=B, cache=cache)
                    except ConfigError as e:
                        skipped.append({"lm": f"{kind}@B={B:g}", "target_eps": eps, "task": task_labels["task"],
                                        "task_kind": task_labels["task_kind"], "why": str(e)})
                        continue
                    yield {"lm": f"{kind}@B={B:g}", "family": "adversarial-fixed-B", "target_eps": eps,
                           "eps_kind": "absolute", "calibrated": "eps", "scale": math.nan,
                           "adversary_bound": "any-lm", "adversary_B": float(B)}, lm
        bound = _BOUND_OF[kind]
        crit = critical_epsilon(contexts, task, Phi=None if bound == "any-lm" else phi,
                                norm="2" if bound == "quad" else "inf")
        targets = [(e, "absolute") for e in config.eps_grid]
        targets += [(f * crit, f"critical×{f:g}") for f in config.critical_fractions if f * crit > 0]
        for eps, eps_kind in targets:
            try:
                if kind in ("adversarial-aligned", "adversarial-search"):
                    lm = adversarial_laws(contexts, task, eps, method=kind.split("-")[1], cache=cache,
                                          steps=config.search_steps)
                elif kind == "adversarial-softmax":
                    lm = adversarial_softmax_lm(contexts, task, eps, phi, cache=cache)
                else:
                    lm = adversarial_quad_lm(contexts, task, eps, phi, cache=cache)
            except ConfigError as e:
                skipped.append({"lm": kind, "target_eps": eps, "task": task_labels["task"],
                                "task_kind": task_labels["task_kind"], "why": str(e)})
                continue
            calibrated = {"any-lm": "eps", "softmax": "eps_phi", "quad": "eps_quad"}[bound]
            yield {"lm": kind, "family": "adversarial", "target_eps": eps, "eps_kind": eps_kind,
                   "calibrated": calibrated, "scale": math.nan, "adversary_bound": bound, "adversary_B": "B*"}, lm
            if kind == "adversarial-search":
                yield from _well_specified_search(contexts, task, eps, eps_kind, config, skipped, cache, task_labels)


def _well_specified_search(contexts, task, eps, eps_kind, config, skipped, cache, task_labels):
    """The search adversary at the well-specified bound's own radius (:func:`well_specified_radius`), where it
    differs from the any-LM bound's: the law adversaries are built at the any-LM B*, and read there by the
    well-specified row they moved another classifier than the one it bounds — on tiny worlds they left up to
    0.31 of that row's slack unused, which this adversary, at its radius, uses (lm ``adversarial-search-ws``)."""
    B_ws = well_specified_radius(contexts, task, eps, cache=cache)
    if B_ws == adversary_radius(contexts, task, eps, cache=cache):
        return
    try:
        lm = adversarial_laws(contexts, task, eps, method="search", B=B_ws, cache=cache, steps=config.search_steps)
    except ConfigError as e:
        skipped.append({"lm": "adversarial-search-ws", "target_eps": eps, "task": task_labels["task"],
                        "task_kind": task_labels["task_kind"], "why": str(e)})
        return
    yield {"lm": "adversarial-search-ws", "family": "adversarial", "target_eps": eps, "eps_kind": eps_kind,
           "calibrated": "eps", "scale": math.nan, "adversary_bound": "well-specified", "adversary_B": "B*"}, lm


def _adversary_rows(rows, choice="B*", family="adversarial"):
    """The rows of each adversary of ``family`` on the bound it targets (the law adversaries: any-lm and
    its well-specified form), at ``choice``."""
    return [r for r in rows if r.get("family") == family and r["B_choice"] == choice
            and (r["bound"] == r["adversary_bound"] or (r["adversary_bound"], r["bound"]) == ("any-lm", "well-specified"))]


def slope(eps, excess) -> float:
    """The least-squares slope of log excess against log ε (NaN with < 2 positive points)."""
    eps, excess = np.asarray(eps, float), np.asarray(excess, float)
    ok = (eps > 0) & (excess > 0)
    if ok.sum() < 2 or np.ptp(np.log(eps[ok])) == 0:
        return math.nan
    return float(np.polyfit(np.log(eps[ok]), np.log(excess[ok]), 1)[0])


def targets(result: dict) -> dict:
    """The issue's targets on ``result["rows"]``, per world: ``nontrivial_share`` of the (task, ε) rows
    on the absolute ε grid (aligned adversary's any-LM rows, every task; a pair whose adversary could not be
    built has no row — it is listed under ``skipped`` — and is not counted) that some LM could fail
    (``trivial``: the bound is ≥ the largest (a) any LM can give at every B); ``worst_case_used``: per
    (bound, γ = 1 | rarest slice, ε), the least over non-trivial tasks of the most slack any adversary
    of that bound uses at B*; ``no_share``: the (bound, γ, ε) cells without one (every row trivial or without
    slack), said in :func:`format_targets` rather than dropped; ``slopes``: per (fixed-radius adversary,
    task), the log–log slope against ε of its excess at its own radius (every ε of the grid with a positive
    excess)."""
    out = {"violations": len(result["violations"])}
    rows = _adversary_rows(result["rows"])
    for world in sorted({r["world"] for r in rows}):
        w = [r for r in rows if r["world"] == world]
        grid = [r for r in w if r["lm"] == "adversarial-aligned" and r["eps_kind"] == "absolute"
                and r["bound"] == "any-lm"]
        rare = min(r["gamma"] for r in w)
        best: dict = {}
        cells: dict = {}  # every (bound, γ, ε) cell, so that one whose rows are all trivial is said, not dropped
        for r in w:
            if not (r["gamma"] == 1.0 or r["gamma"] == rare):
                continue
            e = f"{r['target_eps']:g}" if r["eps_kind"] == "absolute" else r["eps_kind"]
            key = (r["bound"], "γ=1" if r["gamma"] == 1.0 else f"γ={rare:.2g}", e)
            cells.setdefault(key, None)
            if r["trivial"]:
                continue
            if r["slack_used"] is None or not math.isfinite(r["slack_used"]):  # no slack to use (≤ ATOL): no share
                continue
            task = (r["task"], r["task_kind"])
            best.setdefault(key, {})[task] = max(best.get(key, {}).get(task, -math.inf), r["slack_used"])
        fixed = [r for r in result["rows"] if r["world"] == world and r.get("family") == "adversarial-fixed-B"
                 and r["bound"] == "any-lm" and r["B_choice"] == "B*"]
        slopes = {}
        for key in sorted({(r["lm"], r["task_kind"], r["task"]) for r in fixed}):
            g = [r for r in fixed if (r["lm"], r["task_kind"], r["task"]) == key]
            at = [list(r["B_grid"]).index(r["adversary_B"]) for r in g]
            slopes[key] = slope([r["eps_bound"] for r in g], [r["excess_grid"][i] for r, i in zip(g, at)])
        out[world] = {"nontrivial_share": float(np.mean([not r["trivial"] for r in grid])) if grid else math.nan,
                      "rows": len(grid), "worst_case_used": {k: min(v.values()) for k, v in best.items()},
                      "no_share": [k for k in cells if k not in best], "slopes": slopes}
    return out


def split_trivial(rows) -> tuple[list, list]:
    """(non-trivial rows, trivial rows): a trivial row's bound is ≥ the largest loss (a) any LM can give
    (:func:`~simlm.theory.natural_tasks.loss_ceiling`) at every B of the grid, so no LM could fail it."""
    return [r for r in rows if not r["trivial"]], [r for r in rows if r["trivial"]]





def format_targets(t: dict) -> str:
    """:func:`targets` as text lines."""
    lines = [f"targets: violations {t['violations']} (target 0)"]
    for world, w in ((k, v) for k, v in t.items() if k != "violations"):
        lines.append(f"  {world}: non-trivial (task, ε) rows of the aligned adversary on the ε grid: "
                     f"{w['nontrivial_share']:.0%} of the {w['rows']} built "
                     "(target ≥ 80%; pairs skipped not counted)")
        none = [tuple(k) for k in w.get("no_share", [])]  # cells whose rows are all trivial or without slack
        for bound in dict.fromkeys([k[0] for k in w["worst_case_used"]] + [k[0] for k in none]):
            shares = [f"{g} ε={e}: {u:.2f}" for (b, g, e), u in w["worst_case_used"].items() if b == bound]
            shares += [f"{g} ε={e}: none (all trivial or no slack)" for b, g, e in none if b == bound]
            lines.append(f"    {bound}: slack used by the worst adversary, least over non-trivial tasks (target ≥ 1/3): "
                         + ", ".join(shares))
        for lm in dict.fromkeys(k[0] for k in w["slopes"]):
            v = [x for k, x in w["slopes"].items() if k[0] == lm and np.isfinite(x)]
            if v:
                lines.append(f"    ε-exponent of {lm}'s excess at its radius (target 0.5 ± 0.1): median {np.median(v):.2f}, "
                             f"range [{min(v):.2f}, {max(v):.2f}] over {len(v)} tasks")
    return "\n".join(lines)
__all__ = ["TASK_KINDS", "ADVERSARIES", "make_tasks", "adversarial_lms", "targets", "format_targets", "slope",
           "split_trivial"]
