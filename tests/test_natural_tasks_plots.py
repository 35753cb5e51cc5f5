"""The natural-tasks figure counts what it draws and says what it leaves out (a review, 2026-12-07)."""

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simlm.experiments import natural_tasks as nt  # noqa: E402


def _row(features, bound, excess, holds=True, trivial=False, choice="B*"):
    return {"features": features, "bound": bound, "B_choice": choice, "task": "p_L", "slack": 0.1,
            "excess_natural": excess, "ratio_natural": excess / 0.1, "eps_bound": 0.01, "gamma_bound": 1.0,
            "trivial": trivial, "holds": holds, "lm": "theta-noise", "world": "hmm", "target_eps": 0.01}


def _figure(result, tmp_path, monkeypatch):
    figs = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: figs.__setitem__(Path(fname).stem, self))
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    nt.plot(result, tmp_path)
    return figs["natural_tasks"]


def test_the_title_counts_the_bounds_drawn_and_panels_say_how_many_excesses_they_leave_out(tmp_path, monkeypatch):
    rows = [_row("p_f", "any-lm", 0.02), _row("p_f", "any-lm", -0.01),  # the second: excess < 0, not on a log axis
            _row("p_f", "well-specified", 0.2, holds=False),  # no panel draws the well-specified bound
            _row("Φp_f", "softmax", 0.01), _row("f", "quad", 0.01)]
    rows += [{**r, "B_choice": "B_tau"} for r in rows]
    result = {"rows": rows, "violations": [r for r in rows if not r["holds"] and r["B_choice"] == "B*"],
              "log_partition": [{"world": "hmm", "source": "world-Φ", "r2_logz": 0.99, "r2_mean": 0.98,
                                 "determined": True}]}
    fig = _figure(result, tmp_path, monkeypatch)
    title = fig._suptitle.get_text()
    assert "0 violations in the 4 bounds drawn" in title and "1 violations" in title
    eps_panel = next(ax for ax in fig.axes if ax.get_title().startswith("p_f (any-lm) at B*"))
    assert "1 of 2 with excess ≤ 1e-09 not drawn" in eps_panel.get_title()
