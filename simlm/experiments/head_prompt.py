"""Head and prompt tuning on exact worlds (Wei, Xie & Ma, NeurIPS 2021), at the oracle and at trained masked LMs.

Experiment 1 — |X| = 10 symbols, |H| ∈ {4, 8, 10, 12, 15, 25, 30}, one HMM per |H| from the
permutation-mixture family at temperature 0.01 (``HMM.random(world_seed, |H|, |X|, family=
"permutation-mixture", transition_temp=0.01, emission_temp=0.01)``).  Per seed s a binary task
y = 1[μᵀP(H_0 | x_1:T) ≥ 0] (:func:`~simlm.downstream.make_posterior_task`, position "prepended"), n_train
+ n_test labelled sequences, and four predictors that see only x_1:T' (T' = ``visible_length`` ≤ T =
``label_length``; the authors label from length 128 and show 80):

- oracle head     — linear head on the exact prepended-mask law P(H_0 | x_1:T') B (WorldLM, ε = 0);
- oracle prompt   — prompt likelihoods u ∈ R^K_{≥0} and a head, fitted jointly (fit_exact_prompt);
- analytic head   — linear head on the exact law perturbed (``analytic``: logit noise by default) to an
                    exact ε = t at that very law (:func:`~simlm.models.perturbed_lm` with
                    ``law="prepended-mask"``), one LM per target t, level "eps=t";
- trained head    — linear head on a masked transformer's law at a MASK prepended before x_1:T';
- trained prompt  — a continuous prefix before (MASK, x_1:T') and a head, the network frozen.

The trained transformers (``causal=False``, objective "masked-lm", seq_len k + T' + 1 — k + T' on memory
worlds — so that every position of the prompted input (p_1:k, MASK, x_1:T') is one trained at; a position
past the training length keeps its initial embedding) are the seeds of one world trained together as a
vmapped ensemble down the ε ladder ``targets``; each is evaluated at every rung it reached (its Orbax
checkpoint) and at the end of training (level "final").  The heads read the unprompted (MASK, x_1:T'), k
positions shorter than the training sequences.  Every record carries the exact masked ε of the LM it used
(``epsilon``: mean KL(p*(x_t|x_−t) ‖ p_θ(x_t|x_−t)) over all positions of the trainer's 64 held-out
sequences, of the training length; ``ladder_epsilon``: the trainer's value when the rung was saved, and
for an analytic LM its calibrated ε at the readout law on the training inputs) and ``epsilon_readout``,
the exact KL at the very law the head reads, on the test inputs — the number that says how well the
unprompted readout of a trained LM fares at its shorter length.  Beside the accuracies: the Bayes ceiling
E[max_y P(y | x_1:T')] (1 exactly when T' = T: ``--full-input``; ``bayes_ceiling`` the plug-in estimate from
``n_continuations`` continuations, an upper bound in expectation, ``bayes_ceiling_lower`` the split one from the same
continuations, a lower bound: :func:`~simlm.downstream.bayes_ceiling_bracket`), the majority-class rate, and
Wei et al.'s conditions — emission rank and σ_min of B (rank B = |H| makes the head work for every μ, so it holds
only while |H| ≤ |X|; a rank-deficient B alone does not make a head fail: states the posterior never tells apart),
the head realisability residual — the distance of μ from col(B), computed as the projection residual ‖μ − Πμ‖/‖μ‖
with Π the projection on B's leading left singular vectors (equal to ‖BB⁺μ − μ‖/‖μ‖ in exact arithmetic, without
its ε·cond(B) rounding) — the rank of B on supp μ and the prompt feasibility of the task at δ = 0
(``prompt_feasible``: exact zeros, the theorem's hypothesis, as
:func:`~simlm.theory.head_prompt.check_head_prompt_conditions` reads it by default; so it equals
``prompt_exact``), each with its margin to its tolerance, and the soft-zero range [δ_min, δ_max) of the
prompt condition (:mod:`simlm.theory.head_prompt_margins`).  Every accuracy is also stratified by label margin:
``share_without_margin`` (test labels with |μᵀP(H_0 | x_1:T)| < 1e-6·max|μ|, decided by leftover posterior
mass) and ``accuracy_with_margin``, ``n_with_margin`` (the accuracy on the other inputs).  ``test_seen_in_train``
is the share of the test inputs x_1:T' that occur among the training inputs (:func:`seen_in_training`): some
worlds hold few distinct sequences, and at the defaults (3 seeds) 75 % of hmm-K4's "held-out" inputs, 44 % of
K8's, 42 % of K30's and 55–74 % of every memory world's were seen in training (under 6 % for K10–K25).

Experiment 2 — memory.  4 syntactic states × M ∈ {2, 3, 5, 7} slot values: one memory cell whose value
is drawn once per sequence (``MemoryHMM.random(world_seed, 1, M, 4, |X|)``, the one-cell model of
:meth:`~simlm.worlds.MemoryHMM.one_cell`), the task a function of P(m | x) (:func:`make_memory_task`),
read by the single-query attention head over the masked laws at every position (oracle, analytic with
its masked laws calibrated to ε = t at every position, and trained), by prompt tuning with that attention
head (:mod:`simlm.downstream.attention_prompts`: exact prompt likelihoods over the joint (slot, state)
chain on the oracle, a continuous prefix before every masked copy on the trained transformer, minibatches
of ``memory_prompt_batch`` sequences), and by a linear head on the prepended-mask law (oracle) for
contrast; against a vanilla HMM with as many hidden states, 4M — an independent permutation-mixture draw
(experiment 1's world of that size), not the memory world's chain — and its posterior task (linear head and
prompt, oracle, analytic and trained, as above).  ``n_cells`` (default (1,)) adds memory worlds with N
cells, ``memory-N<N>-M<M>`` = ``MemoryHMM.random(world_seed, N, M, 4, |X|)``, the task on cell 0 (the
vanilla twin is added once per M, with the one-cell worlds).

Seeds.  Seed s sets the task (1000 s), the training (1000 s + 1) and test (1000 s + 2) data, the Bayes
ceiling's continuations (1000 s + 3), head and prompt initialisations and the transformer's
initialisation; the world of each size is one draw (``world_seed``), shared by the seeds.

Results.  The experiment is the sweep of ``simlm/experiments/configs/head_prompt_<experiment>.toml``
(:func:`sweep_config` of the Config; flags override its values): one world per ``[[worlds]]`` table and the
check ``wei/head-prompt-experiment`` (:func:`experiment_check`), which builds the levels' LMs itself in
the oracle's cell, one cell per task seed.  Everything the sweep runner writes is in ``<out>/<experiment>/``
— ``cells.jsonl`` (a SIGKILL loses no finished cell; a rerun skips them), the tidy ``results.csv``, the
config (``sweep.json``: a different config is refused), the environment and the worlds' parameters, and
the trainer's checkpoints under ``work/`` (reused, never retrained) — beside ``<experiment>.json`` (all
records, the per-group summary, the training ladders, times) and ``<experiment>.png``, rewritten at the end
of every run from the stored rows.  The cells run in parallel, each seed's a job of its own (a world's seeds
train together, in the first of its cells to start; the others wait for it and read its checkpoints):
``--workers`` defaults to ``auto`` (a process per CPU core on a CPU backend, one on an accelerator;
``--quick`` runs in this process; with ``--executor ray`` Ray sizes itself), and ``--workers N`` /
``--executor ray`` spread the cells as for any sweep.

    python -m simlm.experiments.head_prompt experiment1 [--quick] [--out DIR] [--seeds 0 1 2] ...
    python -m simlm.experiments.head_prompt experiment2 [--quick] ...

Defaults (chosen to fit a 2-core CPU): T = 24, T' = 16, 512 + 512 sequences per task, 64 continuations
for the ceiling; transformer d_model 32, 2 layers, 4 heads (27k parameters); batch 64, up to 2500
steps, learning rate 1e-2 (2e-2 diverged for some seeds; d_model 64 at 1e-2 stalled at ε ≈ 1.5), ladder
(0.3, 0.1, 0.03) — the worlds with |H| ≥ 8 end at ε ≈ 0.03–0.09 after 2500 steps, so their 0.03 rung
is usually not reached and "final" stands for it; transformer prompt 200 steps, k = 1, on minibatches of
``transformer_prompt_batch`` = 256 of the 512 training sequences (issue 14: half the full batch's work;
on hmm-K12 its accuracies were within 0.004 of the full-batch fit's, where 128 moved one seed by 0.05 —
the full batch is ``transformer_prompt_batch=n_train``); the attention prompt on minibatches of ``memory_prompt_batch`` = 32
sequences (× T' masked copies; 64 before issue 14 — every method is at 0.96–1.000 on the memory worlds).

Measured on an idle 2-core CPU before issue 14's minibatches (docs/head_prompt.md has the results): experiment 1 in full (7 worlds ×
3 seeds, 168 cells) 13.1 min wall, 19.2 min CPU — training 30–57 s per world (the 3 seeds as one
ensemble), 5–9 s per trained cell, mostly the transformer prompt; experiment 2 (8 worlds, 192 cells)
23.9 min wall, 30.4 min CPU, 14–20 s per trained memory cell, mostly the attention prompt.  Now, with
``--workers auto`` (one single-threaded process per core): 6.5 min (experiment 1) and 9.7 min (experiment 2),
re-timed on 2026-12-04 with the seeds as jobs of their own and the workers sharing compiled programs; 9.5 and
13.4 min on a 2-core machine about 1.5× slower (2026-12-05: both targets missed there, docs/head_prompt.md).
``--quick``: ~25 s (experiment 1) and ~30 s (experiment 2) wall when idle, most of it compilation; a
rerun of a finished store takes well under a second before plotting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path

import jax
import numpy as np

from simlm.downstream import (attention_features, bayes_ceiling_bracket, fit_attention_head, fit_exact_attention_prompt,
                              fit_exact_prompt, fit_transformer_attention_prompt,
                              fit_linear_head, fit_transformer_prompt, make_memory_task, make_posterior_task,
                              sample_task_data, task_features)
from simlm.checks import (check_distinct_labels, check_instance, check_memory, check_positive, check_positive_int,
                          check_tokens, checked_fields)
from simlm.errors import ConfigError, ShapeError
from simlm.experiments.commandline import (Parser, add_run_options, check_run_options, directory, executor_of,
                                           run_main)
from simlm.experiments.head_prompt_report import plot, summarise, table
from simlm.experiments.registry import experiment_sweep, record_of, row, tidy_columns
from simlm.experiments.store import results_dir
from simlm.models import TransformerConfig, WorldLM, perturbed_lm
from simlm.models.perturbed import UNDIRECTED_KINDS
from simlm.theory.head_prompt import emission_rank, head_realisability, memory_rank, prompt_feasibility, support_rank
from simlm.theory.head_prompt_margins import feasibility_range, label_margins, margin_accuracy
from simlm.train import TrainConfig, exact_masked_epsilon, exact_prepended_epsilon, train
from simlm.jsonio import jsonable, write_json_atomic
from simlm.worlds import HMM, MemoryHMM
from simlm.worlds.prompting import MAX_PROMPT_LENGTH

EXPERIMENTS = ("experiment1", "experiment2")
ANALYTIC_KINDS = UNDIRECTED_KINDS  # the families that need no direction
EVAL_SEED, EVAL_SEQUENCES = 2**20, 64  # the held-out set of every reported ε (the trainer's own)
#: the largest seed: seed s also seeds 1000 s + 3.
MAX_SEED = (2**63 - 4) // 1000


def _seed(s) -> int:
    s = check_positive_int("seeds", s, minimum=0)
    if s > MAX_SEED:
        raise ConfigError(f"seeds: {s} is too large; seeds go up to {MAX_SEED} (seed s also seeds 1000 s + 3)")
    return s


@checked_fields
@dataclasses.dataclass(frozen=True)
class Config:
    """Both experiments as plain values; experiment 1 reads ``n_states``, experiment 2 ``n_slots`` and
    ``n_syntactic``.  ``visible_length`` T' ≤ ``label_length`` T; ``trained=False`` skips the transformers."""

    n_symbols: int = 10
    n_states: tuple = (4, 8, 10, 12, 15, 25, 30)
    n_syntactic: int = 4
    n_slots: tuple = (2, 3, 5, 7)
    n_cells: tuple = (1,)
    temperature: float = 0.01
    world_seed: int = 0
    seeds: tuple = (0, 1, 2)
    label_length: int = 24
    visible_length: int = 16
    n_train: int = 512
    n_test: int = 512
    n_continuations: int = 64
    prompt_length: int = 1
    exact_prompt_steps: int = 300
    transformer_prompt_steps: int = 200
    transformer_prompt_batch: int = 256
    memory_prompt_batch: int = 32
    attention_steps: int = 300
    trained: bool = True
    analytic: str | None = "logit-noise"
    targets: tuple = (0.3, 0.1, 0.03)
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    batch_size: int = 64
    max_steps: int = 2500
    learning_rate: float = 1e-2
    eval_every: int = 100

    def __post_init__(self):
        """Every field checked here (and the training configs built), so that a bad value stops a run
        before it claims its results directory."""
        for name, low in (("n_symbols", 2), ("n_syntactic", 1), ("world_seed", 0), ("label_length", 1),
                          ("n_train", 2), ("n_test", 2), ("n_continuations", 2),
                          ("exact_prompt_steps", 1), ("transformer_prompt_steps", 1), ("transformer_prompt_batch", 1),
                          ("memory_prompt_batch", 1),
                          ("attention_steps", 1), ("d_model", 1), ("n_layers", 1), ("n_heads", 1), ("batch_size", 1),
                          ("max_steps", 1), ("eval_every", 1)):
            check_positive_int(name, getattr(self, name), minimum=low)
        check_positive_int("prompt_length", self.prompt_length, maximum=MAX_PROMPT_LENGTH)  # what the fits take
        check_positive_int("world_seed", self.world_seed, minimum=0, maximum=2**63 - 1)  # stored as int64
        if not 1 <= check_positive_int("visible_length", self.visible_length) <= self.label_length:
            raise ConfigError(f"visible_length: expected 1 ≤ T' ≤ label_length = {self.label_length}, "
                              f"got {self.visible_length}")
        check_positive("temperature", self.temperature)
        check_positive("learning_rate", self.learning_rate)
        if self.analytic is not None and (not isinstance(self.analytic, str) or self.analytic not in ANALYTIC_KINDS):
            raise ConfigError(f"analytic: expected None or one of {', '.join(ANALYTIC_KINDS)}, got {self.analytic!r}")
        if not isinstance(self.trained, (bool, np.bool_)):
            raise ConfigError(f"trained: expected True or False, got {self.trained!r}")
        # tasks need two hidden values to label; seed s also seeds 1000 s + 3, which must stay below 2**63
        for name, check in (("n_states", lambda v: check_positive_int("n_states", v, minimum=2)),
                            ("n_slots", lambda v: check_positive_int("n_slots", v, minimum=2)),
                            ("n_cells", lambda v: check_positive_int("n_cells", v, minimum=1)),
                            ("seeds", _seed), ("targets", lambda v: check_positive("targets", v))):
            value = getattr(self, name)
            values = tuple(check(v) for v in (value if isinstance(value, (list, tuple, np.ndarray)) else (value,)))
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"{name}: expected one or more distinct values, got {value!r}")
            object.__setattr__(self, name, values)
        check_distinct_labels("targets", self.targets)  # a target's level ("eps=0.1") is written with :g
        # the task tokens, before the directory is claimed (a request too large to sample can abort the process)
        check_memory("n_train, n_test, label_length", (self.n_train + self.n_test) * (self.label_length + 1),
                     what="the task tokens of one seed")
        if self.trained:
            _train_configs(self, "hmm")


