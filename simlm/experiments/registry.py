"""The registry of *checks*: what the sweep runner evaluates in every (world, LM) cell.

A check is a small function from one paper's module — ``run(cell) -> rows`` — registered under a name
with the paper it tests.  The runner owns looping, storing, resuming and plotting; a new paper module adds
a check and nothing else.  Every row a check returns is a dict with at least

    quantity   what was measured (``"tv"``, ``"any-lm:loss_natural@B*"``, ``"head_accuracy"`` …)
    measured   its value (a float)
    bound      the value the paper's statement bounds it by, or None where the quantity has no bound
    holds      measured ≤ bound + atol (None without a bound; ``atol`` 0 unless the check forgives rounding)
    trivial    True where no LM could violate the bound (the row holds and the bound is at least the
               quantity's largest possible value), None without a bound or where that largest value is
               not known (such a row counts as one that could fail) — a check that cannot fail is
               reported as such

and may add its own columns.  The runner adds the shared ones (:data:`COLUMNS`).  A check that builds its own
family of LMs inside the cell (LMs defined on enumerated contexts only, or one experiment's ladder) names
each row's LM itself: its ``lm``, ``lm_seed``, ``eps`` and ``eps_se`` take the place of the cell's (None
where such a row leaves one out: the cell's LM is not its LM).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable

from simlm.checks import SEED_LIMIT, _real, check_non_negative
from simlm.errors import ConfigError

#: the columns every tidy row has, in this order (check-specific columns follow).
COLUMNS = ("paper", "check", "world", "world_seed", "lm", "lm_seed", "eps", "eps_se", "quantity", "measured",
           "bound", "holds", "trivial")

#: the shared columns a sweep's report reads from every stored row, with their types: a stored row without
#: one, or with another type (a hand-edited cells.jsonl: a KeyError or TypeError in ``simlm report``), makes
#: its line a damaged one, dropped with a warning and its cell recomputed (:class:`~simlm.experiments.store.
#: CellStore`'s ``columns``)
ROW_TYPES = {"check": str, "world": str, "lm": str, "quantity": str, "eps": (int, float, type(None))}


@dataclasses.dataclass(frozen=True)
class Cell:
    """What a check sees: the ``world`` (with its ``world_spec``), the ``lm`` (with its ``lm_spec`` — kind,
    the law its ε is defined on, seed), held-out ``tokens (n, T)`` drawn from the world with the cell's
    seed, the check's ``options`` and the cell's integer ``seed``; ``part`` — which of the check's parts
    this cell is (None for a check without parts); ``workdir`` — a directory of the results directory the
    check may keep reusable artefacts in (e.g. the checkpoints of models it trains: a rerun finds them);
    ``progress`` — whether the check may show progress bars (in-process runs with progress on)."""

    world: Any
    world_spec: dict
    lm: Any
    lm_spec: dict
    tokens: Any
    options: dict
    seed: int
    part: str | None = None
    workdir: Any = None
    progress: bool = False

    @property
    def is_oracle(self) -> bool:
        """Whether the cell's LM is its world itself (``WorldLM(world)``): ε = 0, which float arithmetic reads
        as rounding (~1e-15) — no slack to use, no adversary to build at it."""
        from simlm.models import WorldLM

        return isinstance(self.lm, WorldLM) and self.lm.world is self.world


@dataclasses.dataclass(frozen=True)
class Check:
    """A registered check: ``name`` ("paper/what"), the ``paper`` it tests, a one-line ``description``,
    its ``defaults`` (options a config may override), ``run(cell) -> rows``, ``applies(world_spec,
    lm_spec) -> str`` ("" when it applies, else the reason it does not, e.g. "needs a masked LM") and
    ``parts(world_spec, lm_spec, options) -> [str]``: a check whose work in one (world, LM) pair is large
    splits it into parts (e.g. one per task seed), each its own cell — stored, skipped on reruns and
    counted by the progress bar on its own.  Without ``parts`` a pair is one cell.  ``part_jobs``: each
    part is a job of its own where the sweep's jobs run in parallel on this machine's files (a process
    pool), taken in part order (every pair's first part, then every pair's second, …), instead of one job
    per pair — for parts large enough that a pair's job would be too coarse to balance the workers, which
    share their common work (a world's training in ``workdir``) through files (the trainer locks its
    directory: a part that needs a training another part is running waits for it).  ``validate(options)``
    raises a :class:`~simlm.errors.ConfigError` for bad options when the config is parsed, before a
    results directory is claimed; ``validate_world(options, world_spec, world)`` likewise for options that
    depend on a world of the config (e.g. more words than its vocabulary), called with each built world.
    ``lm_input(options, world_spec, data) -> (tokens, positions)``: the longest input the check gives the
    cell's LM — its world tokens and the model positions they take (a prepended MASK, a prompt's prefix);
    without it, the cell's held-out tokens through a next-token or masked law (``data["length"]`` both).
    The sweep trains its transformers on inputs that long, and refuses a model or training length that
    would leave a position the check reads untrained or out of the model.  ``oracle_rows``: what the check
    reports in the oracle's cell only (a property of the world, once per world); a config that runs the check
    without the oracle is refused naming it, instead of a sweep that never judges it."""

    name: str
    paper: str
    description: str
    run: Callable[[Cell], list]
    defaults: dict
    applies: Callable[[dict, dict], str]
    parts: Callable[[dict, dict, dict], list] | None = None
    validate: Callable[[dict], None] | None = None
    part_jobs: bool = False
    validate_world: Callable[[dict, dict, object], None] | None = None
    lm_input: Callable[[dict, dict, dict], tuple[int, int]] | None = None
    oracle_rows: str = ""

    def input_length(self, options: dict, world_spec: dict, data: dict) -> tuple[int, int]:
        """``(tokens, positions)`` of the longest input this check gives an LM (``lm_input``)."""
        if self.lm_input is None:
            return int(data["length"]), int(data["length"])
        tokens, positions = self.lm_input(options, world_spec, data)
        return int(tokens), int(positions)


_REGISTRY: dict[str, Check] = {}


def register(name: str, *, paper: str, description: str, defaults: dict | None = None,
             applies: Callable[[dict, dict], str] | None = None, parts: Callable[[dict, dict, dict], list] | None = None,
             validate: Callable[[dict], None] | None = None, part_jobs: bool = False,
             validate_world: Callable[[dict, dict, object], None] | None = None,
             lm_input: Callable[[dict, dict, dict], tuple[int, int]] | None = None, oracle_rows: str = ""):
    """Decorator: register ``run(cell) -> rows`` as the check ``name`` (see :class:`Check`)."""
    def wrap(run):
        old = _REGISTRY.get(name)
        if old is not None and (old.run.__module__, old.run.__qualname__) != (run.__module__, run.__qualname__):
            raise ConfigError(f"check: {name!r} is registered twice ({old.run.__module__}.{old.run.__qualname__} "
                              f"and {run.__module__}.{run.__qualname__})")
        # the same function again: its module was imported anew (a reload, or a retry after a failed import)
        _REGISTRY[name] = Check(name, paper, description, run, dict(defaults or {}), applies or (lambda w, l: ""),
                                parts, validate, part_jobs, validate_world, lm_input, oracle_rows)
        return run
    return wrap


def option_ranges(check: str, minimums: dict | None = None, choices: dict | None = None):
    """A check's ``validate``: each option of ``minimums`` an integer at least its minimum, each of ``choices``
    one of its values (their types are checked against the defaults by the sweep's parser), or a
    :class:`ConfigError` naming ``checks.<check>.<option>`` — before anything runs, not in a failed cell."""
    def validate(options: dict) -> None:
        for key, low in (minimums or {}).items():
            if key in options and options[key] < low:
                raise ConfigError(f"checks.{check}.{key}: expected an integer ≥ {low}, got {options[key]!r}")
            # a seed beyond a PRNG key's range failed in every cell (JSON can write 2**70; the sweep caps its own)
            if key.endswith("seed") and key in options and options[key] >= SEED_LIMIT:
                raise ConfigError(f"checks.{check}.{key}: expected a seed ≤ 2**63 − 1, got {options[key]!r}")
        for key, allowed in (choices or {}).items():
            if key in options and options[key] not in allowed:
                raise ConfigError(f"checks.{check}.{key}: expected one of {list(allowed)}, got {options[key]!r}")
    return validate


def checks() -> dict[str, Check]:
    """Every registered check by name (importing the modules that register the built-in ones)."""
    importlib.import_module("simlm.experiments.checks")  # registers the built-in checks on first import
    return dict(_REGISTRY)


def get_check(name: str) -> Check:
    known = checks()
    if name not in known:
        raise ConfigError(f"checks: unknown check {name!r}; registered: {', '.join(sorted(known))}")
    return known[name]


#: an ε at most this (nats) is float rounding of 0 — the oracle's reads ~1e-15 — not an LM's excess: the checks
#: give it no slack share and build no adversary at it.  (saunshi/natural-task used its loss tolerance atol =
#: 1e-7, another unit: an analytic LM at ε = 5e-8 lost its real share of 0.0024; a review, 2026-12-06.)
EPS_ROUNDING = 1e-12

#: the columns :func:`row` computes, which its ``extra`` columns may not set.
_COMPUTED = ("holds", "trivial", "slack_used", "atol")


def judged(measured: float, bound: float, atol: float) -> bool:
    """A bounded row's verdict: measured ≤ bound + atol (False for a NaN on either side)."""
    return bool(measured <= bound + atol)


def row(quantity: str, measured, bound=None, *, maximum=None, baseline=None, atol=0.0, **extra) -> dict:
    """One tidy row: ``holds`` = measured ≤ bound + ``atol`` (False for a NaN measured value or bound) and
    ``trivial`` = the row holds, bound ≥ ``maximum`` − ``atol`` (``maximum``: the largest value the quantity
    can take, when known) and measured ≤ ``maximum`` + ``atol`` are filled in from the numbers, None without a
    bound (``trivial`` also None without a ``maximum``, except under a +∞ bound, which no finite value fails:
    trivial): a violated row is never trivial, nor one whose measured value disproves the maximum.
    ``atol`` (≥ 0, kept as the row's ``atol`` column) is the rounding the verdict forgives — a check whose
    bound equals its measured value at ε = 0 (τ against τ recomputed) passes the tolerance its own verdict
    uses, so that row is not decided by the last bits of a float; 0 judges exactly.
    ``baseline`` is the value the bound allows at ε = 0 (e.g. τ for a transfer bound τ + B√(2ε/γ)), kept as the
    row's ``baseline`` column; with it the row's ``slack_used`` = (measured − baseline) / (bound − baseline) is
    the share of the slack the LM uses, None where bound − baseline ≤ ``atol`` (no slack beyond rounding: such
    a row is judged by ``holds`` alone).  ``measured``, ``bound``, ``maximum``, ``baseline`` and ``atol`` must be
    real numbers (``atol`` finite and ≥ 0) and ``extra`` may not set a computed column (``holds``, ``trivial``,
    ``slack_used``, ``atol``), or a :class:`ConfigError` names them."""
    measured = _real("measured", measured, "a real number")
    atol = check_non_negative("atol", atol, finite=True)
    clash = sorted(set(extra) & set(_COMPUTED))
    if clash:
        raise ConfigError(f"row {quantity!r}: extra columns {clash} would overwrite the computed ones; rename them")
    if bound is None:
        return {"quantity": quantity, "measured": measured, "bound": None, "holds": None, "trivial": None, **extra}
    bound = _real("bound", bound, "a real number")
    base = 0.0 if baseline is None else _real("baseline", baseline, "a real number")
    maximum = None if maximum is None else _real("maximum", maximum, "a real number")
    holds = judged(measured, bound, atol)
    # trivial: no value of the quantity could fail the bound — it reaches the quantity's largest value, or +∞
    if maximum is None:
        trivial = True if bound == math.inf and measured < math.inf else None
    else:
        # within the rounding the verdict forgives: a bound equal to the maximum, summed in another order, read
        # 1 ulp below it and non-trivial (a review, 2026-12-06)
        trivial = bool(holds and bound >= maximum - atol and measured <= maximum + atol)
    used = (measured - base) / (bound - base) if bound - base > atol else None
    kept = {} if baseline is None else {"baseline": base}  # slack_used recomputable from the row alone
    return {"quantity": quantity, "measured": measured, "bound": bound, "holds": holds, "trivial": trivial,
            "slack_used": used, "atol": atol, **kept, **extra}


def experiment_sweep(name: str, worlds: list, check: str, options: dict) -> dict:
    """The sweep config (a dict, as TOML or JSON gives it) of a paper experiment that builds its own LMs in
    the oracle's cell of each world: ``worlds``, the oracle as the one LM source and ``check`` with its
    ``options`` (the held-out set is minimal: the check draws its own data)."""
    return {"name": name, "seed": 0, "data": {"n_sequences": 2, "length": 2}, "worlds": worlds,
            "lms": {"oracle": True}, "checks": {check: options}}


#: the shared columns a record of an experiment does not keep (``world`` it does, under the same name).
_SHARED_ONLY = tuple(c for c in COLUMNS if c != "world") + ("slack_used", "atol")


def tidy_columns(record: dict, renamed: dict) -> dict:
    """An experiment's ``record`` as a row's own columns: its keys that are also shared columns renamed
    (``renamed``: record key → column name), so the row's shared columns keep their meaning."""
    return {renamed.get(k, k): v for k, v in record.items()}


def record_of(tidy_row: dict, renamed: dict) -> dict:
    """The inverse of :func:`tidy_columns`: a row's own columns (and ``world``), names restored."""
    back = {v: k for k, v in renamed.items()}
    return {back.get(k, k): v for k, v in tidy_row.items() if k not in _SHARED_ONLY}


__all__ = ["COLUMNS", "ROW_TYPES", "Cell", "Check", "register", "checks", "get_check", "row", "judged",
           "experiment_sweep", "tidy_columns", "record_of", "option_ranges"]
