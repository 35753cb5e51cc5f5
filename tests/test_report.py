"""The report of a results directory, from hand-made stored cells (no sweep is run): nulls and text values
render, a row with an infinite or NaN bound stays a bounded row, the worst row is one that could fail and
names its LM's seed, and the cells, the failures and the runs come from the directory as it is now."""

import json
import math

import pytest

from simlm.cli import main
from simlm.errors import ConfigError
from simlm.experiments.nested import leaf_name, leaf_rows
from simlm.experiments.registry import row
from simlm.experiments.report import bound_summary, console_table, markdown, plot
from simlm.experiments.store import CellStore
from simlm.jsonio import write_json_atomic

SHARED = {"paper": "p", "check": "c", "world": "w", "world_seed": 0, "lm": "oracle", "lm_seed": None, "eps": 0.0,
          "eps_se": 0.0}


def stored(out, cells: dict) -> list:
    """A results directory holding ``cells`` (key → records) as the sweep stores them; its rows."""
    write_json_atomic(out / "sweep.json", {"name": "hand-made"})
    store = CellStore(out / "cells.jsonl")
    for key, records in cells.items():
        store.add(key, records, error=None, seconds=0.0)
    return CellStore(out / "cells.jsonl").records()


@pytest.mark.parametrize("old_store", [False, True])
def test_a_report_renders_null_and_text_measured_values(old_store, tmp_path):
    """A nested result's None leaf and text leaf have a NaN ``measured`` (null in a store written before NaN
    was kept beside the rows): the tables show "–" and the text, and the plots leave them out (a quantity
    with no number has no panel)."""
    nested = [{**SHARED, "eps": 0.1, **r} for r in leaf_rows({"ari": None, "readout": "probe", "x": 1.5})]
    rows = stored(tmp_path, {"k": nested})
    assert math.isnan(rows[0]["measured"]) and math.isnan(rows[1]["measured"]) and rows[2]["measured"] == 1.5
    if old_store:
        (entry,) = [json.loads(line) for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
        (tmp_path / "cells.jsonl").write_text(json.dumps({k: v for k, v in entry.items() if k != "nonfinite"}))
        rows = CellStore(tmp_path / "cells.jsonl").records()
        assert [r["measured"] for r in rows] == [None, None, 1.5]
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| c | ari | w | oracle | 0.1 | – |" in report and "| c | readout | w | oracle | 0.1 | probe |" in report
    assert "| c | x | w | oracle | 0.1 | 1.5 |" in report
    assert plot(rows[:2], tmp_path) == []  # nothing to draw: no figure rather than an empty log-scale panel


def test_the_entries_of_a_nested_list_are_told_apart_in_the_measured_table(tmp_path):
    """A nested result's list gives one row per entry with the same check, quantity, world and LM: the table
    showed them as identical-looking rows ("apt[]").  Each now names its entry ("apt[0]"); a leaf outside a list
    as before."""
    nested = [{**SHARED, "eps": 0.1, **r} for r in leaf_rows({"apt": [0.25, 0.75], "x": 1.5})]
    report = markdown(stored(tmp_path, {"k": nested}), tmp_path, [])
    assert "| c | apt[0] | w | oracle | 0.1 | 0.25 |" in report and "| c | apt[1] | w | oracle | 0.1 | 0.75 |" in report
    assert "| c | x | w | oracle | 0.1 | 1.5 |" in report


@pytest.mark.parametrize("bound, holds, trivial", [(math.inf, True, 1), (math.nan, False, 0)])
def test_a_row_whose_bound_is_stored_as_null_still_counts_as_bounded(bound, holds, trivial, tmp_path):
    """Strict JSON stores an infinite bound (held, trivial) and a NaN bound (violated) as null — the store
    keeps them beside the rows since 2026-12-06, a store written before holds the nulls; either way the row
    keeps its verdict, so it stays among the bound's rows, violations and trivial rows."""
    kept = stored(tmp_path, {"k": [{**SHARED, **row("q", 0.5, bound, maximum=1.0)}]})
    assert repr(kept[0]["bound"]) == repr(bound)
    for rows in (kept, [{**kept[0], "bound": None}]):
        assert rows[0]["holds"] is holds
        [summary] = bound_summary(rows)
        assert (summary["rows"], summary["violations"], summary["trivial"]) == (1, int(not holds), trivial)
        text = markdown(rows, tmp_path, [])
        assert "| c | q | 1 |" in text and "Measured (no bound)" not in text
        assert " q " in console_table(rows)


def test_no_worst_row_is_named_when_no_row_that_could_fail_has_a_slack_used():
    """Rows that hold with no slack (bound = baseline) have no share of it: no worst row."""
    rows = [{**SHARED, "lm": lm, **row("q", measured, 0.0, baseline=0.0)} for lm, measured in (("A", -0.1), ("B", -0.2))]
    [summary] = bound_summary(rows)
    assert math.isnan(summary["worst_used"]) and summary["worst_lm"] == ""


def test_a_violated_row_without_a_share_of_the_slack_is_the_worst_row():
    rows = [{**SHARED, "lm": lm, **row("q", measured, 0.0, baseline=0.0)} for lm, measured in (("A", 0.1), ("B", 0.2))]
    [summary] = bound_summary(rows)
    assert summary["violations"] == 2 and math.isnan(summary["worst_used"]) and summary["worst_lm"] == "w/B"


def test_the_header_counts_the_stored_cells_and_the_worst_row_names_the_lm_seed(tmp_path):
    """Two cells of one LM label at two seeds are two cells, and the worst row says which seed."""
    cells = {f"w|logit-noise@0.1#{seed}|c": [{**SHARED, "lm": "logit-noise@0.1", "lm_seed": seed, "eps": 0.1,
                                              **row(q, used, 1.0, maximum=2.0)} for q in ("q1", "q2")]
             for seed, used in ((0, 0.2), (1, 0.7))}
    rows = stored(tmp_path, cells)
    report = markdown(rows, tmp_path, [])
    assert "4 rows from 2 cells (0 failed)" in report
    assert bound_summary(rows)[0]["worst_lm"] == "w/logit-noise@0.1#1"


def test_failed_cells_are_read_from_the_cell_log_not_a_stale_summary(tmp_path):
    """After an interruption summary.json is an older one: the report's failures are the cell log's."""
    stored(tmp_path, {"ok": [{**SHARED, **row("q", 0.1)}]})
    CellStore(tmp_path / "cells.jsonl").add("w|oracle#None|c2", [], error="SimlmError: boom", seconds=0.0)
    write_json_atomic(tmp_path / "summary.json", {"errors": [{"cell": "gone", "error": "recomputed since"}]})
    report = markdown(CellStore(tmp_path / "cells.jsonl").records(), tmp_path, [])
    assert "2 cells (1 failed)" in report and "`w|oracle#None|c2`: SimlmError: boom" in report
    assert "recomputed since" not in report


def test_the_run_log_keeps_every_run_and_reads_the_single_run_form(tmp_path):
    from simlm.experiments.store import log_run, read_runs

    path = tmp_path / "environment.json"
    write_json_atomic(path, {"simlm": "0.0.1", "time": "first"})  # written by an older simlm
    assert [r["time"] for r in log_run(path, {"simlm": "0.1.0", "time": "second"})] == ["first", "second"]
    assert [r["time"] for r in read_runs(path)] == ["first", "second"]
    path.write_text('{"runs": [')
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert log_run(path, {"time": "third"}) == [{"time": "third"}]
    assert json.loads(path.read_text()) == {"runs": [{"time": "third"}]} and list(tmp_path.glob("*.corrupt-1"))


def test_two_processes_logging_runs_at_once_keep_every_run(tmp_path):
    """log_run's read-modify-write holds the store's lock: unlocked, two writers of 200 runs each kept 236 of
    400 (each rewrite dropped what the other had logged since its read), and two sweeps started at once
    took the same run index.  update_run adds a field to one run and keeps the others."""
    import subprocess
    import sys

    from simlm.experiments.store import read_runs, update_run

    path = tmp_path / "environment.json"
    go = tmp_path / "go"
    code = ("import os, sys, time\nfrom simlm.experiments.store import log_run\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            "for i in range(100): log_run(sys.argv[1], {'writer': sys.argv[3], 'i': i})\n")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(go), name]) for name in "ab"]
    go.touch()
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    runs = read_runs(path)
    assert sorted((r["writer"], r["i"]) for r in runs) == [(w, i) for w in "ab" for i in range(100)]
    update_run(path, 7, cells_computed=3)
    assert read_runs(path) == runs[:7] + [{**runs[7], "cells_computed": 3}] + runs[8:]
    with pytest.raises(ConfigError, match="not run 200"):
        update_run(path, 200, cells_computed=3)


def test_cells_record_the_code_that_computed_them_and_a_rerun_with_other_code_says_so(tmp_path, monkeypatch):
    from simlm.experiments import sweep

    config = sweep.parse_config({
        "worlds": [{"name": "hmm", "kind": "hmm", "seed": 0, "options": {"n_states": 2, "n_symbols": 3}}],
        "lms": {"oracle": True, "analytic": {"kinds": ["logit-noise"], "eps": [0.1, 0.3]}},
        "checks": {"simlm/epsilon": {}}})
    out = tmp_path / "run"
    sweep.run_sweep(config, out, progress=False)
    lines = (out / "cells.jsonl").read_text().splitlines()
    first = json.loads((out / "environment.json").read_text())["runs"][0]["code"]
    assert first == sweep.code_fingerprint() and len(first) == 12
    assert all(json.loads(line)["run"] == 0 and json.loads(line)["code"] == first for line in lines)
    assert f"code {first}" in markdown([], out, []) and "more than one code" not in markdown([], out, [])
    # the code changes and one cell is recomputed: the finished ones are reused, with a warning that says so —
    # even when the run log is lost meanwhile (each cell keeps its own code, not just its run's number)
    (out / "cells.jsonl").write_text("\n".join(lines[1:]) + "\n")
    (out / "environment.json").write_text("{")
    monkeypatch.setattr(sweep, "code_fingerprint", lambda: "0123456789ab")
    with pytest.warns(RuntimeWarning) as caught:
        sweep.run_sweep(config, out, progress=False)
    assert any(f"{len(lines) - 1} of its {len(lines) - 1} finished cells were computed by other code than this run's "
               f"(0123456789ab): {len(lines) - 1} by {first}" in str(w.message) for w in caught)
    assert json.loads((out / "cells.jsonl").read_text().splitlines()[-1])["code"] == "0123456789ab"
    report = markdown([], out, [])
    assert "**The cells come from more than one code**" in report
    assert f"{len(lines) - 1} cells from {first}" in report and "1 cell from 0123456789ab" in report


def test_a_row_holds_at_its_bound_and_is_trivial_at_the_maximum():
    """``holds`` is measured ≤ bound and ``trivial`` needs bound ≥ maximum and measured ≤ maximum: equality
    on either side counts (a value at the bound holds; a bound at the maximum cannot be violated)."""
    assert row("q", 1.0, 1.0)["holds"] is True and row("q", 1.5, 1.0)["holds"] is False
    assert row("q", 1.0, 1.0, maximum=1.0)["trivial"] is True
    assert row("q", 0.5, 1.0, maximum=1.0)["trivial"] is True     # bound = maximum
    assert row("q", 1.0, 2.0, maximum=1.0)["trivial"] is True     # measured = maximum
    assert row("q", 0.5, 0.9, maximum=1.0)["trivial"] is False    # a bound below the maximum could fail
    assert row("q", 1.5, 2.0, maximum=1.0)["trivial"] is False    # measured beyond the maximum disproves it


def test_a_row_forgives_its_atol_records_it_and_judges_exactly_without_one():
    """``holds`` = measured ≤ bound + atol: half an atol over holds, twice over is violated; without an atol a
    value one ulp over its bound is violated.  Every bounded row keeps its ``atol`` (0 by default)."""
    assert row("q", 1.0 + 5e-8, 1.0, atol=1e-7)["holds"] is True
    assert row("q", 1.0 + 2e-7, 1.0, atol=1e-7)["holds"] is False
    assert row("q", math.nextafter(1.0, 2.0), 1.0)["holds"] is False
    assert row("q", 1.0, 1.0, atol=1e-7)["atol"] == 1e-7 and row("q", 1.0, 1.0)["atol"] == 0.0
    # the maximum and the bound are judged with the atol too (a bound 1 ulp below its maximum, or a value 1 ulp
    # above it, is rounding: the row is trivial), and beyond it not
    assert row("q", 2.0 + 5e-8, 2.0, maximum=2.0, atol=1e-7)["trivial"] is True
    assert row("q", 2.0 + 2e-7, 2.0 + 3e-7, maximum=2.0, atol=1e-7)["trivial"] is False


def test_a_slack_within_the_atol_has_no_share():
    """Slack no larger than the atol is rounding, not room: ``slack_used`` is None there (and where the
    bound is at or below the baseline), the share above it."""
    assert row("q", 0.5 + 1e-10, 0.5 + 1e-8, baseline=0.5, atol=1e-7)["slack_used"] is None
    assert row("q", 0.5 + 1e-10, 0.5 + 1e-8, baseline=0.5)["slack_used"] == pytest.approx(0.01)
    assert row("q", 0.75, 1.0, baseline=0.5, atol=1e-7)["slack_used"] == pytest.approx(0.5)


@pytest.mark.parametrize("atol", [-1e-9, math.nan, math.inf, True, "1e-7", None])
def test_a_bad_atol_is_a_config_error_naming_it(atol):
    with pytest.raises(ConfigError, match="atol"):
        row("q", 0.5, 1.0, atol=atol)


@pytest.mark.parametrize("measured, bound, baseline, used", [(0.75, 1.0, 0.5, 0.5), (0.5, 1.0, 0.5, 0.0),
                                                             (1.0, 1.0, 0.5, 1.0), (0.2, 0.6, -0.2, 0.5),
                                                             (1.5, 1.0, 0.0, 1.5)])
def test_slack_used_is_the_share_of_the_slack_above_the_baseline(measured, bound, baseline, used):
    """``slack_used`` = (measured − baseline) / (bound − baseline): 0 at the baseline, 1 at the bound."""
    assert row("q", measured, bound, baseline=baseline)["slack_used"] == pytest.approx(used)


def test_a_row_whose_bound_is_below_its_baseline_has_no_share_and_is_not_the_worst():
    """No slack where bound ≤ baseline, also where the bound is below it: ``slack_used`` is None, and the
    worst row is the one with a share of its slack (0.4 of 0.5 = 0.8), not the one judged by ``holds`` alone."""
    below = {**SHARED, "lm": "A", **row("q", 0.3, 0.4, baseline=0.5)}
    above = {**SHARED, "lm": "B", **row("q", 0.9, 1.0, baseline=0.5)}
    assert below["holds"] is True and below["slack_used"] is None
    [summary] = bound_summary([below, above])
    assert summary["violations"] == 0 and summary["worst_used"] == pytest.approx(0.8) and summary["worst_lm"] == "w/B"


def test_the_report_says_violated_only_for_a_violated_row_without_a_share(tmp_path):
    """A bound with no slack (bound = baseline) that holds has no worst row ("–"); one that is violated
    shows "violated"."""
    rows = stored(tmp_path, {"k": [{**SHARED, **row("q", -0.1, 0.0, baseline=0.0)},
                                   {**SHARED, **row("r", 0.1, 0.0, baseline=0.0)}]})
    report = markdown(rows, tmp_path, [])
    assert "| c | q | 1 | 0 | 0 | – | – |" in report
    assert "| c | r | 1 | 1 | 0 | violated | w/oracle |" in report


def test_a_violated_row_within_atol_of_the_maximum_is_not_trivial():
    """bound = maximum − atol, measured just above bound + atol (= maximum) but within maximum + atol: the row
    fails, so no "could not fail" claim may be made for it (dropping `holds` from the flag passed every test)."""
    r = row("q", 1.0 + 5e-8, 1.0 - 1e-7, maximum=1.0, atol=1e-7)
    assert r["holds"] is False and r["trivial"] is False


def test_the_slack_share_is_kept_just_above_the_atol():
    """bound − baseline = 5·atol: a real slack, its share is reported; exactly atol: none, as documented (the
    tests sat at 0.1·atol and far above it, so a cut-off ten times off passed)."""
    r = row("q", 0.5 + 1e-7, 0.5 + 5e-7, baseline=0.5, atol=1e-7)
    assert r["slack_used"] == pytest.approx(0.2, rel=1e-6)
    # bound − baseline = atol exactly (0.25 is exact in binary): no slack beyond rounding
    assert row("q", 0.6, 0.75, baseline=0.5, atol=0.25)["slack_used"] is None


def test_an_infinite_measured_value_under_an_infinite_bound_is_not_called_trivial():
    """An infinite bound is trivial only for a finite measured value (inf ≤ inf holds, and says nothing)."""
    r = row("q", math.inf, math.inf)
    assert r["holds"] is True and r["trivial"] is None


def test_leaf_name_puts_each_list_position_in_its_own_mark():
    """Nested lists: report.md names rungs[2]/rows[7], not rungs[7]/rows[2] (only one list level was tested)."""
    assert leaf_name("rungs[]/rows[]/apt", "2/7") == "rungs[2]/rows[7]/apt"
    assert leaf_name("m[][]", "0/1") == "m[0][1]"


def test_the_console_table_shows_a_missing_eps_as_a_dash_not_nan():
    """A check that builds its own LM has no ε: the CSV leaves it empty, report.md writes "–", and the console
    printed "nan" (a review, 2026-12-07)."""
    own, measured = ({**SHARED, **row("q", 0.5, 1.0), "eps": eps} for eps in (None, 0.0125))
    lines = console_table([own, measured]).splitlines()[2:]
    assert [line.split()[3] for line in lines] == ["–", "0.0125"] and "nan" not in "".join(lines)
