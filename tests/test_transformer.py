"""Specification of simlm.models.transformer: the network, its config, and its wrapping as an LM."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf, logsumexp

from profiles import scaled

from simlm.errors import ConfigError, ShapeError, TokenError
from simlm.models.base import LanguageModel, MaskedLanguageModel, SoftmaxLanguageModel
from simlm.models.transformer import (
    ONE_HOT_GRAD_ROWS, Embed, LayerNorm, Transformer, TransformerConfig, TransformerLM, appended_token_logprobs,
    causal_inputs, embed, gelu, init_transformer, layer_norm, next_token_logprobs, prepended_mask_logprobs, rotary,
)

V, T, N = 5, 6, 3
TINY = dict(n_symbols=V, d_model=16, n_layers=2, n_heads=2, max_len=8)


def n_params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def causal():
    return init_transformer(TransformerConfig(**TINY), seed=0)


@pytest.fixture(scope="module")
def causal_lm(causal):
    return TransformerLM(causal)


@pytest.fixture(scope="module")
def masked_lm():
    return TransformerLM(init_transformer(TransformerConfig(**TINY, causal=False, positions="rotary"), seed=1))


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, V, (N, T)).astype(np.int32)


# ---- shapes -----------------------------------------------------------------------------------------

def test_output_shapes(causal_lm, masked_lm, tokens):
    assert causal_lm.next_token_logprobs(tokens).shape == (N, T, V)
    assert causal_lm.next_token_logprobs(tokens[0]).shape == (T, V)  # a single (T,) sequence
    assert causal_lm.features(tokens).shape == (N, T, 16)
    assert causal_lm.unembedding.shape == (16, V)
    assert masked_lm.masked_token_logprobs(tokens).shape == (N, T, V)
    assert masked_lm.masked_token_logprobs(tokens, positions=[2, 3]).shape == (N, 2, V)
    assert masked_lm.prepended_mask_logprobs(tokens).shape == (N, V)
    assert masked_lm.prepended_mask_features(tokens).shape == (N, 16)


def test_wrappers_satisfy_their_protocols(causal_lm, masked_lm):
    assert isinstance(causal_lm, LanguageModel) and isinstance(causal_lm, SoftmaxLanguageModel)
    assert isinstance(masked_lm, MaskedLanguageModel)


def test_hidden_states_are_embeddings_plus_one_per_block(causal_lm, tokens):
    hidden = causal_lm.hidden_states(tokens)
    assert len(hidden) == TINY["n_layers"] + 1
    assert all(h.shape == (N, T, 16) for h in hidden)


# ---- the laws ---------------------------------------------------------------------------------------

@settings(max_examples=scaled(15), deadline=None)
@given(j=st.integers(0, T - 1), shift=st.integers(1, V - 1))
def test_causal_model_does_not_see_the_future(causal_lm, tokens, j, shift):
    changed = tokens.copy()
    changed[:, j] = (changed[:, j] + shift) % V
    before, after = causal_lm.next_token_logprobs(tokens), causal_lm.next_token_logprobs(changed)
    np.testing.assert_array_equal(before[:, : j + 1], after[:, : j + 1])  # row t reads only x_<t
    if j < T - 1:
        assert np.abs(before[:, j + 1:] - after[:, j + 1:]).max() > 1e-6


def test_causal_row_zero_is_the_law_of_the_first_token(causal_lm, tokens):
    other = np.random.default_rng(1).integers(0, V, (N, T))
    np.testing.assert_allclose(causal_lm.next_token_logprobs(tokens)[:, 0],
                               causal_lm.next_token_logprobs(other)[:, 0], atol=1e-6)


def test_prepended_mask_law_depends_on_later_tokens(masked_lm, tokens):
    changed = tokens.copy()
    changed[:, -1] = (changed[:, -1] + 1) % V
    assert np.abs(masked_lm.prepended_mask_logprobs(tokens) - masked_lm.prepended_mask_logprobs(changed)).max() > 1e-6


def test_masked_law_at_i_does_not_read_x_i(masked_lm, tokens):
    changed = tokens.copy()
    changed[:, 2] = (changed[:, 2] + 1) % V
    before, after = (masked_lm.masked_token_logprobs(x, positions=[2, 3]) for x in (tokens, changed))
    np.testing.assert_allclose(before[:, 0], after[:, 0], atol=1e-6)
    assert np.abs(before[:, 1] - after[:, 1]).max() > 1e-6  # but x_2 is context for x_3


def test_log_probs_normalise(causal_lm, masked_lm, tokens):
    for lp in (causal_lm.next_token_logprobs(tokens), masked_lm.masked_token_logprobs(tokens),
               masked_lm.prepended_mask_logprobs(tokens)):
        np.testing.assert_allclose(jax.nn.logsumexp(lp, axis=-1), 0.0, atol=1e-5)


def test_logits_are_features_times_unembedding(causal, causal_lm, masked_lm, tokens):
    product, logits = jax.jit(lambda x: (causal.features(x) @ causal.unembedding, causal(x)))(tokens)
    np.testing.assert_allclose(product, logits, atol=1e-5)
    np.testing.assert_allclose(jax.nn.log_softmax(causal_lm.features(tokens) @ causal_lm.unembedding),
                               causal_lm.next_token_logprobs(tokens), atol=1e-5)
    np.testing.assert_allclose(jax.nn.log_softmax(masked_lm.prepended_mask_features(tokens) @ masked_lm.unembedding),
                               masked_lm.prepended_mask_logprobs(tokens), atol=1e-5)


# ---- architecture options ---------------------------------------------------------------------------

def test_n_params_counts_the_parameters_exactly(causal):
    assert n_params(causal) == causal.config.n_params()


def test_tied_embeddings_share_parameters(causal):
    tied = init_transformer(TransformerConfig(**TINY, tie_embeddings=True), seed=0)
    assert n_params(causal) - n_params(tied) == 16 * V == causal.config.n_params() - tied.config.n_params()
    np.testing.assert_array_equal(tied.unembedding, tied.token_embed.embedding[...][:V].T)
    tied.token_embed.embedding[...] = tied.token_embed.embedding[...] + 1.0
    np.testing.assert_array_equal(tied.unembedding, tied.token_embed.embedding[...][:V].T)


def test_learned_and_rotary_positions_both_run_and_see_order(causal_lm, tokens):
    rotary_lm = TransformerLM(init_transformer(TransformerConfig(**TINY, positions="rotary"), seed=2))
    swapped = tokens[:, [1, 0, 2, 3, 4, 5]]  # the same context multiset at the last row, in another order
    assert (tokens[:, 0] != tokens[:, 1]).any()
    for lm in (causal_lm, rotary_lm):
        lp = lm.next_token_logprobs(tokens)
        assert lp.shape == (N, T, V) and np.all(np.isfinite(lp))
        assert np.abs(lp[:, -1] - lm.next_token_logprobs(swapped)[:, -1]).max() > 1e-6


def test_prefix_changes_outputs_and_gets_no_logits(causal, tokens):
    prefix = jax.random.normal(jax.random.PRNGKey(0), (3, 16))

    @jax.jit
    def run(x, prefix):
        logits, hidden = causal(x, prefix=prefix, return_hidden=True)
        per_sequence = causal(x, prefix=jnp.broadcast_to(prefix, (N, 3, 16)))
        return logits, hidden[-1], per_sequence, causal(x)

    logits, last_hidden, per_sequence, without = run(tokens, prefix)
    assert logits.shape == (N, T, V) and last_hidden.shape == (N, 3 + T, 16)
    assert np.abs(logits - without).max() > 1e-6
    np.testing.assert_allclose(per_sequence, logits, atol=1e-6)
    with pytest.raises(ShapeError, match="prefix"):
        jax.eval_shape(lambda x: causal(x, prefix=jnp.zeros((3, 15))), tokens)


@settings(max_examples=scaled(20), deadline=None)
@given(causal=st.booleans(), positions=st.sampled_from(["learned", "rotary"]), n_layers=st.integers(1, 3),
       k=st.integers(0, 2), seed=st.integers(0, 2**31 - 1))
def test_logits_and_features_at_one_position_per_row_equal_the_full_forward(causal, positions, n_layers, k, seed):
    """The last block run at one query per row gives that row's logits of the whole forward pass."""
    config = TransformerConfig(**{**TINY, "n_layers": n_layers}, causal=causal, positions=positions)
    model = init_transformer(config, seed=seed % 1000)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, (7, T)).astype(np.int32)
    at = rng.integers(0, T, 7).astype(np.int32)
    prefix = None if k == 0 else rng.normal(size=(k, 16)).astype(np.float32)
    full = np.asarray(model(x, prefix=prefix))[np.arange(7), at]
    np.testing.assert_allclose(model.logits_at(x, at, prefix=prefix), full, rtol=1e-5, atol=1e-5)
    features = np.asarray(model.features(x, prefix=prefix))[np.arange(7), at]
    np.testing.assert_allclose(model.features_at(x, at, prefix=prefix), features, rtol=1e-5, atol=1e-5)


