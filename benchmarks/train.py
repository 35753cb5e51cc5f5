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
chunks (and the ratio of the best chunks), and beside it the process CPU time per step of each side
(``cpu_s_per_step``: the work done, a diagnostic).  The contenders' chunks are interleaved.  simlm is
timed on the real training path — ``Training.batch(step)`` (fresh world samples) then ``Training.step``
(the jit∘vmap step with donated buffers, one seed) — and on the step alone (pre-sampled batches).  Torch
gets pre-built batches, ``torch.set_num_threads(os.cpu_count())`` (2 torch threads on 2 cores).

Load.  Interleaving does not make the ratio immune to other processes: on a loaded machine torch's
threads stall each other and HF's step slowed 10–20× while simlm's did not, so the ratio read "met" (18×)
and measured the load.  The script therefore counts the threads of *other* processes that are running
or runnable (``/proc/*/task/*/stat``, state R; elsewhere the 1-minute load average) before the timed
runs and between every two chunks, and gives the ratio no verdict (``met: null`` with the reason) when
their mean, before or during the run, exceeds half the cores (:data:`LOAD_LIMIT`).

Precision: ``--dtype float32`` (the trainer's default) or ``bfloat16`` (mixed precision: float32
parameters and optimiser, bfloat16 products — simlm's ``TransformerConfig.dtype``, the peer under
``torch.autocast``).  Autocast lowers only the peer's matmuls: its residual stream and LayerNorms stay
float32.  simlm's side therefore runs with ``residual_dtype="float32"`` (``--residual-dtype float32``, the
default): the same policy, like for like.  ``--residual-dtype compute`` keeps simlm's residual stream in
bfloat16 too (every activation in it, as the H200 rows of 2026-12-04 ran: not like for like, the peer
moved about twice the bytes in its element-wise passes).  The equivalence check runs in float32 only.  On a
GPU jax computes float32 products in TF32 by default, so the peer gets ``torch.backends.cuda.matmul.allow_tf32
= True`` too (like for like; recorded in the JSON).

