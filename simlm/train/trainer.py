"""Train transformer LMs on a world down an ε ladder, measuring ε exactly against the optimal LM.

``train(world, model_config, config, run_dir)`` trains ``len(config.seeds)`` models at once (an
ensemble vmapped over parameters and data keys; one seed is an ensemble of one), evaluates the exact ε
on a fixed held-out set, and saves an Orbax checkpoint the first time each member's ε falls to or
below each target — within the window [0.7, 1] × target: an evaluation that finds ε fallen past a rung's
window replays the steps since the one before, evaluating more often (:func:`_replay_gap`), so a rung
is saved below its window only when ε fell past it in a single step.  Data are fresh draws from
``world.sample`` keyed by (seed, step) — or batches from a fixed corpus — so a run is a deterministic
function of its config and resuming from the last checkpoint reproduces an uninterrupted run,
metrics.jsonl included.  With several local devices the seeds are spread over them (see
:func:`seed_mesh`); :class:`Training` holds the compiled pieces.

Run directory (paths inside it are stored relative to it, so it can be moved or copied)::

    config.json                       the training config, model config, world fingerprint
    metrics.jsonl                     one line per evaluation and member
    last/                             stacked params + optimiser state + ladder state (resume point)
    previous/                         the resume point before last/, used if last/ is damaged
    seed_<s>/eps_<target>/            ladder checkpoints (Orbax + metadata.json), load with load_lm

Every checkpoint records the run's identity (world fingerprint + configs) and the checksum of its
arrays.  A rerun resumes from the newest resume point that agrees with the files beside it: a torn
line or damaged file is dropped and recomputed, a damaged ladder metadata.json is rewritten, and a
damaged resume point or ladder checkpoint is retrained from an earlier one (with a warning naming the
file) — never silently used.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from simlm.errors import ConfigError, ShapeError, TrainingDivergedError
from simlm.models.transformer import (
    TransformerConfig, TransformerLM, init_transformer, masked_token_logprobs, next_token_logprobs,
)
from simlm.train import objectives
from simlm.jsonio import STRICT, claim_json, differing, locked, read_back, read_json, write_json_atomic
from simlm.train.schedule import OVERSHOOT, REPLAY, TRAIL, next_evaluation
from simlm.train.checkpoint import load_lm, read_metadata, restore_tree, save_model, save_tree
from simlm.metrics.epsilon import check_laws, kl_per_sequence, tv_per_sequence
from simlm.checks import (SEED_LIMIT, as_tuple, check_distinct_labels, check_finite, check_float32_normal,
                          check_instance, check_memory, check_positive_int, checked_fields, mean_and_sem, nonempty_path,
                          seed_key)
from simlm.worlds.base import World


_SLOTS = ("last", "previous")  # the resume point and the one before it
_INT_MAX = 2**31 - 1  # step counters and sizes live in int32 on the device
_SEED_MAX = SEED_LIMIT - 1


@checked_fields
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Plain-value training configuration (JSON via ``to_dict``/``from_dict``), validated on creation:
    a bad field raises ``ConfigError`` naming it.  ``targets`` are stored sorted from largest to smallest
    (the order the ladder is climbed); ``seeds`` keep their order."""

    objective: str = "cross-entropy"  # "cross-entropy" | "masked-lm" | "quad"
    targets: tuple = (1.0, 0.3, 0.1, 0.03, 0.01)  # ε ladder, nats/token
    seeds: tuple = (0,)  # one model per seed, trained together (vmapped)
    batch_size: int = 32
    seq_len: int = 64
    max_steps: int = 2000  # the budget; also the length of the cosine schedule
    learning_rate: float = 3e-3
    warmup_steps: int = 100  # linear from 0; at most max_steps − 1 (a shorter run warms up for all but its last)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    data: str = "stream"  # "stream": fresh world samples; "corpus": a fixed finite corpus
    corpus_sequences: int = 1024
    corpus_seed: int = 1
    eval_sequences: int = 64
    eval_seed: int = 2**20  # the held-out set: world.sample(eval_seed, eval_sequences, seq_len)
    eval_every: int = 50  # the largest spacing; closer near a predicted crossing (simlm.train.schedule)
    eval_positions: int = 8  # masked ε: positions evaluated per sequence (masked_eval_positions)
    checkpoint_every: int = 500  # resume point ("last/"): the first evaluation at or after each multiple
    mask_rate: float = 0.15
    corruption: tuple = (0.8, 0.1, 0.1)

    def __post_init__(self):
        def fix(name, value):
            object.__setattr__(self, name, value)

        for name in ("objective", "data"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name}: expected a string, got {type(getattr(self, name)).__name__} "
                                  f"{getattr(self, name)!r}")
        if self.objective not in objectives.OBJECTIVES:
            raise ConfigError(f"objective: unknown objective {self.objective!r}; choose one of {sorted(objectives.OBJECTIVES)}")
        if self.data not in ("stream", "corpus"):
            raise ConfigError(f"data: expected 'stream' or 'corpus', got {self.data!r}")
        targets = [check_finite("targets", t, "positive finite ε targets") for t in as_tuple("targets", self.targets)]
        if not targets or min(targets) <= 0:
            raise ConfigError(f"targets: expected at least one positive finite ε target, got {self.targets!r}")
        check_distinct_labels("targets", targets)  # each target has a checkpoint directory eps_<t:g>
        for t in targets:  # the on-device ε is float32: a rung below its smallest normal is reached by rounding alone
            check_float32_normal("targets", t, "the trainer's ε is computed",
                                 zero=": only an ε rounded to 0 would reach it")
        fix("targets", tuple(sorted(targets, reverse=True)))
        seeds = tuple(check_positive_int("seeds", s, 0, _SEED_MAX) for s in as_tuple("seeds", self.seeds))
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds: expected distinct non-negative integers, got {self.seeds!r}")
        fix("seeds", seeds)
        for name in ("batch_size", "seq_len", "max_steps", "corpus_sequences", "eval_every", "eval_positions",
                     "checkpoint_every"):
            fix(name, check_positive_int(name, getattr(self, name), 1, _INT_MAX))
        fix("eval_sequences", check_positive_int("eval_sequences", self.eval_sequences, 2, _INT_MAX))  # a standard error needs 2
        fix("warmup_steps", check_positive_int("warmup_steps", self.warmup_steps, 0, _INT_MAX))
        for name in ("corpus_seed", "eval_seed"):
            fix(name, check_positive_int(name, getattr(self, name), 0, _SEED_MAX))
        fix("learning_rate", check_finite("learning_rate", self.learning_rate, "a positive finite number"))
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate: expected a positive finite number, got {self.learning_rate!r}")
        for name in ("weight_decay", "grad_clip"):
            fix(name, check_finite(name, getattr(self, name), "a finite number ≥ 0"))
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected a finite number ≥ 0, got {getattr(self, name)!r}")
        # the optimiser's state and steps are float32: 1e-50 becomes 0 (a clip of 0 zeroes every gradient)
        check_float32_normal("learning_rate", self.learning_rate, "the optimiser computes")
        check_float32_normal("grad_clip", self.grad_clip, "the optimiser computes",
                             " (grad_clip = 0 means no clipping)")
        rate, corruption = objectives.check_masking(self.mask_rate, self.corruption)
        fix("mask_rate", rate)
        if self.data == "corpus" and self.corpus_sequences < self.batch_size:
            raise ConfigError(f"corpus_sequences: {self.corpus_sequences} is smaller than batch_size {self.batch_size}")
        if self.data == "corpus" and self.corpus_seed == self.eval_seed:  # world.sample(seed, …) for both
            raise ConfigError(f"eval_seed: equals corpus_seed = {self.corpus_seed}, so the held-out set would be "
                              "the training corpus (or its first sequences) and ε measured on the training data; "
                              "give another eval_seed")
        fix("corruption", corruption)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a dict of TrainConfig fields, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"config: unknown TrainConfig field(s) {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclasses.dataclass(frozen=True)
