"""Tables, plots and a Markdown report from a sweep's tidy rows alone (``simlm report DIR`` re-renders them).

For every quantity with a bound the report says how many rows hold, how many are *trivial* (the bound is
at least the largest value the quantity can take, so no LM could have violated it) and how much of the
bound the worst row uses (measured ÷ bound).  Plots: one figure per check, one panel per quantity,
measured against the LM's ε (filled) with the bound (open), one colour per LM source, one marker per world.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from simlm.jsonio import read_json


def _eps_key(r) -> float:
    return r["eps"] if r.get("eps") is not None else math.nan


def _source(lm: str) -> str:
    return lm.split("@")[0]


def console_table(rows: list, *, limit: int = 60) -> str:
    """The rows with a bound as ``check  world  lm  ε  quantity  measured  bound  holds``, worst first."""
    bounded = sorted((r for r in rows if r.get("bound") is not None),
                     key=_worst_first)[:limit]
    head = f"{'check':22} {'world':10} {'lm':22} {'ε':>9} {'quantity':26} {'measured':>10} {'bound':>10} holds"
    lines = [head, "-" * len(head)]
    for r in bounded:
        flag = "yes" if r["holds"] else "NO"
        flag += " (trivial)" if r.get("trivial") else ""
        lines.append(f"{r['check'][:22]:22} {r['world'][:10]:10} {r['lm'][:22]:22} {_eps_key(r):9.3g} "
                     f"{r['quantity'][:26]:26} {r['measured']:10.4g} {r['bound']:10.4g} {flag}")
    return "\n".join(lines)


def _used(r) -> float:
    """The share of the slack a row uses: its ``slack_used`` ((measured − baseline) ÷ (bound − baseline), the
    baseline being what the bound allows at ε = 0), NaN where the slack is zero."""
    used = r.get("slack_used")
    return math.nan if used is None or used == "" else float(used)


def _worst_first(r):
    used = _used(r)
    return (bool(r["holds"]), -(used if not math.isnan(used) else -math.inf))


def bound_summary(rows: list) -> list[dict]:
    """Per (check, quantity) with a bound: rows, violations, trivial rows, and the largest share of the slack
    used over the rows that could fail (``worst_used``) with the row it comes from."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("bound") is not None:
            groups[(r["check"], r["quantity"])].append(r)
    out = []
    for (check, quantity), g in sorted(groups.items()):
        live = [r for r in g if not r.get("trivial")]
        worst = max(live, key=lambda r: -math.inf if math.isnan(_used(r)) else _used(r), default=None)
        out.append({"check": check, "quantity": quantity, "rows": len(g), "violations": sum(not r["holds"] for r in g),
                    "trivial": sum(bool(r.get("trivial")) for r in g),
                    "worst_used": _used(worst) if worst else math.nan,
                    "worst_lm": f"{worst['world']}/{worst['lm']}" if worst else ""})
    return out


