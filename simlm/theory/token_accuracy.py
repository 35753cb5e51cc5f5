"""Accuracy per token (APT), confusion clusters and the order parameter ⟨APT⟩ — Tzach et al. (2025).

"Learning Mechanism Underlying NLP Pre-Training and Fine-Tuning" (arXiv 2509.03407) reads a masked LM
through the accuracy of its masked-token predictions *per token type*.  The paper (as stated in its
abstract and summaries; the full text was not available) defines

    APT(w) = P(prediction = w | true token = w, position selected)               (paper)
    ⟨APT⟩  = the average of APT over token types                                  (paper: the order parameter)

and the token confusion matrix M[i, j] = #{masked token i predicted as j}; rows whose diagonal is not their
maximum are dropped, each kept row is divided by its diagonal, and "strong-match clusters" appear.  The
cluster threshold and the per-block readout are not stated there: here they are parameters.

What is computed here (derived, on arrays): from laws ``probs (n, T, V)`` on corrupted inputs, the true
``tokens (n, T)`` and the ``selected (n, T)`` positions,

- the counting estimate APT(w) = hits / occurrences, with its binomial standard error √(p(1−p)/n_w)
  (positions treated as independent: an approximation, stated);
- given the Bayes posterior p_B(· | y) (:mod:`simlm.theory.corrupted_channel`), the Rao–Blackwell estimate
  APT_RB(w) = Σ 1[pred = w] p_B(w | y) / Σ p_B(w | y): at a selected position the true token is
  distributed as p_B(· | y) given the input, so numerator and denominator are unbiased for P(pred = w,
  x = w) and P(x = w) — a second route to the same APT with lower variance, for any predictor;
- ⟨APT⟩ type-averaged over the types that occur, and occurrence-weighted (= token accuracy).  The
  standard error of the type average is a bootstrap over sequences (:data:`BOOTSTRAP` resamples, a fixed
  seed): which types occur changes from one test set to the next, and a rare type seen once or twice
  moves the average by 1/#types on its own while its binomial error √(p(1−p)/n) is 0 at p ∈ {0, 1}, so
  propagating the per-type binomial errors understates it.  On a Zipf(2) vocabulary of 12 types whose
  rarest occurs 1.7 times per test set, the bootstrap error is 0.88 of the spread over fresh test sets
  and the propagated one 0.66: types absent from a test set are absent from its resamples too, so where
  they are that rare the bootstrap still understates, less;
- per-type KL(p_B ‖ p) averaged over the occurrences of each type (not argmax-dominated), from
  log-probabilities when given (a float32 softmax underflows to 0 where its log is finite);
- the confusion matrix, the paper's filter and normalisation, clusters as connected components of
  {i ~ j : N[i, j] ≥ τ or N[j, i] ≥ τ} over the kept tokens, and their agreement with planted classes by
  the adjusted Rand index and normalised mutual information (arithmetic-mean normalisation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.stats import permutation_test, rankdata, spearmanr

from simlm.metrics.epsilon import kl_float64
from simlm.checks import as_array, check_instance, check_positive_int, check_real_array, check_stochastic, check_tokens
from simlm.errors import ConfigError, DistributionError, ShapeError, TokenError
from simlm.worlds.base import check_number


@dataclasses.dataclass(frozen=True)
class TokenAccuracy:
    """APT per token type and its averages.  Arrays are ``(V,)``; APT is NaN for a type that never occurs."""

    counts: np.ndarray  # occurrences of each true type at selected positions
    apt: np.ndarray  # counting estimate
    apt_se: np.ndarray
    apt_rb: np.ndarray | None  # Rao–Blackwell estimate (needs the Bayes posterior)
    kl: np.ndarray | None  # mean KL(p_B ‖ p) per true type, nats
    mean_apt: float  # type-averaged over occurring types
    mean_apt_se: float  # bootstrap over sequences (the set of occurring types resampled too); NaN for < 2 sequences
    mean_apt_rb: float | None
    accuracy: float  # occurrence-weighted APT = token accuracy
    accuracy_se: float
    epsilon: float | None  # mean KL(p_B ‖ p) over selected positions
    confusion: np.ndarray  # (V, V) counts: true i predicted as j
    n_predicted: int  # distinct tokens the predictor outputs

    def ratio_to(self, bayes: "TokenAccuracy") -> np.ndarray:
        """APT / APT_Bayes per type ``(V,)`` (NaN where APT_Bayes is 0 or undefined)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(bayes.apt > 0, self.apt / bayes.apt, np.nan)


