"""The sweep: worlds × LMs at controlled ε × registered checks, into one tidy, resumable results directory.

A config (TOML or JSON; :func:`parse_config` says what each key means and validates it before anything
runs) names the worlds, the LM sources and the checks.  The runner

1. trains each ``[lms.trained]`` ladder once per world (Orbax checkpoints under ``<out>/train/``, resumed
   and reused on reruns, never retrained),
2. builds every (world, LM) pair — the oracle (ε = 0), analytic LMs calibrated to an exact ε on the sweep's
   held-out tokens, and every ladder rung a trained model reached — and runs every check that applies,
3. appends each finished (world, LM, check) cell to ``<out>/cells.jsonl`` as soon as it ends (one fsynced
   line per cell, tagged with the config's digest; a torn last line is dropped on reopening, so a SIGKILL
   loses no finished cell and a rerun skips them — jobs on a Ray cluster joined by address are the
   exception: their cells are stored when their (world, LM) job returns).  A cell whose check failed
   (stored with an ``error`` and no rows) is computed again by every rerun,
4. writes the tidy table ``results.csv`` (and ``results.parquet`` where pyarrow is installed), one row per
   (cell, quantity) with the columns of :data:`~simlm.experiments.registry.COLUMNS`, beside
   ``environment.json`` (``{"runs": [...]}``: per run — the first and every rerun — its time, package, jax
   and Python versions, the other packages, CPU, flags and executor that decide a float's rounding
   (:func:`environment`), devices and how many cells it computed) and ``worlds/<name>.json`` (the worlds'
   parameters, fingerprint and the digest of their held-out tokens), so a sweep can be rerun exactly.
   ``sweep.json`` holds the config: running a different config into the same directory is refused, and
   so are cells tagged with another config, or a resume whose worlds or held-out tokens differ from the
   recorded ones (the tokens depend on the jax version and its PRNG settings, not only on the config).

Jobs — a training ladder, or one (world, LM) pair with its checks — are independent: an executor runs them
in-process (default), in a process pool, or on a Ray cluster (:mod:`simlm.experiments.executors`).  In a
pool (or a local Ray) a check's parts may be jobs of their own (``part_jobs`` of
:class:`~simlm.experiments.registry.Check`), every pair's first part first.  Jobs
travel as JSON and results come back as JSON.  Jobs write into the directory too — training checkpoints
under ``train/``, a check's files under ``work/`` and, where they share this machine's files, their
finished cells — so a cluster's workers need the directory on a shared filesystem to train or resume.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.metadata
import inspect
import json
import math
import os
import platform
import re
import time
import tomllib
import traceback
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from simlm.checks import check_distinct_labels, check_memory, nonempty_path
from simlm.errors import ConfigError, SimlmError
from simlm.experiments.registry import COLUMNS, ROW_TYPES, Cell, get_check, judged
from simlm.experiments.store import CellStore, claim, log_run, results_dir, row_problem, running, update_run
from simlm.jsonio import jsonable, read_json, write_json_atomic, write_text_atomic
from simlm.runtime import cpu_description, release_compiled

WORLD_KINDS = ("hmm", "memory-hmm", "loglinear", "planted-hmm")
#: a world's name: it names files and directories under the results directory (worlds/<name>.json, …)
_WORLD_NAME = re.compile(r"[A-Za-z0-9_=+@-][A-Za-z0-9_.=+@-]*")
#: the families of the ``planted-hmm`` kind (``options.family``): HMMs with planted token classes
#: (:mod:`simlm.worlds.topic`), by the name of their constructor.
PLANTED_FAMILIES = {"block-zipf": "block_zipf_hmm", "topic-syntax": "topic_syntax_hmm",
                    "confusion-groups": "confusion_groups_hmm"}
LAWS = ("next-token", "masked", "prepended-mask")
SHORT = {"cross-entropy": "ce", "masked-lm": "mlm", "quad": "quad"}
OBJECTIVE_LAWS = {"cross-entropy": ("next-token",), "quad": ("next-token",),
                  "masked-lm": ("masked", "prepended-mask")}
#: how an LM's label (and so its cells' keys) writes its ε target: :func:`parse_config` refuses targets
#: that it writes alike, whose cells would overwrite each other.
TARGET_FORMAT = "g"


# ---- config ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config (plain values; :meth:`to_dict` is its JSON form)."""

    name: str
    seed: int
    data: dict
    worlds: tuple
    lms: dict
    checks: dict

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _keys(where: str, d, allowed: dict) -> dict:
    """``d`` as a dict with only the ``allowed`` keys (name → (type(s), default or REQUIRED)), typed."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table (dict), got {type(d).__name__} {d!r}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected keys: {sorted(allowed)}")
    out = {}
    for key, (types, default) in allowed.items():
        if key not in d:
            if default is _REQUIRED:
                raise ConfigError(f"{where}.{key}: required key is missing")
            out[key] = default
            continue
        value = d[key]
        if value is None and default is None:  # an optional table left out (as to_dict writes it)
            out[key] = None
            continue
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise ConfigError(f"{where}.{key}: expected {_type_name(types)}, got {value!r}")
        if not isinstance(value, types):
            raise ConfigError(f"{where}.{key}: expected {_type_name(types)}, got {type(value).__name__} {value!r}")
        out[key] = value
    return out


_REQUIRED = object()


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true/false",
                        list: "a list", dict: "a table"}.get(t, t.__name__) for t in types)


def _plain_json(where: str, value) -> None:
    """Raise a :class:`ConfigError` naming the first value under ``where`` that is not plain, finite JSON
    (a TOML date or time, a NaN or ±inf, a non-string key)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _plain_json(f"{where}[{i}]", v)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: expected string keys, got {type(k).__name__} {k!r}")
            _plain_json(f"{where}.{k}", v)
        return
    raise ConfigError(f"{where}: expected a number, string, true/false, list or table, got {type(value).__name__} "
                      f"{value!r}")


def _option(where: str, value, default) -> None:
    """A check option must have its default's type: an integer (not a flag, not 2.9) where the default is
    one, a number where it is a float, a flag, a string, a list, a table; a None default takes any value."""
    if default is None:
        return
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true/false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, (list, tuple)):
        ok, want = isinstance(value, (list, tuple)), "a list"
    else:
        ok, want = isinstance(value, type(default)), _type_name(type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {want}, as its default {default!r} is, got {type(value).__name__} "
                          f"{value!r}")


#: the largest seed a config takes: 2**53 − 1, the largest integer float64 (and so every JSON reader) keeps
#: exactly; the checks derive their own seeds from it (2·seed + 2, 1000·seed + k), which stay below the 2**63
#: that :func:`simlm.checks.as_key` takes (a config can hold any integer; a larger seed failed every cell)
SEED_MAX = 2**53 - 1


