"""Tables, plots and a Markdown report from a sweep's results directory alone (``simlm report DIR`` re-renders them).

For every quantity with a bound the report says how many rows hold, how many are *trivial* (they hold and
the bound is at least the largest value the quantity can take, so no LM could have violated it) and how
much of the slack the worst row uses ((measured − baseline) ÷ (bound − baseline), its ``slack_used``: the
baseline is what the bound allows at ε = 0, 0 unless the check names one).  A violated row is worse than
any row that holds, whatever their shares: the worst row of a bound with violations is a violated one.
Plots: one figure per check, one panel per quantity, measured against the LM's ε (filled) with the bound
(open), one colour per LM source, one marker per world.

The cell store keeps NaN and ±inf beside the rows (strict JSON writes them as null), but a store written
before 2026-12-06 holds nulls, so a stored number may be None: a row has a bound when it has a ``holds``
verdict (:func:`has_bound`), tables show a null as "–" (and a nested result's text leaf as its text, a None
leaf as "–"), NaN and ±inf as themselves, and plots leave out whatever is not a finite number.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from simlm.errors import ConfigError
from simlm.experiments.nested import leaf_name
from simlm.experiments.store import CellStore, read_runs
from simlm.jsonio import read_json


def has_bound(r) -> bool:
    """Whether row ``r`` has a bound: it has a ``holds`` verdict.  Its ``bound`` cannot say — a store written
    before non-finite values were kept beside the rows holds an infinite bound (trivially held) and a NaN one
    (violated) as null — but the verdict is kept."""
    return r.get("holds") is not None


def _number(v) -> float | None:
    """``v`` if it is a finite number, else None (a null, a text, NaN or ±inf)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _shown(v, spec: str) -> str:
    """``v`` written with ``spec`` if it is a number, "–" for a null, anything else as text."""
    if v is None:
        return "–"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _measured(r, spec: str) -> str:
    """A row's measured value for a table; a text leaf of a nested result (its ``text`` column, beside a
    NaN ``measured``, null in a store written before NaN was kept: :func:`simlm.experiments.nested.leaf_rows`)
    is shown as its text, a None leaf (``vtype`` none) as "–"."""
    m = r.get("measured")
    if m is None or (isinstance(m, float) and math.isnan(m)):
        if r.get("text") is not None:
            return str(r["text"])
        if r.get("vtype") == "none":
            return "–"
    return _shown(m, spec)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _eps_key(r) -> float:
    return r["eps"] if r.get("eps") is not None else math.nan


def _oracle_x(eps: list) -> float:
    """Where a plot's log ε axis draws ε = 0: at 1e-4, or a decade left of the smallest positive ε below it
    (an LM at ε = 7e-5 was drawn in the oracle's column, reading as ε = 0)."""
    return min([1e-4] + [e / 10 for e in eps if e > 0])


def _source(lm: str) -> str:
    return lm.split("@")[0]


def _lm(r) -> str:
    """The row's LM as its cells' keys name it: the label, and ``#seed`` where it has a seed."""
    return r["lm"] if r.get("lm_seed") is None else f"{r['lm']}#{r['lm_seed']}"


def console_table(rows: list, *, limit: int = 60) -> str:
    """The rows with a bound as ``check  world  lm  ε  quantity  measured  bound  holds``, worst first
    (:func:`worst_row`'s order, the trivial rows after the rest), the first ``limit`` of them; names too long
    for their column keep both ends (``adversari…B=1@0.01``: the end is what tells rows apart)."""
    every = sorted((r for r in rows if has_bound(r)), key=lambda r: (is_trivial(r), _worst_first(r)))
    head = f"{'check':22} {'world':10} {'lm':26} {'ε':>9} {'quantity':32} {'measured':>10} {'bound':>10} holds"
    lines = [head, "-" * len(head)]
    for r in every[:limit]:
        flag = "yes" if r["holds"] else "NO"
        flag += " (trivial)" if is_trivial(r) else ""
        eps = _shown(r.get("eps"), ".3g")  # "–" where the check built its own LM
        lines.append(f"{_fit(r['check'], 22):22} {_fit(r['world'], 10):10} {_fit(_lm(r), 26):26} {eps:>9} "
                     f"{_fit(r['quantity'], 32):32} {_measured(r, '.4g'):>10} {_shown(r.get('bound'), '.4g'):>10} "
                     f"{flag}")
    if len(every) > limit:
        lines.append(f"… the first {limit} of {len(every)} bounded rows; every row is in results.csv")
    return "\n".join(lines)


