"""Train transformer LMs on a world down an ε ladder, measuring ε exactly against the optimal LM.

``train(world, model_config, config, run_dir)`` trains ``len(config.seeds)`` models at once (an
ensemble vmapped over parameters and data keys; one seed is an ensemble of one), evaluates the exact ε
on a fixed held-out set, and saves an Orbax checkpoint the first time each member's ε falls to or
below each target.  Data are fresh draws from ``world.sample`` keyed by (seed, step) — or batches from
a fixed corpus — so a run is a deterministic function of its config and resuming from the last
checkpoint reproduces an uninterrupted run.

Run directory::

    config.json                       the training config, model config, world fingerprint
    metrics.jsonl                     one line per evaluation and member
    last/                             stacked params + optimiser state + ladder state (resume point)
    seed_<s>/eps_<target>/            ladder checkpoints (Orbax + metadata.json), load with load_lm
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from simlm.errors import ConfigError, ShapeError, TrainingDivergedError
from simlm.models.transformer import (
    TransformerConfig, TransformerLM, init_transformer, masked_token_logprobs, next_token_logprobs,
)
from simlm.train import objectives
from simlm.jsonio import claim_json
from simlm.train.checkpoint import load_lm, read_metadata, restore_tree, save_model, save_tree
from simlm.metrics.epsilon import kl_per_sequence, tv_per_sequence
from simlm.checks import check_positive, check_positive_int, mean_and_sem


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Plain-value training configuration (JSON via ``to_dict``/``from_dict``), validated on creation."""

    objective: str = "cross-entropy"  # "cross-entropy" | "masked-lm" | "quad"
    targets: tuple = (1.0, 0.3, 0.1, 0.03, 0.01)  # ε ladder, nats/token
    seeds: tuple = (0,)  # one model per seed, trained together (vmapped)
    batch_size: int = 32
    seq_len: int = 64
    max_steps: int = 2000  # the budget; also the length of the cosine schedule
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    data: str = "stream"  # "stream": fresh world samples; "corpus": a fixed finite corpus
    corpus_sequences: int = 1024
    corpus_seed: int = 1
    eval_sequences: int = 64
    eval_seed: int = 2**20  # the held-out set: world.sample(eval_seed, eval_sequences, seq_len)
    eval_every: int = 50  # densified automatically near a target
    eval_positions: int = 8  # masked ε: positions evaluated per sequence
    checkpoint_every: int = 500  # resume point ("last/")
    mask_rate: float = 0.15
    corruption: tuple = (0.8, 0.1, 0.1)

    def __post_init__(self):
        def fix(name, value):
            object.__setattr__(self, name, value)

        if self.objective not in objectives.OBJECTIVES:
            raise ConfigError(f"objective: unknown objective {self.objective!r}; choose one of {sorted(objectives.OBJECTIVES)}")
        targets = tuple(check_positive("targets", t) for t in np.atleast_1d(np.asarray(self.targets, dtype=object)))
        if not targets:
            raise ConfigError("targets: expected at least one positive ε target")
        fix("targets", tuple(sorted(targets, reverse=True)))
        seeds = tuple(check_positive_int("seeds", s, minimum=0) for s in np.atleast_1d(np.asarray(self.seeds, dtype=object)))
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds: expected distinct non-negative integers, got {self.seeds!r}")
        fix("seeds", seeds)
        for name in ("batch_size", "seq_len", "max_steps", "corpus_sequences", "eval_every", "eval_positions",
                     "checkpoint_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("eval_sequences", self.eval_sequences, minimum=2)
        for name in ("warmup_steps", "corpus_seed", "eval_seed"):
            check_positive_int(name, getattr(self, name), minimum=0)
        check_positive("learning_rate", self.learning_rate)
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name}: expected a finite number ≥ 0, got {getattr(self, name)!r}")
        if self.data not in ("stream", "corpus"):
            raise ConfigError(f"data: expected 'stream' or 'corpus', got {self.data!r}")
        if self.data == "corpus" and self.corpus_sequences < self.batch_size:
            raise ConfigError(f"corpus_sequences: {self.corpus_sequences} is smaller than batch_size {self.batch_size}")
        if not 0 < self.mask_rate <= 1:
            raise ConfigError(f"mask_rate: expected a rate in (0, 1], got {self.mask_rate!r}")
        c = np.asarray(self.corruption, dtype=float)
        if c.shape != (3,) or np.any(c < 0) or abs(c.sum() - 1) > 1e-6:
            raise ConfigError(f"corruption: expected three probabilities (mask, random, keep) summing to 1, got {self.corruption!r}")
        fix("corruption", tuple(float(v) for v in c))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"config: unknown TrainConfig field(s) {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclasses.dataclass(frozen=True)