def test_logits_at_refuses_positions_of_the_wrong_shape(causal, tokens):
    with pytest.raises(ShapeError, match="at: expected integer positions of shape"):
        causal.logits_at(tokens, np.zeros(N + 1, np.int32))
    with pytest.raises(ShapeError, match="at: expected integer positions"):
        causal.logits_at(tokens, np.zeros(N, np.float32))
    for bad in (-1, T):  # out of range, never wrapped into the prefix or past the end
        with pytest.raises(ShapeError, match=r"at: expected positions in \[0, 6\)"):
            causal.logits_at(tokens, np.full(N, bad, np.int32), prefix=np.zeros((2, 16), np.float32))
    with pytest.raises(ShapeError, match="at: expected integer positions of shape"):  # traced: shape still checked
        jax.jit(lambda a: causal.logits_at(tokens, a))(jnp.zeros(N + 1, jnp.int32))


def test_logits_at_takes_narrow_integer_positions_without_overflow():
    """uint8 position 250 plus a 10-vector prefix is 260, not 4."""
    model = init_transformer(TransformerConfig(**{**TINY, "max_len": 300}), seed=3)
    x = np.random.default_rng(1).integers(0, V, (2, 260)).astype(np.int32)
    at, prefix = np.array([250, 3], np.uint8), np.ones((10, 16), np.float32)
    full = np.asarray(model(x, prefix=prefix))[np.arange(2), at]
    np.testing.assert_allclose(model.logits_at(x, at, prefix=prefix), full, rtol=1e-5, atol=1e-5)