#: bootstrap resamples (of the test sequences) behind the standard error of ⟨APT⟩
BOOTSTRAP = 400


def _bootstrap_means(rows: np.ndarray, truth: np.ndarray, hit: np.ndarray, V: int) -> np.ndarray | None:
    """The type-averaged APT of each predictor over :data:`BOOTSTRAP` resamples of the sequences that hold a
    selected position (with replacement; seed 0, so the same inputs give the same resamples), ``(h, BOOTSTRAP)``,
    None for fewer than two such sequences: ``rows`` is the sequence of each selected position, ``truth`` its
    true type, ``hit (h, m)`` whether each of h predictors was right there.  Counts are summed per sequence
    first, so the cost is (resamples × sequences × V), not × positions."""
    seqs, row = np.unique(rows, return_inverse=True)
    m = len(seqs)
    if m < 2:
        return None
    counts_seq, hits_seq = np.zeros((m, V)), np.zeros((len(hit), m, V))
    np.add.at(counts_seq, (row, truth), 1.0)
    for h, hit_h in zip(hits_seq, hit):
        np.add.at(h, (row, truth), hit_h)
    weights = np.random.default_rng(0).multinomial(m, np.full(m, 1.0 / m), size=BOOTSTRAP).astype(np.float64)
    counts, hits = weights @ counts_seq, weights @ hits_seq  # (B, V) and (h, B, V)
    with np.errstate(divide="ignore", invalid="ignore"):  # every resample has a position
        return np.nanmean(np.where(counts > 0, hits / counts, np.nan), axis=-1)


def _bootstrap_mean_apt_se(rows: np.ndarray, truth: np.ndarray, hit: np.ndarray, V: int) -> float:
    """The standard deviation of the type-averaged APT over the resamples of :func:`_bootstrap_means`, NaN
    for fewer than two sequences."""
    means = _bootstrap_means(rows, truth, hit[None], V)
    return float("nan") if means is None else float(np.std(means[0], ddof=1))


def mean_apt_difference(tokens, selected, hits_a, hits_b) -> tuple[float, float]:
    """⟨APT⟩_a − ⟨APT⟩_b of two predictors scored on the same ``selected (n, T)`` positions of ``tokens
    (n, T)``, and its standard error by the bootstrap behind ``mean_apt_se``: the same resamples of the sequences for
    both, so it is the error of the paired difference — the test set's own variation, which both predictors
    share, cancels, and two readouts of one test set can differ by far less than either's ``mean_apt_se``.
    ``hits_a``, ``hits_b`` ``(m,)``: each predictor's (expected) hit at the m selected positions in row-major
    order, as :func:`hits` gives them (ties split as the predictor's :func:`token_accuracy` split them).  The
    error is NaN where fewer than two sequences hold a selected position.  Like ``mean_apt_se`` it matches the
    spread over fresh test sets where every type occurs several times per test set and understates it where
    types are rarer (0.97 and 0.74 of the spread on Zipf(1) and Zipf(2) vocabularies of 12 types, 384
    positions; ``tests/test_token_accuracy.py``)."""
    x, _ = check_tokens(tokens, np.iinfo(np.int32).max)
    sel = _mask(selected, x.shape)
    truth = x[sel].astype(np.int64)
    pair = []
    for name, value in (("hits_a", hits_a), ("hits_b", hits_b)):
        h = check_real_array(name, value)
        if h.shape != truth.shape:
            raise ShapeError(f"{name}: expected one hit per selected position, shape {truth.shape}, got {h.shape}")
        if ((h < 0) | (h > 1)).any():
            raise ConfigError(f"{name}: expected hits in [0, 1], got {h[(h < 0) | (h > 1)][0]:g}")
        pair.append(h.astype(np.float64))
    V = int(truth.max()) + 1
    counts = np.bincount(truth, minlength=V)
    seen = counts > 0
    diff = float(np.mean(np.bincount(truth, pair[0] - pair[1], V)[seen] / counts[seen]))
    means = _bootstrap_means(np.nonzero(sel)[0], truth, np.stack(pair), V)
    return diff, float("nan") if means is None else float(np.std(means[0] - means[1], ddof=1))


