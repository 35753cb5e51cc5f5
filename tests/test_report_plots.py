"""The sweep report's figures tell their LMs apart and mark trivial and violated rows (a review, 2026-12-07:
the demo drew adversarial-aligned and theta-noise in one colour, and a trivial row like one that could fail)."""

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simlm.experiments import report  # noqa: E402


def _row(lm, eps, measured, bound, holds, trivial=False, check="c/x", world="w"):
    return {"check": check, "quantity": "q", "world": world, "lm": lm, "lm_seed": None, "eps": eps,
            "measured": measured, "bound": bound, "holds": holds, "trivial": trivial, "slack_used": 0.5}


def _figures(rows, tmp_path, monkeypatch):
    figs = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: figs.__setitem__(Path(fname).stem, self))
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    report.plot(rows, tmp_path)
    return figs


def test_every_lm_source_of_a_figure_has_its_own_colour(tmp_path, monkeypatch):
    # ten sources in one check: the palette of nine wrapped, the first and the tenth were drawn alike
    rows = [_row(f"src{i:02d}@0.1", 0.1, 0.1 * i, 1.0, True) for i in range(10)]
    fig = _figures(rows, tmp_path, monkeypatch)["c_x"]
    legend = fig.legends[0]
    colours = {t.get_text(): to_hex(h.get_color()) for h, t in zip(legend.legend_handles, legend.get_texts())
               if t.get_text().startswith("src")}
    assert len(colours) == 10 and len(set(colours.values())) == 10


def test_trivial_rows_are_faint_and_violated_rows_are_marked(tmp_path, monkeypatch):
    rows = [_row("a@0.1", 0.1, 0.2, 1.0, True, trivial=True), _row("a@0.01", 0.01, 0.05, 0.1, True),
            _row("a@0.3", 0.3, 0.9, 0.5, False)]
    fig = _figures(rows, tmp_path, monkeypatch)["c_x"]
    ax = fig.axes[0]
    filled = [(tuple(c.get_offsets()[0]), c.get_alpha(), to_hex(c.get_facecolors()[0]), c.get_paths()[0])
              for c in ax.collections if len(c.get_facecolors()) and c.get_facecolors()[0][3] > 0]
    faint = [xy for xy, a, _, _ in filled if a is not None and a < 1]
    assert faint == [(0.1, 0.2)]  # the trivial row only
    assert any(xy == (0.3, 0.9) and colour == "#ff0000" for xy, _, colour, _ in filled)  # the violated row
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "violated" in labels and any("trivial" in t for t in labels)
