"""Experiment 1 end to end: ``python -m simlm.experiments.head_prompt experiment1``, timed as a user runs it.

One subprocess, the default configuration (``--quick``: the experiment's own quick sizes) into a fresh
results directory, so nothing is resumed: every world is generated, every transformer trained down its
ε ladder, every head and prompt fitted and scored, the report, CSV and plot written.  Wall time includes
the interpreter's start and every compilation.  Workers: the experiment's default (``auto``: a process
per CPU core on a CPU, one process on an accelerator), or ``--workers N`` (on a GPU the workers share the
device's memory: :func:`simlm.experiments.executors._share_accelerator`).

Targets (issue 14): ≤ 8 min on an idle 2-core CPU; ≤ 5 min on a GPU/TPU.

    .venv/bin/python benchmarks/experiment1.py            # the default experiment 1
    .venv/bin/python benchmarks/experiment1.py --quick    # its --quick sizes (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402

from _common import (REPO_ROOT, cpu_cores, cpu_target_reason, meets, run_process_group,  # noqa: E402
                     write_json)

TARGET_S = {"cpu": 8 * 60, "accelerator": 5 * 60}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--quick", action="store_true", help="the experiment's --quick sizes")
    p.add_argument("--workers", type=int, default=None,
                   help="the experiment's --workers (default: its own, auto)")
    p.add_argument("--timeout", type=int, default=3600,
                   help="seconds before the experiment (and every process it started) is stopped; the JSON says so")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "experiment1.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    backend = jax.default_backend()
    kind = "cpu" if backend == "cpu" else "accelerator"
    with tempfile.TemporaryDirectory(prefix="simlm-experiment1-") as tmp:
        cmd = [sys.executable, "-m", "simlm.experiments.head_prompt", "experiment1", "--out", tmp, "--quiet"]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--workers", str(args.workers)] if args.workers is not None else []
        print(f"experiment 1 end to end on {backend} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs: "
              + " ".join(cmd[1:]), flush=True)
        started = time.perf_counter()
        code, output = run_process_group(cmd, timeout=args.timeout, cwd=REPO_ROOT)
        wall = time.perf_counter() - started
        payload_path = Path(tmp) / "experiment1" / "experiment1.json"
        payload = json.loads(payload_path.read_text()) if code == 0 and payload_path.exists() else {}
    tail = output[-3000:] + (f"\nstopped after {args.timeout} s (--timeout)" if code is None else "")
    ok = code == 0 and bool(payload) and not payload.get("errors")
    print(tail if not ok else output[-1500:])
    wide = cpu_target_reason(backend, cpu_cores()) if kind == "cpu" else None  # a CPU wider than the target's
    target = {"seconds": TARGET_S[kind], "device": kind, "value": wall, "reason": wide,
              "met": meets(wall, TARGET_S[kind], at_most=True) if ok and not args.quick and not wide else None}
    print(f"\nexperiment 1: {wall:.0f} s wall ({payload.get('time_s', float('nan')):.0f} s inside run(), "
          f"{payload.get('new_cells', '?')} cells, {len(payload.get('records', []))} records) — target ≤ "
          f"{TARGET_S[kind]} s on {'a CPU' if kind == 'cpu' else 'an accelerator'}: "
          + ("did not finish" if not ok else "quick sizes, not judged" if args.quick else wide if wide
             else "met" if target["met"] else "MISSED"))
    out = write_json(args.out, {
        "benchmark": "experiment1", "config": {"quick": args.quick, "command": cmd[1:], "backend": backend},
        "ok": ok, "returncode": code, "timed_out": code is None, "wall_s": wall, "run_s": payload.get("time_s"),
        "cells": payload.get("new_cells"), "records": len(payload.get("records", [])),
        "errors": payload.get("errors"), "target": target, **({} if ok else {"output_tail": tail})})
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
