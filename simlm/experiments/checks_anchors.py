"""The sweep check ``wu/anchors``: Wu, Lee & Ge (NeurIPS 2023), anchor vectors in log-linear worlds
(:mod:`simlm.theory.anchors`).  Registered on import; :mod:`simlm.experiments.checks` imports it."""

from __future__ import annotations

import math

import numpy as np

from simlm.errors import ConfigError
from simlm.experiments.registry import EPS_ROUNDING, option_ranges, register, row
from simlm.models import CausalTransformerLM, SoftmaxLanguageModel
from simlm.theory.anchor_bound import transfer_bound
from simlm.theory.anchor_constructions import lm_residual, reachable_error, worst_case_lm
from simlm.theory.anchors import (anchor_contexts, anchor_fit, bulk_mask, head_errors, log_softmax, probe_error,
                                  random_tasks, readout_error, readout_radii, world_anchor_fit)

PAPER = "Wu, Lee & Ge (NeurIPS 2023)"


def _applies(world_spec, lm_spec) -> str:
    if world_spec.get("kind") != "loglinear":
        return "needs a log-linear world"
    return "" if "next-token" in lm_spec.get("laws", ("next-token",)) else "needs the next-token law"


def _fit_rows(prefix: str, fit, **extra) -> list:
    return [row(f"{prefix}anchor_r2", fit.r2, **extra), row(f"{prefix}anchor_mse", fit.mse, **extra),
            row(f"{prefix}anchor_max_residual", fit.max_residual, **extra),
            row(f"{prefix}anchor_constant_mse", fit.constant_mse, **extra)]


def block_fits(lm, tokens, bulk, weights) -> list:
    """The anchor fit of each block of a causal transformer read through its output layer: features
    LayerNorm_final(h_ℓ), logits LayerNorm_final(h_ℓ) Φ, for the embeddings (ℓ = 0) and every block."""
    model, phi = lm.model, np.asarray(lm.unembedding, np.float64)
    fits = []
    for h in lm.hidden_states(tokens):
        f = np.asarray(model.final_norm(h), np.float64).reshape(-1, phi.shape[0])
        fits.append(anchor_fit(f @ phi, f, bulk, weights))
    return fits


def _fits_world(options: dict, world_spec: dict, world) -> None:
    """top_k < V and n_words ≤ V for each log-linear world (the bulk keeps a word, the tasks have their words)."""
    if world_spec.get("kind") != "loglinear":
        return
    V = int(world.n_symbols)
    for key, most in (("top_k", V - 1), ("n_words", V)):
        if options[key] > most:
            raise ConfigError(f"checks.wu/anchors.{key}: expected at most {most} for world {world_spec['name']!r} "
                              f"(V = {V}), got {options[key]!r}")


@register("wu/anchors", paper=PAPER, applies=_applies, validate_world=_fits_world,
          defaults={"top_k": 2, "n_words": 2, "task_seed": 0, "n_label": 64, "adversary": "flips"},
          validate=option_ranges("wu/anchors", {"top_k": 0, "n_words": 2, "task_seed": 0, "n_label": 2},
                                 {"adversary": ("flips", "none")}),
          description="anchor fit of log Z_B, anchored/contrast/rare/latent tasks, O(√ε) transfer bound")
