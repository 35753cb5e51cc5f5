"""A small GPT/BERT-style transformer in Flax NNX, and its wrapping as a language model.

The network (nanoGPT's, with pre-LayerNorm blocks)::

    h⁰ = E[x] (+ P[0:T'])                                  token (+ learned positional) embeddings
    hˡ = hˡ⁻¹ + Attn(LN(hˡ⁻¹));  hˡ = hˡ + MLP(LN(hˡ))       l = 1..L, causal or bidirectional attention
    f  = LN(hᴸ)                                            the features f(s) ∈ R^d the output layer reads
    logits = Φᵀ f,  Φ ∈ R^{d×V}, no bias                   so p(· | s) = softmax(Φᵀ f(s))

Vocabulary.  Inputs are the world's V symbols ``0..V-1`` followed by special ids: ``mask_id = V``,
``pad_id = V+1`` (also the beginning-of-sequence token, ``bos_id``) and prompt slots ``V+2 … V+1+S``,
so the input vocabulary has ``V + 2 + S`` ids.  Outputs are laws over the V world symbols only.

Language-model conventions (pure functions below, wrapped by :class:`CausalTransformerLM` and
:class:`MaskedTransformerLM`; ``TransformerLM(model)`` picks the one the config's ``causal`` says), for
world tokens x = (x_0, …, x_{T-1}), 0-indexed like the rows of every (n, T, V) output:

- causal, :func:`next_token_logprobs`: the input is the shifted ``(BOS, x_0, …, x_{T-2})`` and output row
  t is log p(x_t | x_<t) — row 0 is the law of the first token, given BOS alone.
- causal, :func:`appended_token_logprobs`: the input is ``(BOS, x_0, …, x_{T-1})``; the law read at its
  last position is that of a token appended after x_{T-1}, given all of x.
- masked, :func:`masked_token_logprobs`: for each requested position i the input is x with x_i replaced
  by MASK (one forward pass per position, batched); row i is log p(x_i | x_-i) read at position i.
- masked, :func:`prepended_mask_logprobs`: the input is ``(MASK, x_0, …, x_{T-1})``; the law read at
  position 0 is that of a token prepended before x_0, given all of x.

Precision: with ``dtype="float32"`` the laws are log_softmax(Φᵀ f) exactly (to float32 rounding) on a CPU; on a GPU a
learned model keeps JAX's default matmul precision (TF32 on recent NVIDIA cards; :mod:`simlm.precision`), which moves
its laws by ~3e-4 nats and its ε by ~5e-4 relative (estimated on trained rungs by emulating TF32's 10-bit mantissa on
a CPU; not measured on a GPU) — wrap a call in ``jax.default_matmul_precision("highest")`` for float32 products.  With
``"bfloat16"`` or ``"float16"`` the parameters stay float32 and the products run in that compute dtype:
features come back in it and the model multiplies them by Φ rounded to it, so ``log_softmax(features @
unembedding)`` equals the laws only up to compute-dtype rounding, which grows with the logits (rounded to the
compute dtype): about 2⁻⁸·|logit| in bfloat16 and 2⁻¹¹·|logit| in float16, up to ~2× that where the terms
of a logit cancel (the rounding follows max_v Σ_i |f_i Φ_iv|, not |logit|; measured: 1e-3 to 3e-3 and 2e-4
to 5e-4 with logits ~1, 0.016 to 0.057 and 2e-3 to 7.5e-3 with logits of 4 to 12).  A bf16/fp16 model's
laws are its own, not its float32 twin's: on the same weights they differ by ~0.1 nats (bfloat16) at
logits ~6 — a measurement, not a bound: 0.06–0.31 nats at |logit| ≤ 5 over six draws of weights perturbed
by N(0, 0.5) (a review, 2026-12-06).  Attention scores and
softmaxes, LayerNorm statistics and the output log_softmax are computed in float32 whatever the dtype; other
float16 activations (the residual stream, the MLP) past 65504 overflow to inf and the laws read NaN, which the
ε computations and the trainer refuse (``DistributionError``, ``TrainingDivergedError``): bfloat16 has float32's
range.
``residual_dtype`` is the residual stream's (the embeddings and every block's sum): by default the compute
dtype, so that every activation is in it; with ``residual_dtype="float32"`` under a bfloat16/float16
``dtype`` the stream stays float32 and only the products' inputs and outputs (and the GELU between them)
are in the compute dtype — PyTorch's ``torch.autocast`` mixed precision, the like-for-like setting against
a peer run under it.

Attention kernel: ``attention="auto"`` runs cuDNN's fused (flash) attention where it exists — an NVIDIA GPU of
compute capability ≥ 8, a bfloat16/float16 compute dtype, head size a multiple of 8 and ≤ 128 — for the full
sequence (training, features, every law read at all positions), and XLA's einsum–softmax–einsum otherwise
(always on a CPU or TPU, in float32, and for the one-query-per-row reads of ``logits_at``).  Both compute
q·k and the softmax in float32 and multiply v by the weights rounded to the compute dtype; they agree to
compute-dtype rounding (tested on the GPU).  ``"xla"`` forces the einsum path; ``"cudnn"`` requires the fused
kernel (``ConfigError`` where it does not exist).

Lengths: ``max_len`` is the longest world sequence the model reads; the model has ``max_len + 1``
positions so that one prepended token (MASK, or a prompt slot) always fits.  With learned positions, a
position the model was never trained at keeps its initial (random) embedding, and a law read there measures
that row, not the model: the trainer's inputs have ``seq_len`` ≤ ``max_len`` positions, so position
``seq_len`` and beyond are untrained — read by ``appended_token_logprobs`` and ``prepended_mask_logprobs`` on
sequences of ``seq_len`` tokens (their input is one longer).  Train at the length the laws will be read at
plus one, as the experiments do (:mod:`simlm.experiments.head_prompt`).  ``n_prompt_slots`` reserves input
ids V + 2 … for prompt tokens (their embeddings count in ``n_params``); nothing in simlm feeds them — prompt
tuning passes a continuous ``prefix`` — and they take none of ``max_len``'s positions beyond the check that
``max_len`` ≥ ``n_prompt_slots`` + 1.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from simlm.errors import ConfigError, ShapeError, TokenError, UntrainedPositionWarning
from simlm.models.base import ExplainsAbsentLaws
from simlm.checks import (as_key, check_memory, check_positions, check_positive_int, check_real_array, check_tokens,
                          checked_fields)

_POSITIONS = ("learned", "rotary")
_DTYPES = ("float32", "bfloat16", "float16")
_ATTENTION = ("auto", "xla", "cudnn")


@checked_fields
@dataclass(frozen=True)
class TransformerConfig:
    """Plain-value configuration, validated on construction (``ConfigError`` naming the field).

    ``d_ff=None`` means ``4 · d_model`` and is resolved here, so ``config.d_ff`` is always an int — and
    ``dataclasses.replace(config, d_model=…)`` keeps the old width: pass ``d_ff=None`` again for 4 · d_model."""

    n_symbols: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    max_len: int = 128
    causal: bool = True
    positions: str = "learned"
    tie_embeddings: bool = False
    n_prompt_slots: int = 0
    dtype: str = "float32"
    attention: str = "auto"
    residual_dtype: str | None = None

    def __post_init__(self):
        def fix(name, value):  # frozen: store the normalised (plain int) value
            object.__setattr__(self, name, value)

        for name in ("n_symbols", "d_model", "n_layers", "n_heads", "max_len"):
            fix(name, check_positive_int(name, getattr(self, name)))
        fix("d_ff", 4 * self.d_model if self.d_ff is None else check_positive_int("d_ff", self.d_ff))
        fix("n_prompt_slots", check_positive_int("n_prompt_slots", self.n_prompt_slots, minimum=0))
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model: {self.d_model} is not divisible by n_heads = {self.n_heads}")
        if not isinstance(self.positions, str) or self.positions not in _POSITIONS:
            raise ConfigError(f"positions: expected one of {_POSITIONS}, got {self.positions!r}")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ConfigError(f"n_heads: rotary positions need an even head size d_model / n_heads, "
                              f"got {self.d_model} / {self.n_heads} = {self.head_dim}")
        if self.max_len < self.n_prompt_slots + 1:
            raise ConfigError(f"max_len: {self.max_len} is too small to hold the {self.n_prompt_slots} "
                              "prompt slots and at least one token")
        for name in ("causal", "tie_embeddings"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name}: expected True or False, got {getattr(self, name)!r}")
            fix(name, bool(getattr(self, name)))
        if not isinstance(self.dtype, str) or self.dtype not in _DTYPES:
            raise ConfigError(f"dtype: expected one of {_DTYPES}, got {self.dtype!r}")
        if self.residual_dtype not in (None, self.dtype, "float32"):
            raise ConfigError(f"residual_dtype: expected None, 'float32' or the compute dtype {self.dtype!r}, "
                              f"got {self.residual_dtype!r}")
        # None: the compute dtype's (stored as None, so that replace(config, dtype=…) keeps following it and a
        # default config serialises, hashes and compares as before the field existed)
        fix("residual_dtype", None if self.residual_dtype == self.dtype else self.residual_dtype)
        if not isinstance(self.attention, str) or self.attention not in _ATTENTION:
            raise ConfigError(f"attention: expected one of {_ATTENTION}, got {self.attention!r}")
        problem = _cudnn_config_problem(self) if self.attention == "cudnn" else None
        if problem:
            raise ConfigError(f"attention: 'cudnn' (fused attention) cannot run this config: {problem}")

    # ---- derived sizes and special ids ------------------------------------------------------------
    @property
    def mask_id(self) -> int:
        return self.n_symbols

    @property
    def pad_id(self) -> int:
        return self.n_symbols + 1

    @property
    def bos_id(self) -> int:
        """The beginning-of-sequence token of the causal shift; it is ``pad_id``."""
        return self.pad_id

    @property
    def prompt_ids(self) -> tuple[int, ...]:
        return tuple(range(self.n_symbols + 2, self.n_symbols + 2 + self.n_prompt_slots))

    @property
    def vocab_size(self) -> int:
        """Size of the input vocabulary V + 2 + n_prompt_slots."""
        return self.n_symbols + 2 + self.n_prompt_slots

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_positions(self) -> int:
        """Longest input the network reads, prefix and prepended token included: max_len + 1."""
        return self.max_len + 1

    def n_params(self) -> int:
        """The exact number of trainable scalars of :class:`Transformer` under this config."""
        d, f = self.d_model, self.d_ff
        block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
        return (self.vocab_size * d + (self.n_positions * d if self.positions == "learned" else 0)
                + self.n_layers * block + 2 * d + (0 if self.tie_embeddings else d * self.n_symbols))

    @property
    def stream_dtype(self) -> str:
        """The residual stream's dtype: ``residual_dtype``, or the compute dtype where it is None."""
        return self.residual_dtype or self.dtype

    def to_dict(self) -> dict:
        """The fields as plain values; ``residual_dtype`` only where it is set (a default config's dict, hence
        its run directories' headers and names, are those of a config written before the field existed)."""
        d = dataclasses.asdict(self)
        if d["residual_dtype"] is None:
            del d["residual_dtype"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a dict of TransformerConfig fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config: unknown TransformerConfig field(s) {unknown}; known: {sorted(known)}")
        if "n_symbols" not in d:
            raise ConfigError("n_symbols: missing from the TransformerConfig dict")
        return cls(**d)


# ---- the network -----------------------------------------------------------------------------------

def attention_kernel(config: TransformerConfig) -> str:
    """``"cudnn"`` or ``"xla"``: the kernel the full-sequence attention of ``config`` runs on the default device
    (see the module's "Attention kernel"); ``ConfigError`` for ``attention="cudnn"`` where it cannot run."""
    if config.attention == "xla":
        return "xla"
    why_not = _why_no_cudnn(config)
    if config.attention == "cudnn" and why_not:
        raise ConfigError(f"attention: 'cudnn' (fused attention) cannot run here: {why_not}; use 'auto' or 'xla'")
    return "xla" if why_not else "cudnn"


def _why_no_cudnn(config: TransformerConfig) -> str | None:
    problem = _cudnn_config_problem(config)
    if problem:
        return problem
    device = jax.devices()[0]
    if device.platform != "gpu" or "nvidia" not in device.device_kind.lower():
        return f"the default device is {device.device_kind} ({device.platform}), not an NVIDIA GPU"
    capability = getattr(device, "compute_capability", "0")
    if float(capability) < 8:
        return f"the GPU's compute capability is {capability} < 8"
    return None


def _cudnn_config_problem(config) -> str | None:
    """What in the config itself keeps the fused kernel out, on any device (None: nothing)."""
    if config.dtype == "float32":
        return "it computes in bfloat16 or float16, and dtype is float32"
    if config.head_dim % 8 or config.head_dim > 128:
        return f"the head size d_model / n_heads = {config.head_dim} is not a multiple of 8 up to 128"
    return None


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding (Su et al. 2021, "rotate half" form) of x ``(n, T, H, dh)`` at
    ``positions`` ``(T,)``, or ``(n, T)`` for a position per row.

    Coordinate pairs (j, j + dh/2) at position t are rotated by the angle t · 10000^(−2j/dh), so
    ⟨R_s q, R_t k⟩ depends on positions only through s − t."""
    half = x.shape[-1] // 2
    freqs = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None] * freqs  # (…, T, dh/2)
    cos, sin = jnp.cos(angles)[..., None, :], jnp.sin(angles)[..., None, :]  # (…, T, 1, dh/2): over heads
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def gelu(x: jax.Array) -> jax.Array:
    """The exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)) (Hendrycks & Gimpel 2016), as ``jax.nn.gelu(x,
    approximate=False)`` computes it, up to float rounding.

    Derived here, for speed: the derivative Φ(x) + x·φ(x) is given as a custom JVP that reuses the forward
    pass's Φ(x) and needs one exp for φ(x) = e^(−x²/2)/√(2π), where differentiating XLA's erfc expansion
    would cost several; on CPU this takes about a third off the MLP's elementwise work."""
    return _gelu(x)