def test_masked_law_at_every_position_is_the_full_forward_at_the_masked_copy(masked_lm, tokens):
    model = masked_lm.model
    copies = np.repeat(tokens, T, axis=0)
    copies[np.arange(N * T), np.tile(np.arange(T), N)] = model.config.mask_id
    full = np.asarray(jax.nn.log_softmax(model(copies), axis=-1)).reshape(N, T, T, V)
    expected = full[:, np.arange(T), np.arange(T)]
    np.testing.assert_allclose(masked_lm.masked_token_logprobs(tokens), expected, rtol=1e-5, atol=1e-5)


def test_same_seed_gives_identical_parameters():
    config = TransformerConfig(**TINY)
    a, b, c = (nnx.state(init_transformer(config, s), nnx.Param) for s in (7, 7, 8))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))


def test_seeds_beyond_2_32_give_their_own_parameters_and_those_below_the_old_ones():
    """Without jax_enable_x64 a seed used to become the key of seed mod 2**32: 0 and 2**32 were one model.
    TINY, the sizes whose initialisers the fixtures compile already."""
    config = TransformerConfig(**TINY)
    leaves = lambda seed: jax.tree.leaves(nnx.state(init_transformer(config, seed), nnx.Param))
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
    assert not same(0, 2**32) and not same(5, 2**32 + 5) and not same(2**32, 2**33)
    assert same(2**63 - 1, 2**63 - 1)
    for seed in (5, 2**32 - 1):  # the parameters these seeds always had
        old = jax.tree.leaves(nnx.state(Transformer(config, rngs=nnx.Rngs(seed)), nnx.Param))
        assert all(np.array_equal(x, y) for x, y in zip(leaves(seed), old))


def test_jitted_split_merge_forward_equals_module_call(causal, causal_lm, tokens):
    shifted = causal_inputs(jnp.asarray(tokens), causal.config)  # (BOS, x_1 .. x_{T-1})
    np.testing.assert_allclose(causal_lm.next_token_logprobs(tokens),
                               jax.nn.log_softmax(causal(shifted)), atol=1e-6)


def test_wrappers_of_equal_graphs_share_compiled_functions_not_parameters(tokens):
    """Every checkpoint of a ladder is wrapped anew: the wrappers must reuse one compiled function per law
    (not compile their own), and each must still answer with its own parameters.  masked_lm's graph, whose laws
    the tests above compile already."""
    config = TransformerConfig(**TINY, causal=False, positions="rotary")
    a, b = (TransformerLM(init_transformer(config, seed)) for seed in (3, 4))
    for name in ("_masked", "_prepended", "_prepended_features", "_features", "_hidden"):
        assert getattr(a, name) is getattr(b, name), name
    other = TransformerLM(init_transformer(TransformerConfig(**{**TINY, "d_model": 8}, causal=False), 3))
    assert other._masked is not a._masked  # another graph, another function
    x = jnp.asarray(tokens)
    for lm in (a, b):
        np.testing.assert_allclose(lm.prepended_mask_logprobs(tokens), prepended_mask_logprobs(lm.model, x), atol=1e-6)
        np.testing.assert_allclose(lm.features(tokens), lm.model.features(x), atol=1e-6)
    assert not np.allclose(a.prepended_mask_logprobs(tokens), b.prepended_mask_logprobs(tokens))


# ---- configuration ----------------------------------------------------------------------------------

def test_config_round_trips_through_json():
    config = TransformerConfig(**TINY, positions="rotary", n_prompt_slots=2)
    assert TransformerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.d_ff == 64 and config.vocab_size == V + 4
    assert (config.mask_id, config.pad_id, config.prompt_ids) == (V, V + 1, (V + 2, V + 3))


