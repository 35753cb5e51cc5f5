"""Training objectives as pure functions of a model and a batch (jit/grad friendly).

Each objective takes ``(model, tokens (n, T), key)`` and returns the mean loss per counted position
(nats/token for the likelihood objectives).  Padding never occurs in simlm's fixed-length streams, but
``mask (n, T)`` (booleans, True = the position counts; of the tokens' shape) is honoured where given: a
masked-out position adds no loss term, whatever its token (a ``pad_id`` beyond the vocabulary too).  It is
no attention mask: its token is still read as context by the positions that count (the later ones in a
causal model, all of them in a masked LM), so padding there changes their losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import as_tuple, check_finite
from simlm.errors import ConfigError, ShapeError, TokenError
from simlm.models import finite
from simlm.models.transformer import causal_inputs, next_token_logprobs, require_kind


def _mask(mask):
    """``mask`` as booleans (True = the position counts), or None; a float mask is refused (ConfigError, at
    trace time): it is no set of positions, and its weights were read as counts."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.integer)):
        raise ConfigError(f"mask: expected booleans (True = the position counts), got dtype {mask.dtype}")
    return mask != 0


def _masked_mean(values, mask):
    """The mean of ``values`` over the positions ``mask`` keeps (a value at a padded position, NaN or not,
    is dropped, not multiplied by 0)."""
    if mask is None:
        return values.mean()
    return jnp.where(mask, values, 0.0).sum() / jnp.maximum(mask.sum(), 1)


def _check_targets(tokens, mask, n_symbols: int) -> None:
    """Outside a trace, a :class:`TokenError` for a position that counts (``mask`` True, or every position
    without one) whose token is no symbol id in [0, V): :func:`_observed` would read it as symbol 0 — a MASK or
    pad id passed as a target, or any id at a masked-LM position (replaced by MASK before the model's own check;
    a review, 2026-12-06).  Under jit nothing is checked (the trainer feeds the world's samples) but the
    shapes: a batch with no position (T = 0) is refused, as is, outside a trace, a ``mask`` that counts no
    position — their mean loss is no number (it read NaN, or 0.0 under a mask) — and, always, a ``mask`` not
    of the tokens' shape (:class:`ShapeError`)."""
    if 0 in np.shape(tokens):
        raise TokenError(f"tokens: expected at least one position in each of at least one sequence, got shape "
                         f"{tuple(np.shape(tokens))} (the mean loss over no position is no number)")
    if mask is not None and np.shape(mask) != np.shape(tokens):  # static: checked under jit too
        # broadcast, a (T,) or (n, 1) mask kept its positions in every row but counted them once (a loss n or
        # T times too large)
        raise ShapeError(f"mask: expected the tokens' shape {tuple(np.shape(tokens))}, got {tuple(np.shape(mask))}")
    if any(isinstance(a, jax.core.Tracer) for a in (tokens, mask)):
        return
    if mask is not None and not np.asarray(mask).any():
        raise ConfigError("mask: no position counts (all False): the mean loss over no position is no number")
    x = np.asarray(tokens)
    bad = (x < 0) | (x >= n_symbols)
    if mask is not None:
        bad &= np.asarray(mask, bool)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise TokenError(f"tokens: the target at {where} is {int(x[where])}, not a symbol id in [0, {n_symbols}) "
                         "(a position that counts; mask it out with mask=...)")


def _observed(logp, tokens):
    """``logp`` at each position's token ``(n, T)``; a padding id beyond the vocabulary (``pad_id``) reads
    row 0 instead of NaN (its position is masked out)."""
    safe = jnp.where((tokens >= 0) & (tokens < logp.shape[-1]), tokens, 0)
    return jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]


def cross_entropy(model, tokens, key=None, mask=None):
    """Causal LM loss −(1/nT) Σ log p_θ(x_t | x_<t)."""
    mask = _mask(mask)
    _check_targets(tokens, mask, model.config.n_symbols)
    return _masked_mean(-_observed(next_token_logprobs(model, tokens), tokens), mask)