@jax.custom_jvp
def _gelu(x):
    return x * _normal_cdf(x)


@_gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    cdf = _normal_cdf(x)
    pdf = jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return x * cdf, (cdf + x * pdf) * dx


def _normal_cdf(x):
    return 0.5 * (1 + jax.lax.erf(x * (1 / math.sqrt(2))))


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float = 1e-6) -> jax.Array:
    """LayerNorm over the last axis (Ba et al. 2016): x̂ = (x − μ) / √(σ² + ε), y = x̂ ⊙ scale + bias, with
    μ, σ² the mean and variance of x's last axis, computed in at least float32 and cast back to x's dtype.

    Derived here, for speed: the backward pass is the closed form (a custom VJP), with g = ∂y ⊙ scale,
        ∂x = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / √(σ² + ε),
    two reductions over d instead of the several that differentiating the forward pass produces;
    ∂scale = Σ ∂y ⊙ x̂ and ∂bias = Σ ∂y over every axis but the last."""
    return _layer_norm(x, scale, bias, epsilon)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, epsilon):
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    centred = x32 - x32.mean(-1, keepdims=True)
    inv_std = jax.lax.rsqrt((centred * centred).mean(-1, keepdims=True) + epsilon)
    normed = centred * inv_std
    y = (normed * scale.astype(x32.dtype) + bias.astype(x32.dtype)).astype(x.dtype)
    return y, (normed, inv_std, scale, bias)