@pytest.mark.parametrize("field, change", [
    ("d_model", dict(d_model=10, n_heads=4)),
    ("positions", dict(positions="sinusoidal")),
    ("max_len", dict(max_len=2, n_prompt_slots=2)),
    ("n_heads", dict(d_model=12, n_heads=4, positions="rotary")),  # odd head size cannot rotate
    ("causal", dict(causal="yes")),
    ("dtype", dict(dtype="int8")),
])
def test_invalid_config_raises_config_error_naming_the_field(field, change):
    with pytest.raises(ConfigError, match=field):
        TransformerConfig(**{**TINY, **change})


@given(field=st.sampled_from(["n_symbols", "d_model", "n_layers", "n_heads", "d_ff", "max_len"]),
       value=st.integers(-3, 0))
def test_non_positive_sizes_raise_config_error(field, value):
    with pytest.raises(ConfigError, match=field):
        TransformerConfig(**{**TINY, field: value})


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="d_modle"):
        TransformerConfig.from_dict({**TINY, "d_modle": 8})


# ---- invalid input ----------------------------------------------------------------------------------

def test_bad_tokens_raise_token_error_before_any_compile(monkeypatch):
    lm = TransformerLM(init_transformer(TransformerConfig(**TINY, causal=False), seed=3))

    def no_trace(*args, **kwargs):
        raise AssertionError("traced before validating")

    monkeypatch.setattr(nnx, "merge", no_trace)  # the jitted functions merge at trace time
    too_long = np.zeros((2, 9), dtype=np.int32)
    for call in (lm.masked_token_logprobs, lm.prepended_mask_logprobs, lm.features):
        with pytest.raises(TokenError, match="length 9 exceeds max_len = 8"):
            call(too_long)
    with pytest.raises(TokenError, match="outside"):
        lm.prepended_mask_logprobs(np.array([[0, V]]))  # the MASK id is no world symbol


def test_methods_of_the_other_kind_raise(causal_lm, masked_lm, tokens):
    with pytest.raises(ConfigError, match="next_token_logprobs: .* bidirectional"):
        masked_lm.next_token_logprobs(tokens)
    with pytest.raises(ConfigError, match="masked_token_logprobs: .* causal"):
        causal_lm.masked_token_logprobs(tokens)


def _attention_by_hand(attn, x, causal):
    """Multi-head attention written out head by head in float64: columns [c·d + h·dh, c·d + (h+1)·dh) of
    the qkv kernel are head h of q (c = 0), k (c = 1) and v (c = 2); heads are concatenated in order."""
    W, b = np.asarray(attn.qkv.kernel[...], np.float64), np.asarray(attn.qkv.bias[...], np.float64)
    Wo, bo = np.asarray(attn.out.kernel[...], np.float64), np.asarray(attn.out.bias[...], np.float64)
    n, T, d = x.shape
    H = attn.config.n_heads
    dh = d // H
    qkv = x @ W + b
    heads = []
    for h in range(H):
        q, k, v = (qkv[..., c * d + h * dh: c * d + (h + 1) * dh] for c in range(3))
        scores = q @ np.swapaxes(k, 1, 2) / np.sqrt(dh)
        if causal:
            scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        heads.append((w / w.sum(-1, keepdims=True)) @ v)
    return np.concatenate(heads, axis=-1) @ Wo + bo


@pytest.mark.parametrize("causal", [True, False])
def test_attention_is_multi_head_attention_written_out_by_hand(causal):
    model = init_transformer(TransformerConfig(**{**TINY, "causal": causal, "n_heads": 4}), seed=5)
    attn = model.blocks[0].attn
    rng = np.random.default_rng(0)
    for layer in (attn.qkv, attn.out):  # O(1) weights, so attention is far from uniform and every head counts
        layer.kernel[...] = jnp.asarray(rng.standard_normal(layer.kernel[...].shape) / 2, jnp.float32)
        layer.bias[...] = jnp.asarray(rng.standard_normal(layer.bias[...].shape) / 2, jnp.float32)
    x = rng.standard_normal((3, 6, 16)).astype(np.float32)
    got = np.asarray(attn(jnp.asarray(x), jnp.arange(6)), np.float64)
    want = _attention_by_hand(attn, x.astype(np.float64), causal)
    assert np.abs(want).max() > 1  # a non-trivial output
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _layer_norm_by_hand(x, norm):
    """LayerNorm of x's last axis in float64 with the module's scale and bias."""
    return _textbook_layer_norm(x, np.asarray(norm.scale[...], np.float64), np.asarray(norm.bias[...], np.float64))