#: ``--quick``: |H| ∈ {8, 15} (experiment 2: M = 2, i.e. one memory and one vanilla world), one seed, T' = 6
#: of T = 8, 128 + 128 sequences, a 1-layer d = 16 transformer trained until its ε ≤ 1.8 rung (a few
#: steps; at most 40).  Shapes are chosen so that compiled functions are shared between worlds.
QUICK = dict(n_states=(8, 15), n_slots=(2,), seeds=(0,), label_length=8, visible_length=6, n_train=128,
             n_test=128, n_continuations=16, exact_prompt_steps=100, transformer_prompt_steps=20,
             attention_steps=100, targets=(1.8,), d_model=16, n_layers=1, n_heads=2, batch_size=64,
             max_steps=40, learning_rate=1e-2, eval_every=20)


# ---- worlds and per-seed task data ---------------------------------------------------------------

def worlds(experiment: str, config: Config) -> list[dict]:
    """The worlds of an experiment: ``{"world": name, "kind": "hmm" | "memory", "sweep_kind": the sweep's
    world kind, "options": its ``random`` options, "n_states", "n_slots", "make": () → world}``; n_states is
    the number of hidden states of the world's chain (M^N·N·Q for a memory world of N cells: M·Q for one)."""
    V, t, ws = config.n_symbols, config.temperature, config.world_seed
    temps = {"transition_temp": t, "emission_temp": t}

    def spec(name, kind, K, M, options):
        cls, sweep_kind = (MemoryHMM, "memory-hmm") if kind == "memory" else (HMM, "hmm")
        return dict(world=name, kind=kind, sweep_kind=sweep_kind, n_states=K, n_slots=M, options=options,
                    make=lambda: cls.random(ws, **options))

    def hmm(K, M=None):
        return spec(f"hmm-K{K}" if M is None else f"vanilla-K{K}", "hmm", K, M,
                    {"n_states": K, "n_symbols": V, "family": "permutation-mixture", **temps})

    if experiment == "experiment1":
        return [hmm(K) for K in config.n_states]
    if experiment != "experiment2":
        raise ConfigError(f"experiment: expected one of {EXPERIMENTS}, got {experiment!r}")
    Q, out = config.n_syntactic, []
    for N in config.n_cells:  # N = 1 first: its worlds keep their names (memory-M<M>, vanilla-K<MQ>)
        for M in config.n_slots:
            name = f"memory-M{M}" if N == 1 else f"memory-N{N}-M{M}"
            out.append(spec(name, "memory", M**N * N * Q, M, {"n_cells": N, "n_values": M, "n_syntactic": Q,
                                                       "n_symbols": V, **temps}))
            if N == 1:  # a vanilla HMM with as many hidden states (M·Q), an independent draw, once per M
                out.append(hmm(M * Q, M))
    return out


