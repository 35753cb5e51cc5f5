"""The attention kernels: XLA's einsum path everywhere, cuDNN's fused kernel where ``attention="auto"`` finds it
(an NVIDIA GPU, bfloat16/float16).  The GPU tests run on the accelerator machine (benchmarks/accelerator.sh
runs this file); on a CPU they are skipped and the choice itself is tested."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from simlm.errors import ConfigError
from simlm.models.transformer import TransformerConfig, attention_kernel, init_transformer
from simlm.train import objectives

SHAPE = dict(n_symbols=7, d_model=64, n_layers=2, n_heads=4, max_len=40)
ON_CUDNN = attention_kernel(TransformerConfig(**SHAPE, dtype="bfloat16")) == "cudnn"
gpu_only = pytest.mark.skipif(not ON_CUDNN, reason="cuDNN's fused attention needs an NVIDIA GPU")


def test_float32_and_forced_xla_always_run_the_einsum_path():
    assert attention_kernel(TransformerConfig(**SHAPE)) == "xla"
    assert attention_kernel(TransformerConfig(**SHAPE, dtype="bfloat16", attention="xla")) == "xla"
    # head size 64 / 16 = 4, not a multiple of 8: never fused, on any device
    assert attention_kernel(TransformerConfig(**{**SHAPE, "n_heads": 16}, dtype="float16")) == "xla"


@pytest.mark.skipif(ON_CUDNN, reason="this device has the fused kernel")
def test_auto_falls_back_and_a_forced_cudnn_is_refused_without_the_kernel():
    assert attention_kernel(TransformerConfig(**SHAPE, dtype="bfloat16")) == "xla"
    config = TransformerConfig(**SHAPE, dtype="bfloat16", attention="cudnn")
    with pytest.raises(ConfigError, match="attention: 'cudnn' .* cannot run here: the default device is"):
        init_transformer(config, 0)


@pytest.mark.parametrize("change, problem", [({}, "dtype is float32"),
                                             ({"n_heads": 16, "dtype": "float16"}, "head size .* = 4 is not")])
def test_a_forced_cudnn_on_a_config_it_cannot_run_is_refused_on_any_device(change, problem):
    with pytest.raises(ConfigError, match=f"attention: 'cudnn' .* cannot run this config: .*{problem}"):
        TransformerConfig(**{**SHAPE, **change}, attention="cudnn")


def _pair(dtype, causal, positions, seed=3):
    """The same parameters under the fused kernel and under XLA's einsum path, redrawn at order-1 scale
    (every matrix N(0, 1/fan-in), embeddings N(0, 1)) so that attention weights are far from uniform and
    a wrong mask or scale would show."""
    fused = init_transformer(TransformerConfig(**SHAPE, dtype=dtype, causal=causal, positions=positions), seed)
    plain = init_transformer(TransformerConfig(**SHAPE, dtype=dtype, causal=causal, positions=positions,
                                               attention="xla"), seed)
    params = nnx.state(fused, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    redrawn = [jax.random.normal(k, x.shape, x.dtype) / (np.sqrt(x.shape[0]) if x.ndim == 2 and x.shape[0] > 16
                                                          else 1.0) for k, x in zip(keys, leaves)]
    params = jax.tree.unflatten(treedef, redrawn)
    nnx.update(fused, params)
    nnx.update(plain, params)
    return fused, plain


@gpu_only
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_fused_attention_equals_the_einsum_path_to_compute_dtype_rounding(dtype, causal, positions):
    fused, plain = _pair(dtype, causal, positions)
    assert fused.blocks[0].attn.kernel == "cudnn" and plain.blocks[0].attn.kernel == "xla"
    tokens = jax.random.randint(jax.random.key(0), (6, 33), 0, SHAPE["n_symbols"])  # T = 33: not a tile multiple
    prefix = 0.1 * jax.random.normal(jax.random.key(1), (3, SHAPE["d_model"]))
    # × max(1, max |logit|): ~4× the gap between the einsum path in this dtype and in float32 (measured on a
    # CPU with these weights: 0.022 of 3.9 in bfloat16, 0.0026 of 3.9 in float16)
    tol = {"bfloat16": 2e-2, "float16": 3e-3}[dtype]
    for kwargs in ({}, {"prefix": prefix}):
        a, b = jax.jit(lambda m: m(tokens, **kwargs))(fused), jax.jit(lambda m: m(tokens, **kwargs))(plain)
        a, b = np.asarray(a), np.asarray(b)
        scale = max(1.0, float(np.abs(b).max()))
        print(f"{dtype} causal={causal} {positions} prefix={bool(kwargs)}: max |Δlogit| {np.abs(a - b).max():.2e}"
              f" of max |logit| {np.abs(b).max():.2f}")
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, atol=tol * scale)
    # the tolerance can fail: the other mask (causal ↔ bidirectional) moves the logits by far more
    other = init_transformer(TransformerConfig(**SHAPE, dtype=dtype, causal=not causal, positions=positions,
                                               attention="xla"), 3)
    nnx.update(other, nnx.state(plain, nnx.Param))
    assert np.abs(np.asarray(other(tokens)) - np.asarray(plain(tokens))).max() > 3 * tol * scale
    if causal:  # a causal model still does not see the future under the fused kernel's mask
        later = tokens.at[:, 20:].set((tokens[:, 20:] + 1) % SHAPE["n_symbols"])
        np.testing.assert_array_equal(np.asarray(fused(tokens))[:, :20], np.asarray(fused(later))[:, :20])


@gpu_only
def test_fused_attention_gradients_equal_the_einsum_paths_under_vmap_over_seeds():
    """The trainer differentiates the loss of every seed under ``jax.vmap``: the fused kernel's batching rule
    and backward pass, against the einsum path's."""
    fused, plain = _pair("bfloat16", True, "learned")
    tokens = jax.random.randint(jax.random.key(2), (2, 4, 32), 0, SHAPE["n_symbols"])  # 2 seeds × (4, 32)

    def grads(model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        loss = lambda p, x: objectives.cross_entropy(nnx.merge(graphdef, p, rest), x)
        stacked = jax.tree.map(lambda v: jnp.stack([v, v]), params)
        return jax.jit(jax.vmap(jax.value_and_grad(loss)))(stacked, tokens)

    (la, ga), (lb, gb) = grads(fused), grads(plain)
    np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-2)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        scale = float(jnp.abs(y).max()) + 1e-6
        assert float(jnp.abs(x - y).max()) <= 0.05 * scale
