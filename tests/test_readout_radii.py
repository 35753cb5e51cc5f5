"""How far an LM's laws must move before the world's latent readout (Wu, Lee & Ge's task read from log p)
labels a context otherwise: :func:`simlm.theory.anchors.readout_radii`, against a bisection along the flip
direction and random directions on tiny log-linear worlds.  The demo's ``latent:readout_error`` read 0 for
the oracle and 0.4219 at every ε from 0.01 to 0.3 with nothing to say why: one heavy context sits 0.125 from
its flip, and every LM from ε = 0.01 on moved it further."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles import scaled

from simlm.experiments.checks_anchors import anchors_check
from simlm.experiments.registry import Cell
from simlm.models import perturbed_lm
from simlm.strategies import loglinear_worlds
from simlm.theory.anchors import (anchor_contexts, bulk_mask, log_softmax, random_tasks, readout_error, readout_radii,
                                  world_anchor_fit)
from simlm.worlds import LogLinearWorld

FEW = settings(max_examples=scaled(10), deadline=None)


def _latent(world, task_seed=0):
    ctx = anchor_contexts(world)
    task = random_tasks(ctx, world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=1)), task_seed)["latent"]
    return ctx, task


def _cq(ctx, task):
    """C q by the definition (C = I − 11ᵀ/V, q the least-norm solution of V*C q = u*), from lstsq."""
    V = ctx.embeddings.shape[1]
    C = np.eye(V) - 1.0 / V
    return C @ np.linalg.lstsq(ctx.embeddings @ C, task.direction, rcond=None)[0]


def _flip_direction(ctx, task):
    """C q ÷ ‖C q‖; None where C q = 0 (the readout reads no law: nothing flips it)."""
    cq = _cq(ctx, task)
    return cq / np.linalg.norm(cq) if np.linalg.norm(cq) > 0 else None


def _moved(ctx, i, delta):
    """The world's laws with context ``i``'s moved by ``delta`` (and renormalised: a law again)."""
    lp = ctx.logp.copy()
    lp[i] = log_softmax(lp[i] + delta)
    return lp


@FEW
@given(loglinear_worlds(max_states=6, max_symbols=5).filter(lambda w: w.n_symbols >= 3), st.integers(0, 3))
def test_each_radius_is_the_distance_at_which_that_context_first_flips(world, task_seed):
    """Moving one context's law along ∓Cq by the radius × (1 + 1e-6) changes readout_error by exactly that
    context's weight; by the radius × (1 − 1e-6) — or along any of 20 random directions of that length — not
    at all (Cauchy–Schwarz: no direction flips sooner)."""
    ctx, task = _latent(world, task_seed)
    radii = readout_radii(task, ctx, ctx.logp)
    base = readout_error(task, ctx, ctx.logp)
    u = _flip_direction(ctx, task)
    if u is None:
        assert np.all(radii.radius == np.inf) and radii.at_risk == 0
        return
    rng = np.random.default_rng(task_seed)
    for i in range(len(ctx.weights)):
        r = radii.radius[i]
        if not 1e-6 < r < 50:  # a tie at the threshold (flips at any distance) or a law no float could move so far
            continue
        towards = -u if _readout_labels(ctx, task, ctx.logp)[i] else u  # to the other side of the threshold
        far = readout_error(task, ctx, _moved(ctx, i, towards * r * (1 + 1e-6)))
        near = readout_error(task, ctx, _moved(ctx, i, towards * r * (1 - 1e-6)))
        assert abs(far - base) == pytest.approx(ctx.weights[i], rel=1e-9), (i, r)
        assert near == base, (i, r)
        for _ in range(20):
            d = rng.normal(size=u.size)
            d -= d.mean()
            assert readout_error(task, ctx, _moved(ctx, i, d / np.linalg.norm(d) * r * (1 - 1e-6))) == base


def _readout_labels(ctx, task, logp):
    """The readout's per-context labels, from its definition (readout_error's threshold on the world's shift)."""
    cq = _cq(ctx, task)
    shift = ctx.weights @ (task.score - ctx.logp @ cq)
    return logp @ cq + shift + task.bias >= 0