def anchors_check(cell) -> list:
    """On every position of the cell's tokens (uniform weights): the LM's anchor fit (its own f and Φ for a
    softmax LM, each transformer block too; else its laws read in the world's space), then for the
    anchored, contrast and rare-carrier tasks the zero-shot anchored head's error against the transfer
    bound in both forms (``markov``: O(√ε) from ε alone; ``per-context``: from the TV of each context),
    whose largest possible error is 1 (its head reads the LM's residual too), and a probe's error; for the
    latent task the world's readout moved to the LM and a probe.  Bayes error is 0 for every task (labels
    are functions of the context).

    With ``adversary`` "flips" ("none": off), the worst LM at this LM's ε on the rows is checked too
    (:func:`~simlm.theory.anchor_constructions.worst_case_lm`: the cheapest flips of the head's contexts
    within ε, ρ = 0), as rows ``worst-case:<task>:head_error[@per-context]`` whose LM is that one (``lm`` =
    ``adversarial-flips@<ε>``): how much of each form's slack an LM at the same ε can use.  They are trivial
    where the bound reaches ``reachable``, the largest error any LM of ρ = 0 has
    (:func:`~simlm.theory.anchor_constructions.reachable_error`: some contexts no law flips); ``budget`` is
    the cell LM's ε and ``saturated`` whether the worst LM flipped all it can below it (then it is the same
    LM, and the same rows, at every larger budget)."""
    o, world, tokens = cell.options, cell.world, np.asarray(cell.tokens)
    ctx = anchor_contexts(world, tokens)
    bulk = bulk_mask(ctx.logp, top_k=int(o["top_k"]))
    fit = world_anchor_fit(ctx, bulk)
    V = ctx.logp.shape[1]
    if cell.is_oracle:
        # the oracle's laws are the world's, exactly: its float32 next_token_logprobs would give it an ε of
        # ~1e-14, and a bound whose γ is ~1e-10 (the rare-carrier task) would read 1 ("trivial") for the LM
        # whose bound is 0
        logp_lm = ctx.logp
    else:
        logp_lm = log_softmax(np.asarray(cell.lm.next_token_logprobs(tokens), np.float64).reshape(-1, V))
    rows = []
    if isinstance(cell.lm, SoftmaxLanguageModel):
        f = np.asarray(cell.lm.features(tokens), np.float64).reshape(len(ctx.weights), -1)
        lm_fit = anchor_fit(f @ np.asarray(cell.lm.unembedding, np.float64), f, bulk, ctx.weights)
        residual, probe_features = lm_fit.residual, f
        rows += _fit_rows("", lm_fit, world_r2=fit.r2, world_mse=fit.mse, reading="own")
    else:
        residual = lm_residual(ctx, bulk, logp_lm)
        probe_features = logp_lm - logp_lm.mean(1, keepdims=True)
        rows += _fit_rows("", anchor_fit(ctx.logits + logp_lm - ctx.logp, ctx.features, bulk, ctx.weights),
                          world_r2=fit.r2, world_mse=fit.mse, reading="world-space")
    if isinstance(cell.lm, CausalTransformerLM):
        for i, b in enumerate(block_fits(cell.lm, tokens, bulk, ctx.weights)):
            rows += _fit_rows(f"block{i}:", b)
    tasks = random_tasks(ctx, fit, int(o["task_seed"]), n_words=int(o["n_words"]),
                         rare_words=world.carrier_ids if len(world.carrier_ids) >= 2 else None)
    n_label, seed = int(o["n_label"]), int(o["task_seed"])
    for name, task in tasks.items():
        probe = probe_error(probe_features, task.labels, ctx.weights, n_label=n_label, seed=seed)
        rows.append(row(f"{name}:probe_error", probe, bayes_error=0.0))
        if task.words is None:
            # the world's own readout errs where u* is not readable linearly from log p* (V − 1 < d).  How far
            # the LM's laws moved against how far they could before a label changes (readout_radii): in the demo's
            # log-linear world the contexts nearest their flip (0.125, weight 0.75) move 0.23–0.25 under logit
            # noise at ε = 0.01 (at_risk 0.75), and 27/64 of the positions flip — the same ones at every larger ε
            radii = readout_radii(task, ctx, logp_lm)
            rows.append(row(f"{name}:readout_error", readout_error(task, ctx, logp_lm), bayes_error=0.0,
                            world_error=readout_error(task, ctx, ctx.logp), readout_margin=radii.margin,
                            lm_shift=float(radii.shift[ctx.weights > 0].max()), at_risk=radii.at_risk))
            continue
        h = head_errors(task, ctx, bulk, logp_lm, residual, fit.residual)
        for form in ("markov", "per-context"):
            b = transfer_bound(task, ctx, bulk, logp_lm, form=form, residual_lm=residual, residual_star=fit.residual)
            suffix = "" if form == "markov" else "@per-context"
            rows.append(row(f"{name}:head_error{suffix}", h.error, b.bound, maximum=1.0, form=form,
                            probability_error=h.probability_error, anchor_error=h.anchor_error,
                            zero_shot_error=h.zero_shot_error, gamma=b.gamma, m=b.m, rho=b.rho, c1=b.c1,
                            csum=b.csum, eps_rows=b.eps, bayes_error=0.0))
        eps = b.eps  # this LM's ε on the rows (an ε of float rounding, the oracle's 0, gets no adversary)
        if o.get("adversary", "flips") == "flips" and EPS_ROUNDING < eps < math.inf:
            worst = worst_case_lm(task, ctx, bulk, eps)
            # the largest error an LM of ρ = 0 has (contexts beyond any law's reach stay right): a bound at or above
            # it cannot fail, though below 1 (a review, 2026-12-07: the demo's anchored task, 85 % reachable)
            reachable = reachable_error(task, ctx, bulk)
            saturated = worst.eps < eps * (1 - 1e-9)  # all it can flip flipped: the same LM at every larger budget
            for form, wb in worst.bounds.items():
                suffix = "" if form == "markov" else "@per-context"
                rows.append(row(f"worst-case:{name}:head_error{suffix}", worst.error, wb.bound, maximum=reachable,
                                reachable=reachable, budget=eps, saturated=saturated, form=form,
                                lm=f"adversarial-flips@{worst.eps:.6g}", eps=worst.eps, gamma=wb.gamma, m=wb.m,
                                rho=wb.rho, eps_rows=wb.eps, flipped_mass=float(ctx.weights @ worst.flipped),
                                bayes_error=0.0))
    return rows


__all__ = ["anchors_check", "block_fits", "PAPER"]