def _int(where, value, minimum=0, maximum=None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum \
            or (maximum is not None and value > maximum):
        within = f"in [{minimum}, {maximum}]" if maximum is not None else f"≥ {minimum}"
        raise ConfigError(f"{where}: expected an integer {within}, got {value!r}")
    return value


def _eps_list(where, values) -> list:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{where}[{i}]: expected a positive finite ε (nats), got {v!r}")
        out.append(float(v))
    if not out:
        raise ConfigError(f"{where}: expected at least one ε")
    return out


def _seeds(where, values) -> list:
    seeds = [_int(f"{where}[{i}]", v, maximum=SEED_MAX) for i, v in enumerate(values)]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: expected distinct non-negative integer seeds, got {values!r}")
    return seeds


def parse_config(raw: dict) -> SweepConfig:
    """Validate a sweep config given as a dict (from TOML or JSON).  Keys (defaults in brackets)::

        name = "sweep"            # a label
        seed = 0                  # the held-out data's seed (every cell's tokens), and the check seed
        [data]   n_sequences = 32, length = 16          # held-out set for ε and the checks
        [[worlds]]                # one table per world
        name = "hmm"; kind = "hmm" | "memory-hmm" | "loglinear" | "planted-hmm"; seed = 0
        options = {…}             # keyword arguments of HMM.random / MemoryHMM.random / LogLinearWorld.random;
                                  # planted-hmm: family = "block-zipf" | "topic-syntax" | "confusion-groups"
                                  # and the keyword arguments of that constructor in simlm.worlds.topic
        [lms]    oracle = true
        [lms.analytic]  kinds = ["logit-noise"], eps = [0.3, 0.1], seeds = [0],   # seeds: of the kinds whose
                        # noise they draw (logit-noise, rare-words); temperature and uniform-mixture, the same
                        # LM whatever the seed, are built once, with the first
                        laws = ["next-token"]   # the law each LM is calibrated on: next-token | masked | prepended-mask
        [lms.trained]   objective = "cross-entropy", targets = [0.3, 0.1], seeds = [0], worlds = [all],
                        model = {…TransformerConfig fields but n_symbols}, train = {…TrainConfig fields}
        [checks]  "simlm/epsilon" = {}, "saunshi/natural-task" = {max_length = 2}, …   # options override defaults,
                                                                                   # each with its default's type

    ε lists must also differ as the LMs' labels write them (:data:`TARGET_FORMAT`: 0.1 and 0.1000001 both
    read "0.1"), since the labels key the cells, and analytic kinds must be distinct.  Every value must be
    plain JSON (no TOML dates, no NaN or ±inf).  Raises :class:`ConfigError` naming the key, the value and
    what was expected."""
    from simlm.models.perturbed import UNDIRECTED_KINDS

    if isinstance(raw, dict):  # every value plain JSON: the config is stored, hashed and sent to workers as JSON
        for key, value in raw.items():
            _plain_json(str(key), value)
    top = _keys("config", raw, {"name": (str, "sweep"), "seed": (int, 0), "data": (dict, {}),
                                "worlds": (list, _REQUIRED), "lms": (dict, {"oracle": True}),
                                "checks": (dict, _REQUIRED)})
    _int("config.seed", top["seed"], maximum=SEED_MAX)
    data = _keys("data", top["data"], {"n_sequences": (int, 32), "length": (int, 16)})
    _int("data.n_sequences", data["n_sequences"], 2), _int("data.length", data["length"], 1)
    if not top["worlds"]:
        raise ConfigError("worlds: expected at least one [[worlds]] table")
    worlds, names = [], set()
    for i, w in enumerate(top["worlds"]):
        w = _keys(f"worlds[{i}]", w, {"name": (str, _REQUIRED), "kind": (str, _REQUIRED), "seed": (int, 0),
                                      "options": (dict, {})})
        if w["kind"] not in WORLD_KINDS:
            raise ConfigError(f"worlds[{i}].kind: expected one of {WORLD_KINDS}, got {w['kind']!r}")
        if w["name"] in names or not _WORLD_NAME.fullmatch(w["name"]):  # it names files under the results directory
            raise ConfigError(f"worlds[{i}].name: expected a unique name of letters, digits and '_.=+@-', not "
                              f"starting with '.', got {w['name']!r}")
        names.add(w["name"])
        _int(f"worlds[{i}].seed", w["seed"], maximum=SEED_MAX)
        worlds.append(w)
    lms = _keys("lms", top["lms"], {"oracle": (bool, True), "analytic": (dict, None), "trained": (dict, None)})
    if lms["analytic"] is not None:
        a = _keys("lms.analytic", lms["analytic"], {"kinds": (list, ["logit-noise"]), "eps": (list, _REQUIRED),
                                                    "seeds": (list, [0]), "laws": (list, ["next-token"])})
        bad = [k for k in a["kinds"] if k not in UNDIRECTED_KINDS]
        if bad or not a["kinds"]:
            raise ConfigError(f"lms.analytic.kinds: unknown or unsupported {bad or a['kinds']}; choose from "
                              f"{list(UNDIRECTED_KINDS)}")
        if len(set(a["kinds"])) != len(a["kinds"]):  # one LM's cells computed twice, under one key
            raise ConfigError(f"lms.analytic.kinds: expected distinct kinds, got {a['kinds']!r}")
        bad = [law for law in a["laws"] if law not in LAWS]
        if bad or not a["laws"] or len(set(a["laws"])) != len(a["laws"]):
            raise ConfigError(f"lms.analytic.laws: expected distinct laws from {LAWS}, got {a['laws']!r}")
        a["eps"], a["seeds"] = _eps_list("lms.analytic.eps", a["eps"]), _seeds("lms.analytic.seeds", a["seeds"])
        check_distinct_labels("lms.analytic.eps", a["eps"], TARGET_FORMAT)  # the LMs' labels key their cells
        lms["analytic"] = a
    if lms["trained"] is not None:
        t = _keys("lms.trained", lms["trained"], {"objective": (str, "cross-entropy"), "targets": (list, _REQUIRED),
                                                  "seeds": (list, [0]), "worlds": (list, None), "model": (dict, {}),
                                                  "train": (dict, {})})
        if t["worlds"] is not None and (not t["worlds"] or not all(isinstance(w, str) for w in t["worlds"])):
            raise ConfigError(f"lms.trained.worlds: expected a non-empty list of world names (leave it out to train "
                              f"on every world, or drop [lms.trained]), got {t['worlds']!r}")
        if t["worlds"] is not None and len(set(t["worlds"])) != len(t["worlds"]):  # as analytic kinds: distinct
            raise ConfigError(f"lms.trained.worlds: expected distinct world names, got {t['worlds']!r}")
        unknown = sorted(set(t["worlds"] or []) - names)
        if unknown:
            raise ConfigError(f"lms.trained.worlds: {unknown} are not worlds of this config ({sorted(names)})")
        if t["objective"] not in OBJECTIVE_LAWS:
            raise ConfigError(f"lms.trained.objective: expected one of {sorted(OBJECTIVE_LAWS)}, got {t['objective']!r}")
        t["targets"], t["seeds"] = _eps_list("lms.trained.targets", t["targets"]), _seeds("lms.trained.seeds", t["seeds"])
        check_distinct_labels("lms.trained.targets", t["targets"], TARGET_FORMAT)
        for key in ("model", "train"):
            clash = sorted({"n_symbols", "objective", "targets", "seeds", "causal"} & set(t[key]))
            if clash:
                raise ConfigError(f"lms.trained.{key}: {clash} are set by the sweep, not here")
        lms["trained"] = t
    if not (lms["oracle"] or lms.get("analytic") or lms.get("trained")):  # a sweep of no LM: 0 cells, exit 0
        raise ConfigError("lms: no LM to check — set oracle = true, or add [lms.analytic] or [lms.trained]")
    if not top["checks"]:
        raise ConfigError("checks: expected at least one check, e.g. [checks] \"simlm/epsilon\" = {}")
    checks = {}
    for name, options in top["checks"].items():
        check = get_check(name)
        if check.oracle_rows and not lms["oracle"]:
            raise ConfigError(f"checks.{name}: reports its {check.oracle_rows} in the oracle's cell only, so without "
                              "the oracle it is never judged: set lms.oracle = true")
        if not isinstance(options, dict):
            raise ConfigError(f"checks.{name}: expected a table of options (e.g. {{}}), got {options!r}")
        unknown = sorted(set(options) - set(check.defaults))
        if unknown:
            raise ConfigError(f"checks.{name}: unknown option(s) {unknown}; options: {sorted(check.defaults)}")
        for key, value in options.items():
            _option(f"checks.{name}.{key}", value, check.defaults[key])
        checks[name] = {**check.defaults, **options}
        if check.validate is not None:
            try:
                check.validate(checks[name])
            except SimlmError as err:  # named where it is in the config ("seeds: …" of which check?)
                if str(err).startswith(f"checks.{name}"):
                    raise
                raise type(err)(f"checks.{name}.{err}") from None
    config = SweepConfig(top["name"], top["seed"], data, tuple(worlds), lms, checks)
    trained = [w["name"] for w in _trained_worlds(config)]
    why_not = {name: {} for name in checks}  # each world's reasons a check does not run there
    runs = set()
    for spec in config.worlds:  # every world must build (its options are validated by its constructor)
        world = build_world(spec)
        lm_specs = _lm_specs(config, [_trained_spec(config)] if spec["name"] in trained else [])
        for name, options in checks.items():  # and every check's options must fit it, where it runs
            check = get_check(name)
            reasons = [check.applies(spec, lm) for lm in lm_specs]
            if "" not in reasons:
                why_not[name][spec["name"]] = "; ".join(dict.fromkeys(reasons))
                continue
            runs.add(name)
            if check.validate_world is not None:
                check.validate_world(options, spec, world)
        # the held-out set and the (n, T, V) laws every check reads must fit
        check_memory("data.n_sequences, data.length",
                     data["n_sequences"] * data["length"] * (int(world.n_symbols) + 1),
                     what=f"held-out laws of world {spec['name']!r}")
        if spec["name"] in trained:  # and so must its training config
            _train_configs(config, spec, world)
    for name in (n for n in checks if n not in runs):  # asked for, yet it would give no row: every cell skipped
        raise ConfigError(f"checks.{name}: runs in no (world, LM) cell of this config — " +
                          "; ".join(f"world {w!r}: {why}" for w, why in why_not[name].items()))
    return config


def _unique_keys(pairs) -> dict:
    """A JSON object's pairs as a dict, or a ConfigError for a repeated key (json keeps the last silently;
    TOML refuses it)."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"config: key {key!r} appears twice in one JSON object")
        seen[key] = value
    return seen


def load_config(path) -> SweepConfig:
    """A config file (``.json``, any case, else TOML; UTF-8, a byte-order mark allowed) validated by
    :func:`parse_config`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config: cannot read {path} ({err})") from None
    is_json = path.suffix.lower() == ".json"
    try:
        raw = json.loads(text, object_pairs_hook=_unique_keys) if is_json else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config: {path} is not valid {'JSON' if is_json else 'TOML'} ({err})") from None
    return parse_config(raw)


# ---- worlds and LMs ----------------------------------------------------------------------------------

def build_world(spec: dict):
    """The world of a ``[[worlds]]`` table: ``<Kind>.random(seed, **options)``; for ``planted-hmm`` the HMM
    of :func:`planted_world`.  Bad options raise a :class:`ConfigError` naming the world and the option."""
    from simlm.worlds import HMM, LogLinearWorld, MemoryHMM

    if spec["kind"] == "planted-hmm":
        return planted_world(spec).hmm
    cls = {"hmm": HMM, "memory-hmm": MemoryHMM, "loglinear": LogLinearWorld}[spec["kind"]]
    try:
        return cls.random(spec["seed"], **spec["options"])
    except TypeError as err:  # a missing or unknown keyword; a typo in a required option (n_state) read only
        # as "missing 'n_states'": the option given in its place is named
        params = inspect.signature(cls.random).parameters
        missing = [n for n, p in params.items() if n != "seed" and p.default is p.empty
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in spec["options"]]
        given = [k for k in spec["options"] if k not in params]
        hint = "".join(f"; {close[0]!r} given: a misspelling of {m!r}?" for m in missing
                       if (close := difflib.get_close_matches(m, given, n=1)))
        raise ConfigError(f"worlds.{spec['name']}.options: {err}{hint}") from None
    except SimlmError as err:  # the constructor's own check, e.g. "n_states: expected …": named in the config
        raise type(err)(f"worlds.{spec['name']}.options.{err}") from None


def planted_constructor(family: str):
    """The constructor of a ``planted-hmm`` family (:data:`PLANTED_FAMILIES`)."""
    from simlm.worlds import topic

    return getattr(topic, PLANTED_FAMILIES[family])


def planted_world(spec: dict):
    """The :class:`~simlm.worlds.topic.ClassedHMM` (HMM and planted token classes) of a ``planted-hmm``
    table: ``<constructor of options.family>(seed, **other options)``."""
    where = f"worlds.{spec['name']}.options"
    options = dict(spec["options"])
    family = options.pop("family", None)
    if not isinstance(family, str) or family not in PLANTED_FAMILIES:
        raise ConfigError(f"{where}.family: expected one of {sorted(PLANTED_FAMILIES)} for kind 'planted-hmm', "
                          f"got {family!r}")
    make = planted_constructor(family)
    try:
        return make(spec["seed"], **options)
    except TypeError as err:  # a missing or unknown keyword
        raise ConfigError(f"{where}: {err} (family {family!r} takes {_keywords(make)})") from None
    except SimlmError as err:  # the constructor's own check, e.g. "block_size: expected …"
        raise ConfigError(f"{where}.{err}") from None


def _keywords(fn) -> list:
    import inspect

    return [name for name in inspect.signature(fn).parameters if name != "seed"]


def _trained_worlds(config: SweepConfig) -> list:
    """The worlds the ``[lms.trained]`` ladder is trained on (all, unless it names some)."""
    t = config.lms["trained"]
    if t is None:
        return []
    return [w for w in config.worlds if t["worlds"] is None or w["name"] in t["worlds"]]


def _trained_spec(config: SweepConfig) -> dict:
    """What the checks' ``applies`` read of the ``[lms.trained]`` LMs: their source, objective and laws."""
    t = config.lms["trained"]
    return {"source": "trained", "objective": t["objective"], "laws": list(OBJECTIVE_LAWS[t["objective"]])}


def _trained_inputs(config: SweepConfig, world_spec: dict) -> list[tuple[str, int, int]]:
    """``(what, tokens, positions)``: the longest input each check that reads this world's trained LMs gives
    them, named as its config key (:meth:`~simlm.experiments.registry.Check.input_length`), the cells' held-out ε
    among them."""
    spec = _trained_spec(config)
    length = int(config.data["length"])
    reads = [("data.length", length, length)]  # every cell's held-out ε
    for name, options in config.checks.items():
        check = get_check(name)
        if check.applies(world_spec, spec) == "":
            reads.append((f"checks.{name}", *check.input_length(options, world_spec, config.data)))
    return reads


def _train_configs(config: SweepConfig, world_spec: dict, world):
    from simlm.models.transformer import TransformerConfig
    from simlm.train import TrainConfig

    t = config.lms["trained"]
    data = config.data
    reads = _trained_inputs(config, world_spec)
    longest = max(positions for _, _, positions in reads)  # ≥ data.length: the cells' ε reads that
    try:  # by default trained on the longest input a check reads, so that every position it reads is trained
        model = TransformerConfig(**{"d_model": 16, "n_layers": 1, "n_heads": 2,
                                     "max_len": max(data["length"] + 1, longest), **t["model"],
                                     "n_symbols": int(world.n_symbols), "causal": t["objective"] != "masked-lm"})
    except SimlmError as err:  # e.g. "d_model: 6 is not divisible by n_heads = 4": named in the config
        raise type(err)(f"lms.trained.model.{err}") from None
    try:  # at most max_len (a rotary model reads longer inputs than it trained on without an untrained row)
        train = TrainConfig(**{"seq_len": min(longest, model.max_len), "batch_size": 32, "max_steps": 300,
                               "eval_every": 25, "eval_sequences": 64, **t["train"], "objective": t["objective"],
                               "targets": tuple(t["targets"]), "seeds": tuple(t["seeds"])})
    except SimlmError as err:  # the sweep sets targets, seeds and objective from lms.trained, the rest is train's
        own = str(err).split(":")[0] in ("targets", "seeds", "objective")
        raise type(err)(f"lms.trained.{'' if own else 'train.'}{err}") from None
    if train.data == "corpus" and train.corpus_seed == config.seed:  # world.sample(seed, …) for both
        raise ConfigError(f"lms.trained.train.corpus_seed: equals the sweep's seed = {config.seed}, so the held-out "
                          "tokens every cell's ε and checks read would be drawn as the training corpus is (the same "
                          "sequences where their numbers agree): give another corpus_seed or seed")
    where = f"the trained LMs of world {world_spec['name']!r}"
    for name, tokens, positions in reads:  # a model or training length the user set too short for a check
        if tokens > model.max_len or positions > model.n_positions:
            raise ConfigError(f"{name}: reads {tokens} tokens ({positions} model positions) from {where}, "
                              f"whose lms.trained.model.max_len = {model.max_len} holds {model.max_len} tokens and "
                              f"{model.n_positions} positions; raise max_len or shorten the inputs")
        if model.positions == "learned" and positions > train.seq_len:
            fix = (f"raise lms.trained.model.max_len to ≥ {positions} (seq_len, left out, follows it)"
                   if "seq_len" not in t["train"] and model.max_len < positions else
                   f"train on seq_len ≥ {positions} (left out, it is the longest input the checks read)")
            raise ConfigError(
                f"{name}: reads inputs of {positions} positions from {where}, trained on "
                f"lms.trained.train.seq_len = {train.seq_len}: positions {train.seq_len}–{positions - 1} keep their "
                f"initial random embedding, so the laws read there are not the trained model's; {fix}, or shorten "
                "the inputs")
    from simlm.train.trainer import _validate_training

    try:  # the trainer's own checks (seq_len ≤ max_len, memory), before anything is written: a config that
        # failed them in its training job had already claimed --out, and the corrected config was refused there
        _validate_training(world, model, train)
    except SimlmError as err:
        raise type(err)(f"lms.trained (world {world_spec['name']!r}): {err}") from None
    return model, train


def lm_label(spec: dict) -> str:
    if spec["source"] == "oracle":
        return "oracle"
    target = format(spec["target"], TARGET_FORMAT)
    if spec["source"] == "analytic":
        law = "" if spec["law"] == "next-token" else f"[{spec['law']}]"
        return f"{spec['kind']}{law}@{target}"
    return f"trained-{SHORT[spec['objective']]}@{target}"


def build_lm(world, spec: dict, tokens, out: Path):
    """The LM of an LM spec: ``(lm, ε, s.e.)`` with ε exact on ``tokens`` for the law the LM is defined on."""
    from simlm.metrics import exact_epsilon, exact_masked_epsilon
    from simlm.models import WorldLM, perturbed_lm
    from simlm.train import load_lm

    if spec["source"] == "oracle":
        return WorldLM(world), 0.0, 0.0
    if spec["source"] == "analytic":
        lm = perturbed_lm(world, spec["target"], spec["kind"], spec["seed"], tokens=tokens, law=spec["law"])
        return lm, lm.achieved_eps, lm.achieved_eps_se
    lm = load_lm(out / spec["path"])
    measure = exact_masked_epsilon if spec["laws"][0] == "masked" else exact_epsilon
    return (lm, *measure(world, lm, tokens))


# ---- jobs (pure functions of JSON, run by any executor) ---------------------------------------------

def train_job(payload: str) -> str:
    """Train one world's ladder (resuming its run directory); returns ``{"lms": the reached rungs as LM
    specs, "unreached": the rungs a seed did not reach, with its best ε and the steps it ran}``, or, when the
    training diverged, ``{"lms": the rungs checkpointed before the divergence, "unreached": [], "error": its
    message}``: those rungs' cells and the sweep's other cells run (the divergence aborted the whole sweep
    before any cell, and every rerun; then it lost the rungs it had reached)."""
    from simlm.errors import TrainingDivergedError
    from simlm.train import train

    release_compiled()  # a long-lived worker's compiled programs would end at the process's map limit
    job = json.loads(payload)
    config, out = parse_config(job["config"]), Path(job["out"])
    spec = next(w for w in config.worlds if w["name"] == job["world"])
    world = build_world(spec)
    model, tc = _train_configs(config, spec, world)
    tag = hashlib.sha1(json.dumps([world.fingerprint(), model.to_dict(), tc.to_dict()], sort_keys=True).encode()).hexdigest()[:10]
    run_dir = out / "train" / f"{spec['name']}-{tag}"
    laws = OBJECTIVE_LAWS[tc.objective]
    spec_of = lambda r: {"source": "trained", "objective": tc.objective, "target": r.target, "seed": r.seed,
                         "laws": list(laws), "path": str(Path(r.path).absolute().relative_to(out.absolute())),
                         "step": r.step}
    try:
        result = train(world, model, tc, run_dir, progress=not job.get("quiet", True))
    except TrainingDivergedError as err:
        kept = (f"only the {len(err.reached)} rung(s) reached before it have cells ("
                + ", ".join(f"seed {r.seed} at ε ≤ {r.target:g}" for r in err.reached) + ")"
                if err.reached else "this world's trained LMs have no cells")
        why = (f"the training diverged, so {kept} (a rerun diverges again: lower lms.trained's learning_rate, in "
               f"another --out): {err}")
        return json.dumps({"lms": [spec_of(r) for r in err.reached], "unreached": [], "error": why})
    except Exception as err:  # noqa: BLE001 — XLA's RESOURCE_EXHAUSTED, a damaged run directory: this ladder is
        # lost, as where its pool worker dies (WorkerLost), not the whole sweep (it stopped every cell, wrote no
        # table and exited with a traceback: a review, 2026-12-07); a rerun resumes it from its checkpoints
        why = (f"the training failed, so this world's trained LMs have no cells (a rerun resumes it from its "
               f"checkpoints): {_failure(err)}")
        return json.dumps({"lms": [], "unreached": [], "error": why})
    lms = [spec_of(r) for r in result.records if r.reached]
    unreached = [{"world": spec["name"], "seed": r.seed, "target": r.target,
                  "best_eps": float(result.best_epsilon[r.seed]), "steps": result.final_step}
                 for r in result.records if not r.reached]
    return json.dumps({"lms": lms, "unreached": unreached})


def heldout_tokens(world, config: SweepConfig) -> np.ndarray:
    """The sweep's held-out tokens ``(n, T)`` of ``world``: every cell's, drawn with the config's seed."""
    return np.asarray(world.sample(config.seed, config.data["n_sequences"], config.data["length"]))


def tokens_digest(tokens) -> str:
    """16 hex digits of SHA-256 over the shape and int64 values of ``tokens``: the held-out set a results
    directory records per world.  The tokens depend on more than the config (the jax version, JAX's PRNG
    implementation, ``jax_threefry_partitionable``), so a resume compares them rather than the config."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    return hashlib.sha256(repr(tokens.shape).encode() + tokens.tobytes()).hexdigest()[:16]


def check_job(payload: str) -> str:
    """Run the pending cells of one (world, LM) pair; returns ``[{"cell", "records", "error", "seconds",
    "stored"}]``.  ``job["cells"]`` lists ``[check name, part, cell key]``.  With ``job["store"]`` each cell
    is appended to ``<out>/cells.jsonl`` (tagged with ``job["tag"]``) as soon as it ends, so an interrupted
    job loses only the cell in flight; ``stored`` says so.  ``job["heldout"]``, where given, is the
    :func:`tokens_digest` the sweep recorded for the world: tokens drawn otherwise here are refused."""
    from simlm.experiments.store import append_cell

    release_compiled()
    job = json.loads(payload)
    config, out = parse_config(job["config"]), Path(job["out"])
    world_spec = next(w for w in config.worlds if w["name"] == job["world"])
    world = build_world(world_spec)
    tokens = heldout_tokens(world, config)
    if job.get("heldout") not in (None, tokens_digest(tokens)):
        raise ConfigError(f"out: the held-out tokens of world {world_spec['name']!r} drawn by this job "
                          f"({tokens_digest(tokens)}) differ from those {out} records ({job['heldout']}): this "
                          "process has another jax version or PRNG setting (jax_threefry_partitionable, "
                          "jax_default_prng_impl) than the sweep's")
    lm_spec = job["lm"]
    results = []

    def finish(key, records, error, seconds):
        stored = bool(job.get("store"))
        if stored:
            append_cell(out / "cells.jsonl", key, records, error=error, seconds=seconds, **job.get("tag", {}))
        results.append({"cell": key, "records": records, "error": error, "seconds": seconds,  # (NaN and ±inf kept:
                        "stored": stored})  # this process's JSON to the sweep's, not a file)

    try:
        lm, eps, eps_se = build_lm(world, lm_spec, tokens, out)
    except Exception as err:  # noqa: BLE001 — stored as the cells' error, recomputed by a rerun
        for _, _, key in job["cells"]:
            finish(key, [], f"building the LM: {err if isinstance(err, SimlmError) else _failure(err)}", 0.0)
        return json.dumps(results)
    for name, part, key in job["cells"]:
        check, started = get_check(name), time.perf_counter()
        cell = Cell(world, world_spec, lm, lm_spec, tokens, config.checks[name], config.seed, part=part,
                    workdir=out / "work" / world_spec["name"] / name.replace("/", "-"),
                    progress=bool(job.get("progress", False)))
        shared = {"paper": check.paper, "check": name, "world": world_spec["name"], "world_seed": world_spec["seed"],
                  "lm": lm_label(lm_spec), "lm_seed": lm_spec.get("seed"), "eps": eps, "eps_se": eps_se}
        try:
            records, error = _storable([_shared_with(shared, r) for r in check.run(cell)]), None
        except Exception as err:  # noqa: BLE001 — one cell's failure (a MemoryError, XLA's RESOURCE_EXHAUSTED, a
            records, error = [], _failure(err)  # bug) is that cell's, stored and listed; the others still run
        finish(key, records, error, time.perf_counter() - started)
    return json.dumps(results)


def _failure(err: Exception) -> str:
    """A cell's error as stored: ``Type: message``, and for an error that is not simlm's own (a bug, memory
    exhausted) the file and line it was raised at."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, SimlmError) or err.__traceback__ is None:
        return text
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{text} (raised at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


#: the shared columns a check's row may not set: they say where the row was computed (its cell's key)
CELL_COLUMNS = ("paper", "check", "world", "world_seed")


def _shared_with(shared: dict, record: dict) -> dict:
    """A check's row with the runner's shared columns.  A row that names its own LM (``lm``: one the check
    built inside the cell) takes none of the cell's LM's columns: its ``lm_seed``, ``eps`` and ``eps_se`` are
    those it gives, else None — not the cell's LM's (the oracle's ε = 0 for an LM that was never built).  A
    row that sets one of :data:`CELL_COLUMNS` to another value than its cell's is refused (``ConfigError``,
    the cell's error): it would be filed under another world or check than the cell that computed it.  So is
    a row that is no dict, has no ``quantity`` (a non-empty string) or ``measured``, or has a ``bound`` without
    a ``holds`` verdict (True or False: :func:`~simlm.experiments.registry.row` gives both): the report counts
    a row as bounded by its verdict, so such a row read as unbounded — its violation uncounted, the sweep's
    exit status 0 (a review, 2026-12-06) — or with a verdict the numbers contradict (measured ≤ bound + atol, and
    no row trivial that fails: a hand-built row of 2 against 1 counted as holding, 2026-12-07)."""
    if not isinstance(record, dict):
        raise ConfigError(f"records: expected each row the check returns to be a dict (see simlm.experiments."
                          f"registry.row), got {type(record).__name__}")
    q = record.get("quantity")
    if not isinstance(q, str) or not q:
        raise ConfigError(f"records: a row the check returned has no quantity (a non-empty string), got {q!r}")
    if "measured" not in record:
        raise ConfigError(f"records: row {q!r} has no measured value")
    if record.get("bound") is not None:  # a verdict, and the numbers' (a hand-built row said 2 ≤ 1 holds)
        if not isinstance(record.get("holds"), (bool, np.bool_)):
            raise ConfigError(f"records: row {q!r} has a bound but holds = {record.get('holds')!r}, not True or "
                              "False; build it with simlm.experiments.registry.row, which judges it")
        try:
            m, b, atol = float(record["measured"]), float(record["bound"]), float(record.get("atol") or 0.0)
        except (TypeError, ValueError):
            raise ConfigError(f"records: row {q!r} has measured = {record['measured']!r}, bound = {record['bound']!r} "
                              f"and atol = {record.get('atol')!r}: expected real numbers") from None
        if bool(record["holds"]) != judged(m, b, atol) or (record.get("trivial") and not record["holds"]):
            raise ConfigError(f"records: row {q!r} says holds = {record['holds']!r}, trivial = "
                              f"{record.get('trivial')!r} where measured {m!r} ≤ bound {b!r} + atol {atol!r} is "
                              f"{judged(m, b, atol)}; build it with simlm.experiments.registry.row, which judges it")
    clash = sorted(k for k in CELL_COLUMNS if k in record and record[k] != shared[k])
    if clash:
        raise ConfigError(f"records: the check's row sets the runner's column(s) {clash}, which name the cell "
                          f"that computed it ({', '.join(f'{k}={shared[k]!r}' for k in clash)})")
    if "lm" in record:
        shared = {**shared, "lm_seed": None, "eps": None, "eps_se": None}
    return {**shared, **record}


def cell_store(out) -> CellStore:
    """The cell store of the results directory ``out``, read by the rule its rows are written by
    (:data:`~simlm.experiments.registry.ROW_TYPES`, :func:`_storable`): every opening of a sweep's store."""
    return CellStore(Path(out) / "cells.jsonl", ROW_TYPES)


def _storable(records: list) -> list:
    """``records`` as the store holds them (:func:`~simlm.jsonio.jsonable`, NaN and ±inf kept: the store
    records them beside the rows), or the error that writing them would raise — raised here, inside the cell,
    so that a row JSON cannot hold (a set, an object, a tuple key) is that cell's error and not the whole
    sweep's (it stopped every rerun at it)."""
    out = jsonable(records, keep_nonfinite=True)
    for r in out:  # a row the store would drop as damaged on reading (lost, recomputed by every rerun)
        why = row_problem(r, ROW_TYPES)
        if why is not None:
            raise ConfigError(f"records: row {r.get('quantity')!r} has {why}")
    try:
        json.dumps(out)  # (NaN and ±inf pass here: the store writes them as null with their marks)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"records: a row the check returned cannot be stored as JSON ({err})") from None
    return out


# ---- the runner --------------------------------------------------------------------------------------

def _lm_specs(config: SweepConfig, trained: list) -> list:
    from simlm.models.perturbed import SEEDED_KINDS

    specs = [{"source": "oracle", "seed": None, "laws": list(LAWS)}] if config.lms["oracle"] else []
    a = config.lms["analytic"]
    if a is not None:  # a kind the seed does not perturb is one LM: built once (seeds as labels of one LM were
        # counted as independent replicates)
        specs += [{"source": "analytic", "kind": k, "target": e, "seed": s, "law": law, "laws": [law]}
                  for law in a["laws"] for k in a["kinds"] for e in a["eps"]
                  for s in (a["seeds"] if k in SEEDED_KINDS else a["seeds"][:1])]
    return specs + trained


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The first 12 hex digits of a SHA-256 over every ``.py`` and ``.toml`` file of the installed simlm
    package (relative path and bytes, in sorted order): two runs with the same fingerprint ran the same code,
    whether or not it came from a git checkout; a version number does not change with every edit.  It is the
    driver's code: Ray workers on other machines are trusted to run the same (``pip install -e .`` of one
    checkout), and an install whose sources are not plain files (a zip) hashes to the empty package's."""
    import simlm

    root = Path(simlm.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".toml") and p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


#: the installed packages whose versions a run records: each can change a trained number's last bits, and
#: those bits are carried through thousands of steps (docs/head_prompt.md: two environments' experiment-1
#: trained columns differ by up to 0.10 where the same code reproduces itself bit for bit).
RECORDED_PACKAGES = ("jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy")

#: the JAX settings a run records (None where this jax has no such setting)
JAX_SETTINGS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_threefry_partitionable",
                "jax_disable_most_optimizations", "jax_optimization_level")


