"""Tzach et al. (2025) against the Bayes-optimal masked predictor: APT, confusion clusters, ⟨APT⟩ along blocks.

Three worlds with planted token classes (:mod:`simlm.worlds.topic`; the sweep's world kind ``planted-hmm``):

1. ``block_zipf`` — 8 states, Zipf emissions inside per-state blocks of 30 tokens: the Bayes predictor's
   ⟨APT⟩ vs its token accuracy, how many tokens it ever outputs, APT against frequency, and the share of its
   errors that stay in the true token's block — properties of the optimal predictor, at ε = 0;
2. ``groups`` — planted confusion groups: does the paper's cluster pipeline recover them from the Bayes
   predictor (ARI against the planted classes, swept over the unknown threshold τ)?
3. ``topic`` — a slow topic × fast syntax chain: a 4-block masked transformer trained down an ε ladder
   (BERT corruption), read out per block (fresh probe and logit lens) against the Bayes predictor; APT
   against frequency per rung; fine-tuning on the topic label per block; the confidence–APT correlation
   for the model and the Bayes classifier; and the substitution test.

    python -m simlm.experiments.token_accuracy [--quick] [--out DIR] [--figures DIR] [--workers N]

The experiment is the sweep of ``simlm/experiments/configs/token_accuracy.toml`` (:func:`sweep_config` of the
default :class:`Config`; ``simlm sweep`` runs that file as it is): in the oracle's cell of each world the
check :data:`CHECK` runs one cell per part of :data:`FAMILY_PARTS` (the Bayes summary; the trained ladder
read out per block, with fine-tuning and the substitution test on the topic world), every number a tidy
row.  The runner stores, resumes and runs the cells; the summary, ``<out>/results.json`` and the figure are
drawn from the stored rows (:func:`result_of`).  Training checkpoints live under ``<out>/work/`` and are
reused on reruns.  The full run takes ≈ 130 s of CPU on 2 cores (most of it training); ``--quick`` ≈ 45 s.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from simlm.checks import check_positive_int, checked_fields
from simlm.errors import ConfigError
from simlm.experiments.commandline import (Parser, add_run_options, check_run_options, directory, executor_of,
                                           run_main)
from simlm.experiments.nested import leaf_rows, nested_of
from simlm.experiments.registry import experiment_sweep
from simlm.experiments.store import results_dir
from simlm.experiments.token_accuracy_plots import plot, summary, verdicts
from simlm.jsonio import jsonable, write_json_atomic
from simlm.theory.block_readout import finetune_along_blocks, order_parameter, substitution_test
from simlm.theory.corrupted_channel import Corruption, bayes_corrupted_probs, corrupt, state_marginals
from simlm.theory.token_accuracy import (TIE_RTOL, apt_by_frequency, confusion_clusters, token_accuracy,
                                        within_class_errors)
from simlm.worlds.base import check_number
from simlm.worlds.topic import topic_of_state

THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def training_configs(config: Config, n_symbols: int):
    """``(TransformerConfig, TrainConfig)`` of the ladder on a world of ``n_symbols`` tokens (ConfigError naming
    the field for a bad pair, e.g. d_model not divisible by n_heads, or two targets written alike)."""
    from simlm.models.transformer import TransformerConfig
    from simlm.train import TrainConfig

    mc = TransformerConfig(n_symbols=n_symbols, d_model=config.d_model, n_layers=config.n_layers,
                           n_heads=config.n_heads, max_len=config.length + 1, causal=False)
    tc = TrainConfig(objective="masked-lm", targets=config.targets, seq_len=config.length,
                     batch_size=config.batch_size, max_steps=config.max_steps, learning_rate=3e-3,
                     warmup_steps=min(100, config.max_steps // 5), eval_every=50, eval_sequences=64,
                     eval_positions=config.length, seeds=(config.seed,))  # every position: the ε appended below
    return mc, tc


@checked_fields
@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    n_topics: int = 3
    n_syntax: int = 3
    block_size: int = 3
    switch: float = 0.03
    topic_rate: float = 0.5
    exponent: float = 1.5
    concentration: float = 0.1
    length: int = 16
    d_model: int = 32
    n_layers: int = 4
    n_heads: int = 4
    targets: tuple = (0.5, 0.2, 0.1)
    max_steps: int = 2500
    batch_size: int = 64
    n_train: int = 512
    n_test: int = 512
    probe_steps: int = 300
    zipf_sequences: int = 1024  # the Bayes summaries' sequences and length: the block-zipf world's and, despite
    zipf_length: int = 32  # the name, the confusion-groups world's too (every "bayes" part)
    threshold: float = 0.1

    def __post_init__(self):  # every field checked, so that a bad option fails when a config is parsed
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "targets":
                if isinstance(value, list):
                    object.__setattr__(self, "targets", value := tuple(value))
                if not isinstance(value, tuple) or not value:
                    raise ConfigError(f"targets: expected a non-empty list of masked-ε targets, got {value!r}")
                for i, t in enumerate(value):
                    check_number(f"targets[{i}]", t, positive=True)
            elif f.type == "int":
                check_positive_int(f.name, value, minimum=0 if f.name == "seed" else 1)
            elif f.name in ("switch", "topic_rate"):
                check_number(f.name, value, minimum=0.0, maximum=1.0)
            elif f.name == "threshold":  # τ = 0 keeps every token: confusion_clusters refuses it, after the ladder
                check_number(f.name, value, maximum=1.0, positive=True)
            else:
                check_number(f.name, value, positive=True)
        # BERT corruption selects 15 % of positions: a set of n·T ≥ 64 tokens misses every position with
        # probability 0.85⁶⁴ ≈ 3e-5 (n_test = 1, length = 2 failed after the whole ladder had trained), and a
        # standard error over sequences needs two of them
        for n, T in (("n_train", "length"), ("n_test", "length"), ("zipf_sequences", "zipf_length")):
            if getattr(self, n) * getattr(self, T) < 64 or (n != "n_train" and getattr(self, n) < 2):
                raise ConfigError(f"{n}, {T}: {getattr(self, n)} sequences of {getattr(self, T)} tokens are too few "
                                  "for the corruption to select positions reliably (15 % of them); give n·T ≥ 64 "
                                  "and at least 2 sequences")
        training_configs(self, 2)  # the model and ladder they make (d_model vs n_heads, distinct targets)


QUICK = Config(d_model=16, n_heads=2, targets=(0.6,), max_steps=150, batch_size=32, n_train=96, n_test=96,
               probe_steps=60, zipf_sequences=96, zipf_length=16)


def frequencies(world, length: int) -> np.ndarray:
    """The exact marginal token law averaged over positions 0..length−1, ``(V,)``."""
    return (state_marginals(world, length) @ np.asarray(world.chain.emission, np.float64)).mean(0)


def bayes_summary(classed, n: int, T: int, corruption: Corruption, seed: int) -> dict:
    """The Bayes predictor's APT numbers on one world with planted classes."""
    w = classed.hmm
    x = np.asarray(w.sample(seed, n, T))
    y, sel = corrupt(seed + 1, x, corruption, int(w.n_symbols))
    bayes = bayes_corrupted_probs(w, y, corruption)  # float64: an exact law, its ties scored as ties
    out = {}
    for name, where in (("selected", sel), ("masked", sel & (y == w.n_symbols))):
        acc = token_accuracy(bayes, x, where, bayes, tie_rtol=TIE_RTOL)
        prof = apt_by_frequency(acc, frequencies(w, T))
        out[name] = {"mean_apt": acc.mean_apt, "mean_apt_se": acc.mean_apt_se, "mean_apt_rb": acc.mean_apt_rb,
                     "accuracy": acc.accuracy, "accuracy_se": acc.accuracy_se, "n_predicted": acc.n_predicted,
                     "within_class_errors": within_class_errors(acc.confusion, classed.token_class),
                     "apt_by_frequency": prof.mean_apt.tolist(), "spearman": prof.spearman,
                     "spearman_p": prof.spearman_p,
                     "clusters": [_clusters(acc.confusion, tau, classed.token_class) for tau in THRESHOLDS]}
    return out


