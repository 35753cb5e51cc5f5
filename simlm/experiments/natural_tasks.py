"""Natural-task transfer swept over ε and γ (Saunshi, Malladi & Arora, ICLR 2021), on exact worlds.

On a small world every context s of length ≤ L is enumerated with p_L(s) and p*_s exact
(:func:`simlm.worlds.contexts.enumerate_contexts`).  The sweep crosses

- LMs at a controlled ε — analytic ones: the world's laws perturbed by a family of
  :mod:`simlm.models.perturbed` (``logit-noise``, ``temperature``, ``uniform-mixture``, ``rare-words``;
  features p_f only), ``theta-noise`` θ_s = θ*_s + σG_s around the cross-entropy optimum for the word
  embeddings Φ (a softmax LM: ε_Φ calibrated) and ``quad-noise`` Quad features f_s = f*_s + σG_s (ε_quad
  calibrated), the scale solved on the contexts so the calibrated ε hits each target; and small causal
  transformers trained down an ε ladder with the cross-entropy (``trained-ce``) and the Quad objective
  (``trained-quad``).  On the contexts a causal transformer IS a softmax LM: θ_s = its feature at the
  position that predicts the word after s, Φ = its unembedding (:func:`context_softmax_lm`);
- tasks at a controlled γ — p_T = p_L (γ = 1) and the slices of prefixes ending with a prompt u
  (γ = p_L(slice), smaller for longer and rarer prompts), labels from ⟨v, p*_s⟩ + b
  (:func:`simlm.theory.natural_tasks.random_natural_task`);

and runs :func:`simlm.theory.natural_tasks.check_natural_task` on each (world, LM, task).  One tidy row
per bound and choice of radius B (``B_choice``): ``"B*"`` the grid radius that minimises the bound, and
``"B_tau"`` the smallest grid radius where the task is solved, τ(B) ≤ min_B τ + :data:`TAU_TOL` (fixed
by the task alone, so comparable across LMs and ε):

    features  bound                                     ε in the bound (``eps_bound``)
    p_f       τ(B) + B√(2ε/γ)                           ε     = E_{p_L} KL(p*_s ‖ p_f(s))
    Φp_f      τ_Φ(B) + B√(2ε_Φ/γ)   (and with γ_Φ)      ε_Φ   = ε − min_θ ε(θ)
    f         τ⁽²⁾_Φ(B) + B√(2ε_quad/γ)                  ε_quad = E_{p_L} ½‖Φᵀ(f − f*)‖²

``slack`` = bound − τ = B√(2ε/γ); ``excess_natural`` / ``excess_best`` = the measured loss of (a) the
τ-optimal classifier transferred to the LM's features, (b) the best classifier in the same ball, minus
τ; ``ratio_*`` = excess/slack, the share of the slack the LM actually uses (NaN where the slack is no more
than the rounding the verdict forgives, :data:`~simlm.theory.natural_tasks.ATOL`).  A violation is a row
whose (a) or (b) exceeds its bound + ATOL at some B on the grid (``holds`` False) — there must be none.

The experiment is the sweep of ``simlm/experiments/configs/natural_tasks.toml`` (:func:`sweep_config`;
flags override its values): one world per ``[[worlds]]`` table and the check
``saunshi/natural-tasks-experiment`` (:func:`experiment_check`), which builds the LMs above itself in the
oracle's cell of each world — one cell for the analytic families, one for the trained ladders (checkpoints
under ``<out>/work/``, reused on reruns) — so the directory holds an ordinary sweep (``cells.jsonl``,
tidy ``results.csv``, ``sweep.json`` …) beside ``results.json`` and the figures, drawn from the stored rows.

    python -m simlm.experiments.natural_tasks [--quick] [--out DIR] [--figure PATH] [--workers N] ...
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from simlm.checks import (as_tuple, check_distinct_labels, check_distributions, check_instance, check_positive,
                          check_positive_int, checked_fields)
from simlm.errors import ConfigError
from simlm.experiments.commandline import (Parser, add_run_options, check_run_options, directory, executor_of,
                                           figure_path, run_main)
from simlm.experiments.registry import experiment_sweep, record_of, row, tidy_columns
from simlm.experiments.store import results_dir
from simlm.models.finite import SoftmaxContextLM, fit_cross_entropy, quad_minimiser
from simlm.worlds.contexts import enumerate_contexts
from simlm.models.perturbed import (S_MAX, UNDIRECTED_KINDS, epsilon_of_scale, max_scale, perturb_logprobs,
                                    perturbation_params, solve_scale)
from simlm.models.transformer import TransformerConfig
from simlm.theory.log_partition import GEOMETRIES, compare_probes, random_embeddings
from simlm.theory._convex import polish_softmax_fit, softmax_objective
from simlm.theory.natural_tasks import ATOL, B_GRID, NOISES, check_natural_task, quad_epsilon
from simlm.experiments.natural_tasks_adversaries import (ADVERSARIES, TASK_KINDS, adversarial_lms, format_targets,
                                                         make_tasks)
from simlm.experiments.natural_tasks_adversaries import targets as sweep_targets
from simlm.train import TrainConfig, train
from simlm.jsonio import jsonable, write_json_atomic
from simlm.worlds import LogLinearWorld

#: the analytic LMs of the sweep: the perturbed laws (:mod:`simlm.models.perturbed`'s kinds that need no
#: direction) and two softmax families, θ* + σG and f* + σG.
LM_KINDS = UNDIRECTED_KINDS + ("theta-noise", "quad-noise")
#: every LM family a row can come from (the adversaries are built per task: see natural_tasks_adversaries).
ALL_LM_KINDS = LM_KINDS + ("trained-ce", "trained-quad") + ADVERSARIES
WORLDS = ("loglinear", "loglinear-unstructured", "hmm")
FEATURES = ("p_f", "Φp_f", "f")
#: a calibrated ε further than this (relative) from its target counts as not reached: the row is skipped.
CALIBRATION_RTOL = 1e-6
#: B_tau = the smallest grid radius with τ(B) within this many nats of the task's best τ.
TAU_TOL = 0.01
B_CHOICES = ("B*", "B_tau")


@checked_fields
@dataclasses.dataclass(frozen=True)
class Config:
    """The sweep, as plain values.  ``n_states``/``dim`` size the log-linear worlds; the HMM has
    ``hmm_states`` states, Dirichlet(``hmm_concentration``) rows and Gaussian word embeddings Φ of
    dimension ``dim``; ``max_length`` = L; ``prompt_lengths`` the lengths of
    the prompts whose slices make the γ < 1 tasks (the most and least likely prompt of each length).  Tasks:
    each "kind-noise" of ``tasks`` whose noise is in ``noises``, on every prompt (kind ``random``:
    :func:`~simlm.theory.natural_tasks.random_natural_task`, ``indicative``:
    :func:`~simlm.theory.natural_tasks.indicative_task`).  The analytic and trained LMs, and the softmax
    and Quad adversaries, are checked on the ``lm_tasks`` only; the law adversaries (aligned, search) on
    every task, at each ε of ``eps_grid`` and at the fractions ``critical_fractions`` of the task's
    critical ε, built at B* of the bound and (aligned) at each fixed radius of ``adversary_radii``."""

    worlds: tuple = ("loglinear", "hmm")
    n_symbols: int = 6
    n_states: int = 16
    dim: int = 4
    hmm_states: int = 4
    hmm_concentration: float = 0.3
    max_length: int = 3
    seed: int = 0
    eps_grid: tuple = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
    kinds: tuple = LM_KINDS
    prompt_lengths: tuple = (1, 2)
    noises: tuple = ("logistic", "sign")
    task_seed: int = 0
    tasks: tuple = ("random-logistic", "random-sign", "indicative-sign")
    lm_tasks: tuple = ("random-logistic",)
    adversaries: tuple = ADVERSARIES
    critical_fractions: tuple = (0.1, 0.5)
    adversary_radii: tuple = (1.0,)
    search_steps: int = 60
    ce_targets: tuple = (0.3, 0.1, 0.03, 0.01)
    quad_targets: tuple = (0.03, 0.01, 0.003)
    d_model: int = 16
    max_steps: int = 3000

    def __post_init__(self):
        """Every field checked here, so a bad value stops the sweep before it writes anything."""
        combos = tuple(f"{k}-{n}" for k in TASK_KINDS for n in NOISES)
        for name, allowed, empty in (("worlds", WORLDS, False), ("kinds", LM_KINDS, False), ("noises", NOISES, False),
                                     ("tasks", combos, False), ("lm_tasks", combos, True),
                                     ("adversaries", ADVERSARIES, True)):
            values = _tuple(self, name)
            bad = [v for v in values if not isinstance(v, str) or v not in allowed]
            if bad or not (values or empty) or len(set(values)) != len(values):
                raise ConfigError(f"{name}: expected one or more distinct of {allowed}, got {getattr(self, name)!r}")
        for name in ("eps_grid", "ce_targets", "quad_targets", "critical_fractions", "adversary_radii"):
            values = tuple(check_positive(name, v) for v in _tuple(self, name))
            if name == "eps_grid" and not values:
                raise ConfigError("eps_grid: expected at least one positive ε target")
            check_distinct_labels(name, values)  # LMs and rows are labelled with each value written as {:g}
            object.__setattr__(self, name, values)
        for name, low in (("n_symbols", 2), ("n_states", 1), ("dim", 1), ("hmm_states", 1), ("max_length", 1),
                          ("seed", 0), ("task_seed", 0), ("d_model", 1), ("max_steps", 1), ("search_steps", 1)):
            check_positive_int(name, getattr(self, name), minimum=low)
        for k in _tuple(self, "prompt_lengths"):
            check_positive_int("prompt_lengths", k)
        check_positive("hmm_concentration", self.hmm_concentration)
        if bad := [B for B in self.adversary_radii if not np.any(np.isclose(B, B_GRID, rtol=1e-12))]:
            raise ConfigError(f"adversary_radii: {bad} are not radii of the B grid {list(B_GRID)}")
        # the grid's own values: the adversary is built, and its rows looked up, at a radius of the grid
        object.__setattr__(self, "adversary_radii", tuple(float(B_GRID[np.argmin(np.abs(np.asarray(B_GRID) - B))])
                                                          for B in self.adversary_radii))
        kept = [t for t in self.tasks if t.split("-")[1] in self.noises]
        if not kept:
            raise ConfigError(f"tasks: none of {list(self.tasks)} has a noise in noises = {list(self.noises)}, so "
                              "there would be no task to check")
        if bad := [t for t in self.lm_tasks if t not in kept]:
            raise ConfigError(f"lm_tasks: {bad} are not among the tasks checked ({kept}: tasks whose noise is in "
                              "noises); the LMs checked on them would be dropped")
        if bad := [k for k in self.prompt_lengths if k > self.max_length]:
            raise ConfigError(f"prompt_lengths: {bad} exceed max_length = {self.max_length} (a prompt is a context "
                              "of the enumerated lengths), so they would make no task")


def _tuple(config, name) -> tuple:
    """Field ``name`` of ``config`` as a tuple (a single number or name becomes a 1-tuple), stored back."""
    value = as_tuple(name, getattr(config, name), single=(str, int, float, np.integer, np.floating))
    object.__setattr__(config, name, value)
    return value


QUICK = Config(worlds=("loglinear",), n_symbols=4, n_states=3, dim=4, max_length=2, eps_grid=(1e-3, 1e-2, 0.1),
               kinds=("uniform-mixture", "theta-noise", "quad-noise"), prompt_lengths=(1,), ce_targets=(0.3, 0.1),
               quad_targets=(), d_model=4, max_steps=400, tasks=("random-logistic", "random-sign"),
               adversaries=("adversarial-aligned",), critical_fractions=(0.5,))


# ---- worlds, tasks, LMs ----------------------------------------------------------------------------

def make_world(name: str, config: Config):
    """(world, Φ ``(d, V)``): a LogLinearWorld with its own word embeddings (``"loglinear"`` anchor
    geometry, ``"loglinear-unstructured"``), or an HMM with Gaussian embeddings (``"hmm"``) — the world
    of the sweep table :func:`world_spec`."""
    from simlm.experiments.sweep import build_world

    world = build_world(world_spec(name, config))
    return world, world_embeddings(name, world, config)


def task_prompts(contexts, lengths=(1, 2)) -> list:
    """None (p_T = p_L, γ = 1), then for each prompt length k the most and the least likely suffix u
    by slice mass p_L(slice) = γ, among slices whose contexts have ≥ 2 distinct laws (a task on one law
    has one label)."""
    p_L, P = contexts.weights / contexts.weights.sum(), contexts.next_token_probs
    out = [None]
    for k in lengths:
        rows: dict = {}
        for i, s in enumerate(contexts.prefixes):
            if len(s) >= k:
                rows.setdefault(s[len(s) - k:], []).append(i)
        ok = sorted((p_L[r].sum(), u) for u, r in rows.items() if np.ptp(P[r], axis=0).max() > 1e-6)
        out += [u for u in (ok[-1][1], ok[0][1]) if u not in out] if ok else []
    return out


def analytic_family(kind, world, contexts, phi, rng, seed):
    """``(make_lm, eps_of, calibrated, upper)`` for one analytic kind: the LM at scale s, the ε it is
    calibrated on as a function of s (increasing from 0 at s = 0), that ε's name and the largest scale
    to try.  A perturbed family's noise is :func:`~simlm.models.perturbed.perturbation_params` (rare
    words: those of 64 sampled sequences) and its ε(s) :func:`~simlm.models.perturbed.epsilon_of_scale`
    on the contexts, weighted by p_L, in float64."""
    P, p_L = contexts.next_token_probs, contexts.weights / contexts.weights.sum()
    if kind in UNDIRECTED_KINDS:
        laws = world.next_token_logprobs(world.sample(seed, 64, contexts.max_length + 1))
        params = perturbation_params(kind, world.n_symbols, seed, laws)
        with jax.enable_x64(True):
            logp = jnp.log(jnp.asarray(P))

        def eps_of(s):
            with jax.enable_x64(True):
                return epsilon_of_scale(kind, logp, s, params, p_L)

        return functools.partial(_perturbed_laws, kind, P, params), eps_of, "eps", max_scale(kind)
    G = rng.standard_normal((len(P), len(phi)))
    # The LM stores θ and Φ in float32, and the check measures its ε on them: calibrated on the stored values
    # (ε of θ + sG solved in float64 was up to 1.3e-6 relative off the target as stored, past CALIBRATION_RTOL)
    stored = lambda lm: (np.asarray(lm.theta, np.float64), np.asarray(lm.phi, np.float64))
    if kind == "theta-noise":  # ε_Φ(σ) = ℓ(θ* + σG) − min ℓ, increasing: ℓ(θ* + σG) is convex in σ
        theta = np.asarray(fit_cross_entropy(P, phi).theta, np.float64)
        make = lambda s: SoftmaxContextLM(theta + s * G, phi)
        P64, phi_s = check_distributions("p_star", P), stored(make(0.0))[1]  # as softmax_excess reads them
        floor = softmax_objective(polish_softmax_fit(fit_cross_entropy(P64, phi_s).theta, phi_s, P64), phi_s, P64)
        return (make, lambda s: float(p_L @ np.maximum(softmax_objective(stored(make(s))[0], phi_s, P64) - floor, 0.0)),
                "eps_phi", S_MAX)
    # quad-noise: ε_quad(σ) = σ² E_{p_L} ½‖ΦᵀG_s‖², up to the rounding of f* + σG and Φ to float32
    f = np.asarray(quad_minimiser(P, phi), np.float64)
    make = lambda s: SoftmaxContextLM(f + s * G, phi)
    return make, lambda s: quad_epsilon(contexts, *stored(make(s))), "eps_quad", S_MAX


def analytic_lms(world, contexts, phi, config: Config, skipped: list):
    """Yield ``(labels, lm)`` for every analytic kind × target in ``config.eps_grid``: ``lm`` is ``(S, V)``
    laws for the perturbed kinds, a :class:`SoftmaxContextLM` for ``theta-noise``/``quad-noise``.
    Targets not reached — beyond the family's range, or off by more than :data:`CALIBRATION_RTOL` after
    solving — and every target of a family that cannot be built on this world are appended to ``skipped``
    with the reason (and the ε reached), never yielded under the target's label."""
    rng = np.random.default_rng(config.seed)
    for kind in config.kinds:
        try:
            make_lm, eps_of, calibrated, upper = analytic_family(kind, world, contexts, phi, rng, config.seed)
        except ConfigError as e:  # the family cannot be built on this world (e.g. no rare words)
            skipped += [{"lm": kind, "target_eps": target, "why": str(e)} for target in config.eps_grid]
            continue
        family = "analytic-laws" if kind in UNDIRECTED_KINDS else "analytic-softmax"
        for target in config.eps_grid:
            try:
                s = solve_scale(eps_of, target, upper, accept=CALIBRATION_RTOL)
            except ConfigError as e:
                skipped.append({"lm": kind, "target_eps": target, "why": str(e)})
                continue
            yield {"lm": kind, "family": family, "target_eps": target, "calibrated": calibrated, "scale": s}, make_lm(s)