def _block_by_hand(block, h):
    """One pre-LayerNorm causal block in float64, as the module docstring writes it: h ← h + Attn(LN₁(h)),
    then h + MLP(LN₂(h)) with MLP(u) = down(gelu(up(u))) and the exact GELU ½u(1 + erf(u/√2))."""
    h = h + _attention_by_hand(block.attn, _layer_norm_by_hand(h, block.norm1), causal=True)
    W1, b1, W2, b2 = (np.asarray(p[...], np.float64)
                      for p in (block.up.kernel, block.up.bias, block.down.kernel, block.down.bias))
    u = _layer_norm_by_hand(h, block.norm2) @ W1 + b1
    return h + (0.5 * u * (1 + erf(u / np.sqrt(2)))) @ W2 + b2


def test_the_network_is_pre_layer_norm_blocks_written_out_by_hand(tokens):
    """h⁰ = E[x] + P, hˡ = blocks with both residuals, f = LN(hᴸ), log p = log_softmax(Φᵀ f), in float64."""
    model = init_transformer(TransformerConfig(**TINY), seed=6)
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(2)  # O(1) weights, LayerNorm scales and biases included: every term counts
    nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(rng.standard_normal(x.shape) / 2, x.dtype)
                                                   for x in leaves]))
    lm = TransformerLM(model)
    inputs = np.asarray(causal_inputs(jnp.asarray(tokens), model.config))
    h = (np.asarray(model.token_embed.embedding[...], np.float64)[inputs]
         + np.asarray(model.position_embed.embedding[...], np.float64)[:T])
    hidden = [h]
    for block in model.blocks:
        hidden.append(_block_by_hand(block, hidden[-1]))
    logits = _layer_norm_by_hand(hidden[-1], model.final_norm) @ np.asarray(model.unembedding, np.float64)
    want = logits - logsumexp(logits, axis=-1, keepdims=True)
    for got, ref in zip(lm.hidden_states(tokens), hidden):
        np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert np.abs(want - want.mean(-1, keepdims=True)).max() > 0.5  # laws far from uniform
    np.testing.assert_allclose(np.asarray(lm.next_token_logprobs(tokens), np.float64), want, rtol=1e-4, atol=1e-4)


def test_appended_token_law_is_the_last_row_of_the_causal_law_of_x_extended(causal, causal_lm, tokens):
    """log p(x_T | x_0 … x_{T-1}) is row T of next_token_logprobs(x y) whatever y (row T never reads y)."""
    x = jnp.asarray(tokens[:, : T - 1])

    @jax.jit
    def laws(x):  # every extension x y, y = 0 … V-1, in one batch (row r·V + y)
        extended = jnp.concatenate([jnp.repeat(x, V, axis=0), jnp.tile(jnp.arange(V, dtype=x.dtype), N)[:, None]], 1)
        return (appended_token_logprobs(causal, x), next_token_logprobs(causal, extended)[:, -1],
                next_token_logprobs(causal, x)[:, -1])

    pure, extended, last = (np.asarray(a) for a in laws(x))
    assert pure.shape == (N, V)
    np.testing.assert_allclose(np.repeat(pure, V, axis=0), extended, atol=1e-6)
    np.testing.assert_allclose(causal_lm.appended_token_logprobs(tokens[:, : T - 1]), pure, atol=1e-6)
    assert np.abs(pure - last).max() > 1e-4  # not the law of x_{T-1}


def test_causal_input_starts_with_bos_and_row_zero_is_the_law_given_bos_alone(causal, causal_lm, tokens):
    config = causal.config
    assert config.bos_id == config.pad_id == V + 1
    inputs = np.asarray(causal_inputs(jnp.asarray(tokens), config))
    np.testing.assert_array_equal(inputs[:, 0], config.bos_id)
    np.testing.assert_array_equal(inputs[:, 1:], tokens[:, :-1])
    alone = np.asarray(jax.nn.log_softmax(causal(np.array([[config.bos_id]], np.int32)), axis=-1))[0, 0]
    np.testing.assert_allclose(causal_lm.next_token_logprobs(tokens)[:, 0], np.broadcast_to(alone, (N, V)), atol=1e-6)


@pytest.mark.parametrize("n_layers", [2, 5])
def test_residual_projections_start_scaled_by_one_over_root_two_layers(n_layers):
    """GPT-2's init: every kernel N(0, 0.02²) except the projections into the residual stream (attention out,
    MLP down), N(0, (0.02 / √(2L))²); 16k draws each, so the sample std is within 3% of its target (the
    1/√L of a wrong scheme is 41% off)."""
    config = TransformerConfig(n_symbols=V, d_model=128, d_ff=128, n_heads=4, n_layers=n_layers, max_len=6)
    model = init_transformer(config, seed=0)
    std = lambda p: float(np.std(np.asarray(p[...], np.float64)))
    residual = 0.02 / np.sqrt(2 * n_layers)
    for block in model.blocks:
        for p in (block.attn.out.kernel, block.down.kernel):
            assert abs(std(p) / residual - 1) < 0.03, (std(p), residual)
        for p in (block.attn.qkv.kernel, block.up.kernel):
            assert abs(std(p) / 0.02 - 1) < 0.03, std(p)
    assert abs(std(model.token_embed.embedding) / 0.02 - 1) < 0.1  # 7 × 128 draws
    assert abs(std(model.position_embed.embedding) / 0.02 - 1) < 0.1


