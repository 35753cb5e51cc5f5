"""Share of training wall time spent evaluating ε, in the experiment-1 trainer (head_prompt).

Trains the seeds of one experiment-1 world (``--states`` |H|, default 10) exactly as
``python -m simlm.experiments.head_prompt experiment1`` does (``train_world``: masked-lm, the ladder
(0.3, 0.1, 0.03), up to 2500 steps, 3 seeds vmapped), then counts the evaluations in its metrics.jsonl and
times one compiled evaluation and one compiled step of the same :class:`~simlm.train.Training`
(medians, interleaved) — and, alongside them, the same evaluation as one batch of the whole held-out set
(``eval_chunk`` = all sequences, as before the trainer scored it in chunks on a CPU).

Evaluation share (judged) = the wall time the training run spent in its evaluations — each exact-ε
evaluation (timed from inside the run, after the steps queued before it have finished: JAX dispatches them
asynchronously), the ladder's bookkeeping after it (``_log_and_climb``: the metrics row, the rung
checkpoints) and the copy of the state it keeps as the replay's anchor (``Training.copy``; counted since
2026-12-05 noon) — over the run's whole wall time, compilation included.  Reported beside it: the modelled share
n_eval · t_eval / (n_steps · t_step + n_eval · t_eval) of the isolated timings (the only share until
2026-12-05; it leaves out what an evaluation costs the loop besides its computation), and the resume
checkpoints' seconds.
With ``--compare-with DIR`` the same world is trained a second time by the simlm checkout at DIR (e.g.
the main branch, before the predictive schedule), in a subprocess, and its evaluation count is reported
beside ours.  Every rung's ε/target is listed: the ladder's rule is ε ∈ [0.7, 1] × target.

Targets, judged separately (``targets.eval_share``, ``targets.rungs``; neither in ``--quick``):
evaluation ≤ 10 % of training wall time; every rung a seed's ε crossed (some evaluation at or below the
target) saved, each within [0.7, 1] × target, and at least one rung saved (a run that reaches no rung does
not meet it).  A rung below every ε a seed reached in its 2500 steps is the world's training budget, not
the schedule's doing: listed with the seed's lowest ε, not judged (in the |H| = 10 world no seed reaches
0.03: its lowest ε is 0.048–0.057, as experiment 1's final ε of that world, 0.048, in docs/head_prompt.md).

    .venv/bin/python benchmarks/eval_schedule.py [--states 10] [--compare-with /path/to/checkout]
    .venv/bin/python benchmarks/eval_schedule.py --quick       # the experiment's --quick sizes (smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402

from _common import REPO_ROOT, meets, print_table, time_interleaved, write_json  # noqa: E402
from simlm.experiments import head_prompt  # noqa: E402
from simlm.models import TransformerConfig  # noqa: E402
from simlm.train import TrainConfig  # noqa: E402
from simlm.train import trainer as trainer_module  # noqa: E402
from simlm.train.trainer import Training  # noqa: E402

SHARE_TARGET = 0.10
OVERSHOOT_WINDOW = (0.7, 1.0)  # the ladder's rule: a rung is saved at ε ∈ [0.7, 1] × target


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--states", type=int, default=10, help="|H| of the experiment-1 world")
    p.add_argument("--compare-with", default=None, help="a simlm checkout whose trainer is counted too")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "eval_schedule.json"))
    p.add_argument("--quick", action="store_true", help="the experiment's --quick config")
    return p.parse_args(argv)


def count_evaluations(run_dir: Path) -> tuple[int, int, dict, dict]:
    """(evaluations, last step, {(seed, target): ε/target of every rung saved}, {seed: lowest ε evaluated})
    from a finished run directory.  Evaluations are the distinct steps of ``metrics.jsonl``: one a replay
    discarded (past its anchor) is not there, so the modelled share can undercount; the judged share is
    timed inside the run and counts every evaluation."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = sorted({r["step"] for r in rows})
    lowest = {}
    for r in rows:
        lowest[r["seed"]] = min(lowest.get(r["seed"], math.inf), r["epsilon"])
    saved = {}
    for meta in run_dir.glob("seed_*/eps_*/metadata.json"):
        m = json.loads(meta.read_text())
        saved[(m["seed"], m["target"])] = m["overshoot"]
    return len(steps), steps[-1], saved, lowest