def _clusters(confusion, tau, classes) -> dict:
    c = confusion_clusters(confusion, tau, classes)
    return {"threshold": tau, "n_kept": c.n_kept, "n_clusters": int(len(c.sizes)),
            "largest": int(c.sizes[0]) if len(c.sizes) else 0, "ari": c.ari, "nmi": c.nmi}


def train_lms(world, config: Config, run_dir: Path, *, progress: bool = False):
    """The ladder's LMs ``[(target, masked ε, its s.e., lm)]`` — each reached rung's checkpoint, then the last
    step's model as target 0 (the final model) unless the last rung was saved there — and the targets not
    reached, ``[{"target", "best_eps", "steps"}]`` (they give no LM: listed, not dropped silently)."""
    from simlm.train import train

    mc, tc = training_configs(config, int(world.n_symbols))
    result = train(world, mc, tc, run_dir, progress=progress)
    reached = [r for r in result.records if r.reached]
    lms = [(r.target, r.epsilon, r.epsilon_se, result.lm(r.target)) for r in reached]
    if not reached or reached[-1].step != result.final_step:  # the last step, as the lowest-ε rung (target 0)
        from simlm.metrics import exact_masked_epsilon

        eps, se = exact_masked_epsilon(world, result.final_lms[0],
                                       np.asarray(world.sample(tc.eval_seed, 64, config.length)))
        lms.append((0.0, eps, se, result.final_lms[0]))
    unreached = [{"target": r.target, "best_eps": float(result.best_epsilon[r.seed]), "steps": result.final_step}
                 for r in result.records if not r.reached]
    return lms, unreached