def _fit(text: str, width: int) -> str:
    """``text`` in ``width`` characters: whole, or its first third and last two thirds around an ellipsis."""
    if len(text) <= width:
        return text
    tail = (2 * (width - 1)) // 3
    return text[: width - 1 - tail] + "…" + text[-tail:]


def _used(r) -> float:
    """The share of the slack a row uses: its ``slack_used`` ((measured − baseline) ÷ (bound − baseline), the
    baseline being what the bound allows at ε = 0), NaN where it is not a finite number (no slack, a NaN or
    infinite measured value, or strict JSON's null for NaN and ±inf)."""
    used = _number(r.get("slack_used"))
    return math.nan if used is None else used


def is_trivial(r) -> bool:
    """Whether a row is trivial: flagged so and holding (a violated row could fail, whatever it was flagged)."""
    return bool(r.get("trivial")) and bool(r["holds"])


def _worst_first(r):
    """The sort key of a bounded row, worst first: violated rows before those that hold, each by its share of
    the slack, largest first; a violated row without a share counts as +inf (before every violated row with
    one), a holding row without one as −inf (after every holding row with one); rows of equal share by how
    far the measured value exceeds the bound, largest first (+inf where either is not a finite number)."""
    used = _used(r)
    if math.isnan(used):
        used = -math.inf if r["holds"] else math.inf
    measured, bound = _number(r.get("measured")), _number(r.get("bound"))
    over = math.inf if measured is None or bound is None else measured - bound
    return (bool(r["holds"]), -used, -over)


def worst_row(rows: list):
    """The worst of the bounded rows (:func:`_worst_first`): the violated row with the largest share of its
    slack (``slack_used``), one without a share first, where any row is violated; else the holding
    non-trivial row with the largest share; None where no row is violated and no holding non-trivial row has
    a share."""
    live = [r for r in rows if not r["holds"] or (not is_trivial(r) and not math.isnan(_used(r)))]
    return min(live, key=_worst_first, default=None)


def _tolerances(rows: list) -> str:
    """The sentence of the rounding each check's verdicts forgive (the rows' ``atol``: holds = measured ≤
    bound + atol), so that a row over its bound by less than that is read as holding knowingly."""
    atol = defaultdict(set)
    for r in rows:
        if has_bound(r):
            atol[r["check"]].add(_number(r.get("atol")) or 0.0)
    forgiving = {c: max(a) for c, a in atol.items() if max(a) > 0}
    if not forgiving:
        return "Every row is judged exactly: holds = measured ≤ bound."
    said = ", ".join(f"{c} {a:g}" for c, a in sorted(forgiving.items()))
    return (f"A row holds where measured ≤ bound + atol, the rounding its check forgives: {said}; every other "
            "check's rows are judged exactly.  A holding share above 1 is marked `(within atol)`.")


