"""(A mutation review, 2026-12-07.)  The transfer bound's floor γ, read against a float64 brute force where
the bulk (one word: top_k = V − 1) is lighter than every task word."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simlm.theory.anchor_bound import transfer_bound
from simlm.theory.anchor_constructions import analytic_laws
from simlm.theory.anchors import anchor_contexts, bulk_mask, random_tasks, world_anchor_fit
from simlm.worlds import LogLinearWorld


def _brute(task, ctx, bulk, logp_lm, form):
    """(γ, bound) of the module docstring at ρ = 0, context by context in float64."""
    p, q, w = np.exp(ctx.logp), np.exp(logp_lm), ctx.weights
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    gamma = min(min(min(p[x, i] for i in task.words), p[x, bulk[x]].sum()) for x in range(len(p)) if w[x] > 0)
    tv = 0.5 * np.abs(p - q).sum(1)
    eps = float(w @ (p * (np.log(p) - np.log(q))).sum(1))
    c1, best = float(np.abs(task.coef).sum()), 1.0
    for m in sorted(set(task.margin) | set(task.margin + 1e-12)):
        if m <= 0:
            continue
        t = min(gamma / 2, gamma * m / (4 * c1))
        tail = math.fsum(w[tv >= t]) if form == "per-context" else min(eps / (2 * t * t), 1.0)
        best = min(best, math.fsum(w[task.margin < m]) + tail)
    return gamma, best


@pytest.mark.parametrize("form", ["per-context", "markov"])
def test_the_floor_counts_a_bulk_lighter_than_the_task_words(form):
    """top_k = V − 1 leaves the least likely word as the bulk: its mass, not a task word's, is γ (a γ of the
    task words alone read 0.122 for 0.0897 and the markov bound 0.332 for 0.432, per-context 0.109 for 0.125,
    and passed every test: their worlds' bulks outweighed the task words)."""
    world = LogLinearWorld.random(0, n_states=64, n_symbols=4, dim=3, sigma=0.3)
    ctx = anchor_contexts(world)
    bulk = bulk_mask(ctx.logp, top_k=3)
    task = random_tasks(ctx, world_anchor_fit(ctx, bulk), 0)["anchored"]
    p = np.exp(ctx.logp)
    assert (p[:, task.words].min(1) > np.where(bulk, p, 0).sum(1)).any()  # the bulk is the floor somewhere
    logp = analytic_laws(ctx, "logit-noise", 1e-5)
    b = transfer_bound(task, ctx, bulk, logp, 0.0, form=form)
    gamma, bound = _brute(task, ctx, bulk, logp, form)
    assert b.gamma == pytest.approx(gamma, rel=1e-12)
    assert b.bound == pytest.approx(bound, rel=1e-9, abs=1e-15)