def ladder_readouts(classed, config: Config, run_dir: Path, x_tr, x_te, *, progress: bool = False):
    """Train the ladder on ``classed.hmm`` and read every rung out per block; returns ``(summary dict, the
    Bayes TokenAccuracy, (last lm, its final-layer TokenAccuracy))``."""
    w, classes = classed.hmm, classed.token_class
    freq = frequencies(w, config.length)
    rungs = []
    lms, unreached = train_lms(w, config, run_dir, progress=progress)
    for target, eps, eps_se, lm in lms:
        op = order_parameter(lm, w, x_tr, x_te, corruption=Corruption(), seed=config.seed, classes=classes,
                             threshold=config.threshold, probe_steps=config.probe_steps)
        prof = apt_by_frequency(op.final, freq)
        rungs.append({"target": target, "masked_eps": eps, "masked_eps_se": eps_se,
                      "rows": [dataclasses.asdict(r) for r in op.rows],
                      "apt": op.final.apt.tolist(), "mean_apt": op.final.mean_apt, "accuracy": op.final.accuracy,
                      "corrupted_eps": op.final.epsilon, "kl_by_type": op.final.kl.tolist(),
                      "apt_by_frequency": prof.mean_apt.tolist(), "spearman": prof.spearman,
                      "spearman_p": prof.spearman_p})
        bayes, local, last = op.bayes, op.local, (lm, op.final)
    prof = apt_by_frequency(bayes, freq)
    summary = {
        "frequency": freq.tolist(), "token_class": classes.tolist(), "rungs": rungs, "unreached": unreached,
        "bayes": {"mean_apt": bayes.mean_apt, "mean_apt_se": bayes.mean_apt_se, "mean_apt_rb": bayes.mean_apt_rb,
                  "accuracy": bayes.accuracy, "apt": bayes.apt.tolist(), "n_predicted": bayes.n_predicted,
                  "apt_by_frequency": prof.mean_apt.tolist(), "spearman": prof.spearman,
                  "spearman_p": prof.spearman_p,
                  "within_class_errors": within_class_errors(bayes.confusion, classes),
                  "clusters": [_clusters(bayes.confusion, tau, classes) for tau in THRESHOLDS]},
        "local": {"mean_apt": local.mean_apt, "accuracy": local.accuracy, "epsilon": local.epsilon}}
    return summary, bayes, last


# ---- the experiment as a sweep check --------------------------------------------------------------

CHECK = "tzach/token-accuracy-experiment"
#: the Config fields that only define the topic world (the sweep's ``[[worlds]]``); ``seed`` is both the
#: worlds' seed and the check's (the data and training seed).  Every other field is an option of CHECK.
WORLD_FIELDS = ("n_topics", "n_syntax", "block_size", "switch", "topic_rate", "exponent", "concentration")
#: what the check computes on a world of each planted family, one cell per part: ``bayes`` — the Bayes
#: predictor's APT summary (:func:`bayes_summary`); ``ladder`` — the masked transformer trained down the ε
#: ladder and read out per block (:func:`ladder_readouts`), with, on the topic world, fine-tuning on the
#: topic label and the substitution test.
FAMILY_PARTS = {"block-zipf": ("bayes",), "confusion-groups": ("bayes", "ladder"), "topic-syntax": ("ladder",)}
#: the result's key of each (world, section) of the experiment's worlds (another world's is "world:section").
RESULT_KEYS = {("block_zipf", "bayes"): "block_zipf", ("groups", "bayes"): "groups", ("topic", "ladder"): "topic",
               ("groups", "ladder"): "groups_ladder", ("topic", "finetune"): "finetune",
               ("topic", "substitution"): "substitution"}