def _perturbed_laws(kind, P, params, s) -> np.ndarray:
    """p_s on the contexts, ``(S, V)``, computed in float64 (ε down to 1e-3 needs more than float32)."""
    with jax.enable_x64(True):
        return np.asarray(jnp.exp(perturb_logprobs(kind, jnp.log(jnp.asarray(P)), s, params)), np.float64)


def padded_contexts(contexts) -> np.ndarray:
    """Every context s padded with 0s to length L + 1, ``(S, L + 1)`` int32: a causal model's row |s|
    reads x_<|s| = s only, so one batch answers for all contexts."""
    toks = np.zeros((len(contexts.prefixes), contexts.max_length + 1), np.int32)
    for i, s in enumerate(contexts.prefixes):
        toks[i, : len(s)] = s
    return toks


def context_softmax_lm(lm, contexts) -> SoftmaxContextLM:
    """A causal TransformerLM on the contexts, as the softmax LM it is: θ_s = ``lm.features`` at row
    |s| of s padded (:func:`padded_contexts`), Φ = ``lm.unembedding``; softmax(Φᵀθ_s) is the LM's
    next-word law after s."""
    f = np.asarray(lm.features(padded_contexts(contexts)), np.float64)
    return SoftmaxContextLM(f[np.arange(len(f)), contexts.lengths], np.asarray(lm.unembedding, np.float64))