def verdicts(share: float, saved: dict, lowest: dict, ladder, *, quick: bool) -> dict:
    """The two targets as separate verdicts: ``eval_share`` (share ≤ :data:`SHARE_TARGET`) and ``rungs``:
    every rung a seed's ε crossed (an evaluation at or below the target: ``lowest[seed] ≤ target``) saved,
    each at ε ÷ target within :data:`OVERSHOOT_WINDOW`, and at least one rung saved.  A rung that no
    evaluation of its seed reached is the world's training budget, not the schedule's miss: it is listed
    (``unreached``, with the seed's lowest ε), not judged.  ``saved`` maps (seed, target) to ε ÷ target.
    ``met`` is None in ``--quick`` (the experiment's smoke-test sizes)."""
    lo, hi = OVERSHOOT_WINDOW
    owed = [(s, t) for s in sorted(lowest) for t in ladder if lowest[s] <= t]
    missed = [[s, t] for s, t in owed if (s, t) not in saved]
    outside = [[s, t, o] for (s, t), o in sorted(saved.items()) if not lo <= o <= hi]
    rungs = {"expected": len(lowest) * len(ladder), "crossed": len(owed), "reached": len(saved),
             "missed": missed, "outside_window": outside, "window": list(OVERSHOOT_WINDOW),
             "unreached": [[s, t, lowest[s]] for s in sorted(lowest) for t in ladder if lowest[s] > t],
             "worst": min(saved.values()) if saved else None,
             "met": bool(saved) and not missed and not outside}
    share_t = {"target": SHARE_TARGET, "value": share, "met": meets(share, SHARE_TARGET, at_most=True)}
    if quick:
        for t in (share_t, rungs):
            t["met"], t["reason"] = None, "not judged: --quick sizes"
    return {"eval_share": share_t, "rungs": rungs}


_OTHER = """
import json, sys, tempfile
from pathlib import Path
from simlm.experiments import head_prompt
cfg = head_prompt.Config(**json.loads(sys.argv[1]))
spec = [s for s in head_prompt.worlds("experiment1", cfg) if s["n_states"] == int(sys.argv[2])][0]
d = Path(tempfile.mkdtemp())
head_prompt.train_world(spec["make"](), "hmm", cfg, d)
rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
print(json.dumps({"evaluations": len({r["step"] for r in rows}), "last_step": max(r["step"] for r in rows)}))
"""


