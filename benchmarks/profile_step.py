"""Where a training step's time goes: a ``jax.profiler`` trace of simlm's train step, summarised by kernel.

Builds the trainer's compiled pieces (:class:`simlm.train.Training`) for one of ``train.py``'s model sizes,
warms them up, traces ``--steps`` steps (batch sampling and the jit∘vmap step, as ``train`` runs them)
and reads the trace back: every device event (a GPU kernel, a TPU op) grouped by name and by kind —
matmul, fused attention, reductions, copies/transposes, other fusions, memory copies — with its share
of the traced wall time.  Device time summed over streams well below the wall time means the device
waits on the host (launch-bound); a kind that dominates is the place to work.

    python benchmarks/profile_step.py --size large --dtype bfloat16 --batch 64 --seq-len 512
    python benchmarks/profile_step.py --quick           # tiny, the smoke test

Writes a JSON summary (``--out``) and keeps the raw trace under ``--trace-dir`` when given (viewable in
Perfetto or TensorBoard).  On a CPU the "device" events are the thunks XLA:CPU's worker threads ran (its
fusions, matmuls and copies), summed over threads — so there the busy time can exceed the wall time.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from _common import REPO_ROOT, print_table, write_json  # noqa: E402
from train import QUICK_SIZES, SIZES, model_config, train_config  # noqa: E402
from simlm.models.transformer import attention_kernel  # noqa: E402
from simlm.train import Training  # noqa: E402
from simlm.worlds import HMM  # noqa: E402

# kind → substrings of a lower-cased kernel name; the first kind that matches wins
KINDS = {
    "fused attention": ("fmha", "flash", "cudnn", "attention"),
    # nvjet: cuBLASLt's kernels on Hopper; ynn: XLA:CPU's YNNPACK dots
    "matmul": ("gemm", "cutlass", "cublas", "xmma", "matmul", "dot", "wgmma", "nvjet", "ynn"),
    "memory copy": ("memcpy", "memset"),
    "copy/transpose": ("copy", "transpose"),
    "reduction": ("reduce", "reduction"),
    "other fusion": ("fusion",),
}


# events on XLA:CPU's worker threads that are not kernels (markers, the executor around the thunks)
CPU_BOOKKEEPING = ("$", "end: ", "ThreadpoolListener", "ThunkExecutor", "Wait for")


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS.items() if any(k in low for k in keys)), "other")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--size", default="large", choices=list(SIZES) + list(QUICK_SIZES))
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--residual-dtype", choices=["float32", "compute"], default="float32",
                   help="the residual stream under bfloat16: float32 (train.py's default) or bfloat16")
    p.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--symbols", type=int, default=64)
    p.add_argument("--states", type=int, default=16)
    p.add_argument("--seeds", type=int, default=1, help="members trained at once (the vmapped seed axis)")
    p.add_argument("--steps", type=int, default=10, help="steps traced")
    p.add_argument("--top", type=int, default=25, help="kernels listed")
    p.add_argument("--trace-dir", default=None, help="keep the raw trace here (default: a temporary directory)")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "profile_step.json"))
    p.add_argument("--quick", action="store_true", help="tiny size, B=4, T=16, 3 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.seq_len, args.symbols, args.states, args.steps = "tiny", 4, 16, 16, 4, 3
    return args


def device_events(trace_dir: Path) -> tuple[list[dict], int]:
    """The complete ('X') kernel events in the trace, and how many trace files were read: every event of a
    device process (a GPU's kernels, a TPU's ops), or on a CPU the thunks XLA's worker threads ran."""
    files = sorted(trace_dir.rglob("*.trace.json.gz"))
    events = []
    for path in files:
        with gzip.open(path, "rt") as fh:
            data = json.load(fh)
        raw = data["traceEvents"] if isinstance(data, dict) else data
        meta = {(e["name"], e["pid"], e.get("tid")): e.get("args", {}).get("name", "")
                for e in raw if e.get("ph") == "M"}
        devices = {pid for (kind, pid, _), name in meta.items()
                   if kind == "process_name" and name.startswith("/device:")}
        workers = {(pid, tid) for (kind, pid, tid), name in meta.items()
                   if kind == "thread_name" and name.startswith("tf_XLA") and not devices}
        events += [e for e in raw if e.get("ph") == "X" and "dur" in e
                   and (e.get("pid") in devices or ((e.get("pid"), e.get("tid")) in workers
                                                    and not e["name"].startswith(CPU_BOOKKEEPING)))]
    return events, len(files)


