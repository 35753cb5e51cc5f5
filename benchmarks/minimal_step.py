"""Is the gap to PyTorch simlm's or XLA's?  simlm's train step against a minimal hand-written JAX one and HF.

The minimal step is the same network as ``train.py``'s (GPT-2 shape, pre-LayerNorm blocks, exact GELU, learned
positions, untied output layer over the V world symbols, causal cross-entropy of ``(BOS, x_0, …, x_{T-2})``
predicting ``(x_0, …, x_{T-1})``) and the same optimiser (the trainer's own optax chain: clipping, AdamW with
no decay on norms and biases, warmup-cosine), written as plain ``jax.numpy`` on a dict of arrays: no Flax, no
seed vmap, one ``jit`` with donated buffers, from simlm's initial weights.  Before timing it must reproduce
simlm's logits on a batch (``equivalence``), and the HF peer too (``peer_equivalence``, ``train.py``'s
check), so the three contenders compute one function.  The contenders' chunks are interleaved as in
``train.py`` (each after a lead-in of its own), on pre-sampled batches.

What it answers: where simlm's step is no slower than the minimal one, the time to PyTorch is not in simlm's
code (Flax, the vmap over seeds, the custom LayerNorm and GELU derivatives) but in what XLA:CPU makes of the
step.  No target: a diagnostic for issue 14's "training step ≥ 1.5× HF".

    .venv/bin/python benchmarks/minimal_step.py                 # sizes small and medium, B=32 T=64
    .venv/bin/python benchmarks/minimal_step.py --quick         # tiny, the smoke test
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import train as bench  # noqa: E402
from _common import REPO_ROOT, print_table, write_json  # noqa: E402
from simlm.models.transformer import gelu, layer_norm, rows_product as mm  # noqa: E402
from simlm.train.trainer import _optimizer  # noqa: E402
from simlm.worlds import HMM  # noqa: E402

EQUIVALENCE_RTOL = 1e-5


def minimal_params(model) -> dict:
    """A simlm :class:`~simlm.models.transformer.Transformer`'s weights as the plain dict the minimal step reads."""
    take = lambda x: jnp.asarray(x[...])  # noqa: E731
    blocks = [{"ln1_s": take(b.norm1.scale), "ln1_b": take(b.norm1.bias), "qkv": take(b.attn.qkv.kernel),
               "qkv_b": take(b.attn.qkv.bias), "o": take(b.attn.out.kernel), "o_b": take(b.attn.out.bias),
               "ln2_s": take(b.norm2.scale), "ln2_b": take(b.norm2.bias), "up": take(b.up.kernel),
               "up_b": take(b.up.bias), "down": take(b.down.kernel), "down_b": take(b.down.bias)}
              for b in model.blocks]
    return {"wte": take(model.token_embed.embedding), "wpe": take(model.position_embed.embedding),
            "lnf_s": take(model.final_norm.scale), "lnf_b": take(model.final_norm.bias),
            "out": take(model.output.kernel), "blocks": blocks}


def minimal_logits(p, inputs, n_heads: int):
    """The network's logits ``(B, T, V)`` for input ids ``(B, T)``; each projection one ``(B·T, d) @ (d, f)``
    product, as simlm's (``rows_product``; docs/benchmarks.md, "flattened products")."""
    B, T = inputs.shape
    d = p["wte"].shape[1]
    dh = d // n_heads
    h = p["wte"][inputs] + p["wpe"][:T]
    visible = jnp.tril(jnp.ones((T, T), bool))
    for b in p["blocks"]:
        q, k, v = jnp.split((mm(layer_norm(h, b["ln1_s"], b["ln1_b"]), b["qkv"]) + b["qkv_b"])
                            .reshape(B, T, 3 * n_heads, dh), 3, axis=2)
        s = jnp.einsum("nqhd,nkhd->nhqk", q, k) / math.sqrt(dh)
        w = jax.nn.softmax(jnp.where(visible, s, -jnp.inf), axis=-1)
        h = h + mm(jnp.einsum("nhqk,nkhd->nqhd", w, v).reshape(B, T, d), b["o"]) + b["o_b"]
        h = h + mm(gelu(mm(layer_norm(h, b["ln2_s"], b["ln2_b"]), b["up"]) + b["up_b"]), b["down"]) + b["down_b"]
    return mm(layer_norm(h, p["lnf_s"], p["lnf_b"]), p["out"])


def _shifted(x, bos):
    return jnp.concatenate([jnp.full((x.shape[0], 1), bos, x.dtype), x[:, :-1]], 1)


def minimal_loss(mc, n_heads: int):
    """The causal cross-entropy of the network, as a function of (params, tokens (B, T))."""
    bos = mc.bos_id

    def loss(p, x):
        logp = jax.nn.log_softmax(minimal_logits(p, _shifted(x, bos), n_heads), axis=-1)
        return -jnp.take_along_axis(logp, x[..., None], -1).mean()

    return loss


