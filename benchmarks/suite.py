"""Every benchmark in one run, sized for the backend, into one JSON and the Markdown table of docs/benchmarks.md.

Runs each entry of :func:`plan` as a subprocess (as a user runs the script) with sizes chosen by
``jax.default_backend()`` — larger batches, sequences, state counts and a ≥ 10M-parameter model
(``train.py --sizes large``, ~19M; again in bfloat16 at B=64 T=512 for the MFU row) on GPU/TPU, and
experiment 1 end to end (``experiment1.py``), and where the train step's time goes by kernel
(``profile_step.py``, reported without a target) — collects the JSON each one writes, and records the
machine, the versions and which peers (dynamax, hmmlearn, torch + transformers) were installed.  A
script that fails or times out is recorded as such (its last output kept) and the suite goes on;
``--budget`` bounds the whole run (what no longer fits is recorded as skipped).  The JSON and the
table are rewritten after every entry, so an interrupted run keeps everything it measured; a script that
is stopped or fails keeps what it wrote before (``train.py`` and ``filters.py`` write their JSON after every
size), shown without a verdict beside its status.

The Markdown table (between the ``<!-- suite:begin -->`` / ``<!-- suite:end -->`` markers of
``--docs``, by default docs/benchmarks.md; with ``--quick`` no Markdown file unless ``--docs`` names one)
has one row per headline number: target, measured value, verdict, the device it was measured on.  The
verdict is the script's own, and "—" where the script refuses one: every row in ``--quick``; the train
ratio on a loaded machine or against a peer that is not simlm's network; MFU against a measured matmul
rather than a datasheet (or ``--peak-tflops``) peak; 8 seeds ÷ 1 on a CPU (an accelerator target); the
reason is written beside the number.  Rows that only mean something on an accelerator (training MFU,
8 vmapped seeds vs 1 at ≤ 2×, the parallel filter at T = 8192, experiment 1 end to end) read "unmeasured —
no accelerator in this run" on a CPU: an accelerator number is never extrapolated from a CPU one.

    .venv/bin/python benchmarks/suite.py                      # everything, sizes for this backend
    .venv/bin/python benchmarks/suite.py --only filters property_speed
    .venv/bin/python benchmarks/suite.py --quick                    # every script's --quick (smoke test; JSON only)
    .venv/bin/python benchmarks/suite.py --quick --docs /tmp/b.md   # … and its table in /tmp/b.md
    .venv/bin/python benchmarks/suite.py --budget 300                # what fits in five minutes, in plan order
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()  # --budget counts from here: jax's start (seconds on a GPU) is part of the run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402

from _common import REPO_ROOT, meets, machine_info, run_process_group, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
PEERS = {"dynamax": ["dynamax"], "hmmlearn": ["hmmlearn"], "torch + transformers": ["torch", "transformers"]}


def plan(accelerator: bool) -> dict:
    """Entry → (script, extra arguments), by backend (each script's own defaults otherwise), in the order
    they run: on an accelerator the rows only it can measure come first, so a ``--budget`` that runs out
    cuts the ones a CPU measures too."""
    if accelerator:
        # the MFU row: the ≥ 10M model in bfloat16 at a size that fills the device
        return {"train_bf16": ("train", ["--sizes", "large", "--dtype", "bfloat16", "--batch", "64",
                                         "--seq-len", "512", "--repeats", "3"]),
                "profile": ("profile_step", []),  # the same model and shape, by kernel
                "ensemble": ("ensemble", []), "filters": ("filters", []),
                "train": ("train", ["--sizes", "medium", "large"]),  # the ~0.4M model cannot fill a GPU
                # four processes on one GPU (its memory allocated on demand: executors._share_accelerator); one
                # process, launch-bound on the small models' steps, did not finish in 225 s on an H200
                "experiment1": ("experiment1", ["--workers", "4"]),
                "worlds": ("worlds", ["--batch", "1024", "--length", "2048"]), "eval_schedule": ("eval_schedule", []),
                "property_speed": ("property_speed", []), "time_to_eps": ("time_to_eps", [])}
    return {"worlds": ("worlds", []), "filters": ("filters", []),
            "train": ("train", ["--sizes", "small", "medium"]),
            "profile": ("profile_step", ["--size", "small", "--dtype", "float32", "--batch", "32", "--seq-len", "64"]),
            "ensemble": ("ensemble", []),
            "eval_schedule": ("eval_schedule", []), "property_speed": ("property_speed", []),
            "time_to_eps": ("time_to_eps", []), "experiment1": ("experiment1", [])}


#: an entry that would get less than this of the --budget is skipped, not started to time out
MIN_ENTRY_S = 30

#: flags (each with one value) an entry keeps in --quick mode, which otherwise runs the script's own --quick
QUICK_KEEPS = ("--dtype",)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--only", nargs="+", default=None, choices=sorted(set(plan(False)) | set(plan(True))),
                   help="run these entries only (an entry only the other backend's plan has runs with that "
                        "plan's arguments: --only train_bf16 on a CPU trains the ~19M model at B=64 T=512)")
    p.add_argument("--quick", action="store_true", help="every script's --quick")
    p.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results"))
    p.add_argument("--docs", default=None,
                   help=f"the Markdown file whose suite table is rewritten (default: {DOCS.relative_to(REPO_ROOT)}, "
                        "except with --quick, whose smoke-test numbers go to no Markdown file unless --docs names one)")
    p.add_argument("--summary", default=None, help="where suite.json goes (default: RESULTS/suite.json)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per script")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole suite: each script gets at most what is left, and the entries "
                        "that no longer fit are recorded as skipped (results so far are always written)")
    p.add_argument("--compare-with", default=None,
                   help="a simlm checkout whose trainer eval_schedule.py also counts (e.g. the main branch)")
    args = p.parse_args(argv)
    if args.docs is None and not args.quick:
        args.docs = str(DOCS)
    return args


# ---- headline numbers: (quantity, target, value, met) from each script's JSON -----------------------

def _fmt(x, unit=""):
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.3g}{unit}" if isinstance(x, float) else f"{x}{unit}"


def _pct(x):
    """A fraction as a percentage, beside a target written in % (0.0688 read as 0.07 %)."""
    return "—" if x is None else f"{100 * x:.3g} %"


def headlines(name: str, r: dict) -> list:
    """Rows ``(quantity, target, measured, met)`` for one script's report (missing keys give '—')."""
    get = lambda d, *ks: next((d.get(k) for k in ks if isinstance(d, dict) and k in d), None)  # noqa: E731
    if name == "worlds":
        t = r.get("targets", {})

        def why(key):  # a number without a verdict carries its reason (worlds.targets' note)
            v = t.get(key)
            return f" ({v['note']})" if isinstance(v, dict) and v.get("met") is None and v.get("note") else ""
        return [("sampling simlm ÷ dynamax, worst K", "≥ 50×",
                 _fmt(get(t.get("sampling_ratio"), "worst"), "×") + why("sampling_ratio"),
                 get(t.get("sampling_ratio"), "met")),
                ("next-token law simlm ÷ dynamax, worst K", "≥ 1.5×",
                 _fmt(get(t.get("inference_ratio"), "worst"), "×") + why("inference_ratio"),
                 get(t.get("inference_ratio"), "met")),
                ("forward GFLOP/s ÷ matmul, K = 256", "≥ 60 %",
                 _pct(get(t.get("forward_fraction"), "value")) + why("forward_fraction"),
                 get(t.get("forward_fraction"), "met"))]
    if name == "filters":
        out = []
        for row in r.get("results", []):
            out.append((f"parallel ÷ sequential filter speed, K={row['K']} T={row['T']}", "(report)",
                        _fmt(row.get("par_over_seq"), "×"), None))
            if "par_vs_dynamax_par" in row:  # simlm's scan with the float-range check the world methods run
                out.append((f"parallel filter simlm (checked) ÷ dynamax, K={row['K']} T={row['T']}", "(report)",
                            _fmt(row["par_vs_dynamax_par"], "×"), None))
        return out
    if name == "train":
        cfg, t = r.get("config", {}), r.get("target", {})
        shape = f"{cfg.get('dtype', 'float32')}, B={cfg.get('batch')} T={cfg.get('seq_len')}"
        judged = t.get("met") is not None  # train.py gives no verdict in --quick, on a loaded machine, …
        note = "" if judged or not t.get("reason") else f" ({t['reason']})"
        out = [(f"train step simlm ÷ HF GPT-2, {row.get('size')} ({shape})", "≥ 1.5×",
                _fmt(row.get("ratio"), "×") + note if row.get("ratio") is not None else "peer not installed",
                meets(row["ratio"], t.get("target", 1.5)) if judged and row.get("ratio") is not None else None)
               for row in r.get("results", [])]
        for row in r.get("results", []):
            if row.get("mfu") is None:
                continue
            shaped = row.get("dtype") == "bfloat16" and row.get("params_simlm", 0) >= 10_000_000
            met = row.get("mfu_met")  # train.py's verdict: None against a measured (not a datasheet) peak
            note = "" if met is not None or not shaped else f" ({row.get('mfu_note', 'not judged')})"
            out.append((f"training MFU, {row.get('size')} ({row.get('params_simlm', 0) / 1e6:.1f}M params, {shape})",
                        "≥ 40 % (bf16, ≥ 10M)" if shaped else "(report)", _pct(row["mfu"]) + note, met))
        return out
    if name in ("profile", "profile_step"):  # the entry is "profile", its script (what markdown passes) profile_step
        kinds = r.get("kinds") or {}
        top = (r.get("top_kernels") or [{}])[0]
        cfg = r.get("config", {})
        parts = [f"{k} {v['s_per_step'] * 1e3:.2f}" for k, v in list(kinds.items())[:4]]
        value = (f"{r['wall_s_per_step'] * 1e3:.2f} ms a step; by kind (ms): {', '.join(parts)}; top kernel "
                 f"{top.get('name')} {top.get('s_per_step', 0) * 1e3:.2f} ms" if r.get("wall_s_per_step") else None)
        return [(f"train step by kernel, {cfg.get('size')} ({cfg.get('dtype')}, B={cfg.get('batch')} "
                 f"T={cfg.get('seq_len')}, attention {r.get('attention_kernel')})", "(report)", _fmt(value), None)]
    if name == "experiment1":
        t = r.get("target", {})
        device = "CPU" if t.get("device") == "cpu" else "accelerator"
        return [("experiment 1 end to end (wall, fresh directory)", f"≤ {t.get('seconds', 0) / 60:g} min ({device})",
                 _fmt(r.get("wall_s"), " s"), t.get("met"))]
    if name == "ensemble":
        t = r.get("target", {})
        note = f" ({t['reason']})" if t.get("met") is None and t.get("reason") else ""
        # the model named: a small one's step is launch-bound on a GPU, where 8 seeds cost little more than 1
        c = r.get("config", {})
        model = (f" (d = {c['d_model']}, L = {c['n_layers']}, B = {c['batch']}, T = {c['seq_len']})"
                 if all(k in c for k in ("d_model", "n_layers", "batch", "seq_len")) else "")
        return [(f"8 vmapped seeds ÷ 1 seed, wall{model}", "≤ 2× (accelerator)", _fmt(t.get("ratio"), "×") + note,
                 t.get("met"))]
    if name == "eval_schedule":
        row = (r.get("results") or [{}])[0]
        share, rungs = (get(r.get("targets"), k) or {} for k in ("eval_share", "rungs"))
        reached = None
        if "crossed" in rungs:
            reached = (f"{rungs['reached']} saved of {rungs['crossed']} crossed "
                       f"({rungs['expected'] - rungs['crossed']} of {rungs['expected']} never reached, not judged)")
        elif "expected" in rungs:  # a report from before 2026-12-04
            reached = f"{rungs['reached']} of {rungs['expected']} rungs reached"
        worst = _fmt(row.get("min_overshoot"))
        return [("ε evaluation share of training, experiment 1", "≤ 10 %", _pct(row.get("eval_share")),
                 share.get("met")),
                ("evaluations (this trainer / compared checkout)", "(report)",
                 f"{row.get('evaluations')} / {row.get('compare_evaluations', '—')}", None),
                ("every rung crossed saved, each at ε ÷ target ∈ [0.7, 1] (≥ 1 rung)",
                 "all crossed, each in [0.7, 1]", f"{reached}; worst {worst}" if reached else worst, rungs.get("met"))]
    if name == "property_speed":
        t = get(r.get("targets"), "examples_per_s") or {}
        return [("hypothesis property test, warm", "≥ 50 examples/s", _fmt(t.get("value")), t.get("met"))]
    if name == "time_to_eps":
        t = r.get("target", {})
        if t.get("seconds_to_reach") is not None:
            value = _fmt(t["seconds_to_reach"], " s")
            if t.get("met") is None and t.get("reason"):  # reached, not judged (e.g. the target is for a CPU)
                value += f" ({t['reason']})"
        else:
            value = t.get("reason") or f"not reached (train() {_fmt(r.get('total_s'), ' s')})"
        return [("train() to ε ≤ 0.01", "≤ 600 s (CPU)", value, t.get("met"))]
    return []


ACCELERATOR_ONLY = [("training MFU, ≥ 10M-parameter model, bf16", "≥ 40 %"),
                    ("8 vmapped seeds ÷ 1 seed on an accelerator", "≤ 2×"),
                    ("parallel filter ÷ sequential and ÷ dynamax, T ∈ {512, 8192}", "(report)"),
                    ("experiment 1 end to end", "≤ 5 min")]


def markdown(report: dict) -> str:
    m = report["machine"]
    device = f"{m['backend']} ({m['device_kind']}, {m['cpu_count']} CPU cores)"
    lines = [BEGIN, "",
             f"Suite run {report['started']} on {device}; jax {m['jax']}, python {m['python']}; "
             f"peers installed: {', '.join(f'{k}: {_fmt(v)}' for k, v in report['peers'].items())}.  "
             + ("Quick mode (smoke-test sizes; not comparable with the targets, so nothing is judged).  "
                if report["quick"] else "")
             + "CPU timings are medians under whatever load shared the machine; ratios are of one run."
             + (f"  Exactness tests on this backend (accelerator.sh): {report['exactness']}."
                if report.get("exactness") else ""), "",
             "| benchmark | quantity | target | measured | met | device |", "|---|---|---|---|---|---|"]
    for name, res in report["benchmarks"].items():
        rows = headlines(res.get("script", name), res["report"]) if "report" in res else []
        if res["status"] != "ok":  # what it measured before it stopped, unjudged: a verdict needs the whole run
            rows = [(q, t, f"{v} (then {res['status']})", None) for q, t, v, _ in rows]
            rows = rows or [("—", "—", res["status"], None)]
        for quantity, target, value, met in rows:
            lines.append(f"| {name} | {quantity} | {target} | {value} | {_fmt(met)} | {device} |")
    if m["backend"] == "cpu":
        for quantity, target in ACCELERATOR_ONLY:
            lines.append(f"| accelerator | {quantity} | {target} | unmeasured — no accelerator in this run | — | — |")
    lines += ["", END]
    return "\n".join(lines)


def write_docs(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + table + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + table + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def quick_args(extra: list) -> list:
    """``--quick`` (the script's smoke-test sizes) and the entry's :data:`QUICK_KEEPS` flags with their values."""
    kept = []
    for i, flag in enumerate(extra[:-1]):
        if flag in QUICK_KEEPS:
            kept += [flag, extra[i + 1]]
    return ["--quick"] + kept


def run_entry(name: str, script: str, extra: list, args, out: Path, timeout: float) -> dict:
    """Run one entry's script as a subprocess; its record (status, seconds, arguments, report or output)."""
    if args.quick:
        extra = quick_args(extra)
    cmd = [sys.executable, str(HERE / f"{script}.py"), "--out", str(out)] + extra
    if script == "eval_schedule" and args.compare_with:
        cmd += ["--compare-with", args.compare_with]
    if script == "experiment1":  # it stops its experiment itself and still writes its JSON
        cmd += ["--timeout", str(max(int(timeout) - 20, 1))]
    print(f"== {name}: {' '.join(cmd[1:])}  (≤ {timeout:.0f} s)", flush=True)
    out.unlink(missing_ok=True)  # an earlier run's JSON must not pass for this one's
    started = time.perf_counter()
    try:
        _SIGNAL["running"] = not _SIGNAL["received"]
        if not _SIGNAL["running"]:
            raise Stopped
        code, output = run_process_group(cmd, timeout=timeout, cwd=REPO_ROOT)  # a timeout kills its children too
        status = (f"timed out after {timeout:.0f} s" if code is None
                  else "ok" if code == 0 and out.exists() else f"failed (exit {code})")
    except Stopped as stop:  # the script's group is killed; what it printed and wrote is kept below
        output = getattr(stop, "output", "")
        status = f"stopped after {time.perf_counter() - started:.0f} s (the suite received SIGTERM)"
    finally:
        _SIGNAL["running"] = False
    print(output[-4000:] if status != "ok" else output[-3000:], flush=True)
    entry = {"status": status, "script": script, "seconds": time.perf_counter() - started, "args": cmd[2:]}
    if status == "ok":
        entry["report"] = json.loads(out.read_text())
    else:
        entry["output_tail"] = output[-4000:]
        try:  # what a stopped or failed script measured before it ended (train and filters write as they go)
            entry["report"] = json.loads(out.read_text())
        except (OSError, ValueError):  # none written, or cut mid-write
            pass
    return entry


class Stopped(Exception):
    """SIGTERM reached the suite (an outer ``timeout``) while an entry ran: it is killed, its record written."""


_SIGNAL = {"running": False, "received": False}


def _stop(signum, frame):
    """A SIGTERM stops the entry that is running; between entries (the summary being written) it only ends the
    loop, so no file is left half written."""
    _SIGNAL["received"] = True
    if _SIGNAL["running"]:
        _SIGNAL["running"] = False
        raise Stopped


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    accelerator = jax.default_backend() != "cpu"
    entries = {**plan(not accelerator), **plan(accelerator)}  # this backend's sizes for a name in both plans
    names = args.only or list(plan(accelerator))
    results = Path(args.results)
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": args.quick,
              "budget_s": args.budget, "machine": machine_info(), "benchmarks": {},
              "exactness": os.environ.get("SIMLM_EXACTNESS"),  # accelerator.sh's exactness tests, where it ran them
              "peers": {peer: all(importlib.util.find_spec(m) is not None for m in mods) for peer, mods in PEERS.items()}}
    deadline = None if args.budget is None else STARTED + args.budget
    summary = Path(args.summary) if args.summary else results / "suite.json"
    stopped = False
    for name in names:
        spare = None if deadline is None else deadline - time.perf_counter()
        left = args.timeout if spare is None else min(args.timeout, spare)
        stopped = stopped or _SIGNAL["received"]
        if stopped:
            report["benchmarks"][name] = {"status": "skipped (the suite received SIGTERM)", "script": entries[name][0]}
        elif spare is not None and spare < MIN_ENTRY_S:
            report["benchmarks"][name] = {"status": "skipped (the --budget was spent)", "script": entries[name][0]}
        else:
            script, extra = entries[name]
            report["benchmarks"][name] = run_entry(name, script, extra, args, results / f"{name}.json", left)
        # written after every entry: a budget, a timeout or a crash later on loses nothing measured so far
        write_json(summary, {k: v for k, v in report.items() if k != "machine"})
        if args.docs is not None:  # --quick writes no Markdown unless --docs names a file
            write_docs(Path(args.docs), markdown(report))
    print("\n" + markdown(report))
    return 0 if all(e["status"] == "ok" for e in report["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
