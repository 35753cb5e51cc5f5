"""(A mutation review, 2026-12-07.)  The check's own head rows carry the bound at ρ = max_x |r_LM(x) − r*(x)|,
the LM's anchor residual against the world's (a check passing r* for both, ρ = 0, passed every test: its
rows' informative bounds were the contrast task's, Σc = 0, where ρ does not enter; rho read 0 for 0.0107)."""

from __future__ import annotations

import numpy as np
import pytest

from test_anchors import _anchor_cell
from test_anchors_review import _brute_bound


@pytest.mark.parametrize("eps", [1e-4, 0.1])
def test_the_checks_head_rows_read_the_bound_at_the_lms_rho(eps):
    rows, ctx, bulk, fit, logp, r_lm, tasks = _anchor_cell(eps)
    rho = float(np.abs(r_lm - fit.residual)[ctx.weights > 0].max())
    assert rho > 0.01
    heads = [r for r in rows if ":head_error" in r["quantity"] and not r["quantity"].startswith("worst-case:")]
    assert len(heads) == 6
    for r in heads:
        assert r["rho"] == pytest.approx(rho, rel=1e-12)
        task = tasks[r["quantity"].split(":")[0]]
        assert r["bound"] == pytest.approx(_brute_bound(task, ctx, bulk, logp, rho, r["form"]), rel=1e-9, abs=1e-15)
