"""Review regressions for simlm.models.transformer and the HF-peer check of benchmarks/train.py."""

import dataclasses
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from simlm.errors import ConfigError
from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import train as train_bench  # noqa: E402

TINY = dict(n_symbols=5, d_model=8, n_layers=1, n_heads=2, max_len=6)


def _redrawn(config: TransformerConfig, seed: int, std: float):
    """The model of ``config`` with every parameter redrawn from N(0, std²) (the same draws for every dtype:
    parameters are float32 whatever the compute dtype)."""
    model = init_transformer(config, 0)
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)
    nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(size=x.shape) * std, x.dtype)
                                                   for x in leaves]))
    return model


# ---- 1. float16 attention scores do not overflow ------------------------------------------------------

def test_float16_attention_scores_above_float16_range_give_the_float32_laws():
    """q and k columns of the qkv kernel ×400 (the rest O(1)) make |q·k| reach ~4e5 > 65504, float16's
    largest, while q, k and every other activation stay well inside it.  The scores were computed in float16:
    +inf, and the softmax's inf − inf made the laws NaN.  Accumulated and returned in float32 the laws are
    finite, normalised and within 1e-3 of the float32 model's (measured 1.4e-4)."""
    x = np.random.default_rng(0).integers(0, 5, (2, 6))
    laws = {}
    for dtype in ("float32", "float16"):
        model = _redrawn(TransformerConfig(**TINY, dtype=dtype), seed=7, std=0.5)
        kernel = model.blocks[0].attn.qkv.kernel
        kernel[...] = kernel[...].at[:, :16].multiply(400.0)  # the q and k columns (d_model = 8 each)
        laws[dtype] = np.asarray(TransformerLM(model).next_token_logprobs(x), np.float64)
    fp16, fp32 = laws["float16"], laws["float32"]
    assert np.isfinite(fp16).all()
    np.testing.assert_allclose(np.exp(fp16).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.exp(fp16), np.exp(fp32), rtol=0, atol=1e-3)


def test_float16_attention_alone_matches_float32_where_q_dot_k_exceeds_float16_range():
    config = TransformerConfig(**TINY, dtype="float16")
    model16 = _redrawn(config, seed=3, std=1.0)
    model32 = _redrawn(TransformerConfig(**TINY), seed=3, std=1.0)
    x = np.random.default_rng(1).normal(size=(2, 6, 8)) * 100  # q·k past 1e5 over head_dim 4
    attn16, attn32 = model16.blocks[0].attn, model32.blocks[0].attn
    q = np.asarray(attn32.qkv(jnp.asarray(x, jnp.float32)))[..., :8]
    k = np.asarray(attn32.qkv(jnp.asarray(x, jnp.float32)))[..., 8:16]
    assert np.abs(q).max() < 6e4 and np.abs(k).max() < 6e4  # q and k themselves are float16 numbers
    assert np.abs(np.einsum("nqd,nkd->nqk", q[..., :4], k[..., :4])).max() > 65504  # their product is not
    out16 = np.asarray(attn16(jnp.asarray(x, jnp.float16), jnp.arange(6)), np.float64)
    out32 = np.asarray(attn32(jnp.asarray(x, jnp.float32), jnp.arange(6)), np.float64)
    assert np.isfinite(out16).all()
    np.testing.assert_allclose(out16, out32, rtol=0, atol=2e-2 * np.abs(out32).max())