def _layer_norm_bwd(epsilon, residuals, dy):
    normed, inv_std, scale, bias = residuals
    x_dtype, dy = dy.dtype, dy.astype(normed.dtype)  # y, hence dy, has x's dtype
    g = dy * scale.astype(normed.dtype)
    dx = inv_std * (g - g.mean(-1, keepdims=True) - normed * (g * normed).mean(-1, keepdims=True))
    batch_axes = tuple(range(dy.ndim - 1))
    return (dx.astype(x_dtype), (dy * normed).sum(batch_axes).astype(scale.dtype), dy.sum(batch_axes).astype(bias.dtype))


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


#: on an accelerator, tables of up to this many rows get :func:`embed`'s gradient as a one-hot matmul
ONE_HOT_GRAD_ROWS = 1024
_GRADIENTS = ("auto", "matmul", "scatter")


def embed(table: jax.Array, ids: jax.Array, dtype, *, gradient: str = "auto") -> jax.Array:
    """``table[ids]`` in ``dtype``, ``(*ids.shape, d)`` (``jnp.take``), with its gradient with respect to the
    table computed one of two ways (the same sum, in another order):

    - ``"matmul"``: one_hot(ids)ᵀ · g, in float32 at full precision;
    - ``"scatter"``: autodiff's scatter-add of g (in ``dtype``) into the table's rows, in the table's dtype
      (float32: the cotangent is cast to it first);
    - ``"auto"`` (the default): the matmul on an accelerator for a table of at most
      :data:`ONE_HOT_GRAD_ROWS` rows, the scatter otherwise.

    Why: a world's vocabulary is small, so on a GPU the scatter's writes collide — a 64 × 512 batch adds 32768
    rows of g into 66 — and on an H200 that scatter took 4.3 of the 16.7 ms of a 19M-parameter bfloat16
    training step; with the lookup as a one-hot matmul (whose gradient is this one) the step took 12.6 ms.  On
    a CPU both take the same time (within noise), and the scatter is kept there because a float32 sum in
    another order changes a trained model: experiment 1's trained cells moved by up to 0.04 in accuracy
    (and its final ε in the second digit) when the matmul was used on the CPU, so a CPU keeps its
    trajectories bit for bit."""
    if gradient not in _GRADIENTS:
        raise ConfigError(f"gradient: expected one of {_GRADIENTS}, got {gradient!r}")
    if gradient == "auto":
        small = table.shape[0] <= ONE_HOT_GRAD_ROWS
        gradient = "matmul" if small and jax.default_backend() != "cpu" else "scatter"
    if gradient == "scatter":
        return _lookup(table, ids, dtype)
    return _embed(table, ids, jnp.dtype(dtype), table.shape[0], table.dtype)