def bound_summary(rows: list) -> list[dict]:
    """Per (check, quantity) with a bound: rows, violations, trivial rows (holding ones only), and the share
    of the slack the worst row uses (:func:`worst_row`: a violated row wherever there is one; ``worst_used``,
    NaN where it has no share — a violated row with no slack, or a measured value or bound that is not
    finite — or there is no worst row) with the row it comes from (``worst_lm``: world/LM#seed, "" where there is
    none), and ``trivial_used``: the lowest and highest share over the trivial rows, None where none has one —
    such a row cannot fail, but its share can be the number that informs (``tzach/token-accuracy``'s
    ``expected_accuracy``: the share of the Bayes gap an LM closes; Pinsker's tightness)."""
    groups = defaultdict(list)
    for r in rows:
        if has_bound(r):
            groups[(r["check"], r["quantity"])].append(r)
    out = []
    for (check, quantity), g in sorted(groups.items()):
        worst = worst_row(g)
        shares = [u for u in (_used(r) for r in g if is_trivial(r)) if not math.isnan(u)]
        out.append({"check": check, "quantity": quantity, "rows": len(g), "violations": sum(not r["holds"] for r in g),
                    "trivial": sum(is_trivial(r) for r in g),
                    "worst_used": _used(worst) if worst else math.nan,
                    "worst_lm": f"{worst['world']}/{_lm(worst)}" if worst else "",
                    "trivial_used": (min(shares), max(shares)) if shares else None})
    return out


def _kind(r) -> str:
    """How a figure draws row ``r``: "violated", "trivial" (a bound no LM could violate) or "" (the rest)."""
    if not has_bound(r):
        return ""
    return "violated" if not r["holds"] else "trivial" if is_trivial(r) else ""


