"""Host-side argument checks shared by every layer of simlm.

Each check returns the validated value (converted: int32 tokens, float64 probabilities, a PRNG key) or
raises a typed error from :mod:`simlm.errors` whose message names the argument and the problem.  They run
on the host, before anything is traced or compiled.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from simlm.errors import ConfigError, DistributionError, ShapeError, TokenError

def as_array(name: str, value, *, error=ShapeError, what: str = "a rectangular numeric array") -> np.ndarray:
    """``np.asarray(value)``, with a ragged or otherwise unconvertible input (on which numpy raises) reported as
    ``error`` naming ``name`` instead of numpy's own ValueError/TypeError."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise error(f"{name}: expected {what}, got {type(value).__name__} that numpy cannot convert "
                    f"({str(err).split('.')[0]})") from None


def checked_fields(cls):
    """Class decorator for a config dataclass: a misspelt, unknown, missing, repeated or surplus argument of
    its constructor raises :class:`ConfigError` naming it (with the nearest field's name where one is close)
    instead of the TypeError of the generated ``__init__``.  Apply above ``@dataclasses.dataclass``."""
    init = cls.__init__
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        where = cls.__name__
        for key in kwargs:
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f"; its fields are {names}"
                raise ConfigError(f"{key}: not a field of {where}{hint}")
        if len(args) > len(names):
            raise ConfigError(f"{where}: takes at most {len(names)} positional values ({names}), got {len(args)}")
        for name in names[:len(args)]:
            if name in kwargs:
                raise ConfigError(f"{name}: given twice to {where}, by position and by keyword")
        given = set(names[:len(args)]) | set(kwargs)
        for name in required:
            if name not in given:
                raise ConfigError(f"{name}: {where} needs it (no default)")
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def check_tokens(tokens, n_symbols: int, name: str = "tokens") -> tuple[np.ndarray, bool]:
    """Return ``(tokens as int32 (n, T), was_single)`` or raise :class:`TokenError`."""
    if isinstance(tokens, jax.core.Tracer):
        raise TokenError(
            f"{name}: the World methods validate their input on the host and cannot be traced; call them on "
            "concrete tokens outside jax.jit, or inside it the module functions that take the world's arrays: "
            "simlm.worlds.hmm's for an HMM (token_logprobs(*hmm.chain, tokens), next_token_probs, …), not "
            "simlm.worlds.hmm_core's bare scans, which are unchecked on chains with zeros (a log-likelihood "
            "tens of nats off, silently)"
        )
    arr = as_array(name, tokens, error=TokenError, what="a rectangular integer array of shape (T,) or (n, T)")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        # whole floats are ids; they are range-checked as given (below) before the cast, which would wrap
        # 1e30 to −2⁶³ (and report that)
        if not (np.issubdtype(arr.dtype, np.floating) and arr.size and np.all(np.isfinite(arr))
                and np.all(arr == np.round(arr))):
            raise TokenError(f"{name}: expected integer token ids, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise TokenError(f"{name}: expected shape (T,) or (n, T), got {arr.shape}")
    single = arr.ndim == 1
    arr = arr.reshape((1, -1)) if single else arr
    if arr.shape[0] == 0:
        raise TokenError(f"{name}: no sequences (shape {arr.shape})")
    if arr.shape[1] == 0:
        raise TokenError(f"{name}: sequences are empty (length 0); every sequence needs at least one token")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= n_symbols:
        bad = lo if lo < 0 else hi
        idx = np.argwhere(arr == bad)[0]
        shown = int(bad) if np.issubdtype(arr.dtype, np.integer) or abs(bad) < 2**53 else f"{bad:g}"
        raise TokenError(
            f"{name}: token id {shown} at sequence {idx[0]}, position {idx[1]} is outside [0, {n_symbols})"
        )
    return arr.astype(np.int32), single


def as_batch(tokens):
    """One sequence ``(T,)`` as a batch of one ``(1, T)`` (a world's law of a 1-D input drops the batch axis);
    anything else as given, checked where it is read (a ragged list stays a list, for that check to name)."""
    if isinstance(tokens, (list, tuple)):
        try:
            tokens = np.asarray(tokens)
        except ValueError:
            return tokens
    return tokens[None] if getattr(tokens, "ndim", None) == 1 else tokens


def check_positions(positions, length: int) -> np.ndarray:
    """Masked positions as int32 ``(P,)`` in [0, T); ``None`` means every position."""
    if positions is None:
        return np.arange(length, dtype=np.int32)
    pos = as_array("positions", positions, error=TokenError, what="a 1-d array of integer positions")
    if pos.ndim == 0:
        pos = pos.reshape(1)
    if pos.ndim != 1 or pos.size == 0 or not np.issubdtype(pos.dtype, np.integer):
        raise TokenError(f"positions: expected a non-empty 1-d array of integer positions, got {np.asarray(positions)!r}")
    if pos.min() < 0 or pos.max() >= length:
        raise TokenError(f"positions: {int(pos.min() if pos.min() < 0 else pos.max())} is outside [0, {length})")
    return pos.astype(np.int32)


def check_positive_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in [``minimum``, ``maximum``] (no upper end if None) as an int — not a bool or a float
    — or :class:`ConfigError` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: expected an integer ≤ {maximum}, got {value}")
    return int(value)


def as_tuple(name: str, value, single=(int, float, np.integer, np.floating)) -> tuple:
    """``value`` as a tuple of items: a list, tuple or 0/1-d array item by item, an instance of ``single``
    (numbers by default, never a bool) as one item; anything else is :class:`ConfigError` naming ``name``.
    The items themselves are the caller's to check."""
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        value = value.reshape(-1).tolist()
    if isinstance(value, single) and not isinstance(value, (bool, np.bool_)):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}: expected one value or a list of them, got {type(value).__name__} {_short(value)}")
    return tuple(value)