def world_specs(config: Config) -> list:
    """The sweep's ``[[worlds]]`` tables: block-zipf and confusion groups at their constructors' defaults,
    the topic world with the Config's fields."""
    topic = {f: getattr(config, f) for f in WORLD_FIELDS}
    return [{"name": "block_zipf", "kind": "planted-hmm", "seed": config.seed, "options": {"family": "block-zipf"}},
            {"name": "groups", "kind": "planted-hmm", "seed": config.seed, "options": {"family": "confusion-groups"}},
            {"name": "topic", "kind": "planted-hmm", "seed": config.seed, "options": {"family": "topic-syntax", **topic}}]


def check_options(config: Config) -> dict:
    """The check's options of ``config`` (plain JSON values)."""
    return jsonable({k: v for k, v in dataclasses.asdict(config).items() if k not in WORLD_FIELDS})


def sweep_config(config: Config = Config()) -> dict:
    """The sweep config (a dict, as TOML or JSON gives it) that IS this experiment under ``config``: its three
    worlds, the oracle as the one LM source (the check trains and reads its own transformers inside the
    oracle's cells) and :data:`CHECK`.  The shipped ``configs/token_accuracy.toml`` is this dict for the
    default Config."""
    return experiment_sweep("token_accuracy", world_specs(config), CHECK, check_options(config))


def shipped_config() -> Path:
    """The path of the shipped sweep config."""
    return Path(__file__).parent / "configs" / "token_accuracy.toml"


def load_shipped() -> dict:
    """The shipped sweep config, as a dict."""
    return tomllib.loads(shipped_config().read_text(encoding="utf-8"))


def config_of(raw: dict) -> Config:
    """The :class:`Config` a sweep config of this experiment (e.g. the shipped one) stands for; a
    :class:`ConfigError` if ``raw`` is not :func:`sweep_config` of any Config (run such a sweep with
    ``simlm sweep``)."""
    try:
        topic = next(w for w in raw["worlds"] if w["options"].get("family") == "topic-syntax")
        config = Config(**{**{f: topic["options"][f] for f in WORLD_FIELDS}, **raw["checks"][CHECK]})
    except (KeyError, TypeError, StopIteration) as err:
        raise ConfigError(f"config: not a sweep config of this experiment (missing {err})") from None
    if json.dumps(sweep_config(config), sort_keys=True) != json.dumps(jsonable(raw), sort_keys=True):
        raise ConfigError("config: not the experiment's layout (its worlds or seeds were edited); run it with "
                          "`simlm sweep`")
    return config


def validate_options(options: dict) -> None:
    """Raise a ConfigError naming the option for bad options of the check (the Config they make is checked)."""
    try:
        Config(**options)
    except ConfigError as err:
        raise ConfigError(f"checks.{CHECK}.{err}") from None


def applies(world_spec, lm_spec) -> str:
    if world_spec.get("kind") != "planted-hmm":
        return "needs a planted-hmm world (token classes planted)"
    return "" if lm_spec["source"] == "oracle" else "trains its own LMs: runs in the oracle's cell only"


def parts(world_spec, lm_spec, options) -> list:
    return list(FAMILY_PARTS[world_spec["options"]["family"]])


def _option(world_spec, name: str):
    """An option of a planted world's constructor: the table's value, else the constructor's default."""
    from simlm.experiments.sweep import planted_constructor

    make = planted_constructor(world_spec["options"]["family"])
    return world_spec["options"].get(name, inspect.signature(make).parameters[name].default)