def test_rotary_rotates_pair_j_by_t_times_10000_to_the_minus_2j_over_dh():
    """Unit vector e_i as head i: pair (j, j + dh/2) turns by t · 10000^(−2j/dh) at position t; and for two
    more heads q, k, ⟨R_s q, R_t k⟩ depends on s − t only."""
    dh, half, n_pos = 8, 4, 51
    q, k = np.random.default_rng(0).standard_normal((2, dh))
    heads = np.concatenate([np.eye(dh), q[None], k[None]])  # (dh + 2, dh)
    x = jnp.asarray(np.broadcast_to(heads, (1, n_pos, dh + 2, dh)), jnp.float32)
    got = np.asarray(rotary(x, jnp.arange(n_pos)), np.float64)[0]  # (t, head, coordinate)
    t = np.arange(n_pos)
    want = np.zeros((n_pos, dh, dh))
    for j in range(half):
        angle = t * 10000.0 ** (-2 * j / dh)
        want[:, j, j], want[:, j, j + half] = np.cos(angle), np.sin(angle)
        want[:, j + half, j], want[:, j + half, j + half] = -np.sin(angle), np.cos(angle)
    np.testing.assert_allclose(got[:, :dh], want, atol=2e-5)
    gram = got[:, dh] @ got[:, dh + 1].T  # gram[s, t] = ⟨R_s q, R_t k⟩
    for m in (1, 5, 20):
        np.testing.assert_allclose(gram[m:, m:], gram[:-m, :-m], atol=1e-4)
    assert np.abs(gram[3, 1] - gram[3, 2]) > 1e-3


def test_max_len_must_hold_the_prompt_slots_and_one_token_exactly():
    """max_len ≥ n_prompt_slots + 1: the boundary is accepted, one less refused naming max_len."""
    config = TransformerConfig(n_symbols=3, d_model=8, n_heads=2, n_layers=1, max_len=3, n_prompt_slots=2)
    assert config.max_len == 3 and config.n_positions == 4
    with pytest.raises(ConfigError, match="max_len: 2 is too small to hold the 2 prompt slots"):
        TransformerConfig(n_symbols=3, d_model=8, n_heads=2, n_layers=1, max_len=2, n_prompt_slots=2)
    assert TransformerConfig(n_symbols=3, d_model=8, n_heads=2, n_layers=1, max_len=1).max_len == 1


# ---- the fast pieces compute the textbook functions, derivatives included ----------------------------

@settings(max_examples=scaled(25), deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 8.0))
def test_gelu_and_its_derivative_are_the_exact_gelu(seed, scale):
    x = scale * jax.random.normal(jax.random.key(seed), (64,))
    exact = lambda x: jax.nn.gelu(x, approximate=False)  # x·Φ(x), Φ through erfc
    np.testing.assert_allclose(gelu(x), exact(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(gelu))(x), jax.vmap(jax.grad(exact))(x), rtol=1e-5, atol=1e-6)


def test_gelu_derivative_is_phi_plus_x_times_density_in_float64():
    x = np.linspace(-6, 6, 49)
    grad = np.asarray(jax.vmap(jax.grad(gelu))(jnp.asarray(x, jnp.float32)), np.float64)
    from scipy.stats import norm
    np.testing.assert_allclose(grad, norm.cdf(x) + x * norm.pdf(x), atol=1e-6)


def _textbook_layer_norm(x, scale, bias):
    """LayerNorm's formula (ε = 1e-6) in x's own array module: autodiff of it is the reference for the custom
    VJP, and on float64 numpy arrays it is the by-hand network's LayerNorm."""
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / (((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6) ** 0.5 * scale + bias


_layer_norm_vjps = jax.jit(lambda x, s, b, w: [jax.grad(lambda *a: (f(*a) * w).sum(), argnums=(0, 1, 2))(x, s, b)
                                               for f in (layer_norm, _textbook_layer_norm)])


@settings(max_examples=scaled(25), deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 100.0), st.floats(-10.0, 10.0))
def test_layer_norm_value_and_gradients_are_the_textbook_layer_norms(seed, scale, shift):
    k = jax.random.split(jax.random.key(seed), 4)
    x = shift + scale * jax.random.normal(k[0], (3, 5, 8))
    s, b, w = 1 + jax.random.normal(k[1], (8,)), jax.random.normal(k[2], (8,)), jax.random.normal(k[3], x.shape)
    np.testing.assert_allclose(layer_norm(x, s, b), _textbook_layer_norm(x, s, b), rtol=1e-4, atol=1e-4)
    ours, textbook = _layer_norm_vjps(x, s, b, w)
    for g, ref in zip(ours, textbook):  # ∂x, ∂scale, ∂bias
        np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-4 * float(jnp.abs(ref).max()) + 1e-6)