@FEW
@given(loglinear_worlds(max_states=6, max_symbols=5).filter(lambda w: w.n_symbols >= 3), st.integers(0, 3),
       st.floats(1e-3, 2.0), st.integers(0, 2**16))
def test_only_the_contexts_at_risk_can_change_the_readouts_error(world, task_seed, scale, seed):
    """For random laws near the world's: ``shift`` is each context's ‖C(log p − log p*)‖₂, a context whose
    shift is below its radius keeps the world's label, and so |error(LM) − error(world)| ≤ ``at_risk``, the
    weight where shift ≥ radius; ``margin`` is the least radius over contexts of positive weight."""
    ctx, task = _latent(world, task_seed)
    rng = np.random.default_rng(seed)
    lp = log_softmax(ctx.logp + scale * rng.normal(size=ctx.logp.shape))
    radii = readout_radii(task, ctx, lp)
    moved = lp - ctx.logp
    np.testing.assert_allclose(radii.shift, np.linalg.norm(moved - moved.mean(1, keepdims=True), axis=1),
                               rtol=1e-12, atol=1e-15)
    safe = radii.shift < radii.radius * (1 - 1e-9)
    assert np.array_equal(_readout_labels(ctx, task, lp)[safe], _readout_labels(ctx, task, ctx.logp)[safe])
    assert radii.at_risk == pytest.approx(ctx.weights[radii.shift >= radii.radius].sum(), abs=1e-15)
    gap = abs(readout_error(task, ctx, lp) - readout_error(task, ctx, ctx.logp))
    assert gap <= radii.at_risk + 1e-12
    assert radii.margin == radii.radius[ctx.weights > 0].min()
    assert readout_radii(task, ctx, ctx.logp).at_risk == pytest.approx(
        ctx.weights[readout_radii(task, ctx, ctx.logp).radius == 0].sum(), abs=1e-15)


def test_the_checks_latent_row_carries_the_margin_the_shift_and_the_weight_at_risk():
    """The check's ``latent:readout_error`` row: ``readout_margin``, ``lm_shift`` (the largest shift over the
    contexts) and ``at_risk`` are readout_radii's for the cell's LM on the cell's rows; an LM whose contexts
    all stay inside their radii reads every label as the world does (at_risk 0 and the world's error), one at
    a larger ε has weight at risk, and the error it adds is within it."""
    world = LogLinearWorld.random(0, n_states=4, n_symbols=6, dim=3, geometry="anchor")
    x = np.asarray(world.sample(0, 8, 6))
    ctx = anchor_contexts(world, x)
    task = random_tasks(ctx, world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=2)), 0, n_words=2)["latent"]
    options = {"top_k": 2, "n_words": 2, "task_seed": 0, "n_label": 8, "adversary": "none"}
    seen = []
    for eps in (1e-5, 0.3):
        lm = perturbed_lm(world, eps, "logit-noise", 0, tokens=x)
        cell = Cell(world, {"kind": "loglinear"}, lm, {"source": "analytic", "laws": ["next-token"]}, x, options, 0)
        got = next(r for r in anchors_check(cell) if r["quantity"] == "latent:readout_error")
        lp = log_softmax(np.asarray(lm.next_token_logprobs(x), np.float64).reshape(-1, 6))
        want = readout_radii(task, ctx, lp)
        assert got["readout_margin"] == want.margin and got["at_risk"] == want.at_risk
        assert got["lm_shift"] == want.shift[ctx.weights > 0].max()
        assert abs(got["measured"] - got["world_error"]) <= got["at_risk"]
        seen.append(got)
    assert seen[0]["at_risk"] == 0 and seen[0]["measured"] == seen[0]["world_error"]
    assert seen[1]["at_risk"] > 0 and seen[1]["lm_shift"] > seen[1]["readout_margin"]