def trained_lms(world, world_name, contexts, config: Config, run_root: Path, training: list):
    """Yield ``(labels, SoftmaxContextLM)`` per ladder rung reached by a causal transformer trained with
    the cross-entropy (``config.ce_targets``) and with the Quad objective (``config.quad_targets``), on
    sequences of length L + 1: the trainer's ε then averages over the contexts' lengths as p_L does."""
    L, V = contexts.max_length, world.n_symbols
    model = TransformerConfig(n_symbols=V, d_model=config.d_model, n_layers=1, n_heads=2, max_len=L + 1)
    for objective, targets in (("cross-entropy", config.ce_targets), ("quad", config.quad_targets)):
        if not targets:
            continue
        tc = TrainConfig(objective=objective, targets=tuple(targets), batch_size=64, seq_len=L + 1,
                         max_steps=config.max_steps, learning_rate=1e-2, warmup_steps=50, eval_every=25,
                         eval_sequences=512, checkpoint_every=config.max_steps)
        # one directory per (world, configs): a rerun resumes (or reuses) its run, a changed config starts anew
        tag = hashlib.sha1(json.dumps([world.fingerprint(), model.to_dict(), tc.to_dict()], sort_keys=True,
                                      default=str).encode()).hexdigest()[:10]
        result = train(world, model, tc, run_root / f"{world_name}-{objective}-{tag}", progress=False)
        name = "trained-ce" if objective == "cross-entropy" else "trained-quad"
        for r in result.records:
            training.append({"world": world_name, "lm": name, **dataclasses.asdict(r)})
            if r.reached:
                labels = {"lm": name, "family": "trained", "target_eps": r.target, "calibrated": "ladder",
                          "scale": float("nan"), "ladder_eps": r.epsilon, "step": r.step, "train_seed": r.seed}
                yield labels, context_softmax_lm(result.lm(r.target), contexts)


# ---- records ---------------------------------------------------------------------------------------