def task_context(world, kind: str, seed: int, config: Config) -> dict:
    """Task, data (full length T), Bayes ceiling of the test set at T' and the conditions, for one seed."""
    T, Tv = config.label_length, config.visible_length
    task = (make_memory_task(world, 1000 * seed) if kind == "memory" else make_posterior_task(world, 1000 * seed))
    x_tr, y_tr = sample_task_data(world, task, 1000 * seed + 1, config.n_train, T)
    if np.unique(y_tr).size < 2:  # every method would report a constant prediction's rate as its accuracy
        raise ConfigError(f"n_train: the {config.n_train} training sequences of seed {seed}'s task all have label "
                          f"{int(y_tr[0])}; every head and prompt needs both classes to learn from: use a larger "
                          "n_train")
    x_te, y_te = sample_task_data(world, task, 1000 * seed + 2, config.n_test, T)
    # the plug-in ceiling (an upper bound in expectation: the records' bayes_ceiling, as before) and, from the same
    # continuations, the split one (a lower bound): at R = 8 the plug-in reads 0.64 for a coin-flip label's 0.5
    lower, lower_se, ceiling, ceiling_se = bayes_ceiling_bracket(world, task, x_te, Tv, key=1000 * seed + 3,
                                                                 n_continuations=config.n_continuations)
    margins = held_out_margins(world, task, x_te)
    shared = {"bayes_ceiling": ceiling, "bayes_ceiling_se": ceiling_se,
              "bayes_ceiling_lower": lower, "bayes_ceiling_lower_se": lower_se,
              "majority": float(max(np.mean(y_te), 1 - np.mean(y_te))),
              "share_without_margin": margins.share_without_margin,
              "test_seen_in_train": seen_in_training(x_tr[:, :Tv], x_te[:, :Tv]),
              **conditions(world, kind, task, config)}
    return {"task": task, "train": (x_tr[:, :Tv], y_tr), "test": (x_te[:, :Tv], y_te), "shared": shared,
            "margins": margins}