def plot(rows: list, out_dir: Path) -> list[Path]:
    """One PNG (and SVG) per check under ``out_dir/plots``; returns the PNG paths (none without matplotlib).
    A point is drawn where both its ε and its value are finite numbers; a quantity (a check) with no such
    point has no panel (no figure).  A trivial row (a bound no LM could violate) is drawn faint, a violated
    one under a red ×; each LM source keeps one colour in every figure (tab20 less its greys past 9)."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_check = defaultdict(list)
    for r in rows:
        drawn = _number(r.get("measured")) is not None or _number(r.get("bound")) is not None
        if drawn and not math.isnan(_eps_key(r)):
            by_check[r["check"]].append(r)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    # colours and markers over what is drawn, not over every row (13 sources in the demo wrapped 9 colours:
    # adversarial-aligned and theta-noise shared C0 in one figure); tab20 less its greys past 9 sources
    drawn_rows = [r for rs in by_check.values() for r in rs]
    sources = sorted({_source(r["lm"]) for r in drawn_rows})
    worlds = sorted({r["world"] for r in drawn_rows})
    palette = [f"C{i}" for i in range(10) if i != 7]  # C7 is the grey of the world markers and bounds
    if len(sources) > len(palette):
        import matplotlib.colors as mcolors
        palette = [mcolors.to_hex(c) for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i not in (14, 15)]
    colour = {s: palette[i % len(palette)] for i, s in enumerate(sources)}
    marker = {w: "os^vDP*<>ph"[i % 11] for i, w in enumerate(worlds)}
    paths = []
    for check, rs in sorted(by_check.items()):
        quantities = sorted({r["quantity"] for r in rs})
        n = len(quantities)
        cols = min(n, 3)
        fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.6 * cols, 3.6 * ((n + cols - 1) // cols)),
                                 squeeze=False)
        for ax, q in zip(axes.flat, quantities):
            points = defaultdict(lambda: ([], [], [], []))  # one scatter per (source, world, kind), not per point
            oracle_x = _oracle_x([_eps_key(r) for r in rs if r["quantity"] == q])
            for r in (r for r in rs if r["quantity"] == q):
                x = _eps_key(r) if _eps_key(r) > 0 else oracle_x
                xs_measured, ys_measured, xs_bound, ys_bound = points[_source(r["lm"]), r["world"], _kind(r)]
                measured, bound = _number(r.get("measured")), _number(r.get("bound"))
                if measured is not None:
                    xs_measured.append(x)
                    ys_measured.append(measured)
                if bound is not None:
                    xs_bound.append(x)
                    ys_bound.append(bound)
            for (source, world, kind), (xs_measured, ys_measured, xs_bound, ys_bound) in points.items():
                alpha = 0.2 if kind == "trivial" else 1.0  # a trivial row could not have failed: faint
                if xs_measured:
                    ax.scatter(xs_measured, ys_measured, color=colour[source], marker=marker[world], s=22, alpha=alpha)
                    if kind == "violated":
                        ax.scatter(xs_measured, ys_measured, color="red", marker="x", s=60, linewidths=1.2)
                if xs_bound:
                    ax.scatter(xs_bound, ys_bound, facecolors="none", edgecolors=colour[source],
                               marker=marker[world], s=40, linewidths=0.8, alpha=alpha)
            ax.set(xscale="log", title=q, xlabel=f"ε of the LM (nats; oracle at {oracle_x:.0e})")
            ax.grid(alpha=0.3, lw=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        present = sorted({_source(r["lm"]) for r in rs}), sorted({r["world"] for r in rs})
        handles = [plt.Line2D([], [], ls="", marker="o", color=colour[s], label=s) for s in present[0]]
        handles += [plt.Line2D([], [], ls="", marker=marker[w], color="grey", label=w) for w in present[1]]
        handles += [plt.Line2D([], [], ls="", marker="o", mfc="none", color="grey", label="bound")]
        kinds = {_kind(r) for r in rs}
        if "trivial" in kinds:
            handles += [plt.Line2D([], [], ls="", marker="o", color="grey", alpha=0.2, label="faint: trivial row")]
        if "violated" in kinds:
            handles += [plt.Line2D([], [], ls="", marker="x", color="red", label="violated")]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7)
        _margins(fig, check, len(axes), cols, -(-len(handles) // 6))
        stem = out_dir / "plots" / check.replace("/", "_")
        fig.savefig(stem.with_suffix(".png"), dpi=100)
        fig.savefig(stem.with_suffix(".svg"))
        paths.append(stem.with_suffix(".png"))
        plt.close(fig)
    return paths


def _margins(fig, title: str, rows: int, cols: int, legend_rows: int) -> None:
    """The figure's ``title`` and fixed margins, in inches, around its ``rows`` × ``cols`` panels: room for the
    tick labels, each panel's title and x label, the title above and the legend's rows below.
    (``tight_layout`` measured them from a draw of its own: a third of a sweep's plotting time, 14 → 8 s of
    CPU for the demo's plots.)"""
    w, h = fig.get_size_inches()
    fig.suptitle(title, y=1 - 0.1 / h, va="top")
    top, bottom, left, right, between_w, between_h = 0.8, 0.55 + 0.25 * legend_rows, 0.65, 0.15, 0.7, 0.85
    panel_w = (w - left - right - between_w * (cols - 1)) / cols
    panel_h = (h - top - bottom - between_h * (rows - 1)) / rows
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        wspace=between_w / panel_w, hspace=between_h / panel_h)


def _last_run(out_dir: Path, name: str, keys: set) -> list:
    """The last run's list ``name`` from ``summary.json``, its entries with ``keys`` (none when the file is
    absent or unreadable: a run that has not finished, or one written before they were recorded)."""
    try:
        summary = read_json(out_dir / "summary.json", what="out") if (out_dir / "summary.json").exists() else {}
    except ConfigError:
        return []
    entries = summary.get(name) if isinstance(summary, dict) else None
    return [u for u in entries if isinstance(u, dict) and keys <= set(u)] if isinstance(entries, list) else []


def _unreached(out_dir: Path) -> list:
    """The last run's unreached ladder rungs (:func:`_last_run`)."""
    return _last_run(out_dir, "unreached", {"world", "seed", "target", "best_eps", "steps"})