def plot(rows: list, out_dir: Path) -> list[Path]:
    """One PNG (and SVG) per check under ``out_dir/plots``; returns the PNG paths (none without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_check = defaultdict(list)
    for r in rows:
        by_check[r["check"]].append(r)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    sources = sorted({_source(r["lm"]) for r in rows})
    worlds = sorted({r["world"] for r in rows})
    colour = {s: f"C{i % 10}" for i, s in enumerate(sources)}
    marker = {w: "os^vDP*"[i % 7] for i, w in enumerate(worlds)}
    paths = []
    for check, rs in sorted(by_check.items()):
        quantities = sorted({r["quantity"] for r in rs})
        n = len(quantities)
        cols = min(n, 3)
        fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.6 * cols, 3.6 * ((n + cols - 1) // cols)),
                                 squeeze=False)
        for ax, q in zip(axes.flat, quantities):
            for r in (r for r in rs if r["quantity"] == q):
                x = max(_eps_key(r), 1e-4)  # the oracle (ε = 0) sits at the left edge
                ax.scatter(x, r["measured"], color=colour[_source(r["lm"])], marker=marker[r["world"]], s=22)
                if r.get("bound") is not None:
                    ax.scatter(x, r["bound"], facecolors="none", edgecolors=colour[_source(r["lm"])],
                               marker=marker[r["world"]], s=40, linewidths=0.8)
            ax.set(xscale="log", title=q, xlabel="ε of the LM (nats; oracle at 1e-4)")
            ax.grid(alpha=0.3, lw=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        present = sorted({_source(r["lm"]) for r in rs}), sorted({r["world"] for r in rs})
        handles = [plt.Line2D([], [], ls="", marker="o", color=colour[s], label=s) for s in present[0]]
        handles += [plt.Line2D([], [], ls="", marker=marker[w], color="grey", label=w) for w in present[1]]
        handles += [plt.Line2D([], [], ls="", marker="o", mfc="none", color="grey", label="bound")]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7)
        fig.suptitle(check)
        fig.tight_layout(rect=(0, 0.08, 1, 0.95))
        stem = out_dir / "plots" / check.replace("/", "_")
        fig.savefig(stem.with_suffix(".png"), dpi=100)
        fig.savefig(stem.with_suffix(".svg"))
        paths.append(stem.with_suffix(".png"))
        plt.close(fig)
    return paths


def markdown(rows: list, out_dir: Path, plots: list) -> str:
    """The report: the config's name, the environment, the bound summary, errors and the figures."""
    out_dir = Path(out_dir)
    config = read_json(out_dir / "sweep.json", what="out")
    env = read_json(out_dir / "environment.json", what="out") if (out_dir / "environment.json").exists() else {}
    summary = read_json(out_dir / "summary.json", what="out") if (out_dir / "summary.json").exists() else {}
    lines = [f"# Sweep `{config.get('name', '?')}`", "",
             f"{len(rows)} rows from {len({(r['world'], r['lm'], r['check']) for r in rows})} cells; "
             f"simlm {env.get('simlm', '?')}, jax {env.get('jax', '?')} on {env.get('backend', '?')} "
             f"({', '.join(env.get('devices', []))}).", "",
             "## Bounds", "",
             "`worst used` is the largest share of the slack, (measured − baseline) ÷ (bound − baseline), over the "
             "rows that could fail; `trivial` rows have a bound no LM could violate.", "",
             "| check | quantity | rows | violations | trivial | worst used | worst row |",
             "|---|---|---:|---:|---:|---:|---|"]
    for s in bound_summary(rows):
        lines.append(f"| {s['check']} | {s['quantity']} | {s['rows']} | {s['violations']} | {s['trivial']} | "
                     f"{s['worst_used']:.3g} | {s['worst_lm']} |")
    unbounded = defaultdict(list)
    for r in rows:
        if r.get("bound") is None:
            unbounded[(r["check"], r["quantity"])].append(r)
    if unbounded:
        lines += ["", "## Measured (no bound)", "", "| check | quantity | world | lm | ε | measured |",
                  "|---|---|---|---|---:|---:|"]
        for (check, q), rs in sorted(unbounded.items()):
            for r in sorted(rs, key=lambda r: (r["world"], _eps_key(r))):
                lines.append(f"| {check} | {q} | {r['world']} | {r['lm']} | {_eps_key(r):.3g} | {r['measured']:.4g} |")
    errors = summary.get("errors", [])
    if errors:
        lines += ["", "## Cells that failed", ""] + [f"- `{e['cell']}`: {e['error']}" for e in errors]
    if plots:
        lines += ["", "## Figures", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def render(rows: list, out_dir) -> list[Path]:
    """Write the plots and ``report.md`` into ``out_dir``; returns the paths written."""
    from simlm.jsonio import write_text_atomic

    out_dir = Path(out_dir)
    plots = plot(rows, out_dir)
    write_text_atomic(out_dir / "report.md", markdown(rows, out_dir, plots))
    return plots + [out_dir / "report.md"]


__all__ = ["console_table", "bound_summary", "plot", "markdown", "render"]