def experiment_check(cell) -> list:
    """One part (:data:`FAMILY_PARTS`) of the experiment on the cell's planted world, as tidy rows: every
    number of the part's result sections (:func:`tidy_rows`); a ladder rung's rows name the trained LM and
    its masked ε.  Checkpoints go to ``cell.workdir``; a rerun reuses them.  No bounds: the paper's
    statements are observations, judged by :func:`verdicts` against the Bayes predictor."""
    from simlm.experiments.sweep import planted_world

    config = Config(**cell.options)
    spec, classed = cell.world_spec, planted_world(cell.world_spec)
    if cell.part == "bayes":
        bayes = bayes_summary(classed, config.zipf_sequences, config.zipf_length, Corruption(), config.seed)
        return tidy_rows("bayes", {"n_classes": int(len(np.unique(classed.token_class))), **bayes})
    w, T, topic = classed.hmm, config.length, spec["options"]["family"] == "topic-syntax"
    train_set, test_set = (w.sample(config.seed + s, n, T, return_states=topic)  # hidden states: topic labels
                           for s, n in ((10, config.n_train), (11, config.n_test)))
    if topic:
        (x_tr, h_tr), (x_te, h_te) = ([np.asarray(a) for a in d] for d in (train_set, test_set))
    else:
        x_tr, x_te = np.asarray(train_set), np.asarray(test_set)
    ladder, bayes, (lm, final) = ladder_readouts(classed, config, Path(cell.workdir) / "train", x_tr, x_te,
                                                 progress=cell.progress)
    rungs = [(f"trained-mlm@{g['target']:g}" if g["target"] else "trained-mlm@final", g["masked_eps"],
              g["masked_eps_se"]) for g in ladder["rungs"]]
    rows = tidy_rows("ladder", ladder, rungs=rungs, seed=config.seed)
    if not topic:
        return rows
    labels, position = topic_of_state(_option(spec, "n_topics"), _option(spec, "n_syntax")), T // 2
    ft = finetune_along_blocks(lm, w, (x_tr, h_tr), (x_te, h_te), labels, position, apt_model=final.apt,
                               apt_bayes=bayes.apt, steps=4 * config.probe_steps)
    finetune = {"accuracy": ft.accuracy.tolist(), "rise_se": ft.rise_se, "bayes_accuracy": ft.bayes_accuracy,
                "bayes_ceiling": ft.bayes_ceiling, "majority": ft.majority, "corr_model": ft.corr_model,
                "corr_bayes": ft.corr_bayes, "confidence_model": ft.confidence_model.tolist(),
                "confidence_bayes": ft.confidence_bayes.tolist(), "input_apt_model": ft.input_apt_model.tolist(),
                "input_apt_bayes": ft.input_apt_bayes.tolist()}
    substitution = substitution_test(w, lambda x: ft.confidence(lm, x), x_te, classed.token_class, labels,
                                     position, fraction=0.2, seed=config.seed).as_dict()
    last = {"lm": rungs[-1][0], "eps": rungs[-1][1], "eps_se": rungs[-1][2], "lm_seed": config.seed}
    # the Bayes classifier's numbers are the world's (the oracle's cell), the heads' are the last rung's
    world_side = {k: v for k, v in finetune.items() if k in BAYES_FINETUNE}
    model_side = {k: v for k, v in finetune.items() if k not in BAYES_FINETUNE}
    # so are the substitution test's exact TV and Bayes confidence change; the LM's confidence change is the rung's
    sub_model = {mode: {"dconf_model": effect["dconf_model"]} for mode, effect in substitution.items()}
    sub_world = {mode: {k: v for k, v in effect.items() if k != "dconf_model"} for mode, effect in substitution.items()}
    return (rows + tidy_rows("finetune", model_side, **last) + tidy_rows("finetune", world_side)
            + tidy_rows("substitution", sub_model, **last) + tidy_rows("substitution", sub_world))


#: the fine-tuning numbers of the Bayes classifier and of the test labels, not of the trained LM
BAYES_FINETUNE = ("bayes_accuracy", "bayes_ceiling", "majority", "corr_bayes", "confidence_bayes", "input_apt_bayes")


def tidy_rows(section: str, value: dict, *, rungs=(), seed=None, **columns) -> list:
    """The rows of one result section (:func:`~simlm.experiments.nested.leaf_rows`, with ``section`` a
    column); leaves under ``rungs[]`` name that rung's LM and ε (``rungs``: ``(lm label, masked ε, its s.e.)``
    each)."""
    rows = leaf_rows(value, section=section, **columns)
    for r in rows:
        if r["quantity"].startswith("rungs[]/") and rungs:
            lm, eps, eps_se = rungs[int(r["index"].split("/")[0])]
            r.update(lm=lm, eps=eps, eps_se=eps_se, lm_seed=seed)
        elif r["quantity"].startswith("local/"):  # the token + position predictor's, not the cell's oracle
            r.update(lm=LOCAL_LM)
        elif r["quantity"].startswith("unreached[]/"):  # a target the ladder never reached: the ladder's row
            r.update(lm="trained-mlm", lm_seed=seed)
    return rows