def check_rows(contexts, lm, task, labels: dict, tau_cache: dict | None = None) -> list[dict]:
    """Tidy rows of ``check_natural_task(contexts, lm, task)``: per bound, one at B* (the grid radius
    minimising it) and one at B_tau (the smallest radius with τ(B) ≤ min τ + TAU_TOL).  ``tau_cache`` is
    passed on, so the LM-free τ of a task is solved once over many LMs."""
    r = check_natural_task(contexts, lm, task, tau_cache=tau_cache)
    base = {**labels, "eps": r.eps, "eps_best": r.eps_best, "eps_phi": r.eps_phi, "eps_quad": r.eps_quad,
            "gamma": r.gamma, "gamma_phi": r.gamma_phi, "positive_rate": r.positive_rate}
    rows = []
    for b, choice in ((b, c) for b in r.bounds for c in B_CHOICES):
        i = b.index if choice == "B*" else int(np.flatnonzero(b.tau <= b.tau.min() + TAU_TOL)[0])
        w = b.worst(r.atol)  # where the bound comes nearest to failing: its verdict is at every radius
        tau, value = float(b.tau[i]), float(b.bound[i])
        slack = value - tau
        ea, eb = float(b.loss_natural[i]) - tau, float(b.loss_best[i]) - tau
        worst = np.maximum(b.loss_natural, b.loss_best) - b.bound
        used = (float(b.loss_natural[i]) - tau) / slack if r.atol < slack < math.inf else math.nan
        rows.append({**base, "bound": b.name, "features": b.features, "constraint": b.constraint,
                     "trivial": b.trivial, "trivial_best": b.trivial_best, "loss_ceiling": float(b.loss_ceiling[i]),
                     "loss_best_ceiling": float(b.loss_best_ceiling[i]),
                     "critical_eps": b.critical_eps, "slack_used": used,
                     "residual": float(b.residual[i]), "B_grid": [float(x) for x in b.B_grid],
                     "excess_grid": [float(x) for x in b.loss_natural - b.tau],
                     "eps_bound": b.eps, "gamma_bound": b.gamma, "B_choice": choice, "B": float(b.B_grid[i]),
                     "B_at_grid_min": i == 0, "tau": tau, "tau_gap": float(b.tau_gap[i]),
                     "bound_value": value, "slack": slack, "loss_natural": float(b.loss_natural[i]),
                     "loss_best": float(b.loss_best[i]), "loss_best_gap": float(b.loss_best_gap[i]),
                     "excess_natural": ea, "excess_best": eb,
                     "ratio_natural": ea / slack if slack > r.atol else math.nan,
                     "ratio_best": eb / slack if slack > r.atol else math.nan,
                     "error_natural": float(b.error_natural[i]), "error_best": float(b.error_best[i]),
                     "probe_loss": b.probe_loss, "probe_error": b.probe_error,
                     "max_overshoot": float(worst.max()), "holds": b.holds,
                     **{f"worst_{k}": v for k, v in w.items() if k != "residual"}})
    return rows


def log_partition_rows(world_name, contexts, task, phi_world, trained, config: Config) -> list[dict]:
    """The quadratic log-partition fit and the probes on f, Φp_f, p* (:func:`compare_probes`, task
    p_T = p_L) for θ = the cross-entropy fit under Φ of each embedding geometry and the world's own Φ,
    and for each trained transformer's (θ, Φ)."""
    V, P = contexts.next_token_probs.shape[1], contexts.next_token_probs
    sources = [(f"embeddings:{g}", random_embeddings(config.seed, config.dim, V, g), None) for g in GEOMETRIES]
    sources += [("world-Φ", phi_world, None)] + [(name, lm.phi, lm.theta) for name, lm in trained]
    rows = []
    for name, phi, theta in sources:
        phi = np.asarray(phi, np.float64)
        theta = fit_cross_entropy(P, phi).theta if theta is None else theta
        cmp = compare_probes(contexts, task, np.asarray(theta, np.float64), phi)
        fit = cmp.log_partition
        rows.append({"world": world_name, "source": name, "dim": phi.shape[0], "n_symbols": V,
                     "r2_logz": fit.r2_logz, "r2_mean": fit.r2_mean, "rms_logz": fit.rms_logz,
                     "rms_mean": fit.rms_mean, "determined": fit.determined, "determined_mean": fit.determined_mean,
                     "r2_logz_adjusted": fit.r2_logz_adjusted, "r2_mean_adjusted": fit.r2_mean_adjusted,
                     "dof_logz": fit.dof_logz, "dof_mean": fit.dof_mean,
                     **{f"probe_loss[{k}]": v for k, v in cmp.loss.items()},
                     **{f"probe_error[{k}]": v for k, v in cmp.error.items()}})
    return rows


def evaluate_world(world_name: str, world, config: Config, run_root: Path, *, analytic: bool = True,
                   trained: bool = True, log_partition: bool = True, log=print) -> dict:
    """One world of the sweep: ``{"rows", "log_partition", "training", "skipped"}`` for its analytic LMs
    (``analytic``) and/or its trained ones (``trained``, checkpoints under ``run_root``), on every task,
    and the log-partition rows (with the trained LMs' (θ, Φ) when ``trained``)."""
    started = time.perf_counter()
    phi = world_embeddings(world_name, world, config)
    C = enumerate_contexts(world, config.max_length)
    rows, lp, training, skipped = [], [], [], []
    lms = list(analytic_lms(world, C, phi, config, skipped)) if analytic else []
    nets = list(trained_lms(world, world_name, C, config, run_root, training)) if trained else []
    tasks = make_tasks(C, task_prompts(C, config.prompt_lengths), config)
    log(f"[{time.perf_counter() - started:7.1f} s] {world_name}: {len(C.prefixes)} contexts, "
        f"{len(lms) + len(nets)} LMs × {len(tasks)} tasks")
    tau_cache = {}  # τ depends on the task and Φ, not on the LM: solved once per world
    for task_labels, task in tasks:
        task_labels = {"world": world_name, **task_labels}
        generic = lms + nets if task_labels["task_kind"] in config.lm_tasks else []
        # each task's worst-case LMs are analytic: they belong to the analytic part
        adversaries = adversarial_lms(C, task, phi, config, skipped, tau_cache, task_labels,
                                      laws_only=task_labels["task_kind"] not in config.lm_tasks) if analytic else ()
        for labels, lm in generic + list(adversaries):
            rows += check_rows(C, lm, task, {**task_labels, **labels}, tau_cache)
    if log_partition:
        base_task = next(t for lab, t in tasks if lab["prompt"] is None)
        lp += log_partition_rows(world_name, C, base_task, phi,
                                 [(f"{lab['lm']}@{lab['target_eps']:g}", lm) for lab, lm in nets], config)
    return {"rows": rows, "log_partition": lp, "training": training, "skipped": skipped}


# ---- the experiment as a sweep check --------------------------------------------------------------