def summarise(events: list[dict], wall_s: float, steps: int, top: int) -> dict:
    """Device time per step by kernel (its name; the HLO op that launched it, e.g. a command buffer, beside
    it) and by kind, with shares of the traced wall time."""
    by_name, by_kind = collections.defaultdict(lambda: [0.0, 0, collections.Counter()]), collections.defaultdict(float)
    for e in events:
        entry = by_name[e["name"]]
        entry[0] += e["dur"] * 1e-6
        entry[1] += 1
        entry[2][e.get("args", {}).get("hlo_op", "")] += 1
        by_kind[kind_of(e["name"])] += e["dur"] * 1e-6
    busy = sum(by_kind.values())
    kernels = [{"name": name[:90], "hlo_op": ops.most_common(1)[0][0][:40], "kind": kind_of(name),
                "s_per_step": s / steps, "calls_per_step": n / steps, "share_of_wall": s / wall_s}
               for name, (s, n, ops) in sorted(by_name.items(), key=lambda kv: -kv[1][0])]
    return {"wall_s_per_step": wall_s / steps, "device_busy_s_per_step": busy / steps,
            "device_busy_share": busy / wall_s if events else None, "events": len(events),
            "kinds": {k: {"s_per_step": s / steps, "share_of_wall": s / wall_s}
                      for k, s in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "top_kernels": kernels[:top]}


def main(argv=None) -> int:
    args = parse_args(argv)
    mc = model_config(args.size, args)  # train.py's network and trainer configuration, with --seeds members
    tc = dataclasses.replace(train_config(args), seeds=tuple(range(args.seeds)))
    run = Training(HMM.random(0, args.states, args.symbols), mc, tc)
    state = run.init_state()
    for i in range(3):  # compile and warm up
        state, loss = run.step(state, run.batch(i))
    jax.block_until_ready(loss)
    trace_dir = Path(args.trace_dir or tempfile.mkdtemp(prefix="simlm-profile-"))
    with jax.profiler.trace(str(trace_dir)):
        start = time.perf_counter()
        for i in range(3, 3 + args.steps):
            state, loss = run.step(state, run.batch(i))
        jax.block_until_ready(loss)
        wall = time.perf_counter() - start
    events, files = device_events(trace_dir)
    summary = summarise(events, wall, args.steps, args.top)
    device = jax.devices()[0]
    print(f"simlm train step on {device.platform} ({device.device_kind}): {args.size} ({mc.n_params():,} params), "
          f"{args.dtype}, attention {attention_kernel(mc)}, {args.seeds} seed(s) × B={args.batch} T={args.seq_len}; "
          f"{args.steps} steps traced")
    print(f"wall {summary['wall_s_per_step'] * 1e3:.2f} ms a step; device busy "
          + (f"{summary['device_busy_s_per_step'] * 1e3:.2f} ms ({summary['device_busy_share']:.0%} of wall, "
             "summed over streams or threads)" if events else f"— no kernel events in {files} trace file(s)"))
    if events:
        print_table([{"kind": k, "ms": v["s_per_step"] * 1e3, "share": v["share_of_wall"]}
                     for k, v in summary["kinds"].items()], ["kind", ("ms", "ms / step"), ("share", "of wall")],
                    title="device time by kind")
        print_table([{**k, "ms": k["s_per_step"] * 1e3} for k in summary["top_kernels"]],
                    ["name", "hlo_op", "kind", ("ms", "ms / step"), ("calls_per_step", "calls"),
                     ("share_of_wall", "of wall")],
                    title=f"top {args.top} kernels")
    out = write_json(args.out, {"benchmark": "profile_step", "config": vars(args), "attention_kernel":
                                attention_kernel(mc), "n_params": mc.n_params(), "trace_files": files,
                                "trace_dir": str(trace_dir) if args.trace_dir else None, **summary})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