def _mask(selected, shape: tuple) -> np.ndarray:
    """``selected`` as a boolean mask of ``shape`` with at least one position (booleans, or integers 0 and 1),
    else a ShapeError naming it."""
    sel = as_array("selected", selected)
    if sel.dtype.kind not in "biu" or (sel.dtype.kind != "b" and not np.isin(sel, (0, 1)).all()):
        raise ShapeError(f"selected: expected a boolean mask (or integers 0 and 1), got dtype {sel.dtype}"
                         + ("" if sel.dtype.kind not in "iu" else f" holding {sel[~np.isin(sel, (0, 1))][0]}"))
    if sel.shape != tuple(shape):
        raise ShapeError(f"selected: expected shape {tuple(shape)}, the tokens', got {sel.shape}")
    if not sel.any():
        raise ShapeError("selected: no position is selected, so no accuracy can be measured")
    return sel.astype(bool)


def _labels(name: str, value, n: int | None = None) -> np.ndarray:
    """Integer labels ``(n,)`` (a ConfigError/ShapeError naming ``name`` otherwise)."""
    a = check_real_array(name, value)
    if a.ndim != 1 or (n is not None and a.shape != (n,)) or not a.size:
        raise ShapeError(f"{name}: expected non-empty labels of shape ({n if n is not None else 'n'},), got {a.shape}")
    if not np.all(a == np.round(a)):
        raise ConfigError(f"{name}: expected integer labels")
    return a.astype(np.int64)


def _square(name: str, value) -> np.ndarray:
    """A square matrix of counts (or rates): real, finite, ≥ 0."""
    M = check_real_array(name, value)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or not M.size:
        raise ShapeError(f"{name}: expected a square (V, V) matrix, got {M.shape}")
    if (M < 0).any():
        i, j = (int(a[0]) for a in np.nonzero(M < 0))
        raise ConfigError(f"{name}: expected counts ≥ 0, got {M[i, j]:g} at [{i}, {j}]")
    return M


def _laws(name, value, shape=None) -> np.ndarray:
    """Probabilities of ``shape`` (default any (n, T, V)) as float64: a NaN or ±∞ entry is a value of no law (a
    DistributionError; it read as a ShapeError), a non-numeric or misshapen array a ShapeError."""
    raw = as_array(name, value, error=ShapeError)
    try:  # floats of any width, bfloat16 (dtype kind "V") included
        wide = raw.astype(np.float64) if raw.dtype.kind not in "OUSaMmcb" else None
    except (TypeError, ValueError):
        wide = None
    if wide is not None and not np.isfinite(wide).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(wide))[0])
        raise DistributionError(f"{name}: entry {idx} is {wide[idx]}, expected a probability")
    a = check_real_array(name, raw if wide is None else wide, error=ShapeError)  # converted once
    if a.ndim != 3 or (shape is not None and a.shape != shape):
        raise ShapeError(f"{name}: expected laws of shape {shape or '(n, T, V)'}, got {a.shape}")
    return a


def _log_laws(name, value, shape) -> np.ndarray:
    """Log-probabilities of ``shape`` as float64: real, no NaN or +∞ (−∞ is log 0)."""
    a = as_array(name, value)
    if a.dtype.kind not in "biuf" or a.shape != shape:
        raise ShapeError(f"{name}: expected real log-probabilities of shape {shape}, got {a.dtype} {a.shape}")
    a = a.astype(np.float64)
    if np.isnan(a).any() or (a == np.inf).any():  # values of no law (a ShapeError before 2026-12-08)
        raise DistributionError(f"{name}: expected log-probabilities (finite or −inf), got NaN or +inf entries")
    return a