Model FLOP utilisation (accelerators only): 6·N·tokens/s over the device's dense peak in the model's
dtype — ``--peak-tflops``, else the datasheet figure for a known device (:data:`DATASHEET_TFLOPS`; float32
means TF32, jax's default there), else the best of a large matmul measured here.  Only the first two are
a peak: a measured matmul is itself below the device's peak, so an MFU against it is inflated and gets no
verdict (reported only).  The measured matmul is recorded beside it either way
(``fraction_of_measured_matmul``).  On CPU the same ratio against a measured float32 matmul is printed as
a diagnostic ("÷ matmul").

The peer is checked to be the same network before it is timed: a simlm model, its weights redrawn so that
its logits are a non-linear function of order 1 of its input (:func:`spread_weights`), is copied into a
fresh HF model of the same shape and both compute the logits of one batch in full float32; they must
agree to :data:`EQUIVALENCE_RTOL` · max(1, max |logit|).  Measured on CPU at every size here (quick ones
included), max |Δlogit| against a tolerance of 1e-5 to 1.1e-5: the same network 4e-7 to 1.4e-6; a peer with
tanh-approximate GELU 1.8e-4 to 2.2e-4, with LayerNorm's ε at GPT-2's 1e-5 instead of simlm's 1e-6 5e-3 to
1e-2, with ReLU 0.1 to 0.2, without the 1/√dh of the attention scores 0.5 to 1.  A peer that disagrees makes
the script exit with status 1 (the JSON is still written, the ratio without a verdict).

Targets: simlm tokens/s ÷ HF tokens/s ≥ 1.5 at every size, on the real training path (judged on an
unloaded machine, not in ``--quick``); on an accelerator, MFU ≥ 40 % for a ≥ 10M-parameter bfloat16 model
against a datasheet or ``--peak-tflops`` peak.

    .venv/bin/python benchmarks/train.py               # sizes small (~0.4M), medium (~3M), large (~20M)
    .venv/bin/python benchmarks/train.py --quick       # tiny sizes, 2 timed steps (the smoke test)
    .venv/bin/python benchmarks/train.py --no-peer     # simlm only (no torch/transformers needed)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from _common import REPO_ROOT, meets, print_table, time_fn, write_json  # noqa: E402
from simlm.models.transformer import TransformerConfig, attention_kernel, init_transformer  # noqa: E402
from simlm.train import TrainConfig, Training  # noqa: E402
from simlm.worlds import HMM  # noqa: E402

RATIO_TARGET = 1.5  # simlm / HF tokens/s, real training path, every size
MFU_TARGET = 0.40  # on an accelerator, a bfloat16 model of at least MFU_MIN_PARAMS, against a real peak
MFU_MIN_PARAMS = 10_000_000
#: no ratio verdict when other processes keep more than this many threads runnable per core (mean)
LOAD_LIMIT = 0.5
#: the peer's logits must agree with simlm's to this fraction of their scale (max |logit|, at least 1),
#: under the weights of :func:`spread_weights`
EQUIVALENCE_RTOL = 1e-5

#: dense tensor-core peaks, TFLOP/s, from NVIDIA's datasheets (SXM parts unless named), by a substring of
#: jax's ``device_kind`` (first match wins); "float32" is TF32, what jax's default float32 product uses.
#: None: a part whose peak is not the SXM one and was not checked here (the H100 NVL and H200 NVL would
#: otherwise match "H100" / "H200"): no datasheet peak, so MFU is taken against ``--peak-tflops`` or,
#: unjudged, the measured matmul
DATASHEET_TFLOPS = {"H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
                    "H100 NVL": None,
                    "H200 NVL": None,
                    "H100": {"bfloat16": 989.4, "float32": 494.7},
                    "H200": {"bfloat16": 989.4, "float32": 494.7},
                    "A100": {"bfloat16": 312.0, "float32": 156.0}}


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    """The datasheet peak of the first name of :data:`DATASHEET_TFLOPS` that stands in ``device_kind`` as a word of
    its own ("NVIDIA RTX A1000" is no A100, "NVIDIA GH200" no H200: no peak for them)."""
    peaks = next((peaks for name, peaks in DATASHEET_TFLOPS.items()
                  if re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", device_kind)), None)
    return None if peaks is None else peaks[dtype]

# name → (d_model, n_layers, n_heads, d_ff); ≈ 12·L·d² + (2V + T)·d parameters
SIZES = {
    "small": (128, 2, 4, 512),  # ~0.4M
    "medium": (256, 4, 4, 1024),  # ~3.2M
    "large": (512, 6, 8, 2048),  # ~19M
}
QUICK_SIZES = {"tiny": (32, 1, 2, 128), "tiny2": (64, 2, 4, 256)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES) + list(QUICK_SIZES))
    p.add_argument("--batch", type=int, default=32, help="sequences per step B (the trainer's default)")
    p.add_argument("--seq-len", type=int, default=64, help="context T (the trainer's default)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="compute dtype: simlm's TransformerConfig.dtype (parameters stay float32), the peer "
                        "under torch.autocast to the same dtype")
    p.add_argument("--residual-dtype", choices=["float32", "compute"], default="float32",
                   help="simlm's residual stream under a bfloat16 dtype: float32 (autocast's policy, like for like "
                        "with the peer) or the compute dtype (every activation in bfloat16)")
    p.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto",
                   help="simlm's attention kernel (TransformerConfig.attention: auto = cuDNN's fused kernel on an "
                        "NVIDIA GPU in bfloat16, XLA's einsum path elsewhere)")
    p.add_argument("--symbols", type=int, default=64, help="world vocabulary V")
    p.add_argument("--states", type=int, default=16, help="world hidden states K")
    p.add_argument("--repeats", type=int, default=5, help="timed chunks; the median is reported")
    p.add_argument("--chunk-seconds", type=float, default=1.0, help="target length of one timed chunk")
    p.add_argument("--max-chunk-steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="accelerator peak for MFU (default: the datasheet's for a known device, else a large "
                        "matmul measured here — then MFU is reported without a verdict)")
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


def model_config(name: str, args) -> TransformerConfig:
    """The simlm side's network for size ``name`` at ``args``' vocabulary, context, dtype and attention kernel."""
    d, L, H, f = shapes(name)
    return TransformerConfig(n_symbols=args.symbols, d_model=d, n_layers=L, n_heads=H, d_ff=f, max_len=args.seq_len,
                             dtype=args.dtype, attention=args.attention,
                             residual_dtype="float32" if args.residual_dtype == "float32" else None)


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


#: simlm's LayerNorm ε (``simlm.models.transformer.LayerNorm``, nnx's default); GPT2Config's default is 1e-5
SIMLM_LN_EPSILON = 1e-6


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
            layer_norm_epsilon=SIMLM_LN_EPSILON, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False, use_cache=False,
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
        # on CUDA the fused AdamW, as Hugging Face's Trainer takes by default there (torch ≥ 2.8); the CPU keeps
        # torch's default implementation, as every CPU row was measured
        self.optimizer = "AdamW (fused)" if device == "cuda" else "AdamW"
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=tc.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                     **({"fused": True} if device == "cuda" else {}))
        warm, total = min(tc.warmup_steps, tc.max_steps - 1), tc.max_steps

        def schedule(step):  # optax.warmup_cosine_decay_schedule(0, lr, warm, total, end=0.1 lr), ÷ lr
            if step < warm:
                return step / warm
            frac = min(step - warm, total - warm) / (total - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.grad_clip = tc.grad_clip
        self.bos, self.n_symbols = mc.bos_id, mc.n_symbols

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
        # over the V world symbols, as simlm's output layer: HF's has a row per input id (V + 2 + S)
        logits = logits[..., :self.n_symbols]
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        self.sched.step()
        return loss


def copy_simlm_weights(torch, model, hf) -> None:
    """Copy a simlm :class:`~simlm.models.transformer.Transformer`'s weights into an HF ``GPT2LMHeadModel`` of
    the same shape (HF's Conv1D stores (in, out), as flax's kernels; HF's output layer has a row per input
    id, vocab_size = V + 2 + S rows with S prompt slots, and the rows of the 2 + S special ids are set to
    zero: simlm's output layer has the V world symbols' only)."""
    dev = hf.lm_head.weight.device
    t = lambda a: torch.from_numpy(np.array(a, np.float32)).to(dev)  # noqa: E731
    tr = hf.transformer
    pairs = [(tr.wte.weight, model.token_embed.embedding), (tr.wpe.weight, model.position_embed.embedding),
             (tr.ln_f.weight, model.final_norm.scale), (tr.ln_f.bias, model.final_norm.bias)]
    for blk, h in zip(model.blocks, tr.h):
        pairs += [(h.ln_1.weight, blk.norm1.scale), (h.ln_1.bias, blk.norm1.bias),
                  (h.ln_2.weight, blk.norm2.scale), (h.ln_2.bias, blk.norm2.bias),
                  (h.attn.c_attn.weight, blk.attn.qkv.kernel), (h.attn.c_attn.bias, blk.attn.qkv.bias),
                  (h.attn.c_proj.weight, blk.attn.out.kernel), (h.attn.c_proj.bias, blk.attn.out.bias),
                  (h.mlp.c_fc.weight, blk.up.kernel), (h.mlp.c_fc.bias, blk.up.bias),
                  (h.mlp.c_proj.weight, blk.down.kernel), (h.mlp.c_proj.bias, blk.down.bias)]
    with torch.no_grad():
        for dst, src in pairs:
            dst.copy_(t(src[...]))
        head = torch.zeros_like(hf.lm_head.weight)
        head[: model.config.n_symbols] = t(model.output.kernel[...]).T
        hf.lm_head.weight.copy_(head)


def spread_weights(model, seed: int = 0):
    """``model`` with weights under which its logits are a non-linear function of its input, for
    :func:`peer_equivalence`: every kernel redrawn from N(0, 1/fan_in) (attention scores and GELU inputs of
    order 1 at every size), the output layer's from N(0, 1/(16 · fan_in)) (logits of magnitude about 1, so
    the tolerance is about 1e-5 absolute, float32 rounding below 2e-6), biases and LayerNorm shifts from
    N(0, 0.2²), LayerNorm scales from 1 + N(0, 0.2²).  The embeddings keep their initial std 0.02, so the
    first LayerNorm reads inputs of variance ~1e-3, where its ε counts.  (At the initial weights the logits
    are ~0.1 and nearly linear, and a peer with tanh-approximate GELU differed from simlm by 1e-6 to 1e-5:
    it passed.)"""
    rng = np.random.default_rng(seed)

    def draw(shape, std, mean=0.0):
        return jnp.asarray(mean + std * rng.standard_normal(shape), jnp.float32)

    output = getattr(model, "output", None)
    for _, module in sorted(nnx.iter_graph(model), key=lambda item: str(item[0])):  # a fixed order of draws
        if isinstance(module, nnx.Linear):
            gain = 0.25 if module is output else 1.0
            module.kernel[...] = draw(module.kernel.shape, gain / math.sqrt(module.kernel.shape[0]))
            if module.bias is not None:
                module.bias[...] = draw(module.bias.shape, 0.2)
        elif isinstance(module, nnx.LayerNorm):
            module.scale[...] = draw(module.scale.shape, 0.2, 1.0)
            module.bias[...] = draw(module.bias.shape, 0.2)
    return model


def peer_equivalence(peer, mc: TransformerConfig, tc: TrainConfig, tokens: np.ndarray, seed: int = 0,
                     gpt_class=None) -> dict:
    """Is the HF peer the network simlm trains?  A simlm model of ``mc`` in float32 (``init_transformer(mc,
    seed)``, then :func:`spread_weights`) copied into a fresh peer (``gpt_class``, default :class:`TorchGPT2`)
    of the same config, both in float32 at full matmul precision (no TF32, no autocast), one forward on one
    ``(B, T)`` batch of world tokens: ``{"max_abs_diff", "logit_scale", "tolerance", "agrees"}`` over the V
    symbols' logits, where ``logit_scale`` is max |logit| and ``tolerance`` = :data:`EQUIVALENCE_RTOL` ·
    max(1, logit_scale)."""
    torch = peer[0]
    mc32 = dataclasses.replace(mc, dtype="float32")
    model = spread_weights(init_transformer(mc32, seed), seed)
    gpt = (gpt_class or TorchGPT2)(*peer, mc32, tc, seed, peer_device(peer))
    copy_simlm_weights(torch, model, gpt.model)
    inputs, _ = gpt.prepare(tokens)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        gpt.model.eval()
        with torch.no_grad():
            theirs = gpt.model(input_ids=inputs, use_cache=False).logits[..., : mc.n_symbols].float().cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(model(jnp.asarray(inputs.cpu().numpy(), jnp.int32)))
    diff, scale = float(np.max(np.abs(ours - theirs))), float(np.max(np.abs(ours)))
    tolerance = EQUIVALENCE_RTOL * max(1.0, scale)
    return {"max_abs_diff": diff, "logit_scale": scale, "tolerance": tolerance, "agrees": diff <= tolerance}


# ---- load from other processes ----------------------------------------------------------------

def others_running(root: str = "/proc", me: int | None = None) -> int | None:
    """Threads of processes other than ``me`` (default: this one) running or waiting to run now (state R in
    ``ROOT/PID/task/TID/stat``); None where there is no ``/proc``.  Unlike the load average, this leaves out
    this process's own threads (torch's and XLA's, which the load average would add to whatever else runs)
    and what a previous program left in the 1-minute average."""
    me = str(os.getpid() if me is None else me)
    try:
        pids = [p for p in os.listdir(root) if p.isdigit() and p != me]
    except OSError:
        return None
    running = 0
    for pid in pids:
        try:
            tids = os.listdir(f"{root}/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"{root}/{pid}/task/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            end = stat.rfind(b")")  # the command name may hold spaces and parentheses
            running += stat[end + 2: end + 3] == b"R"
    return running


class LoadMonitor:
    """Samples of :func:`others_running`, taken between timed chunks (never inside one)."""

    def __init__(self):
        self.samples: list[int] = []

    def sample(self) -> None:
        n = others_running()
        if n is not None:
            self.samples.append(n)

    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def load_before_run(n: int = 20, pause: float = 0.05) -> dict:
    """Other processes' runnable threads, mean of ``n`` samples ``pause`` s apart, and the load averages."""
    monitor = LoadMonitor()
    for _ in range(n):
        monitor.sample()
        time.sleep(pause)
    return {"others_running": monitor.mean(), "samples": len(monitor.samples), "load_average": os.getloadavg()}


def load_state(before: dict, during: LoadMonitor, cores: int) -> dict:
    """The load the run saw: other processes' mean runnable threads before and during it (where ``/proc``
    is missing, the 1-minute load average before it stands in for both), and whether either exceeds
    :data:`LOAD_LIMIT` × ``cores``."""
    measured = before.get("others_running") is not None
    load = {"cores": cores, "limit": LOAD_LIMIT * cores,
            "measure": "other processes' running threads (/proc)" if measured else "1-minute load average",
            "before": before["others_running"] if measured else before["load_average"][0],
            "during": during.mean() if measured else None, "samples_during": len(during.samples),
            "load_average_before": list(before["load_average"]), "load_average_after": list(os.getloadavg())}
    load["loaded"] = any(x is not None and x > load["limit"] for x in (load["before"], load["during"]))
    return load


# ---- verdicts ---------------------------------------------------------------------------------

def ratio_verdict(ratios: list, *, quick: bool, load: dict, peer_agrees: bool = True,
                  devices: tuple[str, str] = ("cpu", "cpu")) -> dict:
    """The target simlm ÷ HF ≥ :data:`RATIO_TARGET` at every size: ``met`` is a bool only for a full-size
    run on an unloaded machine with a peer that computes simlm's network on the same kind of device
    (``devices``: simlm's backend and the peer's torch device, "gpu"/"cuda" one kind); otherwise None, and
    ``reason`` says why."""
    target = {"target": RATIO_TARGET, "worst": min(ratios) if ratios else None, "met": None, "reason": None}
    simlm_on, peer_on = devices
    if not ratios:
        target["reason"] = "not measured (peer unavailable)"
    elif {"gpu": "cuda"}.get(simlm_on, simlm_on) != peer_on:  # a GPU against a CPU is no like-for-like ratio
        target["reason"] = f"not judged: simlm on {simlm_on}, the peer on {peer_on}"
    elif not peer_agrees:
        target["reason"] = "not judged: the peer is not the same network (its logits disagree with simlm's)"
    elif quick:
        target["reason"] = "not judged: --quick sizes"
    elif load["loaded"]:
        worst = max(x for x in (load["before"], load["during"]) if x is not None)
        target["reason"] = (f"not judged: machine loaded ({load['measure']}: {worst:.1f} on {load['cores']} cores, "
                            f"limit {load['limit']:g}; load average {load['load_average_before'][0]:.1f})")
    else:
        target["met"] = meets(target["worst"], RATIO_TARGET)
    return target


def mfu_verdict(row: dict, peak_kind: str, *, quick: bool) -> tuple[bool | None, str]:
    """``(met, note)`` for MFU ≥ :data:`MFU_TARGET`: judged for a bfloat16 model of ≥ :data:`MFU_MIN_PARAMS`
    parameters on an accelerator, outside ``--quick``, and only against a real peak (``peak_kind``
    "datasheet" or "given" — ``--peak-tflops``): against a measured matmul, which is below the device's
    peak, the MFU is inflated and reported without a verdict."""
    if row.get("mfu") is None:
        return None, "not measured (no accelerator)"
    if quick:
        return None, "not judged: --quick sizes"
    if row.get("dtype") != "bfloat16" or row.get("params_simlm", 0) < MFU_MIN_PARAMS:
        return None, "report only (the target is for a bfloat16 model of ≥ 10M parameters)"
    if peak_kind not in ("datasheet", "given"):
        return None, "not judged: no datasheet peak for this device (MFU against a measured matmul; give --peak-tflops)"
    return meets(row["mfu"], MFU_TARGET), f"≥ {MFU_TARGET:.0%} against the {peak_kind} peak"


def choose_peak(given: float | None, sheet: float | None, measured: dict, dtype: str, kind: str,
                matmul_size: int) -> tuple[float, str, str]:
    """``(TFLOP/s, source, kind)``: ``--peak-tflops`` ("given"), else the datasheet's, else the measured matmul
    ("measured")."""
    if given is not None:
        return given, "--peak-tflops", "given"
    if sheet is not None:
        return sheet, f"{kind} datasheet, dense {dtype}", "datasheet"
    return measured[dtype], f"measured {matmul_size}² {dtype} matmul", "measured"


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


def interleaved(contenders: dict, args, monitor: LoadMonitor | None = None) -> dict:
    """Seconds per step of each contender, ``{name: {"median", "best", "times", "k", "cpu_s_per_step"}}``
    (``cpu_s_per_step``: the median process CPU time per step, user + system, all threads).

    ``contenders`` maps a name to ``steps(k)`` (run k steps, return something to block on).  The
    chunks are interleaved — A, B, C, A, B, C, … — so that load from other processes on a shared machine
    falls on every contender alike; each chunk starts with an untimed step of its own contender, which
    absorbs what the previous one left running (torch's OpenMP workers spinning, deferred frees), as
    ``_common.time_interleaved`` does.  ``monitor`` is sampled before every lead-in (outside the timing)."""
    ks = {}
    for name, steps in contenders.items():
        ks[name] = chunk_steps(time_fn(lambda: steps(1), repeats=1, warmup=0).median, args)
    times = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, steps in contenders.items():
            if monitor is not None:
                monitor.sample()
            jax.block_until_ready(steps(1))  # the lead-in
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(steps(ks[name]))
            times[name].append((time.perf_counter() - start) / ks[name])
            cpu[name].append((time.process_time() - start_cpu) / ks[name])
    return {name: {"median": statistics.median(t), "best": min(t), "times": t, "k": ks[name],
                   "cpu_s_per_step": statistics.median(cpu[name])}
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


def bench_size(name, world, peer, args, peak_tflops, on_accelerator, measured_peak=None, monitor=None):
    d, L, H, f = shapes(name)
    mc = model_config(name, args)
    tc = train_config(args)
    tokens_per_step = args.batch * args.seq_len
    sim = SimlmSide(world, mc, tc)
    contenders = {"simlm_train": lambda k: sim.steps(k, with_data=True),
                  "simlm_step": lambda k: sim.steps(k, with_data=False)}
    hf = equivalence = None
    if peer[0] is not None:
        # the same network on both sides, or no comparison: one forward of one batch, weights copied
        equivalence = peer_equivalence(peer, mc, tc, sim.token_batches()[0], args.seed)
        hf = TorchSide(peer, mc, tc, args.seed, sim.token_batches())
        contenders["hf"] = hf.steps
    for steps in contenders.values():  # warm-up: compilation (simlm), allocator and thread pools (both)
        for _ in range(args.warmup):
            jax.block_until_ready(steps(1))
    t = interleaved(contenders, args, monitor)
    batch_s = time_fn(lambda: sim.run.batch(sim.i), repeats=max(args.repeats, 5), warmup=1).median

    row = {"size": name, "dtype": args.dtype, "residual_dtype": mc.stream_dtype,
           "attention_kernel": attention_kernel(mc),
           "d_model": d, "n_layers": L, "n_heads": H, "d_ff": f,
           "n_positions": mc.n_positions, "vocab_in": mc.vocab_size, "vocab_out": mc.n_symbols,
           "params_simlm": sim.n_params, "params_simlm_formula": mc.n_params(),
           "simlm_compile_s": sim.compile_s, "simlm_batch_s": batch_s, "timings_s_per_step": t,
           "simlm_tok_s": tokens_per_step / t["simlm_train"]["median"],
           "simlm_step_tok_s": tokens_per_step / t["simlm_step"]["median"],
           "simlm_best_tok_s": tokens_per_step / t["simlm_train"]["best"],
           "simlm_cpu_s_per_step": t["simlm_train"]["cpu_s_per_step"],
           "data_fraction": batch_s / t["simlm_train"]["median"]}
    row["simlm_tflops"] = 6 * sim.n_params * row["simlm_tok_s"] / 1e12
    row["fraction_of_peak"] = row["simlm_tflops"] / peak_tflops
    row["fraction_of_measured_matmul"] = row["simlm_tflops"] / measured_peak if measured_peak else None
    row["mfu"] = row["fraction_of_peak"] if on_accelerator else None
    if hf is not None:
        row.update(params_hf=hf.gpt.n_params(), hf_attention=hf.gpt.attention, hf_optimizer=hf.gpt.optimizer,
                   peer_equivalence=equivalence,
                   hf_tok_s=tokens_per_step / t["hf"]["median"], hf_best_tok_s=tokens_per_step / t["hf"]["best"],
                   hf_cpu_s_per_step=t["hf"]["cpu_s_per_step"])
        row["ratio"] = row["simlm_tok_s"] / row["hf_tok_s"]
        row["ratio_cpu"] = row["hf_cpu_s_per_step"] / row["simlm_cpu_s_per_step"]  # work, not wall: a diagnostic
        row["ratio_step_only"] = row["simlm_step_tok_s"] / row["hf_tok_s"]
        row["ratio_best"] = row["simlm_best_tok_s"] / row["hf_best_tok_s"]
    else:
        row.update(params_hf=None, hf_attention=None, hf_optimizer=None, peer_equivalence=None, hf_tok_s=None,
                   hf_best_tok_s=None, hf_cpu_s_per_step=None, ratio=None, ratio_cpu=None, ratio_step_only=None,
                   ratio_best=None)
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
    peak, peak_source, peak_kind = choose_peak(args.peak_tflops, sheet, peaks, args.dtype, kind, args.matmul_size)

    print(f"simlm train-step benchmark on {backend} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs; "
          f"B={args.batch} T={args.seq_len} V={args.symbols} (HMM K={args.states}), {args.dtype}; "
          f"median of {args.repeats} chunks")
    print("peer: " + (f"HF transformers {peer_info['transformers']} GPT2LMHeadModel on torch "
                       f"{peer_info['torch']} on {peer_info['torch_device']}, {peer_info['torch_threads']} threads"
                       if peer_info["available"] else f"unavailable ({peer_info['reason']})"))
    print(f"peak: {peak:.3g} TFLOP/s ({peak_source}; on GPU, JAX's default float32 matmul precision uses TF32)"
          if on_gpu else f"peak: {peak:.3g} TFLOP/s ({peak_source})")
    if on_accelerator and peak_kind == "measured":
        print("note: no datasheet peak for this device and no --peak-tflops: MFU is against a measured matmul "
              "(inflated) and gets no verdict")
    if on_gpu and peer_info.get("torch_device") == "cpu":
        print("note: this torch build has no CUDA, so the peer runs on the CPU: simlm/HF compares GPU with CPU")

    cores = os.cpu_count() or 1
    before, monitor = load_before_run(), LoadMonitor()
    first = load_state(before, monitor, cores)
    if first["loaded"]:
        print(f"warning: machine loaded — {first['measure']}: {first['before']:.1f} on {cores} cores (limit "
              f"{first['limit']:g}; load average {before['load_average'][0]:.2f}): the simlm/HF ratio gets no verdict")
    config = {k: getattr(args, k) for k in ("sizes", "dtype", "residual_dtype", "attention", "batch", "seq_len",
                                            "symbols", "states", "repeats", "chunk_seconds", "warmup", "matmul_size",
                                            "seed", "quick", "no_peer")}
    config["train_config"] = train_config(args).to_dict()
    header = {"benchmark": "train", "config": config, "peer": peer_info,
              "peak": {"tflops": peak, "source": peak_source, "kind": peak_kind, "measured": peaks}}
    rows = []
    for name in args.sizes:
        rows.append(bench_size(name, world, peer, args, peak, on_accelerator, peaks.get(args.dtype), monitor))
        r = rows[-1]
        eq = r["peer_equivalence"]
        print(f"  {name}: simlm {r['params_simlm']:,} params"
              + (f", HF {r['params_hf']:,} params; same network: max |Δlogit| {eq['max_abs_diff']:.1e} "
                 f"(≤ {eq['tolerance']:.1e}: {'yes' if eq['agrees'] else 'NO'})" if eq else "") + " — done", flush=True)
        r["mfu_met"], r["mfu_note"] = mfu_verdict(r, peak_kind, quick=args.quick)
        write_json(args.out, {**header, "results": rows, "complete": False})  # a run stopped later keeps these

    print_table(rows, ["size", ("attention_kernel", "attention"), "d_model", "n_layers", "n_heads", "d_ff",
                       "n_positions", ("params_simlm", "params simlm"), ("params_hf", "params HF")],
                title="model shapes (HF: +2·d for its V+2-way output layer; simlm outputs the V symbols only)")
    cols = ["size", ("simlm_tok_s", "simlm tok/s (batch+step)"), ("simlm_step_tok_s", "simlm tok/s (step)"),
            ("data_fraction", "batch share"), ("hf_tok_s", "HF tok/s"), ("ratio", "simlm/HF"),
            ("ratio_step_only", "simlm/HF (step)"), ("ratio_best", "simlm/HF (best chunks)"),
            ("ratio_cpu", "HF/simlm CPU s"), ("simlm_tflops", "simlm TFLOP/s (6N)")]
    cols += ([("mfu", "MFU"), ("fraction_of_measured_matmul", "÷ measured matmul")] if on_accelerator
             else [("fraction_of_peak", "÷ matmul")])
    print_table(rows, cols, title=f"train-step throughput, tokens/s ({args.batch}×{args.seq_len} tokens a step)")

    load = load_state(before, monitor, cores)
    agrees = all(r["peer_equivalence"]["agrees"] for r in rows if r["peer_equivalence"])
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    target = ratio_verdict(ratios, quick=args.quick, load=load, peer_agrees=agrees,
                           devices=(jax.default_backend(), peer_info.get("torch_device", "cpu")))
    during = "—" if load["during"] is None else f"{load['during']:.1f}"
    print(f"\nload: {load['measure']}: {load['before']:.1f} before, {during} during the timed chunks "
          f"(mean), on {cores} cores (a verdict needs ≤ {load['limit']:g})")
    print("target")
    if target["met"] is None:
        worst = "" if target["worst"] is None else f"worst {target['worst']:.2f}× — "
        print(f"  simlm/HF ≥ {RATIO_TARGET:g}× at every size (batch+step): {worst}{target['reason']}")
    else:
        print(f"  simlm/HF ≥ {RATIO_TARGET:g}× at every size (batch+step): worst {target['worst']:.2f}× → "
              f"{'met' if target['met'] else 'MISSED'}")
    for r in rows:
        if r["mfu"] is not None:
            print(f"  MFU ≥ {MFU_TARGET:.0%}, {r['size']}: {r['mfu']:.1%} → "
                  + (r["mfu_note"] if r["mfu_met"] is None else "met" if r["mfu_met"] else "MISSED"))
    if not agrees:
        print("ERROR: the HF peer does not compute simlm's network (see peer_equivalence in the JSON)")

    out = write_json(args.out, {
        **header, "load": load,
        "load_average": {"before": load["load_average_before"], "after": load["load_average_after"]},
        "peer_agrees": agrees if peer[0] is not None else None, "results": rows, "target": target, "complete": True,
    })
    print(f"\nwrote {out}")
    return 0 if agrees else 1


if __name__ == "__main__":
    sys.exit(main())