def masked_lm(model, tokens, key, mask=None, *, mask_rate=0.15, corruption=(0.8, 0.1, 0.1)):
    """Masked-LM loss (BERT): each position is chosen with probability ``mask_rate``; a chosen input is
    replaced by MASK, by a uniformly random symbol, or kept, with probabilities ``corruption``; the loss
    is −log p_θ(x_i | corrupted input) averaged over chosen positions."""
    require_kind(model, False, "masked_lm")
    c, mask = model.config, _mask(mask)
    if isinstance(key, (bool, int, np.integer)):  # jax.random.split(0) is a raw TypeError about "key data"
        raise ConfigError(f"key: expected a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__} {key!r}")
    if not any(isinstance(a, jax.core.Tracer) for a in (mask_rate, corruption)):
        check_masking(mask_rate, corruption)
    _check_targets(tokens, mask, c.n_symbols)  # on the ids as given: an int64 2**32 + 1 would wrap to 1 in int32
    tokens = jnp.asarray(tokens)
    k_choose, k_how, k_rand = jax.random.split(key, 3)
    chosen = jax.random.uniform(k_choose, tokens.shape) < mask_rate
    if mask is not None:
        chosen = chosen & mask
    if not isinstance(chosen, jax.core.Tracer) and not bool(chosen.any()):  # (under jit: loss 0, gradient 0)
        raise ConfigError(f"mask_rate: the draw chose no position to predict ({mask_rate:g} of "
                          f"{int(np.size(tokens) if mask is None else np.asarray(mask).sum())} positions that count); "
                          "the mean loss over none is no number (it read 0.0): draw again with another key, or raise "
                          "mask_rate")
    how = jax.random.choice(k_how, 3, tokens.shape, p=jnp.asarray(corruption))
    random_tokens = jax.random.randint(k_rand, tokens.shape, 0, c.n_symbols, dtype=tokens.dtype)
    inputs = jnp.where(chosen & (how == 0), c.mask_id, tokens)
    inputs = jnp.where(chosen & (how == 1), random_tokens, inputs)
    return _masked_mean(-_observed(jax.nn.log_softmax(model(inputs), axis=-1), tokens), chosen)


def check_masking(mask_rate, corruption) -> tuple[float, tuple]:
    """``(mask_rate, corruption)`` as a float in (0, 1] and three floats, the probabilities of (MASK, a random
    symbol, the token kept) summing to 1, or a :class:`ConfigError` naming the one that is not: the one rule of the
    trainer's config and of a direct call to :func:`masked_lm` (which checked nothing: corruption (2, 1, 1) read as
    (½, ¼, ¼), (1.2, −0.1, −0.1) and NaN gave a finite loss, and a pair a JAX shape error)."""
    rate = check_finite("mask_rate", mask_rate, "a rate in (0, 1]")
    if not 0 < rate <= 1:
        raise ConfigError(f"mask_rate: expected a rate in (0, 1], got {mask_rate!r}")
    what = "three probabilities (mask, random, keep) summing to 1"
    c = [check_finite("corruption", v, what) for v in as_tuple("corruption", corruption)]
    if len(c) != 3 or min(c) < 0 or abs(sum(c) - 1) > 1e-6:
        raise ConfigError(f"corruption: expected {what}, got {corruption!r}")
    return rate, tuple(c)


def quad(model, tokens, key=None, mask=None):
    """The Quad objective of Saunshi, Malladi & Arora (2021), per position:

        ℓ_quad(f, s, w) = −⟨f(s), φ_w⟩ + ½‖Φᵀ f(s)‖²,

    with w the observed next token.  In expectation over w ~ p*(·|s) it is −⟨f, Φ p*_s⟩ + ½‖Φᵀf‖²,
    minimised by f*(s) = (ΦΦᵀ)⁺Φ p*_s (unique up to the null space of Φᵀ: ΦΦᵀ is singular when d > V) with
    excess ½‖Φᵀ(f − f*)‖², the same for every minimiser (see :mod:`simlm.models.finite`)."""
    require_kind(model, True, "quad")
    mask = _mask(mask)
    _check_targets(tokens, mask, model.config.n_symbols)
    f = model.features(causal_inputs(tokens, model.config))  # (n, T, d)
    phi = model.unembedding  # (d, V)
    scores = f @ phi  # (n, T, V) = Φᵀ f
    return _masked_mean(-_observed(scores, tokens) + 0.5 * (scores**2).sum(-1), mask)


def quad_excess(model, tokens, ref_probs):
    """Exact Quad excess per sequence ``(n,)``: mean_t ½‖Φᵀ(f − f*)‖², the one Quad excess of
    :func:`simlm.models.finite.quad_excess` (a sum of squares, never negative) at every position."""
    f = model.features(causal_inputs(tokens, model.config))  # (n, T, d)
    n, T, d = f.shape
    rows = finite.quad_excess(f.reshape(n * T, d), jnp.reshape(ref_probs, (n * T, -1)), model.unembedding)
    return rows.reshape(n, T).mean(-1)


OBJECTIVES = {"cross-entropy": cross_entropy, "masked-lm": masked_lm, "quad": quad}
