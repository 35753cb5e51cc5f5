"""`simlm report` of a results directory whose stored rows were hand-edited: every case ended in a raw
KeyError / TypeError / AttributeError traceback (or a silent miscount), not a line naming the file."""
import json

import pytest

from simlm.cli import main
from simlm.experiments.sweep import read_results

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
    rows = read_results(d)
    assert len(rows) == 1 and rows[0] == ROW  # the damaged cell dropped (kept in cells.jsonl.corrupt-1), recomputed


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