class LadderRecord:
    """One rung of the ladder for one seed: reached or not, the exact ε there and where it is saved."""

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
        """ε reached ÷ target (≤ 1; the ladder aims for ≥ 0.7)."""
        return None if self.epsilon is None else self.epsilon / self.target


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    records: list  # LadderRecord for every (seed, target)
    best_epsilon: dict  # seed → best ε seen
    final_step: int
    final_lms: list  # TransformerLM per seed, at the last step

    def lm(self, target: float, seed: int | None = None) -> TransformerLM:
        """The checkpointed model of ``seed`` (default: the first) at ladder ``target``."""
        seed = self.records[0].seed if seed is None else seed
        for r in self.records:
            if r.seed == seed and math.isclose(r.target, target) and r.reached:
                return load_lm(r.path)
        raise ConfigError(f"target: seed {seed} has no checkpoint at ε ≤ {target:g}; "
                          f"reached: {[r.target for r in self.records if r.seed == seed and r.reached]}")

    @property
    def not_reached(self) -> list:
        return [(r.seed, r.target) for r in self.records if not r.reached]


def _validate(world, model_config: TransformerConfig, config: TrainConfig) -> None:
    if not isinstance(model_config, TransformerConfig):
        raise ConfigError(f"model_config: expected a TransformerConfig, got {type(model_config).__name__}")
    if model_config.n_symbols != world.n_symbols:
        raise ShapeError(f"model_config: n_symbols = {model_config.n_symbols} but the world has {world.n_symbols} symbols")
    if config.seq_len > model_config.max_len:
        raise ConfigError(f"seq_len: {config.seq_len} is longer than the model's max_len = {model_config.max_len}")
    masked = config.objective == "masked-lm"
    if masked == model_config.causal:
        kind = "a bidirectional (causal=False)" if masked else "a causal"
        raise ConfigError(f"objective: {config.objective!r} needs {kind} model; model_config.causal = {model_config.causal}")


def _optimizer(config: TrainConfig):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(config.warmup_steps, config.max_steps - 1), config.max_steps,
        end_value=config.learning_rate * 0.1)
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # no decay on norms/biases
    return optax.chain(optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(),
                       optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask))


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


class _Run:
    """The compiled pieces of one training run (kept out of ``train`` to keep it readable)."""

    def __init__(self, world, model_config, config):
        self.world, self.model_config, self.config = world, model_config, config
        models = [init_transformer(model_config, s) for s in config.seeds]
        splits = [nnx.split(m, nnx.Param, ...) for m in models]
        self.graphdef, self.rest = splits[0][0], splits[0][2]
        self.params = _stack([p for _, p, _ in splits])
        self.tx = _optimizer(config)
        self.opt_state = jax.vmap(self.tx.init)(self.params)
        graphdef, rest, tx = self.graphdef, self.rest, self.tx
        objective = objectives.OBJECTIVES[config.objective]
        if config.objective == "masked-lm":
            objective = lambda m, x, k: objectives.masked_lm(m, x, k, mask_rate=config.mask_rate,
                                                              corruption=config.corruption)

        def step(params, opt_state, tokens, key):
            loss, grads = jax.value_and_grad(lambda p: objective(nnx.merge(graphdef, p, rest), tokens, key))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.step = jax.jit(jax.vmap(step), donate_argnums=(0, 1))
        self._setup_eval()
        if config.data == "corpus":
            self.corpus = jnp.asarray(world.sample(config.corpus_seed, config.corpus_sequences, config.seq_len))

    def _setup_eval(self):
        c, world, graphdef, rest = self.config, self.world, self.graphdef, self.rest
        tokens = np.asarray(world.sample(c.eval_seed, c.eval_sequences, c.seq_len))
        if c.objective == "masked-lm":
            pos = np.unique(np.linspace(0, c.seq_len - 1, min(c.eval_positions, c.seq_len)).astype(np.int32))
            ref = jnp.log(world.masked_token_probs(tokens, pos))
            laws = lambda m, x: masked_token_logprobs(m, x, jnp.asarray(pos))
        else:
            ref = world.next_token_logprobs(tokens)
            laws = next_token_logprobs

        def evaluate(params, tokens, ref):
            model = nnx.merge(graphdef, params, rest)
            logp = laws(model, tokens)
            if c.objective == "quad":
                return objectives.quad_excess(model, tokens, jnp.exp(ref)), tv_per_sequence(ref, logp)
            return kl_per_sequence(ref, logp), tv_per_sequence(ref, logp)

        self.eval_tokens, self.eval_ref = jnp.asarray(tokens), ref
        self._evaluate = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))

    def evaluate(self):
        kl, tv = self._evaluate(self.params, self.eval_tokens, self.eval_ref)
        kl, tv = np.asarray(kl, np.float64), np.asarray(tv, np.float64)
        return [(*mean_and_sem(kl[i]), *mean_and_sem(tv[i])) for i in range(len(kl))]

    def batch(self, step: int):
        """Tokens ``(S, B, T)`` and objective keys ``(S,)`` for ``step``: a function of (seed, step) only."""
        c, toks, keys = self.config, [], []
        for s in c.seeds:
            k_data, k_obj = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(s), step))
            if c.data == "stream":
                toks.append(self.world.sample(k_data, c.batch_size, c.seq_len))
            else:
                toks.append(self.corpus[jax.random.choice(k_data, c.corpus_sequences, (c.batch_size,), replace=False)])
            keys.append(k_obj)
        return jnp.stack(toks), jnp.stack(keys)

    def member_params(self, i):
        return _member(self.params, i)

    def lm(self, i) -> TransformerLM:
        model = nnx.merge(self.graphdef, self.member_params(i), self.rest)
        return TransformerLM(model)