def environment() -> dict:
    """What a rerun needs to know about this machine: package version and code fingerprint
    (:func:`code_fingerprint`), jax and Python versions, devices, and what else decides a float's rounding —
    the versions of :data:`RECORDED_PACKAGES` (None where one is not installed), the CPU (its model name
    and the vector instruction sets XLA:CPU may use), ``XLA_FLAGS`` and the JAX settings that change what
    is compiled or drawn."""
    import jax

    import simlm

    return {"simlm": simlm.__version__, "code": code_fingerprint(), "jax": jax.__version__,
            "packages": {name: _installed(name) for name in RECORDED_PACKAGES},
            "python": platform.python_version(),
            "platform": platform.platform(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "cpu": cpu_description(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "jax_config": {name: _plain(jax.config.values.get(name)) for name in JAX_SETTINGS},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _plain(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def executor_record(executor) -> dict:
    """How a run's jobs ran — the executor's class and, for a process pool, its workers and whether each ran
    XLA on one thread (which rounds a reduction differently from several): recorded beside
    :func:`environment`."""
    return {"executor": type(executor).__name__,
            **{k: getattr(executor, k) for k in ("workers", "single_threaded") if hasattr(executor, k)}}


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_sweep(config: SweepConfig, out, *, executor=None, progress: bool = True, log=print, after=None) -> dict:
    """Run (or resume) ``config`` into ``out``; returns ``{"rows", "errors", "skipped", "unreached", "lost",
    "cells", "new_cells", "time_s", "order"}`` (``order``: the plan's cell keys, the table's order;
    ``unreached``: the trained ladders' rungs a seed did not reach, which give
    no LM and so no cells; ``lost``: the ladders that gave no LM this run, their pool worker dead, or only
    the rungs reached before their training diverged — listed in ``errors`` too) and writes
    the files of the module docstring.  ``executor`` defaults to in-process.  With
    ``progress`` one bar counts the sweep's cells (done / total, ETA); jobs run in this process nest their
    own bars under it (a training ladder's steps).  Each run appends its :func:`environment` to the runs
    of ``environment.json`` (rows computed by an earlier run keep that run's), with ``cells_computed`` (stored
    without an error) and ``cells_failed`` once it has finished.  One sweep at a time runs into a directory: a
    second, while this one holds ``out/.sweep.lock``, is refused (:func:`~simlm.experiments.store.running`).
    ``after(result)``, if given, runs before the lock is released (``simlm sweep`` renders report.md there)."""
    started = time.perf_counter()
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"out: {out} exists and is not a directory")
    out = results_dir(out)  # created, or a ConfigError naming out (an empty path, a file on its path, no permission)
    with running(out):  # one sweep at a time into a directory
        result = _run_sweep(config, out, executor, progress, log, started)
        if after is not None:  # still holding the lock: what it renders cannot interleave with another run's
            after(result)
        return result


def _run_sweep(config: SweepConfig, out: Path, executor, progress: bool, log, started: float) -> dict:
    from simlm.experiments.executors import InProcess, WorkerLost, progress_bar

    executor = executor or InProcess()
    tag = claim(out / "sweep.json", config.to_dict(), backup=out / "summary.json", cells=out / "cells.jsonl")
    worlds = {spec["name"]: build_world(spec) for spec in config.worlds}
    heldout = {name: tokens_digest(heldout_tokens(world, config)) for name, world in worlds.items()}
    store = cell_store(out)
    _check_worlds(config, worlds, heldout, out, store.cells)
    runs = log_run(out / "environment.json", {**environment(), **executor_record(executor)})
    (out / "worlds").mkdir(exist_ok=True)
    for spec in config.worlds:
        world = worlds[spec["name"]]
        write_json_atomic(out / "worlds" / f"{spec['name']}.json", {
            **spec, "class": type(world).__name__, "fingerprint": world.fingerprint(), "heldout": heldout[spec["name"]],
            "parameters": [np.asarray(a).tolist() for a in world.parameter_arrays()]})
    _warn_other_code(store, runs, out)
    here = isinstance(executor, InProcess)  # only jobs run here may draw their own (nested) progress bars
    # jobs that see this directory store each cell as it ends; the others' cells are stored as their job returns
    local = bool(getattr(executor, "shares_filesystem", False))
    info = {"run": len(runs) - 1, "code": runs[-1]["code"], "config": tag}
    payload = lambda **kw: json.dumps({"config": config.to_dict(), "out": str(out.absolute()),
                                       "progress": progress and here, "store": local, "tag": info, **kw})
    bar = progress_bar(0, enabled=progress, desc="sweep")
    trained, unreached, lost = {}, [], []
    if _trained_worlds(config):
        names = [w["name"] for w in _trained_worlds(config)]
        bar.set_description(f"sweep: training {', '.join(names)}")
        for (p, result) in executor.map(train_job, [payload(world=n, quiet=not (progress and here)) for n in names]):
            world = json.loads(p)["world"]
            if isinstance(result, WorkerLost):  # no LMs from this ladder in this run: listed as an error, and a
                lost.append({"world": world,  # rerun resumes it from its checkpoints
                             "error": f"a worker process died before this world's ladder returned (killed by a "
                                      f"signal, out of memory or its node lost; a process pool that breaks takes "
                                      f"the ladders running beside that worker's with it), so its trained LMs "
                                      f"have no cells: {result}"})
                continue
            ladder = json.loads(result)
            if ladder.get("error"):  # diverged: listed as an error; its rungs reached before it and the other
                lost.append({"world": world, "error": ladder["error"]})  # cells run
            trained[world] = ladder["lms"]
            unreached += ladder["unreached"]  # no LM, so no cell: listed, not dropped silently
        bar.set_description("sweep")
    jobs, skipped, total, new, order = [], [], 0, 0, []  # jobs: (the part it starts with, payload); order: cells
    apart = local and not here  # checks' parts that ask for it run as jobs of their own (Check.part_jobs)
    for spec in config.worlds:
        for lm_spec in _lm_specs(config, trained.get(spec["name"], [])):
            job = lambda cells: payload(world=spec["name"], lm=lm_spec, cells=cells, heldout=heldout[spec["name"]])
            cells = []
            for name in config.checks:
                check = get_check(name)
                why = check.applies(spec, lm_spec)
                key = f"{spec['name']}|{lm_label(lm_spec)}#{lm_spec.get('seed')}|{name}"
                if why:
                    skipped.append({"cell": key, "why": why})
                    continue
                parts = [None] if check.parts is None else list(check.parts(spec, lm_spec, config.checks[name]))
                for i, part in enumerate(parts):
                    part_key = key if part is None else f"{key}|{part}"
                    total += 1
                    order.append(part_key)
                    if store.finished(part_key):  # a cell that failed before has no result: it runs again
                        continue
                    new += 1
                    if apart and check.part_jobs:
                        jobs.append((i, job([[name, part, part_key]])))
                    else:
                        cells.append([name, part, part_key])
            if cells:
                jobs.append((0, job(cells)))
    jobs = [p for _, p in sorted(jobs, key=lambda job: job[0])]  # every pair's first part, then every second …
    bar.reset(total)
    bar.update(total - new)
    for job, result in executor.map(check_job, jobs):
        if isinstance(result, WorkerLost):  # the cells its worker had not stored in this run fail, listed as such
            done = cell_store(out).cells
            for _, _, key in json.loads(job)["cells"]:
                entry = done.get(key)
                # absent, or an earlier run's failure (a finished cell, whichever run stored it, is kept)
                if entry is None or (entry.get("run") != info["run"] and entry.get("error")):
                    store.add(key, [], error=f"the worker process died before its job returned (killed by a "
                                              f"signal, out of memory or its node lost; the job may not have "
                                              f"started): {result}",
                              seconds=0.0, **info)
                bar.update(1)
            continue
        for entry in json.loads(result):
            if not entry["stored"]:
                store.add(entry["cell"], entry["records"], error=entry["error"], seconds=entry["seconds"], **info)
            bar.update(1)
    bar.close()
    store = cell_store(out)  # with the cells the jobs stored themselves
    # a cell attempted this run that failed is no cell computed (report.md said "computed 1 cell" of a failure)
    failed = sum(1 for e in store.cells.values() if e.get("error") and e.get("run") == info["run"])
    update_run(out / "environment.json", info["run"], cells_computed=new - failed, cells_failed=failed)
    rows = store.records(order)  # the config's order, whatever order the jobs finished in (one table per config)
    planned = set(order)
    extra = [k for k in store.cells if k not in planned]
    if extra:  # tabulated after the plan's (a ladder lost this run keeps its stored rows), but said: rows of cells
        # keyed otherwise by other code sat beside the new ones without a word (a review, 2026-12-06)
        warnings.warn(f"{out}: {len(extra)} stored cell(s) are not in this run's plan (e.g. {extra[0]!r}: a trained "
                      "ladder lost this run, or cells keyed otherwise by other code); their rows are tabulated after "
                      "the plan's — use another --out for a table of this plan alone", RuntimeWarning, stacklevel=2)
    write_tables(rows, out)
    errors = [{"cell": f"{x['world']}|trained ladder", "error": x["error"]} for x in lost] + store.errors()
    summary = {"config": config.to_dict(), "cells": total, "new_cells": new, "rows": len(rows), "errors": errors,
               "skipped": skipped, "unreached": unreached, "lost": lost, "time_s": time.perf_counter() - started,
               "order": order}  # the plan's cells in order: `simlm report` tabulates them so, as this run did
    write_json_atomic(out / "summary.json", summary)
    return {**{k: v for k, v in summary.items() if k != "config"}, "rows": rows}


def _check_worlds(config: SweepConfig, worlds: dict, heldout: dict, out: Path, cells: dict) -> None:
    """A resumed directory's worlds must be the ones its cells were computed on: the same parameters
    (``fingerprint``) and the same held-out tokens (:func:`tokens_digest`), which the config alone does
    not fix.  ``worlds/<name>.json`` records both; one written before tokens were recorded is rewritten.
    A record that is missing or unreadable while the store holds cells of that world is refused: nothing
    would tell those cells' tokens from this run's (the record is written before any cell is computed).
    ``cells``: the store's finished cells, by key."""
    for spec in config.worlds:
        path = out / "worlds" / f"{spec['name']}.json"
        try:
            recorded = read_json(path) if path.exists() else None
        except ConfigError:
            recorded = None
        if not isinstance(recorded, dict):
            stored = sum(key.startswith(f"{spec['name']}|") for key in cells)
            if stored:
                raise ConfigError(f"out: {path} is {'unreadable' if path.exists() else 'missing'}, but "
                                  f"{out / 'cells.jsonl'} holds {stored} cell(s) of world {spec['name']!r}: nothing "
                                  "says which world and held-out tokens they were computed on; restore the file, "
                                  "or use another --out")
            recorded = {}
        now = {"fingerprint": worlds[spec["name"]].fingerprint(), "heldout": heldout[spec["name"]]}
        if recorded and recorded.get("heldout") is None and config.seed >= 2**32:
            raise ConfigError(f"out: {path} was written before held-out tokens were recorded, when a seed ≥ 2**32 "
                              f"({config.seed}) drew the tokens of seed mod 2**32; this run draws the seed's own, so "
                              "its cells would mix two token sets: use another --out")
        differ = [k for k, v in now.items() if recorded.get(k) is not None and recorded[k] != v]
        if differ:
            raise ConfigError(f"out: world {spec['name']!r} differs from the one {path} records ({' and '.join(differ)}: "
                              f"{', '.join(f'{recorded[k]} there, {now[k]} here' for k in differ)}), so its finished "
                              "cells were computed on other tokens; rerun with the jax version and PRNG settings "
                              "(jax_threefry_partitionable, jax_default_prng_impl) of the run that wrote it, or use "
                              "another --out")


def _warn_other_code(store: CellStore, runs: list, out: Path) -> None:
    """A resumed directory whose finished cells were computed by other code than this run's: they are reused
    as they are (a rerun skips finished cells), so say so, with the way to recompute them."""
    other = {code: n for code, n in store.codes().items() if code != runs[-1]["code"]}
    if other:
        which = ", ".join(f"{n} by {code or 'code of unknown version'}" for code, n in other.items())
        warnings.warn(f"{out}: {sum(other.values())} of its {len(store)} finished cells were computed by other code "
                      f"than this run's ({runs[-1]['code']}): {which}; they are reused, not recomputed — use "
                      "another --out to recompute everything", RuntimeWarning, stacklevel=3)


def _csv_cell(v):
    """A row's value as results.csv writes it: "" for None, a list or table as its JSON text (NaN and ±inf as
    Python's json writes them; Python's repr of a list is no JSON), anything else as it is."""
    if v is None:
        return ""
    return json.dumps(jsonable(v, keep_nonfinite=True)) if isinstance(v, (list, tuple, dict)) else v


def write_tables(rows: list, out: Path) -> list:
    """``results.csv`` (and ``results.parquet`` where pyarrow is present) from the tidy rows, atomically; in the
    CSV a list or table column is its JSON text."""
    import csv
    import io
    import os

    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    columns = list(COLUMNS) + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(r.get(k)) for k in columns})
    write_text_atomic(out / "results.csv", buffer.getvalue())
    paths = [out / "results.csv"]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return paths
    table = pa.table({k: _arrow_column(pa, [r.get(k) for r in rows]) for k in columns}) if rows else pa.table({})
    pq.write_table(table, out / "results.parquet.tmp")
    os.replace(out / "results.parquet.tmp", out / "results.parquet")
    return paths + [out / "results.parquet"]


def _parquet_column(values: list) -> list:
    """A column Parquet can type: as it is when its values share one kind (numbers, strings, flags, lists),
    else each value as text (JSON for lists and tables) — checks may put a number in one row and a label
    such as "B*" in another.  Integers beside floats become floats where float64 holds them exactly
    (|n| ≤ 2⁵³), text otherwise (2⁵³ + 1 would read 2⁵³)."""
    kinds = {type(v).__name__ for v in values if v is not None}
    if kinds == {"int", "float"} and all(abs(v) <= 2**53 for v in values if isinstance(v, int)):
        return [None if v is None else float(v) for v in values]
    if len(kinds) <= 1:
        return values
    return _as_text(values)


def _as_text(values: list) -> list:
    """Each value as text for Parquet (JSON for lists and tables), None kept."""
    return [None if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in values]


def _arrow_column(pa, values: list):
    """:func:`_parquet_column` as an Arrow array, or each value as text (JSON for lists and tables) where Arrow
    cannot type it as it is (a list mixing numbers and labels, an integer beyond 64 bits): one unusual column
    must not stop the tables, the summary and every later ``simlm report`` of the directory."""
    try:
        return pa.array(_parquet_column(values))
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return pa.array(_as_text(values))


def results_directory(out) -> Path:
    """``out`` as a Path if it is a sweep's results directory (a :class:`ConfigError` naming ``out`` if not),
    checked before anything is written into it (``simlm report`` of another folder left its lock file there)."""
    out = nonempty_path(out, what="a sweep results directory")
    if not out.exists():
        raise ConfigError(f"out: {out} does not exist")
    if not out.is_dir():
        raise ConfigError(f"out: {out} is a file, not a sweep results directory")
    if not (out / "cells.jsonl").exists() and not (out / "sweep.json").exists():
        raise ConfigError(f"out: {out} has no cells.jsonl (not a sweep results directory)")
    return out


def read_results(out) -> list:
    """The tidy rows of a results directory, from its cell log alone (``simlm report`` uses this)."""
    out = results_directory(out)
    fix = "the directory's config is damaged; rerun the sweep elsewhere"
    config = read_json(out / "sweep.json", what="out", fix=fix)
    if not isinstance(config, dict):
        raise ConfigError(f"out: {out / 'sweep.json'} holds a JSON {type(config).__name__}, not a sweep's "
                          f"config; {fix}")
    # a sweep with no cell yet (or none at all: every trained rung unreached, nothing else to run) has no log
    if not (out / "cells.jsonl").exists():
        return []
    try:  # the last run's plan order (its summary.json): the table the run wrote, row for row
        order = read_json(out / "summary.json").get("order") if (out / "summary.json").exists() else None
    except (ConfigError, AttributeError):  # unreadable, or not a dict: the order cells were stored in
        order = None
    order = order if isinstance(order, list) and all(isinstance(k, str) for k in order) else None
    return cell_store(out).records(order)


__all__ = ["SweepConfig", "parse_config", "load_config", "cell_store", "build_world", "planted_world",
           "planted_constructor", "build_lm", "lm_label", "run_sweep", "write_tables", "read_results", "environment",
           "code_fingerprint", "train_job", "check_job", "heldout_tokens", "tokens_digest", "results_directory",
           "WORLD_KINDS", "PLANTED_FAMILIES", "LAWS"]