def _lookup(table, ids, dtype):
    return jnp.take(table, ids, axis=0).astype(dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _embed(table, ids, dtype, rows, table_dtype):
    return _lookup(table, ids, dtype)


def _embed_fwd(table, ids, dtype, rows, table_dtype):
    return _lookup(table, ids, dtype), ids


def _embed_bwd(dtype, rows, table_dtype, ids, g):
    # in float32 throughout: a tiny product (rows × positions × d), and XLA:CPU has no bf16 × bf16 → f32 dot
    one_hot = jax.nn.one_hot(ids, rows, dtype=jnp.float32)
    grad = jnp.einsum("...v,...d->vd", one_hot, g.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    return grad.astype(table_dtype), None


_embed.defvjp(_embed_fwd, _embed_bwd)


class Embed(nnx.Embed):
    """``nnx.Embed`` (same parameter ``embedding``) looked up by :func:`embed`: its values; on an accelerator a
    gradient by matmul."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if out_sharding is not None or self.num_embeddings == 1 or not jnp.issubdtype(inputs.dtype, jnp.integer):
            return super().__call__(inputs, out_sharding)
        table = self.embedding[...]
        return embed(table, inputs, self.dtype or table.dtype)


class LayerNorm(nnx.LayerNorm):
    """``nnx.LayerNorm`` (same parameters ``scale``, ``bias``, same ε = 1e-6) computed by :func:`layer_norm`."""

    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        if args or kwargs or self.scale is None or self.bias is None:
            return super().__call__(x, *args, **kwargs)
        return layer_norm(x, self.scale[...], self.bias[...], self.epsilon).astype(self.dtype or x.dtype)


def rows_product(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x (..., d) @ w (d, f)`` taken as one ``(rows, d) @ (d, f)`` matrix product: the same sums as the
    batched product (to float rounding), but XLA:CPU differentiates a product over ``(n, T, d)`` into a weight
    gradient contracted over two axes, and ran the step's products in that form 1.6× as long (2-core Xeon,
    2026-12-06, with :func:`~simlm.train.trainer.over_seeds`: ``train.py``'s small and medium steps 15–19 %
    faster, experiment 1's 3-seed step 20 %; docs/benchmarks.md, "flattened products")."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


class Linear(nnx.Linear):
    """``nnx.Linear`` (same parameters ``kernel``, ``bias``) applied to the rows flattened, as
    :func:`rows_product`."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if out_sharding is not None or inputs.ndim <= 2:
            return super().__call__(inputs, out_sharding)
        return super().__call__(inputs.reshape(-1, inputs.shape[-1])).reshape(*inputs.shape[:-1], self.out_features)


class SelfAttention(nnx.Module):
    """Multi-head self-attention: softmax(q kᵀ / √dh + mask) v per head, heads concatenated and mixed.

    The scores q kᵀ / √dh and their softmax are computed in float32 whatever the compute dtype (a float16
    q·k past 65504 would be inf, its softmax NaN); the weights are cast back to it to multiply v."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        c, dt = config, jnp.dtype(config.dtype)
        self.config, self.kernel = c, attention_kernel(c)
        self.qkv = Linear(c.d_model, 3 * c.d_model, dtype=dt, kernel_init=_init(), rngs=rngs)
        self.out = Linear(c.d_model, c.d_model, dtype=dt, kernel_init=_residual_init(c), rngs=rngs)

    def __call__(self, x: jax.Array, positions: jax.Array, query: jax.Array | None = None) -> jax.Array:
        """x ``(n, T, d)``, positions ``(T,)`` → ``(n, T, d)``; with ``query (n,)`` (an index into T per row)
        only that position of each row attends, → ``(n, 1, d)``."""
        n, T, d = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(n, T, 3 * self.config.n_heads, self.config.head_dim), 3, axis=2)
        q_pos = positions if query is None else positions[query][:, None]  # (T,) or (n, 1)
        if query is not None:
            q = jnp.take_along_axis(q, query[:, None, None, None], axis=1)  # (n, 1, H, dh)
        if self.config.positions == "rotary":
            q, k = rotary(q, q_pos), rotary(k, positions)
        if query is None and self.kernel == "cudnn":  # fused: q·k and the softmax in float32 inside the kernel
            out = jax.nn.dot_product_attention(q, k, v, is_causal=self.config.causal, implementation="cudnn")
            return self.out(out.reshape(n, T, d))
        # q·k accumulated and returned in float32 (a float16 product overflows past 65504), then scaled
        scores = jnp.einsum("nqhd,nkhd->nhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores / math.sqrt(self.config.head_dim)
        if self.config.causal:  # a query at position t attends to keys s ≤ t only
            visible = positions[None, :] <= q_pos[..., None]  # (T, T) or (n, 1, T)
            scores = jnp.where(visible if query is None else visible[:, None], scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # (n, H, Tq, T), softmax in float32
        return self.out(jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, q.shape[1], d))


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: h + Attn(LN(h)), then h + MLP(LN(h)) with a GELU MLP."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        c, dt = config, jnp.dtype(config.dtype)
        self.norm1 = LayerNorm(c.d_model, dtype=dt, rngs=rngs)
        self.attn = SelfAttention(c, rngs=rngs)
        self.norm2 = LayerNorm(c.d_model, dtype=dt, rngs=rngs)
        self.up = Linear(c.d_model, c.d_ff, dtype=dt, kernel_init=_init(), rngs=rngs)
        self.down = Linear(c.d_ff, c.d_model, dtype=dt, kernel_init=_residual_init(c), rngs=rngs)

    def __call__(self, h: jax.Array, positions: jax.Array, query: jax.Array | None = None) -> jax.Array:
        """h ``(n, T, d)`` → ``(n, T, d)``; with ``query (n,)`` only that position of each row, ``(n, 1, d)``
        (the attention still reads every position)."""
        out = self.attn(self.norm1(h), positions, query)
        h = h + out if query is None else jnp.take_along_axis(h, query[:, None, None], axis=1) + out
        return h + self.down(gelu(self.up(self.norm2(h))))


class Transformer(nnx.Module):
    """The network: token ids (and optional continuous prefix embeddings) → logits over the V symbols."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, TransformerConfig):
            raise ConfigError(f"config: expected a TransformerConfig, got {type(config).__name__}")
        c, dt = config, jnp.dtype(config.dtype)
        check_memory("config", c.n_params(), itemsize=dt.itemsize,
                     what=f"{c.n_params():,} parameters of {dt.itemsize} bytes: n_symbols, d_model, d_ff, "
                          "n_layers and max_len set the size")
        self.config = c
        rt = jnp.dtype(c.stream_dtype)  # the residual stream starts at the embeddings
        self.token_embed = Embed(c.vocab_size, c.d_model, dtype=rt, embedding_init=_init(), rngs=rngs)
        if c.positions == "learned":
            self.position_embed = Embed(c.n_positions, c.d_model, dtype=rt, embedding_init=_init(), rngs=rngs)
        self.blocks = nnx.List([Block(c, rngs=rngs) for _ in range(c.n_layers)])
        self.final_norm = LayerNorm(c.d_model, dtype=dt, rngs=rngs)
        if not c.tie_embeddings:
            self.output = Linear(c.d_model, c.n_symbols, use_bias=False, dtype=dt, kernel_init=_init(), rngs=rngs)

    @property
    def unembedding(self) -> jax.Array:
        """Φ ``(d, V)``; when tied, the first V rows of the token embedding, transposed."""
        if self.config.tie_embeddings:
            return self.token_embed.embedding[...][: self.config.n_symbols].T
        return self.output.kernel[...]

    def __call__(self, tokens: jax.Array, *, prefix: jax.Array | None = None, return_hidden: bool = False):
        """Logits ``(n, T, V)`` = f ``(n, T, d)`` @ Φ ``(d, V)``, returned in float32 (the product is computed in
        the compute dtype, with Φ cast to it).

        tokens: int ``(n, T)`` input ids in [0, vocab_size).  prefix: optional continuous embeddings
        ``(k, d)`` or ``(n, k, d)`` placed before the token embeddings (prompt tuning); they take
        positions 0..k-1 and get no logits.  With ``return_hidden=True`` also returns the L + 1 hidden
        states ``(n, k + T, d)``: the embedding output, then each block's output (prefix included)."""
        f, hidden = self._run(tokens, prefix)
        logits = rows_product(f, self.unembedding.astype(f.dtype)).astype(jnp.float32)
        return (logits, hidden) if return_hidden else logits

    def features(self, tokens: jax.Array, *, prefix: jax.Array | None = None) -> jax.Array:
        """f(s): the final-LayerNorm output at the token positions, ``(n, T, d)``."""
        return self._run(tokens, prefix)[0]

    def logits_at(self, tokens: jax.Array, at: jax.Array, *, prefix: jax.Array | None = None) -> jax.Array:
        """The logits at one token position per row, ``(n, V)``: row r's at token position ``at[r]`` (an int
        array ``(n,)`` in [0, T); the prefix not counted), equal to ``self(tokens, prefix=prefix)[r, at[r]]``.
        Concrete positions are checked (``ShapeError``); traced ones are the caller's to keep in range."""
        f = self.features_at(tokens, at, prefix=prefix)
        return (f @ self.unembedding.astype(f.dtype)).astype(jnp.float32)

    def features_at(self, tokens: jax.Array, at: jax.Array, *, prefix: jax.Array | None = None) -> jax.Array:
        """f(s) at one token position per row, ``(n, d)``: ``self.features(tokens, prefix=prefix)[r, at[r]]``.

        The last block is run at those positions only (its attention still reads every position) — all that
        a law at one position per row needs (a masked copy's MASK, a prepended MASK), at about half the work
        of a 2-block forward."""
        x, positions, k = self._embed(tokens, prefix)
        n, T = x.shape[0], x.shape[1] - k
        at = at if isinstance(at, jax.core.Tracer) else np.asarray(at)
        if at.shape != (n,) or not jnp.issubdtype(at.dtype, jnp.integer):
            raise ShapeError(f"at: expected integer positions of shape ({n},), got {at.dtype} {at.shape}")
        if isinstance(at, np.ndarray) and at.size and not (0 <= at.min() and at.max() < T):
            raise ShapeError(f"at: expected positions in [0, {T}), got values from {at.min()} to {at.max()}")
        for block in self.blocks[:-1]:
            x = block(x, positions)
        return self.final_norm(self.blocks[-1](x, positions, jnp.asarray(at, jnp.int32) + k))[:, 0]

    def _run(self, tokens, prefix):
        x, positions, k = self._embed(tokens, prefix)
        hidden = [x]
        for block in self.blocks:
            x = block(x, positions)
            hidden.append(x)
        return self.final_norm(x)[:, k:], hidden

    def _embed(self, tokens, prefix):
        """The first hidden state ``(n, k + T, d)`` (prefix and token embeddings, plus learned positions),
        its positions ``(k + T,)`` and the prefix length k; tokens and prefix checked."""
        c = self.config
        if not isinstance(tokens, jax.core.Tracer):  # concrete input: ids checked too (an Embed would clamp them)
            try:
                tokens = np.asarray(tokens)
            except ValueError:
                raise TokenError("tokens: expected integer ids of shape (n, T), got rows of unequal length") from None
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TokenError(f"tokens: expected integer ids of shape (n, T), got {tokens.dtype} {tokens.shape}")
        if isinstance(tokens, np.ndarray):
            tokens, _ = check_tokens(tokens, c.vocab_size)
        tokens = jnp.asarray(tokens)
        x = self.token_embed(tokens)  # (n, T, d)
        k = 0
        if prefix is not None:
            if not isinstance(prefix, jax.core.Tracer):
                prefix = check_real_array("prefix", prefix)
                top, limit = float(np.abs(prefix).max(initial=0.0)), float(jnp.finfo(x.dtype).max)
                if top > limit:  # cast to the stream's dtype it would be inf, and every logit NaN
                    raise ConfigError(f"prefix: entries up to {top:.3g} overflow the model's {jnp.dtype(x.dtype).name} "
                                      f"stream (largest {limit:.3g})")
            prefix = jnp.asarray(prefix, dtype=x.dtype)
            given = prefix.shape  # named in the refusal (not the broadcast shape)
            if prefix.ndim == 2:
                prefix = jnp.broadcast_to(prefix, (x.shape[0], *prefix.shape))
            if prefix.ndim != 3 or prefix.shape[0] != x.shape[0] or prefix.shape[2] != c.d_model:
                raise ShapeError(f"prefix: expected shape (k, {c.d_model}) or ({x.shape[0]}, k, {c.d_model}), "
                                 f"got {given}")
            k = prefix.shape[1]
            x = jnp.concatenate([prefix, x], axis=1)
        if x.shape[1] > c.n_positions:
            raise TokenError(f"tokens: input length {x.shape[1]} (prefix {k} + tokens {tokens.shape[1]}) exceeds "
                             f"the model's max_len + 1 = {c.n_positions} positions")
        positions = jnp.arange(x.shape[1])
        if c.positions == "learned":
            x = x + self.position_embed(positions)
        return x, positions, k


def _init(std: float = 0.02):
    return nnx.initializers.normal(stddev=std)


def _residual_init(c: TransformerConfig):
    # GPT-2: projections into the residual stream scaled by 1/√(2L) so its variance stays O(1) with depth.
    return _init(0.02 / math.sqrt(2 * c.n_layers))


def init_transformer(config: TransformerConfig, seed: int) -> Transformer:
    """A freshly initialised :class:`Transformer`; equal seeds give equal parameters, distinct seeds distinct
    ones.  ``seed`` is an integer in [0, 2**63), turned into a key by :func:`simlm.checks.as_key` (below
    2**32 the key ``nnx.Rngs(seed)`` always made; above it the seed's own, not that of ``seed mod 2**32``);
    a config whose parameters cannot fit in this host's memory is refused."""
    if not isinstance(config, TransformerConfig):
        raise ConfigError(f"config: expected a TransformerConfig, got {type(config).__name__}")
    seed = check_positive_int("seed", seed, minimum=0)
    return Transformer(config, rngs=nnx.Rngs(as_key(seed, "seed")))


# ---- language-model conventions as pure functions (jit/grad friendly; no host-side checks) ---------

def causal_inputs(tokens: jax.Array, config: TransformerConfig) -> jax.Array:
    """``(BOS, x_0, …, x_{T-2})`` ``(n, T)``: the input whose output row t predicts x_t."""
    bos = jnp.full((tokens.shape[0], 1), config.bos_id, dtype=tokens.dtype)
    return jnp.concatenate([bos, tokens[:, :-1]], axis=1)


def require_kind(model: Transformer, causal: bool, what: str) -> None:
    """ConfigError unless ``model`` is causal (``causal``) or bidirectional: a causal law read from a
    bidirectional model lets row t see the tokens it predicts, a masked law from a causal one sees only the
    left context — numbers either way, wrong ones.  The config is static: checked at trace time, free."""
    if model.config.causal != causal:
        raise ConfigError(f"model: {what} needs a {'causal' if causal else 'bidirectional (causal=False)'} model; "
                          f"this one has causal = {model.config.causal}")


def next_token_logprobs(model: Transformer, tokens: jax.Array) -> jax.Array:
    """log p(x_t = · | x_<t) ``(n, T, V)``; row 0 is the law of the first token.  Like every pure function
    here it takes up to max_len + 1 tokens (the position kept for a prepended or appended token, which
    :func:`appended_token_logprobs` reads): the wrappers refuse more than max_len world tokens."""
    require_kind(model, True, "next_token_logprobs")
    return jax.nn.log_softmax(model(causal_inputs(tokens, model.config)), axis=-1)


def appended_token_logprobs(model: Transformer, tokens: jax.Array) -> jax.Array:
    """log p(x_T = · | x_0 … x_{T-1}) ``(n, V)``: the law read at the last position of
    ``(BOS, x_0, …, x_{T-1})`` — row T of the causal law of x extended by one token, which that law never
    reads (the causal input drops the last token)."""
    return next_token_logprobs(model, _extended(tokens))[:, -1]


def _extended(tokens: jax.Array) -> jax.Array:
    """x followed by one placeholder token (id 0) ``(n, T + 1)``."""
    return jnp.concatenate([tokens, jnp.zeros((tokens.shape[0], 1), tokens.dtype)], axis=1)


def masked_token_logprobs(model: Transformer, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    """log p(x_i = · | x_-i) ``(n, P, V)``: one forward per position i, with x_i replaced by MASK."""
    require_kind(model, False, "masked_token_logprobs")
    (n, T), P = tokens.shape, positions.shape[0]
    inputs = jnp.broadcast_to(tokens[:, None, :], (n, P, T)).at[:, jnp.arange(P), positions].set(model.config.mask_id)
    logits = model.logits_at(inputs.reshape(n * P, T), jnp.tile(positions, n)).reshape(n, P, -1)
    return jax.nn.log_softmax(logits, axis=-1)


def prepended_mask_inputs(tokens: jax.Array, config: TransformerConfig) -> jax.Array:
    """``(MASK, x_0, …, x_{T-1})`` ``(n, T + 1)``."""
    mask = jnp.full((tokens.shape[0], 1), config.mask_id, dtype=tokens.dtype)
    return jnp.concatenate([mask, tokens], axis=1)


def prepended_mask_logprobs(model: Transformer, tokens: jax.Array) -> jax.Array:
    """Law of a MASK prepended before x_0, given all of x: ``(n, V)``."""
    require_kind(model, False, "prepended_mask_logprobs")
    at = jnp.zeros(tokens.shape[0], jnp.int32)
    return jax.nn.log_softmax(model.logits_at(prepended_mask_inputs(tokens, model.config), at), axis=-1)


# ---- the LanguageModel wrappers: one class per kind ---------------------------------------------------

def _model_inputs(m: Transformer, x):
    """The input the model's own law reads: ``(BOS, x_0 … x_{T-2})`` when causal, x when masked."""
    return causal_inputs(x, m.config) if m.config.causal else x


def _model_features(m: Transformer, x):
    return m.features(_model_inputs(m, x))


def _model_hidden(m: Transformer, x):
    return m(_model_inputs(m, x), return_hidden=True)[1]


def _prepended_mask_features(m: Transformer, x):
    return m.features_at(prepended_mask_inputs(x, m.config), jnp.zeros(x.shape[0], jnp.int32))


@lru_cache(maxsize=512)
def _compiled(graphdef, fn):
    """``jax.jit`` of ``fn(nnx.merge(graphdef, state), *args)`` over ``(state, *args)``, one per (graph, fn).

    Graph definitions of equal configs compare equal, so every wrapper of a model of the same shape (each
    checkpoint of a training ladder, each seed) shares one compiled function per input shape instead of
    compiling its own; ``fn`` is a module-level function, never a fresh lambda."""
    return jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args))


class TransformerLM(ExplainsAbsentLaws):
    """A :class:`Transformer` as a language model.  ``TransformerLM(model)`` is a
    :class:`CausalTransformerLM` (a ``LanguageModel`` and ``SoftmaxLanguageModel``) for a causal model
    and a :class:`MaskedTransformerLM` (a ``MaskedLanguageModel``) for a bidirectional one; each has the
    methods of its own laws only (one of the other kind raises :class:`~simlm.models.base.NoSuchLawError`
    naming what to use).

    It holds a snapshot ``(graphdef, state) = nnx.split(model)`` taken at construction — wrap the model
    again after training it — and answers through ``jax.jit`` over pure functions of the state.  Inputs
    are validated on the host first: tokens ``(n, T)`` (or ``(T,)``, answered without the batch axis)
    with ids in [0, V) and T ≤ max_len.  Features and hidden states are those of the input the model's
    own law reads: ``(BOS, x_0 … x_{T-2})`` when causal, x unchanged when masked.

    ``trained_length``: the input length the model was trained on (the trainer's ``seq_len``; set on the
    LMs :func:`simlm.train.train` returns and loads); a law whose input is longer (with learned positions)
    warns :class:`~simlm.errors.UntrainedPositionWarning` once per length (module docstring, "Lengths")."""

    _causal: bool | None = None  # the kind a subclass wraps

    def __new__(cls, model=None, *args, **kwargs):
        if cls is TransformerLM and isinstance(model, Transformer):
            cls = CausalTransformerLM if model.config.causal else MaskedTransformerLM
        return super().__new__(cls)

    def __init__(self, model: Transformer, *, trained_length: int | None = None):
        if not isinstance(model, Transformer):
            raise ConfigError(f"model: expected a Transformer, got {type(model).__name__}")
        if model.config.causal != self._causal:
            kind = {True: "causal", False: "bidirectional"}
            raise ConfigError(f"model: a {type(self).__name__} wraps a {kind[self._causal]} model, this one is "
                              f"{kind[model.config.causal]}; TransformerLM(model) picks the wrapper of its kind")
        # a copy: nnx.split's state shares the model's Variables, so training the model in place afterwards
        # (nnx.Optimizer.update) would move this snapshot's laws, but not its unembedding array
        self.graphdef, self.state = nnx.split(nnx.clone(model))
        self._config = model.config
        self._unembedding = model.unembedding
        self._features = self._pure(_model_features)
        self._hidden = self._pure(_model_hidden)
        self.trained_length = None if trained_length is None else check_positive_int("trained_length", trained_length)
        self._warned_lengths: set = set()

    def _pure(self, fn):
        """``fn(model, *args)`` compiled as a function of the state, shared by every wrapper of an equal graph."""
        return _compiled(self.graphdef, fn)

    def __repr__(self):
        return f"{type(self).__name__}({self._config})"

    @property
    def config(self) -> TransformerConfig:
        return self._config

    @property
    def n_symbols(self) -> int:
        return self._config.n_symbols

    @property
    def model(self) -> Transformer:
        """A Transformer module rebuilt from the snapshot, a copy of its own (changing it leaves this LM as it is)."""
        return nnx.clone(nnx.merge(self.graphdef, self.state))

    @property
    def unembedding(self) -> jax.Array:
        """Φ ``(d, V)``."""
        return self._unembedding

    def features(self, tokens) -> jax.Array:
        """f(s) ``(n, T, d)``, in the compute dtype, at each position of the input the model's law reads
        (causal models: log_softmax(f @ Φ) = next_token_logprobs exactly in float32, up to compute-dtype
        rounding in bfloat16 / float16)."""
        toks, single = self._check(tokens, "features")
        return _unbatch(self._features(self.state, toks), single)

    def hidden_states(self, tokens) -> list[jax.Array]:
        """The L + 1 residual-stream states ``(n, T, d)``: embeddings, then each block's output."""
        toks, single = self._check(tokens, "hidden_states")
        return [_unbatch(h, single) for h in self._hidden(self.state, toks)]

    def _warn_untrained(self, length: int, what: str, stacklevel: int = 3) -> None:
        """:class:`~simlm.errors.UntrainedPositionWarning`, once per ``length``, where ``what`` reads inputs of
        ``length`` positions and this model, with learned positions, was trained on fewer."""
        if self._config.positions == "learned" and self.trained_length is not None \
                and length > self.trained_length and length not in self._warned_lengths:
            self._warned_lengths.add(length)
            warnings.warn(UntrainedPositionWarning(
                f"{what} reads inputs of {length} positions, and this model was trained on "
                f"{self.trained_length}: "
                + (f"position {length - 1} keeps its" if length == self.trained_length + 1 else
                   f"positions {self.trained_length}–{length - 1} keep their")
                + f" initial random embedding, so the law there is not the trained model's (train with seq_len ≥ "
                f"{length})"), stacklevel=stacklevel)

    def _check(self, tokens, method: str, positions=None):
        c = self._config
        if isinstance(tokens, jax.core.Tracer):
            raise TokenError("tokens: TransformerLM validates its input on the host and cannot be traced; inside "
                             "jax transformations call the pure functions of simlm.models.transformer instead")
        toks, single = check_tokens(tokens, c.n_symbols)
        n, T = toks.shape
        if T > c.max_len:
            raise TokenError(f"tokens: length {T} exceeds max_len = {c.max_len} of this model")
        length = T + (method in _ONE_LONGER)  # the model's input: (BOS, x) or (MASK, x) for these
        self._warn_untrained(length, f"{method} on sequences of {T} tokens", stacklevel=4)
        masked = method == "masked_token_logprobs"  # one forward pass per masked position asked for
        rows = n * len(check_positions(positions, T)) if masked else n
        check_memory("tokens", rows * (T + 1) * (4 * c.d_model + c.d_ff + c.n_symbols + c.n_heads * (T + 1)),
                     what=f"the activations of a forward pass over {rows} inputs of length {T}")
        return jnp.asarray(toks), single


#: the TransformerLM methods whose input is one position longer than the tokens they are given
_ONE_LONGER = ("appended_token_logprobs", "prepended_mask_logprobs", "prepended_mask_features")

_USE_CAUSAL = "this TransformerLM wraps a causal model; use next_token_logprobs / appended_token_logprobs"
_USE_MASKED = ("this TransformerLM wraps a bidirectional (causal=False) model; use masked_token_logprobs / "
               "prepended_mask_logprobs")


class CausalTransformerLM(TransformerLM):
    """A causal :class:`Transformer` as a ``LanguageModel`` and ``SoftmaxLanguageModel``."""

    _causal = True
    absent_laws = {name: _USE_CAUSAL
                   for name in ("masked_token_logprobs", "prepended_mask_logprobs", "prepended_mask_features")}

    def __init__(self, model: Transformer, *, trained_length: int | None = None):
        super().__init__(model, trained_length=trained_length)
        self._next = self._pure(next_token_logprobs)

    def next_token_logprobs(self, tokens) -> jax.Array:
        """Row t is log p(x_t = · | x_<t), ``(n, T, V)``; row 0 the first token's law."""
        toks, single = self._check(tokens, "next_token_logprobs")
        return _unbatch(self._next(self.state, toks), single)

    def appended_token_logprobs(self, tokens) -> jax.Array:
        """log p(x_T = · | x_0 … x_{T-1}) ``(n, V)``: the law of a token appended after the last."""
        toks, single = self._check(tokens, "appended_token_logprobs")
        # the compiled causal law on x extended by one token, of which row T is read (appended_token_logprobs)
        return _unbatch(self._next(self.state, _extended(toks))[:, -1], single)


class MaskedTransformerLM(TransformerLM):
    """A bidirectional :class:`Transformer` as a ``MaskedLanguageModel``."""

    _causal = False
    absent_laws = {name: _USE_MASKED for name in ("next_token_logprobs", "appended_token_logprobs")}

    def __init__(self, model: Transformer, *, trained_length: int | None = None):
        super().__init__(model, trained_length=trained_length)
        self._masked = self._pure(masked_token_logprobs)
        self._prepended = self._pure(prepended_mask_logprobs)
        self._prepended_features = self._pure(_prepended_mask_features)

    def masked_token_logprobs(self, tokens, positions=None) -> jax.Array:
        """log p(x_i = · | x_-i) at ``positions`` (default all), ``(n, P, V)``."""
        toks, single = self._check(tokens, "masked_token_logprobs", positions)
        pos = jnp.asarray(check_positions(positions, toks.shape[1]))
        return _unbatch(self._masked(self.state, toks, pos), single)

    def prepended_mask_logprobs(self, tokens) -> jax.Array:
        """The law of a MASK prepended before x_0, ``(n, V)``."""
        toks, single = self._check(tokens, "prepended_mask_logprobs")
        return _unbatch(self._prepended(self.state, toks), single)

    def prepended_mask_features(self, tokens) -> jax.Array:
        """f at the prepended MASK ``(n, d)``, in the compute dtype; log_softmax(f @ Φ) = prepended_mask_logprobs
        exactly in float32, up to compute-dtype rounding in bfloat16 / float16."""
        toks, single = self._check(tokens, "prepended_mask_features")
        return _unbatch(self._prepended_features(self.state, toks), single)


def _unbatch(x, single: bool):
    return x[0] if single else x