@settings(max_examples=scaled(30), deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 9), st.sampled_from([(5,), (3, 7), (2, 3, 4)]),
       st.sampled_from(["float32", "bfloat16", "float16"]), st.sampled_from(["matmul", "scatter"]))
def test_embed_is_a_lookup_whose_gradient_adds_every_rows_cotangents(seed, rows, shape, dtype, gradient):
    """By brute force in float64: the value is table[ids] in dtype, the gradient Σ over the positions holding
    each id of g (ids repeat: few rows, many positions), float32 at the table — by the one-hot matmul (float32
    throughout) or by autodiff's scatter-add (in dtype)."""
    rng = np.random.default_rng(seed)
    table = jnp.asarray(rng.normal(size=(rows, 4)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, rows, size=shape), jnp.int32)
    g = jnp.asarray(rng.normal(size=(*shape, 4))).astype(dtype)
    out, vjp = jax.vjp(lambda t: embed(t, ids, dtype, gradient=gradient), table)
    assert out.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(table.astype(dtype))[np.asarray(ids)])
    (grad,) = vjp(g)
    expected = np.zeros((rows, 4))
    np.add.at(expected, np.asarray(ids).ravel(), np.asarray(g.astype(jnp.float32), np.float64).reshape(-1, 4))
    assert grad.dtype == jnp.float32
    tol = 1e-6 if dtype == "float32" or gradient == "matmul" else 5e-2
    np.testing.assert_allclose(np.asarray(grad), expected, atol=tol * max(1.0, np.abs(expected).max()))


def test_embed_picks_the_matmul_gradient_on_an_accelerator_for_small_tables_only(monkeypatch):
    ids = jnp.zeros((2, 3), jnp.int32)
    uses_matmul = lambda rows: "custom_vjp" in str(jax.make_jaxpr(lambda t: embed(t, ids, "float32"))(
        jnp.ones((rows, 4))))
    assert not uses_matmul(5)  # a CPU keeps autodiff's scatter: the trajectories of the documented runs
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert uses_matmul(5) and uses_matmul(ONE_HOT_GRAD_ROWS) and not uses_matmul(ONE_HOT_GRAD_ROWS + 1)
    with pytest.raises(ConfigError, match="gradient: expected one of"):
        embed(jnp.ones((5, 4)), ids, "float32", gradient="one-hot")


def test_embed_module_is_flax_embed_with_the_same_parameter_and_gradient():
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 6, (4, 9)), jnp.int32)
    ours, flax_embed = Embed(6, 8, rngs=nnx.Rngs(0)), nnx.Embed(6, 8, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ours(ids), flax_embed(ids))
    grads = [nnx.grad(lambda m: (m(ids) ** 3).sum())(m).embedding[...] for m in (ours, flax_embed)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="integer"):  # non-integer ids: flax's own error
        ours(jnp.asarray([[0.5]]))


def test_layer_norm_module_is_flax_layer_norm_with_the_same_parameters():
    x = 3 + jax.random.normal(jax.random.key(0), (4, 7, 16))
    ours, flax_ln = LayerNorm(16, rngs=nnx.Rngs(0)), nnx.LayerNorm(16, use_fast_variance=False, rngs=nnx.Rngs(0))
    assert jax.tree.map(jnp.shape, nnx.state(ours)) == jax.tree.map(jnp.shape, nnx.state(flax_ln))
    ours.scale[...] = flax_ln.scale[...] = jax.random.normal(jax.random.key(1), (16,))
    np.testing.assert_allclose(ours(x), flax_ln(x), rtol=1e-5, atol=1e-5)


def test_layer_norm_keeps_the_dtype_and_normalises_in_float32():
    x = (100 + jax.random.normal(jax.random.key(0), (4, 16))).astype(jnp.bfloat16)
    y = layer_norm(x, jnp.ones(16), jnp.zeros(16))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32).mean(-1), 0, atol=0.05)
    np.testing.assert_allclose(np.asarray(y, np.float32).std(-1), 1, atol=0.05)
    w = jnp.arange(16.0)  # ∂x has x's dtype too, and is the float32 gradient rounded to it
    dx = jax.grad(lambda x: (layer_norm(x, jnp.ones(16), jnp.zeros(16)).astype(jnp.float32) * w).sum())(x)
    dx32 = jax.grad(lambda x: (layer_norm(x, jnp.ones(16), jnp.zeros(16)) * w).sum())(x.astype(jnp.float32))
    assert dx.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(dx, np.float32), dx32, rtol=1e-2, atol=1e-2 * float(jnp.abs(dx32).max()))


