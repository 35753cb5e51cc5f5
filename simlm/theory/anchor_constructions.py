"""LMs for the anchor-vector checks of :mod:`simlm.theory.anchors`, exact and without training: the
analytic families of :mod:`simlm.models.perturbed` on a world's rows, and the negative constructions N1
and N2 of Wu, Lee & Ge (NeurIPS 2023) — a low (here zero or ~1e-9) ε that does not transfer.

- **N1** (derived): append a coordinate t(x) = ±``height`` to f* (+ on a π-half H₊ of the states) and a
  1 to every embedding.  Every logit moves by the same t(x), so p is unchanged: the augmented world
  f̃* = (f*, t) has exactly the law of the world, and the latent task y = 1[t(x) > 0] is linear in f̃*
  with margin ``height``.  The LM that drops t (f = (f*, 0)) has ε = 0 and the same laws, but nothing
  in its representation carries the task: the readout ⟨e, f⟩ is constant (error = min(π(H₊), π(H₋)) …
  max) and a probe on f* sees labels independent of it.
- **N2** (derived): a contrast task over two rare carrier words c₁, c₂ (p* ≈ e^{−M}), score* =
  ⟨v_c₁ − v_c₂, f*⟩.  The LM moves only the carriers' logits, by ∓(score*(x) + bias + 1)/2, so its
  carrier contrast is the constant −bias − 1: the anchored head predicts one class everywhere (error ≈ ½), while ε ≤
  (p*(c₁|x) + p*(c₂|x))·O(δ²) is of order e^{−M}.  The *control* moves two frequent words by the same
  δ(x) and pays ε of order p*(w)·δ².
"""

from __future__ import annotations

import dataclasses

import numpy as np

from simlm.checks import as_rng, check_positive
from simlm.errors import ConfigError
from simlm.models.perturbed import epsilon_of_scale, max_scale, perturb_logprobs, perturbation_params, solve_scale
from simlm.theory.anchor_bound import context_divergences
from simlm.theory.anchors import (AnchorContexts, AnchorFit, anchor_fit, half_index, head_errors, log_softmax,
                                  probe_error, word_task)


def exact_epsilon_rows(ctx: AnchorContexts, logp_lm) -> float:
    """ε = Σ_x π_x KL(p*(·|x) ‖ p(·|x)), float64, nats."""
    return float(ctx.weights @ context_divergences(ctx.logp, logp_lm)[0])


def analytic_laws(ctx: AnchorContexts, kind: str, eps: float, seed: int = 0) -> np.ndarray:
    """log p_s ``(n, V)`` of the analytic family ``kind`` (:mod:`simlm.models.perturbed`) on the rows, its
    scale solved so that Σ π_x KL(p* ‖ p_s) = ``eps`` (the family's float32 ε, within 1e-4 relative)."""
    eps = check_positive("eps", eps)
    logp = np.asarray(ctx.logp, np.float32)
    params = perturbation_params(kind, logp.shape[1], seed, logp)
    # rows padded to a power of two (≥ 8) with weight 0: ε(s) is compiled once per (2^k, V), not per world
    n = len(logp)
    pad = max(8, 1 << max(n - 1, 0).bit_length()) - n
    padded, weights = np.concatenate([logp, np.repeat(logp[:1], pad, 0)]), np.concatenate([ctx.weights, np.zeros(pad)])
    s = solve_scale(lambda s: epsilon_of_scale(kind, padded, s, params, weights), eps, max_scale(kind),
                    start=1.0 if kind == "uniform-mixture" else 1e-2, rtol=1e-4, resolution=1e-7,
                    what=f"kind {kind!r} on these contexts")
    return log_softmax(np.asarray(perturb_logprobs(kind, padded, s, params), np.float64)[:n])


def lm_residual(ctx: AnchorContexts, bulk, logp_lm) -> np.ndarray:
    """The anchor residual of an LM known only by its laws, read in the world's representation space:
    logits ⟨v*_w, f*(x)⟩ + log p(w|x) − log p*(w|x) (so log Z_B = log Z* + log p(B|x)), features f*."""
    return anchor_fit(ctx.logits + np.asarray(logp_lm) - ctx.logp, ctx.features, bulk, ctx.weights).residual


