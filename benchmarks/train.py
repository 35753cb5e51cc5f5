"""Training throughput: simlm's jitted train step against Hugging Face GPT-2 (PyTorch), side by side.

For each model size, the same network shape on both sides — n_embd = d_model, n_layer, n_head,
n_inner = d_ff, n_positions = max_len + 1, pre-LayerNorm blocks, exact GELU, no dropout, untied output
layer — the same token batches (sampled from an HMM world), batch, context and optimiser: AdamW with the
same learning rate, betas, ε and weight decay (none on norms and biases), the trainer's warmup-cosine
schedule, and gradient clipping at global norm 1.0.  The loss on both sides is the causal cross-entropy
of ``(BOS, x_0, …, x_{T-2})`` predicting ``(x_0, …, x_{T-1})``.

Timed: the steady-state train step (forward + backward + optimiser update), compilation and warm-up
excluded.  A timing is a chunk of k consecutive steps (k chosen so a chunk lasts ``--chunk-seconds``,
blocking only at the end, as the trainer does) divided by k; we report the median over ``--repeats``
chunks (and the ratio of the best chunks).  The contenders' chunks are interleaved, so load from other
processes on a shared machine falls on both sides alike; the load average is recorded.  simlm is timed on the real training path — ``Training.batch(step)`` (fresh world samples) then
``Training.step`` (the jit∘vmap step with donated buffers, one seed) — and on the step alone (pre-sampled
batches).  Torch gets pre-built batches, ``torch.set_num_threads(os.cpu_count())``.

Precision: ``--dtype float32`` (the trainer's default) or ``bfloat16`` (mixed precision: float32
parameters and optimiser, bfloat16 products — simlm's ``TransformerConfig.dtype``, the peer under
``torch.autocast``).  On a GPU jax computes float32 products in TF32 by default, so the peer gets
``torch.backends.cuda.matmul.allow_tf32 = True`` too (like for like; recorded in the JSON).

Model FLOP utilisation (accelerators only): 6·N·tokens/s over the device's dense peak in the model's
dtype — ``--peak-tflops``, else the datasheet figure for a known device (:data:`DATASHEET_TFLOPS`; float32
means TF32, jax's default there), else the best of a large matmul measured here.  The measured matmul is
recorded beside it either way (``fraction_of_measured_matmul``).  On CPU the same ratio against a measured float32 matmul is
printed as a diagnostic ("÷ matmul").

Target: simlm tokens/s ÷ HF tokens/s ≥ 1.5 at every size, on the real training path.

    .venv/bin/python benchmarks/train.py               # sizes small (~0.4M), medium (~3M), large (~20M)
    .venv/bin/python benchmarks/train.py --quick       # tiny sizes, 2 timed steps (the smoke test)
    .venv/bin/python benchmarks/train.py --no-peer     # simlm only (no torch/transformers needed)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import REPO_ROOT, print_table, time_fn, write_json  # noqa: E402
from simlm.models.transformer import TransformerConfig  # noqa: E402
from simlm.train import TrainConfig, Training  # noqa: E402
from simlm.worlds import HMM  # noqa: E402

RATIO_TARGET = 1.5  # simlm / HF tokens/s, real training path, every size

#: dense tensor-core peaks, TFLOP/s, from NVIDIA's datasheets (SXM parts unless named), by a substring of
#: jax's ``device_kind`` (first match wins); "float32" is TF32, what jax's default float32 product uses
DATASHEET_TFLOPS = {"H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
                    "H100": {"bfloat16": 989.4, "float32": 494.7},
                    "H200": {"bfloat16": 989.4, "float32": 494.7},
                    "A100": {"bfloat16": 312.0, "float32": 156.0}}


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    return next((peaks[dtype] for name, peaks in DATASHEET_TFLOPS.items() if name in device_kind), None)

# name → (d_model, n_layers, n_heads, d_ff); ≈ 12·L·d² + (2V + T)·d parameters
SIZES = {
    "small": (128, 2, 4, 512),  # ~0.4M
    "medium": (256, 4, 4, 1024),  # ~3.2M
    "large": (512, 6, 8, 2048),  # ~19M
}
QUICK_SIZES = {"tiny": (32, 1, 2, 128), "tiny2": (64, 2, 4, 256)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES) + list(QUICK_SIZES))
    p.add_argument("--batch", type=int, default=32, help="sequences per step B (the trainer's default)")
    p.add_argument("--seq-len", type=int, default=64, help="context T (the trainer's default)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="compute dtype: simlm's TransformerConfig.dtype (parameters stay float32), the peer "
                        "under torch.autocast to the same dtype")
    p.add_argument("--symbols", type=int, default=64, help="world vocabulary V")
    p.add_argument("--states", type=int, default=16, help="world hidden states K")
    p.add_argument("--repeats", type=int, default=5, help="timed chunks; the median is reported")
    p.add_argument("--chunk-seconds", type=float, default=1.0, help="target length of one timed chunk")
    p.add_argument("--max-chunk-steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="accelerator peak for MFU (default: a large matmul measured here)")
    p.add_argument("--matmul-size", type=int, default=None, help="N of the N×N reference matmul")
    p.add_argument("--no-peer", action="store_true", help="skip torch/transformers (simlm side only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "train.json"))
    p.add_argument("--quick", action="store_true", help="tiny sizes, B=4, T=16, 2 timed steps")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [s for s in args.sizes if s in QUICK_SIZES] or list(QUICK_SIZES)
        args.batch, args.seq_len, args.symbols, args.states = 4, 16, 16, 4
        args.repeats, args.warmup, args.max_chunk_steps = 2, 1, 1
        args.matmul_size = args.matmul_size or 256
    if args.matmul_size is None:
        args.matmul_size = 2048 if jax.default_backend() == "cpu" else 8192
    return args


def shapes(name: str) -> tuple[int, int, int, int]:
    return {**SIZES, **QUICK_SIZES}[name]


def train_config(args) -> TrainConfig:
    # The trainer's defaults (lr 3e-3, warmup 100 of 2000 steps, weight decay 0.01, clip 1.0); the
    # schedule's position changes nothing about the cost of a step.
    return TrainConfig(seeds=(0,), batch_size=args.batch, seq_len=args.seq_len, eval_sequences=2)


# ---- the peer -----------------------------------------------------------------------------------

def load_peer():
    """``(torch, transformers)`` or ``(None, reason)`` when they cannot be imported."""
    try:
        import torch
        import transformers
    except Exception as err:  # noqa: BLE001 — any import failure means "peer unavailable"
        return None, f"{type(err).__name__}: {err}"
    return torch, transformers


def peer_device(peer) -> str:
    """torch runs where simlm runs when it can: cuda on a GPU machine with a CUDA build of torch, else cpu."""
    torch = peer[0]
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


class TorchGPT2:
    """HF ``GPT2LMHeadModel`` of the simlm shape, with AdamW + clipping + the trainer's schedule."""

    def __init__(self, torch, transformers, mc: TransformerConfig, tc: TrainConfig, seed: int, device: str = "cpu"):
        self.torch, self.device = torch, device
        self.autocast = mc.dtype != "float32"  # mixed precision in mc.dtype, as simlm's dtype option
        self.autocast_dtype = getattr(torch, mc.dtype)
        torch.manual_seed(seed)
        cfg = transformers.GPT2Config(
            vocab_size=mc.vocab_size, n_positions=mc.n_positions, n_embd=mc.d_model, n_layer=mc.n_layers,
            n_head=mc.n_heads, n_inner=mc.d_ff, activation_function="gelu",  # simlm: exact GELU
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False, use_cache=False,
            bos_token_id=mc.bos_id, eos_token_id=mc.bos_id)
        try:
            self.model = transformers.GPT2LMHeadModel(cfg, attn_implementation="sdpa")
            self.attention = "sdpa"
        except (TypeError, ValueError, ImportError):
            self.model = transformers.GPT2LMHeadModel(cfg)
            self.attention = getattr(self.model.config, "_attn_implementation", "default")
        self.model.to(device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]  # simlm's mask: no decay on norms and biases
        no_decay = [p for p in params if p.ndim < 2]
        self.params = params
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=tc.learning_rate, betas=(0.9, 0.999), eps=1e-8)
        warm, total = min(tc.warmup_steps, tc.max_steps - 1), tc.max_steps

        def schedule(step):  # optax.warmup_cosine_decay_schedule(0, lr, warm, total, end=0.1 lr), ÷ lr
            if step < warm:
                return step / warm
            frac = min(step - warm, total - warm) / (total - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.grad_clip = tc.grad_clip
        self.bos = mc.bos_id

    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)

    def prepare(self, tokens: np.ndarray):
        """(B, T) world tokens → (causal input with BOS, targets) as torch int64 tensors."""
        x = self.torch.from_numpy(np.asarray(tokens, np.int64))
        bos = self.torch.full((x.shape[0], 1), self.bos, dtype=self.torch.int64)
        inputs = self.torch.cat([bos, x[:, :-1]], dim=1)
        return inputs.to(self.device).contiguous(), x.to(self.device).contiguous()

    def step(self, batch):
        torch = self.torch
        inputs, targets = batch
        with torch.autocast(device_type=self.device, dtype=self.autocast_dtype, enabled=self.autocast):
            logits = self.model(input_ids=inputs, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        self.sched.step()
        return loss


# ---- measurements -----------------------------------------------------------------------------

def matmul_tflops(n: int, dtype) -> float:
    """Best TFLOP/s of a jitted N×N matmul (2·N³ flops) in ``dtype``: the ceiling a model step could reach."""
    ka, kb = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(ka, (n, n), dtype), jax.random.normal(kb, (n, n), dtype)
    mm = jax.jit(jnp.matmul)
    t = time_fn(lambda: mm(a, b), repeats=10, warmup=2)
    return 2 * n**3 / t.best / 1e12


def chunk_steps(per_step: float, args) -> int:
    """k steps a chunk, so that a chunk lasts about ``--chunk-seconds`` (2 in ``--quick``)."""
    if args.quick:
        return 2
    return max(1, min(args.max_chunk_steps, round(args.chunk_seconds / max(per_step, 1e-6))))


def interleaved(contenders: dict, args) -> dict:
    """Seconds per step of each contender, ``{name: {"median", "best", "times", "k"}}``.

    ``contenders`` maps a name to ``steps(k)`` (run k steps, return something to block on).  The
    chunks are interleaved — A, B, C, A, B, C, … — so that load from other processes on a shared machine
    falls on every contender alike; each chunk starts with an untimed step of its own contender, which
    absorbs what the previous one left running (torch's OpenMP workers spinning, deferred frees), as
    ``_common.time_interleaved`` does."""
    ks = {}
    for name, steps in contenders.items():
        ks[name] = chunk_steps(time_fn(lambda: steps(1), repeats=1, warmup=0).median, args)
    times = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, steps in contenders.items():
            jax.block_until_ready(steps(1))  # the lead-in
            start = time.perf_counter()
            jax.block_until_ready(steps(ks[name]))
            times[name].append((time.perf_counter() - start) / ks[name])
    return {name: {"median": statistics.median(t), "best": min(t), "times": t, "k": ks[name]}
            for name, t in times.items()}


class SimlmSide:
    """The trainer's compiled pieces (:class:`simlm.train.Training`) for one seed, stepped as ``train``
    steps them."""

    def __init__(self, world, mc: TransformerConfig, tc: TrainConfig, n_batches: int = 8):
        self.run = run = Training(world, mc, tc)
        self.state, self.i = run.init_state(), 0
        self.n_params = int(sum(x.size for x in jax.tree.leaves(self.state.params)))  # stacked over S = 1 seed
        self.batches = [run.batch(i) for i in range(n_batches)]
        start = time.perf_counter()
        jax.block_until_ready(self.steps(1, with_data=False))
        self.compile_s = time.perf_counter() - start

    def token_batches(self) -> list:
        """Seed 0's (B, T) tokens of the pre-sampled batches, for the peer."""
        return [np.asarray(batch.tokens[0]) for batch in self.batches]

    def steps(self, k: int, *, with_data: bool):
        """k train steps: ``batch(step)`` (when ``with_data``) then ``step`` — the loop of ``train``."""
        loss = None
        for _ in range(k):
            batch = self.run.batch(self.i) if with_data else self.batches[self.i % len(self.batches)]
            self.state, loss = self.run.step(self.state, batch)
            self.i += 1
        return self.state, loss


class TorchSide:
    def __init__(self, peer, mc, tc, seed, token_batches):
        self.gpt = TorchGPT2(*peer, mc, tc, seed, peer_device(peer))
        self.batches = [self.gpt.prepare(t) for t in token_batches]
        self.i = 0

    def steps(self, k: int):
        loss = None
        for _ in range(k):
            loss = self.gpt.step(self.batches[self.i % len(self.batches)])
            self.i += 1
        return float(loss.detach())  # a host sync (cuda included)


def bench_size(name, world, peer, args, peak_tflops, on_accelerator, measured_peak=None):
    d, L, H, f = shapes(name)
    mc = TransformerConfig(n_symbols=args.symbols, d_model=d, n_layers=L, n_heads=H, d_ff=f, max_len=args.seq_len,
                           dtype=args.dtype)
    tc = train_config(args)
    tokens_per_step = args.batch * args.seq_len
    sim = SimlmSide(world, mc, tc)
    contenders = {"simlm_train": lambda k: sim.steps(k, with_data=True),
                  "simlm_step": lambda k: sim.steps(k, with_data=False)}
    hf = None
    if peer[0] is not None:
        hf = TorchSide(peer, mc, tc, args.seed, sim.token_batches())
        contenders["hf"] = hf.steps
    for steps in contenders.values():  # warm-up: compilation (simlm), allocator and thread pools (both)
        for _ in range(args.warmup):
            jax.block_until_ready(steps(1))
    t = interleaved(contenders, args)
    batch_s = time_fn(lambda: sim.run.batch(sim.i), repeats=max(args.repeats, 5), warmup=1).median

    row = {"size": name, "dtype": args.dtype, "d_model": d, "n_layers": L, "n_heads": H, "d_ff": f,
           "n_positions": mc.n_positions, "vocab_in": mc.vocab_size, "vocab_out": mc.n_symbols,
           "params_simlm": sim.n_params, "params_simlm_formula": mc.n_params(),
           "simlm_compile_s": sim.compile_s, "simlm_batch_s": batch_s, "timings_s_per_step": t,
           "simlm_tok_s": tokens_per_step / t["simlm_train"]["median"],
           "simlm_step_tok_s": tokens_per_step / t["simlm_step"]["median"],
           "simlm_best_tok_s": tokens_per_step / t["simlm_train"]["best"],
           "data_fraction": batch_s / t["simlm_train"]["median"]}
    row["simlm_tflops"] = 6 * sim.n_params * row["simlm_tok_s"] / 1e12
    row["fraction_of_peak"] = row["simlm_tflops"] / peak_tflops
    row["fraction_of_measured_matmul"] = row["simlm_tflops"] / measured_peak if measured_peak else None
    row["mfu"] = row["fraction_of_peak"] if on_accelerator else None
    if hf is not None:
        row.update(params_hf=hf.gpt.n_params(), hf_attention=hf.gpt.attention,
                   hf_tok_s=tokens_per_step / t["hf"]["median"], hf_best_tok_s=tokens_per_step / t["hf"]["best"])
        row["ratio"] = row["simlm_tok_s"] / row["hf_tok_s"]
        row["ratio_step_only"] = row["simlm_step_tok_s"] / row["hf_tok_s"]
        row["ratio_best"] = row["simlm_best_tok_s"] / row["hf_best_tok_s"]
    else:
        row.update(params_hf=None, hf_attention=None, hf_tok_s=None, hf_best_tok_s=None,
                   ratio=None, ratio_step_only=None, ratio_best=None)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    backend = jax.default_backend()
    on_gpu, on_accelerator = backend == "gpu", backend != "cpu"
    peer = (None, "disabled by --no-peer") if args.no_peer else load_peer()
    peer_info = {"available": peer[0] is not None}
    if peer[0] is not None:
        torch, transformers = peer
        torch.set_num_threads(os.cpu_count() or 1)
        peer_info.update(torch=torch.__version__, transformers=transformers.__version__,
                         torch_threads=torch.get_num_threads(), torch_device=peer_device(peer))
        if peer_info["torch_device"] == "cuda":  # jax's default float32 products on a GPU are TF32: like for like
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            peer_info["torch_allow_tf32"] = True
    else:
        peer_info["reason"] = peer[1]

    world = HMM.random(args.seed, args.states, args.symbols)
    peaks = {}
    if args.peak_tflops is None:
        for dtype in ["float32"] + (["bfloat16"] if on_accelerator or args.dtype == "bfloat16" else []):
            peaks[dtype] = matmul_tflops(args.matmul_size, jnp.dtype(dtype))
    kind = jax.devices()[0].device_kind
    sheet = datasheet_peak(kind, args.dtype) if on_accelerator else None
    # MFU against the model's own dtype: a bfloat16 model is held to the bfloat16 peak
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops, "--peak-tflops"
    elif sheet is not None:
        peak, peak_source = sheet, f"{kind} datasheet, dense {args.dtype}"
    else:
        peak, peak_source = peaks[args.dtype], f"measured {args.matmul_size}² {args.dtype} matmul"

    print(f"simlm train-step benchmark on {backend} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs; "
          f"B={args.batch} T={args.seq_len} V={args.symbols} (HMM K={args.states}), {args.dtype}; "
          f"median of {args.repeats} chunks")
    print("peer: " + (f"HF transformers {peer_info['transformers']} GPT2LMHeadModel on torch "
                       f"{peer_info['torch']} on {peer_info['torch_device']}, {peer_info['torch_threads']} threads"
                       if peer_info["available"] else f"unavailable ({peer_info['reason']})"))
    print(f"peak: {peak:.3g} TFLOP/s ({peak_source}; on GPU, JAX's default float32 matmul precision uses TF32)"
          if on_gpu else f"peak: {peak:.3g} TFLOP/s ({peak_source})")
    if on_gpu and peer_info.get("torch_device") == "cpu":
        print("note: this torch build has no CUDA, so the peer runs on the CPU: simlm/HF compares GPU with CPU")

    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before[0]:.2f} on {os.cpu_count()} CPUs — other processes share "
              "this machine; timings are interleaved so they fall on both sides alike, but absolute numbers suffer")
    rows = []
    for name in args.sizes:
        rows.append(bench_size(name, world, peer, args, peak, on_accelerator, peaks.get(args.dtype)))
        r = rows[-1]
        print(f"  {name}: simlm {r['params_simlm']:,} params"
              + (f", HF {r['params_hf']:,} params" if r["params_hf"] else "") + " — done", flush=True)

    print_table(rows, ["size", "d_model", "n_layers", "n_heads", "d_ff", "n_positions",
                       ("params_simlm", "params simlm"), ("params_hf", "params HF")],
                title="model shapes (HF: +2·d for its V+2-way output layer; simlm outputs the V symbols only)")
    cols = ["size", ("simlm_tok_s", "simlm tok/s (batch+step)"), ("simlm_step_tok_s", "simlm tok/s (step)"),
            ("data_fraction", "batch share"), ("hf_tok_s", "HF tok/s"), ("ratio", "simlm/HF"),
            ("ratio_step_only", "simlm/HF (step)"), ("ratio_best", "simlm/HF (best chunks)"),
            ("simlm_tflops", "simlm TFLOP/s (6N)")]
    cols += ([("mfu", "MFU"), ("fraction_of_measured_matmul", "÷ measured matmul")] if on_accelerator
             else [("fraction_of_peak", "÷ matmul")])
    print_table(rows, cols, title=f"train-step throughput, tokens/s ({args.batch}×{args.seq_len} tokens a step)")

    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    target = {"target": RATIO_TARGET, "worst": min(ratios) if ratios else None,
              "met": (min(ratios) >= RATIO_TARGET) if ratios else None}
    print("\ntarget")
    if ratios:
        print(f"  simlm/HF ≥ {RATIO_TARGET:g}× at every size (batch+step): worst {target['worst']:.2f}× → "
              f"{'met' if target['met'] else 'MISSED'}")
    else:
        print(f"  simlm/HF ≥ {RATIO_TARGET:g}×: not measured (peer unavailable)")

    config = {k: getattr(args, k) for k in ("sizes", "dtype", "batch", "seq_len", "symbols", "states", "repeats",
                                            "chunk_seconds", "warmup", "matmul_size", "seed", "quick", "no_peer")}
    config["train_config"] = train_config(args).to_dict()
    out = write_json(args.out, {
        "benchmark": "train", "config": config, "peer": peer_info,
        "peak": {"tflops": peak, "source": peak_source, "measured": peaks},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": rows, "target": target,
    })
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
