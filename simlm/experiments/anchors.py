"""The anchor-vector experiment (Wu, Lee & Ge, NeurIPS 2023) behind ``docs/anchors.md``.

    python -m simlm.experiments.anchors --out runs/anchors [--quick] [--figure docs/anchors.png]

1. A sweep (:func:`~simlm.experiments.sweep.run_sweep`, check ``wu/anchors``) over an anchor world and an
   unstructured one (1024 states, 32 words, two rare carriers) with analytic LMs of four kinds at ε from
   1e-4 to 0.3, and a small anchor world with a trained causal ladder (per-block anchor fits).
2. The exact constructions N1, N2 and the control (:mod:`simlm.theory.anchor_constructions`), and the
   world-level anchor fits of both geometries.
3. ``<out>/anchors.json`` (every number the docs quote: err/√ε per task and kind, the bound's slack and
   triviality, N1/N2) and the figure: head/readout error against ε, bound beside it.

The full run is the sweep of the shipped ``simlm/experiments/configs/anchors.toml`` (= :func:`sweep_config`;
``simlm sweep`` runs that file as it is); ``--quick`` runs ``sweep_config(quick=True)``.  The runner owns
looping, storing and resuming; the summary and the figure are drawn from its stored rows.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np

from simlm.experiments.commandline import Parser, directory, figure_path, run_main
from simlm.experiments.report import has_bound, worst_row
from simlm.experiments.store import results_dir
from simlm.experiments.sweep import build_world, parse_config, run_sweep
from simlm.jsonio import jsonable, write_json_atomic

KINDS = ["logit-noise", "temperature", "uniform-mixture", "rare-words"]
TASK_QUANTITIES = {"anchored": "anchored:head_error", "contrast": "contrast:head_error",
                   "rare-carrier": "rare-carrier:head_error", "latent": "latent:readout_error"}
FLAGS = {"out": "--out", "figure": "--figure"}


def sweep_config(quick: bool = False) -> dict:
    """The sweep (a dict, as TOML or JSON gives it): big worlds for the ε curves, a small one for the trained
    ladder.  The shipped ``configs/anchors.toml`` is ``sweep_config()``."""
    big = {"n_states": 64 if quick else 1024, "n_symbols": 16 if quick else 32, "dim": 4 if quick else 8,
           "n_carriers": 2, "carrier_gap": 16.0, "sigma": 1.0}
    eps = [1e-3, 1e-1] if quick else [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    worlds = [{"name": "anchor", "kind": "loglinear", "seed": 0, "options": {**big, "geometry": "anchor"}},
              {"name": "unstructured", "kind": "loglinear", "seed": 0, "options": {**big, "geometry": "unstructured"}}]
    raw = {"name": "anchors", "data": {"n_sequences": 32 if quick else 256, "length": 16},
           "worlds": worlds, "lms": {"oracle": True, "analytic": {"kinds": KINDS[:2] if quick else KINDS, "eps": eps}},
           # the worst LM is worst_case_slack's, over every flip set (docs/anchors.md, "The worst LM"), not the
           # check's prefix adversary at each LM's ε
           "checks": {"wu/anchors": {"top_k": 4, "n_words": 2, "n_label": 64, "adversary": "none"}}}
    if not quick:
        worlds.append({"name": "small", "kind": "loglinear", "seed": 1,
                       "options": {"n_states": 8, "n_symbols": 16, "dim": 4, "n_carriers": 2, "carrier_gap": 8.0}})
        raw["lms"]["trained"] = {"targets": [0.3, 0.1, 0.05], "worlds": ["small"],
                                 "model": {"d_model": 32, "n_layers": 2, "n_heads": 2},
                                 "train": {"max_steps": 1500, "batch_size": 32, "learning_rate": 0.003}}
    return raw


def shipped_config() -> Path:
    """The path of the shipped sweep config."""
    return Path(__file__).parent / "configs" / "anchors.toml"


def load_shipped() -> dict:
    """The shipped sweep config, as a dict."""
    return tomllib.loads(shipped_config().read_text(encoding="utf-8"))


def constructions(raw: dict) -> dict:
    """N1, N2 and the control on the anchor world; anchor fits of both geometries (state level), for the
    first two worlds of the sweep config ``raw``, with the bulk its ``wu/anchors`` check reads (``top_k``)."""
    from simlm.theory.anchor_constructions import n1_construction, n2_construction
    from simlm.theory.anchors import anchor_contexts, bulk_mask, world_anchor_fit

    top_k = int(parse_config(raw).checks["wu/anchors"]["top_k"])  # the config's, over the check's default
    out = {}
    for w in raw["worlds"][:2]:
        world = build_world(w)
        ctx = anchor_contexts(world)
        bulk = bulk_mask(ctx.logp, top_k=top_k)
        fit = world_anchor_fit(ctx, bulk)
        out[f"fit:{w['name']}"] = {"mse": fit.mse, "r2": fit.r2, "max_residual": fit.max_residual,
                                   "constant_mse": fit.constant_mse, "full_r2": fit.full_r2, "angle": fit.angle}
        if w["name"] == "anchor":
            for c in (n1_construction(ctx, 0), n2_construction(ctx, fit, bulk, world.carrier_ids)):
                out[c.name] = {"eps": c.eps, "head_error": c.head_error, "probe_error": c.probe_error,
                               "world_head_error": c.world_head_error, "control_eps": c.control_eps}
    return out


def curves(rows: list, world: str, quantity: str, kind: str) -> dict:
    """The rows of ``quantity`` for the ``kind`` LMs of ``world``, one ε-sorted curve per LM seed: ``{"": rows}``
    for a single seed, ``{"|seed=s": rows, …}`` for several (their rows are not one curve)."""
    rs = [r for r in rows if r["world"] == world and r["quantity"] == quantity and r["lm"].startswith(kind + "@")]
    seeds = sorted({r.get("lm_seed") for r in rs}, key=str)
    return {("" if len(seeds) == 1 else f"|seed={s}"): sorted((r for r in rs if r.get("lm_seed") == s),
                                                                key=lambda r: r["eps"]) for s in seeds}


def summarise(rows: list) -> dict:
    """err/√ε per (world, task, kind) across ε (per LM seed where there are several), and per form of the
    bound its rows, violations, trivial rows and the largest share of the slack used over the non-trivial
    rows (None where none has one)."""
    out = {}
    for world in sorted({r["world"] for r in rows}):
        for task, q in TASK_QUANTITIES.items():
            for kind in KINDS:
                for seed, rs in curves(rows, world, q, kind).items():
                    out[f"{world}|{task}|{kind}{seed}"] = {
                        "eps": [r["eps"] for r in rs], "error": [r["measured"] for r in rs],
                        "err_over_sqrt_eps": [r["measured"] / np.sqrt(r["eps"]) for r in rs]}
    for form in ("", "@per-context"):
        bounded = [r for r in rows if r["quantity"].endswith("head_error" + form) and has_bound(r)]
        if bounded:
            worst = worst_row(bounded)  # over the rows that could fail, as the sweep's report takes it
            out[f"bound{form or '@markov'}"] = {
                "rows": len(bounded), "violated": sum(not r["holds"] for r in bounded),
                "trivial": sum(bool(r["trivial"]) for r in bounded),
                "worst_slack_used": worst["slack_used"] if worst else None,
                "worst": worst and {k: worst[k] for k in ("world", "lm", "lm_seed", "quantity", "measured", "bound")},
                # every non-trivial row the counts beside it count, the oracle's too (they were left out: a
                # review, 2026-12-06, found 4 of 4 non-trivial quick-run rows missing, the worst among them)
                "nontrivial": [{k: r[k] for k in ("world", "lm", "quantity", "measured", "bound", "slack_used")}
                               for r in bounded if not r["trivial"]]}
    blocks = [r for r in rows if "anchor_r2" in r["quantity"] and r["lm"].startswith("trained")]
    out["trained_anchor_r2"] = [{k: r[k] for k in ("lm", "eps", "quantity", "measured")} for r in blocks]
    return out


def figure(rows: list, path: Path) -> Path:
    """Head/readout error against ε for each task and kind in both geometries, the trained ladder, a
    √ε reference and both forms of the bound for the logit-noise LMs of the anchor world."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, (task, q) in zip(axes, TASK_QUANTITIES.items()):
        for world, marker in (("anchor", "o"), ("unstructured", "x")):
            for kind in KINDS:
                for seed, rs in curves(rows, world, q, kind).items():
                    ax.plot([r["eps"] for r in rs], [max(r["measured"], 1e-4) for r in rs], marker=marker, ls="-",
                            lw=0.8, label=f"{kind} ({world}{seed.replace('|', ', ')})")
            tr = [r for r in rows if r["world"] == "small" and r["quantity"] == q and r["lm"].startswith("trained")]
            if world == "anchor" and tr:
                ax.plot([r["eps"] for r in tr], [max(r["measured"], 1e-4) for r in tr], "k*", ms=9, label="trained (small)")
        for form, style in (("", "k--"), ("@per-context", "k-.")):
            for seed, rs in curves(rows, "anchor", q + form, "logit-noise").items():
                if not any(has_bound(r) for r in rs):  # a readout without a bound: no empty legend entry
                    continue
                ax.plot([r["eps"] for r in rs], [r["bound"] for r in rs], style, lw=1,
                        label=f"bound {form[1:] or 'markov'} (logit-noise, anchor{seed.replace('|', ', ')})")
        e = np.logspace(-4, -0.5, 20)
        ax.plot(e, 0.3 * np.sqrt(e), "k:", label="0.3√ε")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(xscale="log", yscale="log", xlabel="ε (nats/token)", title=task, ylim=(1e-4, 1.2))
    axes[0].set_ylabel("downstream error (an error of 0 drawn at 1e-4)")
    handles = {}  # one legend for every panel's lines (the last panel's alone missed the bounds drawn elsewhere)
    for ax in axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                handles.setdefault(line.get_label(), line)
    fig.legend(list(handles.values()), list(handles), fontsize=6, loc="lower center", ncol=4)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(handles) // 4), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def command(argv) -> dict:
    p = Parser(prog="python -m simlm.experiments.anchors", description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--out", type=directory, required=True, help="results directory (resumable)")
    p.add_argument("--quick", action="store_true", help="tiny worlds and grid (seconds), not the shipped config")
    p.add_argument("--figure", default=None, help="where to write the figure (default <out>/anchors.png)")
    a = p.parse_args(argv)
    png = figure_path(a.figure)  # a bad --figure refused now, not after the sweep
    out = results_dir(a.out)  # a bad --out named as such (it was an OSError of the sweep's, naming no flag)
    png = png or out / "anchors.png"
    raw = sweep_config(quick=True) if a.quick else load_shipped()
    done = {}

    def write(result):  # under the sweep's lock: a later run's files cannot be overwritten by these
        done["summary"] = {"constructions": constructions(raw), **summarise(result["rows"]), "errors": result["errors"]}
        write_json_atomic(out / "anchors.json", jsonable(done["summary"]))
        try:
            figure(result["rows"], png)
        except ImportError as e:  # matplotlib is the optional extra "plots"
            print(f"no plot: {e} (pip install -e '.[plots]')")

    run_sweep(parse_config(raw), out, progress=False, log=lambda *x: None, after=write)
    summary = done["summary"]
    print(json.dumps(jsonable({k: summary[k] for k in ("constructions", "errors")}), indent=1))
    return summary


def main(argv=None) -> int:
    """Exit status of the command line: 0, or 2 with one line on stderr naming the flag at fault."""
    return run_main("python -m simlm.experiments.anchors", command, argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