def check_positive(name: str, value) -> float:
    """A positive finite real number as a float (not a bool, string, complex, NaN or ±inf), or
    :class:`ConfigError` naming ``name``."""
    v = check_finite(name, value, "a positive finite number")
    if not v > 0:
        raise ConfigError(f"{name}: expected a positive finite number, got {value!r}")
    return v


def check_float32_normal(name: str, value: float, where: str, note: str = "", *,
                         zero: str = " and no step would move") -> float:
    """``value`` (a checked real number) unless it is positive and below float32's smallest normal number,
    where ``where`` computes (an optimiser's step size or clip: 1e-50 becomes 0 there and no step moves);
    then :class:`ConfigError` naming ``name`` (``zero``, what a 0 there does, and ``note`` appended)."""
    tiny = float(np.finfo(np.float32).tiny)
    if 0 < value < tiny:
        raise ConfigError(f"{name}: {value:g} is below float32's smallest normal number ({tiny:.3g}), where "
                          f"{where}: it would round to 0{zero}{note}")
    return value


def check_float32_range(name: str, value: float, where: str, small: str) -> float:
    """A positive ``value`` within float32's normal range, where ``where`` computes, else :class:`ConfigError`
    naming ``name``: below it (:func:`check_float32_normal`, ``small``: what to do instead of a value that
    would round to 0) or above float32's largest number (inf there)."""
    check_float32_normal(name, value, where, zero=f"; {small}")
    top = float(np.finfo(np.float32).max)
    if value > top:
        raise ConfigError(f"{name}: {value:g} is above float32's largest number ({top:.3g}), where {where}: it "
                          "would be inf")
    return value


def check_distinct_labels(name: str, values, spec: str = "g") -> None:
    """Refuse, with a :class:`ConfigError` naming ``name``, ``values`` two of which read alike when written
    with the format ``spec`` (as the labels and result keys built from them are: under ``g`` 0.1 and
    0.1000001 both read "0.1", so their results would overwrite each other)."""
    first = {}
    for value in values:
        label = format(value, spec)
        if label in first:
            raise ConfigError(f"{name}: {first[label]!r} and {value!r} are both labelled {label!r}, so their "
                              f"results would overwrite each other; give values whose labels differ")
        first[label] = value


#: integer seeds are in [0, SEED_LIMIT): every one has its own PRNG key (:func:`seed_key`)
SEED_LIMIT = 2**63