def _half(ctx: AnchorContexts, rng) -> np.ndarray:
    """A random set of states H₊ holding half of π (the first states of a random order up to mass ½)."""
    states = np.unique(ctx.states)
    mass = np.array([ctx.weights[ctx.states == h].sum() for h in states])
    order = rng.permutation(len(states))
    return states[order[: half_index(np.cumsum(mass[order])) + 1]]


@dataclasses.dataclass(frozen=True, eq=False)
class Construction:
    """A negative construction: ``eps`` (exact, float64), ``head_error`` (the zero-shot readout of the
    task from the LM), ``probe_error`` (a probe on the LM's representation), ``world_head_error`` (the
    same readout on the world: 0), ``control_eps`` (N2: the same change on frequent words), and the
    arrays: ``logp_lm``, ``labels``, ``features_lm``."""

    name: str
    eps: float
    head_error: float
    probe_error: float
    world_head_error: float
    control_eps: float | None
    logp_lm: np.ndarray
    labels: np.ndarray
    features_lm: np.ndarray


def n1_construction(ctx: AnchorContexts, seed=0, *, height: float = 1.0, n_label: int = 64) -> Construction:
    """N1 (module docstring): the task coordinate t removed from f, p unchanged (ε = 0 exactly)."""
    rng = as_rng(seed)
    height = check_positive("height", height)
    t = np.where(np.isin(ctx.states, _half(ctx, rng)), height, -height)
    f_world = np.hstack([ctx.features, t[:, None]])
    E = np.vstack([ctx.embeddings, np.ones((1, ctx.embeddings.shape[1]))])
    f_lm = np.hstack([ctx.features, np.zeros((len(t), 1))])
    logp_lm = log_softmax(f_lm @ E)
    labels = t > 0
    e = np.zeros(E.shape[0])
    e[-1] = 1.0
    err = lambda f: float(ctx.weights @ ((f @ e >= 0) != labels))
    # the augmented world's law is the world's: every logit moved by the same t(x)
    assert np.allclose(log_softmax(f_world @ E), ctx.logp, atol=1e-9)
    return Construction("N1", exact_epsilon_rows(ctx, logp_lm), err(f_lm),
                        probe_error(f_lm[:, :-1], labels, ctx.weights, n_label=n_label, seed=seed),
                        err(f_world), None, logp_lm, labels, f_lm)


def n2_construction(ctx: AnchorContexts, fit: AnchorFit, bulk, carriers, *, n_label: int = 64,
                    seed=0) -> Construction:
    """N2 (module docstring) over the first two ``carriers``; ``control_eps`` moves the two most frequent
    words by the same δ(x)."""
    ids = np.asarray(carriers).reshape(-1)
    if ids.size < 2:
        raise ConfigError(f"carriers: N2 needs two rare carrier words, got {carriers!r} "
                          "(LogLinearWorld.random(..., n_carriers=2))")
    task = word_task(ctx, fit, ids[:2], [1.0, -1.0], "rare-carrier")
    delta = (task.score + task.bias + 1) / 2  # the LM's carrier contrast becomes −bias − 1: its head says 0

    def moved(words):
        z = ctx.logits.copy()
        z[:, words[0]] -= delta
        z[:, words[1]] += delta
        return log_softmax(z)

    logp_lm = moved(ids[:2])
    frequent = np.argsort(-(ctx.weights @ np.exp(ctx.logp)))[:2]
    res_star = fit.residual  # Σc = 0: the anchor part vanishes, any residual will do
    head = head_errors(task, ctx, bulk, logp_lm, res_star, res_star)
    world = head_errors(task, ctx, bulk, ctx.logp, res_star, res_star)
    return Construction("N2", exact_epsilon_rows(ctx, logp_lm), head.error,
                        probe_error(logp_lm, task.labels, ctx.weights, n_label=n_label, seed=seed), world.error,
                        exact_epsilon_rows(ctx, moved(frequent)), logp_lm, task.labels, logp_lm)


__all__ = ["exact_epsilon_rows", "analytic_laws", "lm_residual", "Construction", "n1_construction", "n2_construction"]
