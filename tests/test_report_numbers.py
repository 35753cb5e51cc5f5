"""The numbers report.md and the console table read from a sweep's rows, each of which a wrong version passed
every other test with (a mutation review, 2026-12-07).  Rows built by hand (registry.row and the shared
columns); < 1 s each."""

import json
import math

import pytest

from simlm.experiments.registry import row
from simlm.experiments.report import _fit, bound_summary, console_table, markdown
from simlm.experiments.store import CellStore
from simlm.jsonio import jsonable, write_json_atomic

SHARED = {"paper": "p", "check": "c", "world": "w", "world_seed": 0, "lm_seed": None, "eps": 0.1, "eps_se": 0.0}


def _stored(lm: str, r: dict, **over) -> dict:
    """Row ``r`` of LM ``lm`` as strict JSON stores it (NaN and ±inf become null)."""
    return json.loads(json.dumps(jsonable({**SHARED, "lm": lm, **r, **over})))


def _dir(tmp_path, summary=None):
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    if summary is not None:
        write_json_atomic(tmp_path / "summary.json", summary)
    return tmp_path


# ---- console_table -------------------------------------------------------------------------------------------

def test_the_console_table_says_it_is_cut_only_when_it_is():
    """Exactly ``limit`` bounded rows: every one is shown and no "… the first N of N" line claims a cut
    (a ``>=`` there passed)."""
    rows = [_stored(f"lm{i}", row("q", 0.1 * i, 1.0)) for i in range(3)]
    lines = console_table(rows, limit=3).splitlines()
    assert len(lines) == 2 + 3 and not lines[-1].startswith("…")
    cut = console_table(rows, limit=2).splitlines()[-1]
    assert cut == "… the first 2 of 3 bounded rows; every row is in results.csv"


def test_fit_keeps_a_name_of_exactly_its_width_and_cuts_a_third_and_two_thirds():
    """A name exactly as wide as its column is shown whole (a ``<`` there passed); a longer one keeps its first
    third and last two thirds, ``width`` characters in all (a tail of 2·width // 3 passed)."""
    assert _fit("abcdefghij", 10) == "abcdefghij"
    text = "x" * 10 + "0123456789abcdefghijklmnopqrstuvwxyz"
    for width in (10, 22, 26, 32):
        cut = _fit(text, width)
        tail = 2 * (width - 1) // 3
        assert len(cut) == width and cut == text[: width - 1 - tail] + "…" + text[-tail:]
    assert _fit(text, 26) == text[:9] + "…" + text[-16:]


# ---- bound_summary -----------------------------------------------------------------------------------------------

def test_the_trivial_rows_range_is_their_lowest_and_highest_share_in_any_row_order(tmp_path):
    """``trivial_used`` is (min, max) over the trivial rows' shares, not the first and last row's (shares 0.5,
    −1, 1 in store order read "0.5 to 1")."""
    rows = [_stored(lm, row("q", m, 0.3, baseline=0.2, maximum=0.3)) for lm, m in (("a", 0.25), ("b", 0.1), ("c", 0.3))]
    assert [r["trivial"] for r in rows] == [True] * 3
    [s] = bound_summary(rows)
    assert s["trivial_used"] == pytest.approx((-1.0, 1.0))
    assert "| c | q | 3 | 0 | 3 | – (trivial: -1 to 1) | – |" in markdown(rows, _dir(tmp_path), [])
    [s] = bound_summary(rows[::-1])  # the order of the rows does not matter
    assert s["trivial_used"] == pytest.approx((-1.0, 1.0))


def test_the_tolerance_sentence_names_the_largest_atol_a_check_forgives(tmp_path):
    """A check whose rows forgive 1e-7 and 0 (or 1e-9) forgives up to 1e-7: the sentence named "judged exactly"
    (the least atol, not the largest) for a check one of whose rows held only within its 1e-7."""
    rows = [_stored("a", row("q", 0.30000001, 0.3, atol=1e-7)), _stored("b", row("r", 0.1, 0.3)),
            {**_stored("x", row("q", 0.1, 0.3, atol=1e-9)), "check": "d"},
            {**_stored("y", row("q", 0.1, 0.3, atol=1e-7)), "check": "d"}]
    assert rows[0]["holds"] and rows[0]["slack_used"] > 1
    text = markdown(rows, _dir(tmp_path), [])
    assert "the rounding its check forgives: c 1e-07, d 1e-07; every other check's rows are judged exactly" in text


