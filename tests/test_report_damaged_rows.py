"""`simlm report` of a results directory whose stored rows were hand-edited: every case ended in a raw
KeyError / TypeError / AttributeError traceback (or a silent miscount), not a line naming the file."""
import json
import warnings

import pytest

from simlm.cli import main
from simlm.experiments import registry
from simlm.experiments.registry import register, row
from simlm.experiments.sweep import parse_config, read_results, run_sweep

ROW = {"paper": "p", "check": "simlm/epsilon", "world": "h", "world_seed": 1, "lm": "oracle", "lm_seed": None,
       "eps": 0.0, "eps_se": 0.0, "quantity": "tv", "measured": 0.0, "bound": 0.1, "holds": True, "trivial": False,
       "slack_used": 0.0, "atol": 0.0}


def _dir(tmp_path, *rows, entry=None, env=None):
    d = tmp_path / "run"
    d.mkdir()
    (d / "sweep.json").write_text(json.dumps({"name": "t"}))
    lines = [json.dumps({"cell": f"h|oracle#None|c{i}", "records": [r], "error": None, "code": "abc", **(entry or {})})
             for i, r in enumerate(rows)]
    (d / "cells.jsonl").write_text("\n".join(lines) + "\n")
    if env is not None:
        (d / "environment.json").write_text(json.dumps({"runs": [env]}))
    return d


def _without(key):
    return {k: v for k, v in ROW.items() if k != key}


@pytest.mark.parametrize("bad", [_without("check"), _without("world"), _without("lm"), _without("quantity"),
                                 {**_without("check"), "bound": None, "holds": None},  # an unbounded row: plot()
                                 {**ROW, "check": 5}, {**ROW, "world": None}, {**ROW, "lm": 3}, {**ROW, "eps": "abc"}],
                         ids=["no-check", "no-world", "no-lm", "no-quantity", "unbounded-no-check", "check-int",
                              "world-null", "lm-int", "eps-text"])
def test_report_of_a_row_missing_a_column_is_no_traceback(tmp_path, bad):
    d = _dir(tmp_path, ROW, bad)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert main(["report", str(d)]) == 0  # was KeyError: 'check' (report.py console_table), TypeError in _fit/plot
    assert (d / "cells.jsonl.corrupt-1").exists()  # the file as it was, kept
    rows = read_results(d)
    assert len(rows) == 1 and rows[0] == ROW  # the damaged cell dropped (a rerun recomputes it)


def test_trivial_as_text_is_a_damaged_row_not_a_trivial_one(tmp_path):
    d = _dir(tmp_path, ROW, {**ROW, "trivial": "false"})  # bool("false") is True: counted trivial silently
    with pytest.warns(RuntimeWarning, match="corrupt"):
        rows = read_results(d)
    assert all(isinstance(r["trivial"], (bool, type(None))) for r in rows)


@pytest.mark.parametrize("code", [[1], {"a": 1}])
def test_a_cell_code_that_is_no_text_is_no_traceback(tmp_path, code):
    d = _dir(tmp_path, ROW, entry={"code": code})
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert main(["report", str(d)]) == 0  # was TypeError: unhashable type (store.py CellStore.codes)


@pytest.mark.parametrize("run", [{"devices": None}, {"devices": [0]}, {"cpu": 5}, {"packages": ["flax"]}],
                         ids=["devices-null", "devices-int", "cpu-int", "packages-list"])
def test_a_hand_edited_run_log_is_no_traceback(tmp_path, run):
    d = _dir(tmp_path, ROW, env={"time": "t", "code": "abc", **run})
    assert main(["report", str(d)]) == 0  # was TypeError / AttributeError in report._runs
    assert "computed by 1 run" in (d / "report.md").read_text()


TINY = {"name": "p", "seed": 0, "data": {"n_sequences": 2, "length": 2},
        "worlds": [{"name": "h", "kind": "hmm", "seed": 1, "options": {"n_states": 2, "n_symbols": 2}}],
        "lms": {"oracle": True}}


@pytest.mark.parametrize("bad, column", [(row("x", 2.0, 1.0, lm=None), "lm"), (row("x", 2.0, 1.0, lm=3), "lm"),
                                         (row("x", 2.0, 1.0, lm="mine", eps="small"), "eps"),
                                         ({"quantity": "x", "measured": 1.0, "trivial": "n/a"}, "trivial")])
def test_a_row_the_store_would_drop_is_its_cells_error_not_written(monkeypatch, tmp_path, bad, column):
    """The sweep writes by the rule it reads by (store.row_problem): a check's violated row with lm = None was
    written, dropped as a damaged line by the sweep's own reopening and reported as "0 of 0 bounded rows
    violated", 0 cells failed, exit 0 — and every rerun computed and dropped it again (a review, 2026-12-07)."""
    monkeypatch.setattr(registry, "_REGISTRY", registry.checks())
    register("test/bad-column", paper="none", description="x")(lambda cell: [bad])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = run_sweep(parse_config({**TINY, "checks": {"test/bad-column": {}}}), tmp_path, progress=False)
        read_results(tmp_path)
    assert [e["cell"] for e in result["errors"]] == ["h|oracle#None|test/bad-column"]
    assert f"has {column} = " in result["errors"][0]["error"]
    assert not list(tmp_path.glob("cells.jsonl.corrupt-*"))
