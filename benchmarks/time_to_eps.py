"""Time to ε: wall-clock seconds for ``train`` to bring the default model to ε ≤ 0.01 nats/token.

The world is the default HMM of the examples, ``HMM.random(0, 8, 16, family="permutation-mixture",
transition_temp=0.1, emission_temp=0.1)`` (K = 8 states, V = 16 symbols, entropy rate ≈ 2.36 nats/token);
the model is ``TransformerConfig(n_symbols=16)`` with every other field at its default (d = 64, 2 layers,
4 heads, ~0.1M parameters).  ``train`` runs one seed down the ladder ε ∈ (1, 0.3, 0.1, 0.03, 0.01), ε the
exact mean KL(p* ‖ p_θ) per token on the held-out set, and stops at the last rung or at ``max_steps``.

Reported per rung: the ε at which it was first crossed, the step, the tokens seen and the trainer's wall
time (its clock starts after set-up; compilation of the step and evaluation falls inside it).  The
headline is the wall time of the whole ``train`` call — set-up and compilation included — which is when
a user holds the ε ≤ 0.01 checkpoint.  The ε curve (every evaluation) is kept in the JSON.

Target: ε ≤ 0.01 within 600 s on 2 CPU cores (judged only for a ladder with a rung at ε ≤ 0.01, and not in
``--quick``; the time is reported only when that rung was reached).  The training config below (``TUNED``) was chosen for
that; ``--lr``, ``--batch`` … override it.  Tuning runs (T = 64, warm-up 100; 2 shared, loaded cores):

    B    lr     max_steps   ε ≤ 0.01 at step   best ε
    32   3e-3   2000        —                  0.0182
    32   1e-2   4000        —                  0.0140
    64   5e-3   3000        —                  0.0117
    64   2e-3   4000        3928               0.0100
    64   3e-3   4000        3036               0.0096
    64   3e-3   3200        2664               0.0099   ← TUNED (the cosine decays sooner)
    128  3e-3   2000        —                  0.0112

Every run crosses 0.1 within ~300–500 steps after a plateau near 0.11 (the model learning to track the
hidden state); the last rung is limited by gradient noise, so a larger batch and a decayed learning
rate help more than a larger peak rate.

    .venv/bin/python benchmarks/time_to_eps.py           # the tuned config, whole ladder
    .venv/bin/python benchmarks/time_to_eps.py --quick   # the first rungs on a tiny budget (smoke test)
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

import jax
from _common import (CPU_TARGET_CORES, REPO_ROOT, cpu_cores, cpu_target_reason, meets, print_table,
                     write_json)

from simlm.models.transformer import TransformerConfig
from simlm.train import TrainConfig, train
from simlm.worlds import HMM

TARGET_EPSILON = 0.01  # nats/token
TARGET_SECONDS = 600.0
LADDER = (1.0, 0.3, 0.1, 0.03, 0.01)
TUNED = {"learning_rate": 3e-3, "batch_size": 64, "seq_len": 64, "warmup_steps": 100, "max_steps": 3200,
         "eval_every": 100}
QUICK = {"learning_rate": 1e-2, "batch_size": 16, "seq_len": 32, "warmup_steps": 10, "max_steps": 40,
         "eval_every": 20}


def default_world() -> HMM:
    return HMM.random(0, 8, 16, family="permutation-mixture", transition_temp=0.1, emission_temp=0.1)


def verdict(rungs: list, total: float, *, quick: bool, backend: str = "cpu", cores: int = CPU_TARGET_CORES) -> dict:
    """The target ε ≤ :data:`TARGET_EPSILON` within :data:`TARGET_SECONDS`, from the ladder's ``rungs`` (dicts
    with ``target`` and ``reached``) and ``train()``'s wall time ``total``.  ``seconds_to_reach`` is set only
    when the ladder has a rung at ε ≤ 0.01 and the run reached it (then ``train()``'s wall time: when a user
    holds that checkpoint; an upper bound if the ladder went on below it); ``met`` is None in ``--quick`` and
    when no such rung exists, off the CPU (``backend``: the target is a CPU's) and on more than 2 ``cores``."""
    at = [r for r in rungs if r["target"] <= TARGET_EPSILON]
    rung = max(at, key=lambda r: r["target"]) if at else None  # the first rung at ε ≤ 0.01
    target = {"epsilon": TARGET_EPSILON, "seconds": TARGET_SECONDS, "rung": None if rung is None else rung["target"],
              "reached": bool(rung and rung["reached"]), "seconds_to_reach": None, "met": None, "reason": None}
    if rung is None:
        smallest = min(r["target"] for r in rungs)
        target["reason"] = f"not attempted (the ladder stops at ε = {smallest:g})"
        return target
    if target["reached"]:
        target["seconds_to_reach"] = total
        if min(r["target"] for r in rungs) < rung["target"]:
            target["bound"] = "upper: train() went on to the ladder's smaller rungs"
    if quick:
        target["reason"] = "not judged: --quick sizes"
    elif reason := cpu_target_reason(backend, cores):  # a GPU, or a wider CPU, would read "met" for its own speed
        target["reason"] = reason
    elif target["reached"]:
        target["met"] = meets(total, TARGET_SECONDS, at_most=True)
    else:
        target["met"], target["reason"] = False, f"not reached (train() {total:.1f} s)"
    return target


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (tuned: {TUNED['learning_rate']})")
    p.add_argument("--batch", type=int, default=None, help=f"batch size (tuned: {TUNED['batch_size']})")
    p.add_argument("--seq-len", type=int, default=None, help=f"sequence length (tuned: {TUNED['seq_len']})")
    p.add_argument("--warmup", type=int, default=None, help=f"warm-up steps (tuned: {TUNED['warmup_steps']})")
    p.add_argument("--max-steps", type=int, default=None, help=f"budget and cosine length (tuned: {TUNED['max_steps']})")
    p.add_argument("--eval-every", type=int, default=None, help=f"(tuned: {TUNED['eval_every']})")
    p.add_argument("--targets", type=float, nargs="+", default=list(LADDER))
    p.add_argument("--seed", type=int, default=0, help="the model's seed")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "time_to_eps.json"))
    p.add_argument("--quick", action="store_true", help="rungs 1, 0.3, 0.1 only, 40 steps of 16×32 tokens")
    args = p.parse_args(argv)
    base = QUICK if args.quick else TUNED
    if args.quick and args.targets == list(LADDER):
        args.targets = [1.0, 0.3, 0.1]
    overrides = {"learning_rate": args.lr, "batch_size": args.batch, "seq_len": args.seq_len,
                 "warmup_steps": args.warmup, "max_steps": args.max_steps, "eval_every": args.eval_every}
    args.train = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    world = default_world()
    mc = TransformerConfig(n_symbols=world.n_symbols, max_len=max(128, args.train["seq_len"]))
    tc = TrainConfig(seeds=(args.seed,), targets=tuple(args.targets), **args.train)
    load_before = os.getloadavg()
    print(f"simlm time-to-ε benchmark on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f}")
    print(f"world: {world!r} (permutation-mixture, transition_temp = emission_temp = 0.1)")
    print(f"model: d={mc.d_model} L={mc.n_layers} H={mc.n_heads} d_ff={mc.d_ff} ({mc.n_params():,} params)")
    print("train: " + ", ".join(f"{k}={v}" for k, v in args.train.items()) + f"; ladder {tc.targets}")

    with tempfile.TemporaryDirectory(prefix="simlm-bench-eps-") as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        result = train(world, mc, tc, run_dir, progress=False)
        total = time.perf_counter() - start
        curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{k: m[k] for k in ("step", "epsilon", "epsilon_se", "tv", "loss", "tokens_seen", "wall_time")}
             for m in curve]

    rungs = [{"target": r.target, "reached": r.reached, "epsilon": r.epsilon, "epsilon_se": r.epsilon_se,
              "step": r.step, "tokens_seen": r.tokens_seen, "wall_time": r.wall_time} for r in result.records]
    print_table(rungs, ["target", "reached", ("epsilon", "ε reached"), ("epsilon_se", "± se"), "step",
                        ("tokens_seen", "tokens"), ("wall_time", "wall s (trainer clock)")],
                title="ladder (nats/token)")
    marks = sorted({min(range(len(curve)), key=lambda i: abs(curve[i]["step"] - s))
                    for s in [round(f * result.final_step) for f in (0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1)]})
    print_table([curve[i] for i in marks], ["step", ("epsilon", "ε"), ("loss", "train loss"),
                                            ("tokens_seen", "tokens"), ("wall_time", "wall s")],
                title="ε curve (a sample of the evaluations; all of them are in the JSON)")

    best = min(result.best_epsilon.values())
    target = verdict(rungs, total, quick=args.quick, backend=jax.default_backend(), cores=cpu_cores())
    tokens_per_s = result.final_step * tc.batch_size * tc.seq_len / total
    print(f"\ntrain() wall time {total:.1f} s for {result.final_step} steps "
          f"({tokens_per_s:,.0f} tokens/s overall), best ε {best:.4g}")
    head = f"target: ε ≤ {TARGET_EPSILON:g} in ≤ {TARGET_SECONDS:g} s: "
    if target["seconds_to_reach"] is None:
        print(head + target["reason"] + ("" if target["rung"] is None else f"; best ε {best:.4g}"))
    else:
        print(head + f"reached in {target['seconds_to_reach']:.1f} s → "
              + (target["reason"] or ("met" if target["met"] else "MISSED")))

    out = write_json(args.out, {
        "benchmark": "time_to_eps", "world": {"repr": repr(world), "fingerprint": world.fingerprint(),
                                              "family": "permutation-mixture", "n_states": 8, "n_symbols": 16,
                                              "transition_temp": 0.1, "emission_temp": 0.1},
        "model_config": mc.to_dict(), "n_params": mc.n_params(), "train_config": tc.to_dict(),
        "quick": args.quick, "load_average": {"before": load_before, "after": os.getloadavg()},
        "total_s": total, "final_step": result.final_step, "tokens_per_s": tokens_per_s, "best_epsilon": best,
        "rungs": rungs, "curve": curve, "target": target,
    })
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
