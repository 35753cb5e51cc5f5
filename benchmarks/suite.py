"""Every benchmark in one run, sized for the backend, into one JSON and the Markdown table of docs/benchmarks.md.

Runs each script below as a subprocess (as a user runs it) with sizes chosen by ``jax.default_backend()``
— larger batches, sequences, state counts and a ≥ 10M-parameter model (``train.py --sizes large``,
~19M) on GPU/TPU — collects the JSON each one writes, and records the machine, the versions and which
peers (dynamax, hmmlearn, torch + transformers) were installed.  A script that fails is recorded as
failed (its last output kept) and the suite goes on.

The Markdown table (between the ``<!-- suite:begin -->`` / ``<!-- suite:end -->`` markers of
``--docs``) has one row per headline number: target, measured value, verdict, the device it was measured
on.  Rows that only mean something on an accelerator (training MFU, 8 vmapped seeds vs 1 at ≤ 2×, the
parallel filter at T = 8192, experiment 1 end to end) read "unmeasured — no accelerator in this run" on a
CPU: an accelerator number is never extrapolated from a CPU one.

    .venv/bin/python benchmarks/suite.py                      # everything, sizes for this backend
    .venv/bin/python benchmarks/suite.py --only filters property_speed
    .venv/bin/python benchmarks/suite.py --quick --docs /tmp/b.md   # every script's --quick (smoke test)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402

from _common import REPO_ROOT, machine_info, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
PEERS = {"dynamax": ["dynamax"], "hmmlearn": ["hmmlearn"], "torch + transformers": ["torch", "transformers"]}


def plan(accelerator: bool) -> dict:
    """Script → extra arguments, by backend (each script's own defaults otherwise)."""
    if accelerator:
        return {"worlds": ["--batch", "1024", "--length", "2048"], "filters": [],
                "train": ["--sizes", "small", "medium", "large"], "ensemble": [], "eval_schedule": [],
                "property_speed": [], "time_to_eps": []}
    return {"worlds": [], "filters": [], "train": ["--sizes", "small", "medium"], "ensemble": [],
            "eval_schedule": [], "property_speed": [], "time_to_eps": []}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", default=None, choices=list(plan(False)), help="run these scripts only")
    p.add_argument("--quick", action="store_true", help="every script's --quick")
    p.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results"))
    p.add_argument("--docs", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--timeout", type=int, default=3600, help="seconds per script")
    p.add_argument("--compare-with", default=None,
                   help="a simlm checkout whose trainer eval_schedule.py also counts (e.g. the main branch)")
    return p.parse_args(argv)


# ---- headline numbers: (quantity, target, value, met) from each script's JSON -----------------------

def _fmt(x, unit=""):
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.3g}{unit}" if isinstance(x, float) else f"{x}{unit}"


def headlines(name: str, r: dict) -> list:
    """Rows ``(quantity, target, measured, met)`` for one script's report (missing keys give '—')."""
    get = lambda d, *ks: next((d.get(k) for k in ks if isinstance(d, dict) and k in d), None)  # noqa: E731
    if name == "worlds":
        t = r.get("targets", {})
        return [("sampling simlm ÷ dynamax, worst K", "≥ 50×", _fmt(get(t.get("sampling_ratio"), "worst"), "×"),
                 get(t.get("sampling_ratio"), "met")),
                ("next-token law simlm ÷ dynamax, worst K", "≥ 1.5×",
                 _fmt(get(t.get("inference_ratio"), "worst"), "×"), get(t.get("inference_ratio"), "met")),
                ("forward GFLOP/s ÷ matmul, K = 256", "≥ 60 %", _fmt(get(t.get("forward_fraction"), "value")),
                 get(t.get("forward_fraction"), "met"))]
    if name == "filters":
        out = []
        for row in r.get("results", []):
            out.append((f"parallel ÷ sequential filter speed, K={row['K']} T={row['T']}", "(report)",
                        _fmt(row.get("par_over_seq"), "×"), None))
            if "par_vs_dynamax_par" in row:
                out.append((f"parallel filter simlm ÷ dynamax, K={row['K']} T={row['T']}", "(report)",
                            _fmt(row["par_vs_dynamax_par"], "×"), None))
        return out
    if name == "train":
        out = [(f"train step simlm ÷ HF GPT-2, {row.get('size')}", "≥ 1.5×",
                _fmt(row.get("ratio"), "×") if row.get("ratio") is not None else "peer not installed",
                None if row.get("ratio") is None else row["ratio"] >= 1.5) for row in r.get("results", [])]
        out += [(f"training MFU, {row.get('size')}", "≥ 40 % (bf16, ≥ 10M)", _fmt(row.get("mfu")), None)
                for row in r.get("results", []) if row.get("mfu") is not None]
        return out
    if name == "ensemble":
        t = r.get("target", {})
        return [("8 vmapped seeds ÷ 1 seed, wall", "≤ 2×", _fmt(t.get("ratio"), "×"), t.get("met"))]
    if name == "eval_schedule":
        row = (r.get("results") or [{}])[0]
        t = get(r.get("targets"), "eval_share") or {}
        return [("ε evaluation share of training, experiment 1", "≤ 10 %", _fmt(row.get("eval_share")), t.get("met")),
                ("evaluations (this trainer / compared checkout)", "(report)",
                 f"{row.get('evaluations')} / {row.get('compare_evaluations', '—')}", None),
                ("worst rung ε ÷ target", "≥ 0.7", _fmt(row.get("min_overshoot")),
                 None if row.get("min_overshoot") is None else row["min_overshoot"] >= 0.7)]
    if name == "property_speed":
        t = get(r.get("targets"), "examples_per_s") or {}
        return [("hypothesis property test, warm", "≥ 50 examples/s", _fmt(t.get("value")), t.get("met"))]
    if name == "time_to_eps":
        t = r.get("target", {})
        return [("train() to ε ≤ 0.01", "≤ 600 s (CPU)", _fmt(t.get("seconds_to_reach") or r.get("total_s"), " s"),
                 t.get("met"))]
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
             + ("Quick mode (smoke-test sizes; not comparable with the targets).  " if report["quick"] else "")
             + "CPU timings are medians under whatever load shared the machine; ratios are of one run.", "",
             "| benchmark | quantity | target | measured | met | device |", "|---|---|---|---|---|---|"]
    for name, res in report["benchmarks"].items():
        if res["status"] != "ok":
            lines.append(f"| {name} | — | — | {res['status']} | — | {device} |")
            continue
        for quantity, target, value, met in headlines(name, res["report"]):
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