def seen_in_training(train_inputs, test_inputs) -> float:
    """The share of the test inputs (rows of token ids) that occur among the training inputs: on a world of
    few distinct sequences (some permutation mixtures — K4, K8, K30 at the defaults — and the memory worlds)
    much of a "held-out" set was seen in training, and its accuracy measures little generalisation to unseen
    inputs.  Both are read by :func:`~simlm.checks.check_tokens` (integer ids ≥ 0 of any integer dtype, whole
    floats too, compared as int32; anything else a TokenError) and need one length T."""
    (train, _), (test, _) = (check_tokens(a, np.iinfo(np.int32).max, name) for name, a in
                             (("train_inputs", train_inputs), ("test_inputs", test_inputs)))
    if train.shape[1] != test.shape[1]:
        raise ShapeError(f"train_inputs, test_inputs: expected token ids of one length T, got {train.shape} and "
                         f"{test.shape}")
    seen = {row.tobytes() for row in train}
    return float(np.mean([row.tobytes() in seen for row in test]))


def held_out_margins(world, task, tokens_full):
    """The label margins of the test inputs x_1:T (:func:`~simlm.theory.head_prompt_margins.label_margins`):
    |μᵀP(H_0 | x_1:T)| for a posterior task, the gap between the two class scores of a memory task."""
    weights = task.mu if task.mu is not None else task.label_matrix
    return label_margins(weights, task.posteriors(world, tokens_full))


def conditions(world, kind: str, task, config: Config) -> dict:
    """Wei et al.'s conditions as numbers (:mod:`simlm.theory.head_prompt`)."""
    er = emission_rank(world)
    out = {"emission_rank": er.rank, "emission_sigma_min": er.sigma_min, "emission_condition": er.condition_number,
           "emission_margin": er.margin, "condition_tol": er.tol}
    if kind == "memory":
        mr = memory_rank(world)
        return {**out, "memory_ranks": mr.ranks.tolist(), "memory_sigma_min": float(mr.sigma_min.min()),
                "memory_all_full_rank": mr.all_full_rank, "memory_margin": float(mr.margins.min()),
                "n_cells": world.n_cells}
    hr, sr = head_realisability(world, task.mu), support_rank(world, task.mu)
    pf = prompt_feasibility(world, task.mu, k=config.prompt_length, delta=0.0)  # the check's default δ
    fr = feasibility_range(world, task.mu, k=config.prompt_length)
    return {**out, "head_residual": hr.residual, "head_realisable": hr.realisable, "head_margin": hr.margin,
            "support_size": len(sr.support), "support_full_rank": sr.full_row_rank, "support_sigma_min": sr.sigma_min,
            "support_margin": sr.margin, "prompt_feasible": pf.feasible, "prompt_margin": pf.margin,
            "prompt_exact": fr.exact, "prompt_delta_min": fr.delta_min, "prompt_delta_max": fr.delta_max}


