"""The results store shared by the experiments: an append-only cell store that a rerun resumes from, the
config claim that keeps one store to one config, the log of the runs that filled it, and the results
directory itself."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import warnings
from pathlib import Path

from simlm.checks import nonempty_path
from simlm.errors import ConfigError
from simlm.jsonio import STRICT, claim_json, jsonable, locked, read_json, write_json_atomic


class CellStore:
    """Append-only JSONL of finished cells, ``{"cell": key, "records": [...], **info}`` per line.

    Each line is written whole, flushed and fsynced, so an interruption can only leave a torn last line:
    it is dropped on opening and its cell recomputed.  Any other line that is not a finished cell (not
    UTF-8, not JSON, not an object with a string ``cell`` and a list of record objects) is dropped with a
    warning, after the original file is copied to ``<name>.corrupt-<n>``; a finished cell is never
    dropped, even one whose newline was lost.  ``columns`` ({name: type(s)}, e.g. a sweep's
    :data:`~simlm.experiments.registry.ROW_TYPES`): the columns every record must have, of those types; a line
    whose records lack one is damaged too.

    Several processes may fill one store (an experiment split over processes): each append and each
    opening holds an exclusive lock on the store's directory, so an opening never takes another
    process's line in the middle of its write for a torn one, nor replaces the file under an append."""

    def __init__(self, path, columns=None):
        self.path, self.cells, self.columns = Path(path), {}, dict(columns or {})
        if not self.path.exists():
            return
        with _locked(self.path.parent):
            self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise ConfigError(f"out: cannot read the results store {self.path} ({err.strerror or err})") from None
        good, garbage = [], 0
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            entries = _cells(line, self.columns)
            for entry in entries or ():
                self.cells[entry["cell"]] = _restored(entry)
            if entries and len(entries) == 1:
                good.append(line + b"\n")
            elif entries:  # whole cells glued on one line (a lost newline between them): one line each
                good.extend(json.dumps(e, allow_nan=False).encode("utf-8") + b"\n" for e in map(_unrestored, entries))
            elif line.strip() and i < len(lines) - 1:  # the last piece has no newline: a torn write
                garbage += 1
        if b"".join(good) == raw:
            return
        backup = None
        try:  # the file repaired; a store that cannot be written (a read-only copy) is read as repaired and left
            if garbage:
                backup = _free_name(self.path, ".corrupt-")
                backup.write_bytes(raw)
            _replace_bytes(self.path, b"".join(good))
            saved = f"the original file is saved as {backup}" if garbage else ""
        except OSError as err:
            saved = f"the file is left as it is, since it cannot be rewritten ({err.strerror or err})" + (
                f"; a copy of it is at {backup}" if backup is not None and backup.exists() else "")
        if garbage:
            warnings.warn(f"{self.path}: dropped {garbage} corrupt line(s) that are not finished cells (their cells "
                          f"will be recomputed); {len(self.cells)} finished cells kept; {saved}",
                          RuntimeWarning, stacklevel=2)

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def __len__(self) -> int:
        return len(self.cells)

    def add(self, key: str, records: list, **info) -> None:
        self.cells[key] = append_cell(self.path, key, records, **info)

    def finished(self, key: str) -> bool:
        """Whether ``key`` is stored with its result: a cell stored with an ``error`` has none, and a rerun
        computes it again (the later line replaces it)."""
        return key in self.cells and not self.cells[key].get("error")

    def codes(self) -> dict:
        """How many of the stored cells each code fingerprint computed (the ``code`` a sweep stores with each
        cell, :func:`~simlm.experiments.sweep.code_fingerprint`); ``None`` counts the cells stored without
        one.  (A cell's ``run``, its run's index in ``environment.json``, is not used: a lost or rewritten
        run log renumbers the runs.)"""
        counts = {}
        for entry in self.cells.values():
            counts[entry.get("code")] = counts.get(entry.get("code"), 0) + 1
        return counts

    def records(self, order=None) -> list[dict]:
        """Every stored record, cell by cell: the cells named in ``order`` (keys) in that order, then the rest in
        the order they were first stored (without ``order``, all of them so: the order jobs finished in, which
        varies with the executor and the machine's timing)."""
        first = [k for k in dict.fromkeys(order or ()) if k in self.cells]
        named = set(first)
        keys = first + [k for k in self.cells if k not in named]
        return [r for k in keys for r in self.cells[k]["records"]]

    def errors(self) -> list[dict]:
        """``{"cell", "error"}`` of every stored cell that failed, in the order they were finished."""
        return [{"cell": key, "error": entry["error"]} for key, entry in self.cells.items() if entry.get("error")]


