"""Wei, Xie & Ma's experiment-1 protocol with TRAINED masked transformers and their 20-vector continuous
prompt, beside the exact-feature oracle on the same sequences (``python -m simlm.experiments.head_prompt_protocol
--trained``).

What the authors' code does (``sangmichaelxie/pretraining_analysis``; facts read from ``src/run_finetune.py``,
``src/run_finetune_seed.sh``, ``scripts/run_exps_seed.sh``; their modified BERT lives in a ``transformers``
submodule that is not public, so what it does inside is inferred from the calling code and the paper):

- inputs ``[MASK] x_1 …`` (``--prepend_cls`` with the CLS token set to MASK), truncated to
  ``--max_seq_length 80`` tokens: the head reads [MASK] x_1:79; prompt tuning prepends
  ``[SEP]×prefix_len`` (``--prefix_len 20``), whose embeddings are the trained continuous vectors, so the
  prompted input is [p_1 … p_20][MASK] x_1:59 — the prompt sees 20 fewer tokens;
- ``shallow_probe`` ("linear probing on the CLS token", README): a linear classifier on the [MASK]
  position's vocabulary distribution (``probe_logits`` defaults to False: probabilities; the evaluation
  compares these "pooled outputs" with the true posterior's token law in total variation); ``prompt_tune``:
  the 20 vectors and that probe trained together, the network frozen; both with Adam at lr 0.01, warmup
  500 steps, batch 128, 100 epochs, no weight decay (the HF Trainer defaults; its ``dataloader_drop_last``
  is False, so an epoch of 5000 sequences is ⌈5000/128⌉ = 40 batches, the last of 8, and 100 epochs are
  4000 steps).  Whether the probe standardises its input is not visible; the HF classifier reads it raw.

What is measured here, on one world's SAME training/test sequences (the authors' labels, μ on ≤ 6 draws,
128-token label sequences; :func:`simlm.experiments.head_prompt_protocol.task_data`).  One deviation from
the authors' data: the label sequences x_1:128 follow a dropped x_0 (H_1 ~ πA, ``sampling="prepended"``,
:data:`PROTOCOL`), so that [MASK] x_1:79 is distributed as a trained sequence of 80 tokens with its first
masked; the authors sample x from the chain's start (H_1 ~ π).  With exact features the whole authors'
protocol moves by at most 0.012 between the two (docs/head_prompt.md).

- ``oracle-head``: simlm's head form (standardised features, full-batch ridge logistic regression,
  :func:`~simlm.downstream.fit_linear_head`) on the exact law P(x_0 | x_1:79);
- ``oracle-probe``: the authors' head form (:func:`fit_probe`: raw probabilities, minibatch Adam, lr 0.01,
  warmup, no penalty) on the same exact law — the head-form factor with exact features.  One deviation:
  :func:`fit_probe` drops each epoch's last partial batch (8 of 5000 sequences an epoch at the authors'
  scale, 116 of 500 at :data:`DEFAULT`'s) where the authors' Trainer keeps it, and runs ``probe_steps`` =
  3900 steps (100 epochs of ⌊5000/128⌋ = 39 full batches), not their 4000; and the models are pretrained
  with :class:`Config`'s ``mask_rate`` = 0.15 (BERT's), where the authors' runner passes
  ``--mlm_probability 0.05`` (``MLM_PROB``, ``scripts/exp1_local_runner.sh``);
- ``oracle-head-59``: simlm's head on P(x_0 | x_1:59) — what the truncation alone costs;
- ``oracle-prompt-k``: the exact prompt (k likelihood vectors over hidden states, :func:`fit_exact_prompt`)
  + simlm's head form on x_1:(79 − k) (only with ``oracle_prompt``; the prompt form with exact features);
- ``head`` / ``probe`` / ``head-59``: the same three on the trained model's law at the prepended MASK;
- ``hidden-head``: simlm's head on the trained model's final hidden state at MASK (the "CLS
  representation" reading of the head);
- ``prompt-20``: the authors' 20-vector continuous prompt on [p×20][MASK] x_1:59, trained jointly with
  simlm's head form, not the authors' probe (:func:`fit_transformer_prompt` with k = 20: the law at MASK
  standardised, a penalty (l2/2)‖W‖² with l2 = 1e-4, W initialised N(0, 0.1²), full-batch Adam at lr 0.01).
  The authors train the prompt together with their raw-probability probe; that pairing is not measured
  here.  So ``prompt-20`` shares its head form with ``head``, not with ``probe``: a gap between
  ``prompt-20`` and ``probe`` mixes the prompt with the head form, which alone moves accuracy on exact
  features (``oracle-head`` − ``oracle-probe``) by up to 0.138 in a world of the stored seven-size curve
  (0.074 at |H| = 12) and up to 0.180 over the 20-world |H| = 12 run (docs/head_prompt.md);
- ``prompt-1``: simlm's k = 1 prompt on [p][MASK] x_1:78 (the prompt-form factor).

Every transformer is trained with simlm's ε-ladder trainer (masked LM objective on stream samples of
80 tokens, so that (MASK, x_1:79) has the trained length); each record carries the exact masked ε of the
final model on held-out sequences (``epsilon``) and the exact KL at the law the form reads
(``epsilon_readout``, :func:`~simlm.train.exact_prepended_epsilon` on the form's own test tokens: x_1:59 for
``head-59``; for a prompt, the unprompted law on the tokens it precedes).  Derived: nothing here is a bound;
the accuracies are measurements.  Defaults reduce the authors' scale (stated in :data:`DEFAULT`)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simlm.checks import as_key, check_float32_normal, check_memory, check_positive, check_positive_int, check_tokens
from simlm.downstream import fit_exact_prompt, fit_linear_head, fit_transformer_prompt
from simlm.downstream.prompt_fit import check_prompt_fit
from simlm.downstream.heads import LinearLogits, check_features, check_labels, head_loss
from simlm.errors import ConfigError, TokenError
from simlm.experiments.head_prompt_protocol import AUTHORS, Protocol, format_sd, scored, task_data, task_seed, world
from simlm.experiments.store import CellStore, claim
from simlm.jsonio import write_json_atomic
from simlm.models import TransformerConfig
from simlm.runtime import release_compiled
from simlm.train import TrainConfig, exact_masked_epsilon, exact_prepended_epsilon, train

EVAL_SEED = 2**20  # the trainer's held-out set; ε of the final model is measured on it too


#: the authors' protocol with the label sequences after a dropped x_0 (the module docstring says why).
PROTOCOL = dataclasses.replace(AUTHORS, sampling="prepended")


@dataclasses.dataclass(frozen=True)
class TrainedStudy:
    """The trained-feature study.  ``protocol``: data/task/world (the authors' by default, reduced in
    worlds and sequences); ``prompt_length`` k of the continuous prompt (the authors' 20); transformer
    ``d_model``/``n_layers``/``n_heads``, trained down ``targets`` for at most ``max_steps``; the probe's
    ``probe_steps``/``probe_batch``/``probe_lr`` (3900 = 100 epochs of ⌊5000/128⌋ = 39 full batches of
    128, lr 0.01; the authors' Trainer keeps each epoch's last partial batch, ⌈5000/128⌉ × 100 = 4000 steps,
    and :func:`fit_probe` drops it, a deviation; the epochs follow from ``n_train``, :attr:`probe_epochs`;
    at least 2 steps, since the first is taken at learning rate 0); ``prompt_steps``
    full-batch steps for every prompt; ``oracle_prompt``: also the exact k-vector prompt; worlds are seeds
    ``first_world`` … ``first_world + worlds_per_size − 1``; ``read_at``: ladder targets at which the trained
    forms are also read from the rung's checkpoint instead of the final model (pretraining ε as a factor,
    :func:`read_world`)."""
    protocol: Protocol = PROTOCOL
    sizes: tuple = (4, 8, 12, 25)
    prompt_length: int = 20
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    batch_size: int = 32
    max_steps: int = 1500
    learning_rate: float = 1e-2
    targets: tuple = (0.3, 0.1, 0.03)
    mask_rate: float = 0.15
    prompt_steps: int = 200
    probe_steps: int = 3900
    probe_batch: int = 128
    probe_lr: float = 0.01
    oracle_prompt: bool = True
    eval_sequences: int = 32
    first_world: int = 1
    read_at: tuple = ()

    def __post_init__(self):
        if not isinstance(self.protocol, Protocol):
            raise ConfigError(f"protocol: expected a Protocol, got {type(self.protocol).__name__}")
        if self.protocol.tasks_per_world != 1:
            raise ConfigError(f"protocol: the trained study reads one task per world (the authors'), got "
                              f"tasks_per_world = {self.protocol.tasks_per_world}")
        for f in ("prompt_length", "d_model", "n_layers", "n_heads", "batch_size", "max_steps", "prompt_steps",
                  "probe_steps", "probe_batch", "eval_sequences", "first_world"):
            check_positive_int(f, getattr(self, f))
        for f in ("learning_rate", "probe_lr", "mask_rate"):
            check_positive(f, getattr(self, f))
        check_float32_normal("probe_lr", self.probe_lr, "the probe computes")  # 1e-50 is 0 there: no step moves it
        # the probe's first step is at learning rate 0 (its warmup starts there): one step would return its start
        check_positive_int("probe_steps", self.probe_steps, minimum=2)
        b = min(self.probe_batch, self.protocol.n_train)  # fit_probe's minibatch indices, before anything runs
        check_memory("probe_steps", self.probe_epochs * (self.protocol.n_train // b) * b, itemsize=8,
                     what="the probe's minibatch indices")
        if self.protocol.n_train < 2:
            raise ConfigError(f"n_train: every head needs training sequences of both classes, so at least 2; got "
                              f"{self.protocol.n_train}")
        if self.prompt_length >= self.protocol.visible_length:
            raise ConfigError(f"prompt_length: the prompted input [p×k][MASK] x_1:(T'−k) needs k < visible_length "
                              f"= {self.protocol.visible_length}, got {self.prompt_length}")
        sizes = tuple(self.sizes) if isinstance(self.sizes, (list, tuple)) else (self.sizes,)
        if not sizes or len(set(sizes)) != len(sizes):
            raise ConfigError(f"sizes: expected distinct numbers of hidden states, got {self.sizes!r}")
        object.__setattr__(self, "sizes", tuple(check_positive_int("sizes", K, minimum=2) for K in sizes))
        read_at = tuple(self.read_at) if isinstance(self.read_at, (list, tuple)) else (self.read_at,)
        read_at = tuple(_rung("read_at", t, self.targets) for t in read_at)  # each the ladder's own target
        # one cell per rung label: a repeated target would be read (and averaged) twice
        object.__setattr__(self, "read_at", tuple({f"{t:g}": t for t in read_at}.values()))
        if not isinstance(self.oracle_prompt, bool):
            raise ConfigError(f"oracle_prompt: expected True or False, got {self.oracle_prompt!r}")
        self.configs()  # the trainer's own checks, before anything runs

    @property
    def seq_len(self) -> int:
        """(MASK, x_1:T'): the authors' max_seq_length."""
        return self.protocol.visible_length + 1

    @property
    def probe_epochs(self) -> int:
        """Passes over the training set that give at least ``probe_steps`` probe steps (100 epochs of
        ⌊5000/128⌋ = 39 full batches at the authors' 5000 sequences; 1300 of 3 at 500), so that ``n_train``
        does not change the probe's length."""
        per_epoch = max(1, self.protocol.n_train // min(self.probe_batch, self.protocol.n_train))
        return -(-self.probe_steps // per_epoch)

    def identity(self) -> dict:
        """What every cell's numbers depend on: the study less the choice of cells (``sizes``, worlds,
        ``first_world``, ``read_at``), claimed by a results directory so that a rerun with other settings
        is refused rather than mixed with its cells."""
        d = dataclasses.asdict(self)
        for f in ("sizes", "first_world", "read_at"):
            d.pop(f)
        d["protocol"].pop("worlds_per_size")
        return d

    def configs(self) -> tuple[TransformerConfig, TrainConfig]:
        """The transformer and its trainer.  The ladder's ε is the masked ε at every one of the ``seq_len``
        positions of the held-out sequences — the ε each record reports — so that the rungs a model reached
        and its reported ε are one quantity."""
        model = TransformerConfig(n_symbols=10, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                                  max_len=self.seq_len, causal=False)
        tc = TrainConfig(objective="masked-lm", targets=self.targets, seeds=(0,), batch_size=self.batch_size,
                         seq_len=self.seq_len, max_steps=self.max_steps, learning_rate=self.learning_rate,
                         warmup_steps=min(100, self.max_steps // 10), eval_every=100, eval_seed=EVAL_SEED,
                         eval_sequences=self.eval_sequences, eval_positions=self.seq_len, mask_rate=self.mask_rate)
        return model, tc


#: the default run: the authors' protocol (:data:`PROTOCOL`) with 3 worlds per size (seeds 1–3, not 20) and 500 + 500
#: sequences (not 5000 + 1000), at |H| ∈ {4, 12, 25}, transformers trained for at most 1000 steps and
#: prompts fitted for 100 full-batch steps, so that it fits in ~30 min on a 2-core CPU (the prompt fits
#: over 500 × 80 positions dominate); the full scale is ``TrainedStudy(sizes=SIZES)``.
DEFAULT = TrainedStudy(protocol=dataclasses.replace(PROTOCOL, worlds_per_size=3, n_train=500, n_test=500),
                       sizes=(4, 12, 25), max_steps=1000, prompt_steps=100)
#: ``--quick``: one world at |H| ∈ {4, 12}, 40-token label sequences read as [MASK] x_1:29 (prompt: x_1:9),
#: 128 + 128 sequences, a 1-layer d = 16 transformer for 60 steps.
QUICK = TrainedStudy(protocol=dataclasses.replace(PROTOCOL, worlds_per_size=1, label_length=40, visible_length=29,
                                                  n_train=128, n_test=128),
                     sizes=(4, 12), d_model=16, n_layers=1, n_heads=2, batch_size=16, max_steps=60,
                     targets=(1.0,), prompt_steps=20, probe_steps=5, eval_sequences=8, oracle_prompt=False)


# ---- the authors' head form ------------------------------------------------------------------------

@partial(jax.jit, static_argnames=("steps", "warmup"))
def _probe(f, y, batches, lr, key, steps, warmup):
    head = LinearLogits()
    params = head.init(key, f.shape[1], 2)
    sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.linear_schedule(lr, 0.0, steps - warmup)],
                                 [warmup])
    opt = optax.adam(sched)

    def step(carry, idx):
        p, s = carry
        loss, g = jax.value_and_grad(lambda q: head_loss(head, q, f[idx], y[idx], 0.0))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    start = head_loss(head, params, f, y, 0.0)  # the objective on every training sequence, at the start
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), batches)
    return params, losses, start, head_loss(head, params, f, y, 0.0)


def fit_probe(features, labels, *, epochs: int = 100, batch_size: int = 128, lr: float = 0.01, seed: int = 0):
    """The authors' head form, as their fine-tuning script runs it: a linear classifier on the RAW features
    (no standardisation), minibatch Adam (``batch_size``, ``epochs`` passes, reshuffled each epoch), lr
    warmed up linearly over min(500, steps/2) steps and decayed linearly to 0 (the HF Trainer's schedule),
    no penalty.  Returns a :class:`~simlm.downstream.LinearHead` (mean 0, scale 1).

    A deviation from the authors: an epoch is ⌊n / batch_size⌋ full batches, its last partial batch
    dropped (the n mod batch_size sequences left out are redrawn each epoch: 8 of 5000 at batch 128, 116 of
    500), where the HF Trainer's default ``dataloader_drop_last=False`` keeps it (⌈n / batch_size⌉ batches:
    4000 steps for 100 epochs of 5000, not 3900).  The first step is taken at learning rate 0, so a schedule
    of fewer than 2 steps is refused (:class:`ConfigError` naming ``epochs``): it would return the initial
    weights."""
    f = check_features(features, 2)
    y = check_labels(labels, f.shape[0], 2)
    b = min(check_positive_int("batch_size", batch_size), f.shape[0])
    per_epoch = f.shape[0] // b
    steps = check_positive_int("epochs", epochs) * per_epoch
    if steps < 2:
        raise ConfigError(f"epochs: {epochs} epoch(s) of ⌊{f.shape[0]}/{b}⌋ = {per_epoch} batch(es) is {steps} "
                          f"probe step, taken at learning rate 0 (the warmup starts at 0), so the probe would "
                          f"return its initial weights; give at least 2 steps (more epochs or a smaller batch_size)")
    check_memory("epochs", steps * b, itemsize=8, what="the probe's minibatch indices")
    rng = np.random.default_rng(check_positive_int("seed", seed, minimum=0))
    batches = np.concatenate([rng.permutation(f.shape[0])[:per_epoch * b].reshape(per_epoch, b) for _ in range(epochs)])
    params, losses, start, final = _probe(
        jnp.asarray(f, jnp.float32), jnp.asarray(y), jnp.asarray(batches),
        jnp.float32(check_float32_normal("lr", check_positive("lr", lr), "the probe computes")),
        as_key(seed, "seed"), steps, max(1, min(500, steps // 2)))
    # the divergence rule of every other fit: a loss on all training data above its start (lr 1e3 went 0.69 → 12.7
    # and returned a probe at 0.73 training accuracy, silently; a review, 2026-12-07)
    check_prompt_fit(float(start), [float(final)], "fit_probe")
    return LinearLogits.fitted(params, np.zeros(f.shape[1]), np.ones(f.shape[1]), losses)


# ---- one world ----------------------------------------------------------------------------------

def prompted_inputs(x, visible_length: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The authors' truncation: the head reads x_1:T' (after [MASK], T' + 1 tokens in all), the prompted
    input [p×k][MASK] x_1:(T'−k) the same number of positions — 20 fewer tokens for k = 20.  ``x``: integer
    token ids of shape (n, T) (:class:`TokenError` otherwise); ``visible_length`` ≤ T and 0 < ``k`` <
    ``visible_length`` integers, not bools (:class:`ConfigError` naming the argument)."""
    visible_length = check_positive_int("visible_length", visible_length)
    k = check_positive_int("k", k)
    x, single = check_tokens(x, np.iinfo(np.int32).max, "x")
    if single:
        raise TokenError(f"x: expected sequences of shape (n, T), got one sequence of shape ({x.shape[1]},)")
    if visible_length > x.shape[1]:
        raise ConfigError(f"visible_length: expected at most the sequences' length {x.shape[1]}, got {visible_length}")
    if not k < visible_length:
        raise ConfigError(f"k: expected 0 < k < visible_length = {visible_length} ≤ {x.shape[1]}, got {k}")
    return x[:, :visible_length], x[:, :visible_length - k]


def _inputs(K: int, world_seed: int, study: TrainedStudy):
    """One world, its task's sequences and the truncated inputs every form reads; a training set whose
    labels are all one class is refused (:class:`ConfigError` naming ``n_train``), before anything is fitted
    or trained: every method would report the constant prediction's rate as a result."""
    p, k = study.protocol, study.prompt_length
    hmm = world(K, world_seed)
    data = task_data(hmm, task_seed(world_seed, 0, p), p)
    classes = np.unique(np.asarray(data.y[:p.n_train]))
    if classes.size < 2:
        raise ConfigError(f"n_train: the {p.n_train} training sequences of |H| = {K} world {world_seed} all have "
                          f"label {int(classes[0])}; every head needs both classes to learn from: use a larger n_train")
    x_head, x_prompt = prompted_inputs(data.x, p.visible_length, k)
    return hmm, data, x_head, x_prompt


def _rung(name: str, target, targets) -> float:
    """``target`` as the one of the ladder's ``targets`` it is close to (np.isclose; the nearest), the value
    whose ``:g`` label names its checkpoints; :class:`ConfigError` naming ``name`` when it is none of them.
    A value within isclose but of another label (1.500014 for 1.5) was accepted and then found no
    checkpoint, after the whole study had run."""
    target = check_positive(name, target)
    close = [float(t) for t in targets if np.isclose(target, t)]
    if not close:
        raise ConfigError(f"{name}: {target:g} is not one of the ladder's targets {tuple(targets)}; its run has no "
                          "checkpoint there")
    return min(close, key=lambda t: abs(t - target))


def _check_cell(K, world_seed, study) -> None:
    """The arguments naming one cell: a :class:`TrainedStudy`, |H| ≥ 2 and a world seed ≥ 0 (ConfigError
    naming the argument)."""
    if not isinstance(study, TrainedStudy):
        raise ConfigError(f"study: expected a TrainedStudy, got {type(study).__name__}")
    check_positive_int("K", K, minimum=2)
    check_positive_int("world_seed", world_seed, minimum=0)


def _trained_rows(hmm, lm, data, x_head, x_prompt, study: TrainedStudy, add, suffix: str, **meta) -> dict:
    """Every trained-feature form (head, probe, head-59, hidden-head, prompt-k, prompt-1) read from ``lm``;
    each record carries ``meta``, the LM's exact masked ε (``epsilon``, on the trainer's held-out set) and
    ``epsilon_readout``: the exact KL of the unprompted law at a MASK prepended to the form's own test
    tokens — the law the heads read (x_1:T' for head, probe and hidden-head, x_1:(T'−k) for head-<T'−k>);
    for a prompt, that law on the tokens it precedes (the prompted law has no exact counterpart).  The
    method names get ``suffix``.  Returns the ε fields of the head's readout."""
    p, k = study.protocol, study.prompt_length
    tr, te = slice(0, p.n_train), slice(p.n_train, None)
    held = np.asarray(hmm.sample(EVAL_SEED, study.eval_sequences, study.seq_len))
    x_one = data.x[:, :p.visible_length - 1]  # prompt-1's tokens: [p][MASK] x_1:(T'−1) has the head's length
    readout = {n: float(exact_prepended_epsilon(hmm, lm, xx[te])[0]) for n, xx in
               ((p.visible_length, x_head), (x_prompt.shape[1], x_prompt), (x_one.shape[1], x_one))}
    trained = {"epsilon": float(exact_masked_epsilon(hmm, lm, held)[0]), **meta}
    on = lambda xx: {**trained, "epsilon_readout": readout[xx.shape[1]]}  # noqa: E731

    def probs(xx):
        return np.exp(np.asarray(lm.prepended_mask_logprobs(xx), np.float64))

    _head_rows(add, "", suffix, "trained", probs(x_head), probs(x_prompt), data, study, extra=on(x_head),
               extra_59=on(x_prompt))
    hid = np.asarray(lm.prepended_mask_features(x_head))
    add(f"hidden-head{suffix}", "trained", fit_linear_head(hid[tr], data.y[tr]).predict(hid[te]),
        tokens=p.visible_length, **on(x_head))
    for kk, xx in {k: x_prompt, 1: x_one}.items():  # k = 1: the k-prompt is prompt-1, fitted and stored once
        pr = fit_transformer_prompt(lm, xx[tr], data.y[tr], k=kk, steps=study.prompt_steps)
        add(f"prompt-{kk}{suffix}", "trained", pr.predict(lm, xx[te]), tokens=xx.shape[1], **on(xx))
    return on(x_head)


def _head_rows(add, prefix: str, suffix: str, features: str, f_head, f_59, data, study: TrainedStudy, *,
               extra: dict | None = None, extra_59: dict | None = None):
    """The three head forms on one kind of features: ``head`` (simlm's) and ``probe`` (the authors') on
    the law read after x_1:T', with the fields ``extra``, and ``head-<T'−k>`` on the law the prompted input
    leaves room for, with ``extra_59`` (default ``extra``)."""
    extra = extra or {}
    extra_59 = extra if extra_59 is None else extra_59
    p = study.protocol
    tr, te = slice(0, p.n_train), slice(p.n_train, None)
    add(f"{prefix}head{suffix}", features, fit_linear_head(f_head[tr], data.y[tr]).predict(f_head[te]),
        tokens=p.visible_length, **extra)
    add(f"{prefix}probe{suffix}", features, fit_probe(f_head[tr], data.y[tr], epochs=study.probe_epochs,
                                                     batch_size=study.probe_batch, lr=study.probe_lr).predict(f_head[te]),
        tokens=p.visible_length, **extra)
    t59 = p.visible_length - study.prompt_length
    add(f"{prefix}head-{t59}{suffix}", features, fit_linear_head(f_59[tr], data.y[tr]).predict(f_59[te]),
        tokens=t59, **extra_59)


def _recorder(out: list, base: dict, data, p: Protocol):
    def add(method, features, pred_test, **extra):
        out.append({**base, "method": method, "features": features, **scored(np.asarray(pred_test), data, p), **extra})
    return add


def study_world(K: int, world_seed: int, study: TrainedStudy, work: Path | None = None, log=print) -> list[dict]:
    """Train one world's transformer and measure every head/prompt form and the oracle on one task's
    sequences; one record per method."""
    _check_cell(K, world_seed, study)
    p, k = study.protocol, study.prompt_length
    hmm, data, x_head, x_prompt = _inputs(K, world_seed, study)
    tr, te = slice(0, p.n_train), slice(p.n_train, None)
    out, t0 = [], time.perf_counter()
    add = _recorder(out, {"n_states": K, "world_seed": world_seed, "task_seed": task_seed(world_seed, 0, p),
                          "prompt_length": k}, data, p)
    _head_rows(add, "oracle-", "", "exact", np.asarray(hmm.prepended_mask_probs(x_head)),
               np.asarray(hmm.prepended_mask_probs(x_prompt)), data, study)
    if study.oracle_prompt:
        pr = fit_exact_prompt(hmm, x_prompt[tr], data.y[tr], k=k, steps=study.prompt_steps)
        add(f"oracle-prompt-{k}", "exact", pr.predict(hmm, x_prompt[te]), tokens=x_prompt.shape[1])
    t_oracle = time.perf_counter() - t0

    model, tc = study.configs()
    result = train(hmm, model, tc, None if work is None else work / f"H{K}_w{world_seed}", progress=False)
    t_train = time.perf_counter() - t0 - t_oracle
    rungs = [r.target for r in result.records if r.reached]
    eps = _trained_rows(hmm, result.final_lms[0], data, x_head, x_prompt, study, add, "", rungs=rungs,
                        train_steps=int(result.final_step), train_seconds=round(t_train, 1))
    log(f"|H|={K:2d} world {world_seed}: ε {eps['epsilon']:.3f} (readout {eps['epsilon_readout']:.3f}, rungs {rungs}, "
        f"{result.final_step} steps) " + " ".join(f"{r['method']} {r['accuracy']:.3f}" for r in out)
        + f" ({time.perf_counter() - t0:.0f} s: oracle {t_oracle:.0f}, train {t_train:.0f})")
    return out


def read_world(K: int, world_seed: int, study: TrainedStudy, work: Path, target: float, log=print) -> list[dict]:
    """The trained-feature forms of one world read from its transformer's checkpoint at the ε ≤ ``target``
    rung instead of the final model: pretraining ε as a factor, everything else (sequences, task, forms)
    as in :func:`study_world`.  Methods are named ``head@<target>`` etc. and carry ``read_at``.  The run
    under ``work`` is restored (trained first if it is not there); a run that never reached the rung
    gives no records.  ``target`` must be one of ``study.targets`` and ``work`` a directory
    (:class:`ConfigError` naming the argument, before anything is computed)."""
    _check_cell(K, world_seed, study)
    if not isinstance(work, (str, os.PathLike)):
        raise ConfigError(f"work: expected the directory of the runs' checkpoints, got {type(work).__name__} {work!r}")
    target = _rung("target", target, study.targets)
    p = study.protocol
    hmm, data, x_head, x_prompt = _inputs(K, world_seed, study)
    result = train(hmm, *study.configs(), Path(work) / f"H{K}_w{world_seed}", progress=False)
    reached = [r.target for r in result.records if r.reached]
    if not any(f"{t:g}" == f"{target:g}" for t in reached):  # the label the checkpoints are found by
        log(f"|H|={K:2d} world {world_seed}: no checkpoint at ε ≤ {target:g} (reached {reached}); nothing read")
        return []
    out, t0 = [], time.perf_counter()
    add = _recorder(out, {"n_states": K, "world_seed": world_seed, "task_seed": task_seed(world_seed, 0, p),
                          "prompt_length": study.prompt_length}, data, p)
    step = next(r.step for r in result.records if r.reached and f"{r.target:g}" == f"{target:g}")
    eps = _trained_rows(hmm, result.lm(target), data, x_head, x_prompt, study, add, f"@{target:g}",
                        read_at=float(target), train_steps=int(step))
    log(f"|H|={K:2d} world {world_seed} at ε ≤ {target:g}: ε {eps['epsilon']:.3f} (readout "
        f"{eps['epsilon_readout']:.3f}, step {step}) " + " ".join(f"{r['method']} {r['accuracy']:.3f}" for r in out)
        + f" ({time.perf_counter() - t0:.0f} s)")
    return out


def run(study: TrainedStudy = DEFAULT, out: Path | None = None, log=print) -> list[dict]:
    """Every world (interleaved over sizes, so that a partial run covers every size), each world's records
    stored as one cell of ``out/cells.jsonl`` as it ends (:class:`~simlm.experiments.store.CellStore`:
    fsynced lines, a torn last line dropped; worlds already there are skipped) and checkpoints under
    ``out/work``; without ``out`` the records are only returned.  ``out`` belongs to one study's settings
    (:meth:`TrainedStudy.identity`, claimed in ``out/study.json``): a run with others is refused
    (``ConfigError``), so cells computed differently are never mixed; one with other sizes, worlds or
    ``read_at`` adds cells.  Returns the records of this run's cells only, never the other cells of
    ``out``.  With ``study.read_at``, every world's trained forms are also read from those rungs'
    checkpoints (:func:`read_world`; needs ``out``), one more cell per world and target."""
    read_at = study.read_at
    if read_at and out is None:
        raise ConfigError("read_at: reading rung checkpoints needs an out directory (the checkpoints live there)")
    cells, visited = {}, []
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        cells = CellStore(Path(out) / "cells.jsonl")
        if not (Path(out) / "study.json").exists() and any("task_seed" not in r for r in cells.records()):
            raise ConfigError(f"out: {out} holds cells of a run that recorded no settings (before 2026-12-01: "
                              "worlds shared one task, the ladder read 8 positions, the probe's length followed "
                              "n_train); use another --out")
        claim(Path(out) / "study.json", study.identity())
    first = study.first_world  # the authors' seeds run 1..20; a later first world splits a run over processes
    for w in range(first, first + study.protocol.worlds_per_size):
        for K in study.sizes:
            # the task in the key: cells of the runs that shared one μ over all worlds (before 2026-12-01)
            # are recomputed, not mixed in
            key = f"H{K}_w{w}_t{task_seed(w, 0, study.protocol)}"
            if key not in cells:
                release_compiled()  # a study of many worlds compiles thousands of programs in this process
                rows = study_world(K, w, study, None if out is None else Path(out) / "work", log=log)
                if out is None:
                    cells[key] = rows
                else:
                    cells.add(key, rows)
            visited.append(key)
            for t in read_at:
                if f"{key}@{t:g}" not in cells:
                    cells.add(f"{key}@{t:g}", read_world(K, w, study, Path(out) / "work", t, log=log))
                visited.append(f"{key}@{t:g}")
    return [r for key in visited for r in (cells[key] if out is None else cells.cells[key]["records"])]


def summary(records: list[dict]) -> list[dict]:
    """Per (method, |H|): mean test accuracy ± sd over worlds, accuracy on inputs with margin (averaged over the
    ``n_worlds_with_margin`` worlds that have such inputs, of the ``n``; a count of worlds, where a record's
    ``n_with_margin`` counts test inputs), and the trained LMs' mean ε."""
    out = []
    for m in dict.fromkeys(r["method"] for r in records):
        for K in sorted({r["n_states"] for r in records if r["method"] == m}):
            g = [r for r in records if r["method"] == m and r["n_states"] == K]
            acc = np.array([r["accuracy"] for r in g])
            # no input with a margin: NaN in memory, null once stored (strict JSON)
            wm = [a for a in (r["accuracy_with_margin"] for r in g) if a is not None and a == a]
            out.append({"method": m, "n_states": K, "n": len(g), "accuracy": float(acc.mean()),
                        "accuracy_sd": float(acc.std(ddof=1)) if len(g) > 1 else None,  # one world: no s.d.
                        "accuracy_with_margin": float(np.mean(wm)) if wm else float("nan"),
                        "n_worlds_with_margin": len(wm),
                        "majority": float(np.mean([r["majority"] for r in g])),
                        # trained rows of LMs that reached no rung of the ladder (a failed pretraining), averaged in
                        "n_without_rung": sum(1 for r in g if "rungs" in r and not r["rungs"]),
                        "epsilon": float(np.mean([r["epsilon"] for r in g])) if "epsilon" in g[0] else 0.0})
    return out


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table: one line per method, one column per |H| (mean ± sd over worlds)."""
    sizes = sorted({r["n_states"] for r in rows})
    lines = ["| method | " + " | ".join(f"\\|H\\|={K}" for K in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    most = {K: max(r["n"] for r in rows if r["n_states"] == K) for K in sizes}
    for m in dict.fromkeys(r["method"] for r in rows):
        # a row over fewer worlds than its column's others (a rung some LMs never reached) says how many
        cell = {r["n_states"]: f"{r['accuracy']:.3f}"
                + (" (n = 1)" if r["accuracy_sd"] is None else f" ± {format_sd(r)}"
                   + (f" (n = {r['n']})" if r["n"] != most[r["n_states"]] else "")) for r in rows if r["method"] == m}
        lines.append(f"| {m} | " + " | ".join(cell.get(K, "–") for K in sizes) + " |")
    eps = {r["n_states"]: f"{r['epsilon']:.3f}" for r in rows if r["method"] == "head"}
    maj = {r["n_states"]: f"{r['majority']:.3f}" for r in rows if r["method"] == "head"}
    lines.append("| trained ε (mean) | " + " | ".join(eps.get(K, "–") for K in sizes) + " |")
    lines.append("| majority | " + " | ".join(maj.get(K, "–") for K in sizes) + " |")
    failed = {r["n_states"]: f"{r.get('n_without_rung', 0)} of {r['n']}" for r in rows if r["method"] == "head"}
    lines.append("| LMs without a rung | " + " | ".join(failed.get(K, "–") for K in sizes) + " |")
    return "\n".join(lines)


def parser():
    """The command line of ``head_prompt_protocol`` (the exact study, or ``--trained``): argparse whose
    errors raise :class:`ConfigError` naming the flag."""
    from simlm.experiments.commandline import Parser, directory, positive_int

    p = Parser(prog="python -m simlm.experiments.head_prompt_protocol",
               description="Wei, Xie & Ma's experiment-1 protocol next to simlm's: exact features one factor at "
                           "a time, or (--trained) trained masked transformers, the authors' probe and their "
                           "20-vector prompt.")
    p.add_argument("--quick", action="store_true", help="two small sizes, one world: a smoke run")
    p.add_argument("--trained", action="store_true", help="the trained-transformer study (this module)")
    p.add_argument("--out", type=directory, default=None,
                   help="--trained: results directory (records and summary.json)")
    p.add_argument("--sizes", nargs="+", type=positive_int("sizes"), help="--trained: the |H| values")
    p.add_argument("--worlds", type=positive_int("worlds"), help="--trained: worlds per size")
    p.add_argument("--n-train", type=positive_int("n-train"), help="--trained: training sequences per task")
    p.add_argument("--n-test", type=positive_int("n-test"), help="--trained: test sequences per task")
    p.add_argument("--max-steps", type=positive_int("max-steps"), help="--trained: training steps per world")
    p.add_argument("--first-world", type=positive_int("first-world"),
                   help="--trained: the first world's seed (splits a run over processes)")
    p.add_argument("--read-at", nargs="+", type=float, metavar="TARGET",
                   help="--trained: also read every world's trained forms from its ε ≤ TARGET rung checkpoint "
                        "(needs --out; a finished run is restored, not retrained)")
    p.add_argument("--authors-scale", action="store_true",
                   help="--trained: the authors' scale (every size, 20 worlds, 5000 + 1000 sequences)")
    return p


_TRAINED_ONLY = ("out", "sizes", "worlds", "n_train", "n_test", "max_steps", "first_world", "authors_scale", "read_at")


def parse(argv) -> tuple[TrainedStudy, Path | None]:
    """The command line as a :class:`TrainedStudy`; an unknown option or a bad value raises ConfigError
    naming it."""
    args = parser().parse_args(list(argv))
    if args.quick and args.authors_scale:
        raise ConfigError("--quick: cannot be combined with --authors-scale")
    study = QUICK if args.quick else TrainedStudy() if args.authors_scale else DEFAULT
    if args.authors_scale:
        from simlm.experiments.head_prompt_protocol import SIZES
        study = dataclasses.replace(study, sizes=SIZES)
    proto = {f: getattr(args, a) for a, f in (("worlds", "worlds_per_size"), ("n_train", "n_train"),
                                              ("n_test", "n_test")) if getattr(args, a) is not None}
    change = {"protocol": dataclasses.replace(study.protocol, **proto)} if proto else {}
    if args.sizes is not None:
        change["sizes"] = tuple(args.sizes)
    for a in ("max_steps", "first_world", "read_at"):
        if getattr(args, a) is not None:
            change[a] = getattr(args, a)
    return dataclasses.replace(study, **change), (Path(args.out) if args.out is not None else None)


def main(argv=None) -> int:
    """``--trained``: run the study the command line asks for; exit status 2 and one line for a bad option."""
    from simlm.experiments.commandline import run_main

    return run_main("head_prompt_protocol", _main, sys.argv[1:] if argv is None else argv, {})


def _main(argv) -> None:
    study, out = parse(argv)
    t0 = time.perf_counter()
    records = run(study, out)
    if out is not None:  # the directory's summary: every cell in it (one study's settings, claimed), not just this run's
        records = CellStore(Path(out) / "cells.jsonl").records()
    rows = summary(records)
    for r in rows:
        print(f"{r['method']:16s} |H|={r['n_states']:2d} n={r['n']:2d} acc {r['accuracy']:.3f} ± {format_sd(r)} "
              f"with margin {r['accuracy_with_margin']:.3f} majority {r['majority']:.3f} ε {r['epsilon']:.3f}")
    if out is not None:
        write_json_atomic(Path(out) / "summary.json", {"summary": rows, "study": repr(study),
                                                       "seconds": time.perf_counter() - t0})
    print(markdown(rows))
    print(f"{time.perf_counter() - t0:.0f} s")


__all__ = ["TrainedStudy", "DEFAULT", "QUICK", "fit_probe", "prompted_inputs", "study_world", "read_world", "run", "summary",
           "markdown", "parse", "main"]