def seed_key(seed: int, name: str = "seed") -> jax.Array:
    """The raw PRNG key of an integer seed in [0, 2**63) — every place simlm turns a seed into a key goes
    through here (or :func:`as_key`, which checks the seed first).

    A seed below 2**32 gets ``jax.random.PRNGKey(seed)``, the key it has always had.  A larger seed gets
    the key ``PRNGKey`` gives it with 64-bit integers enabled, ``[seed >> 32, seed & 0xFFFFFFFF]`` (the
    threefry seed of the whole 64-bit integer): without ``jax_enable_x64`` ``PRNGKey`` keeps only the
    low 32 bits, so 0 and 2**32 would give one stream (an "ensemble" of identical members).  The key is
    the same with x64 on or off, and is a plain constant, so a Python ``seed`` may be used inside
    ``jax.jit``.  (Not ``fold_in(PRNGKey(low), high)``: that key is ``split(PRNGKey(low), n)[high]``, a
    stream seed ``low`` itself draws on.)  Seeds ≥ 2**32 need the default ``threefry2x32`` PRNG
    (:class:`ConfigError` naming ``name`` under another ``jax_default_prng_impl``)."""
    seed = int(seed)
    if not 0 <= seed < SEED_LIMIT:  # −1 would share 2**32 − 1's key; 2**64 would overflow
        raise ConfigError(f"{name}: expected a seed in [0, 2**63), got {seed}")
    if seed < 2**32:
        return jax.random.PRNGKey(seed)
    impl = jax.config.jax_default_prng_impl
    if impl != "threefry2x32":
        raise ConfigError(f"{name}: seeds ≥ 2**32 have their own keys only under the default threefry2x32 PRNG, "
                          f"and jax_default_prng_impl is {impl!r}; use a seed below 2**32, got {seed}")
    return jnp.asarray(np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32))


def as_key(key_or_seed, name: str = "key") -> jax.Array:
    """A JAX PRNG key from a key (returned as is) or an integer seed in [0, 2**63) (:func:`seed_key`:
    every seed its own key, ``jax.random.PRNGKey(seed)`` for a seed below 2**32), or :class:`ConfigError`
    naming ``name``."""
    if isinstance(key_or_seed, (bool, np.bool_)):
        raise ConfigError(f"{name}: expected a PRNG key or a non-negative integer seed, got {key_or_seed!r}")
    if isinstance(key_or_seed, (int, np.integer)):
        if key_or_seed < 0 or key_or_seed >= SEED_LIMIT:
            raise ConfigError(f"{name}: expected a non-negative integer seed below 2**63, got {key_or_seed}")
        return seed_key(key_or_seed, name)
    if isinstance(key_or_seed, jax.Array) and (
        jnp.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key)
        or (key_or_seed.dtype == jnp.uint32 and key_or_seed.shape == (2,))
    ):
        return key_or_seed
    raise ConfigError(f"{name}: expected a PRNG key or a non-negative integer seed, got {key_or_seed!r}")


