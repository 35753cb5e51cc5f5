"""HMM world throughput: simlm against dynamax and hmmlearn, side by side in one run.

For B sequences of length T at each K (V symbols), on a random Dirichlet HMM:

1. sampling, tokens/s — ``HMM.sample`` vs dynamax ``CategoricalHMM.sample`` (jit∘vmap over B keys)
   vs hmmlearn ``CategoricalHMM.sample`` (a Python loop per sequence, so run on fewer sequences and
   scaled to tokens/s);
2. the exact next-token law p(x_t = · | x_<t), a (B, T, V) array, tokens/s — simlm's jitted batched
   ``next_token_probs`` vs dynamax ``vmap(hmm_filter)`` with ``predicted_probs @ B`` (same output;
   log-likelihoods by a gather of log B, the cheapest input dynamax accepts) vs hmmlearn
   ``predict_proba`` per sequence (forward–backward: a different output, reported for scale);
3. the forward pass's achieved GFLOP/s, counting 2·B·T·K² flops (one K×K product per step), against a
   large float32 matmul measured in the same run.

simlm and dynamax are timed round-robin (one call of each per round, median of ``--repeats`` after
``--warmup``), so background load falls on both alike.  Targets: sampling simlm/dynamax ≥ 50×, inference simlm/dynamax ≥ 1.5× at every K, forward GFLOP/s ≥
60 % of matmul GFLOP/s at K = 256.  Every K also checks simlm's next-token law against dynamax's
(max |Δp| ≤ 1e-4); a disagreement makes the script exit with status 1.

    .venv/bin/python benchmarks/worlds.py            # B=256, T=512, K ∈ {16, 64, 256}, V=256
    .venv/bin/python benchmarks/worlds.py --quick    # tiny sizes, one repeat (the smoke test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import REPO_ROOT, print_table, time_fn, time_interleaved, write_json  # noqa: E402
from simlm.worlds import HMM  # noqa: E402
from simlm.worlds import hmm as hmm_module  # noqa: E402

SAMPLING_TARGET = 50.0  # simlm / dynamax tokens/s
INFERENCE_TARGET = 1.5  # simlm / dynamax tokens/s, every K
FORWARD_TARGET = 0.60  # forward GFLOP/s ÷ matmul GFLOP/s
FORWARD_TARGET_K = 256
AGREEMENT_ATOL = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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

    def one(x):
        post = hmm_filter(initial, transition, jnp.log(emission.T[x]))
        return post.predicted_probs @ emission, post.marginal_loglik

    return jax.vmap(one)(tokens)


def hmmlearn_sample(model, n, length, seed):
    rng = np.random.default_rng(seed)
    return [model.sample(length, random_state=int(rng.integers(2**31)))[0] for _ in range(n)]


def hmmlearn_forward_backward(model, tokens):
    return [model.predict_proba(np.asarray(x)[:, None]) for x in tokens]


# ---- measurements -----------------------------------------------------------------------------

def matmul_gflops(n: int, repeats: int) -> dict:
    """Best-of-``repeats`` GFLOP/s of a jitted N×N float32 matmul (2·N³ flops): the machine's ceiling."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    t = time_fn(lambda: mm(a, b), repeats=max(repeats, 10), warmup=2)
    return {"n": n, "seconds": t.best, "gflops": 2 * n**3 / t.best / 1e9}