# ---- the predictors ------------------------------------------------------------------------------

def evaluate(lm, world, kind: str, ctx: dict, seed: int, config: Config, *, source: str) -> list[dict]:
    """``[{"method", "train_accuracy", "test_accuracy"}]`` of every predictor on ``lm`` for one seed's task.

    ``source`` is "oracle" (the WorldLM: linear head, exact prompt; memory worlds: attention head, exact
    prompt with an attention head, linear head), "trained" (a masked TransformerLM: linear head and
    continuous prompt; memory worlds: attention head, continuous prompt with an attention head) or
    "analytic" (a PerturbedLM: the heads only — a perturbed law has no prompt mechanism)."""
    (x_tr, y_tr), (x_te, y_te) = ctx["train"], ctx["test"]
    out = []

    def add(method, train_acc, test_pred):
        """A predictor's row from its test predictions (each test law computed once: a fit is not given the
        test set, which it would score through the same laws)."""
        row = {"method": method, "train_accuracy": float(train_acc), "test_accuracy": float(np.mean(test_pred == y_te))}
        if "margins" in ctx:  # the accuracy on inputs whose label has a margin
            strat = margin_accuracy(test_pred, y_te, ctx["margins"])
            row.update(accuracy_with_margin=strat.accuracy_with_margin, n_with_margin=strat.n_with_margin)
        out.append(row)

    if kind == "memory":
        f_tr, f_te = attention_features(lm, x_tr), attention_features(lm, x_te)
        head = fit_attention_head(f_tr, y_tr, steps=config.attention_steps, seed=seed)
        add("attention_head", head.accuracy(f_tr, y_tr), head.predict(f_te))
        k = config.prompt_length
        if source == "oracle":
            p = fit_exact_attention_prompt(world, x_tr, y_tr, k=k, steps=config.attention_steps, seed=seed)
            add("attention_prompt", p.train_accuracy, p.predict(world, x_te))
        elif source == "trained":
            p = fit_transformer_attention_prompt(lm, x_tr, y_tr, k=k, steps=config.transformer_prompt_steps,
                                                 batch_size=config.memory_prompt_batch, seed=seed)
            add("attention_prompt", p.train_accuracy, p.predict(lm, x_te))
        if source != "oracle":
            return out
    f_tr, f_te = task_features(lm, x_tr, "prepended"), task_features(lm, x_te, "prepended")
    head = fit_linear_head(f_tr, y_tr, seed=seed)
    add("head", head.accuracy(f_tr, y_tr), head.predict(f_te))
    if kind == "hmm" and source != "analytic":
        k = config.prompt_length
        if source == "oracle":
            p = fit_exact_prompt(world, x_tr, y_tr, k=k, steps=config.exact_prompt_steps, seed=seed)
            pred = p.predict(world, x_te)
        else:
            p = fit_transformer_prompt(lm, x_tr, y_tr, k=k, steps=config.transformer_prompt_steps, seed=seed,
                                       batch_size=config.transformer_prompt_batch)
            pred = p.predict(lm, x_te)
        add("prompt", p.train_accuracy, pred)
    return out


def analytic_lm(world, kind: str, ctx: dict, target: float, seed: int, config: Config):
    """The world's exact LM perturbed (``config.analytic``, e.g. logit noise) to exact ε = ``target`` at
    the law the heads read, on this seed's training inputs: the prepended-mask law (HMM tasks) or the
    masked law at every position (memory tasks)."""
    law = "masked" if kind == "memory" else "prepended-mask"
    return perturbed_lm(world, target, config.analytic, seed, tokens=ctx["train"][0], law=law)


def readout_epsilon(lm, world, kind: str, x) -> float:
    """Exact KL at the laws the heads read, on inputs ``x (n, T')``: the prepended MASK (HMM tasks) or
    every masked position (memory tasks), nats."""
    if kind == "memory":
        return exact_masked_epsilon(world, lm, x)[0]
    return exact_prepended_epsilon(world, lm, x)[0]