class MinimalSide:
    def __init__(self, sim: bench.SimlmSide, mc, tc, n_heads: int):
        self.loss = jax.jit(minimal_loss(mc, n_heads))
        tx = _optimizer(tc)

        def step(p, o, x):
            value, grads = jax.value_and_grad(minimal_loss(mc, n_heads))(p, x)
            updates, o = tx.update(grads, o, p)
            return optax.apply_updates(p, updates), o, value

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self.params = minimal_params(sim.run.lm(sim.state.params, 0).model)  # simlm's initial weights
        self.opt = tx.init(self.params)
        self.batches = [jnp.asarray(t) for t in sim.token_batches()]
        self.i = 0

    def equivalence(self, mc, n_heads: int, seed: int) -> dict:
        """The minimal network's logits against simlm's on the first batch's causal input, both at the weights
        of ``train.py``'s :func:`~train.spread_weights` (order-1, non-linear logits; at the initial weights
        they are ~0.1 and nearly linear): within 1e-5 · max(1, max |logit|), as ``train.py`` holds its peer
        (a tanh-approximate GELU differs by ~2e-4)."""
        from simlm.models.transformer import init_transformer

        model = bench.spread_weights(init_transformer(mc, seed), seed)
        inputs = _shifted(self.batches[0], mc.bos_id)
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(minimal_logits(minimal_params(model), inputs, n_heads))
            theirs = np.asarray(model(inputs))
        diff, scale = float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())
        return {"max_abs_diff": diff, "logit_scale": scale, "tolerance": EQUIVALENCE_RTOL * max(1.0, scale),
                "agrees": diff <= EQUIVALENCE_RTOL * max(1.0, scale)}

    def steps(self, k: int):
        loss = None
        for _ in range(k):
            self.params, self.opt, loss = self._step(self.params, self.opt, self.batches[self.i % len(self.batches)])
            self.i += 1
        return loss


def bench_size(name, world, peer, args) -> dict:
    d, L, H, f = bench.shapes(name)
    mc, tc = bench.model_config(name, args), bench.train_config(args)
    sim = bench.SimlmSide(world, mc, tc)
    minimal = MinimalSide(sim, mc, tc, H)
    equivalence = minimal.equivalence(mc, H, args.seed)
    contenders = {"simlm_step": lambda k: sim.steps(k, with_data=False), "minimal_step": minimal.steps}
    peer_equivalence = None
    if peer[0] is not None:  # the HF peer held to simlm's network as train.py holds it (unchecked here before)
        peer_equivalence = bench.peer_equivalence(peer, mc, tc, sim.token_batches()[0], args.seed)
        contenders["hf"] = bench.TorchSide(peer, mc, tc, args.seed, sim.token_batches()).steps
    for steps in contenders.values():
        for _ in range(args.warmup):
            jax.block_until_ready(steps(1))
    t = bench.interleaved(contenders, args)
    tokens = args.batch * args.seq_len
    row = {"size": name, "d_model": d, "n_layers": L, "n_heads": H, "d_ff": f, "equivalence": equivalence,
           "peer_equivalence": peer_equivalence,
           "timings_s_per_step": t, **{f"{k}_ms": 1e3 * v["median"] for k, v in t.items()},
           **{f"{k}_tok_s": tokens / v["median"] for k, v in t.items()}}
    row["simlm_over_minimal"] = t["minimal_step"]["median"] / t["simlm_step"]["median"]  # speed ratio
    if "hf" in t:
        row["simlm_over_hf"] = t["hf"]["median"] / t["simlm_step"]["median"]
        row["minimal_over_hf"] = t["hf"]["median"] / t["minimal_step"]["median"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "minimal_step.json"))
    own, rest = p.parse_known_args(argv)
    args = bench.parse_args(rest + (["--quick"] if own.quick else []) + ["--out", own.out])
    args.sizes = [s for s in args.sizes if s != "large"] if not own.quick and "--sizes" not in rest else args.sizes
    peer = (None, "disabled by --no-peer") if args.no_peer else bench.load_peer()
    if peer[0] is not None:
        peer[0].set_num_threads(bench.os.cpu_count() or 1)
    world = HMM.random(args.seed, args.states, args.symbols)
    rows = [bench_size(name, world, peer, args) for name in args.sizes]
    print_table(rows, ["size", "simlm_step_ms", "minimal_step_ms", "hf_ms", "simlm_over_minimal", "simlm_over_hf",
                       "minimal_over_hf"],
                title=f"train step, ms (B={args.batch} T={args.seq_len}; speed ratios: > 1 is the first faster)")
    write_json(own.out, {"benchmark": "minimal_step", "quick": own.quick, "config": vars(args) | {"out": own.out},
                         "peer": {"available": peer[0] is not None}, "results": rows})
    bad = [r["size"] for r in rows if not r["equivalence"]["agrees"]]
    if bad:
        print(f"the minimal step is not simlm's network at sizes {bad}: see 'equivalence'")
    bad_peer = [r["size"] for r in rows if r["peer_equivalence"] and not r["peer_equivalence"]["agrees"]]
    if bad_peer:
        print(f"the HF peer is not simlm's network at sizes {bad_peer}: see 'peer_equivalence'")
    return 1 if bad or bad_peer else 0


if __name__ == "__main__":
    sys.exit(main())
