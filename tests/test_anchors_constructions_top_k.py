"""(A mutation review, 2026-12-07.)  ``constructions`` reads the config's top_k whatever it is (the test
beside it set top_k = 2, and a constructions hard-wired to 2 passed)."""

from __future__ import annotations

import pytest

from simlm.experiments.anchors import build_world, constructions, sweep_config
from simlm.theory.anchors import anchor_contexts, bulk_mask, world_anchor_fit


@pytest.mark.parametrize("top_k", [2, 4])
def test_the_constructions_fit_on_the_configs_top_k(top_k):
    raw = sweep_config(quick=True)
    raw["checks"]["wu/anchors"]["top_k"] = top_k
    raw["worlds"] = raw["worlds"][1:2]  # the unstructured world alone: its fit, no N1/N2
    ctx = anchor_contexts(build_world(raw["worlds"][0]))
    want = world_anchor_fit(ctx, bulk_mask(ctx.logp, top_k=top_k))
    got = constructions(raw)["fit:unstructured"]
    assert (got["r2"], got["mse"], got["max_residual"]) == (want.r2, want.mse, want.max_residual)