class LadderRecord:
    """One rung of the ladder for one seed: reached or not, the exact ε there and where it is saved.  ``epsilon``
    is the objective's own ε on the held-out set: for ``masked-lm`` at :func:`masked_eval_positions` only
    (typically below the masked ε over every position when ``seq_len`` > ``eval_positions``: the two ends,
    always evaluated, are the cheapest positions), for ``quad`` the Quad excess (see :func:`train`)."""

    seed: int
    target: float
    reached: bool
    epsilon: float | None = None
    epsilon_se: float | None = None
    step: int | None = None
    tokens_seen: int | None = None
    wall_time: float | None = None
    path: str | None = None

    @property
    def overshoot(self) -> float | None:
        """ε reached ÷ target (≤ 1; the ladder aims for ≥ 0.7 and warns when a rung is saved below it)."""
        return None if self.epsilon is None else self.epsilon / self.target


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    records: list  # LadderRecord for every (seed, target); paths resolved under run_dir
    best_epsilon: dict  # seed → best ε seen
    final_step: int
    final_lms: list  # TransformerLM per seed, at the last step
    header: dict | None = dataclasses.field(default=None, repr=False)  # what every checkpoint of the run records

    def lm(self, target: float, seed: int | None = None) -> TransformerLM:
        """The checkpointed model of ``seed`` (default: the first) at ladder ``target``, checked to be
        this run's (world fingerprint and configs) and this rung's (seed, target and step: rung directories
        swapped on disk loaded another rung's model without a word, a review 2026-12-06)."""
        target = check_finite("target", target, "a positive ε target")
        seeds = list(dict.fromkeys(r.seed for r in self.records))
        seed = seeds[0] if seed is None else seed
        if isinstance(seed, (bool, np.bool_)) or seed not in seeds:
            raise ConfigError(f"seed: expected one of this run's seeds {seeds}, got {seed!r}")
        for r in self.records:  # matched as the rungs' directories name them (eps_<target:g>): float32 0.3 too
            if r.seed == seed and format(r.target, "g") == format(target, "g") and r.reached:
                return load_lm(r.path, expect={**(self.header or {}), "seed": r.seed, "target": r.target,
                                               "step": r.step})
        raise ConfigError(f"target: seed {seed} has no checkpoint at ε ≤ {target:g}; "
                          f"reached: {[r.target for r in self.records if r.seed == seed and r.reached]}")

    @property
    def not_reached(self) -> list:
        return [(r.seed, r.target) for r in self.records if not r.reached]


def _validate(world, model_config, config, run_dir, until_step, progress) -> None:
    """Every argument of :func:`train`, checked on the host before anything is compiled or any run
    directory is claimed, so a failing call leaves nothing behind."""
    if run_dir is not None:
        check_instance("run_dir", run_dir, (str, os.PathLike), "a directory path or None")
        nonempty_path(run_dir, "run_dir", "a directory path or None")  # '' is the working directory: it trained there
    if until_step is not None:
        check_positive_int("until_step", until_step, 1, _INT_MAX)
    if not isinstance(progress, bool):
        raise ConfigError(f"progress: expected True or False, got {progress!r}")
    _validate_training(world, model_config, config)


def _validate_training(world, model_config, config) -> None:
    """The world and the two configs, checked together: the part of :func:`_validate` that
    :class:`Training` checks too."""
    check_instance("world", world, World, "a simlm world (HMM, MemoryHMM, LogLinearWorld, …)")
    check_instance("model_config", model_config, TransformerConfig, "a TransformerConfig")
    check_instance("config", config, TrainConfig, "a TrainConfig (TrainConfig.from_dict(d) makes one from a dict)")
    if model_config.n_symbols != world.n_symbols:
        raise ShapeError(f"model_config: n_symbols = {model_config.n_symbols} but the world has {world.n_symbols} symbols")
    if config.seq_len > model_config.max_len:
        raise ConfigError(f"seq_len: {config.seq_len} is longer than the model's max_len = {model_config.max_len}")
    masked = config.objective == "masked-lm"
    if masked == model_config.causal:
        kind = "a bidirectional (causal=False)" if masked else "a causal"
        raise ConfigError(f"objective: {config.objective!r} needs {kind} model; model_config.causal = {model_config.causal}")
    # A lower bound on the floats one forward pass keeps per sequence (attention scores, MLP and
    # residual activations), so sizes that cannot fit are refused here rather than by the allocator.
    m, n, T = model_config, len(config.seeds), config.seq_len
    per_seq = T * m.n_layers * (m.n_heads * T + m.d_ff + 4 * m.d_model)
    check_memory("batch_size", n * config.batch_size * per_seq,
                 what=f"{n} model(s) × batch_size {config.batch_size} × seq_len {T}")
    passes = min(config.eval_positions, T) if masked else 1
    check_memory("eval_sequences", config.eval_sequences * passes * (n * per_seq + world.n_symbols),
                 what=f"evaluating {n} model(s) on {config.eval_sequences} sequences × {passes} pass(es)")
    if config.data == "corpus":
        check_memory("corpus_sequences", config.corpus_sequences * T, what=f"a corpus of seq_len {T}")


def masked_eval_positions(config: TrainConfig) -> np.ndarray:
    """The positions at which the trainer evaluates a masked LM's ε in every held-out sequence:
    ``min(eval_positions, seq_len)`` evenly spread over 0..seq_len − 1, int32 (e.g. 0, 3, 7 for 3 of 8)."""
    check_instance("config", config, TrainConfig, "a TrainConfig")
    return np.unique(np.linspace(0, config.seq_len - 1, min(config.eval_positions, config.seq_len)).astype(np.int32))


def _optimizer(config: TrainConfig):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(config.warmup_steps, config.max_steps - 1), config.max_steps,
        end_value=config.learning_rate * 0.1)
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # no decay on norms/biases
    return optax.chain(optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(),
                       optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask))


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def _member(tree, i):  # one compiled program for every member (indexing leaf by leaf compiled one per leaf shape)
    return jax.tree.map(lambda x: x[i], tree)


@jax.jit
def _copy_tree(tree):  # one dispatch for the whole tree, where a jnp.copy per leaf is one each
    return jax.tree.map(jnp.copy, tree)


