"""(A mutation review, 2026-12-07.)  The anchors experiment's summary of the bound rows, by hand: each form
counts its own rows only, and ``nontrivial`` lists exactly the rows the trivial count leaves out."""

from __future__ import annotations

import pytest

from simlm.experiments.anchors import summarise
from simlm.experiments.registry import row


def _rows():
    def lm_row(lm, eps, quantity, measured, bound, maximum=1.0):
        return {"world": "anchor", "lm_seed": 0, "lm": lm, "eps": eps,
                **row(quantity, measured, bound, maximum=maximum)}

    return [
        lm_row("logit-noise@0.1", 0.1, "anchored:head_error", 0.1, 0.4),
        lm_row("logit-noise@0.1", 0.1, "anchored:head_error@per-context", 0.1, 0.2),
        lm_row("logit-noise@0.3", 0.3, "anchored:head_error", 0.2, 1.0),  # trivial
        lm_row("logit-noise@0.3", 0.3, "anchored:head_error@per-context", 0.2, 0.8),
        lm_row("adversarial-flips@0.1", 0.1, "worst-case:anchored:head_error@per-context", 0.15, 0.15,
               maximum=0.15),  # trivial: the reachable error
    ]


def test_each_form_counts_its_own_rows_and_lists_its_nontrivial_ones():
    out = summarise(_rows())
    markov, pc = out["bound@markov"], out["bound@per-context"]
    # "head_error" in the quantity (not its end) counted the per-context rows under markov too: 5 rows, 2 trivial
    assert (markov["rows"], markov["violated"], markov["trivial"]) == (2, 0, 1)
    assert (pc["rows"], pc["violated"], pc["trivial"]) == (3, 0, 1)
    # the non-trivial rows listed are those the counts leave non-trivial (every row listed passed every test)
    assert [(r["lm"], r["quantity"]) for r in markov["nontrivial"]] == [("logit-noise@0.1", "anchored:head_error")]
    assert sorted((r["lm"], r["slack_used"]) for r in pc["nontrivial"]) == [("logit-noise@0.1", pytest.approx(0.5)),
                                                                          ("logit-noise@0.3", pytest.approx(0.25))]
    assert len(markov["nontrivial"]) == markov["rows"] - markov["trivial"]
    assert len(pc["nontrivial"]) == pc["rows"] - pc["trivial"]
    assert markov["worst_slack_used"] == pytest.approx(0.25) and pc["worst_slack_used"] == pytest.approx(0.5)