def as_rng(seed, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from a non-negative integer seed (construction-time randomness)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"{name}: expected a non-negative integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def check_stochastic(name: str, array, *, atol: float = 1e-6, axis_names=("row",)) -> np.ndarray:
    """Validate a probability vector / row-stochastic array (last axis sums to 1 within ``atol``) and return
    float64.  Refused first, as what the float64 cast would convert silently: complex values (the imaginary
    part would be dropped), strings (``"0.5"`` would parse as a number) and booleans (a mask passed for a
    law: True would read as probability 1)."""
    atol = check_non_negative("atol", atol, finite=True)
    raw = _maybe_array(array)
    if raw.dtype.kind == "c" or (raw.dtype == object and any(isinstance(v, (complex, np.complexfloating))
                                                             for v in raw.flat)):
        raise DistributionError(f"{name}: expected real probabilities, got complex numbers (the imaginary part would be lost)")
    if raw.dtype.kind in "USaMmV" and not _ml_float(raw.dtype) or (
            raw.dtype == object and any(isinstance(v, (str, bytes)) for v in raw.flat)):
        raise DistributionError(f"{name}: expected a numeric array of probabilities, got dtype {raw.dtype}"
                                + (" holding strings" if raw.dtype == object else ""))
    if raw.dtype == bool or (raw.dtype == object and any(isinstance(v, (bool, np.bool_)) for v in raw.flat)) \
            or _holds_bool(array):
        raise DistributionError(f"{name}: expected real probabilities, got booleans (True would read as "
                                "probability 1)")
    try:
        arr = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise DistributionError(f"{name}: expected a numeric array of probabilities (rows of equal length), "
                                f"got {type(array).__name__}") from None
    if arr.ndim == 0:
        raise ShapeError(f"{name}: expected an array with at least one axis, got a scalar")
    if arr.shape[-1] == 0:
        raise ShapeError(f"{name}: last axis is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise DistributionError(f"{name}: entry {idx if len(idx) > 1 else idx[0]} is {arr[idx]}, expected a finite probability")
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise DistributionError(f"{name}: entry {idx if len(idx) > 1 else idx[0]} is {arr[idx]:.6g}, expected ≥ 0")
    sums = arr.sum(axis=-1)
    off = np.abs(sums - 1.0) > atol
    if np.any(off):
        idx = tuple(int(i) for i in np.argwhere(np.atleast_1d(off))[0])
        s = float(np.atleast_1d(sums)[idx])
        what = "sums" if arr.ndim == 1 else f"{axis_names[0]} {idx[0] if len(idx) == 1 else idx} sums"
        total = f"{s:.6g}" if float(f"{s:.6g}") != 1.0 else f"1 {'+' if s > 1 else '−'} {abs(s - 1):.3g}"
        raise DistributionError(f"{name} {what} to {total}, expected 1 within {atol:g}")
    return arr


def _holds_bool(value) -> bool:
    """Whether a (nested) Python list or tuple holds a bool anywhere (``[True, 0.0]`` casts to [1.0, 0.0])."""
    if not isinstance(value, (list, tuple)):
        return False
    return any(isinstance(v, (bool, np.bool_)) or _holds_bool(v) for v in value)


def _maybe_array(value):
    """``np.asarray(value)``; for a ragged value, its entries one level down (an object array whose mixed
    entries the checks above can still see), or an empty array."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        try:
            return np.array([v for row in value for v in (row if isinstance(row, (list, tuple)) else [row])],
                            dtype=object)
        except TypeError:
            return np.zeros(0)


def mean_and_sem(values, name: str = "tokens") -> tuple[float, float]:
    """Mean and standard error (ddof = 1) of per-sequence values.  A standard error needs at least two
    values, so fewer raise :class:`ConfigError` naming ``name`` rather than returning a NaN that would
    flow into tables; so does anything but one real value per sequence, shape (n,) (an (n, T) array would
    give a standard error over n·T tokens).  A NaN or ±inf value is the caller's to judge and comes back
    in the mean (the trainer reports it as divergence; the ε functions refuse it before they get here)."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected one real value per sequence, got {_short(values)}") from None
    if v.ndim != 1:
        raise ConfigError(f"{name}: expected one value per sequence, shape (n,), got shape {v.shape}")
    if v.size < 2:
        raise ConfigError(f"{name}: a standard error over sequences needs at least 2 sequences, got {v.size}; "
                          "pass a batch (n, T) with n ≥ 2")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def _real(name: str, value, what: str) -> float:
    """``value`` as a float (NaN and ±inf pass) if it is a real number — not a bool, string or complex
    number — else :class:`ConfigError` "``name``: expected ``what``"."""
    if isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating)) or \
            getattr(value, "dtype", None) == bool:  # a 0-d bool array reads as 1.0
        raise ConfigError(f"{name}: expected {what}, got {_short(value)}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range (10**400)
        raise ConfigError(f"{name}: expected {what}, got {_short(value)}") from None


def check_finite(name: str, value, what: str = "a finite real number") -> float:
    """A finite real number as a float — not a bool, string, complex number, NaN or ±inf (numpy and 0-d JAX
    scalars are fine) — or :class:`ConfigError` "``name``: expected ``what``"."""
    v = _real(name, value, what)
    if not math.isfinite(v):
        raise ConfigError(f"{name}: expected {what}, got {value!r}")
    return v


def check_non_negative(name: str, value, *, finite: bool = False) -> float:
    """A real number ≥ 0 as a float — +∞ allowed unless ``finite`` (a ridge weight: 0 or positive
    finite); no bool, string, complex number or NaN — or :class:`ConfigError` naming ``name``."""
    what = "a finite number ≥ 0" if finite else "a number ≥ 0 (+inf allowed)"
    v = _real(name, value, what)
    if not v >= 0 or (finite and math.isinf(v)):
        raise ConfigError(f"{name}: expected {what}, got {value!r}")
    return v


def nonempty_path(value, name: str = "out", what: str = "a results directory") -> Path:
    """``value`` as a Path, or a :class:`ConfigError` naming ``name`` for an empty (or blank) path: ``Path('')`` is
    the working directory, where a run given ``out=''`` (or a training ``run_dir=''``) wrote its files and a report
    named it '.'."""
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"{name}: expected {what}, got an empty path {value!r}")
    return Path(value)