def _check_log_law(name: str, logq: np.ndarray, law: np.ndarray, where: np.ndarray) -> None:
    """Rows ``logq (m, V)`` must be log-probabilities (logsumexp 0 within :data:`LAW_ATOL`) of the rows of
    ``law (m, V)`` (|exp(logq) − law| ≤ LAW_ATOL entrywise), or a DistributionError names ``name`` and the
    (sequence, position) in ``where (m, 2)``: logits (log p + c) would read as a KL clipped at 0, log p − 1
    as ε + 1, another law's logs as that law's ε beside this one's accuracy."""
    top = logq.max(-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # a row of −∞ only: logsumexp −∞, not NaN
    with np.errstate(divide="ignore"):
        lse = (top + np.log(np.exp(logq - top).sum(-1, keepdims=True)))[:, 0]
    gap = np.abs(np.exp(logq) - law).max(-1)
    for bad, value, expected in ((~(np.abs(lse) <= LAW_ATOL), lse, "logsumexp {:.6g}, expected 0 within {:g} "
                                  "(log-probabilities, not logits or shifted logs)"),
                                 (gap > LAW_ATOL, gap, "max |exp(log_probs) − probs| {:.3g}, expected ≤ {:g} (the "
                                  "logs of probs: one law for the accuracy and ε)")):
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DistributionError(f"{name}: at sequence {where[k][0]}, position {where[k][1]}: "
                                    + expected.format(value[k], LAW_ATOL))


#: how far from 1 a row of a law given to :func:`token_accuracy` may sum (float32 laws round by ~1e-7 a term)
LAW_ATOL = 1e-4


def token_accuracy(probs, tokens, selected, bayes=None, *, log_probs=None, tie_rtol: float = 0.0) -> TokenAccuracy:
    """APT of the predictor argmax ``probs (n, T, V)`` at the ``selected (n, T)`` positions of ``tokens (n, T)``;
    with ``bayes (n, T, V)`` (the exact P(x_t | y, s_t = 1)) also the Rao–Blackwell APT and per-type KL.

    The KL is read from ``log_probs (n, T, V)`` (the same laws as log-probabilities) when given: a float32
    softmax rounds to 0 once a logit gap passes ~87 nats (XLA flushes subnormals), where the log-probability
    is still finite.  From ``probs`` alone a p = 0 < p_B makes that position's KL, and ε, +∞.  With ``bayes``,
    ``bayes`` and ``probs`` must be probability rows at the selected positions (non-negative, summing to 1
    within :data:`LAW_ATOL`), and ``log_probs`` their logs there (logsumexp 0 and |exp(log_probs) − probs|
    ≤ LAW_ATOL: the accuracy and ε of one law), or a DistributionError names the argument; for the accuracies
    alone ``probs`` may be any finite scores (only their argmax is read; −inf is refused: pass
    probabilities, not log-probabilities with log 0).  An exact tie for the maximum is split
    evenly (:func:`argmax_split`): the predictor picks one of the tied tokens at random, and each number is
    its expectation — a hit counts 1/|tie|, the confusion row gets 1/|tie| on each tied token, and every tied
    token counts as predicted (ties went to the lowest id: a flat LM's accuracy was token 0's frequency, and
    moved with the tokens' numbering).  A law flat only in exact arithmetic (e.g. ``local_bayes_probs`` at a
    MASK of a world with a uniform marginal) has no exact tie: it predicts whatever its last bits favour, so
    its confusion matrix, ``n_predicted`` and clusters are noise — unless it is scored as the exact law it is:
    computed in float64 and with ``tie_rtol =`` :data:`TIE_RTOL`, where scores that close to the maximum are
    tied (:func:`argmax_split`; the Bayes and local laws of :mod:`simlm.theory.corrupted_channel` are float64
    for this)."""
    p = _laws("probs", probs)
    n, T, V = p.shape
    tie_rtol = check_number("tie_rtol", tie_rtol, minimum=0.0, maximum=1.0)
    x, _ = check_tokens(tokens, V)
    if x.shape != (n, T):
        raise ShapeError(f"tokens: expected shape ({n}, {T}) to match probs, got {x.shape}")
    sel = _mask(selected, (n, T))
    if log_probs is not None and bayes is None:
        raise ConfigError("log_probs: only read with bayes (the KL to the Bayes laws); pass bayes, or leave "
                          "log_probs out")
    truth, (pred, tied, share) = x[sel].astype(int), argmax_split(p[sel], tie_rtol)
    hit = _hits_of(pred, tied, share, truth)
    counts = np.bincount(truth, minlength=V).astype(np.float64)
    hits = np.bincount(truth, weights=hit, minlength=V)
    seen = counts > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        apt = np.where(seen, hits / counts, np.nan)
        se = np.where(seen, np.sqrt(apt * (1 - apt) / counts), np.nan)
    confusion, clear = np.zeros((V, V)), np.ones(len(pred), bool)
    clear[tied] = False
    np.add.at(confusion, (truth[clear], pred[clear]), 1.0)
    np.add.at(confusion, truth[tied], share)
    acc = float(hits.sum() / counts.sum())
    apt_rb = kl = eps = mean_rb = None
    if bayes is not None:
        # laws, not scores: log-probabilities passed here read as a KL of 0, unnormalised rows as garbage
        b = check_stochastic("bayes", _laws("bayes", bayes, p.shape)[sel], atol=LAW_ATOL)
        check_stochastic("probs", p[sel], atol=LAW_ATOL)  # the KL reads probs, or its logs, as a law
        ruled_out = b[np.arange(len(truth)), truth] == 0
        if ruled_out.any():  # the posterior of other inputs (another corruption draw, another world)
            i, t = np.argwhere(sel)[int(np.flatnonzero(ruled_out)[0])]
            raise DistributionError(f"bayes: at sequence {i}, position {t}, gives the true token {truth[ruled_out][0]} "
                                    "probability 0 — no posterior of these inputs does; pass the Bayes law of the "
                                    "same corrupted inputs")
        # p_B(pred | y) summed by the predicted type: the chance each prediction is right (a tie's by share)
        num = np.bincount(pred[clear], weights=b[clear, pred[clear]], minlength=V) + (share * b[tied]).sum(0)
        den = b.sum(0)
        logq = None if log_probs is None else _log_laws("log_probs", log_probs, p.shape)[sel]
        if logq is not None:
            _check_log_law("log_probs", logq, p[sel], np.argwhere(sel))
        with np.errstate(divide="ignore", invalid="ignore"):
            logq = np.log(p[sel]) if logq is None else logq
            apt_rb = np.where(den > 0, num / den, np.nan)
            # 0 · log 0 = 0 where p_B = 0; no floor on q, so q = 0 < p_B is an infinite KL, not a clipped number
            # both rows renormalised in float64 (accepted within LAW_ATOL of normalised: a row 1e-4 short read
            # as ε + 1e-4) and summed without cancellation, as simlm.metrics.epsilon sums ε; q = 0 < p_B is +inf
            per = kl_float64(np.log(np.where(b > 0, b, 0.0))[:, None, :], logq[:, None, :])
            kl = np.where(seen, np.bincount(truth, weights=per, minlength=V) / counts, np.nan)
        eps, mean_rb = float(per.mean()), float(np.nanmean(apt_rb[seen]))
    mean_se = _bootstrap_mean_apt_se(np.nonzero(sel)[0], truth, hit, V)
    return TokenAccuracy(counts, apt, se, apt_rb, kl, float(np.nanmean(apt[seen])), mean_se, mean_rb, acc,
                         float(np.sqrt(acc * (1 - acc) / counts.sum())), eps, confusion,
                         int(np.count_nonzero(confusion.sum(0))))


def argmax_split(scores, rtol: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The argmax of each row of ``scores (m, V)`` with ties split evenly: ``pred (m,)`` (the lowest tied id),
    ``tied (k,)`` the rows whose maximum is tied, and ``share (k, V)`` their predictor's law — 1/|tie| on each
    tied token (a random tie-break; only tied rows are spelt out, so m × V is never materialised).

    A tie is exact by default (``rtol = 0``): an LM predicts what its own numbers favour.  An *exact* law
    computed in floats carries rounding that breaks its true ties (0.5 and 0.5 come out 0.50000006 and 0.5 in
    float32), so score it in float64 with ``rtol =`` :data:`TIE_RTOL`: scores within ``rtol`` × the row's
    maximum of it are tied.  A NaN score is refused (:class:`DistributionError`): its row was read as a
    prediction of token 0 (−inf, the log of a probability 0, is a score)."""
    q = np.asarray(scores)
    rtol = check_number("rtol", rtol, minimum=0.0, maximum=1.0)
    if q.ndim != 2 or q.dtype.kind not in "biuf":  # text or complex: numpy's own UFuncTypeError before
        raise ShapeError(f"scores: expected an (m, V) array of real numbers, got {q.dtype} of shape {q.shape}")
    if np.issubdtype(q.dtype, np.floating) and np.isnan(q).any():
        i, v = (int(k) for k in np.argwhere(np.isnan(q))[0])
        raise DistributionError(f"scores: row {i} has NaN at token {v}; expected numbers (an argmax of NaN is none)")
    top = q.max(-1, keepdims=True)
    # (q == top too: a top of +inf minus rtol·inf is NaN, and its row read as an untied prediction of token 0)
    with np.errstate(invalid="ignore"):
        at_top = (q >= top - rtol * np.abs(top)) | (q == top) if rtol else q == top
    pred = at_top.argmax(-1)  # the first of the tokens at the top (with rtol, not always q's argmax)
    tied = np.flatnonzero(at_top.sum(-1) > 1)
    share = at_top[tied].astype(np.float64)
    return pred, tied, share / share.sum(-1, keepdims=True)


def hits(scores, truth, rtol: float = 0.0) -> np.ndarray:
    """Whether the argmax of each row of ``scores (m, V)`` is ``truth (m,)``, ties split as :func:`argmax_split`
    splits them: 1 or 0, or 1/|tie| where the truth is among |tie| tied tokens — the expected hit of a random
    tie-break, float64 ``(m,)``.  ``truth`` takes integer ids in [0, V), one per row (a ShapeError or
    TokenError otherwise: a (1,) truth was broadcast over every row, an id ≥ V read as a miss)."""
    split = argmax_split(scores, rtol)
    m, V = np.shape(scores)
    truth = _labels("truth", truth, m)
    if truth.min() < 0 or truth.max() >= V:
        bad = truth[(truth < 0) | (truth >= V)][0]
        raise TokenError(f"truth: expected token ids in [0, {V}) (V = scores.shape[1]), got {bad}")
    return _hits_of(*split, truth)


def _hits_of(pred, tied, share, truth) -> np.ndarray:
    """The expected hits of :func:`argmax_split`'s ``(pred, tied, share)`` against ``truth (m,)``."""
    hit = (pred == truth).astype(np.float64)
    hit[tied] = share[np.arange(len(tied)), truth[tied]]
    return hit


@dataclasses.dataclass(frozen=True)
class FrequencyProfile:
    """APT against token frequency: bin edges over log-frequency, mean APT per bin ``(n_bins,)`` and the
    Spearman rank correlation of APT with frequency over types that occur (NaN for a constant APT) with its
    two-sided p-value against no correlation (exact over every ordering for up to :data:`EXACT_SPEARMAN`
    types, scipy's t approximation above; NaN with ρ)."""

    edges: np.ndarray
    mean_apt: np.ndarray
    n_types: np.ndarray
    spearman: float
    spearman_p: float = float("nan")


def apt_by_frequency(result: TokenAccuracy, frequency, n_bins: int | None = None) -> FrequencyProfile:
    """Group the types that occur into ``n_bins`` quantile bins of ``frequency (V,)`` (default 5, or the
    number of types that occur where fewer do) (e.g. the world's
    exact marginal token law) and average APT in each.  Frequencies that differ by at most
    :data:`TIE_RTOL` × the largest are ties (an exact law computed in floats, e.g. 1/9 for every token,
    differs in its last bits, and ranking by those bits would be noise): they share a bin and a Spearman
    rank, and when every frequency is tied the correlation is NaN."""
    check_instance("result", result, TokenAccuracy, "a TokenAccuracy (from token_accuracy)")
    f = check_real_array("frequency", frequency)
    if f.shape != result.apt.shape:
        raise ShapeError(f"frequency: expected shape {result.apt.shape}, got {f.shape}")
    if (f < 0).any():
        at = int(np.flatnonzero(f < 0)[0])
        raise ConfigError(f"frequency: expected frequencies ≥ 0, got {f[at]:g} at {at}")
    n_seen = max(1, int((result.counts > 0).sum()))
    n_bins = check_positive_int("n_bins", min(5, n_seen) if n_bins is None else n_bins, maximum=n_seen)
    seen = result.counts > 0
    f = _merge_ties(f, TIE_RTOL * np.abs(f[seen]).max(initial=0.0))
    edges = np.quantile(f[seen], np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, f, side="right") - 1, 0, n_bins - 1)
    means = np.array([np.nanmean(result.apt[seen & (which == b)]) if (seen & (which == b)).any() else np.nan
                      for b in range(n_bins)])
    sizes = np.array([int((seen & (which == b)).sum()) for b in range(n_bins)])
    apt = result.apt[seen]
    if not (np.ptp(apt) > 0 and np.ptp(f[seen]) > 0):
        return FrequencyProfile(edges, means, sizes, float("nan"), float("nan"))
    rho = spearmanr(f[seen], apt)
    return FrequencyProfile(edges, means, sizes, float(rho.statistic),
                            float(rho.pvalue) if apt.size > EXACT_SPEARMAN else _exact_spearman_p(f[seen], apt))


#: up to this many types, :func:`apt_by_frequency`'s p-value is the exact permutation one (8! orderings), above
#: it scipy's t approximation (0.2862 against the exact 0.2875 at 8 types; 0 against 0.083 for 4 types in order)
EXACT_SPEARMAN = 8


def _exact_spearman_p(x: np.ndarray, y: np.ndarray) -> float:
    """The two-sided p-value of Spearman's ρ between ``x`` and ``y`` over every ordering of ``y``'s ranks (ties
    at their mean rank), by scipy's ``permutation_test``: without ties, the share of orderings whose |ρ| is
    at least the observed one."""
    rx = rankdata(x) - (len(x) + 1) / 2
    rx /= np.linalg.norm(rx)

    def rho(ranks, axis=-1):
        c = ranks - ranks.mean(axis=-1, keepdims=True)
        return (c @ rx) / np.linalg.norm(c, axis=-1)

    return float(permutation_test((rankdata(y),), rho, permutation_type="pairings", n_resamples=np.inf,
                                  vectorized=True).pvalue)


#: frequencies closer than this times the largest are tied in :func:`apt_by_frequency`
TIE_RTOL = 1e-9


def _merge_ties(f: np.ndarray, tol: float) -> np.ndarray:
    """``f`` with every run of sorted values whose consecutive gaps are ≤ ``tol`` set to the run's smallest."""
    order = np.argsort(f, kind="stable")
    run = np.concatenate([[0], np.cumsum(np.diff(f[order]) > tol)])
    first = np.concatenate([[True], run[1:] != run[:-1]])
    out = np.empty_like(f)
    out[order] = f[order][first][run]
    return out


# ---- confusion clusters ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConfusionClusters:
    """The paper's clusters at one ``threshold``: ``kept (V,)`` rows whose diagonal is their (positive)
    maximum, ``normalised (V, V)`` = M[i, j] / M[i, i] on kept rows (0 elsewhere), ``labels (V,)`` the
    cluster of each kept token (−1 for dropped ones), ``sizes`` of the clusters (descending), and — given
    planted classes — the ARI and NMI of the clusters against them on the kept tokens (None without
    classes, or when no row is kept)."""

    threshold: float
    kept: np.ndarray
    normalised: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    ari: float | None
    nmi: float | None

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


def confusion_clusters(confusion, threshold: float, classes=None) -> ConfusionClusters:
    """Clusters of ``confusion (V, V)`` at ``threshold`` τ ∈ (0, 1]: connected components of kept tokens
    linked when either normalised entry N[i, j], N[j, i] is ≥ τ (the paper's τ is not known)."""
    M = _square("confusion", confusion)
    tau = check_number("threshold", threshold, minimum=0.0, maximum=1.0, positive=True)
    diag = np.diag(M)
    kept = (diag > 0) & (diag >= M.max(1))
    N = np.zeros_like(M)
    N[kept] = M[kept] / diag[kept, None]
    idx = np.flatnonzero(kept)
    sub = N[np.ix_(idx, idx)]
    adjacency = (sub >= tau) | (sub.T >= tau)
    _, comp = connected_components(adjacency, directed=False)
    labels = np.full(M.shape[0], -1)
    labels[idx] = comp
    sizes = np.sort(np.bincount(comp))[::-1] if len(idx) else np.zeros(0, int)
    ari = nmi = None
    if classes is not None:
        c = _labels("classes", classes, M.shape[0])
        if len(idx):  # no row kept (no token predicted most often as itself): no clustering to score
            ari, nmi = adjusted_rand_index(c[idx], comp), normalized_mutual_information(c[idx], comp)
    return ConfusionClusters(tau, kept, N, labels, sizes, ari, nmi)


def _contingency(a, b) -> np.ndarray:
    a = _labels("a", a)
    b = _labels("b", b, len(a))
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max(initial=-1) + 1, bi.max(initial=-1) + 1))
    np.add.at(table, (ai, bi), 1.0)
    return table