def _next_eval(step: int, eps: list, next_targets: list, every: int) -> int:
    """Evaluate every ``every`` steps far from a target, and densely near one, so a target is caught
    soon after it is crossed (ε reached ≥ 0.7 × target on a smooth descent)."""
    ratio = min((e / t for e, t in zip(eps, next_targets) if t is not None), default=math.inf)
    gap = every if ratio > 4 else max(1, every // 5) if ratio > 1.5 else max(1, every // 25)
    return step + gap


def train(world, model_config: TransformerConfig, config: TrainConfig = TrainConfig(), run_dir=None, *,
          progress: bool = True, until_step: int | None = None) -> TrainResult:
    """Train ``len(config.seeds)`` models on ``world`` down the ε ladder ``config.targets``.

    ε is the exact mean KL(p* ‖ p_θ) per token on the held-out set (masked-lm: at the masked
    positions; quad: the exact Quad excess ½‖Φᵀ(f − f*)‖²).  Stops when every seed has reached the
    smallest target or at ``config.max_steps``; ``until_step`` stops earlier, resumably (the next call
    with the same ``run_dir`` continues and gives the same result as one uninterrupted run).
    Invalid configs raise ``ConfigError`` before anything is compiled."""
    _validate(world, model_config, config)
    if until_step is not None:
        check_positive_int("until_step", until_step)
    run_dir = Path(tempfile.mkdtemp(prefix="simlm-run-") if run_dir is None else run_dir).absolute()
    header = {"train_config": config.to_dict(), "model_config": model_config.to_dict(),
              "world": type(world).__name__, "world_fingerprint": world.fingerprint()}
    claim_json(run_dir / "config.json", header, owner=f"run_dir: {run_dir} holds a different run",
               fix="use a new directory to start a new run")  # a resume must be the same run

    run = _Run(world, model_config, config)
    n = len(config.seeds)
    state = {"step": 0, "next_eval": 0, "ladder": [0] * n, "best": [math.inf] * n, "records": [], "wall": 0.0}
    if (run_dir / "last" / "metadata.json").exists():
        state = read_metadata(run_dir / "last")["ladder_state"]
        restored = restore_tree(run_dir / "last", {"params": nnx.to_pure_dict(run.params), "opt_state": run.opt_state})
        nnx.replace_by_pure_dict(run.params, restored["params"])
        run.opt_state = restored["opt_state"]
    _truncate_metrics(run_dir / "metrics.jsonl", state["step"])

    def save_last():
        save_tree(run_dir / "last", {"params": nnx.to_pure_dict(run.params), "opt_state": run.opt_state},
                  {**header, "ladder_state": state})

    if not (run_dir / "last" / "metadata.json").exists():
        save_last()  # a good checkpoint exists before the first step, whatever happens next
    stop = min(config.max_steps, until_step or config.max_steps)
    tokens_per_step = n * config.batch_size * config.seq_len
    bar = tqdm(total=config.max_steps, initial=state["step"], disable=not progress, desc="train", unit="step")
    started, last_saved, loss = time.perf_counter() - state["wall"], state["step"], None
    try:
        while state["step"] < stop and not all(i >= len(config.targets) for i in state["ladder"]):
            step = state["step"]
            if step >= state["next_eval"]:
                _evaluate_and_climb(run, state, run_dir, header, step, tokens_per_step, started, loss)
                if all(i >= len(config.targets) for i in state["ladder"]):
                    break
                nexts = [config.targets[i] if i < len(config.targets) else None for i in state["ladder"]]
                state["next_eval"] = _next_eval(step, state["last_eps"], nexts, config.eval_every)
            tokens, keys = run.batch(step)
            run.params, run.opt_state, loss = run.step(run.params, run.opt_state, tokens, keys)
            state["step"] = step + 1
            if state["step"] % 10 == 0 or state["step"] >= stop:
                loss_host = np.asarray(loss)
                if not np.all(np.isfinite(loss_host)):
                    raise TrainingDivergedError(
                        f"loss became {loss_host} at step {step + 1} (learning_rate={config.learning_rate}); "
                        f"the last good checkpoint is {run_dir / 'last'} (step {last_saved})")
                bar.set_postfix(loss=f"{loss_host.mean():.4f}", eps=f"{min(state['best']):.4g}",
                                tok_s=f"{tokens_per_step * (state['step']) / max(time.perf_counter() - started, 1e-9):.3g}")
            bar.update(1)
            if state["step"] % config.checkpoint_every == 0:
                state["wall"] = time.perf_counter() - started
                save_last()
                last_saved = state["step"]
        if state["step"] >= config.max_steps and state.get("last_eval") != state["step"]:
            _evaluate_and_climb(run, state, run_dir, header, state["step"], tokens_per_step, started, loss)
        state["wall"] = time.perf_counter() - started
        save_last()
    finally:
        bar.close()
    return _result(run, state, run_dir)


def _evaluate_and_climb(run, state, run_dir, header, step, tokens_per_step, started, loss):
    """Exact ε for every member; checkpoint each target crossed for the first time."""
    config, wall = run.config, time.perf_counter() - started
    results = run.evaluate()
    state["last_eps"], state["last_eval"] = [r[0] for r in results], step
    with open(run_dir / "metrics.jsonl", "a") as log:
        for i, (seed, (eps, eps_se, tv, tv_se)) in enumerate(zip(config.seeds, results)):
            state["best"][i] = min(state["best"][i], eps)
            log.write(json.dumps({"step": step, "seed": seed, "epsilon": eps, "epsilon_se": eps_se, "tv": tv,
                                  "tv_se": tv_se, "loss": None if loss is None else float(np.asarray(loss)[i]),
                                  "tokens_seen": step * config.batch_size * config.seq_len,
                                  "wall_time": wall, "tokens_per_s": step * tokens_per_step / max(wall, 1e-9)}) + "\n")
            while state["ladder"][i] < len(config.targets) and eps <= config.targets[state["ladder"][i]]:
                target = config.targets[state["ladder"][i]]
                path = run_dir / f"seed_{seed}" / f"eps_{target:g}"
                record = dataclasses.asdict(LadderRecord(seed, target, True, eps, eps_se, step,
                                                         step * config.batch_size * config.seq_len, wall, str(path)))
                save_model(path, run.member_params(i), {**header, **record, "overshoot": eps / target})
                state["records"].append(record)
                state["ladder"][i] += 1


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the resume point, so a resumed log equals an uninterrupted one."""
    if path.exists():
        lines = [l for l in path.read_text().splitlines() if l and json.loads(l)["step"] < step]
        path.write_text("".join(l + "\n" for l in lines))


def _result(run, state, run_dir) -> TrainResult:
    config = run.config
    reached = {(r["seed"], r["target"]) for r in state["records"]}
    records = [LadderRecord(**r) for r in state["records"]]
    records += [LadderRecord(s, t, False) for s in config.seeds for t in config.targets if (s, t) not in reached]
    records.sort(key=lambda r: (config.seeds.index(r.seed), -r.target))
    return TrainResult(run_dir, records, dict(zip(config.seeds, state["best"])), state["step"],
                       [run.lm(i) for i in range(len(config.seeds))])