# ---- identities that pin the prefix's positions, the prepended MASK, rotary q and k, max_len --------------

@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_prefix_of_token_embeddings_is_those_tokens_read_first(causal, positions):
    """prefix = E[ids] (per row) is the input (ids, x): the prefix takes positions 0..k-1 in its own order and
    the tokens k..k+T-1, so the logits at the tokens are those of the longer token input, to float32 rounding
    (a prefix given no positions, or read in reverse, passed every other test)."""
    model = init_transformer(TransformerConfig(**TINY, causal=causal, positions=positions), seed=3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (4, T)).astype(np.int32)
    ids = rng.integers(0, model.config.vocab_size, (4, 3)).astype(np.int32)
    assert (ids[:, 0] != ids[:, 2]).any()
    prefix = np.asarray(model.token_embed.embedding[...])[ids]  # (n, k, d)
    with jax.default_matmul_precision("highest"):
        got = np.asarray(model(x, prefix=prefix))
        want = np.asarray(model(np.concatenate([ids, x], axis=1)))[:, 3:]
        at = rng.integers(0, T, 4).astype(np.int32)
        got_at = np.asarray(model.logits_at(x, at, prefix=prefix))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_at, want[np.arange(4), at], rtol=0, atol=1e-6)


def test_the_prepended_mask_law_is_the_masked_law_at_a_first_position():
    """(MASK, x) is the masked copy of (y, x) at position 0 for every world token y (a PAD in MASK's place moved
    the law by up to 0.1 nats and passed every other test: they compared two paths through the same inputs)."""
    lm = TransformerLM(init_transformer(TransformerConfig(**TINY, causal=False), seed=4))
    x = np.random.default_rng(1).integers(0, V, (3, T)).astype(np.int32)
    got = np.asarray(lm.prepended_mask_logprobs(x))
    for y in range(V):
        longer = np.concatenate([np.full((3, 1), y, np.int32), x], axis=1)
        np.testing.assert_allclose(got, np.asarray(lm.masked_token_logprobs(longer, positions=[0]))[:, 0],
                                   rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.nn.log_softmax(lm.prepended_mask_features(x) @ lm.unembedding)),
                               got, rtol=0, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_rotary_attention_depends_on_positions_only_through_their_differences(causal):
    """q and k both rotated: attention at positions t + c equals that at t (to float32 rounding of angles up
    to ~20 rad), and differs from the unrotated attention (all positions 0), so rotation is applied at all
    (rotating q alone, or k alone, passed every other test)."""
    model = init_transformer(TransformerConfig(**TINY, causal=causal, positions="rotary"), seed=5)
    attn = model.blocks[0].attn
    rng = np.random.default_rng(0)
    for layer in (attn.qkv, attn.out):  # O(1) weights: attention far from uniform
        layer.kernel[...] = jnp.asarray(rng.standard_normal(layer.kernel[...].shape) / 2, jnp.float32)
        layer.bias[...] = jnp.asarray(rng.standard_normal(layer.bias[...].shape) / 2, jnp.float32)
    x = jnp.asarray(rng.standard_normal((3, T, 16)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        at0 = np.asarray(attn(x, jnp.arange(T)))
        shifted = np.asarray(attn(x, jnp.arange(T) + 4))
        unrotated = np.asarray(attn(x, jnp.zeros(T, jnp.int32)))
    np.testing.assert_allclose(shifted, at0, rtol=0, atol=1e-4)
    assert np.abs(unrotated - at0).max() > 1e-2


def test_every_law_reads_exactly_max_len_tokens_and_refuses_one_more():
    """T = max_len is accepted by every wrapper law (its appended/prepended input, max_len + 1, fits the
    n_positions = max_len + 1 positions); T = max_len + 1 is refused (only max_len + 1 was tried: a `>=` that
    refused max_len passed)."""
    causal = TransformerLM(init_transformer(TransformerConfig(**TINY), seed=0))
    masked = TransformerLM(init_transformer(TransformerConfig(**TINY, causal=False), seed=0))
    L = TINY["max_len"]
    x = np.random.default_rng(2).integers(0, V, (2, L)).astype(np.int32)
    assert causal.next_token_logprobs(x).shape == (2, L, V)
    assert causal.appended_token_logprobs(x).shape == (2, V)
    assert masked.masked_token_logprobs(x).shape == (2, L, V)
    assert masked.prepended_mask_logprobs(x).shape == (2, V)
    longer = np.zeros((2, L + 1), np.int32)
    for read in (causal.next_token_logprobs, causal.appended_token_logprobs, masked.masked_token_logprobs,
                 masked.prepended_mask_logprobs):
        with pytest.raises(TokenError, match=f"length {L + 1} exceeds max_len = {L}"):
            read(longer)
