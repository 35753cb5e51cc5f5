"""Exact ε: how far a language model is from the world's optimal one, computed over the vocabulary.

For a causal LM p_θ and the world's next-token law p*, on a fixed held-out set of sequences,

    ε = (1/N) Σ_i (1/T_i) Σ_t KL(p*(·|x_<t) ‖ p_θ(·|x_<t)),
    KL(p ‖ q) = Σ_v p_v (log p_v − log q_v)           (nats per token),

computed exactly from the two conditional laws at every position — not estimated from the observed
next tokens.  Its standard error is over sequences: each sequence contributes its mean KL over
positions, and ε ± s.e. is the mean ± standard error of those N numbers.  The total variation
½‖p* − p_θ‖₁ is reported the same way.  The masked analogue replaces the causal laws by the laws of a
masked position given the rest of the sequence, p*(x_i = · | x_−i) and p_θ(x_i = · | x_−i).

Why the exact form: E_{x_t ~ p*}[log p*(x_t|x_<t) − log p_θ(x_t|x_<t)] = KL(p* ‖ p_θ), so the excess
cross-entropy of the model on sampled data is an unbiased but noisy estimate of ε; the exact sum over
the vocabulary removes the noise from the next token (the test suite checks the two agree).

:func:`kl_per_sequence` and :func:`tv_per_sequence` are pure ``jnp`` functions, usable inside
``jax.jit`` (a trainer calls them on precomputed p*); the other functions validate on the host.

What the host-side functions accept as a law (:func:`check_laws`).  Every row the LM returns (and every
row of the world's reference) must be a distribution over the V words: real log-probabilities, no NaN,
no +inf, and probabilities summing to 1 within a tolerance on |log Σ_v p_v| set by the dtype of the law
given (:func:`logsumexp_tol`):

- float32 and float64 (and integers): :data:`LOGSUMEXP_TOL` = 1e-5.  A float32 ``jax.nn.log_softmax``
  row, or the log of a float32 ``softmax`` row, has |log Σ p| ≤ 5.5e-7 measured over random and peaked
  logits at V from 2 to 65536 (the test suite checks the 10× margin), while a row missing 1e-4 of its
  mass (log Σ p = −1e-4) is refused with 10× margin the other way.  float64 gets the same bound, not a
  tighter one: a float64 array often holds a law computed in float32 (an LM's output upcast), whose
  rounding is float32's.  What the bound still lets through unnoticed is a real normalisation error of
  at most 1e-5 nats per row (renormalising a row moves its KL by exactly log Σ p): a thirtieth of the old
  1e-3, but not below the smallest ε the perturbed LMs resolve (a few 1e-6), which therefore relies on
  the LM's rows being normalised to float rounding, as every simlm LM's are.
- float16: :data:`LOGSUMEXP_TOL_16` = 1e-3.  A float16 log-probability ℓ rounds by up to |ℓ|·2⁻¹¹, its
  probability by that much relative, so a float16 row of large |log p| can be off by more (a uniform row of
  64 words: −1.3e-3) and is refused; pass float16 logits upcast to float32 before the log-softmax, as
  simlm's transformers do.
  bfloat16 is refused: its rounding (~1e-2 nats) exceeds the ε being measured.

Otherwise a :class:`~simlm.errors.DistributionError` names the law, the sequence and the position.  Rows
within the tolerance are renormalised before the divergences, so ε measures the law and not its
rounding, and the clamp at 0 in :func:`kl_per_sequence` then only removes float rounding.  An LM that
gives probability 0 (log-prob −inf) to a word the world makes possible has KL(p* ‖ p_θ) = +∞ exactly;
rather than return an infinite ε with no standard error (and ∞ has no strict-JSON form: it would be
written as null), the host functions raise a DistributionError naming the sequence, position and word.
"Possible" is read in log space on all three paths: the world's causal laws are log-probabilities, and
its masked and prepended-mask laws are taken as :func:`~simlm.worlds.base.masked_logprobs_of` /
:func:`~simlm.worlds.base.prepended_logprobs_of` — computed in log space where the world can (a
:class:`~simlm.worlds.LogLinearWorld`, whose laws stay finite below float32's smallest probability,
~1e-38), else the log of its probabilities (the HMM worlds, whose float32 probabilities are the law) —
the very laws :class:`~simlm.models.base.WorldLM` and the perturbed LMs are built from.  A standard error
needs n ≥ 2 sequences, checked before anything is computed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from simlm.errors import (ConfigError, DistributionError, NoSuchLawError, ShapeError, TokenError,
                          ZeroProbabilityError)
from simlm.checks import as_array, check_instance, check_memory, check_positions, check_tokens, mean_and_sem
from simlm.worlds.base import masked_logprobs_of, prepended_logprobs_of

#: the largest |log Σ_v p_v| a row of float32 or float64 log-probabilities may have (see the module docstring).
LOGSUMEXP_TOL = 1e-5
#: the same for float16 rows, whose own rounding is ~1e-3.
LOGSUMEXP_TOL_16 = 1e-3

#: the masked ε asks the LM for at most this many floats of laws at once (n · P_chunk · T · V, the size of a
#: transformer's logits over the P_chunk masked copies of every sequence), so memory stays bounded at any T.
MASKED_CHUNK_FLOATS = 2**24


# ---- pure per-sequence divergences (jit-able) ----------------------------------------------------

def _mean_over_positions(per_position: jax.Array, mask) -> jax.Array:
    """Mean of ``(n, T)`` values over the valid positions of each sequence → ``(n,)``.

    A sequence with no valid position gets NaN (an empty mean), so it cannot be averaged in silently.  A
    ``mask`` not of the values' shape is a :class:`ShapeError` (static: under jit too) — an (n, 1) mask was
    broadcast over the positions but counted once, giving T times the mean (a TV above 1)."""
    if mask is None:
        return per_position.mean(axis=-1)
    if np.shape(mask) != per_position.shape:
        raise ShapeError(f"mask: expected one entry per position, shape {tuple(per_position.shape)}, got "
                         f"{tuple(np.shape(mask))}")
    mask = jnp.asarray(mask, bool)
    total = jnp.where(mask, per_position, 0.0).sum(axis=-1)
    return total / mask.sum(axis=-1)


def kl_per_sequence(ref_logprobs, model_logprobs, mask=None) -> jax.Array:
    """Mean over valid positions of KL(p_ref ‖ p_model) = Σ_v p_ref,v (log p_ref,v − log p_model,v).

    Shapes: ``ref_logprobs``, ``model_logprobs`` ``(n, T, V)`` natural-log probabilities; ``mask``
    ``(n, T)`` (True = position counts) or None for all positions.  Returns ``(n,)`` in nats/token.

    Terms with p_ref,v = 0 contribute 0 (0·log 0 = 0), whatever the model says there, so no NaN
    appears; a model that gives probability 0 where p_ref,v > 0 gives +inf (p_ref,v > 0 read as
    log p_ref,v > −inf: below about −87 nats p_ref,v underflows float32 to 0, as XLA flushes subnormals).
    Per-position values are clamped at 0 (KL ≥ 0; float rounding can dip below it near p_model = p_ref).  The where-guards keep
    gradients with respect to ``model_logprobs`` finite as well (the trainer differentiates this).

    Pure and unchecked: the clamp would also hide a model whose rows do not normalise (log-probs + c
    gives KL − c, clamped to 0), so on arbitrary LMs use the host functions below, which validate the
    rows first (:func:`check_laws`)."""
    return _mean_over_positions(_kl_per_position(jnp, jnp.asarray(ref_logprobs), jnp.asarray(model_logprobs)), mask)


def _kl_per_position(xp, ref, model):
    """KL(p_ref ‖ p_model) per position ``(…)`` of log-laws ``(…, V)``, with ``xp`` = jax.numpy (traced, float32)
    or numpy (on the host, in the arrays' own precision): the terms of :func:`kl_per_sequence`."""
    p = xp.exp(ref)
    support = ref > -xp.inf  # not p > 0: e^ref underflows float32 below about −87 nats (subnormals flush)
    diff = xp.where(support, ref - xp.where(support, model, 0.0), 0.0)
    # +inf where the model is −inf on the support, also where p underflowed to 0 (p·diff = 0·∞ = NaN there)
    term = xp.where(support & xp.isneginf(model), xp.inf, xp.where(support, p * diff, 0.0))
    # KL ≥ 0; the clamp removes float rounding below 0 when p_model ≈ p_ref
    return xp.maximum(xp.sum(term, axis=-1), 0.0)


def tv_per_sequence(ref_logprobs, model_logprobs, mask=None) -> jax.Array:
    """Mean over valid positions of the total variation ½ Σ_v |p_ref,v − p_model,v| ∈ [0, 1].

    Shapes as in :func:`kl_per_sequence`; returns ``(n,)``."""
    per_position = 0.5 * jnp.abs(jnp.exp(jnp.asarray(ref_logprobs)) - jnp.exp(jnp.asarray(model_logprobs))).sum(-1)
    return _mean_over_positions(per_position, mask)


def observed_logprobs(logprobs, tokens):
    """log p(x_t) of the observed tokens: ``logprobs (n, T, V)``, ``tokens (n, T)`` → ``(n, T)`` (any leading
    axes: ``tokens`` has the shape of ``logprobs`` without its last axis).  Inside ``jax.jit`` a pure ``jnp``
    gather, the shapes checked; on concrete input checked on the host — a :class:`ShapeError` for tokens of
    another shape (a (1, 1) array was broadcast over every position), a :class:`TokenError` for ids that are
    not integers in [0, V) (−1 read the last word, V gave NaN) — and gathered in numpy at the input's
    precision (float64 stays float64)."""
    traced = any(isinstance(a, jax.core.Tracer) for a in (logprobs, tokens))
    if not traced:
        logprobs = as_array("logprobs", logprobs, what="log-probabilities (n, T, V)")
        tokens = as_array("tokens", tokens, error=TokenError, what="integer token ids (n, T)")
        if logprobs.dtype.kind not in "iuf" and not jnp.issubdtype(logprobs.dtype, jnp.floating):
            raise DistributionError(f"logprobs: expected real log-probabilities, got dtype {logprobs.dtype}")
    lp_shape, tok_shape = tuple(np.shape(logprobs)), tuple(np.shape(tokens))
    if len(lp_shape) < 2 or tok_shape != lp_shape[:-1]:
        raise ShapeError(f"tokens: expected the shape of logprobs without its last (vocabulary) axis, "
                         f"{lp_shape[:-1]}, got {tok_shape}")
    if traced:
        return jnp.take_along_axis(jnp.asarray(logprobs), jnp.asarray(tokens)[..., None], axis=-1)[..., 0]
    V, tok = lp_shape[-1], tokens
    whole = np.issubdtype(tok.dtype, np.floating) and bool(np.all(np.isfinite(tok) & (tok == np.round(tok))))
    if tok.dtype == bool or not (np.issubdtype(tok.dtype, np.integer) or whole):
        raise TokenError(f"tokens: expected integer token ids, got dtype {tok.dtype}")
    bad = (tok < 0) | (tok >= V)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise TokenError(f"tokens: token id {tok[where]:g} at {where} is outside [0, {V})")
    return np.take_along_axis(logprobs, tok.astype(np.intp)[..., None], axis=-1)[..., 0]


# ---- host-side validation ---------------------------------------------------------------------------

def _count(name: str, value) -> int:
    """A vocabulary size: a positive integer (not bool, float or string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _refuse(name: str, value, what: str):
    check_instance(name, value, (), what)  # always raises: "name: expected what, got <type> <value>"


def check_world(world, *methods: str):
    """``world`` if it offers ``n_symbols`` (a positive integer) and the named methods, else
    :class:`ConfigError` naming ``world`` — before any of them is used."""
    if not (hasattr(world, "n_symbols") and all(callable(getattr(world, m, None)) for m in methods)):
        _refuse("world", world, f"a World (simlm.worlds) with n_symbols and {', '.join(m + '()' for m in methods)}")
    _count("world.n_symbols", world.n_symbols)
    return world


def _check_pair(world, lm, method: str, what: str, world_method: str) -> int:
    """World and LM usable for the ``what`` ε (through ``lm.method`` and ``world.world_method``)."""
    check_world(world, world_method)
    if not hasattr(lm, "n_symbols"):
        _refuse("lm", lm, f"a language model with n_symbols and {method}()")
    try:
        law = getattr(lm, method)
    except NoSuchLawError as err:  # a model of another kind, saying which laws it has
        raise ConfigError(f"lm: {err}; so its {what} ε is undefined") from None
    except AttributeError:
        law = None
    if not callable(law):
        raise ConfigError(f"lm: {type(lm).__name__} has no {method}, so its {what} ε is undefined")
    v_world, v_lm = int(world.n_symbols), _count("lm.n_symbols", lm.n_symbols)
    if v_world != v_lm:
        raise ShapeError(f"lm: has n_symbols = {v_lm} but world has n_symbols = {v_world}; "
                         "ε compares laws over the same vocabulary")
    return v_world


def _batch(tokens, n_symbols: int) -> np.ndarray:
    """Tokens ``(n, T)`` with n ≥ 2: every ε here comes with a standard error over sequences."""
    toks, _ = check_tokens(tokens, n_symbols)
    if toks.shape[0] < 2:
        raise ConfigError(f"tokens: a standard error over sequences needs at least 2 sequences, got "
                          f"{toks.shape[0]}; pass a batch (n, T) with n ≥ 2")
    check_memory("tokens", 4 * toks.size * n_symbols,
                 what=f"the world's and the LM's laws on {toks.shape} tokens over {n_symbols} words, two copies each")
    return toks


@jax.jit
def _row_logsumexp(logp):
    return jax.nn.logsumexp(logp, axis=-1)  # NaN for a row with NaN, +inf with +inf, −inf if all −inf


def logsumexp_tol(dtype) -> float:
    """The largest |log Σ_v p_v| :func:`check_laws` accepts for a row of ``dtype``: :data:`LOGSUMEXP_TOL_16`
    for 16-bit floats, :data:`LOGSUMEXP_TOL` for every other real dtype (module docstring)."""
    dt = np.dtype(dtype)
    return LOGSUMEXP_TOL_16 if dt.kind == "f" and dt.itemsize <= 2 else LOGSUMEXP_TOL


def _at(where, idx) -> str:
    return where(tuple(int(i) for i in idx)) if callable(where) else f"row {tuple(int(i) for i in idx)}"


def check_laws(name: str, logprobs, shape=None, where=None) -> jax.Array:
    """Validate rows of log-probabilities (last axis = the V words) and return them renormalised (a jax
    array: float32 (float16 input is upcast first), or float64 for float64 input under ``jax.enable_x64``).

    Each row must be real and finite or −inf (NaN and +inf refused) with |logsumexp| ≤
    :func:`logsumexp_tol` of the dtype given (1e-5 for float32/float64, 1e-3 for float16); otherwise :class:`DistributionError` "``name`` at <where(row index)> is not a
    probability law: …".  ``shape`` (optional) is the shape the rows must have (:class:`ShapeError`
    otherwise); ``where`` maps a row index tuple to words such as "sequence 2, position 5"."""
    try:
        raw = logprobs if isinstance(logprobs, (np.ndarray, jax.Array)) else np.asarray(logprobs)
    except (TypeError, ValueError):
        raise DistributionError(f"{name}: expected an array of log-probabilities, got "
                                f"{type(logprobs).__name__} (rows of unequal length?)") from None
    if raw.dtype.kind == "c":
        raise DistributionError(f"{name}: returned complex values (dtype {raw.dtype}); log-probabilities are real")
    if raw.dtype == jnp.bfloat16:  # its 8-bit mantissa rounds log p by ~0.4 %: rows off by more than the check
        raise DistributionError(f"{name}: returned bfloat16 log-probabilities, whose rounding (~1e-2 nats) is "
                                "larger than the ε being measured; take the log-softmax in float32")
    if raw.dtype.kind not in "iuf":
        raise DistributionError(f"{name}: returned dtype {raw.dtype}, expected real log-probabilities")
    if shape is not None and tuple(raw.shape) != tuple(shape):
        raise ShapeError(f"{name}: has shape {tuple(raw.shape)}, expected {tuple(shape)} (the reference laws' shape)")
    if raw.ndim == 0 or raw.shape[-1] == 0:
        raise ShapeError(f"{name}: expected rows over the vocabulary (last axis V ≥ 1), got shape {raw.shape}")
    # at least float32 (float16 rows renormalised in float16 shift ε by ~10%), float64 kept under
    # jax.enable_x64: the check must not cost precision
    logp = jnp.asarray(raw)
    logp = logp.astype(jnp.promote_types(logp.dtype, jnp.float32) if raw.dtype.kind == "f" else jnp.float32)
    lse = _row_logsumexp(logp)
    tol = logsumexp_tol(raw.dtype)
    off = ~(np.abs(np.asarray(lse)) <= tol)
    if off.any():
        idx = tuple(np.argwhere(off)[0])
        row = np.asarray(logp[idx], np.float64)
        if np.isnan(row).any():
            detail = f"word {int(np.flatnonzero(np.isnan(row))[0])} has log-probability NaN"
        elif np.isposinf(row).any():
            detail = f"word {int(np.flatnonzero(np.isposinf(row))[0])} has log-probability +inf"
        else:
            total = float(np.exp(np.float64(lse[idx])))
            detail = (f"its probabilities sum to {total:.6g}, expected 1 within |log Σ p| ≤ {tol:g} "
                      f"(log Σ p = {float(lse[idx]):.4g})")
        raise DistributionError(f"{name} at {_at(where, idx)} is not a probability law: {detail}; "
                                f"{int(off.sum())} of {off.size} rows are off")
    return logp - lse[..., None]


def _support_check(name: str, ref, model, where) -> None:
    """Refuse a model with probability 0 where the reference's is positive: KL = +∞ there.  Positive means
    log p > −inf (p itself underflows float32 below about −87 nats)."""
    zero = np.asarray(jnp.any((ref > -jnp.inf) & jnp.isneginf(model), axis=-1))
    if zero.any():
        idx = tuple(np.argwhere(zero)[0])
        r, q = np.asarray(ref[idx], np.float64), np.asarray(model[idx])
        v = int(np.flatnonzero((r > -np.inf) & np.isneginf(q))[0])
        p = np.exp(r)
        raise DistributionError(
            f"{name} at {_at(where, idx)} gives probability 0 to word {v}, which the world gives probability "
            f"{p[v]:.4g}: KL(p* ‖ p_θ) = +inf there, so ε is infinite ({int(zero.sum())} of {zero.size} rows); "
            "an LM compared by ε must give every possible word positive probability")


def _finite(name: str, values: np.ndarray, what: str) -> np.ndarray:
    """Per-sequence values, refused if any is not finite (log-probabilities so extreme they overflow)."""
    bad = ~np.isfinite(values)
    if bad.any():
        raise DistributionError(f"{name}: the {what} of sequence {int(np.flatnonzero(bad)[0])} is {values[bad][0]} "
                                "(log-probabilities too extreme to compare)")
    return values


def _laws(method: str, ref, model, where):
    """Both sides validated and renormalised (world first: a broken world is not the LM's fault)."""
    ref = check_laws(f"world: {method}", ref, where=where)
    model = check_laws(f"lm: {method}", model, ref.shape, where)
    _support_check(f"lm: {method}", ref, model, where)
    return ref, model


def lm_call(method: str, call):
    """``call()``, the LM's laws on tokens the world has already accepted; the LM's refusal of a sequence it
    gives probability 0 (an exact LM of another world, say) said "probability zero under this world", of
    the world the caller passed, which holds the tokens possible.  That LM gives a possible sequence
    probability 0, so its ε is +∞: a :class:`DistributionError` naming ``lm`` says so."""
    try:
        return call()
    except ZeroProbabilityError as err:
        raise DistributionError(
            f"lm: its {method} are undefined on tokens the world makes possible — the LM gives them probability "
            f"0, so KL(p* ‖ p_θ) = +inf and ε is infinite; an LM compared by ε must give every possible sequence "
            f"positive probability (the LM said: {err})") from None


def _causal_laws(world, lm, tokens):
    _check_pair(world, lm, "next_token_logprobs", "causal", "next_token_logprobs")
    toks = _batch(tokens, world.n_symbols)
    ref = world.next_token_logprobs(toks)
    ref, model = _laws("next_token_logprobs", ref, lm_call("next-token laws", lambda: lm.next_token_logprobs(toks)),
                       lambda i: f"sequence {i[0]}, position {i[1]} (next-token law)")
    return toks, ref, model


def _masked_chunks(world, lm, tokens, positions):
    """``(observed (n, P_c), ref (n, P_c, V), model (n, P_c, V), chunk (P_c,))`` for consecutive chunks of the masked
    positions, validated: the world's laws at every position (in log space, :func:`masked_logprobs_of`)
    come from one forward–backward, and each
    chunk's P_c masked copies of every sequence go to the LM in one call (one batched forward of n·P_c
    rows for a transformer), P_c chosen so that n·P_c·T·V ≤ :data:`MASKED_CHUNK_FLOATS`."""
    _check_pair(world, lm, "masked_token_logprobs", "masked", "masked_token_probs")
    toks = _batch(tokens, world.n_symbols)
    pos = check_positions(positions, toks.shape[1])
    if np.unique(pos).size != pos.size:  # the mean is over a set of positions: a repeat was weighted twice
        twice = int(np.flatnonzero(np.bincount(pos) > 1)[0])
        raise TokenError(f"positions: {twice} appears more than once; ε is the mean over distinct positions")
    ref_all = jnp.asarray(masked_logprobs_of(world, toks, pos))
    size = max(1, MASKED_CHUNK_FLOATS // (toks.size * world.n_symbols))
    for start in range(0, pos.size, size):
        chunk = pos[start:start + size]
        ref, model = _laws("masked_token_logprobs", ref_all[:, start:start + size],
                           lm_call("masked laws", lambda: lm.masked_token_logprobs(toks, chunk)),
                           lambda i: f"sequence {i[0]}, masked position {int(chunk[i[1]])} (masked law)")
        yield toks[:, chunk], ref, model, chunk


def _sequence_means(observed, ref, model, name: str, everything: bool, columns=None) -> list:
    """Per-sequence means over the positions of one block: ``[KL]``, or ``[KL, TV, CE_model, CE_opt]``.  The
    cross-entropies read the observed tokens: one impossible under the world (whose laws are defined there:
    the law before a last token, a masked law, never read the token itself) is a ZeroProbabilityError naming
    it (its optimal cross-entropy is infinite; ε and TV are defined), before the LM's is judged.
    ``columns``: the position of each column of ``observed`` (default 0, 1, …)."""
    kl = _kl_values(ref, model, name)
    if not everything:
        return [kl]
    tv = tv_float64(ref, model)
    opt = np.asarray(observed_logprobs(ref, observed), np.float64)
    if not np.isfinite(opt).all():
        i, j = (int(a[0]) for a in np.nonzero(~np.isfinite(opt)))
        t = j if columns is None else int(columns[j])
        raise ZeroProbabilityError(f"tokens: sequence {i} has probability zero under the world (token "
                                   f"{int(observed[i, j])} at position {t} is impossible there), so its cross-"
                                   "entropies are infinite; ε and TV, which never read the token, are defined")
    ce_model = _finite(name, -np.asarray(observed_logprobs(model, observed), np.float64).mean(-1), "cross-entropy")
    return [kl, tv, ce_model, -opt.mean(-1)]


def _masked_means(world, lm, tokens, positions, everything: bool) -> tuple[list, int, int]:
    """:func:`_sequence_means` over every masked position, chunk by chunk (:func:`_masked_chunks`): the mean
    over all P positions is Σ_chunks P_c · (chunk mean) / P.  Returns the means, n and P."""
    total, P, name = None, 0, "lm: masked_token_logprobs"
    for observed, ref, model, chunk in _masked_chunks(world, lm, tokens, positions):
        w = observed.shape[1]
        means = _sequence_means(observed, ref, model, name, everything, chunk)
        total = [w * m for m in means] if total is None else [t + w * m for t, m in zip(total, means)]
        P += w
    return [t / P for t in total], observed.shape[0], P


def kl_float64(ref_logprobs, model_logprobs) -> np.ndarray:
    """:func:`kl_per_sequence` (every position) on the host in float64, of the laws as given renormalised in
    float64, ``(n,)``.  In float32 the sum's rounding, ~1e-7 of the terms' sizes, and rows renormalised to
    1 ± 1e-7 are relative errors of 1e-3 at an ε of a few 1e-6, where the terms mostly cancel."""
    # KL of the laws renormalised, Σ p(a − b) + log(Z_b/Z_a) with p = e^a/Z_a, where log(Z_b/Z_a) = log1p(Σ_w (e^b −
    # e^a)/Z_a) and each e^b − e^a = e^a·expm1(b − a) on the support (e^b − e^a where expm1 would overflow), exact
    # where b = a.  Renormalising by subtracting log Z lost a shift below the last bit: an LM that moves only words
    # of p* ≲ 1e-16 moves the others by no more, and ε read twice its value (~1e-18) at such a world.
    ref, model = np.asarray(ref_logprobs, np.float64), np.asarray(model_logprobs, np.float64)
    support = ref > -np.inf
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.exp(ref)
        z = e.sum(-1, keepdims=True)  # 0 for a row without support (it adds 0, as before)
        p = e / np.where(z > 0, z, 1.0)
        miss = support & np.isneginf(model)  # +inf: the model is −inf on the support (p may have underflowed)
        d = np.where(support & ~miss, model - ref, 0.0)
        first = -np.sum(np.where(support, p * d, 0.0), axis=-1)
        q = np.exp(model) / np.where(z > 0, z, 1.0)
        on_support = np.where(miss, -p, np.where(d > 1, q - p, p * np.expm1(np.minimum(d, 1.0))))
        moved = np.sum(np.where(support, on_support, q), axis=-1)
        kl = np.where(miss.any(-1), np.inf, np.where(z[..., 0] > 0, first + np.log1p(moved), 0.0))
        # rows far from normalised: Σ e^a or Σ e^b / Z_a past exp's range (0, −∞ from log1p(−1), or +∞), or
        # log1p(moved) near moved = −1 (6e-5 off at Z_b / Z_a = e^−29): the KL of the rows renormalised by their
        # logsumexp, where no sub-ulp shift is left to keep
        top_a, top_b = logsumexp(ref, axis=-1), logsumexp(model, axis=-1)
        far = support.any(-1) & ~miss.any(-1) & ((np.abs(top_a) > FAR) | (np.abs(top_b - top_a) > FAR))
        if far.any():
            a, b = ref - top_a[..., None], model - top_b[..., None]
            kl = np.where(far, np.sum(np.where(support, np.exp(a) * (a - b), 0.0), axis=-1), kl)
    return np.maximum(kl, 0.0).mean(-1)  # KL ≥ 0: the clamp removes rounding below 0 where q ≈ p*


#: a row of :func:`kl_float64` whose log-total (or the model's against the reference's) is further than this
#: from 0 is renormalised by its logsumexp first; laws accepted within 1e-5 of normalised never are
FAR = 1.0


def tv_float64(ref_logprobs, model_logprobs) -> np.ndarray:
    """:func:`tv_per_sequence` (every position) on the host in float64, of the laws renormalised as in
    :func:`kl_float64`, ``(n,)``.  Pinsker's TV ≤ √(KL/2) is tight to third order in TV, so near it the
    gap is below float32's rounding of a TV (~1e-8): a float32 TV beside a float64 ε read as a violation
    (V = 2, p* uniform, TV ≈ 2e-3)."""
    ref, model = _renormalised64(ref_logprobs), _renormalised64(model_logprobs)
    return 0.5 * np.abs(np.exp(ref) - np.exp(model)).sum(-1).mean(-1)


def _renormalised64(logprobs) -> np.ndarray:
    """Log-laws ``(…, V)`` in float64, each row shifted to log-sum 0 (an all −inf row stays as it is)."""
    a = np.asarray(logprobs, np.float64)
    with np.errstate(invalid="ignore"):
        top = logsumexp(a, axis=-1, keepdims=True)
    return a - np.where(np.isfinite(top), top, 0.0)


def _kl_values(ref, model, name: str) -> np.ndarray:
    return _finite(name, kl_float64(ref, model), "KL")


def exact_epsilon(world, lm, tokens) -> tuple[float, float]:
    """ε = mean_i mean_t KL(p*(·|x_<t) ‖ p_θ(·|x_<t)) on ``tokens (n, T)`` and its standard error over
    sequences, nats/token.  ``lm`` is any LanguageModel (its ``next_token_logprobs`` is used).

    Raises :class:`ConfigError` for fewer than 2 sequences or an ``lm``/``world`` without the methods used,
    :class:`ShapeError` for vocabularies that differ, and :class:`DistributionError` naming the sequence
    and position where a law is not a distribution or gives probability 0 to a possible word (module
    docstring); the same holds for every function below."""
    _, ref, model = _causal_laws(world, lm, tokens)
    return mean_and_sem(_kl_values(ref, model, "lm: next_token_logprobs"))


def exact_masked_epsilon(world, lm, tokens, positions=None) -> tuple[float, float]:
    """Masked ε = mean_i mean_{t ∈ positions} KL(p*(x_t|x_−t) ‖ p_θ(x_t|x_−t)) and its standard error
    over sequences, nats/token (``lm.masked_token_logprobs`` against the world's masked laws as
    :func:`~simlm.worlds.base.masked_logprobs_of` gives them: in log space for a log-linear world, the log
    of its float32 probabilities for an HMM world — whose float32 laws are the law: a word whose exact
    probability is below float32's ~1e-38 has probability 0 there, and an LM giving it 0 is not refused);
    ``positions`` None means every position.  The world's laws come from one forward–backward; the LM
    is asked for as many positions per call as fit :data:`MASKED_CHUNK_FLOATS` (all of them, for the
    sizes of the experiments), the result being the per-position mean whatever the chunking."""
    return mean_and_sem(_masked_means(world, lm, tokens, positions, everything=False)[0][0])


def exact_prepended_epsilon(world, lm, tokens) -> tuple[float, float]:
    """ε at a mask prepended before x_1:T: mean_i KL(p*(x_0|x_1:T) ‖ p_θ(x_0|x_1:T)) and its standard error
    over sequences, nats per sequence (one law each; ``lm.prepended_mask_logprobs`` against the world's law
    as :func:`~simlm.worlds.base.prepended_logprobs_of` gives it, in log space where the world can, as
    :func:`exact_masked_epsilon`) — the law
    a head reads in Wei, Xie & Ma's posterior tasks."""
    _check_pair(world, lm, "prepended_mask_logprobs", "prepended", "prepended_mask_probs")
    toks = _batch(tokens, world.n_symbols)
    ref = jnp.asarray(prepended_logprobs_of(world, toks))
    ref, model = _laws("prepended_mask_logprobs", ref, lm_call("laws at the prepended mask",
                                                               lambda: lm.prepended_mask_logprobs(toks)),
                       lambda i: f"sequence {i[0]} (the law at the prepended mask)")
    return mean_and_sem(_kl_values(ref[:, None, :], model[:, None, :], "lm: prepended_mask_logprobs"))


@dataclasses.dataclass(frozen=True)
class DivergenceReport:
    """Exact divergences of an LM from the world on a fixed set of sequences (nats/token; every
    ``*_se`` is a standard error over sequences).

    ``model_cross_entropy`` = mean −log p_θ(x_t | context) of the observed tokens,
    ``optimal_cross_entropy`` the same under p*; their difference ``excess_cross_entropy`` (with its
    paired s.e.) is a sampled estimate of ``epsilon`` — equal to it in expectation over the data.
    ``epsilon`` and ``tv`` are summed in float64 (:func:`kl_float64`, :func:`tv_float64`), so that Pinsker's
    mean TV ≤ √(ε/2) can be judged between them where it is tight."""

    epsilon: float
    epsilon_se: float
    tv: float
    tv_se: float
    model_cross_entropy: float
    model_cross_entropy_se: float
    optimal_cross_entropy: float
    optimal_cross_entropy_se: float
    excess_cross_entropy: float
    excess_cross_entropy_se: float
    n_sequences: int
    n_positions: int
    masked: bool


def divergence_report(world, lm, tokens, *, masked: bool = False, positions=None) -> DivergenceReport:
    """ε, total variation and cross-entropies of ``lm`` against ``world`` on ``tokens (n, T)``; causal
    laws by default, masked laws (at ``positions``, default all) with ``masked=True``."""
    if not isinstance(masked, (bool, np.bool_)):
        raise ConfigError(f"masked: expected True or False, got {masked!r}")
    name = "lm: masked_token_logprobs" if masked else "lm: next_token_logprobs"
    if masked:
        (kl, tv, ce_model, ce_opt), n, P = _masked_means(world, lm, tokens, positions, everything=True)
    else:
        if positions is not None:
            raise ConfigError("positions: only used with masked=True")
        observed, ref, model = _causal_laws(world, lm, tokens)
        kl, tv, ce_model, ce_opt = _sequence_means(observed, ref, model, name, everything=True)
        n, P = observed.shape
    return DivergenceReport(
        *mean_and_sem(kl), *mean_and_sem(tv), *mean_and_sem(ce_model), *mean_and_sem(ce_opt),
        *mean_and_sem(ce_model - ce_opt), n_sequences=int(n), n_positions=int(n * P), masked=bool(masked),
    )


__all__ = [
    "LOGSUMEXP_TOL",
    "LOGSUMEXP_TOL_16",
    "logsumexp_tol",
    "MASKED_CHUNK_FLOATS",
    "check_laws",
    "check_world",
    "lm_call",
    "kl_per_sequence",
    "tv_per_sequence",
    "observed_logprobs",
    "exact_epsilon",
    "exact_masked_epsilon",
    "exact_prepended_epsilon",
    "DivergenceReport",
    "divergence_report",
]