def test_float32_attention_is_unchanged_by_the_float32_accumulation():
    """The float32 laws: the same numbers as the by-hand softmax(q kᵀ / √dh) v (no change of formula)."""
    model = _redrawn(TransformerConfig(**TINY), seed=2, std=0.5)
    attn = model.blocks[0].attn
    x = np.random.default_rng(4).normal(size=(2, 6, 8)).astype(np.float32)
    qkv = np.asarray(attn.qkv(jnp.asarray(x)), np.float64).reshape(2, 6, 6, 4)
    q, k, v = qkv[:, :, :2], qkv[:, :, 2:4], qkv[:, :, 4:]
    s = np.einsum("nqhd,nkhd->nhqk", q, k) / 2.0
    s = np.where(np.tril(np.ones((6, 6), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("nhqk,nkhd->nqhd", w, v).reshape(2, 6, 8)
    want = o @ np.asarray(attn.out.kernel[...], np.float64) + np.asarray(attn.out.bias[...], np.float64)
    with jax.default_matmul_precision("highest"):
        got = np.asarray(attn(jnp.asarray(x), jnp.arange(6)), np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---- 1b. mixed precision: a float32 residual stream under bfloat16 products --------------------------

def test_a_float32_residual_stream_keeps_what_a_bfloat16_one_rounds_away():
    """Token embeddings offset by 256 (a constant over d, which every LayerNorm removes exactly): in bfloat16
    the stream's spacing at 256 is 2, so the O(0.5) token-specific part is rounded away and the laws move by
    ≥ 0.05 (measured 0.07 to 0.29 over seeds 0–3); with ``residual_dtype="float32"`` only the products are
    bfloat16 and the laws stay within 1e-2 of the float32 model's (measured 1.7e-3 to 3.8e-3)."""
    config = dict(TINY, n_layers=2)
    x = np.random.default_rng(0).integers(0, 5, (4, 6))
    for seed in range(2):
        laws, hidden = {}, {}
        for name, kw in {"float32": {}, "bfloat16": dict(dtype="bfloat16"),
                         "mixed": dict(dtype="bfloat16", residual_dtype="float32")}.items():
            model = _redrawn(TransformerConfig(**config, **kw), seed=seed, std=0.5)
            model.token_embed.embedding[...] = model.token_embed.embedding[...] + 256.0
            lm = TransformerLM(model)
            laws[name] = np.exp(np.asarray(lm.next_token_logprobs(x), np.float64))
            hidden[name] = lm.hidden_states(x)
        assert np.abs(laws["bfloat16"] - laws["float32"]).max() > 5e-2
        assert np.abs(laws["mixed"] - laws["float32"]).max() < 1e-2
        assert {h.dtype for h in hidden["mixed"]} == {jnp.dtype(jnp.float32)}
        np.testing.assert_array_equal(hidden["mixed"][0], hidden["float32"][0])  # the embeddings, unrounded
        assert {h.dtype for h in hidden["bfloat16"]} == {jnp.dtype(jnp.bfloat16)}


def test_residual_dtype_defaults_to_the_compute_dtype_and_refuses_any_other():
    assert TransformerConfig(**TINY).stream_dtype == "float32"
    bf16 = TransformerConfig(**TINY, dtype="bfloat16")
    assert bf16.residual_dtype is None and bf16.stream_dtype == "bfloat16"
    assert TransformerConfig(**TINY, dtype="bfloat16", residual_dtype="bfloat16") == bf16  # the default, spelt out
    mixed = TransformerConfig(**TINY, dtype="float16", residual_dtype="float32")
    assert TransformerConfig.from_dict(mixed.to_dict()) == mixed and mixed.stream_dtype == "float32"
    for bad in ("float16", "int8", 32):
        with pytest.raises(ConfigError, match="residual_dtype"):
            TransformerConfig(**TINY, dtype="bfloat16", residual_dtype=bad)


def test_a_default_config_serialises_as_before_the_residual_dtype_field():
    """Run directories' headers and the sweep's training directory names are built from to_dict(): with the
    field always written, a run started before it could not be resumed ('holds a different run') and every
    cached ladder was retrained under a new name."""
    for dtype in ("float32", "bfloat16"):
        assert "residual_dtype" not in TransformerConfig(**TINY, dtype=dtype).to_dict()
    mixed = TransformerConfig(**TINY, dtype="bfloat16", residual_dtype="float32")
    assert mixed.to_dict()["residual_dtype"] == "float32"
    # replace keeps following the compute dtype (it raised for an all-bf16 config taken to float32)
    bf16 = TransformerConfig(**TINY, dtype="bfloat16")
    assert dataclasses.replace(bf16, dtype="float32").stream_dtype == "float32"
    assert dataclasses.replace(TransformerConfig(**TINY), dtype="bfloat16").stream_dtype == "bfloat16"
    mixed = TransformerConfig(**TINY, dtype="bfloat16", residual_dtype="float32")
    assert dataclasses.replace(mixed, dtype="float32") == TransformerConfig(**TINY)


@pytest.mark.filterwarnings("ignore:seed 0. the rung:RuntimeWarning")  # the untrained model is below ε = 10 already
def test_a_mixed_precision_model_trains_and_reads_back_as_itself(tmp_path):
    from simlm.train import TrainConfig, train
    from simlm.worlds import HMM

    world = HMM.random(0, n_states=3, n_symbols=5)
    config = TransformerConfig(**TINY, dtype="bfloat16", residual_dtype="float32")
    result = train(world, config, TrainConfig(targets=(10.0,), max_steps=3, batch_size=4, seq_len=6,
                                              warmup_steps=1, eval_sequences=4), tmp_path, progress=False)
    live, saved = result.final_lms[0], result.lm(10.0)
    assert saved.config == live.config == config
    params = jax.tree.leaves(nnx.state(live.model, nnx.Param))
    assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}
    x = np.asarray(world.sample(1, 3, 6))
    assert np.isfinite(np.asarray(live.next_token_logprobs(x))).all()


# ---- 3. log_softmax(features @ Φ) is the law, exactly in float32 ------------------------------------

def test_float32_features_times_unembedding_give_the_laws_to_float32_rounding():
    model = _redrawn(TransformerConfig(**TINY), seed=5, std=0.5)
    lm = TransformerLM(model)
    x = np.random.default_rng(0).integers(0, 5, (3, 6))
    with jax.default_matmul_precision("highest"):
        product = jax.nn.log_softmax(lm.features(x) @ lm.unembedding)
    np.testing.assert_allclose(product, lm.next_token_logprobs(x), rtol=0, atol=1e-6)


# ---- 2. the HF peer check tells a different network apart --------------------------------------------

def _gpt2_with(transformers, **overrides):
    """``transformers`` with a GPT2Config that sets ``overrides`` over what the benchmark asks for."""
    def config(**kw):
        return transformers.GPT2Config(**{**kw, **overrides})
    return types.SimpleNamespace(GPT2Config=config, GPT2LMHeadModel=transformers.GPT2LMHeadModel)


MUTANTS = {"tanh GELU": dict(activation_function="gelu_new"), "no 1/sqrt(dh)": dict(scale_attn_weights=False),
           "LayerNorm eps 1e-5": dict(layer_norm_epsilon=1e-5), "ReLU": dict(activation_function="relu")}


def test_the_peer_check_catches_each_near_miss_network_at_the_quick_size():
    """At initial weights (std 0.02) the logits are ~0.1 and nearly linear in the input: a tanh-GELU peer
    passed (diff 2.6e-6 ≤ tolerance 1e-5 here).  The check must reject every near miss, by a margin (measured:
    ≥ 17× the tolerance at every size of the benchmark), and accept the true peer (measured 5e-7)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from simlm.train import TrainConfig

    d, n_layers, n_heads, d_ff = train_bench.QUICK_SIZES["tiny"]
    mc = TransformerConfig(n_symbols=16, d_model=d, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff, max_len=16)
    tc = TrainConfig(seeds=(0,), batch_size=4, seq_len=16)
    tokens = np.random.default_rng(0).integers(0, 16, (4, 16))
    same = train_bench.peer_equivalence((torch, transformers), mc, tc, tokens)
    assert same["agrees"], same
    for name, overrides in MUTANTS.items():
        check = train_bench.peer_equivalence((torch, _gpt2_with(transformers, **overrides)), mc, tc, tokens)
        assert not check["agrees"] and check["max_abs_diff"] > 10 * check["tolerance"], (name, check)


# ---- a TransformerLM is a snapshot ---------------------------------------------------------------------

def test_a_wrapped_model_trained_in_place_afterwards_leaves_the_wrapper_as_it_was():
    """``TransformerLM(model)`` promises a snapshot, but nnx.split's state shared the model's Variables:
    updating the model in place (what nnx.Optimizer.update does) moved the wrapper's laws (ε 0.181 → 0.918 on
    a 3-state HMM after 30 Adam steps) while its unembedding stayed the old array, so log_softmax(features Φ)
    was 5.9 nats from its own laws; and changing ``lm.model`` changed the wrapper.  Now neither does."""
    model = init_transformer(TransformerConfig(**TINY), 0)
    lm = TransformerLM(model)
    x = np.random.default_rng(0).integers(0, 5, (3, 6))
    before = np.asarray(lm.next_token_logprobs(x))
    nnx.update(model, jax.tree.map(lambda v: v + 0.5, nnx.state(model, nnx.Param)))
    inner = lm.model
    nnx.update(inner, jax.tree.map(lambda v: 2 * v, nnx.state(inner, nnx.Param)))
    np.testing.assert_array_equal(np.asarray(lm.next_token_logprobs(x)), before)
    np.testing.assert_allclose(np.asarray(jax.nn.log_softmax(lm.features(x) @ lm.unembedding, -1)), before, atol=1e-5)
    assert not np.allclose(np.asarray(TransformerLM(model).next_token_logprobs(x)), before)  # the update took


def test_a_prefix_beyond_the_streams_range_is_refused_and_a_bfloat16_prefix_accepted():
    """A finite prefix past the stream dtype's range became inf in it, and every logit NaN; a concrete
    bfloat16 prefix (the dtype a bf16 model's features come in) was refused as "not a numeric array"."""
    cfg = TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=2, max_len=6, causal=False)
    model = init_transformer(cfg, 0)
    tokens = jnp.zeros((1, 3), jnp.int32)
    with pytest.raises(ConfigError, match="prefix: entries up to 1e\\+39 overflow the model's float32"):
        model.logits_at(tokens, jnp.asarray([0]), prefix=np.full((1, 8), 1e39))
    half = init_transformer(dataclasses.replace(cfg, dtype="float16"), 0)
    with pytest.raises(ConfigError, match="float16"):
        half.logits_at(tokens, jnp.asarray([0]), prefix=np.full((1, 8), 1e5))
    assert np.all(np.isfinite(np.asarray(half.logits_at(tokens, jnp.asarray([0]), prefix=np.full((1, 8), 1e4)),
                                         np.float32)))
    prefix = jnp.full((1, 8), 0.5, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(model(tokens, prefix=prefix)),
                                  np.asarray(model(tokens, prefix=np.full((1, 8), 0.5, np.float32))))


def test_a_prefix_of_the_wrong_width_is_named_by_the_shape_it_was_given():
    """A (1, 7) prefix for d_model = 8 was reported as "got (1, 1, 7)", the shape it was broadcast to."""
    from simlm.errors import ShapeError

    model = init_transformer(TransformerConfig(n_symbols=3, d_model=8, n_heads=2, n_layers=1, max_len=6), 0)
    with pytest.raises(ShapeError, match=r"prefix: .*got \(1, 7\)$"):
        model(jnp.zeros((1, 3), jnp.int32), prefix=np.zeros((1, 7), np.float32))