def main(argv=None) -> int:
    args = parse_args(argv)
    accelerator = jax.default_backend() != "cpu"
    scripts = plan(accelerator)
    names = args.only or list(scripts)
    results = Path(args.results)
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": args.quick,
              "machine": machine_info(), "benchmarks": {},
              "peers": {peer: all(importlib.util.find_spec(m) is not None for m in mods) for peer, mods in PEERS.items()}}
    for name in names:
        out = results / f"{name}.json"
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--out", str(out)] + (["--quick"] if args.quick else scripts[name])
        if name == "eval_schedule" and args.compare_with:
            cmd += ["--compare-with", args.compare_with]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=REPO_ROOT)
            status = "ok" if proc.returncode == 0 and out.exists() else f"failed (exit {proc.returncode})"
            tail = (proc.stdout + proc.stderr)[-4000:]
        except subprocess.TimeoutExpired:
            status, tail = f"timed out after {args.timeout} s", ""
        print(tail if status != "ok" else (proc.stdout[-3000:]), flush=True)
        entry = {"status": status, "seconds": time.perf_counter() - started, "args": cmd[2:]}
        if status == "ok":
            entry["report"] = json.loads(out.read_text())
        else:
            entry["output_tail"] = tail
        report["benchmarks"][name] = entry
    table = markdown(report)
    write_json(results / "suite.json", {k: v for k, v in report.items() if k != "machine"})
    write_docs(Path(args.docs), table)
    print("\n" + table)
    return 0 if all(e["status"] == "ok" for e in report["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