CHECK = "saunshi/natural-tasks-experiment"
#: the Config fields that only define the worlds (the sweep's ``[[worlds]]``); ``seed`` and ``dim`` are
#: both (the HMM's word embeddings are drawn from them) and every other field is an option of :data:`CHECK`.
WORLD_FIELDS = ("worlds", "n_symbols", "n_states", "hmm_states", "hmm_concentration")
#: experiment-row keys that are also tidy columns, renamed in the tidy rows (and back by :func:`result_of`).
RENAMED = {"lm": "lm_kind", "bound": "bound_name", "holds": "holds_every_B", "eps": "eps_contexts",
           "trivial": "trivial_every_B", "slack_used": "slack_used_at_B"}


def world_embeddings(world_name: str, world, config: Config) -> np.ndarray:
    """Φ ``(d, V)``: a log-linear world's own word embeddings; Gaussian ones for an HMM."""
    if isinstance(world, LogLinearWorld):
        return np.asarray(world.word_embeddings, np.float64)
    return random_embeddings(config.seed, config.dim, world.n_symbols)


def world_spec(name: str, config: Config) -> dict:
    """The sweep's ``[[worlds]]`` table of the world ``name`` (what :func:`make_world` builds)."""
    c = config
    if name == "hmm":
        return {"name": name, "kind": "hmm", "seed": c.seed,
                "options": {"n_states": c.hmm_states, "n_symbols": c.n_symbols,
                            "transition_concentration": c.hmm_concentration,
                            "emission_concentration": c.hmm_concentration}}
    return {"name": name, "kind": "loglinear", "seed": c.seed,
            "options": {"n_states": c.n_states, "n_symbols": c.n_symbols, "dim": c.dim,
                        "geometry": "unstructured" if name.endswith("unstructured") else "anchor"}}


def check_options(config: Config, *, train_lms: bool = True) -> dict:
    """The check's options of ``config`` (plain JSON values), and whether it trains transformers."""
    options = {k: v for k, v in dataclasses.asdict(config).items() if k not in WORLD_FIELDS}
    return {**jsonable(options), "train_lms": bool(train_lms)}


def sweep_config(config: Config = Config(), *, train_lms: bool = True) -> dict:
    """The sweep config (a dict, as TOML or JSON gives it) that IS this experiment under ``config``: its
    worlds, the oracle as the one LM source (the check builds the experiment's LMs — analytic families at
    exact ε on the contexts, the trained ladders — inside each world's cells) and :data:`CHECK`.  The
    shipped ``configs/natural_tasks.toml`` is this dict for the default Config."""
    return experiment_sweep("natural_tasks", [world_spec(w, config) for w in config.worlds], CHECK,
                            check_options(config, train_lms=train_lms))


def shipped_config() -> Path:
    """The path of the shipped sweep config."""
    return Path(__file__).parent / "configs" / "natural_tasks.toml"


def load_shipped() -> dict:
    """The shipped sweep config, as a dict."""
    return tomllib.loads(shipped_config().read_text(encoding="utf-8"))


def config_of(raw: dict) -> tuple[Config, bool]:
    """The :class:`Config` (and ``train_lms``) a sweep config of this experiment stands for."""
    options = dict(raw["checks"][CHECK])
    train_lms = options.pop("train_lms", True)
    fields = {"worlds": tuple(w["name"] for w in raw["worlds"])}
    for w in raw["worlds"]:
        o = w["options"]
        fields["n_symbols"] = o["n_symbols"]
        if w["kind"] == "hmm":
            fields.update(hmm_states=o["n_states"], hmm_concentration=o["transition_concentration"])
        else:
            fields["n_states"] = o["n_states"]
    return Config(**{**fields, **options}), train_lms


def _config(world, options: dict) -> Config:
    options = {k: v for k, v in options.items() if k != "train_lms"}
    return Config(**options, n_symbols=int(world.n_symbols))


def validate_options(options: dict) -> None:
    """Raise a ConfigError for bad options of the check (the Config they make is checked)."""
    if not isinstance(options.get("train_lms"), bool):
        raise ConfigError(f"checks.{CHECK}.train_lms: expected true or false, got {options.get('train_lms')!r}")
    Config(**{k: v for k, v in options.items() if k != "train_lms"})


def applies(world_spec, lm_spec) -> str:
    if world_spec.get("kind") not in ("hmm", "loglinear"):
        return "needs an HMM or a log-linear world"
    return "" if lm_spec["source"] == "oracle" else "builds its own LMs: runs in the oracle's cell only"


def parts(world_spec, lm_spec, options) -> list:
    return ["analytic", "trained"] if options["train_lms"] else ["analytic"]


#: the caveat of a log-partition row whose quadratic its θ's do not determine (report.md prints it beside the
#: R²): on the demo's log-linear world the contexts' θ sit in 4 tight clusters (one per hidden state), which 10
#: coefficients fit exactly, and R² read 1 like a quadratic log Z
UNDETERMINED = ("undetermined: the contexts' θ are too few or too alike to pin the quadratic down, "
                "so its R² is no evidence that log Z is quadratic")

#: a record's columns read at its own radius (B* or B_tau), renamed as the rows name them
_AT_RADIUS = {RENAMED.get(k, k) for k in (
    "B", "tau", "tau_gap", "bound_value", "slack", "loss_natural", "loss_best", "loss_best_gap", "excess_natural",
    "excess_best", "ratio_natural", "ratio_best", "error_natural", "error_best", "residual", "loss_ceiling",
    "loss_best_ceiling", "slack_used", "B_at_grid_min")}