def bench_one(K: int, args, matmul: dict) -> dict:
    B, T, V = args.batch, args.length, args.symbols
    n_hl = min(args.hmmlearn_sequences, B)

    def pair(simlm_fn, dynamax_fn):  # round-robin, so both see the same background load
        t = time_interleaved({"simlm": simlm_fn, "dynamax": dynamax_fn}, repeats=args.repeats, warmup=args.warmup)
        return t["simlm"].median, t["dynamax"].median

    hmm = HMM.random(args.seed, K, V)
    dyn_model, dyn_params = hmm.to_dynamax()
    hl_model = hmm.to_hmmlearn()
    key = jax.random.key(args.seed)
    keys = jax.random.split(key, B)

    # 1. sampling
    dyn_sample = dynamax_sampler(dyn_model)
    s_simlm, s_dyn = pair(lambda: hmm.sample(key, B, T), lambda: dyn_sample(dyn_params, keys, T))
    s_hl = time_fn(lambda: hmmlearn_sample(hl_model, n_hl, T, args.seed), repeats=1, warmup=0).median

    # 2. exact next-token law, (B, T, V)
    tokens = hmm.sample(jax.random.fold_in(key, 1), B, T)
    params = (hmm.initial, hmm.transition, hmm.emission)
    i_simlm, i_dyn = pair(lambda: hmm_module.next_token_probs(*params, tokens),
                          lambda: dynamax_next_token_probs(*params, tokens))
    hl_tokens = np.asarray(tokens[:n_hl])
    i_hl = time_fn(lambda: hmmlearn_forward_backward(hl_model, hl_tokens), repeats=1, warmup=0).median

    p_simlm, _ = hmm_module.next_token_probs(*params, tokens)
    p_dyn, _ = dynamax_next_token_probs(*params, tokens)
    max_diff = float(jnp.max(jnp.abs(p_simlm - p_dyn)))

    # 3. the forward recursion alone (token_logprobs: the filter carried, log c_t out)
    f_simlm = time_fn(lambda: hmm_module.token_logprobs(*params, tokens), repeats=args.repeats,
                      warmup=args.warmup).median
    fwd_gflops = 2 * B * T * K**2 / f_simlm / 1e9

    n_tok, n_tok_hl = B * T, n_hl * T
    return {
        "K": K, "V": V, "B": B, "T": T, "hmmlearn_sequences": n_hl,
        "sample_simlm_tok_s": n_tok / s_simlm,
        "sample_dynamax_tok_s": n_tok / s_dyn,
        "sample_hmmlearn_tok_s": n_tok_hl / s_hl,
        "sample_ratio_simlm_dynamax": s_dyn / s_simlm,
        "infer_simlm_tok_s": n_tok / i_simlm,
        "infer_dynamax_tok_s": n_tok / i_dyn,
        "fb_hmmlearn_tok_s": n_tok_hl / i_hl,
        "infer_ratio_simlm_dynamax": i_dyn / i_simlm,
        "max_abs_diff_vs_dynamax": max_diff,
        "agrees_with_dynamax": max_diff <= AGREEMENT_ATOL,
        "forward_seconds": f_simlm,
        "forward_gflops": fwd_gflops,
        "forward_fraction_of_matmul": fwd_gflops / matmul["gflops"],
        "seconds": {"sample_simlm": s_simlm, "sample_dynamax": s_dyn, "sample_hmmlearn": s_hl,
                    "infer_simlm": i_simlm, "infer_dynamax": i_dyn, "fb_hmmlearn": i_hl,
                    "forward_simlm": f_simlm},
    }


def targets(rows: list[dict]) -> dict:
    sample = min(r["sample_ratio_simlm_dynamax"] for r in rows)
    infer = min(r["infer_ratio_simlm_dynamax"] for r in rows)
    at_k = [r["forward_fraction_of_matmul"] for r in rows if r["K"] == FORWARD_TARGET_K]
    return {
        "sampling_ratio": {"target": SAMPLING_TARGET, "worst": sample, "met": sample >= SAMPLING_TARGET},
        "inference_ratio": {"target": INFERENCE_TARGET, "worst": infer, "met": infer >= INFERENCE_TARGET},
        "forward_fraction": {"target": FORWARD_TARGET, "K": FORWARD_TARGET_K,
                             "value": at_k[0] if at_k else None, "met": (at_k[0] >= FORWARD_TARGET) if at_k else None},
    }