def append_cell(path, key: str, records: list, **info) -> dict:
    """Append the finished cell ``{"cell": key, "records": records, **info}`` to the store at ``path`` as one
    whole, flushed and fsynced line, under the store's lock, without reading the store; returns the entry.
    Any process that sees the results directory may call it (a sweep's jobs store each cell as it ends).
    A store that does not end in a newline (a worker killed mid-write left a torn line) gets one first, so
    that this cell's line is whole: the torn line alone is dropped when the store is read."""
    path = Path(path)
    if not isinstance(key, str):  # a line without a string cell is dropped as corrupt when the store is read
        raise ConfigError(f"key: expected the cell's key as a string, got {type(key).__name__} {key!r}")
    nonfinite = _nonfinite(records)
    entry = jsonable({"cell": key, "records": records, **info, **({"nonfinite": nonfinite} if nonfinite else {})})
    with _locked(path.parent), open(path, "a+b") as f:
        torn = f.seek(0, os.SEEK_END) > 0 and f.seek(-1, os.SEEK_END) >= 0 and f.read(1) != b"\n"
        f.write((("\n" if torn else "") + json.dumps(entry, allow_nan=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    return _restored(entry)


def _nonfinite(records) -> list:
    """``[[i, column, "inf" | "-inf" | "nan"], …]``: the non-finite floats of the records' columns, which strict
    JSON stores as null — a NaN measured value, an infinite one and a missing one read alike, and an infinite
    bound (trivially held) as no bound (a review, 2026-12-06) — with a fourth entry, the path of list indices
    and dict keys, for one inside a column's list or table (a grid's NaN read null, 2026-12-07).  Stored beside
    the records (``"nonfinite"``) and put back by :func:`_restored`; a store written before it reads as it did
    (nulls)."""
    marks = []
    for i, r in enumerate(jsonable(records, keep_nonfinite=True)):
        for k, v in r.items() if isinstance(r, dict) else ():
            marks += [[i, k, repr(x)] + ([path] if path else []) for path, x in _floats(v) if not math.isfinite(x)]
    return marks


def _floats(value, path=()):
    """``(path, x)`` for every float ``x`` in a JSON-able ``value`` (lists and dicts walked; path: their indices and
    keys, [] for ``value`` itself)."""
    if isinstance(value, float):
        yield list(path), value
    elif isinstance(value, (list, dict)):
        for key, x in enumerate(value) if isinstance(value, list) else value.items():
            yield from _floats(x, (*path, key))


def _restored(entry: dict) -> dict:
    """``entry`` with the non-finite values :func:`_nonfinite` recorded put back in its records (a null only,
    at a path that leads to one, and only "inf", "-inf" and "nan": anything else in the list is ignored)."""
    marks = entry.get("nonfinite")
    if not isinstance(marks, list):
        return entry
    records = entry["records"]
    for mark in marks:
        if not (isinstance(mark, list) and len(mark) in (3, 4) and isinstance(mark[0], int)
                and 0 <= mark[0] < len(records) and isinstance(mark[1], str) and mark[2] in ("inf", "-inf", "nan")
                and (len(mark) == 3 or isinstance(mark[3], list))):
            continue
        *path, last = [mark[1], *(mark[3] if len(mark) == 4 else ())]
        holder = records[mark[0]]
        for key in path:
            holder = _child(holder, key)
        if _child(holder, last) is None:
            holder[last] = float(mark[2])
    return entry


_ABSENT = object()


def _child(holder, key):
    """``holder[key]`` for a dict's str key or a list's index, else a marker that is not None."""
    if isinstance(holder, dict) and isinstance(key, str):
        return holder.get(key, _ABSENT)
    if isinstance(holder, list) and isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(holder):
        return holder[key]
    return _ABSENT


def _entries(path: Path):
    """The finished cells stored at ``path``, read only (a damaged line is skipped, not repaired)."""
    if not path.exists():
        return []
    with _locked(path.parent):
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"out: cannot read the results store {path} ({err.strerror or err})") from None
    return [entry for line in raw.split(b"\n") for entry in (_cells(line) or ())]


def _cell(line: bytes, columns=None):
    """The finished cell on ``line``, or None if it is not one."""
    try:  # strict: a NaN token (never written: non-finite values are null with their marks) is a damaged line
        entry = STRICT.decode(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError, NaN or Infinity
        return None
    return entry if _is_cell(entry, columns) else None


def _is_cell(entry, columns=None) -> bool:
    """Whether ``entry`` is a finished cell: a string key, a ``code`` that is text or null, and records that are
    rows — a measured value and a bound that are numbers or null, a verdict and a triviality that are true,
    false or null (a line edited to "measured": "abc" was tabulated as it was, beside holds = true; "trivial":
    "false" was counted trivial), and each of ``columns`` ({name: type(s)}) of its type (a sweep's rows:
    a row without its ``check`` ended ``simlm report`` in a KeyError, a review 2026-12-07)."""
    return (isinstance(entry, dict) and isinstance(entry.get("cell"), str) and isinstance(entry.get("records"), list)
            and isinstance(entry.get("code"), (str, type(None)))
            and all(row_problem(r, columns) is None for r in entry["records"]))


def row_problem(r, columns=None) -> str | None:
    """Why the stored record ``r`` is no row (None if it is one): the rule :func:`_is_cell` reads a store by, and
    the sweep writes by (a row it would drop on reading is its cell's error, not written)."""
    if not isinstance(r, dict):
        return f"expected a dict, got {type(r).__name__}"
    for k in ("measured", "bound"):
        if not _number_or_null(r.get(k)):
            return f"{k} = {r.get(k)!r}: expected a number or null"
    for k in ("holds", "trivial"):
        if not isinstance(r.get(k), (bool, type(None))):
            return f"{k} = {r.get(k)!r}: expected true, false or null"
    for k, t in (columns or {}).items():
        if not isinstance(r.get(k), t) or isinstance(r.get(k), bool):
            names = " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))
            return f"{k} = {r.get(k)!r}: expected {names}"
    return None


def _number_or_null(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _cells(line: bytes, columns=None) -> list | None:
    """The finished cells on ``line``: one, or several written one after another with the newlines between
    them lost (both were dropped as one corrupt line, a review 2026-12-06); None unless the whole line is
    finished cells."""
    entry = _cell(line, columns)
    if entry is not None:
        return [entry]
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    at, out = 0, []
    while at < len(text):
        try:
            entry, at = STRICT.raw_decode(text, at)
        except ValueError:
            return None
        if not _is_cell(entry, columns):
            return None
        out.append(entry)
        while at < len(text) and text[at].isspace():
            at += 1
    return out or None


def _unrestored(entry: dict) -> dict:
    """``entry`` as it is stored: :func:`_restored`'s values null again (strict JSON), its marks kept."""
    return jsonable(entry)


def _free_name(path: Path, infix: str) -> Path:
    n = 1
    while (candidate := path.with_name(f"{path.name}{infix}{n}")).exists():
        n += 1
    return candidate


#: the lock file of a results directory (:func:`_locked`)
LOCK_NAME = ".cells.lock"


def _locked(directory: Path):
    """The results store's lock (:func:`~simlm.jsonio.locked`): held by each append and each opening."""
    return locked(directory, LOCK_NAME, what="the results store",
                  advice="do not fill it from several processes at once")


#: the file a running sweep holds locked in its results directory
RUN_LOCK_NAME = ".sweep.lock"


@contextlib.contextmanager
def running(out: Path, name: str = "out"):
    """Hold ``out/.sweep.lock`` (``flock``, not waited for) while a sweep runs into ``out``: a second sweep into
    the directory meanwhile is refused with a :class:`ConfigError` naming the argument ``name``, and so is a
    ``simlm report`` of it (its tables, written from the cells stored so far, could land after the sweep's
    own).  Two at once computed every cell twice, and a worker lost in one wrote its jobs' cells as failed over
    the other's finished ones (a review, 2026-12-06).  Where no lock can be had (no ``fcntl``, a read-only
    directory, some NFS mounts) the sweep goes on unguarded, as the store's own lock does."""
    fd = None
    try:
        import fcntl

        fd = os.open(out / RUN_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{name}: another sweep is running into {out} (it holds {out / RUN_LOCK_NAME}); wait for it "
                          "to end" + (", or use another --out" if name == "out" else "")) from None
    except (ImportError, OSError):
        if fd is not None:
            os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _replace_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def results_dir(out, field: str = "out") -> Path:
    """``out`` as a directory that exists (created if needed), or :class:`ConfigError` naming ``field`` (the
    option that gave it: a command line writes it as its flag).  An empty path is refused: ``Path('')`` is the
    working directory, where a run given ``out=''`` wrote its files."""
    out = nonempty_path(out, field)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        what = "the results directory" if field == "out" else "a directory"
        raise ConfigError(f"{field}: cannot use {out} as {what} ({err.strerror or err})") from None
    return out


def _canonical(value):
    """``value`` with every integral float written as an int: configs the claim finds equal (``1 == 1.0``)
    get one digest."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def config_digest(config: dict) -> str:
    """16 hex digits of SHA-256 over ``config`` as canonical JSON (sorted keys, integral floats as ints): the
    tag each cell of a results directory carries (``"config"``), so no cell is ever read as another
    config's, and one config spelled ``1`` or ``1.0`` (equal to :func:`~simlm.jsonio.claim_json`) is one."""
    text = json.dumps(_canonical(jsonable(config)), sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def claim(path, config: dict, *, backup=None, cells=None) -> str:
    """A results directory belongs to one config: write ``config`` to ``path`` on first use, and raise
    :class:`~simlm.errors.ConfigError` naming the differing fields if a different one is there.  A corrupt
    ``path`` is restored from the ``"config"`` entry of ``backup`` (the summary a finished run wrote,
    holding the same config) with a warning, the corrupt file kept as ``<name>.corrupt-<n>``; without one,
    the error names the file and the way to recover.  Returns :func:`config_digest` of ``config``.

    With ``cells`` (the directory's :class:`CellStore` path) the stored cells must be this config's too: a
    cell tagged with another digest is refused, and so is an untagged one (stored before cells were
    tagged) unless the config it belongs to is known to be this one — ``path`` was there, or ``backup``
    holds this config — so a lost ``path`` cannot let another config reuse the cells.

    The whole claim holds the store's lock: two sweeps started at once into one new directory both saw no
    ``path`` and both went on, each filling it with its own config's cells under one ``sweep.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        return _claim(path, config, backup, cells)


def _claim(path: Path, config: dict, backup, cells) -> str:
    digest, first = config_digest(config), not path.exists()
    if cells is not None and first:
        _claim_cells(Path(cells), digest, untagged=_saved_config(backup) == json.loads(json.dumps(jsonable(config))))
    fix = (f"if you know the command that started {path.parent}, delete {path} and rerun exactly that command "
           "(its finished cells are reused where they are tagged with that config — cells stored before "
           "cells were tagged cannot be told apart then, and are refused); otherwise use another --out")
    if path.exists():
        try:
            if not isinstance(read_json(path, what="out", fix=fix), dict):
                raise ConfigError(f"out: {path} is corrupt (not a JSON object); {fix}")
        except ConfigError:
            saved = _saved_config(backup)
            if saved is None:
                raise
            kept = _free_name(path, ".corrupt-")
            os.replace(path, kept)
            write_json_atomic(path, saved)
            warnings.warn(f"{path} was corrupt; restored it from the config in {backup} (the corrupt file is "
                          f"kept as {kept})", RuntimeWarning, stacklevel=2)
    claim_json(path, jsonable(config), owner=f"out: {path.parent} holds results of a different config",
               fix="use another --out")
    if cells is not None and not first:
        _claim_cells(Path(cells), digest, untagged=True)
    return digest


def _claim_cells(cells: Path, digest: str, *, untagged: bool) -> None:
    """Refuse a store holding cells of another config than the one of ``digest`` (untagged cells are its
    own when ``untagged``)."""
    foreign = [e["cell"] for e in _entries(cells) if e.get("config", digest if untagged else None) != digest]
    if foreign:
        raise ConfigError(f"out: {cells.parent} holds {len(foreign)} finished cell(s) of another config, or of one "
                          f"it no longer records (its sweep.json and summary.json are missing or differ), e.g. "
                          f"{foreign[0]!r}; use another --out")


def read_runs(path) -> list[dict]:
    """The runs logged in ``path`` (``{"runs": [...]}``: one environment per run that filled a results
    directory, oldest first); [] if there is none yet, and a file of the single-run form (one environment)
    is that run.  A corrupt log is a :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.exists():
        return []
    logged = read_json(path, what="out")
    runs = logged.get("runs", [logged]) if isinstance(logged, dict) else None
    if not (isinstance(runs, list) and all(isinstance(r, dict) for r in runs)):
        raise ConfigError(f"out: {path} is corrupt (not a log of runs)")
    return runs


def log_run(path, run: dict) -> list[dict]:
    """Append ``run`` to the runs logged in ``path`` and return them all, ``run`` last, under the results
    store's lock (two sweeps started at once into one directory each log their run; unlocked, one
    rewrite could drop the other's).  A corrupt log is kept as ``<name>.corrupt-<n>`` with a warning and
    started afresh (it holds no results)."""
    path = Path(path)
    with _locked(path.parent):
        try:
            runs = read_runs(path)
        except ConfigError:
            kept = _free_name(path, ".corrupt-")
            os.replace(path, kept)
            warnings.warn(f"{path} was corrupt; the runs it logged are lost (the file is kept as {kept})",
                          RuntimeWarning, stacklevel=2)
            runs = []
        runs = runs + [run]
        write_json_atomic(path, {"runs": runs})
    return runs


def update_run(path, index: int, **fields) -> None:
    """Add ``fields`` to the run logged at ``index`` in ``path``, re-read under the store's lock (so that
    the runs other processes logged meanwhile are kept)."""
    path = Path(path)
    with _locked(path.parent):
        runs = read_runs(path)
        if not 0 <= index < len(runs):
            raise ConfigError(f"out: {path} logs {len(runs)} run(s), not run {index} (was it replaced?)")
        runs[index] = {**runs[index], **fields}
        write_json_atomic(path, {"runs": runs})


def _saved_config(results) -> dict | None:
    """The ``"config"`` object of the JSON file ``results``, or None if there is no readable one."""
    try:
        saved = read_json(results)["config"] if results is not None and Path(results).exists() else None
    except (ConfigError, TypeError, KeyError):
        return None
    return saved if isinstance(saved, dict) else None


__all__ = ["CellStore", "append_cell", "claim", "config_digest", "log_run", "read_runs", "results_dir", "update_run"]