def experiment_check(cell) -> list:
    """One part of the experiment on the cell's world — its analytic LMs, or its trained ladders with the
    log-partition fits — as tidy rows: per experiment row (LM, task, bound, choice of B) the losses of the
    transferred classifier (a) and of the best one in the ball (b) against the bound τ(B) + B√(2ε/γ)
    (``baseline`` τ: ``slack_used`` is the share of the slack used; ``trivial`` at that B: (a) once the bound
    reaches the largest loss any LM's laws can give the transferred classifier, +inf on Quad features; (b) once
    it reaches the largest (b) any LM can give, ≤ log 2, the all-zero classifier's loss: each row's
    ``loss_ceiling`` is its own), every experiment column beside them; and per bound a row ``<bound>:worst_B``
    at the radius of the grid where it comes nearest to failing (``TransferBound.worst_index``: the bound
    holds at every B, and rows at B* and B_tau alone would pass one that fails elsewhere)."""
    config, name = _config(cell.world, cell.options), cell.world_spec["name"]
    trains = cell.part == "trained"
    result = evaluate_world(name, cell.world, config, Path(cell.workdir), analytic=not trains, trained=trains,
                            log_partition=trains or not cell.options["train_lms"], log=lambda *a: None)
    rows = []
    for r in result["rows"]:
        lm = f"{r['lm']}@{r['target_eps']:g}"
        # a trained LM's seed is its training run's (the analytic LMs are drawn from config.seed)
        common = dict(lm=lm, lm_seed=r.get("train_seed", config.seed), eps=r["eps"], eps_se=0.0, baseline=r["tau"],
                      atol=ATOL,
                      **tidy_columns(r, RENAMED))
        quantity = f"{r['bound']}:{r['B_choice']}"
        rows.append(row(f"{quantity}:loss_natural", r["loss_natural"], r["bound_value"], maximum=r["loss_ceiling"],
                        **common))
        rows.append(row(f"{quantity}:loss_best", r["loss_best"], r["bound_value"], maximum=r["loss_best_ceiling"],
                        **{**common, "loss_ceiling": r["loss_best_ceiling"]}))
        if r["B_choice"] == "B*":  # once a bound: the radius of its grid where it comes nearest to failing; the
            # B* record's columns of one radius are left out (those of this one are the row's own)
            rest = {k: v for k, v in common.items() if k not in _AT_RADIUS}
            worst = row(f"{r['bound']}:worst_B", r["worst_loss"], r["worst_bound"], maximum=r["worst_ceiling"],
                        **{**rest, "baseline": r["worst_tau"], "B": r["worst_B"], "tau": r["worst_tau"],
                           "B_choice": "worst", "loss": r["worst_loss_name"], "loss_ceiling": r["worst_ceiling"]})
            # judged at every radius: trivial only if no LM could fail the bound at any (the record's own flag)
            rows.append({**worst, "trivial": bool(worst["trivial"] and r["trivial"])})
    for r in result["log_partition"]:
        caveat = None if r["determined"] else UNDETERMINED
        rows.append(row("log_partition:r2_logz", r["r2_logz"], lm=r["source"], caveat=caveat,
                        **tidy_columns(r, RENAMED)))
    for r in result["training"]:
        eps = math.nan if r.get("epsilon") is None else r["epsilon"]
        rows.append(row("training:epsilon", eps, lm=f"{r['lm']}@{r['target']:g}", lm_seed=r.get("seed"),
                        eps=r.get("epsilon"), eps_se=r.get("epsilon_se"),
                        **tidy_columns({k: v for k, v in r.items() if k != "path"}, RENAMED)))
    for r in result["skipped"]:
        rows.append(row("skipped", r["target_eps"], lm=f"{r['lm']}@{r['target_eps']:g}",
                        **tidy_columns(r, RENAMED)))
    return rows


def result_of(rows: list, config: Config) -> dict:
    """The experiment's result (``{"config", "rows", "log_partition", "training", "skipped", "violations"}``,
    as :func:`summary` and :func:`plot` read it) from the sweep's tidy rows."""
    out = {"config": dataclasses.asdict(config), "rows": [], "log_partition": [], "training": [], "skipped": []}
    for r in rows:
        if r.get("check") != CHECK:
            continue
        record = record_of(r, RENAMED)
        q = r["quantity"]
        if q.endswith(":loss_natural"):
            out["rows"].append(record)
        elif q.startswith("log_partition:"):
            out["log_partition"].append(record)
        elif q.startswith("training:"):
            out["training"].append(record)
        elif q == "skipped":
            out["skipped"].append(record)
    for part in ("rows", "log_partition"):
        out[part] = _numbers_again(out[part])
    out["violations"] = [r for r in out["rows"] if not r["holds"] and r["B_choice"] == "B*"]
    return out


#: columns that are never NaN, whose null in strict JSON is +inf: the ceilings of unbounded Quad features, a bound
#: (``_bound_value`` refuses NaN) that is +inf — γ = 0, or an LM at infinite KL — and its slack over τ
_INF_WHEN_NULL = ("loss_ceiling", "loss_best_ceiling", "worst_ceiling", "bound_value", "worst_bound", "slack")


def _numbers_again(records: list) -> list:
    """A store written before 2026-12-06 holds NaN and ±inf as null (strict JSON; the store now keeps them
    beside the rows, and they read back as floats): a null in a column that holds numbers elsewhere is NaN again
    (a ratio whose slack is 0), so the summaries' medians and plots read numbers — except the columns of
    :data:`_INF_WHEN_NULL`, which are never NaN: their null is +inf (read as NaN, the summary's median slack of a
    group with seven infinite bounds printed nan)."""
    numeric = {k for r in records for k, v in r.items() if isinstance(v, float)}
    return [{k: (math.inf if k in _INF_WHEN_NULL else math.nan) if v is None and k in numeric else v
             for k, v in r.items()} for r in records]


def run(config: Config = Config(), out=None, *, train_lms: bool = True, log=print, progress: bool = False,
        executor=None, after=None) -> dict:
    """The whole experiment — the sweep of :func:`sweep_config` into ``out`` (default a temporary
    directory; cells ``cells.jsonl``, tidy ``results.csv``, transformer checkpoints under ``work/``; a
    rerun resumes, a different config is refused) — as ``{"config", "rows", "log_partition", "training",
    "skipped", "violations", "errors", "new_cells", "time_s"}``.  ``after(result)``, if given, runs on that
    result before the sweep's lock is released (the command line writes its files there)."""
    from simlm.experiments.sweep import parse_config, run_sweep

    started = time.perf_counter()
    check_instance("config", config, Config, "a natural_tasks.Config")
    sweep = parse_config(sweep_config(config, train_lms=train_lms))  # checked before a directory is claimed
    out = Path(tempfile.mkdtemp(prefix="simlm-natural-") if out is None else out)
    done = {}

    def finish(swept):
        for e in swept["errors"]:
            log(f"ERROR in cell {e['cell']}: {e['error']}")
        done["result"] = {**result_of(swept["rows"], config), "errors": swept["errors"],
                          "new_cells": swept["new_cells"], "time_s": time.perf_counter() - started}
        if after is not None:
            after(done["result"])

    run_sweep(sweep, out, executor=executor, progress=progress, log=log, after=finish)
    return done["result"]


# ---- table, JSON, plots ----------------------------------------------------------------------------

def summary(result: dict) -> str:
    """Per (B choice, features, bound, LM family, trivial or not): rows, median slack and excess (a),
    median and max ratio excess/slack for (a) and (b), the largest (b)/bound, and violations; then the
    issue's targets (:func:`~simlm.experiments.natural_tasks_adversaries.targets`)."""
    head = f"{'B':5} {'features':8} {'bound':18} {'family':19} {'triv':4} {'rows':>5} {'slack':>8} {'excess(a)':>10} " \
           f"{'ratio(a) med':>12} {'max':>6} {'ratio(b) max':>12} {'(b)/bound':>9} {'viol':>4}"
    lines = [head, "-" * len(head)]
    group = lambda r: (r["B_choice"], r["features"], r["bound"], r["family"], "yes" if r["trivial"] else "no")
    keys = sorted({group(r) for r in result["rows"]}, key=lambda k: (B_CHOICES.index(k[0]), FEATURES.index(k[1]), *k[2:]))
    stat = lambda f, x: f(x) if np.isfinite(x).any() else math.nan
    for key in keys:
        g = [r for r in result["rows"] if group(r) == key]
        ra, rb = (np.array([r[k] for r in g], float) for k in ("ratio_natural", "ratio_best"))
        lines.append(f"{key[0]:5} {key[1]:8} {key[2]:18} {key[3]:19} {key[4]:4} {len(g):5d} {np.median([r['slack'] for r in g]):8.3g} "
                     f"{np.median([r['excess_natural'] for r in g]):10.3g} {stat(np.nanmedian, ra):12.3g} "
                     f"{stat(np.nanmax, ra):6.3g} {stat(np.nanmax, rb):12.3g} "
                     f"{stat(np.nanmax, np.array([r['loss_best'] / r['bound_value'] for r in g], float)):9.3g} "
                     f"{sum(not r['holds'] for r in g):4d}")
    star = [r for r in result["rows"] if r["B_choice"] == "B*"]
    lines.append(f"B* at the grid's smallest radius in {sum(r['B_at_grid_min'] for r in star)} of {len(star)} rows")
    lines.append(f"trivial (bound ≥ the largest (a) any LM can give, at every B: no LM could fail it): "
                 f"{sum(r['trivial'] for r in star)} of {len(star)} rows at B*; "
                 f"(b) alone (bound ≥ log 2 at every B): {sum(r['trivial_best'] for r in star)}")
    return "\n".join(lines + [format_targets(sweep_targets(result))])