def main(argv=None) -> int:
    import dynamax
    import hmmlearn

    args = parse_args(argv)
    print(f"simlm HMM world benchmark: B={args.batch} T={args.length} V={args.symbols} K={args.states} "
          f"on {jax.default_backend()} ({jax.devices()[0].device_kind}), repeats={args.repeats} (median)")
    matmul = matmul_gflops(args.matmul_size, args.repeats)
    print(f"reference matmul {matmul['n']}×{matmul['n']} float32: {matmul['gflops']:.1f} GFLOP/s (best)")

    rows = []
    for K in args.states:
        rows.append(bench_one(K, args, matmul))
        print(f"  K={K} done", flush=True)

    n_hl = rows[0]["hmmlearn_sequences"]
    print_table(rows, [
        "K", ("sample_simlm_tok_s", "simlm tok/s"), ("sample_dynamax_tok_s", "dynamax tok/s"),
        ("sample_hmmlearn_tok_s", f"hmmlearn tok/s ({n_hl} seq)"),
        ("sample_ratio_simlm_dynamax", "simlm/dynamax"),
    ], title="1. sampling")
    print_table(rows, [
        "K", ("infer_simlm_tok_s", "simlm tok/s"), ("infer_dynamax_tok_s", "dynamax tok/s"),
        ("infer_ratio_simlm_dynamax", "simlm/dynamax"), ("max_abs_diff_vs_dynamax", "max|Δp|"),
        ("fb_hmmlearn_tok_s", f"hmmlearn fwd-bwd tok/s ({n_hl} seq)*"),
    ], title="2. exact next-token law (B, T, V)")
    print("   * hmmlearn predict_proba = smoothed state posteriors (a different output), for scale only")
    print_table(rows, [
        "K", ("forward_seconds", "forward s"), ("forward_gflops", "GFLOP/s (2BTK²)"),
        ("forward_fraction_of_matmul", "÷ matmul"),
    ], title=f"3. forward pass vs {matmul['n']}² matmul at {matmul['gflops']:.1f} GFLOP/s")

    tg = targets(rows)
    print("\ntargets")
    print(f"  sampling  simlm/dynamax ≥ {SAMPLING_TARGET:g}× at every K: worst {tg['sampling_ratio']['worst']:.1f}× "
          f"→ {'met' if tg['sampling_ratio']['met'] else 'MISSED'}")
    print(f"  inference simlm/dynamax ≥ {INFERENCE_TARGET:g}× at every K: worst {tg['inference_ratio']['worst']:.2f}× "
          f"→ {'met' if tg['inference_ratio']['met'] else 'MISSED'}")
    ff = tg["forward_fraction"]
    if ff["value"] is None:
        print(f"  forward ≥ {FORWARD_TARGET:.0%} of matmul at K={FORWARD_TARGET_K}: not measured (K not in run)")
    else:
        print(f"  forward ≥ {FORWARD_TARGET:.0%} of matmul at K={FORWARD_TARGET_K}: {ff['value']:.1%} "
              f"→ {'met' if ff['met'] else 'MISSED'}")
    agree = all(r["agrees_with_dynamax"] for r in rows)
    print(f"  next-token law agrees with dynamax within {AGREEMENT_ATOL:g}: "
          f"{'yes' if agree else 'NO'} (max {max(r['max_abs_diff_vs_dynamax'] for r in rows):.2e})")

    config = {k: getattr(args, k) for k in ("batch", "length", "states", "symbols", "repeats", "warmup",
                                            "hmmlearn_sequences", "matmul_size", "seed", "quick")}
    out = write_json(args.out, {
        "benchmark": "worlds", "config": config,
        "versions": {"dynamax": dynamax.__version__, "hmmlearn": hmmlearn.__version__, "numpy": np.__version__},
        "matmul": matmul, "results": rows, "targets": tg, "agrees_with_dynamax": agree,
    })
    print(f"\nwrote {out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