def _train_configs(config: Config, kind: str) -> tuple[TransformerConfig, TrainConfig]:
    """The transformer and its training for the worlds of ``kind``."""
    # (MASK, x_1:T') for the prepended readout, after the prompt's k vectors: every position a head or a prompt
    # reads is one the model was trained at (a position past the training length keeps its initial embedding)
    seq_len = config.prompt_length + config.visible_length + (kind == "hmm")
    model = TransformerConfig(n_symbols=config.n_symbols, d_model=config.d_model, n_layers=config.n_layers,
                              n_heads=config.n_heads, max_len=seq_len, causal=False)
    tc = TrainConfig(objective="masked-lm", targets=config.targets, seeds=config.seeds,
                     batch_size=config.batch_size, seq_len=seq_len, max_steps=config.max_steps,
                     learning_rate=config.learning_rate, warmup_steps=min(100, config.max_steps // 10),
                     eval_every=config.eval_every, eval_seed=EVAL_SEED, eval_sequences=EVAL_SEQUENCES)
    return model, tc


def train_world(world, kind: str, config: Config, run_dir: Path):
    """Train the seeds of one world together (a vmapped ensemble) down the ε ladder; resumable."""
    return train(world, *_train_configs(config, kind), run_dir, progress=False)


# ---- the experiment as a sweep check --------------------------------------------------------------

#: the Config fields that define the worlds (the sweep's ``[[worlds]]``); every other field is an option
#: of the check ``wei/head-prompt-experiment``.
WORLD_FIELDS = ("n_symbols", "n_states", "n_syntactic", "n_slots", "n_cells", "temperature", "world_seed")
CHECK = "wei/head-prompt-experiment"
#: record keys that are also tidy columns, renamed in the rows (:func:`~simlm.experiments.registry.tidy_columns`).
RENAMED = {"lm": "lm_source"}


#: the version of the experiment's protocol, stored with its options so that a results directory of another
#: version is refused, not mixed with this one's cells: 2 since 2026-12-02, when the transformers began to
#: train on the prompted input's length (k + T' + 1) and every ε to be read on the trainer's held-out set.
PROTOCOL = 2


def check_options(config: Config) -> dict:
    """The check's options of ``config`` (plain JSON values; no analytic family is ``"none"``: TOML has no
    null) and the :data:`PROTOCOL` they are run under."""
    options = jsonable({k: v for k, v in dataclasses.asdict(config).items() if k not in WORLD_FIELDS})
    return {**options, "analytic": options["analytic"] or "none", "protocol": PROTOCOL}


def _fields(options: dict) -> dict:
    """Config fields from the check's options (the inverse of :func:`check_options`); options written for
    another :data:`PROTOCOL` are refused (none given: this one)."""
    options = dict(options)
    protocol = options.pop("protocol", PROTOCOL)
    if protocol != PROTOCOL:
        raise ConfigError(f"protocol: this simlm runs the experiment's protocol {PROTOCOL} (transformers trained at "
                          f"the prompted input's length), got {protocol!r}")
    return {**options, "analytic": None if options.get("analytic") == "none" else options.get("analytic")}


def sweep_config(experiment: str, config: Config = Config()) -> dict:
    """The sweep config (a dict, as TOML or JSON gives it) that IS ``experiment`` under ``config``: its
    worlds, the oracle as the one LM source (the check builds the experiment's own LMs — analytic at exact
    ε, the trained ladder — inside each world's cells), and :data:`CHECK` with the rest of ``config``.
    The shipped ``configs/head_prompt_<experiment>.toml`` is this dict for the default Config."""
    specs = [{"name": w["world"], "kind": w["sweep_kind"], "seed": config.world_seed, "options": w["options"]}
             for w in worlds(experiment, config)]
    return experiment_sweep(f"head_prompt-{experiment}", specs, CHECK, check_options(config))


def load_shipped(experiment: str) -> dict:
    """The shipped sweep config of ``experiment``, as a dict."""
    return tomllib.loads(shipped_config(experiment).read_text(encoding="utf-8"))


def shipped_config(experiment: str) -> Path:
    """The path of the shipped sweep config of ``experiment``."""
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"experiment: expected one of {EXPERIMENTS}, got {experiment!r}")
    return Path(__file__).parent / "configs" / f"head_prompt_{experiment}.toml"


def config_of(experiment: str, raw: dict) -> Config:
    """The :class:`Config` a sweep config of ``experiment`` (e.g. the shipped one) stands for."""
    opts = raw["checks"][CHECK]
    first = raw["worlds"][0]["options"]
    fields = {"n_symbols": first["n_symbols"], "temperature": first["transition_temp"],
              "world_seed": raw["worlds"][0]["seed"]}
    if experiment == "experiment1":
        fields["n_states"] = tuple(w["options"]["n_states"] for w in raw["worlds"])
    else:
        memories = [w["options"] for w in raw["worlds"] if w["kind"] == "memory-hmm"]
        fields["n_slots"] = tuple(dict.fromkeys(o["n_values"] for o in memories))  # worlds run N-major
        fields["n_cells"] = tuple(dict.fromkeys(o["n_cells"] for o in memories))
        fields["n_syntactic"] = memories[0]["n_syntactic"]
    return Config(**fields, **_fields(opts))


def _world_kind(world_spec) -> str:
    return "memory" if world_spec["kind"] == "memory-hmm" else "hmm"


def _check_config(world, options: dict) -> Config:
    return Config(**_fields(options), n_symbols=int(world.n_symbols))


def validate_options(options: dict) -> None:
    """Raise a ConfigError for bad options of the check (the Config they make is checked)."""
    Config(**_fields(options))


def applies(world_spec, lm_spec) -> str:
    if world_spec.get("kind") not in ("hmm", "memory-hmm"):
        return "needs an HMM or a memory HMM"
    return "" if lm_spec["source"] == "oracle" else "builds its own LMs: runs in the oracle's cell only"


def parts(world_spec, lm_spec, options) -> list:
    return [f"seed={s}" for s in options["seeds"]]


def _lm_name(level: str) -> str:
    return level if level in ("oracle", "final") else level.replace("eps=", "analytic@").replace("eps<=", "trained@")