class TrainState(NamedTuple):
    """The arrays a training step carries: the stacked parameters (an ``nnx.State`` whose every leaf has
    a leading seed axis of length ``len(config.seeds)``) and the optimiser state, stacked alike."""

    params: nnx.State
    opt_state: object


class Batch(NamedTuple):
    """One step's data: tokens ``(S, B, T)`` and the objectives' PRNG keys ``(S, 2)``, S = number of seeds."""

    tokens: jax.Array
    keys: jax.Array


def over_seeds(fn, n_seeds: int, in_axes=0):
    """``jax.vmap(fn, in_axes)`` over the seed axis.  One seed runs unbatched — its slice in, a new axis on
    every output — the same computation (to float rounding) without the size-1 batch axis that XLA:CPU keeps
    in every product of the step, at a cost (see :func:`~simlm.models.transformer.rows_product`)."""
    if n_seeds > 1:
        return jax.vmap(fn, in_axes=in_axes)

    def one(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        args = [a if axis is None else jax.tree.map(lambda v: v[0], a) for a, axis in zip(args, axes)]
        return jax.tree.map(lambda v: v[None], fn(*args))

    return one


def seed_mesh(n_seeds: int, devices=None) -> Mesh | None:
    """The 1-d mesh (axis ``"seeds"``) that a run of ``n_seeds`` seeds is spread over, or ``None``.

    The members of an ensemble never exchange anything, so splitting the seed axis across devices costs
    no communication: each device runs the same vmapped step on its own members.  The mesh takes the
    first ``d`` of ``devices`` (default: ``jax.local_devices()`` — the batches are made by this process)
    with ``d`` the largest divisor of ``n_seeds`` not above their number, so every device holds the same
    number of members (6 seeds on 4 devices use 3 of them); when that is 1 — one device, one seed, or
    e.g. 5 seeds on 4 devices — the answer is ``None`` and the run keeps the plain single-device path
    (nothing is replicated)."""
    n_seeds = check_positive_int("n_seeds", n_seeds)
    devices = list(jax.local_devices() if devices is None else devices)
    d = max(k for k in range(1, min(n_seeds, len(devices)) + 1) if n_seeds % k == 0) if devices else 1
    return None if d < 2 else Mesh(np.asarray(devices[:d]), ("seeds",))


#: on a CPU the held-out set is scored a few sequences at a time (``jax.lax.map``), about this many token
#: positions (masked copies × seq_len) per member and chunk: the forward's activations then stay in cache
#: (an experiment-1 evaluation, 64 sequences × 8 masked copies × 3 seeds: 3.5× faster than as one batch on
#: a shared 2-core CPU when chunking came in; 31 against 38 ms on an idle one on 2026-12-05, since
#: ``logits_at`` made the batch cheaper; ``benchmarks/eval_schedule.py`` times both, interleaved).  The values
#: are the same per-sequence divergences (to float rounding), so ε, its standard error and the ladder are unchanged.
EVAL_CHUNK_TOKENS = 1024


def eval_chunk_sequences(config: TrainConfig, backend: str | None = None) -> int:
    """Held-out sequences :class:`Training` scores per chunk: on a CPU about ``EVAL_CHUNK_TOKENS`` ÷
    (passes · seq_len) (passes = the masked positions for masked-lm, else 1) — of the chunks within a factor
    2 of that budget, the one that pads the held-out set least (a chunk that divides it pads nothing, and the
    padded copies are scored for nothing), then the one nearest the budget; the whole held-out set (one batch,
    as wide as the device allows) on an accelerator (``backend``: default ``jax.default_backend()``) or where
    the budget covers it.  Experiment 1's 64 sequences of 18 tokens: 8 (the budget is 7, which would score 70)."""
    n = config.eval_sequences
    if (backend or jax.default_backend()) != "cpu":
        return n
    passes = min(config.eval_positions, config.seq_len) if config.objective == "masked-lm" else 1
    budget = max(1, EVAL_CHUNK_TOKENS // (passes * config.seq_len))
    if budget >= n:
        return n
    return min(range(max(1, budget // 2), min(n, 2 * budget) + 1),
               key=lambda c: (-(-n // c) * c, abs(math.log(c / budget))))


#: rows of the world's reference laws whose |log Σ_v p_v| is at most this are scored as the world gives them
#: (float32 rounding of a normalised law is ≲ 3e-7, a world within the default tolerance of 1e-6 stays under
#: 1.3e-6): their ε is what it has always been, bit for bit.  Rows further off, up to ``LOGSUMEXP_TOL`` (a
#: world of the user's; an HMM stores rows off 1 renormalised), are renormalised, see :func:`_reference_laws`.
_RENORMALISE_ABOVE = 2e-6


def _reference_laws(name: str, logprobs, where=None) -> jax.Array:
    """The world's laws ``(..., V)`` (log-probabilities) the trainer's ε, TV and Quad excess are measured
    against: validated and renormalised by :func:`~simlm.metrics.epsilon.check_laws`, the function the host
    ε functions apply to them, so that the trainer's ε is :func:`~simlm.metrics.epsilon.exact_epsilon` /
    ``exact_masked_epsilon`` of the same parameters on the same held-out set (to float rounding).  A world
    whose laws' rows are off 1 by up to ``LOGSUMEXP_TOL`` (a world of the user's: an HMM stores rows off 1
    renormalised) would otherwise read every ε low by as much, and the ladder save rungs whose real ε is
    above their target.  Rows within :data:`_RENORMALISE_ABOVE` of
    normalised are kept as given (they differ from the renormalised ones by float rounding only, ≤ 2e-6
    nats in ε), so runs on such worlds are unchanged.  A row that is no law (NaN, +inf, off by more than
    ``LOGSUMEXP_TOL``) is a ``DistributionError`` naming ``name`` and ``where`` the row is."""
    raw = jnp.asarray(logprobs)
    laws = check_laws(name, raw, where=where)
    raw = raw.astype(laws.dtype)
    off = ~(np.abs(np.asarray(jax.nn.logsumexp(raw, axis=-1))) <= _RENORMALISE_ABOVE)
    return jnp.where(off[..., None], laws, raw) if off.any() else raw


class Training:
    """The compiled pieces of one training run — initial state, batches, the train step, the exact-ε
    evaluation — placed on the devices.  :func:`train` drives exactly these; the benchmarks time them.

    ::

        training = Training(world, model_config, config)
        state = training.init_state()
        for step in range(n):
            state, loss = training.step(state, training.batch(step))   # loss: (S,)
        results = training.evaluate(state.params)                      # [(ε, s.e., TV, s.e.)] per seed

    With several local devices the seed axis of the state, the batches and the evaluation is sharded
    over :func:`seed_mesh` (``NamedSharding(mesh, PartitionSpec("seeds"))``; the held-out set is
    replicated), so an ensemble trains on all of them.  The results are the single-device run's up to
    float rounding (~1e-6 relative; the same ladder): XLA picks kernels and reduction orders by the
    number of members a device computes at once, just as a member of a 4-seed ensemble already differs
    in the last bits from the same seed trained alone.  ``mesh`` is ``None`` on the single-device path.

    ``eval_chunk``: held-out sequences scored per chunk by :meth:`evaluate` (default
    :func:`eval_chunk_sequences`, by backend); any chunk gives the same ε up to float rounding — in float32;
    a bfloat16/float16 model's forward rounds by the batch's shape, causal or masked, chunked (vmapped, one
    sequence at a time) or not: its ε here and ``exact_*_epsilon`` of its checkpoint differ by up to ~5e-4
    relative (2.7e-4 to 4.7e-4 on 301 held-out sequences in chunks of 151, 1.1e-4 unchunked; reviews
    2026-12-06 and 2026-12-07; both ~1e-3 to 3e-3 off a float32 twin).

    ``step`` donates its ``state`` argument: use the state it returns, never the one passed in.  The
    arguments are checked as :func:`train` checks them (``ConfigError``/``ShapeError`` before anything
    is compiled)."""

    def __init__(self, world, model_config: TransformerConfig, config: TrainConfig, *, eval_chunk: int | None = None):
        _validate_training(world, model_config, config)
        self.eval_chunk = (eval_chunk_sequences(config) if eval_chunk is None
                           else check_positive_int("eval_chunk", eval_chunk, 1, _INT_MAX))
        self.world, self.model_config, self.config = world, model_config, config
        self.mesh = seed_mesh(len(config.seeds))
        self._seeds = None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec("seeds"))
        self._replicated = None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())
        graphdef, _, rest = nnx.split(init_transformer(model_config, config.seeds[0]), nnx.Param, ...)
        self.graphdef, self.rest, self.tx = graphdef, rest, _optimizer(config)
        tx, n_seeds = self.tx, len(config.seeds)
        objective = objectives.OBJECTIVES[config.objective]
        if config.objective == "masked-lm":
            objective = lambda m, x, k: objectives.masked_lm(m, x, k, mask_rate=config.mask_rate,
                                                              corruption=config.corruption)

        def step(state, batch):
            def loss_fn(params, tokens, key):
                return objective(nnx.merge(graphdef, params, rest), tokens, key)

            def member(params, opt_state, tokens, key):
                loss, grads = jax.value_and_grad(loss_fn)(params, tokens, key)
                updates, opt_state = tx.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, loss

            params, opt_state, loss = over_seeds(member, n_seeds)(state.params, state.opt_state, batch.tokens,
                                                                  batch.keys)
            return TrainState(params, opt_state), loss

        shard = {} if self.mesh is None else {"in_shardings": self._seeds, "out_shardings": self._seeds}
        self._step = jax.jit(step, donate_argnums=0, **shard)
        self._setup_eval()
        if config.data == "corpus":
            self.corpus = jnp.asarray(world.sample(config.corpus_seed, config.corpus_sequences, config.seq_len))
        self._batch = self._compile_batch()

    def _setup_eval(self):
        c, world, graphdef, rest = self.config, self.world, self.graphdef, self.rest
        tokens = np.asarray(world.sample(c.eval_seed, c.eval_sequences, c.seq_len))
        if c.objective == "masked-lm":
            pos = masked_eval_positions(c)
            ref = _reference_laws("world: masked_token_probs", jnp.log(world.masked_token_probs(tokens, pos)),
                                 lambda i: f"sequence {i[0]}, masked position {int(pos[i[1]])} (masked law)")
            laws = lambda m, x: masked_token_logprobs(m, x, jnp.asarray(pos))
        else:
            ref = _reference_laws("world: next_token_logprobs", world.next_token_logprobs(tokens),
                                 lambda i: f"sequence {i[0]}, position {i[1]} (next-token law)")
            laws = next_token_logprobs

        def divergences(params, tokens, ref):
            model = nnx.merge(graphdef, params, rest)
            logp = laws(model, tokens)
            if c.objective == "quad":
                return objectives.quad_excess(model, tokens, jnp.exp(ref)), tv_per_sequence(ref, logp)
            return kl_per_sequence(ref, logp), tv_per_sequence(ref, logp)

        chunk = self.eval_chunk

        def evaluate(params, tokens, ref):  # per-sequence values, `chunk` sequences at a time (eval_chunk_sequences)
            n = tokens.shape[0]
            if chunk >= n:
                return divergences(params, tokens, ref)
            # A last, shorter chunk would be a second compiled copy of the model (lax.map's remainder): instead
            # it is filled with copies of the first sequences, whose values are dropped.
            pad = -n % chunk
            tokens, ref = (jnp.concatenate([a, a[:pad]]) for a in (tokens, ref))
            one = lambda x, r: jax.tree.map(lambda v: v[0], divergences(params, x[None], r[None]))
            return jax.tree.map(lambda v: v[:n], jax.lax.map(lambda xr: one(*xr), (tokens, ref), batch_size=chunk))

        self.eval_tokens, self.eval_ref = jnp.asarray(tokens), jnp.asarray(ref)
        shard = {}
        if self.mesh is not None:  # each device scores its own members on the whole (replicated) held-out set
            self.eval_tokens, self.eval_ref = jax.device_put((self.eval_tokens, self.eval_ref), self._replicated)
            shard = {"in_shardings": (self._seeds, self._replicated, self._replicated), "out_shardings": self._seeds}
        self._evaluate = jax.jit(over_seeds(evaluate, len(c.seeds), in_axes=(0, None, None)), **shard)

    def init_state(self) -> TrainState:
        """Each seed's freshly initialised model (``init_transformer(model_config, seed)``) and optimiser
        state, stacked over the seeds and placed on the devices."""
        params = _stack([nnx.state(init_transformer(self.model_config, s), nnx.Param) for s in self.config.seeds])
        return self.place(TrainState(params, jax.vmap(self.tx.init)(params)))

    def place(self, tree):
        """``tree`` (a :class:`TrainState`, a :class:`Batch`, or any pytree whose leaves have the leading
        seed axis, e.g. one restored from a checkpoint) where :meth:`step` expects it: sharded over the
        seeds on the mesh; unchanged on the single-device path."""
        return tree if self.mesh is None else jax.device_put(tree, self._seeds)

    def batch(self, step: int) -> Batch:
        """Tokens ``(S, B, T)`` and objective keys ``(S, 2)`` for ``step``: a function of (seed, step) only.
        One compiled call per step where the world's sampler traces (every built-in world's does), else one
        call per seed; the tokens are the same either way."""
        if self._batch is None:
            return self.place(self._make_batch(step))
        return self.place(self._batch(np.uint32(step)))

    def _make_batch(self, step, *, vmapped: bool = False) -> Batch:
        """Each seed's batch on its own key.  ``vmapped``: the seeds' draws as one draw over a batch of keys
        (one sampling loop for all seeds, where a loop per seed runs S loops one after the other: 3× the
        time of one seed's at S = 8 on an H200); jax draws the same numbers from a key either way."""
        c = self.config
        pairs = [jax.random.split(jax.random.fold_in(seed_key(s, "seeds"), step)) for s in c.seeds]
        k_data, k_obj = jnp.stack([p[0] for p in pairs]), jnp.stack([p[1] for p in pairs])  # every seed its own stream
        if c.data == "stream":
            def draw(k):
                return self.world.sample(k, c.batch_size, c.seq_len)
        else:
            def draw(k):
                return self.corpus[jax.random.choice(k, c.corpus_sequences, (c.batch_size,), replace=False)]
        tokens = jax.vmap(draw)(k_data) if vmapped else jnp.stack([draw(k) for k in k_data])
        return Batch(tokens, k_obj)

    def _compile_batch(self):
        """:meth:`_make_batch` under ``jax.jit`` (one dispatch per step instead of ~5 per seed), its draws
        vmapped over the seeds where the world's ``sample`` allows it; None when ``sample`` needs concrete
        keys (a user's world may validate or branch on the host)."""
        for vmapped in (True, False):
            batch = jax.jit(functools.partial(self._make_batch, vmapped=vmapped))
            try:
                jax.eval_shape(batch, jax.ShapeDtypeStruct((), jnp.uint32))
            except (TypeError, ValueError, NotImplementedError):  # ConcretizationTypeError … are TypeErrors
                continue
            return batch
        return None

    def step(self, state: TrainState, batch: Batch) -> tuple[TrainState, jax.Array]:
        """One optimiser step of every member: ``(new state, loss (S,))``; ``state`` is donated."""
        return self._step(state, batch)

    def evaluate(self, params) -> list:
        """``[(ε, s.e., TV, s.e.)]`` per seed: the exact ε and total variation on the held-out set
        (``eval_sequences`` sequences of ``world.sample(eval_seed, …)``), mean and standard error over sequences."""
        kl, tv = self._evaluate(params, self.eval_tokens, self.eval_ref)
        kl, tv = np.asarray(kl, np.float64), np.asarray(tv, np.float64)
        return [(*mean_and_sem(kl[i]), *mean_and_sem(tv[i])) for i in range(len(kl))]

    def copy(self, tree):
        """A copy of ``tree`` (e.g. a :class:`TrainState` to keep while :meth:`step` donates the original),
        placed as :meth:`place` places it."""
        return self.place(_copy_tree(tree))

    def member_params(self, params, i: int):
        """Member ``i``'s parameters (no seed axis).  On the mesh they are copied to the default device,
        as on the single-device path, so the model mixes freely with arrays made elsewhere."""
        if self.mesh is None:
            return _member(params, i)
        return jax.tree.map(lambda x: jnp.asarray(np.asarray(x[i])), params)

    def lm(self, params, i: int) -> TransformerLM:
        """Member ``i`` as a :class:`TransformerLM`."""
        return TransformerLM(nnx.merge(self.graphdef, self.member_params(params, i), self.rest),
                             trained_length=self.config.seq_len)


def train(world, model_config: TransformerConfig, config: TrainConfig = TrainConfig(), run_dir=None, *,
          progress: bool = True, until_step: int | None = None) -> TrainResult:
    """Train ``len(config.seeds)`` models on ``world`` down the ε ladder ``config.targets``.

    ε is the exact mean KL(p* ‖ p_θ) per token on the held-out set (masked-lm: at the
    ``config.eval_positions`` positions :func:`masked_eval_positions` of every sequence, evenly spread, not at
    all T, against the single-mask law p*(x_t | x_−t) — ``exact_masked_epsilon(world, lm, heldout,
    masked_eval_positions(config))`` gives a rung's ε again, while all T positions give another number; quad:
    the exact Quad excess ½‖Φᵀ(f − f*)‖²), with the world's laws renormalised as
    :func:`~simlm.metrics.epsilon.exact_epsilon` renormalises them (:func:`_reference_laws`), so a rung's
    recorded ε is the exact ε of its checkpoint on that set (to ~1e-7 in float32 on a CPU; on a GPU ~5e-4 relative, by
    a CPU emulation of its default TF32 products: :mod:`simlm.models.transformer`, "Precision"; in bfloat16/float16
    only to the compute dtype's rounding, which moves with the batch's shape: up to ~5e-4 relative, so a rung whose ε
    lands that close to its target is decided by rounding — ``exact_epsilon`` of its checkpoint may read just above
    the target).  The KL terms are summed in float32 on the device: below ε ~1e-6 that is no longer exact (6e-3
    relative at 3e-7, 28 % at 3e-8), so a rung target there is decided on rounding (the host's ``exact_*_epsilon`` sum
    in float64).  The learning rate warms up linearly from 0 over ``warmup_steps`` (so with warmup_steps > 0 the first
    step moves nothing) and then decays along a cosine to 0.1 × ``learning_rate`` at ``max_steps``.
    Under BERT corruption (the default ``corruption=(0.8, 0.1, 0.1)``) the masked objective's optimum is
    P(x_t | y, s_t = 1), which allows for randomised visible tokens, so its ε is not 0: ~7.5e-4 nats on a
    16-state permutation-mixture HMM, ~1.8e-3 on a Dirichlet(0.1) HMM — a floor to keep well under the
    smallest target; plain masking, ``corruption=(1, 0, 0)``, has none.  Stops when every seed has reached the
    smallest target or at ``config.max_steps``; ``until_step`` stops earlier, resumably (the next call
    with the same ``run_dir`` continues and gives the same result, and the same metrics.jsonl, as one
    uninterrupted run).  Invalid arguments raise ``ConfigError`` before anything is compiled or any
    directory is claimed.  A non-finite ε or loss raises :class:`~simlm.errors.TrainingDivergedError`, whose
    ``reached`` lists the rungs checkpointed before it (each loads with ``load_lm(record.path)``; a rerun
    resumes from the last resume point and diverges again).  Damaged files in ``run_dir`` are repaired or
    retrained (with a warning) from the newest checkpoint consistent with them; see :func:`_resume`.  One
    process at a time trains in a ``run_dir`` (an ``flock`` on ``run_dir/.train.lock``): a second call on the
    same directory, from another process or thread, waits until the first returns, then resumes from what it
    saved (a finished run is read back without a step).  With several local devices the seeds train sharded over them
    (:func:`seed_mesh`), to the same results up to float rounding.
    Besides the live training state (parameters and optimiser state) the trainer holds one copy, taken at
    the last evaluation kept, from which a rung crossed past its window is replayed."""
    _validate(world, model_config, config, run_dir, until_step, progress)
    header = read_back({"train_config": config.to_dict(), "model_config": model_config.to_dict(),
                     "world": type(world).__name__, "world_fingerprint": world.fingerprint()})
    run_dir = _open_run_dir(run_dir)
    # one process at a time claims and trains in a run directory: another (a sweep's next job on the same
    # world) waits, then resumes from what this one saved — if it has finished, it only reads its results back
    with locked(run_dir, ".train.lock", what="the training run",
                advice="do not train into it from several processes at once"):
        _claim_run_dir(run_dir, header)
        return _train(world, model_config, config, run_dir, header, progress=progress, until_step=until_step)


def _train(world, model_config, config, run_dir: Path, header: dict, *, progress: bool, until_step) -> TrainResult:
    """:func:`train` in its claimed and locked ``run_dir``."""
    run = Training(world, model_config, config)
    arrays = run.init_state()  # the TrainState; ``state`` below is the ladder's bookkeeping
    metrics = run_dir / "metrics.jsonl"
    resumed = _resume(run, arrays, run_dir, header)
    if resumed is None:
        slot, state, lines, redo = None, _fresh_state(len(config.seeds)), [], False
    else:
        slot, state, tree, lines, redo = resumed
        nnx.replace_by_pure_dict(arrays.params, tree["params"])
        arrays = run.place(TrainState(arrays.params, tree["opt_state"]))
    _write_lines(metrics, lines)  # rows after the resume point are recomputed
    loss = state["loss"]  # the last step's loss, logged with the next evaluation as in an uninterrupted run
    last_good, saved = slot == "last", state["step"] if slot is not None else None  # saved: the resume point's step

    def save(point):
        nonlocal last_good, saved
        _fsync(metrics)  # the checkpoint vouches for state["rows"] rows: they must be on disk first
        s = {**point.state, "loss": _loss_floats(point.loss), "wall": time.perf_counter() - started}
        _save_resume_point(run_dir, {"params": nnx.to_pure_dict(point.arrays.params),
                                     "opt_state": point.arrays.opt_state},
                           {**header, "ladder_state": s}, keep_last=last_good)
        last_good, saved = True, point.step

    stop = min(config.max_steps, until_step or config.max_steps)
    tokens_per_step = len(config.seeds) * config.batch_size * config.seq_len
    bar = tqdm(total=config.max_steps, initial=state["step"], disable=not progress, desc="train", unit="step",
               leave=None)  # nested under a sweep's bar it clears itself when done; alone it stays
    started = time.perf_counter() - state["wall"]
    done = lambda: all(i >= len(config.targets) for i in state["ladder"])

    def evaluate(step):  # exact ε of the current arrays; a non-finite ε or loss stops the run
        results = run.evaluate(arrays.params)
        _check_finite(results, loss, step, config, run_dir)
        return results

    try:
        if redo:  # the resume point's own evaluation rows were damaged: recompute them from its arrays
            state["trail"] = [t for t in state["trail"] if t[0] != state["step"]]  # logged again just below
            _log_and_climb(run, state, run_dir, header, arrays.params, evaluate(state["step"]), loss,
                           state["step"], tokens_per_step, time.perf_counter() - started)
        # The anchor: the arrays, last loss and ladder state at the last evaluation kept (or the resume point).
        # A rung crossed past its window is replayed from it; a resume point is always an anchor.
        anchor = _Anchor(state["step"], run.copy(arrays), loss, read_back(state))
        while not done():
            step = state["step"]
            if (step >= state["next_eval"] or step >= config.max_steps) and state.get("last_eval") != step:
                results = evaluate(step)
                gap = _replay_gap(state, config, results, anchor.step, step)
                if gap:  # a rung crossed past its window since the anchor: replay from there, more finely
                    arrays, loss = run.copy(anchor.arrays), anchor.loss
                    state.update(step=anchor.step, next_eval=anchor.step + gap, replay=[step, gap])
                    bar.n = anchor.step
                    bar.refresh()
                    continue
                _log_and_climb(run, state, run_dir, header, arrays.params, results, loss, step, tokens_per_step,
                               time.perf_counter() - started)
                if not done():
                    state["next_eval"] = _next_eval(state, config, step)
                anchor = None  # freed first: one copy of the state beside the live one, not two
                anchor = _Anchor(step, run.copy(arrays), loss, read_back(state))
                if saved is None or step // config.checkpoint_every > saved // config.checkpoint_every or done():
                    save(anchor)
            if done() or step >= stop:
                break
            arrays, loss = run.step(arrays, run.batch(step))
            state["step"] = step + 1
            if state["step"] % 10 == 0 or state["step"] >= stop:
                loss_host = _finite_loss(loss, state["step"], config, run_dir, saved)
                bar.set_postfix(loss=f"{loss_host.mean():.4f}", eps=f"{min(state['best']):.4g}",
                                tok_s=f"{tokens_per_step * (state['step']) / max(time.perf_counter() - started, 1e-9):.3g}")
            bar.update(1)
        if saved != anchor.step or not last_good:
            save(anchor)  # interrupted (until_step) or finished: the resume point is the last evaluation kept
        if state["step"] != anchor.step:
            # stopped by until_step after steps no evaluation has read (the losses checked are each computed before
            # its update): the models returned are evaluated, not logged — the run's metrics stay an uninterrupted
            # run's — and diverged ones refused, as that run's next evaluation would refuse them
            try:
                _check_finite(run.evaluate(arrays.params), None, state["step"], config, run_dir)
            except TrainingDivergedError as err:
                raise TrainingDivergedError(f"{err} (step {anchor.step}; until_step stopped the run at step "
                                            f"{state['step']}, before its next evaluation)") from None
    except TrainingDivergedError as err:  # the rungs saved before it are models at their ε all the same
        err.reached = tuple(_reached(state, run_dir))
        raise
    finally:
        bar.close()
    return _result(run, arrays.params, state, run_dir, header)


class _Anchor(NamedTuple):
    """The run at an evaluation kept (or a resume point): a replay starts here, a resume point is one."""

    step: int
    arrays: TrainState  # a copy: the train step donates the arrays it is given
    loss: object  # the last step's loss (S,) or None, logged with the next evaluation
    state: dict  # the ladder state, as saved in a resume point


def _loss_floats(loss) -> list[float] | None:
    """The last step's loss of each member as floats for JSON (None before the first step)."""
    return None if loss is None else [float(v) for v in np.asarray(loss)]


def _check_finite(results, loss, step, config, run_dir) -> None:
    losses = _loss_floats(loss) or []
    if not np.all(np.isfinite([r for res in results for r in res] + losses)):
        raise TrainingDivergedError(f"ε or the loss became non-finite at step {step} (ε, s.e., TV, s.e. = {results}, "
                                    f"loss = {losses}; learning_rate={config.learning_rate}, "
                                    f"weight_decay={config.weight_decay}); the last good "
                                    f"checkpoint is {run_dir / 'last'}")


def _finite_loss(loss, step, config, run_dir, saved):
    loss_host = np.asarray(loss)
    if not np.all(np.isfinite(loss_host)):
        raise TrainingDivergedError(
            f"loss became {loss_host} at step {step} (learning_rate={config.learning_rate}, "
            f"weight_decay={config.weight_decay}); "
            f"the last good checkpoint is {run_dir / 'last'} (step {saved})")
    return loss_host


def _replay_gap(state, config, results, anchor: int, step: int) -> int:
    """The spacing of the evaluations with which to replay the steps since the anchor, or 0 to keep this
    evaluation.  A replay is due when some member's next rung would be saved below its window
    (ε < :data:`OVERSHOOT` · target: ε fell past it between two evaluations) and the anchor is more than
    one step back; the replay evaluates :data:`REPLAY` times as often, so repeated replays narrow the
    crossing down to the step.  Training is deterministic, so the replayed steps are the same steps."""
    if step - anchor < 2:
        return 0
    for i, (eps, *_) in enumerate(results):
        j = state["ladder"][i]
        if j < len(config.targets) and eps < OVERSHOOT * config.targets[j]:
            return -(-(step - anchor) // REPLAY)
    return 0


def _next_eval(state, config, step: int) -> int:
    """The next evaluation step (:func:`next_evaluation`); while a replay runs, at most its spacing ahead
    (``state["replay"]`` is dropped once the replay has passed the step it came from)."""
    nexts = [config.targets[i] if i < len(config.targets) else None for i in state["ladder"]]
    at = next_evaluation(step, state["trail"], nexts, config.eval_every)
    until, gap = state.get("replay") or (0, 0)
    if step < until:
        return min(at, step + gap)
    state.pop("replay", None)
    return at


def _log_and_climb(run, state, run_dir, header, params, results, loss, step, tokens_per_step, wall):
    """Log an evaluation's exact ε for every member to metrics.jsonl; checkpoint each target crossed for
    the first time."""
    config = run.config
    losses = _loss_floats(loss) or [None] * len(results)
    state["last_eps"], state["last_eval"] = [r[0] for r in results], step
    state["trail"] = (state.get("trail", []) + [[step, state["last_eps"]]])[-TRAIL:]  # for next_evaluation
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as log:
        for i, (seed, (eps, eps_se, tv, tv_se)) in enumerate(zip(config.seeds, results)):
            state["best"][i] = min(state["best"][i], eps)
            log.write(json.dumps({"step": step, "seed": seed, "epsilon": eps, "epsilon_se": eps_se, "tv": tv,
                                  "tv_se": tv_se, "loss": losses[i],
                                  "tokens_seen": step * config.batch_size * config.seq_len,
                                  "wall_time": wall, "tokens_per_s": step * tokens_per_step / max(wall, 1e-9)},
                                 allow_nan=False) + "\n")
            while state["ladder"][i] < len(config.targets) and eps <= config.targets[state["ladder"][i]]:
                target = config.targets[state["ladder"][i]]
                path = f"seed_{seed}/eps_{target:g}"  # relative to the run directory, which may move
                record = dataclasses.asdict(LadderRecord(seed, target, True, eps, eps_se, step,
                                                         step * config.batch_size * config.seq_len, wall, path))
                saved = save_model(run_dir / path, run.member_params(params, i),
                                   {**header, **record, "overshoot": eps / target})
                state["records"].append({**record, "checksum": saved["checksum"]})
                state["ladder"][i] += 1
                if eps < OVERSHOOT * target:
                    _warn_overshoot(record, "is saved")
    state["rows"] += len(results)


def _warn_overshoot(record: dict, saved: str) -> None:
    """The warning for a rung ``record`` saved below the ladder's window (ε < OVERSHOOT · target)."""
    seed, target, eps, step = record["seed"], record["target"], record["epsilon"], record["step"]
    why = ("the initial model is already there: drop the rung or lower it" if step == 0 else
           "ε fell past the window within one step, where no evaluation can come closer: lower the learning "
           "rate to catch the crossing")
    warnings.warn(f"seed {seed}: the rung ε ≤ {target:g} {saved} at ε = {eps:.4g} (step {step}), below the ladder's "
                  f"window [{OVERSHOOT:g}, 1] × target, so its checkpoint is a model at that ε; {why}",
                  RuntimeWarning, stacklevel=4)


# ---- the run directory: claim, resume point, repair -------------------------------------------------
#
#   config.json    the run's identity (configs + world fingerprint); every checkpoint repeats it
#   last/          the resume point: arrays + ladder state, incl. how many metrics rows it vouches for
#   previous/      the resume point before it, used when last/ is damaged
#   seed_*/eps_*/  ladder checkpoints, checked against their checksum (kept in the ladder state) on resume


class _Foreign(ConfigError):
    """A checkpoint of a different run: never used and never overwritten."""


def _refuse_foreign(directory: Path, meta: dict, header: dict) -> None:
    """:class:`_Foreign` if the checkpoint metadata ``meta`` in ``directory`` records another run than ``header``."""
    differ = differing({key: meta.get(key) for key in header}, header)
    if differ:
        raise _Foreign(f"run_dir: {directory} holds a checkpoint of a different run (differs in {differ}); "
                       f"use a new run_dir, or move {directory} away if it was copied there by mistake")


_RECORD_KEYS = {f.name for f in dataclasses.fields(LadderRecord)} | {"checksum"}


def _fresh_state(n: int) -> dict:
    return {"step": 0, "next_eval": 0, "ladder": [0] * n, "best": [math.inf] * n, "records": [], "wall": 0.0,
            "rows": 0, "loss": None, "trail": []}


def _open_run_dir(run_dir) -> Path:
    """The run directory, created if needed and checked writable."""
    path = Path(tempfile.mkdtemp(prefix="simlm-run-") if run_dir is None else run_dir).absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run_dir: {path} is a file, not a directory; pass a new directory or one of this same run")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"run_dir: cannot write to {path} ({err.strerror or err}); pass a writable directory") from None
    return path


def _claim_run_dir(path: Path, header: dict) -> None:
    """Claim the run directory for this run (config.json).  An unreadable config.json is rewritten when a
    checkpoint in the directory shows it holds this same run; otherwise the ConfigError says how to recover."""
    cfg = path / "config.json"
    if cfg.exists():
        try:
            problem = None if isinstance(read_json(cfg, what="run_dir"), dict) else f"run_dir: {cfg} does not hold a JSON object"
        except ConfigError as err:
            problem = str(err)
        if problem and any(_holds(path / slot, header) for slot in _SLOTS):
            warnings.warn(f"{problem}; rewritten from the run's checkpoint, which holds this same run", RuntimeWarning,
                          stacklevel=3)
            write_json_atomic(cfg, header)
        elif problem:
            raise ConfigError(f"{problem}; no checkpoint in {path} shows which run it held. If it holds a run of this "
                              f"same configuration, recover with `rm {cfg}` and rerun (its checkpoints are checked "
                              f"against the configuration); otherwise use a new run_dir")
    else:  # a checkpoint of another run refuses this one before config.json is written — a resume point or a
        # rung: a directory left with another run's rungs alone would be claimed, its metrics overwritten, and
        # every rung this run never reaches left under this run's config.json
        for checkpoint in [path / slot for slot in _SLOTS] + sorted(path.glob("seed_*/eps_*")):
            try:
                meta = read_metadata(checkpoint)
            except ConfigError:  # absent or unreadable: the resume reports it
                continue
            _refuse_foreign(checkpoint, meta, header)
    claim_json(cfg, header, owner=f"run_dir: {path} holds a different run",
               fix="use a new directory to start a new run")  # a resume must be the same run


def _holds(directory: Path, header: dict) -> bool:
    """Whether the checkpoint in ``directory`` has readable metadata recording ``header``."""
    try:
        meta = read_metadata(directory)
    except ConfigError:
        return False
    return all(meta.get(k) == v for k, v in header.items())


def _resume(run, arrays, run_dir: Path, header: dict):
    """``(slot, state, arrays, metrics lines, redo)`` from the newest resume point (last/, then
    previous/) that loads and agrees with the files beside it — every ladder checkpoint it records
    loads to its checksum (a damaged metadata.json there is rewritten), and metrics.jsonl holds the rows
    it vouches for — or ``None`` to train from the start.  Each rejected resume point is reported with
    a warning naming the file and the problem; training is deterministic, so retraining from an
    earlier point reproduces the same results.  A checkpoint of a different run raises ConfigError.
    ``arrays`` (the fresh :class:`TrainState`) gives the structure, shapes and devices to restore to."""
    like = {"params": nnx.to_pure_dict(arrays.params), "opt_state": arrays.opt_state}
    for k, slot in enumerate(_SLOTS):
        directory = run_dir / slot
        if not directory.exists():
            continue
        try:
            meta = read_metadata(directory)
            _refuse_foreign(directory, meta, header)
            state = _ladder_state(meta, run.config, directory)
            tree = restore_tree(directory, like, meta)
            _check_rungs(run, arrays, run_dir, header, state)
            lines, redo = _kept_metrics(run_dir / "metrics.jsonl", state, run.config.seeds)
            for r in state["records"]:  # the warning went to the call that saved it, perhaps a process since lost
                if r["epsilon"] < OVERSHOOT * r["target"]:
                    _warn_overshoot(r, "was saved by an earlier run")
            return slot, state, tree, lines, redo
        except _Foreign:
            raise
        except ConfigError as err:
            then = "the previous resume point" if k + 1 < len(_SLOTS) else "the start"
            warnings.warn(f"{err}\nresuming from {then} instead (training is deterministic: the results are "
                          "reproduced)", RuntimeWarning, stacklevel=3)
    return None


def _ladder_state(meta: dict, config: TrainConfig, directory: Path) -> dict:
    """The ladder state saved in a resume point, checked for shape (a ConfigError if it is damaged)."""
    s, n = meta.get("ladder_state"), len(config.seeds)
    nums = lambda v: isinstance(v, list) and len(v) == n and all(x is None or isinstance(x, (int, float)) for x in v)
    good = (isinstance(s, dict) and all(isinstance(s.get(k), int) for k in ("step", "next_eval", "rows"))
            and isinstance(s.get("ladder"), list) and len(s["ladder"]) == n
            and all(isinstance(i, int) for i in s["ladder"]) and nums(s.get("best"))
            and isinstance(s.get("wall"), (int, float)) and (s.get("loss") is None or nums(s["loss"]))
            and isinstance(s.get("records"), list)
            and isinstance(s.get("trail", []), list)
            and (s.get("replay") is None or (isinstance(s["replay"], list) and len(s["replay"]) == 2
                                             and all(isinstance(v, int) and v > 0 for v in s["replay"])))
            and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], int) and nums(e[1]) for e in s.get("trail", []))
            and all(isinstance(r, dict) and set(r) == _RECORD_KEYS and isinstance(r["path"], str)
                    and not Path(r["path"]).is_absolute() for r in s["records"]))
    if not good:
        raise ConfigError(f"checkpoint: {directory / 'metadata.json'} holds no valid ladder state")
    return {"trail": [], **s, "best": [math.inf if b is None else b for b in s["best"]]}


def _check_rungs(run, arrays, run_dir: Path, header: dict, state: dict) -> None:
    """Every ladder checkpoint in ``state`` must load to the arrays it saved (ConfigError otherwise); a
    damaged or foreign metadata.json beside intact arrays is rewritten from the ladder state."""
    like = {"params": nnx.to_pure_dict(run.member_params(arrays.params, 0))}
    for r in state["records"]:
        directory = run_dir / r["path"]
        want = {**header, **r, "overshoot": r["epsilon"] / r["target"]}
        restore_tree(directory, like, want)
        if not _same_metadata(directory, want):
            warnings.warn(f"checkpoint: {directory / 'metadata.json'} was damaged; rewritten from the run's ladder "
                          "state (its arrays match their checksum)", RuntimeWarning, stacklevel=4)
            write_json_atomic(directory / "metadata.json", want)


def _same_metadata(directory: Path, want: dict) -> bool:
    try:
        return read_metadata(directory) == want
    except ConfigError:
        return False


def _kept_metrics(path: Path, state: dict, seeds: tuple) -> tuple[list, bool]:
    """The lines of metrics.jsonl that the resume point vouches for (its first ``state["rows"]``;
    later ones are recomputed) and whether the last evaluation must be redone: damaged rows of the
    resume point's own evaluation (every resume point is an evaluation kept) are recomputed from its
    checkpoint; damage earlier is a ConfigError."""
    rows, n = state["rows"], len(seeds)
    lines = path.read_bytes().split(b"\n")[:-1] if path.exists() else []  # what follows the last newline is torn
    kept = []
    for j, raw in enumerate(lines[:rows]):
        row = _metrics_row(raw)
        if row is None or row.get("seed") != seeds[j % n] or not isinstance(row.get("step"), int):
            break
        kept.append(raw.decode("utf-8"))
    if len(kept) == rows:
        return kept, False
    if state.get("last_eval") == state["step"] and len(kept) >= rows - n:
        state["rows"] = rows - n
        return kept[:rows - n], True
    what = "missing" if len(kept) == len(lines) else "torn or not a metrics row"
    raise ConfigError(f"metrics: line {len(kept) + 1} of {path} is {what}, and the resume point needs it")


def _metrics_row(raw: bytes):
    """A metrics row as written (strict JSON: a line edited to ``"epsilon": NaN`` is not a row), else None."""
    try:
        row = STRICT.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # ValueError: JSONDecodeError, NaN, Infinity, overflow
        return None
    return row if isinstance(row, dict) else None


def _write_lines(path: Path, lines: list) -> None:
    """Replace ``path`` by ``lines`` (atomically; untouched when it already holds exactly them)."""
    text = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.exists() and path.read_bytes() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    if path.exists():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _save_resume_point(run_dir: Path, tree, metadata: dict, *, keep_last: bool) -> None:
    """Write last/ through last.tmp/ and keep the former last/ as previous/ (unless it was found
    damaged), so a crash or a damaged file at any moment leaves a complete resume point."""
    tmp, last, previous = run_dir / "last.tmp", run_dir / "last", run_dir / "previous"
    save_tree(tmp, tree, metadata)
    if last.exists():
        if keep_last:
            if previous.exists():
                shutil.rmtree(previous)
            last.rename(previous)
        else:
            shutil.rmtree(last)
    tmp.rename(last)


def _reached(state, run_dir: Path) -> list[LadderRecord]:
    """The rungs checkpointed so far, their paths under ``run_dir``."""
    fields = [f.name for f in dataclasses.fields(LadderRecord)]
    return [LadderRecord(**{**{k: r[k] for k in fields}, "path": str(run_dir / r["path"])}) for r in state["records"]]


def _result(run, params, state, run_dir, header) -> TrainResult:
    config, records = run.config, _reached(state, run_dir)
    reached = {(r.seed, r.target) for r in records}
    records += [LadderRecord(s, t, False) for s in config.seeds for t in config.targets if (s, t) not in reached]
    records.sort(key=lambda r: (config.seeds.index(r.seed), -r.target))
    return TrainResult(run_dir, records, dict(zip(config.seeds, state["best"])), state["step"],
                       [run.lm(params, i) for i in range(len(config.seeds))], header)
