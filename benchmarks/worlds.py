"""HMM world throughput: simlm against dynamax and hmmlearn, side by side in one run.

For B sequences of length T at each K (V symbols), on a random Dirichlet HMM:

1. sampling, tokens/s — ``HMM.sample`` vs dynamax ``CategoricalHMM.sample`` (jit∘vmap over B keys)
   vs hmmlearn ``CategoricalHMM.sample`` (a Python loop per sequence, so run on fewer sequences and
   scaled to tokens/s); where ``HMM.sample`` picks the parallel chain (``hmm_core.sample``: on an
   accelerator, when it fits), the sequential one is timed beside it (``sample_parallel_over_sequential``);
2. the exact next-token law p(x_t = · | x_<t), a (B, T, V) array, tokens/s — simlm's jitted batched
   ``next_token_probs`` vs dynamax ``vmap(hmm_filter)`` with ``predicted_probs @ B`` (same output;
   log-likelihoods by a gather of log B, the cheapest input dynamax accepts) vs hmmlearn
   ``predict_proba`` per sequence (forward–backward: a different output, reported for scale);
3. the forward pass's achieved GFLOP/s, counting 2·B·T·K² flops (one K×K product per step), against a
   large float32 matmul measured in the same run.

simlm and dynamax are timed round-robin (per round, each an untimed lead-in call then its timed call, so
that neither pays for what the other leaves running — ``_common.time_interleaved``; median of
``--repeats`` after ``--warmup``), so background load falls on both alike; each ratio is also given as the median of the
per-round ratios (``*_paired``), which cancels load that drifts between rounds, and as the ratio of the
calls' process CPU time (``*_cpu``: the work done, which contention does not stretch; a diagnostic
for shared machines — the targets are judged on wall time).  The forward pass and the
matmul reference are timed round-robin too, at every K.  Both sides run every timed call under one
matmul precision, ``--precision`` (default ``float32``, the precision dynamax sets for itself on import;
:mod:`peers` undoes that global change so it cannot leak into simlm), recorded in the JSON.  A peer
that is not installed is reported as unavailable and the simlm side still runs.  Targets: sampling
simlm/dynamax ≥ 50×, inference simlm/dynamax ≥ 1.5× at every K, forward GFLOP/s ≥ 60 % of matmul GFLOP/s
at K = 256 (none judged in ``--quick``).  Every K also checks simlm's next-token law and log-likelihood
against dynamax's (``_common.agreement``: the laws within 1e-4 of the largest probability, the
log-likelihoods within 1e-5, both relative); a disagreement makes the script exit with status 1.

    .venv/bin/python benchmarks/worlds.py            # B=256, T=512, K ∈ {16, 64, 256}, V=256
    .venv/bin/python benchmarks/worlds.py --quick    # tiny sizes, one repeat (the smoke test)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import (LAW_RTOL, LOGLIK_RTOL, REPO_ROOT, agreement, meets, print_table, time_fn,  # noqa: E402
                     time_interleaved, write_json)
from peers import add_precision_option, import_peer, pinned, precision_record, unavailable  # noqa: E402
from simlm import precision  # noqa: E402
from simlm.worlds import HMM  # noqa: E402
from simlm.worlds import hmm as hmm_module  # noqa: E402
from simlm.worlds import hmm_core  # noqa: E402

SAMPLING_TARGET = 50.0  # simlm / dynamax tokens/s
INFERENCE_TARGET = 1.5  # simlm / dynamax tokens/s, every K
FORWARD_TARGET = 0.60  # forward GFLOP/s ÷ matmul GFLOP/s
FORWARD_TARGET_K = 256
#: imported before anything is compiled, the process's matmul precision restored (peers.import_peer)
DYNAMAX, DYNAMAX_PRECISION = import_peer("dynamax.hidden_markov_model")
HMMLEARN, _ = import_peer("hmmlearn.hmm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--batch", type=int, default=256, help="sequences B")
    p.add_argument("--length", type=int, default=512, help="sequence length T")
    p.add_argument("--states", type=int, nargs="+", default=[16, 64, 256], help="hidden states K")
    p.add_argument("--symbols", type=int, default=256, help="vocabulary V")
    p.add_argument("--repeats", type=int, default=9, help="timed calls; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (compilation)")
    p.add_argument("--hmmlearn-sequences", type=int, default=8,
                   help="sequences for hmmlearn (a per-sequence Python loop), scaled to tokens/s")
    p.add_argument("--matmul-size", type=int, default=None,
                   help="N for the N×N float32 matmul reference (default 2048 on CPU, 8192 otherwise)")
    add_precision_option(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "worlds.json"))
    p.add_argument("--quick", action="store_true", help="B=8, T=32, K ∈ {4, 8}, V=8, one repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.length, args.states, args.symbols = 8, 32, [4, 8], 8
        args.repeats, args.hmmlearn_sequences = 1, 2
        args.matmul_size = args.matmul_size or 256
    if args.matmul_size is None:
        args.matmul_size = 2048 if jax.default_backend() == "cpu" else 8192
    return args


# ---- the three contenders ---------------------------------------------------------------------

def dynamax_sampler(model):
    """jit(vmap(model.sample)) over a batch of keys; returns the (B, T) tokens."""

    def sample(params, keys, length):
        _, emissions = jax.vmap(lambda k: model.sample(params, k, length))(keys)
        return emissions[..., 0]

    return jax.jit(sample, static_argnums=2)


@jax.jit
def dynamax_next_token_probs(initial, transition, emission, tokens):
    """dynamax's filter, vmapped over sequences, turned into the same (B, T, V) law simlm returns."""
    from dynamax.hidden_markov_model import hmm_filter

    log_b = jnp.log(emission.T)  # (V, K), once: each position's log-likelihoods are a gather of it

    def one(x):
        post = hmm_filter(initial, transition, log_b[x])
        return post.predicted_probs @ emission, post.marginal_loglik

    return jax.vmap(one)(tokens)


