"""The sweep check ``tzach/token-accuracy`` — Tzach et al. (2025), accuracy per token on an HMM world.

On the cell's held-out tokens (the first ``max_sequences``, default 32), every position is masked in turn (one MASK, the rest visible: the masked law
every masked LM of the sweep defines) and the LM's argmax is scored against the true token, beside the exact
Bayes predictor argmax P(x_t | x_−t) on the same positions (:mod:`simlm.theory.token_accuracy`).  Rows:

- ``mean_apt``, ``accuracy`` (type-averaged and occurrence-weighted APT), ``bayes_mean_apt``,
  ``bayes_accuracy``, ``apt_frequency_spearman`` (the paper's "APT grows with frequency", for the LM and
  for Bayes, each with its two-sided p-value), ``n_predicted`` (distinct outputs), ``kl_epsilon`` (mean KL
  to the Bayes law);
- ``expected_accuracy`` ≤ ``bayes_expected_accuracy``: the Rao–Blackwell expected accuracy Σ_t p*(pred_t |
  x_−t) / N of the LM's predictions against E max_v p*(v | x_−t).  It holds pointwise for every predictor,
  so the row is flagged trivial (no LM can violate it); its ``slack_used`` — with the token-and-position-free
  baseline, the accuracy of always predicting the most frequent token — is the share of the Bayes gap the
  LM closes, the number that carries information.
"""

from __future__ import annotations

import numpy as np

from simlm.checks import check_positive_int
from simlm.experiments.registry import option_ranges, register, row
from simlm.metrics.epsilon import check_laws
from simlm.theory.corrupted_channel import chain_law64
from simlm.theory.token_accuracy import TIE_RTOL, apt_by_frequency, argmax_split, token_accuracy
from simlm.worlds.hmm import masked_token_probs


def _applies(world_spec, lm_spec) -> str:
    if world_spec.get("kind") not in ("hmm", "planted-hmm"):
        return "needs an HMM world"
    if "masked" not in lm_spec.get("laws", ("masked",)):
        return "needs the masked law, which this LM does not define"
    return ""


@register("tzach/token-accuracy", paper="Tzach et al. (2025)", applies=_applies, defaults={"max_sequences": 32},
          validate=option_ranges("tzach/token-accuracy", {"max_sequences": 2}),
          description="accuracy per token (APT) of the masked LM vs the Bayes predictor; expected accuracy ≤ Bayes")
def token_accuracy_check(cell) -> list:
    world = cell.world
    x = np.asarray(cell.tokens)[: check_positive_int("max_sequences", cell.options["max_sequences"], minimum=2)]
    bayes = chain_law64(masked_token_probs, world, x)  # float64: ties of the exact law scored as ties
    raw = cell.lm.masked_token_logprobs(x)
    # named as the LM's output here: token_accuracy read a wrong V as a bad ``bayes``, a wrong T as bad ``tokens``
    # and NaN as bad ``probs`` (a review, 2026-12-07); only validated, the float64 copy below is what is scored
    check_laws("lm: masked_token_logprobs", raw, shape=bayes.shape)
    log_probs = np.asarray(raw, np.float64)
    probs, every = np.exp(log_probs), np.ones(x.shape, bool)
    lm = token_accuracy(probs, x, every, bayes, log_probs=log_probs)  # the KL from the logs: exact where p underflows
    opt = token_accuracy(bayes, x, every, bayes, tie_rtol=TIE_RTOL)
    freq = np.bincount(x.ravel(), minlength=int(world.n_symbols)) / x.size
    rho_lm, rho_b = apt_by_frequency(lm, freq, 1), apt_by_frequency(opt, freq, 1)
    pred, tied, share = argmax_split(probs.reshape(-1, probs.shape[-1]))  # an exact tie split evenly
    law = bayes.reshape(len(pred), -1)
    best = law.max(-1)
    right = law[np.arange(len(pred)), pred]
    # a tie's even split averages p* over the tied tokens, ≤ their largest: in floats Σ (1/k)·m over k ≥ 5 equal m
    # could round one ulp above m, and the oracle failed the row that no LM can fail (a review, 2026-12-06)
    right[tied] = np.minimum((share * law[tied]).sum(-1), best[tied])
    expected = float(right.mean())
    ceiling = float(best.mean())  # the same shape and order of summation as ``expected``: ≥ it in floats too
    # always the most frequent token: where several are, one of them at random (the even split of a tie)
    baseline = float(bayes[..., np.flatnonzero(freq == freq.max())].mean())
    rows = [row("mean_apt", lm.mean_apt, mean_apt_se=lm.mean_apt_se),
            row("accuracy", lm.accuracy, accuracy_se=lm.accuracy_se),
            row("bayes_mean_apt", opt.mean_apt), row("bayes_accuracy", opt.accuracy)]
    if np.isfinite(rho_lm.spearman):  # undefined (no row, rather than a NaN) when every occurring type has one APT
        defined = np.isfinite(rho_b.spearman)
        rows.append(row("apt_frequency_spearman", rho_lm.spearman, p_value=rho_lm.spearman_p,
                        bayes_spearman=rho_b.spearman if defined else None,
                        bayes_p_value=rho_b.spearman_p if defined else None))
    return rows + [
            row("n_predicted", lm.n_predicted, bayes_n_predicted=opt.n_predicted),
            row("kl_epsilon", lm.epsilon),
            row("expected_accuracy", expected, ceiling, maximum=ceiling, baseline=baseline)]


__all__ = ["token_accuracy_check"]


def _register_experiment() -> None:
    """The experiment of :mod:`simlm.experiments.token_accuracy` as a check: its planted worlds, one cell per
    part, its own LMs trained and read out in the oracle's cell."""
    from simlm.experiments import token_accuracy as ta

    register(ta.CHECK, paper="Tzach et al. (2025)", applies=ta.applies, parts=ta.parts,
             validate=ta.validate_options, defaults=ta.check_options(ta.Config()),
             description="the paper's experiment on planted-class worlds: Bayes APT and clusters, a masked "
                         "transformer's ladder read out per block, fine-tuning, the substitution test")(
        ta.experiment_check)


_register_experiment()
