"""(A mutation review, 2026-12-07.)  The transfer bound's floor γ, read against a float64 brute force where
the bulk (one word: top_k = V − 1) is lighter than every task word."""

from __future__ import annotations

import numpy as np
import pytest

from test_anchors_review import _brute_bound, _brute_floor
from simlm.theory.anchor_bound import transfer_bound
from simlm.theory.anchor_constructions import analytic_laws
from simlm.theory.anchors import anchor_contexts, bulk_mask, random_tasks, world_anchor_fit
from simlm.worlds import LogLinearWorld


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
    assert b.gamma == pytest.approx(_brute_floor(task, ctx, bulk), rel=1e-12)
    assert b.bound == pytest.approx(_brute_bound(task, ctx, bulk, logp, 0.0, form), rel=1e-9, abs=1e-15)