def experiment_check(cell) -> list:
    """One seed (the cell's part) of the experiment on the cell's world: every level — the oracle, the
    analytic LM at each target ε, the trained transformer at each ladder rung it reached and at the end of
    training — with each predictor's test accuracy as a row (``lm`` the level, ``eps`` its exact masked ε
    on the held-out set, every record field as a column).  The seeds of a world are trained together
    once, in the check's ``workdir``; the other seeds' cells reuse the checkpoints."""
    config = _check_config(cell.world, cell.options)
    world, kind = cell.world, _world_kind(cell.world_spec)
    seed = int(cell.part.removeprefix("seed="))
    options = cell.world_spec["options"]
    n_slots = options.get("n_values")  # a vanilla world's M is the experiment's: :func:`run` fills it in
    # the chain's hidden states: M^N·N·Q for a memory world of N cells (M·Q, its vanilla twin's, for one)
    n_states = options["n_states"] if kind == "hmm" else world.n_joint_states
    base = {"world": cell.world_spec["name"], "kind": kind, "n_states": n_states, "n_slots": n_slots,
            "n_symbols": config.n_symbols, "visible_length": config.visible_length,
            "label_length": config.label_length, "seed": seed}
    ctx = task_context(world, kind, seed, config)
    rows = []

    def add(meta, records):
        level = meta["level"]
        for r in records:
            record = tidy_columns({**base, **meta, **r, **ctx["shared"]}, RENAMED)
            rows.append(row(f"{r['method']}:test_accuracy", r["test_accuracy"], lm=_lm_name(level), lm_seed=seed,
                            eps=meta["epsilon"], eps_se=meta["epsilon_se"], **record))

    add({"lm": "oracle", "level": "oracle", "target": None, "epsilon": 0.0, "epsilon_se": 0.0, "ladder_epsilon": None,
         "epsilon_readout": 0.0, "train_step": None},
        evaluate(WorldLM(world), world, kind, ctx, seed, config, source="oracle"))
    model_config, train_config = _train_configs(config, kind)
    heldout = world.sample(EVAL_SEED, EVAL_SEQUENCES, train_config.seq_len)  # the trainer's own
    for target in config.targets if config.analytic else ():
        lm = analytic_lm(world, kind, ctx, target, seed, config)
        eps, eps_se = exact_masked_epsilon(world, lm, heldout)
        add({"lm": "analytic", "level": f"eps={target:g}", "target": target, "epsilon": eps, "epsilon_se": eps_se,
             "ladder_epsilon": lm.achieved_eps, "epsilon_readout": readout_epsilon(lm, world, kind, ctx["test"][0]),
             "train_step": None}, evaluate(lm, world, kind, ctx, seed, config, source="analytic"))
    if not config.trained:
        return rows
    t0 = time.perf_counter()
    result = train(world, model_config, train_config, Path(cell.workdir) / "train", progress=cell.progress)
    ladder = json.dumps(jsonable([dataclasses.asdict(r) for r in result.records]))
    rows.append(row("train_steps", result.final_step, lm="trained-final", lm_seed=seed, ladder=ladder,
                    train_seconds=time.perf_counter() - t0, **base))
    scored = {}
    for target in (*config.targets, None):
        if target is None:
            lm, rec = result.final_lms[config.seeds.index(seed)], None
        else:
            rec = next(r for r in result.records if r.seed == seed and math.isclose(r.target, target))
            if not rec.reached:
                continue
            lm = result.lm(target, seed)
        step = result.final_step if rec is None else rec.step
        if step not in scored:  # the ladder stops at its last rung: then "final" is that model
            eps, eps_se = exact_masked_epsilon(world, lm, heldout)
            scored[step] = (evaluate(lm, world, kind, ctx, seed, config, source="trained"), eps, eps_se,
                            readout_epsilon(lm, world, kind, ctx["test"][0]))
        records, eps, eps_se, eps_readout = scored[step]
        add({"lm": "trained", "level": "final" if target is None else f"eps<={target:g}", "target": target,
             "epsilon": eps, "epsilon_se": eps_se, "ladder_epsilon": None if rec is None else rec.epsilon,
             "epsilon_readout": eps_readout, "train_step": step}, records)
    return rows


# ---- the experiment: the sweep of its shipped config, and its own table and figure ----------------

def records_of(rows: list) -> list[dict]:
    """The experiment's records (one per world, seed, level and method) from the sweep's tidy rows."""
    return [record_of(r, RENAMED) for r in rows
            if r.get("check") == CHECK and r["quantity"].endswith(":test_accuracy")]


def training_of(rows: list) -> dict:
    """Per world: the trainer's ladder, its final step and the training wall time."""
    out = {}
    for r in rows:
        if r.get("check") == CHECK and r["quantity"] == "train_steps":
            seen = out.get(r["world"], {"seconds": 0.0})
            out[r["world"]] = {"ladder": json.loads(r["ladder"]), "final_step": int(r["measured"]),
                               "seconds": max(seen["seconds"], r["train_seconds"])}
    return out


def run(experiment: str, config: Config = Config(), out="runs/head_prompt", *, log=print,
        progress: bool = False, executor=None) -> dict:
    """Run (or resume) ``experiment`` into ``out/<experiment>`` — the sweep of :func:`sweep_config` (cells
    ``cells.jsonl``, tidy ``results.csv``, ``sweep.json`` …; a different config is refused) — then write
    ``<experiment>.json`` (atomically) and ``<experiment>.png`` beside them and return the JSON's payload:
    ``{"experiment", "config", "records", "summary", "training", "new_cells", "skipped_cells",
    "cell_seconds", "errors", "machine", "files", "time_s"}``."""
    from simlm.experiments.sweep import cell_store, parse_config, run_sweep

    started = time.perf_counter()
    check_instance("config", config, Config, "a head_prompt.Config")
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"experiment: expected one of {EXPERIMENTS}, got {experiment!r}")
    sweep = parse_config(sweep_config(experiment, config))  # everything is checked before a directory is claimed
    out = results_dir(out) / experiment
    done = {}

    def finish(result):  # under the sweep's lock: a later run's files cannot be overwritten by these
        for e in result["errors"]:
            log(f"  ERROR {e['cell']}: {e['error']}")
        slots = {w["world"]: w["n_slots"] for w in worlds(experiment, config)}
        records = [{"experiment": experiment, **r, "n_slots": slots.get(r["world"], r["n_slots"])}
                   for r in records_of(result["rows"])]
        store = cell_store(out)
        payload = jsonable({"experiment": experiment, "config": dataclasses.asdict(config), "records": records,
                            "summary": summarise(records), "training": training_of(result["rows"]),
                            "new_cells": result["new_cells"], "skipped_cells": result["cells"] - result["new_cells"],
                            "cell_seconds": sum(e.get("seconds", 0.0) for e in store.cells.values()),
                            "errors": result["errors"],
                            "machine": {"cpu_count": os.cpu_count(), "backend": jax.default_backend()}})
        payload["files"] = [str(out / f"{experiment}.json"), str(out / "results.csv")]
        try:
            payload["files"].append(str(plot(payload, out / f"{experiment}.png")))
        except ImportError as e:  # matplotlib is the optional extra "plots"
            log(f"no plot: {e} (pip install -e '.[plots]')")
        payload["time_s"] = time.perf_counter() - started
        write_json_atomic(out / f"{experiment}.json", payload)
        done["payload"] = payload

    run_sweep(sweep, out, executor=executor, progress=progress, log=log, after=finish)
    return done["payload"]