# ---- plot data ---------------------------------------------------------------------------------------------------

def test_the_oracle_at_eps_zero_is_drawn_at_the_axis_oracle_column_not_at_zero(tmp_path, monkeypatch):
    """An ε = 0 row (the oracle) is drawn at ``_oracle_x`` (1e-4 here) on the log ε axis, measured and bound;
    at x = 0 a log axis drops it with a warning only (``_eps_key(r) >= 0`` passed)."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from simlm.experiments import report

    figs = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: figs.__setitem__(fname, self))
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    rows = [{"check": "c/x", "quantity": "q", "world": "w", "lm": lm, "lm_seed": None, "eps": eps, "measured": m,
             "bound": 1.0, "holds": True, "trivial": None, "slack_used": m} for lm, eps, m in
            (("oracle", 0.0, 0.25), ("a@0.1", 0.1, 0.5))]
    report.plot(rows, tmp_path)
    [fig] = {id(f): f for f in figs.values()}.values()
    points = sorted(tuple(map(float, xy)) for c in fig.axes[0].collections for xy in c.get_offsets())
    assert points == [(1e-4, 0.25), (1e-4, 1.0), (0.1, 0.5), (0.1, 1.0)]


def test_an_infinite_share_is_no_share_the_report_says_violated(tmp_path):
    """A violated row with an infinite measured value, as the store keeps it now (inf, not null): its
    slack_used is inf, which the report reads as no share (``_number``: finite numbers only) — `violated`,
    not `inf`; an infinite bound is drawn as no point (``_number`` passing ±inf passed)."""
    rows = [{**SHARED, "lm": "bad", **row("q", math.inf, 1.0)}, {**SHARED, "lm": "ok", **row("q", 0.5, 1.0)}]
    assert rows[0]["slack_used"] == math.inf and not rows[0]["holds"]
    [s] = bound_summary(rows)
    assert math.isnan(s["worst_used"]) and s["worst_lm"] == "w/bad"
    assert "| c | q | 2 | 1 | 0 | violated | w/bad |" in markdown(rows, _dir(tmp_path), [])


def test_each_runs_line_counts_the_cells_it_computed_and_failed(tmp_path):
    """The run log's cells_computed / cells_failed reach the report as they are: "(2 more failed)" only where
    the run failed cells, and a run logged before cells_failed was recorded is no KeyError (the failure
    clause keyed on cells_computed passed)."""
    from simlm.experiments.store import log_run

    out = _dir(tmp_path)
    log_run(out / "environment.json", {"time": "t1", "cells_computed": 3, "cells_failed": 2})
    log_run(out / "environment.json", {"time": "t2", "cells_computed": 4, "cells_failed": 0})
    log_run(out / "environment.json", {"time": "t3", "cells_computed": 1})  # an older simlm's log
    text = markdown([], out, [])
    assert ": computed 3 cells (2 more failed)\n" in text
    assert ": computed 4 cells\n" in text and ": computed 1 cell\n" in text


def test_a_row_without_an_eps_is_not_drawn_in_the_oracles_column(tmp_path, monkeypatch):
    """A row whose check built its own LM has no ε (the console shows "–"): it is not drawn, where a plot
    without the ε filter drew it at the oracle's column as an ε = 0 LM; a check with only such rows has no
    figure."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from simlm.experiments import report

    figs = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: figs.__setitem__(str(fname), self))
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)

    def r(check, lm, eps, m):
        return {"check": check, "quantity": "q", "world": "w", "lm": lm, "lm_seed": None, "eps": eps, "measured": m,
                "bound": 1.0, "holds": True, "trivial": None, "slack_used": m}

    rows = [r("c/x", "a@0.1", 0.1, 0.5), r("c/x", "own", None, 0.25), r("c/y", "own", None, 0.75)]
    assert [p.name for p in report.plot(rows, tmp_path)] == ["c_x.png"]
    [fig] = {id(f): f for f in figs.values()}.values()
    points = sorted(tuple(map(float, xy)) for c in fig.axes[0].collections for xy in c.get_offsets())
    assert points == [(0.1, 0.5), (0.1, 1.0)]