def timed_train_world(world, config, run_dir: Path) -> tuple[float, dict]:
    """``head_prompt.train_world`` with the trainer's evaluations, its ladder bookkeeping and its resume
    checkpoints timed from inside the run:
    ``(wall seconds, {"evaluate", "log_and_climb", "anchor_copies", "resume_points"})``."""
    spent = {"evaluate": 0.0, "log_and_climb": 0.0, "anchor_copies": 0.0, "resume_points": 0.0}
    originals = (Training.evaluate, trainer_module._log_and_climb, trainer_module._save_resume_point, Training.copy)

    def timed(name, fn, block=None, wait=False):
        def wrapper(*args, **kwargs):
            if block is not None:
                jax.block_until_ready(block(args))  # the queued steps before it are training's time
            t = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
                return jax.block_until_ready(out) if wait else out  # wait: its own computation, not its dispatch
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    Training.evaluate = timed("evaluate", originals[0], block=lambda a: a[1])  # (self, params)
    trainer_module._log_and_climb = timed("log_and_climb", originals[1])
    trainer_module._save_resume_point = timed("resume_points", originals[2])
    Training.copy = timed("anchor_copies", originals[3], wait=True)
    try:
        started = time.perf_counter()
        head_prompt.train_world(world, "hmm", config, run_dir)
        return time.perf_counter() - started, spent
    finally:
        (Training.evaluate, trainer_module._log_and_climb, trainer_module._save_resume_point,
         Training.copy) = originals


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = head_prompt.QUICK if args.quick else {}
    states = (head_prompt.QUICK["n_states"][0] if args.quick else args.states)
    config = head_prompt.Config(**{**overrides, "n_states": (states,)})
    spec = head_prompt.worlds("experiment1", config)[0]
    world = spec["make"]()
    run_dir = Path(tempfile.mkdtemp(prefix="simlm-eval-schedule-"))
    train_wall, spent = timed_train_world(world, config, run_dir)
    n_eval, last_step, saved_rungs, lowest = count_evaluations(run_dir)
    overshoots = sorted(saved_rungs.values())

    saved = json.loads((run_dir / "config.json").read_text())
    training = Training(world, TransformerConfig.from_dict(saved["model_config"]),
                        TrainConfig.from_dict(saved["train_config"]))
    state = training.init_state()
    batch = training.batch(0)
    holder = {"state": state}

    def step():
        holder["state"], loss = training.step(holder["state"], batch)
        return loss

    # the same evaluation as one batch of the whole held-out set (the trainer before chunking), timed alongside
    one_batch = Training(world, training.model_config, training.config, eval_chunk=training.config.eval_sequences)
    timings = time_interleaved({"step": step, "evaluate": lambda: training.evaluate(holder["state"].params),
                                "evaluate_one_batch": lambda: one_batch.evaluate(holder["state"].params)},
                               repeats=args.repeats, warmup=2)
    t_step, t_eval, t_one = (timings[k].median for k in ("step", "evaluate", "evaluate_one_batch"))
    share = (spent["evaluate"] + spent["log_and_climb"] + spent["anchor_copies"]) / train_wall  # inside the run
    row = {"world": spec["world"], "steps": last_step, "evaluations": n_eval, "step_s": t_step, "eval_s": t_eval,
           "eval_chunk": training.eval_chunk, "eval_one_batch_s": t_one,
           "eval_share": share, "eval_seconds_in_run": spent["evaluate"],
           "bookkeeping_seconds_in_run": spent["log_and_climb"], "anchor_copy_seconds_in_run": spent["anchor_copies"],
           "resume_point_seconds_in_run": spent["resume_points"],
           "eval_share_modelled": n_eval * t_eval / (last_step * t_step + n_eval * t_eval),
           "eval_share_one_batch": n_eval * t_one / (last_step * t_step + n_eval * t_one),
           "train_wall_s": train_wall, "load_average": list(os.getloadavg()),
           "min_overshoot": min(overshoots) if overshoots else None, "rungs": len(overshoots)}
    if args.compare_with:
        env = {**os.environ, "PYTHONPATH": str(Path(args.compare_with).resolve())}
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in {**overrides, "n_states": [states]}.items()}
        proc = subprocess.run([sys.executable, "-c", _OTHER, json.dumps(cfg), str(states)], env=env,
                              capture_output=True, text=True, cwd=tempfile.gettempdir())
        if proc.returncode == 0:
            other = json.loads(proc.stdout.strip().splitlines()[-1])
            row["compare_evaluations"], row["compare_steps"] = other["evaluations"], other["last_step"]
            row["compare_eval_share"] = (other["evaluations"] * t_eval
                                         / (other["last_step"] * t_step + other["evaluations"] * t_eval))
        else:
            print(proc.stderr[-2000:], file=sys.stderr)
    print_table([row], ["world", "steps", "evaluations", "compare_evaluations", "step_s", "eval_s", "eval_chunk",
                        "eval_one_batch_s", "eval_share", "eval_share_modelled", "eval_share_one_batch",
                        "compare_eval_share", "eval_seconds_in_run", "bookkeeping_seconds_in_run",
                        "anchor_copy_seconds_in_run",
                        "min_overshoot", "rungs", "train_wall_s"],
                title="evaluation share of training (timings noisy under CPU contention; same-run ratios)")
    targets = verdicts(share, saved_rungs, lowest, config.targets, quick=args.quick)
    r = targets["rungs"]
    word = lambda t: t.get("reason") or ("met" if t["met"] else "NOT met")  # noqa: E731
    print(f"\ntargets: evaluation share ≤ {SHARE_TARGET:.0%}: {share:.1%} → {word(targets['eval_share'])}; "
          f"every rung crossed saved in [0.7, 1] × target: {r['reached']} saved of {r['crossed']} crossed"
          + (f", worst {r['worst']:.3g}" if r['worst'] is not None else "") + f" → {word(r)}")
    for seed, target, eps in r["unreached"]:
        print(f"  not judged: seed {seed} never reached ε ≤ {target:g} (lowest evaluated ε {eps:.3g})")
    write_json(args.out, {"config": {"quick": args.quick, "states": states, "compare_with": args.compare_with,
                                     "seeds": list(config.seeds), "ladder": list(config.targets)},
                          "results": [row], "overshoots": overshoots, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())
