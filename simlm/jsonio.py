"""Strict JSON on disk, written atomically: the one home for run-directory files (no pickle anywhere).

- :func:`jsonable` — numpy and JAX arrays and scalars made Python, non-finite floats made ``None`` (strict JSON, which
  ``json.loads`` in any language reads).
- :func:`write_json_atomic` / :func:`write_text_atomic` — temporary file, fsync, rename: a reader sees the old file or the new one,
  never a torn one.
- :func:`read_json` — a file back, or a :class:`~simlm.errors.ConfigError` naming the file and what is wrong.
- :func:`claim_json` — a directory belongs to one configuration.
- :func:`locked` — one process at a time in a directory (an advisory ``flock``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import threading
import warnings
from pathlib import Path

import jax
import numpy as np

from simlm.errors import ConfigError


def jsonable(x, *, keep_nonfinite: bool = False):
    """``x`` with numpy scalars and arrays made Python and non-finite floats made ``None`` (ml_dtypes'
    bfloat16 and float8 scalars too); dicts, lists and tuples are converted recursively, a dict's numpy,
    number, bool and None keys made the strings JSON writes for them (as they read back).  With
    ``keep_nonfinite`` NaN and ±inf stay floats (for what records them beside, as the cell store does)."""
    if isinstance(x, dict):
        out = {_key(k): jsonable(v, keep_nonfinite=keep_nonfinite) for k, v in x.items()}
        if len(out) != len(x):  # 1 and "1" (True and "true", None and "null") are one JSON key: one value was lost
            raise ConfigError(f"keys: {sorted(map(repr, x))} collide as JSON object keys (a value would be lost)")
        return out
    if isinstance(x, (list, tuple)):
        return [jsonable(v, keep_nonfinite=keep_nonfinite) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(x).tolist(), keep_nonfinite=keep_nonfinite)
    if isinstance(x, (float, np.floating)):
        return float(x) if keep_nonfinite or math.isfinite(x) else None
    # bfloat16 is no np.floating: its item is
    return jsonable(x.item(), keep_nonfinite=keep_nonfinite) if isinstance(x, np.generic) else x


def _key(k):
    """A dict key as JSON writes it: a str as it is; a number, bool or None as its JSON text ("1", "true",
    "null"), numpy scalars first made Python; anything else as given (json refuses it: a TypeError)."""
    k = k.item() if isinstance(k, np.generic) else k
    return k if isinstance(k, str) or not (k is None or isinstance(k, (bool, int, float))) else json.dumps(k)


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and an atomic rename.  The temporary file
    is this thread's own, so that writers of one file in several processes each rename a whole file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: no half-written temporary file left in the directory
        tmp.unlink(missing_ok=True)
        raise


def json_text(payload) -> str:
    """``jsonable(payload)`` as the strict, sorted, indented JSON text :func:`write_json_atomic` writes
    (a TypeError or ValueError for what JSON cannot hold)."""
    return json.dumps(jsonable(payload), indent=2, sort_keys=True, allow_nan=False)


def read_back(payload):
    """``payload`` as it reads back from the file :func:`write_json_atomic` writes (tuples as lists, numpy
    values as Python, non-finite floats as None), so that it compares equal to what is on disk; a TypeError
    or ValueError for what JSON cannot hold (:func:`json_text`)."""
    return json.loads(json_text(payload))


def write_json_atomic(path, payload) -> None:
    """Write ``jsonable(payload)`` to ``path`` atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json_text(payload))


def _no_constant(name: str):
    raise ValueError(f"{name} is not strict JSON (simlm writes a non-finite number as null)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 overflows to inf: the same non-finite number, spelt otherwise
        raise ValueError(f"{text} is not a finite number (simlm writes a non-finite number as null)")
    return v


#: the decoder of what simlm wrote: strict JSON, so ``NaN``/``Infinity`` tokens and numbers that overflow to ±inf
#: (``1e999``; never written by simlm, whose writers refuse them) are a ValueError — an edited file is corrupt,
#: not a NaN or an infinity read back as a number
STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def read_json(path, *, what: str = "file", fix: str = ""):
    """The JSON value in ``path``; a :class:`ConfigError` naming the file if it is unreadable, not UTF-8
    or not strict JSON (:data:`STRICT`; ``fix``, if given, says how to recover)."""
    path = Path(path)
    try:
        return STRICT.decode(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: JSONDecodeError, NaN or Infinity
        hint = f"; {fix}" if fix else ""
        raise ConfigError(f"{what}: {path} is unreadable or corrupt ({type(err).__name__}: {err}){hint}") from None


def claim_json(path, payload: dict, *, owner: str, fix: str) -> None:
    """A directory belongs to one configuration: write ``payload`` to ``path`` on first use; later, raise
    :class:`ConfigError` "``owner`` (differs in [keys]); ``fix``" if ``path`` holds a different one."""
    path = Path(path)
    mine = json.loads(json.dumps(jsonable(payload)))
    if path.exists():
        old = read_json(path, what=owner.split(":")[0], fix=f"delete {path} only if you mean to start afresh")
        if not isinstance(old, dict):
            raise ConfigError(f"{owner.split(':')[0]}: {path} does not hold a JSON object; "
                              f"delete {path} only if you mean to start afresh")
        if old != mine:
            diff = differing(old, mine)
            raise ConfigError(f"{owner} (differs in {diff}); {fix}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, mine)


_held = threading.local()  # the locks this thread holds, by (directory, name): each is re-entrant
_unlockable_warned = set()


@contextlib.contextmanager
def locked(directory, name: str, *, what: str, advice: str):
    """An exclusive advisory lock (``flock``) on ``directory/name`` for the duration, re-entrant within a
    thread; another process asking for it waits.  Where it cannot be had — no ``fcntl`` (not POSIX), a
    directory that is read-only (nobody can be writing there) or a filesystem without ``flock`` (some NFS
    mounts) — the caller goes on unlocked, as before locks existed, with one warning per lock where it
    could not be taken for a write: "cannot lock ``what``; going on unlocked — ``advice``"."""
    key = (os.path.realpath(directory), name)  # one key per directory however it is spelt (.., symlinks)
    held = getattr(_held, "locks", None)
    if held is None:
        held = _held.locks = {}
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    fd = None
    try:
        import fcntl

        fd = os.open(Path(directory) / name, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError) as err:
        if fd is not None:
            os.close(fd)
            fd = None
        if not (isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EROFS, errno.EPERM)) \
                and key not in _unlockable_warned:
            _unlockable_warned.add(key)
            warnings.warn(f"{directory}: cannot lock {what} ({err}); going on unlocked — {advice}", RuntimeWarning,
                          stacklevel=4)
    held[key] = 1
    try:
        yield
    finally:
        held[key] = 0
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


_ABSENT = object()  # a key one table lacks: unlike a null it holds, never equal to the other side's value


def differing(old, new, where: str = "") -> list:
    """The dotted paths (``lms.analytic.eps``) at which two JSON values differ, as deep as both are tables (the
    refusal named the top-level key alone: any edit of an ε read "differs in ['lms']")."""
    if isinstance(old, dict) and isinstance(new, dict):
        return sorted(p for k in set(old) | set(new) if old.get(k, _ABSENT) != new.get(k, _ABSENT)
                      for p in differing(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{where}.{k}" if where else k))
    return [where]


__all__ = ["differing", "jsonable", "json_text", "read_back", "write_text_atomic", "write_json_atomic", "read_json",
           "STRICT", "claim_json", "locked"]