def markdown(rows: list, out_dir: Path, plots: list) -> str:
    """The report: the config's name, the cells and the runs that computed them (each run's environment,
    from ``environment.json``), the bound summary, the failed cells and the figures.  Cells and failures
    are read from the directory's cell store, as it is now; the last run's unreached rungs and lost ladders
    from its ``summary.json``."""
    out_dir = Path(out_dir)
    config = read_json(out_dir / "sweep.json", what="out")
    from simlm.experiments.sweep import cell_store  # (the sweep module, only where a directory is rendered)

    store = cell_store(out_dir)
    errors = store.errors()
    cells = f"{_count(len(rows), 'row')} from {_count(len(store), 'cell')} ({len(errors)} failed)"
    lines = [f"# Sweep `{config.get('name', '?')}`", "", f"{cells}; {_runs(out_dir, store)}", "",
             "## Bounds", "",
             "`worst used` is the largest share of the slack, (measured − baseline) ÷ (bound − baseline), over the "
             "violated rows where there are any, else over the rows that could fail; `violated` where the worst "
             "row is violated and has no share (no slack, or a value that is not finite); `–` where no row "
             "that could fail has a finite share (every row trivial, or without slack), followed by the trivial "
             "rows' shares, lowest to highest, where they have any; `trivial` rows "
             "hold with a bound no LM could violate.  Shares print to 3 digits: a violated worst row at 1.0004 "
             "reads 1, so read `violations` for the verdict, results.csv for every row.  " + _tolerances(rows), "",
             "| check | quantity | rows | violations | trivial | worst used | worst row |",
             "|---|---|---:|---:|---:|---:|---|"]
    summary = bound_summary(rows)
    if not summary:
        lines.append("| – | no row has a bound | 0 | 0 | 0 | – | – |")
    for s in summary:
        used = _number(s["worst_used"])
        shown = "violated" if used is None and s["violations"] else _shown(used, ".3g")
        if used is not None and used > 1 and not s["violations"]:  # over its bound by no more than its atol
            shown = f"{used:.8g} (within atol)"
        if shown == "–" and s["trivial_used"] is not None:  # what the rows that cannot fail used (a review)
            shown = "– (trivial: {:.3g} to {:.3g})".format(*s["trivial_used"])
        lines.append(f"| {s['check']} | {s['quantity']} | {s['rows']} | {s['violations']} | {s['trivial']} | "
                     f"{shown} | {s['worst_lm'] or '–'} |")
    unbounded = defaultdict(list)
    for r in rows:
        if not has_bound(r):
            unbounded[(r["check"], r["quantity"])].append(r)
    if unbounded:
        lines += ["", "## Measured (no bound)", "", "| check | quantity | world | lm | ε | measured |",
                  "|---|---|---|---|---:|---:|"]
        for (check, q), rs in sorted(unbounded.items()):
            for r in sorted(rs, key=lambda r: (r["world"], _eps_key(r))):
                # a row that says why something was not run shows why beside its number (the demo's "skipped"
                # row read as a measurement of 0.1, its ε target; a review, 2026-12-07)
                why = f" — not run: {r['why']}" if r.get("why") else ""
                why += f" — {r['caveat']}" if r.get("caveat") else ""  # a number that says less than it seems
                why = why.replace("|", "\\|")
                lines.append(f"| {check} | {leaf_name(q, r.get('index'))} | {r['world']} | {_lm(r)} | "
                             f"{_shown(r.get('eps'), '.3g')} | {_measured(r, '.4g')}{why} |")
    if errors:
        lines += ["", "## Cells that failed", ""] + [f"- `{e['cell']}`: {e['error']}" for e in errors]
    lost = _last_run(out_dir, "lost", {"world", "error"})
    if lost:
        lines += ["", "## Ladders lost in the last run", "", "No trained LM of that world past the rungs named, so "
                  "no cells for one: a rerun resumes a ladder whose worker died from its checkpoints; one whose "
                  "training diverged diverges again (the rungs it reached before have their cells).", ""]
        lines += [f"- world `{x['world']}`: {x['error']}" for x in lost]
    unreached = _unreached(out_dir)
    if unreached:
        lines += ["", "## Ladder rungs not reached", "", "No LM, so no cells: the trained model of that seed never "
                  "came down to the target ε.", ""]
        # _shown: a null (a damaged summary.json) prints "–", where format() ended the report in a TypeError
        lines += [f"- world `{u['world']}`, seed {u['seed']}: ε ≤ {_shown(u['target'], 'g')} not reached in "
                  f"{u['steps']} steps (best ε {_shown(u['best_eps'], '.4g')})" for u in unreached]
    lines += _not_applying(out_dir)
    if plots:
        lines += ["", "## Figures", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _not_applying(out_dir: Path) -> list:
    """The report's lines on the last run's (world, LM, check) combinations that do not apply, counted per
    check and reason: why a check has fewer rows than the sweep has LMs (the console said it, report.md did
    not; a review, 2026-12-07)."""
    counts = defaultdict(lambda: defaultdict(int))
    for s in _last_run(out_dir, "skipped", {"cell", "why"}):
        counts[str(s["cell"]).rsplit("|", 1)[-1]][str(s["why"])] += 1
    if not counts:
        return []
    lines = ["", "## Combinations that do not apply", "", "(world, LM) cells a check does not run on, by check "
             "and reason (the last run's, from summary.json):", ""]
    for check, whys in sorted(counts.items()):
        said = "; ".join(f"{why} ({n})" for why, n in sorted(whys.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"- `{check}`: {sum(whys.values())} — {said}")
    return lines


def _runs(out_dir: Path, store: CellStore) -> str:
    """The runs that filled ``out_dir`` (its ``environment.json``), one line each: when, with which versions
    and code (:func:`~simlm.experiments.sweep.code_fingerprint`), on which devices, and how many cells each
    computed; then, when the cells in the store were computed by more than one code, how many by each."""
    try:
        runs = read_runs(out_dir / "environment.json")
    except ConfigError as err:
        return f"the runs that computed them are unknown ({err})."
    if not runs:
        return "the runs that computed them are unknown (no environment.json)."
    lines = [f"computed by {_count(len(runs), 'run')}{' (the first, then each rerun)' if len(runs) > 1 else ''}:", ""]
    for run in runs:
        cells = run.get("cells_computed")
        done = f"computed {_count(cells, 'cell')}" if cells is not None else "did not finish or did not log its cells"
        if cells is not None and run.get("cells_failed"):
            done += f" ({run['cells_failed']} more failed)"
        devices = run.get("devices") if isinstance(run.get("devices"), list) else []  # a hand-edited log: said
        where = "; ".join(str(part) for part in (", ".join(map(str, devices)), run.get("cpu")) if part)  # as it is
        packages = run.get("packages") if isinstance(run.get("packages"), dict) else {}
        flax = packages.get("flax")
        lines.append(f"- {run.get('time', '?')}: simlm {run.get('simlm', '?')} (code {run.get('code', '?')}), jax "
                     f"{run.get('jax', '?')}{f', flax {flax}' if flax else ''} on {run.get('backend', '?')} ({where}): "
                     f"{done}")
    by_code = store.codes()
    if len(by_code) > 1:
        lines += ["", "**The cells come from more than one code**: " + ", ".join(
            f"{_count(n, 'cell')} from {code or 'code of unknown version'}" for code, n in by_code.items())
            + " — a rerun reuses finished cells; use another `--out` to recompute them all with one code."]
    return "\n".join(lines)


def render(rows: list, out_dir) -> list[Path]:
    """Write the plots and ``report.md`` into ``out_dir``; returns the paths written."""
    from simlm.jsonio import write_text_atomic

    out_dir = Path(out_dir)
    plots = plot(rows, out_dir)
    write_text_atomic(out_dir / "report.md", markdown(rows, out_dir, plots))
    return plots + [out_dir / "report.md"]


__all__ = ["has_bound", "is_trivial", "worst_row", "console_table", "bound_summary", "plot", "markdown", "render"]