def adjusted_rand_index(a, b) -> float:
    """ARI (Hubert & Arabie 1985) of two labelings: (Σ C(n_ij, 2) − E) / (½(Σ C(a_i, 2) + Σ C(b_j, 2)) − E),
    E = Σ C(a_i, 2) Σ C(b_j, 2) / C(n, 2).  1 for identical partitions (also in the degenerate case where
    both are all singletons or one block, whose denominator is 0); NaN for fewer than 2 items."""
    table = _contingency(a, b)
    n = table.sum()
    if n < 2:
        return float("nan")
    comb = lambda v: (v * (v - 1) / 2).sum()
    index, sa, sb = comb(table), comb(table.sum(1)), comb(table.sum(0))
    expected = sa * sb / (n * (n - 1) / 2)
    top = (sa + sb) / 2
    if top == expected:
        return 1.0 if index == top else 0.0
    return float((index - expected) / (top - expected))


def normalized_mutual_information(a, b) -> float:
    """NMI = I(a; b) / ((H(a) + H(b)) / 2); 1 when both labelings are constant (identical partitions) over at
    least 2 items; NaN for fewer than 2 items (one item agrees with any partition: no evidence, as ARI's NaN)."""
    table = _contingency(a, b)
    n = table.sum()
    if n < 2:
        return float("nan")
    p = table / n
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())
    h = lambda q: float(-(q[q > 0] * np.log(q[q > 0])).sum())
    denom = (h(pa) + h(pb)) / 2
    return 1.0 if denom == 0 else mi / denom


def within_class_errors(confusion, classes) -> float:
    """The share of errors (off-diagonal mass of ``confusion``) whose prediction is in the true token's class;
    NaN where there is no error (a share of none)."""
    M = _square("confusion", confusion)
    c = _labels("classes", classes, M.shape[0])
    off = M * (1 - np.eye(len(M)))
    total = off.sum()
    return float((off * (c[:, None] == c[None, :])).sum() / total) if total > 0 else float("nan")


__all__ = ["TokenAccuracy", "token_accuracy", "mean_apt_difference", "argmax_split", "hits", "TIE_RTOL",
           "FrequencyProfile", "apt_by_frequency", "ConfusionClusters", "confusion_clusters", "adjusted_rand_index",
           "normalized_mutual_information", "within_class_errors"]