COLOURS = {"logit-noise": "C0", "temperature": "C1", "uniform-mixture": "C2", "rare-words": "C3",
           "theta-noise": "C4", "quad-noise": "C5", "trained-ce": "k", "trained-quad": "C7",
           "adversarial-aligned": "C6", "adversarial-search": "C8", "adversarial-search-ws": "navy",
           "adversarial-softmax": "C9", "adversarial-quad": "m"}
BOUND_OF = {"p_f": "any-lm", "Φp_f": "softmax", "f": "quad"}
MARKERS = dict(zip(WORLDS, "o^s", strict=True))
FLOOR = 1e-9  # excess below this is zero up to the solvers' tolerance (or negative): not drawn on log axes


def _rows_for(result, feature, choice, task=None):
    return [r for r in result["rows"] if r["features"] == feature and r["bound"] == BOUND_OF[feature]
            and r["B_choice"] == choice and (task is None or r["task"] == task) and r["slack"] > 0]


def _representative(rows):
    """Per (world, LM): the rows at the target ε nearest 0.01 (geometrically)."""
    pick = {}
    for r in rows:
        key = (r["world"], r["lm"])
        if key not in pick or abs(math.log(r["target_eps"] / 0.01)) < abs(math.log(pick[key] / 0.01)):
            pick[key] = r["target_eps"]
    return [r for r in rows if pick[(r["world"], r["lm"])] == r["target_eps"]]


def _scatter(ax, rows, x_of, title, xlabel):
    """Filled: excess (a); open: slack; one colour per LM, one marker per world; log-log."""
    from matplotlib.ticker import NullFormatter

    groups = {}  # one scatter per (LM, world, trivial), not one per point
    for r in rows:  # trivial rows (bound ≥ the largest (a) any LM can give, at every B: no LM could fail them) faint
        key = (COLOURS[r["lm"].split("@")[0]], MARKERS[r["world"]], 0.15 if r["trivial"] else 1.0)
        groups.setdefault(key, []).append(r)
    for (c, m, a), rs in groups.items():
        ax.scatter([x_of(r) for r in rs], [r["slack"] for r in rs], s=14, marker=m, facecolors="none",
                   edgecolors=c, linewidths=0.7, alpha=a)
        filled = [r for r in rs if r["excess_natural"] > FLOOR]
        if filled:
            ax.scatter([x_of(r) for r in filled], [r["excess_natural"] for r in filled], s=14, marker=m, color=c,
                       alpha=a)
    hidden = sum(r["excess_natural"] <= FLOOR for r in rows)  # ≤ 0: no place on a log axis, but counted
    said = f"\n({hidden} of {len(rows)} with excess ≤ {FLOOR:g} not drawn)" if hidden else ""
    ax.set(xscale="log", yscale="log", title=title + said, xlabel=xlabel, ylabel="nats")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both", lw=0.3)


def _eps_panel(ax, result, f, choice):
    _scatter(ax, _rows_for(result, f, choice, "p_L"), lambda r: math.sqrt(r["eps_bound"]),
             f"{f} ({BOUND_OF[f]}) at {choice}, γ = 1", "√ε in the bound")


def _gamma_panel(ax, result, f, choice):
    _scatter(ax, _representative(_rows_for(result, f, choice)), lambda r: 1 / math.sqrt(r["gamma_bound"]),
             f"{f} at {choice}, ε target ≈ 0.01", "1/√γ")


def _ratio_panel(ax, result, choice):
    for i, f in enumerate(FEATURES):
        rs = [r for r in _rows_for(result, f, choice) if r["excess_natural"] > FLOOR]
        for triv, (alpha, label) in ((False, (0.6, f"{f} non-trivial")), (True, (0.12, f"{f} trivial"))):
            sel = [r for r in rs if r["trivial"] == triv]
            ax.scatter([math.sqrt(r["eps_bound"] / r["gamma_bound"]) for r in sel], [r["ratio_natural"] for r in sel],
                       s=8, color=f"C{i}", label=label, alpha=alpha, marker="o" if not triv else "x")
    ax.axhline(1, color="r", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="√(ε/γ)", ylabel="excess (a) / slack",
           title=f"share of the slack at {choice}")
    ax.legend(fontsize=7)


def _log_partition_panel(ax, result):
    lp = result["log_partition"]
    x = np.arange(len(lp))
    # an R² of a fit that interpolates is NaN (it says nothing): no bar, and the tick says "n/a"
    shown = lambda v: np.nan if v is None or not np.isfinite(v) else max(v, -0.1)  # noqa: E731
    ax.bar(x - 0.2, [shown(r["r2_logz"]) for r in lp], 0.4, label="R² log Z")
    ax.bar(x + 0.2, [shown(r["r2_mean"]) for r in lp], 0.4, label="R² Φp_θ")
    mark = lambda r: ("" if r["determined"] and r.get("determined_mean", True) else "*") + (  # noqa: E731
        " n/a" if not all(np.isfinite(shown(r[k])) for k in ("r2_logz", "r2_mean")) else "")
    ax.set_xticks(x, [f"{r['world'][:6]}:{r['source'].replace('embeddings:', '')}{mark(r)}" for r in lp],
                  rotation=75, fontsize=6)
    # the limit 0.5 as before where every R² ≥ 0.55 (both bars: a log Z R² of 0.3 was drawn below the axis)
    low = np.nanmin([shown(r[k]) for r in lp for k in ("r2_logz", "r2_mean")] + [0.55])
    ax.set(ylim=(min(0.5, low - 0.05), 1.01),
           title="quadratic log-partition fit (* coefficients undetermined; n/a: it interpolates)")
    ax.legend(fontsize=7, loc="lower left")


