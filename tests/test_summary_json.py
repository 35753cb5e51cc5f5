"""The summary.json a sweep writes counts what the run's result and the cell store say (each test read a
count a wrong version passed every other test with: a mutation review, 2026-12-07).  A three-part check on a
2-state HMM's oracle cell; ~1-2 s each."""

import json

import pytest

from simlm.errors import SimlmError
from simlm.experiments import registry
from simlm.experiments.registry import register, row
from simlm.experiments.store import read_runs
from simlm.experiments.sweep import parse_config, run_sweep

WORLD = {"name": "h", "kind": "hmm", "seed": 1, "options": {"n_states": 2, "n_symbols": 2}}
PARTS = {"name": "parts", "seed": 0, "data": {"n_sequences": 2, "length": 2}, "worlds": [WORLD],
         "lms": {"oracle": True}, "checks": {"test/parts": {}}}


@pytest.fixture
def parts_check(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", registry.checks())
    fail = {}

    @register("test/parts", paper="none", description="three parts", defaults={"scale": 1.0},
              parts=lambda w, l, o: ["p2", "p0", "p1"])  # a plan order that is not sorted
    def run(cell):
        if cell.part in fail:
            raise fail[cell.part]
        return [row("x", float(int(cell.part[1])), 1.5)]

    return fail


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_summary_counts_a_failed_cell_as_attempted_not_computed(parts_check, tmp_path):
    """A run of 3 cells, one failing: summary.json says 3 cells, 3 new (attempted), 2 rows and the failure;
    the run log 2 computed and 1 failed (new_cells = new − failed passed).  The
    rerun computes the failed cell only: 1 new, 1 computed, 0 failed; its order is the plan's."""
    parts_check["p1"] = SimlmError("boom")
    result = run_sweep(parse_config(PARTS), tmp_path, progress=False)
    s = _summary(tmp_path)
    assert (s["cells"], s["new_cells"], s["rows"], len(s["errors"])) == (3, 3, 2, 1) == \
        (result["cells"], result["new_cells"], len(result["rows"]), len(result["errors"]))
    assert s["order"] == [f"h|oracle#None|test/parts|{p}" for p in ("p2", "p0", "p1")]
    assert [(r["cells_computed"], r["cells_failed"]) for r in read_runs(tmp_path / "environment.json")] == [(2, 1)]
    del parts_check["p1"]
    run_sweep(parse_config(PARTS), tmp_path, progress=False)
    s = _summary(tmp_path)
    assert (s["cells"], s["new_cells"], s["rows"], s["errors"]) == (3, 1, 3, [])
    assert [(r["cells_computed"], r["cells_failed"]) for r in read_runs(tmp_path / "environment.json")] == \
        [(2, 1), (1, 0)]


def test_summary_rows_are_the_rows_the_run_tabulated_outside_the_plan_too(parts_check, tmp_path):
    """Stored cells outside the plan are tabulated after the plan's (results.csv, the result's rows):
    summary.json's ``rows`` counts them too (len(rows) − len(extra) passed)."""
    run_sweep(parse_config(PARTS), tmp_path, progress=False)
    entry = json.loads((tmp_path / "cells.jsonl").read_text().splitlines()[0])
    with open(tmp_path / "cells.jsonl", "a") as f:
        f.write(json.dumps({**entry, "cell": "h|oracle#None|test/parts|stale"}) + "\n")
    with pytest.warns(RuntimeWarning, match="not in this run's plan"):
        result = run_sweep(parse_config(PARTS), tmp_path, progress=False)
    assert _summary(tmp_path)["rows"] == len(result["rows"]) == 4
    assert len((tmp_path / "results.csv").read_text().strip().splitlines()) == 1 + 4


def test_an_earlier_runs_failure_outside_the_plan_is_not_this_runs_failure(parts_check, tmp_path):
    """A failed cell an earlier run stored under a key this plan does not have (other code's key) is not
    attempted now: this run computed 0 cells and failed 0, not −1 and 1 (failures counted whatever
    run stored them passed)."""
    run_sweep(parse_config(PARTS), tmp_path, progress=False)
    entry = json.loads((tmp_path / "cells.jsonl").read_text().splitlines()[0])
    with open(tmp_path / "cells.jsonl", "a") as f:
        f.write(json.dumps({**entry, "cell": "h|oracle#None|test/parts|stale", "records": [], "error": "old"}) + "\n")
    with pytest.warns(RuntimeWarning, match="not in this run's plan"):
        result = run_sweep(parse_config(PARTS), tmp_path, progress=False)
    assert result["new_cells"] == 0
    assert [(r["cells_computed"], r["cells_failed"]) for r in read_runs(tmp_path / "environment.json")] == \
        [(3, 0), (0, 0)]