def hmmlearn_sample(model, n, length, seed):
    rng = np.random.default_rng(seed)
    return [model.sample(length, random_state=int(rng.integers(2**31)))[0] for _ in range(n)]


def hmmlearn_forward_backward(model, tokens):
    return [model.predict_proba(np.asarray(x)[:, None]) for x in tokens]


# ---- measurements -----------------------------------------------------------------------------

def matmul_reference(n: int):
    """A jitted N×N float32 matmul (2·N³ flops), the machine's ceiling: ``(call, flops)``."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    mm = jax.jit(precision.mm)  # full float32, as simlm's forward pass beside it
    return (lambda: mm(a, b)), 2 * n**3


def with_cpu_time(fn, sink: list):
    """``fn`` that also appends the process CPU seconds (user + system, all threads) of each call to ``sink``
    (the result is blocked on inside, so the work is counted).  On a machine shared with other work the
    wall time of a memory-bound call stretches with the contention, while its CPU time measures the work
    done; on an idle machine the wall time is the speed (XLA may use several threads: CPU ≥ wall)."""

    def run():
        start = time.process_time()
        out = jax.block_until_ready(fn())
        sink.append(time.process_time() - start)
        return out

    return run


def paired(numerator, denominator) -> float:
    """Median over rounds of numerator_i / denominator_i for two :func:`time_interleaved` timings."""
    return statistics.median(a / b for a, b in zip(numerator.times, denominator.times))


def bench_one(K: int, args, matmul) -> dict:
    B, T, V = args.batch, args.length, args.symbols
    n_hl = min(args.hmmlearn_sequences, B)
    timed = lambda fns: time_interleaved({k: pinned(f, args.precision) for k, f in fns.items()},
                                         repeats=args.repeats, warmup=args.warmup)

    hmm = HMM.random(args.seed, K, V)
    key = jax.random.key(args.seed)
    tokens = hmm.sample(jax.random.fold_in(key, 1), B, T)
    params = (hmm.initial, hmm.transition, hmm.emission)
    n_tok, n_tok_hl = B * T, n_hl * T
    row = {"K": K, "V": V, "B": B, "T": T, "hmmlearn_sequences": n_hl, "seconds": {}}
    sec = row["seconds"]

    # 1. sampling and 2. the exact next-token law (B, T, V), round-robin with dynamax
    sampling = {"simlm": lambda: hmm.sample(key, B, T)}
    row["sampler"] = "parallel" if hmm_core.samples_in_parallel(None, T, K, B) else "sequential"
    if row["sampler"] == "parallel":  # where HMM.sample picks the associative scan, the sequential chain beside it
        cums = [hmm_core.cumulative_rows(a) for a in params]
        sequential = jax.jit(hmm_core.sample, static_argnums=(4, 5, 6))
        sampling["simlm_sequential"] = lambda: sequential(*cums, key, B, T, False)
    # the method a user calls (token checks, the impossible-sequence check on the host), not the bare function:
    # 4–9 % more time on CPU (a review, 2026-12-06)
    laws = {"simlm": lambda: hmm.next_token_probs(tokens)}
    if DYNAMAX is not None:
        dyn_model, dyn_params = hmm.to_dynamax()
        dyn_sample, keys = dynamax_sampler(dyn_model), jax.random.split(key, B)
        sampling["dynamax"] = lambda: dyn_sample(dyn_params, keys, T)
        laws["dynamax"] = lambda: dynamax_next_token_probs(*params, tokens)
    for name, fns in (("sample", sampling), ("infer", laws)):
        cpu = {k: [] for k in fns}
        t = timed({k: with_cpu_time(f, cpu[k]) for k, f in fns.items()})
        sec[f"{name}_simlm"] = t["simlm"].median
        row[f"{name}_simlm_tok_s"] = n_tok / t["simlm"].median
        if "simlm_sequential" in t:
            sec["sample_simlm_sequential"] = t["simlm_sequential"].median
            row["sample_parallel_over_sequential"] = t["simlm_sequential"].median / t["simlm"].median
        if DYNAMAX is not None:
            sec[f"{name}_dynamax"] = t["dynamax"].median
            row[f"{name}_dynamax_tok_s"] = n_tok / t["dynamax"].median
            row[f"{name}_ratio_simlm_dynamax"] = t["dynamax"].median / t["simlm"].median
            row[f"{name}_ratio_simlm_dynamax_paired"] = paired(t["dynamax"], t["simlm"])
            # CPU seconds of the timed calls (warm-up excluded): the ratio of work, robust to load
            cpu_s = {k: statistics.median(v[args.warmup:][1::2]) for k, v in cpu.items()}  # warm-up, lead-ins skipped
            row[f"{name}_ratio_simlm_dynamax_cpu"] = cpu_s["dynamax"] / cpu_s["simlm"]
    if DYNAMAX is not None:
        (p_simlm, steps), (p_dyn, ll_dyn) = (pinned(f, args.precision)() for f in (
            lambda: hmm_module.next_token_probs(*params, tokens), laws["dynamax"]))  # the law and its log p(x_t | ·)
        agree = agreement(p_simlm, p_dyn, np.asarray(steps, np.float64).sum(-1), ll_dyn)  # laws and log p(x)
        row["max_abs_diff_vs_dynamax"] = agree["max_abs_diff"]
        row["law_rel_diff_vs_dynamax"] = agree["law_rel_diff"]
        row["loglik_rel_diff_vs_dynamax"] = agree["loglik_rel_diff"]
        row["agrees_with_dynamax"] = agree["agrees"]
    if HMMLEARN is not None:
        hl_model, hl_tokens = hmm.to_hmmlearn(), np.asarray(tokens[:n_hl])
        # the median of --repeats calls after --warmup, as for the others (one cold call read 9,038 tok/s at K = 4
        # and 32,049 at K = 8 in a --quick run: hmmlearn's first call, not its speed)
        once = dict(repeats=args.repeats, warmup=args.warmup)
        sec["sample_hmmlearn"] = time_fn(lambda: hmmlearn_sample(hl_model, n_hl, T, args.seed), **once).median
        sec["fb_hmmlearn"] = time_fn(lambda: hmmlearn_forward_backward(hl_model, hl_tokens), **once).median
        row["sample_hmmlearn_tok_s"], row["fb_hmmlearn_tok_s"] = n_tok_hl / sec["sample_hmmlearn"], n_tok_hl / sec["fb_hmmlearn"]

    # 3. the forward recursion alone (token_logprobs: the filter carried, log c_t out), round-robin with the matmul
    mm_call, mm_flops = matmul
    t = timed({"forward": lambda: hmm_module.token_logprobs(*params, tokens), "matmul": mm_call})
    sec["forward_simlm"], sec["matmul"] = t["forward"].median, t["matmul"].median
    flops = 2 * B * T * K**2
    row["forward_seconds"] = t["forward"].median
    row["forward_gflops"] = flops / t["forward"].median / 1e9
    row["matmul_gflops"] = mm_flops / t["matmul"].median / 1e9
    row["forward_fraction_of_matmul"] = row["forward_gflops"] / row["matmul_gflops"]
    row["forward_fraction_of_matmul_paired"] = paired(t["matmul"], t["forward"]) * flops / mm_flops
    return row


def targets(rows: list[dict], *, quick: bool = False, has_dynamax: bool | None = None) -> dict:
    """The three targets; in ``--quick`` (smoke-test sizes), or where simlm's laws disagree with dynamax's at
    some K (a speed of wrong numbers is no speed), every ``met`` is None, with a ``note``."""
    has_dynamax = DYNAMAX is not None if has_dynamax is None else has_dynamax

    def worst(key, target):
        if not has_dynamax:
            return {"target": target, "worst": None, "met": None, "note": unavailable("dynamax")}
        w = min(r[key] for r in rows)
        paired_worst = min(r[key + "_paired"] for r in rows)
        return {"target": target, "worst": w, "worst_paired": paired_worst, "met": meets(w, target)}

    at_k = [r["forward_fraction_of_matmul"] for r in rows if r["K"] == FORWARD_TARGET_K]
    out = {
        "sampling_ratio": worst("sample_ratio_simlm_dynamax", SAMPLING_TARGET),
        "inference_ratio": worst("infer_ratio_simlm_dynamax", INFERENCE_TARGET),
        "forward_fraction": {"target": FORWARD_TARGET, "K": FORWARD_TARGET_K, "value": at_k[0] if at_k else None,
                             "met": meets(at_k[0], FORWARD_TARGET) if at_k else None},
    }
    disagree = [r["K"] for r in rows if r.get("agrees_with_dynamax") is False]
    if quick or disagree:
        why = "--quick sizes" if quick else f"simlm's laws disagree with dynamax's at K = {disagree}"
        for t in out.values():
            if t["met"] is not None:
                t["met"], t["note"] = None, f"not judged: {why}"
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    precision = precision_record(args.precision, DYNAMAX_PRECISION)
    print(f"simlm HMM world benchmark: B={args.batch} T={args.length} V={args.symbols} K={args.states} "
          f"on {jax.default_backend()} ({jax.devices()[0].device_kind}), repeats={args.repeats} (median); "
          f"matmul precision {precision['pinned']} on both sides (simlm's law products: always full float32); load average {os.getloadavg()[0]:.1f}")
    for name, module in (("dynamax", DYNAMAX), ("hmmlearn", HMMLEARN)):
        if module is None:
            print(f"  {unavailable(name)}: its columns are empty, the simlm side still runs")
    matmul = matmul_reference(args.matmul_size)

    rows = []
    for K in args.states:
        rows.append(bench_one(K, args, matmul))
        print(f"  K={K} done", flush=True)

    n_hl = rows[0]["hmmlearn_sequences"]
    print_table(rows, [
        "K", ("sample_simlm_tok_s", "simlm tok/s"), ("sample_dynamax_tok_s", "dynamax tok/s"),
        ("sample_hmmlearn_tok_s", f"hmmlearn tok/s ({n_hl} seq)"),
        ("sample_ratio_simlm_dynamax", "simlm/dynamax"), ("sample_ratio_simlm_dynamax_paired", "paired"),
        "sampler", ("sample_parallel_over_sequential", "parallel ÷ sequential speed"),
    ], title="1. sampling")
    print_table(rows, [
        "K", ("infer_simlm_tok_s", "simlm tok/s"), ("infer_dynamax_tok_s", "dynamax tok/s"),
        ("infer_ratio_simlm_dynamax", "simlm/dynamax"), ("infer_ratio_simlm_dynamax_paired", "paired"),
        ("infer_ratio_simlm_dynamax_cpu", "CPU-time ratio"),
        ("max_abs_diff_vs_dynamax", "max|Δp|"), ("fb_hmmlearn_tok_s", f"hmmlearn fwd-bwd tok/s ({n_hl} seq)*"),
    ], title="2. exact next-token law (B, T, V)")
    print("   * hmmlearn predict_proba = smoothed state posteriors (a different output), for scale only")
    print_table(rows, [
        "K", ("forward_seconds", "forward s"), ("forward_gflops", "GFLOP/s (2BTK²)"),
        ("matmul_gflops", f"{args.matmul_size}² matmul GFLOP/s"), ("forward_fraction_of_matmul", "÷ matmul"),
        ("forward_fraction_of_matmul_paired", "paired"),
    ], title="3. forward pass vs a matmul timed alongside it (round-robin)")

    tg = targets(rows, quick=args.quick)
    print("\ntargets")
    for key, label, target, fmt in (("sampling_ratio", "sampling ", SAMPLING_TARGET, ".1f"),
                                    ("inference_ratio", "inference", INFERENCE_TARGET, ".2f")):
        t = tg[key]
        if t["worst"] is None:
            print(f"  {label} simlm/dynamax ≥ {target:g}× at every K: {t['note']}")
        else:
            print(f"  {label} simlm/dynamax ≥ {target:g}× at every K: worst {t['worst']:{fmt}}× (paired "
                  f"{t['worst_paired']:{fmt}}×) → {t.get('note') or ('met' if t['met'] else 'MISSED')}")
    ff = tg["forward_fraction"]
    if ff["value"] is None:
        print(f"  forward ≥ {FORWARD_TARGET:.0%} of matmul at K={FORWARD_TARGET_K}: not measured (K not in run)")
    else:
        print(f"  forward ≥ {FORWARD_TARGET:.0%} of matmul at K={FORWARD_TARGET_K}: {ff['value']:.1%} "
              f"→ {ff.get('note') or ('met' if ff['met'] else 'MISSED')}")
    agree = all(r.get("agrees_with_dynamax", True) for r in rows)
    if DYNAMAX is not None:
        print(f"  next-token law agrees with dynamax within {LAW_RTOL:g} of the largest probability and "
              f"log-likelihoods within {LOGLIK_RTOL:g}: "
              f"{'yes' if agree else 'NO'} (max {max(r['max_abs_diff_vs_dynamax'] for r in rows):.2e})")

    config = {k: getattr(args, k) for k in ("batch", "length", "states", "symbols", "repeats", "warmup",
                                            "hmmlearn_sequences", "matmul_size", "seed", "quick")}
    versions = {"numpy": np.__version__}
    for name in ("dynamax", "hmmlearn"):
        if importlib.util.find_spec(name) is not None:
            versions[name] = importlib.import_module(name).__version__
    out = write_json(args.out, {
        "benchmark": "worlds", "config": config, "versions": versions, "matmul_precision": precision,
        "peer_installed": {"dynamax": DYNAMAX is not None, "hmmlearn": HMMLEARN is not None},
        "load_average": list(os.getloadavg()),
        "matmul": {"n": args.matmul_size, "gflops": statistics.median(r["matmul_gflops"] for r in rows),
                   "seconds": statistics.median(r["seconds"]["matmul"] for r in rows), "timed": "alongside each K"},
        "results": rows, "targets": tg, "agrees_with_dynamax": agree,
    })
    print(f"\nwrote {out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