#: the ``lm`` of the local predictor's rows (Bayes given the token and its position only)
LOCAL_LM = "local-bayes"


def result_of(rows: list, config: Config) -> dict:
    """The experiment's result (``{"config", "thresholds", "block_zipf", "groups", "topic", "groups_ladder",
    "finetune", "substitution", "verdicts"}``, as :func:`summary` and the figure read it) from the sweep's
    tidy rows; the verdicts only when every section is there."""
    out = {"config": dataclasses.asdict(config), "thresholds": list(THRESHOLDS)}
    sections = {}
    for r in rows:
        if r.get("check") == CHECK:
            sections.setdefault(RESULT_KEYS.get((r["world"], r["section"]), f"{r['world']}:{r['section']}"), []).append(r)
    out |= {key: nested_of(rs) for key, rs in sections.items()}
    if set(RESULT_KEYS.values()) <= set(out):
        out["verdicts"] = verdicts(out)
    return out


def run(config: Config = Config(), out=None, *, executor=None, progress: bool = False, log=print,
        after=None) -> dict:
    """The whole experiment — the sweep of :func:`sweep_config` into ``out`` (default a temporary directory;
    a rerun resumes, a different config is refused) — as :func:`result_of` plus ``errors``, ``new_cells`` and
    ``time_s``.  A cell that failed is a :class:`ConfigError` naming it (its message is in summary.json).
    ``after(result)``, if given and no cell failed, runs on that result before the sweep's lock is released (the
    command line writes its files there)."""
    import tempfile

    from simlm.experiments.sweep import parse_config, run_sweep

    started = time.perf_counter()
    sweep = parse_config(sweep_config(config))  # checked before a directory is claimed
    out = Path(tempfile.mkdtemp(prefix="simlm-tzach-") if out is None else out)
    done = {}

    def finish(swept):
        if swept["errors"]:
            return
        done["result"] = {**result_of(swept["rows"], config), "errors": swept["errors"],
                          "new_cells": swept["new_cells"], "time_s": time.perf_counter() - started}
        if after is not None:
            after(done["result"])

    swept = run_sweep(sweep, out, executor=executor, progress=progress, log=log, after=finish)
    if swept["errors"]:
        e = swept["errors"][0]
        raise ConfigError(f"cells: {len(swept['errors'])} cell(s) of {out} failed (stored there; a rerun recomputes "
                          f"them), e.g. {e['cell']}: {e['error']}")
    return done["result"]


#: config fields and paths set by a flag, as the flag (errors name the flag the user typed).
FLAGS = {"out": "--out", "figures": "--figures", "workers": "--workers", "executor": "--executor",
         "address": "--address"}


def command(argv=None) -> dict:
    """The command line: run the sweep of the shipped config (``--quick``: of :data:`QUICK`), then print the
    summary and write ``results.json`` and the figure, all from the stored rows; return the result."""
    p = Parser(prog="python -m simlm.experiments.token_accuracy", description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (the tests' mode), about a minute")
    p.add_argument("--out", type=directory, default=None,
                   help="results directory: the sweep's files, checkpoints, results.json "
                   "and the PNG (default runs/token_accuracy[_quick]); a rerun resumes")
    p.add_argument("--figures", default=None, help="also write the PNG here (e.g. docs/)")
    add_run_options(p)
    args = p.parse_args(argv)
    config = QUICK if args.quick else config_of(load_shipped())
    check_run_options(args)  # these two before the results directory is made
    figures = results_dir(args.figures, "figures") if args.figures else None
    out = results_dir(args.out or ("runs/token_accuracy_quick" if args.quick else "runs/token_accuracy"))
    figures = figures or out
    executor = executor_of(args)
    paths = []

    def write(result):  # under the sweep's lock: a later run's files cannot be overwritten by these
        write_json_atomic(out / "results.json", jsonable(result))
        try:
            paths.extend(plot(result, figures))
        except ImportError as e:  # matplotlib is the optional extra "plots"
            print(f"no plot: {e} (pip install -e '.[plots]')")

    result = run(config, out, executor=executor, progress=not args.quiet, after=write)
    print(summary(result))
    print(f"wrote {', '.join(map(str, [out / 'results.json', *paths]))}; time {result['time_s']:.1f} s "
          f"({result['new_cells']} new cells)")
    return result


def main(argv=None) -> int:
    return run_main("python -m simlm.experiments.token_accuracy", command, argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
