"""(A mutation review, 2026-12-07.)  The check's worst-case rows read against a float64 brute force of the
module docstring's bound, row by row: the quantity's suffix names the form whose bound it carries, slack_used
is the worst LM's error over that bound, trivial exactly when the bound reaches the reachable error, eps the
worst LM's own ε (Σ π KL by hand) and budget the cell LM's."""

from __future__ import annotations

import numpy as np
import pytest

from test_anchors_review import _brute_bound
from simlm.experiments.checks_anchors import anchors_check
from simlm.experiments.registry import Cell
from simlm.models import perturbed_lm
from simlm.theory.anchor_constructions import reachable_error, worst_case_lm
from simlm.theory.anchors import anchor_contexts, bulk_mask, random_tasks, world_anchor_fit
from simlm.worlds import LogLinearWorld


def _brute_eps(ctx, logp_lm) -> float:
    p, q = np.exp(ctx.logp), np.exp(logp_lm)
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    return float(ctx.weights @ (p * (np.log(p) - np.log(q))).sum(1))


FLAT = {"n_states": 64, "n_symbols": 8, "dim": 3, "sigma": 0.3, "n_carriers": 2, "carrier_gap": 8.0}
SMALL = {"n_states": 4, "n_symbols": 6, "dim": 3, "geometry": "anchor"}


@pytest.mark.parametrize("options, eps, saturated", [(FLAT, 0.1, False), (SMALL, 3.0, True)])
def test_the_worst_case_rows_carry_the_bound_their_name_says_and_its_share(options, eps, saturated):
    world = LogLinearWorld.random(0, **options)
    x = np.asarray(world.sample(0, 8, 8))
    lm = perturbed_lm(world, eps, "logit-noise", 0, tokens=x)
    options = {"top_k": 2, "n_words": 2, "task_seed": 0, "n_label": 16, "adversary": "flips"}
    rows = anchors_check(Cell(world, {"kind": "loglinear"}, lm, {"source": "analytic", "laws": ["next-token"]},
                              x, options, 0))
    ctx = anchor_contexts(world, x)
    bulk = bulk_mask(ctx.logp, top_k=2)
    tasks = random_tasks(ctx, world_anchor_fit(ctx, bulk), 0, n_words=2,
                         rare_words=world.carrier_ids if len(world.carrier_ids) >= 2 else None)
    worst = [r for r in rows if r["quantity"].startswith("worst-case:")]
    assert len(worst) == 2 * sum(t.words is not None for t in tasks.values())
    seen = set()
    for r in worst:
        _, name, q = r["quantity"].split(":", 2)
        form = "per-context" if q == "head_error@per-context" else "markov"
        assert q in ("head_error", "head_error@per-context") and r["form"] == form
        own = next(o for o in rows if o["quantity"] == f"{name}:head_error")
        assert r["budget"] == own["eps_rows"]
        wc = worst_case_lm(tasks[name], ctx, bulk, own["eps_rows"])
        assert r["eps"] == pytest.approx(_brute_eps(ctx, wc.logp_lm), rel=1e-9)
        assert r["saturated"] == (wc.eps < own["eps_rows"] * (1 - 1e-9))
        bound = _brute_bound(tasks[name], ctx, bulk, wc.logp_lm, 0.0, form)
        assert r["bound"] == pytest.approx(bound, rel=1e-9, abs=1e-15)
        assert r["measured"] <= r["bound"]
        assert r["slack_used"] == pytest.approx(r["measured"] / bound, rel=1e-9)
        reach = reachable_error(tasks[name], ctx, bulk)
        assert r["trivial"] == (bound >= reach)
        seen.add((form, r["trivial"], r["saturated"]))
    if saturated:  # the worst LM flipped all it could below the budget: its own ε is not the budget
        assert any(s for _, _, s in seen)
    else:  # rows that could fail, in both forms
        assert ("per-context", False, False) in seen