def experiment1(out="runs/head_prompt", config: Config | None = None, *, quick: bool = False, log=print) -> list[dict]:
    """Experiment 1 (accuracy against |H|): the tidy records, one per (|H|, seed, method, level)."""
    return run("experiment1", _config(config, quick), out, log=log)["records"]


def experiment2(out="runs/head_prompt", config: Config | None = None, *, quick: bool = False, log=print) -> list[dict]:
    """Experiment 2 (memory vs vanilla HMMs): the tidy records, one per (world, seed, method, level)."""
    return run("experiment2", _config(config, quick), out, log=log)["records"]


def _config(config, quick):
    return config if config is not None else Config(**QUICK) if quick else Config()


# ---- command line --------------------------------------------------------------------------------

#: config fields set by a flag, as the flag (errors name the flag the user typed).
FLAGS = {name: "--" + name.replace("_", "-") for name in ("seeds", "n_states", "n_slots", "label_length", "visible_length",
                                                          "targets", "max_steps", "n_train", "n_test", "temperature",
                                                          "analytic", "out", "workers", "executor", "address")}


def command(argv=None) -> dict:
    """The command line: parse ``argv``, validate every option (before the results directory is claimed),
    run or resume the experiment and print its table; return the payload.  Bad input raises
    :class:`~simlm.errors.SimlmError` (:func:`main` prints it as one line)."""
    p = Parser(prog="python -m simlm.experiments.head_prompt", description=(__doc__ or "").partition("\n")[0])
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--quick", action="store_true", help="two worlds, one seed, a tiny model: well under 60 s")
    p.add_argument("--out", type=directory, default=None,
                   help="results directory; the experiment's sweep goes into OUT/<experiment> "
                   "(default runs/head_prompt[_quick])")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--n-states", nargs="+", type=int, help="experiment 1: the |H| values")
    p.add_argument("--n-slots", nargs="+", type=int, help="experiment 2: the memory slot counts M")
    p.add_argument("--label-length", type=int, help="T: labels from x_1:T")
    p.add_argument("--visible-length", type=int, help="T': the predictors see x_1:T'")
    p.add_argument("--full-input", action="store_true", help="T' = T (Bayes ceiling 1)")
    p.add_argument("--targets", nargs="+", type=float, help="the ε ladder (nats/token, masked)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--temperature", type=float, help="transition and emission temperature of the worlds "
                   "(0.01: near-deterministic, the Bayes ceiling ≈ 1 even for short T')")
    p.add_argument("--analytic", help=f"the analytic-LM family, one of {', '.join(ANALYTIC_KINDS)}, or 'none'")
    p.add_argument("--no-train", action="store_true", help="oracle (and analytic) LMs only, no transformers")
    # a job per world of a minute or more: a process per core
    add_run_options(p, workers="auto, 1 with --quick or --executor ray")
    args = p.parse_args(argv)
    for flag, only in (("n_states", "experiment1"), ("n_slots", "experiment2")):
        if getattr(args, flag) is not None and args.experiment != only:  # it would be ignored
            raise ConfigError(f"--{flag.replace('_', '-')}: used by {only} only, not {args.experiment}")
    options = dict(QUICK) if args.quick else {}
    for name in ("seeds", "n_states", "n_slots", "label_length", "visible_length", "targets", "max_steps",
                 "n_train", "n_test", "temperature"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.analytic is not None:
        options["analytic"] = None if args.analytic == "none" else args.analytic
    if args.no_train:
        options["trained"] = False
    config = config_of(args.experiment, load_shipped(args.experiment))
    if args.full_input:  # T' = the T this run uses: a flag's, else the shipped config's
        if args.visible_length is not None:  # one of the two would be dropped without a word
            raise ConfigError("--full-input: sets T' = T (label_length); give it or --visible-length, not both")
        options["visible_length"] = options.get("label_length", config.label_length)
    config = dataclasses.replace(config, **options)
    out = Path(args.out or ("runs/head_prompt_quick" if args.quick else "runs/head_prompt"))
    if args.workers is None:  # Ray sizes itself: no local pool to size
        args.workers = 1 if args.quick or args.executor == "ray" else "auto"
    check_run_options(args)
    results_dir(out)  # these two refused before the line below says where the run goes
    print(f"{args.experiment} → {out / args.experiment}  (the sweep of {shipped_config(args.experiment).name}"
          f"{' with --quick/flag overrides' if options else ''})")
    # run() lists the failed cells itself
    payload = run(args.experiment, config, out, progress=not args.quiet, executor=executor_of(args))
    print(table(payload["summary"]))
    for name, t in payload["training"].items():
        rungs = ", ".join(f"s{r['seed']}:{r['target']:g}→"
                          + (f"{r['epsilon']:.3g}@{r['step']}" if r["reached"] else "✗") for r in t["ladder"])
        print(f"  ladder {name} ({t['final_step']} steps, {t['seconds']:.0f} s): {rungs}")
    print(f"wrote {', '.join(payload['files'])}")
    print(f"{payload['new_cells']} new cells, {payload['skipped_cells']} skipped; time {payload['time_s']:.1f} s "
          f"(all cells so far: {payload['cell_seconds']:.1f} s)")
    return payload


def main(argv=None) -> int:
    """Exit status of the command line: 0, or 2 with one line on stderr naming the flag at fault."""
    return run_main("python -m simlm.experiments.head_prompt", command, argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