def _legend(fig, result):
    import matplotlib.pyplot as plt

    lms = sorted({r["lm"].split("@")[0] for r in result["rows"]}, key=list(COLOURS).index)
    handles = [plt.Line2D([], [], ls="", marker="o", color=COLOURS[k], label=k) for k in lms]
    handles += [plt.Line2D([], [], ls="", marker=MARKERS[w], color="grey", label=w)
                for w in dict.fromkeys(r["world"] for r in result["rows"])]
    handles += [plt.Line2D([], [], ls="", marker="o", color="grey", label="measured excess (a) − τ"),
                plt.Line2D([], [], ls="", marker="o", mfc="none", color="grey", label="slack B√(2ε/γ)"),
                plt.Line2D([], [], ls="", marker="o", color="grey", alpha=0.15, label="faint: trivial row")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8)


def plot(result: dict, out_dir: Path) -> list[Path]:
    """Write eps.png, gamma.png (a row per B choice), ratio.png, log_partition.png and the summary
    natural_tasks.png (excess and slack vs √ε at B* and at B_tau, vs 1/√γ at B*, ratios, R²)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "eps": (2, 3, lambda ax: [_eps_panel(ax[i, j], result, f, c) for i, c in enumerate(B_CHOICES)
                                  for j, f in enumerate(FEATURES)]),
        "gamma": (2, 3, lambda ax: [_gamma_panel(ax[i, j], result, f, c) for i, c in enumerate(B_CHOICES)
                                    for j, f in enumerate(FEATURES)]),
        "ratio": (1, 2, lambda ax: [_ratio_panel(ax[0, i], result, c) for i, c in enumerate(B_CHOICES)]),
        "log_partition": (1, 1, lambda ax: _log_partition_panel(ax[0, 0], result)),
    }
    paths = []
    for name, (n, m, draw) in figures.items():
        fig, axes = plt.subplots(n, m, figsize=(4.5 * m, 4.0 * n + (0.6 if m == 3 else 0)), squeeze=False)
        draw(axes)
        if m == 3:
            _legend(fig, result)
        fig.tight_layout(rect=(0, 0.07 if m == 3 else 0, 1, 1))
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(3, 4, figsize=(19, 13.5))
    for j, f in enumerate(FEATURES):
        _eps_panel(axes[0, j], result, f, "B*")
        _eps_panel(axes[1, j], result, f, "B_tau")
        _gamma_panel(axes[2, j], result, f, "B*")
    _ratio_panel(axes[0, 3], result, "B*")
    _ratio_panel(axes[1, 3], result, "B_tau")
    _log_partition_panel(axes[2, 3], result)
    _legend(fig, result)
    star = [r for r in result["rows"] if r["B_choice"] == "B*"]
    shown = [r for r in star if r["bound"] == BOUND_OF[r["features"]]]  # the bounds the panels draw
    fig.suptitle("Natural tasks (Saunshi, Malladi & Arora 2021): measured excess loss vs the bound's slack; "
                 f"{sum(not r['holds'] for r in shown)} violations in the {len(shown)} bounds drawn "
                 f"({sum(r['trivial'] for r in shown)} trivial: faint); all {len(star)} bounds at B*: "
                 f"{len(result['violations'])} violations", fontsize=13)
    fig.tight_layout(rect=(0, 0.04, 1, 0.98))
    paths.append(out_dir / "natural_tasks.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


#: config fields set by a flag, as the flag (errors name the flag the user typed).
FLAGS = {"eps_grid": "--eps", "worlds": "--worlds", "noises": "--noise", "max_steps": "--max-steps", "out": "--out",
         "figure": "--figure", "workers": "--workers", "executor": "--executor", "address": "--address"}


def command(argv=None) -> dict:
    """The command line: parse ``argv``, validate every option and the output paths, run the sweep, write
    results.json and the PNGs, print the summary; return the result.  Bad input raises
    :class:`~simlm.errors.SimlmError` before anything is computed (:func:`main` prints it as one line)."""
    p = Parser(prog="python -m simlm.experiments.natural_tasks", description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny sweep (one world, S = 21 contexts), well under 60 s")
    p.add_argument("--out", type=directory, default=None,
                   help="results directory: the sweep's files, results.json and the PNGs "
                   "(default runs/natural_tasks[_quick])")
    p.add_argument("--figure", default=None, help="also copy the summary figure here (e.g. docs/natural_tasks.png)")
    p.add_argument("--worlds", nargs="+", choices=WORLDS, default=None)
    p.add_argument("--eps", nargs="+", type=float, default=None, help="the analytic ε targets (nats, > 0)")
    p.add_argument("--noise", nargs="+", choices=NOISES, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="training budget per objective")
    p.add_argument("--no-train", action="store_true", help="analytic LMs only")
    add_run_options(p)
    args = p.parse_args(argv)
    shipped, train_lms = config_of(load_shipped())
    config = QUICK if args.quick else shipped
    overrides = {"worlds": args.worlds, "eps_grid": args.eps, "noises": args.noise, "max_steps": args.max_steps}
    config = dataclasses.replace(config, **{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in overrides.items() if v is not None})
    check_run_options(args)  # these two before the results directory is made (neither makes anything)
    figure = figure_path(args.figure)
    out = results_dir(args.out or ("runs/natural_tasks_quick" if args.quick else "runs/natural_tasks"))
    print(f"natural tasks → {out}  (the sweep of {shipped_config().name}"
          f"{' with --quick/flag overrides' if config != shipped or args.no_train else ''})")
    executor = executor_of(args)
    paths = []

    def write(result):  # under the sweep's lock: a later run's files cannot be overwritten by these
        write_json_atomic(out / "results.json", jsonable(result))
        try:
            paths.extend(plot(result, out) if result["rows"] else [])  # every cell failed: nothing to draw
        except ImportError as e:  # matplotlib is the optional extra "plots"
            print(f"no plots: {e} (pip install -e '.[plots]')")
        if figure is not None and paths:
            figure.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "natural_tasks.png", figure)

    result = run(config, out, train_lms=train_lms and not args.no_train, progress=not args.quiet, executor=executor,
                 after=write)  # run() has printed the failed cells
    print(summary(result))
    for s in result["skipped"]:
        print(f"skipped {s['lm']} at ε = {s['target_eps']:g}: {s['why']}")
    n_checked = sum(r["B_choice"] == "B*" for r in result["rows"])
    print(f"violations: {len(result['violations'])} of {n_checked} bounds checked ((a) and (b) ≤ bound at every B)")
    for r in result["violations"]:
        print(f"  VIOLATION {r['bound']} world={r['world']} lm={r['lm']} target ε={r['target_eps']:g} task={r['task']} "
              f"noise={r['noise']}: max (a|b) − bound = {r['max_overshoot']:.3g}")
    print(f"wrote {', '.join(str(q) for q in [out / 'results.json', *paths])}")
    print(f"time: {result['time_s']:.1f} s")
    return result


def main(argv=None) -> int:
    """Exit status of the command line: 0, or 2 with one line on stderr naming the flag at fault."""
    return run_main("python -m simlm.experiments.natural_tasks", command, argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