def check_instance(name: str, value, types, what: str):
    """``value`` if it is an instance of ``types``; otherwise :class:`ConfigError` "``name``: expected
    ``what``, got <type>" — raised before any attribute of ``value`` is touched."""
    if not isinstance(value, types):
        raise ConfigError(f"{name}: expected {what}, got {type(value).__name__} {_short(value)}")
    return value


def _ml_float(dtype) -> bool:
    """bfloat16 and JAX's other ml_dtypes floats, whose numpy kind is 'V' (void), not 'f'."""
    try:
        return bool(jnp.issubdtype(dtype, jnp.floating))
    except TypeError:
        return False


def check_real_array(name: str, array, *, error=ConfigError) -> np.ndarray:
    """A real, finite float64 array (complex, object, string, ragged, NaN and ±inf entries refused)."""
    raw = as_array(name, array, what="an array of numbers with rows of equal length")
    if raw.dtype.kind == "c":
        raise error(f"{name}: expected real numbers, got complex dtype {raw.dtype} (the imaginary part would be lost)")
    if raw.dtype.kind not in "biuf" and not _ml_float(raw.dtype):
        raise error(f"{name}: expected a numeric array, got dtype {raw.dtype}")
    arr = raw.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise error(f"{name}: entry {idx if len(idx) != 1 else idx[0]} is {arr[idx]}, expected a finite number")
    return arr


def check_distributions(name: str, laws, *, atol: float = 1e-5) -> np.ndarray:
    """Probability rows as float64: real and finite (:func:`check_real_array`, whose errors are
    :class:`DistributionError` here), non-negative, each row (last axis) summing to 1 within ``atol``
    (:func:`check_stochastic`) — or a typed error naming ``name`` and the row.  For laws given as
    log-probabilities see :func:`simlm.metrics.epsilon.check_laws`.  Booleans are refused (a mask passed for a
    law), as :func:`check_stochastic` refuses them: it reads the array as given, not its float64 cast."""
    check_real_array(name, laws, error=DistributionError)
    return check_stochastic(name, laws, atol=atol)


def physical_memory() -> int:
    """Bytes of physical memory on this host (the ceiling :func:`check_memory` enforces by default)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX hosts
        return 2**36


def check_memory(name: str, n_elements: int, *, itemsize: int = 4, limit: int | None = None, what: str = "") -> None:
    """Refuse, before allocating, a request for ``n_elements`` × ``itemsize`` bytes above ``limit`` (default:
    this host's physical memory), with a :class:`ConfigError` that states the size and the limit.  Sizes
    are Python integers, so the product cannot overflow."""
    need = int(n_elements) * int(itemsize)
    cap = physical_memory() if limit is None else int(limit)
    if need > cap or int(n_elements) >= 2**62:
        detail = f" ({what})" if what else ""
        raise ConfigError(f"{name}: this request needs {_bytes(need)}{detail}, over the limit of {_bytes(cap)} "
                          "(this host's memory); ask for fewer or shorter sequences, or a smaller world")


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
