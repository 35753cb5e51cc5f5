"""LMs for the anchor-vector checks of :mod:`simlm.theory.anchors`, exact and without training: the
analytic families of :mod:`simlm.models.perturbed` on a world's rows, and the negative constructions N1
and N2 of Wu, Lee & Ge (NeurIPS 2023) — a low (here zero or ~1e-9) ε that does not transfer.

- **N1** (derived): append a coordinate t(x) = ±``height`` to f* (+ on a π-half H₊ of the states) and a
  1 to every embedding.  Every logit moves by the same t(x), so p is unchanged: the augmented world
  f̃* = (f*, t) has exactly the law of the world, and the latent task y = 1[t(x) > 0] is linear in f̃*
  with margin ``height``.  The LM that drops t (f = (f*, 0)) has ε = 0 and the same laws, but nothing
  in its representation carries the task: the readout ⟨e, f⟩ is constant (error = min(π(H₊), π(H₋)) …
  max); a linear probe on f* can read y only by separating a random π-half of the states, which it cannot
  when there are many more states than dimensions (1024 in d = 8: error 0.508), and can in a tiny world
  (S ≤ d + 1 states: error 0).
- **N2** (derived): a contrast task over two rare carrier words c₁, c₂ (p* ≈ e^{−M}), score* =
  ⟨v_c₁ − v_c₂, f*⟩.  The LM moves only the carriers' logits, by ∓(score*(x) + bias + 1)/2, so its
  carrier contrast is the constant −bias − 1: the anchored head predicts one class everywhere (error ≈ ½), while ε ≤
  (p*(c₁|x) + p*(c₂|x))·O(δ²) is of order e^{−M}.  The *control* moves two frequent words by the same
  δ(x) and pays ε of order p*(w)·δ².
- **The worst LM for the transfer bound** (derived; :func:`worst_case_lm`).  The head's probability part
  Σ c_w [log p(w|x) − log p(B|x)] reads p(·|x) only through the masses q_a of the *atoms* — each task word,
  the bulk without them, the rest — and for given atom masses an LM that scales each atom proportionally
  pays the least KL (chain rule of KL) and the same TV.  Per context it takes the cheapest flip of the head
  among two kinds of move (:func:`flip_costs`).  *Pair moves*: a fraction g of the mass of a set S of atoms
  onto a disjoint set D (every such pair; the least g that flips, on a grid refined by bisection).  In the
  linear regime Δ ≈ Σ_a α_a δq_a with α_w = c_w/q_w, α_B = −Σc/q_B, α_rest = 0, a linear programme over
  Σ|δq| = 2 TV, Σδq = 0 whose optimum moves mass from the atom of least α to the one of largest: a pair
  move, so the family holds TV's optimum to first order; it also holds the reviewer's single-logit shifts,
  each at no more TV.  KL is not TV: to second order it is Σ δq_a²/(2q_a), least for δq_a ∝ q_a(α_a − ᾱ),
  a move of every atom at once.  *The least-KL flip* (:func:`_least_kl_flip`): in log q' the objective and
  (off the bulk) the score are linear, so the Lagrange conditions leave one multiplier μ and a curve of
  candidates — q' = q + μα', α' = (c_w, −Σc on the bulk, 0), when no task word is in the bulk, where the
  problem is convex and its one crossing of the threshold is the exact minimum; with task words in the
  bulk, every crossing of the curve is a candidate.  A contrast task's (Σc = 0) is the pair move between
  its words; an anchored task's moves both words and the bulk (review of 2026-12-05: the pair moves alone
  paid more KL than a flip needs in ~99 % of the contexts of docs/anchors.md's worlds, up to 1.9×, so the
  worst LM of a budget flipped less than an LM of that ε could).  ρ = 0: the LM's anchor residual is the world's (the
  bound's |Σc|ρ covers the anchor part separately), so its error is
  :func:`~simlm.theory.anchors.head_errors`' with r_LM = r*.  The LM of a budget ε flips the contexts in
  increasing order of their flip's KL while Σ π_x KL_x ≤ ε and spends the rest on the next context's
  move, part of the way to its flip (exact ε; KL is convex along the way, and a flip before its end
  would be a cheaper flip).  :func:`worst_case_slack` scans the sets of flips; :func:`tight_world` is a world
  where the derivation's steps are as tight as they can be (its docstring).
- **How close any LM can come** (derived).  The head's score moves by at most Σ|c_w||Δlog p(w)| +
  |Σc||Δlog p(B)|, each term ≤ −log(1 − TV/γ) ≤ TV/(γ − TV): a flip of margin m needs TV ≥ γm/(2‖c‖₁ + m).
  The bound's t(m) = γm/(4‖c‖₁) linearises TV/(γ − TV) ≤ 2TV/γ, equal only at TV = γ/2, so at small
  margins t(m) is half of what any LM needs: no flip uses more than (2‖c‖₁ + m)/(4‖c‖₁) of the threshold.
  The other factor 2 (word and bulk each moving by TV/γ) is attained, by moving the word's mass onto the
  bulk with both at the floor γ: the tight world's flip, TV = γ tanh(m/2), uses 0.5 of t(m) as m → 0
  (0.51 at m = ½, 0.66 at m = 2 where t caps at γ/2) — a bound with half the constant would be violated.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import expit

from simlm.checks import as_rng, check_instance, check_positive, check_positive_int
from simlm.errors import ConfigError
from simlm.metrics.epsilon import kl_float64
from simlm.models.perturbed import epsilon_of_scale, max_scale, perturb_logprobs, perturbation_params, solve_scale
from simlm.theory.anchor_bound import context_divergences, markov_tail, task_gamma, transfer_bound
from simlm.theory.anchors import (AnchorContexts, AnchorFit, AnchorTask, anchor_fit, array_digest, check_bulk,
                                  check_lm_laws, check_task, error_rate, half_index, head_errors, log_softmax,
                                  probability_part, probe_error, word_task, _word_ids)


def exact_epsilon_rows(ctx: AnchorContexts, logp_lm) -> float:
    """ε = Σ_x π_x KL(p*(·|x) ‖ p(·|x)), float64, nats; rows of ``logp_lm`` that are not probability laws
    are refused (:func:`~simlm.theory.anchors.check_lm_laws`)."""
    return float(ctx.weights @ context_divergences(ctx.logp, logp_lm)[0])


def analytic_laws(ctx: AnchorContexts, kind: str, eps: float, seed: int = 0) -> np.ndarray:
    """log p_s ``(n, V)`` of the analytic family ``kind`` (:mod:`simlm.models.perturbed`) on the rows, its
    scale solved so that Σ π_x KL(p* ‖ p_s) = ``eps`` within 1e-4 relative — in float64, laws and ε alike
    (in float32, whose ε(s) is not monotone below ~1e-6, a target of 1e-6 came out 6 % off)."""
    eps = check_positive("eps", eps)
    logp = np.asarray(ctx.logp, np.float64)
    params = perturbation_params(kind, logp.shape[1], seed, logp)
    # rows padded to a power of two (≥ 8) with weight 0: ε(s) is compiled once per (2^k, V), not per world
    n = len(logp)
    pad = max(8, 1 << max(n - 1, 0).bit_length()) - n
    padded, weights = np.concatenate([logp, np.repeat(logp[:1], pad, 0)]), np.concatenate([ctx.weights, np.zeros(pad)])
    with jax.enable_x64(True):
        laws = jnp.asarray(padded, jnp.float64)
        s = solve_scale(lambda s: epsilon_of_scale(kind, laws, s, params, weights), eps, max_scale(kind),
                        start=1.0 if kind == "uniform-mixture" else 1e-2, rtol=1e-4, resolution=1e-13,
                        what=f"kind {kind!r} on these contexts")
        return log_softmax(np.asarray(perturb_logprobs(kind, laws, s, params), np.float64)[:n])


def lm_residual(ctx: AnchorContexts, bulk, logp_lm) -> np.ndarray:
    """The anchor residual of an LM known only by its laws, read in the world's representation space:
    logits ⟨v*_w, f*(x)⟩ + log p(w|x) − log p*(w|x) (so log Z_B = log Z* + log p(B|x)), features f*."""
    logp_lm = check_lm_laws("logp_lm", logp_lm, ctx.logp.shape)  # an unnormalised row would move log Z_B
    return anchor_fit(ctx.logits + logp_lm - ctx.logp, ctx.features, bulk, ctx.weights).residual


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


_MAX_HEIGHT = 1e6  # N1's largest coordinate: the laws of f·E + height agree with f·E's to ~1e-10 at it


def n1_construction(ctx: AnchorContexts, seed=0, *, height: float = 1.0, n_label: int = 64) -> Construction:
    """N1 (module docstring): the task coordinate t removed from f, p unchanged (ε = 0 exactly)."""
    rng = as_rng(seed)
    height = check_positive("height", height)
    if height > _MAX_HEIGHT:  # f·E ± height must keep the laws' float64 digits: log_softmax subtracts it back
        raise ConfigError(f"height: expected at most {_MAX_HEIGHT:g} (logits shifted by ±height lose float64 "
                          f"precision beyond it), got {height!r}")
    t = np.where(np.isin(ctx.states, _half(ctx, rng)), height, -height)
    f_world = np.hstack([ctx.features, t[:, None]])
    E = np.vstack([ctx.embeddings, np.ones((1, ctx.embeddings.shape[1]))])
    f_lm = np.hstack([ctx.features, np.zeros((len(t), 1))])
    logp_lm = log_softmax(f_lm @ E)
    labels = t > 0
    e = np.zeros(E.shape[0])
    e[-1] = 1.0
    err = lambda f: error_rate(f @ e >= 0, labels, ctx.weights)
    # the augmented world's law is the world's: every logit moved by the same t(x)
    gap = float(np.abs(log_softmax(f_world @ E) - ctx.logp).max())
    if not gap <= 1e-9:
        raise ConfigError(f"height: the world with t = ±{height:g} appended reads laws {gap:.3g} nats from the "
                          "world's, not the same laws; lower it")
    return Construction("N1", exact_epsilon_rows(ctx, logp_lm), err(f_lm),
                        probe_error(f_lm[:, :-1], labels, ctx.weights, n_label=n_label, seed=seed),
                        err(f_world), None, logp_lm, labels, f_lm)


def n2_construction(ctx: AnchorContexts, fit: AnchorFit, bulk, carriers, *, n_label: int = 64,
                    seed=0) -> Construction:
    """N2 (module docstring) over the first two ``carriers``; ``control_eps`` moves the two most frequent
    words by the same δ(x)."""
    ids = _word_ids(carriers, ctx.logp.shape[1], name="carriers")
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


# ---- the worst LM for the transfer bound -------------------------------------------------------------

#: points of the first-flip grid on g = δ/q_S ∈ (0, 1) (then bisection): even steps and a tail towards 1,
#: where a move empties its source and a large margin can flip
_GRID = np.concatenate([np.linspace(1 / 256, 1 - 1 / 256, 255), 1 - np.logspace(-3, -14, 23)])
_BISECT = 60
#: a flip crosses the head's threshold by this much (relative to 1 + |score|), rounding then keeps it
_OVERSHOOT = 1e-9
#: the grid of ζ on which :func:`_least_kl_flip` looks for the score's crossings (μ − μ_lo = L·σ(ζ)); out to
#: ±300, where an atom is drained by up to 300 nats (±40 missed flips that drain a word of small |c_w| by 60
#: or 80: 3× their least KL, or none at all; a review 2026-12-07)
_ZETA = np.concatenate([-np.logspace(np.log10(300), -3, 120), [0.0], np.logspace(-3, np.log10(300), 120)])
#: atoms (task words, bulk, rest) beyond which only single-atom moves and their complements are tried
_MAX_SUBSET_ATOMS = 6


@dataclasses.dataclass(frozen=True, eq=False)
class FlipCosts:
    """Per context x, the cheapest flip of the anchored head found (``inf`` where none): ``tv (n,)`` its TV,
    ``kl (n,)`` its KL (of the flip cheapest in ``by``), ``move (n,)`` its index in ``moves`` (−1: none),
    ``g (n,)`` the fraction of the source moved; ``threshold (n,)`` the bound's t(margin_x) at ρ = 0 and
    ``tv_share (n,)`` = t(margin_x)/TV_x of the cheapest-in-TV flip (0 where none): 1 would be a flip at
    exactly the TV the bound's derivation requires.  The moves searched shift one fraction of one set of
    atoms onto another; a flip draining two sources by different fractions can cost less TV (up to 1.28×
    less on tiny random worlds; none on the docs' anchor world's top contexts, where moves are small and
    pair moves optimal), so ``tv`` is an upper bound on the least TV and ``tv_share`` a lower bound on its
    share.  (The KL costs are the least KL: the least-KL flip is among the moves, for flips that drain an atom by
    up to ~300 nats, :data:`_ZETA`.)  ``moves``: (S, D) bool
    masks over the atoms; ``move`` = ``len(moves)`` is the least-KL flip (``g`` NaN); ``atoms (n, K)``: every
    flip's atom masses.  ``source``: a digest of the task, rows and bulk the costs were computed for
    (:func:`worst_case_lm` refuses others)."""

    tv: np.ndarray
    kl: np.ndarray
    move: np.ndarray
    g: np.ndarray
    threshold: np.ndarray
    tv_share: np.ndarray
    moves: list
    by: str
    atoms: np.ndarray  # (n, K): the atom masses at each context's flip (NaN rows where none)
    source: str | None = None


def _costs_source(task: AnchorTask, ctx: AnchorContexts, bulk: np.ndarray) -> str:
    """A digest of what :func:`flip_costs` reads: the task's words, weights, scores, labels and margins, the
    rows (log p*, π) and the bulk."""
    return array_digest(task.words, task.coef, task.score, [task.bias], task.labels, task.margin, ctx.logp,
                        ctx.weights, bulk, salt=task.name)


def _atoms(task, ctx: AnchorContexts, bulk):
    """Atom masses ``Q (n, K)``: each task word, the bulk without the task words, the rest; their
    coefficients ``(K,)`` (c_w, 0, 0), bulk membership ``(n, K)`` and the atom of each word ``(n, V)``."""
    p, words = np.exp(ctx.logp), task.words
    k, V = len(words), ctx.logp.shape[1]
    is_word = np.zeros(V, bool)
    is_word[words] = True
    bulk_rest, rest = bulk & ~is_word, ~bulk & ~is_word
    Q = np.stack([p[:, w] for w in words] + [(p * bulk_rest).sum(1), (p * rest).sum(1)], 1)
    in_bulk = np.stack([bulk[:, w] for w in words] + [np.ones(len(p), bool), np.zeros(len(p), bool)], 1)
    atom = np.where(bulk_rest, k, k + 1)
    atom[:, words] = np.arange(k)
    return Q, np.concatenate([task.coef, [0.0, 0.0]]), in_bulk, atom


def _moves(K: int) -> list:
    """(S, D): disjoint non-empty sets of atoms (all of them up to :data:`_MAX_SUBSET_ATOMS` atoms, else each
    atom against each other atom and against all the others)."""
    if K <= _MAX_SUBSET_ATOMS:
        labels = np.array(np.meshgrid(*[[0, 1, 2]] * K, indexing="ij")).reshape(K, -1).T  # 0: kept, 1: S, 2: D
        return [(lab == 1, lab == 2) for lab in labels if (lab == 1).any() and (lab == 2).any()]
    eye = np.eye(K, dtype=bool)
    return [(eye[i], eye[j]) for i in range(K) for j in range(K) if i != j] + \
        [(eye[i], ~eye[i]) for i in range(K)] + [(~eye[i], eye[i]) for i in range(K)]


def _move_effect(Q, coef, in_bulk, S, D, g):
    """Moving the fraction ``g`` (n, G) of the mass of the atoms S onto the atoms D (each atom scaled
    proportionally): the change of the probability part Σ c_w [Δlog p(w) − Δlog p(B)], the TV (the mass
    moved, δ) and the KL, each (n, G); NaN where S or D holds no mass."""
    qS, qD = (Q @ S)[:, None], (Q @ D)[:, None]
    QB = Q * in_bulk
    qB, bS, bD = QB.sum(1)[:, None], (QB @ S)[:, None], (QB @ D)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where((qS > 0) & (qD > 0), g * qS, np.nan)
        down, up = np.log1p(-g), np.log1p(delta / qD)
        bulk = np.log1p(delta * (bD / qD - bS / qS) / qB)
        dprob = (coef @ S) * down + (coef @ D) * up - coef.sum() * bulk
        kl = -qS * down - qD * up
    return dprob, delta, kl


def _first_flip(Q, coef, in_bulk, S, D, s0):
    """The smallest fraction g of S moved onto D that flips the head (label 1[s0 + Δ ≥ 0] changes), per
    context: the first flipping point of :data:`_GRID`, then bisection; NaN where no grid point flips.  A
    flip must cross the threshold by :data:`_OVERSHOOT` (relative), so that rounding does not undo it."""
    label, tol = s0 >= 0, _OVERSHOOT * (1 + np.abs(s0))

    def flips(g):
        moved = s0[:, None] + _move_effect(Q, coef, in_bulk, S, D, g)[0]  # one evaluation for both labels
        return np.where(label[:, None], moved < -tol[:, None], moved >= tol[:, None])

    grid = np.broadcast_to(_GRID, (len(s0), len(_GRID)))
    hit = flips(grid)
    found = hit.any(1)
    first = np.argmax(hit, 1)
    lo = np.where(first > 0, _GRID[np.maximum(first - 1, 0)], 0.0)
    hi = _GRID[first]
    for _ in range(_BISECT):
        mid = (lo + hi) / 2
        f = flips(mid[:, None])[:, 0]
        lo, hi = np.where(f, lo, mid), np.where(f, mid, hi)
    return np.where(found, hi, np.nan)


def _family(Q, in_bulk, interval, zeta):
    """The stationary points of the least-KL flip (:func:`_least_kl_flip`), atom masses ``(n, G, K)`` at
    μ = μ(ζ) for ``zeta (n, G)`` (``interval``: :func:`_interval`'s): off the bulk q'_a = q_a + μ c_a, on it
    q'_a = y (q_a + μ c_a) / (q_B + μ c_B) with the bulk's mass y = q_B + μ (c_B − Σc) (c_B: the task words'
    coefficients in the bulk).  μ runs over the interval where every one of these is positive, μ − μ_lo =
    L·σ(ζ) (μ_hi − μ = L·σ(−ζ); e^{±ζ} on a half-line), so that the mass that vanishes at an end is
    c·L·σ(ζ), never a difference of near-equal numbers."""
    K = Q.shape[1]
    P, C, mu0, lo, hi = interval
    both = np.isfinite(lo) & np.isfinite(hi)
    length = np.where(both, hi - lo, 1.0)
    with np.errstate(over="ignore"):
        d_lo = np.where(both, length * expit(zeta), np.where(np.isfinite(lo), np.exp(zeta), np.inf))[..., None]
        d_hi = np.where(both, length * expit(-zeta), np.where(np.isfinite(hi), np.exp(-zeta), np.inf))[..., None]
    C3, m3 = C[:, None, :], mu0[:, None, :]
    with np.errstate(invalid="ignore"):
        r = np.where(C3 > 0, C3 * ((lo[..., None] - m3) + d_lo),
                     np.where(C3 < 0, -C3 * ((m3 - hi[..., None]) + d_hi), P[:, None, :]))
    r, y = r[..., :K], r[..., K:]
    B = in_bulk[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(B, y * r / (r * B).sum(-1, keepdims=True), r)


def _interval(Q, coef, in_bulk):
    """``(P, C, μ0, μ_lo, μ_hi)``: the atoms' masses and the bulk's, P (n, K + 1), as P + μC along the curve of
    :func:`_family`, where each reaches 0 (μ0) and the interval (μ_lo, μ_hi) ∋ 0 where all are positive, (n, 1)."""
    n, K = Q.shape
    P = np.concatenate([Q, (Q * in_bulk).sum(1, keepdims=True)], 1)
    C = np.concatenate([np.broadcast_to(coef, (n, K)), (in_bulk @ coef - coef.sum())[:, None]], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = np.where(C != 0, -P / np.where(C != 0, C, 1.0), np.nan)
    return (P, C, mu0, np.max(np.where(C > 0, mu0, -np.inf), 1)[:, None],
            np.min(np.where(C < 0, mu0, np.inf), 1)[:, None])


def _score_change(Q, coef, in_bulk, Qn):
    """Σ c_w [Δlog p(w) − Δlog p(B)] of atom masses ``Qn (n, G, K)`` against ``Q (n, K)``."""
    words = coef != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(Qn[..., words] / Q[:, None, words])
        bulk = np.log((Qn * in_bulk[:, None, :]).sum(-1) / (Q * in_bulk).sum(1)[:, None])
    return logs @ coef[words] - coef.sum() * bulk


def _atom_kl(Q, Qn):
    """Σ_a q_a log(q_a / q'_a) ``(n, G)``: the KL of an LM that scales every atom proportionally, by the metrics'
    :func:`~simlm.metrics.epsilon.kl_float64` (which stays ≥ 0 and exact where a flip moves only atoms below
    ~1e-16, the others then by less than their last bit: Σ q log(q/q') read negative there)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.broadcast_to(np.log(Q)[:, None, None, :], Qn.shape[:2] + (1, Q.shape[1]))
        return kl_float64(ref, np.log(Qn)[:, :, None, :])


def _least_kl_flip(Q, coef, in_bulk, s0):
    """Per context, the atom masses ``(n, K)`` of the flip of least KL (NaN rows where none is found) and
    that KL.  In log q' the objective −Σ q_a log q'_a is linear and the score Σ c_w log q'_w − Σc log q'_B is
    linear off the bulk, so the Lagrange conditions of min KL subject to score = threshold (and Σ q' = 1)
    leave one free multiplier μ: the curve of :func:`_family`.  Without a task word in the bulk it is
    q' = q + μα', α' = (c_w, −Σc on the bulk, 0), and the problem is convex: the one root is the minimum
    (for a contrast task, Σc = 0, the pair move between its words).  With one, the score may cross the
    threshold more than once along the curve: each crossing on a grid of ζ is a candidate, the one of least KL
    is bisected."""
    label, tol = s0 >= 0, _OVERSHOOT * (1 + np.abs(s0))
    goal = np.where(label, -s0 - 2 * tol, -s0 + 2 * tol)[:, None]
    n = len(s0)

    def gap(zeta):  # > 0 where the head has flipped, (n, G)
        Qn = _family(Q, in_bulk, interval, zeta)
        d = _score_change(Q, coef, in_bulk, Qn) - goal
        return np.where(label[:, None], -d, d), Qn

    # the grid, and each context's own point ζ_0 (μ = 0, q' = q), so that the crossings next to it are bracketed
    interval = _interval(Q, coef, in_bulk)  # the same for every ζ: computed once
    lo, hi = interval[3:]
    with np.errstate(divide="ignore", invalid="ignore"):
        zeta0 = np.where(np.isfinite(lo), np.log(-lo), 0.0) - np.where(np.isfinite(hi), np.log(hi), 0.0)
    grid = np.sort(np.concatenate([np.broadcast_to(_ZETA, (n, len(_ZETA))), zeta0], 1), 1)
    g, Qn = gap(grid)
    kl = _atom_kl(Q, Qn)
    ok = np.isfinite(g)
    # a bracket (i, i + 1) crosses into the flip; its cost: the KL at its flipped end
    cross = ok[:, :-1] & ok[:, 1:] & ((g[:, :-1] > 0) != (g[:, 1:] > 0))
    end_kl = np.where(g[:, 1:] > 0, kl[:, 1:], kl[:, :-1])
    pick = np.argmin(np.where(cross, end_kl, np.inf), 1)
    found = cross[np.arange(n), pick]
    lo, hi = grid[np.arange(n), pick], grid[np.arange(n), pick + 1]
    flipped_hi = g[np.arange(n), pick + 1] > 0
    for _ in range(_BISECT + 40):
        mid = (lo + hi) / 2
        f = gap(mid[:, None])[0][:, 0] > 0
        to_hi = f == flipped_hi  # mid is on the flipped end's side: move that end
        lo, hi = np.where(to_hi, lo, mid), np.where(to_hi, mid, hi)
    end = np.where(flipped_hi, hi, lo)
    g_end, Q_end = gap(end[:, None])
    found &= g_end[:, 0] > 0
    Q_end = Q_end[:, 0]
    return np.where(found[:, None], Q_end, np.nan), np.where(found, _atom_kl(Q, Q_end[:, None])[:, 0], np.inf)


def _word_task_and_bulk(task, ctx: AnchorContexts, bulk) -> tuple:
    """``task`` and ``bulk`` checked against the rows, the task one with words (the anchored head's)."""
    task = check_task(task, ctx)
    if task.words is None:
        raise ConfigError(f"task: the {task.name!r} task has no words; the bound is on the anchored head")
    return task, check_bulk(bulk, ctx.logp.shape)


def flip_costs(task: AnchorTask, ctx: AnchorContexts, bulk, *, by: str = "kl") -> FlipCosts:
    """For every context, the move of probability mass between the task words, the bulk and the rest that
    flips the anchored head (probability part, ρ = 0) at the least KL (``by="kl"``: for an ε budget) or TV
    (``by="tv"``), among the moves of the module docstring's worst LM: every pair move and the least-KL
    flip (:func:`_least_kl_flip`, ``move`` = ``len(moves)``, ``g`` NaN)."""
    if by not in ("kl", "tv"):
        raise ConfigError(f"by: expected 'kl' or 'tv', got {by!r}")
    task, bulk = _word_task_and_bulk(task, ctx, bulk)
    Q, coef, in_bulk, _ = _atoms(task, ctx, bulk)
    s0 = task.score + task.bias
    n, K = Q.shape
    moves = _moves(K)
    best = {key: [np.full(n, np.inf), np.full(n, np.inf), np.full(n, -1), np.full(n, np.nan), np.full((n, K), np.nan)]
            for key in ("kl", "tv")}

    def offer(i, tv, kl, g, atoms, ok, rtol=0.0):  # keep a candidate where it is cheaper (by more than rtol)
        for key, cost in (("kl", kl), ("tv", tv)):
            b = best[key]
            better = ok & (cost < (b[1] if key == "kl" else b[0]) * (1 - rtol))
            b[0][better], b[1][better], b[2][better], b[3][better], b[4][better] = (
                tv[better], kl[better], i, g[better], atoms[better])

    for i, (S, D) in enumerate(moves):
        g = _first_flip(Q, coef, in_bulk, S, D, s0)
        _, tv, kl = (a[:, 0] for a in _move_effect(Q, coef, in_bulk, S, D, np.nan_to_num(g)[:, None]))
        with np.errstate(divide="ignore", invalid="ignore"):
            atoms = Q * np.where(S, 1 - g[:, None], np.where(D, 1 + (g * (Q @ S) / (Q @ D))[:, None], 1.0))
        offer(i, tv, kl, g, atoms, np.isfinite(g) & np.isfinite(kl) & np.isfinite(tv))
    atoms, kl = _least_kl_flip(Q, coef, in_bulk, s0)
    tv = 0.5 * np.abs(atoms - Q).sum(1)
    # ties go to the pair move (the least-KL flip is one where no task word is in the bulk of a contrast task)
    offer(len(moves), tv, kl, np.full(n, np.nan), atoms, np.isfinite(kl) & np.isfinite(tv), rtol=1e-9)
    gamma, c1 = task_gamma(task, ctx, bulk), float(np.abs(task.coef).sum())
    threshold = np.minimum(gamma / 2, gamma * task.margin / (4 * c1)) if c1 > 0 else np.full(n, gamma / 2)
    min_tv = best["tv"][0]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(np.isfinite(min_tv), threshold / min_tv, 0.0)
    tv, kl, move, g, atoms = best[by]
    return FlipCosts(tv, kl, move, g, threshold, share, moves, by, atoms, _costs_source(task, ctx, bulk))


def flippable(task: AnchorTask, ctx: AnchorContexts, bulk) -> np.ndarray:
    """``(n,)`` bool: the contexts some LM's laws flip the anchored head on (probability part, ρ = 0), from the
    range of P(q) = Σ_w c_w log(q_w / q_B) over all laws q.  Its supremum is finite only where no c_w < 0 and
    every word of c_w > 0 is in the bulk (q_w ≤ q_B): Σ_{c_w>0} c_w log(c_w / Σc) (approached, not reached, at
    finite KL); its infimum, likewise, only where no c_w > 0 and every word of c_w < 0 is in the bulk; both are 0
    where the bulk is one word, the only one of c_w ≠ 0 (then P = 0 under every law).  A
    negative context flips where s0 + sup P − P(p*) ≥ 0, a positive one where s0 + inf P − P(p*) < 0 (s0 the
    score at p*).  No LM errs on the others, so the largest head error any LM has is their complement's
    π-mass: a bound at or above it cannot fail (before 2026-12-07 every worst-case row took 1, and the demo's
    anchored task, 15 % of its positions beyond reach, read non-trivial at share 1.0 where the worst LM had
    flipped all it could; a review).  Independent of :func:`flip_costs`, whose finite costs must be these."""
    task, bulk = _word_task_and_bulk(task, ctx, bulk)
    c = np.asarray(task.coef, np.float64)
    in_bulk = bulk[:, task.words]  # (n, k)
    pos, neg = c > 0, c < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        sup = float(c[pos] @ np.log(c[pos] / c[pos].sum())) if pos.any() else 0.0
        inf = float(c[neg] @ np.log(c[neg] / c[neg].sum())) if neg.any() else 0.0
    sup = np.where(~neg.any() & in_bulk[:, pos].all(1), sup, np.inf)
    inf = np.where(~pos.any() & in_bulk[:, neg].all(1), inf, -np.inf)
    # the bulk one word and the only word of c_w ≠ 0: P = c_b log(q_b / q_b) = 0 under every law (a review)
    const = (bulk.sum(1) == 1) & in_bulk[:, c != 0].all(1)
    sup, inf = np.where(const, 0.0, sup), np.where(const, 0.0, inf)
    s0 = task.score + task.bias
    now = probability_part(ctx.logp, bulk, task.words, task.coef)
    with np.errstate(invalid="ignore"):
        return np.where(task.labels, s0 + inf - now < 0, s0 + sup - now >= 0)


def reachable_error(task: AnchorTask, ctx: AnchorContexts, bulk) -> float:
    """The largest head error (probability part, ρ = 0) any LM has on ``ctx``'s rows: the π-mass of the
    :func:`flippable` contexts (1 where every context can flip)."""
    return min(math.fsum(ctx.weights[flippable(task, ctx, bulk)].tolist()), 1.0)


def _apply(ctx: AnchorContexts, task, bulk, atoms, t) -> np.ndarray:
    """log p of the LM that takes, in each context x with finite ``atoms[x]``, the fraction ``t[x]`` of the way
    from the world's atom masses to ``atoms[x]`` (every word of an atom scaled by the atom's factor)."""
    Q, _, _, atom = _atoms(task, ctx, bulk)
    logp = ctx.logp.copy()
    for x in np.flatnonzero(np.isfinite(atoms).all(1) & (t > 0)):
        logp[x] += _path_log_factors(Q[x], atoms[x], t[x])[atom[x]]
    return log_softmax(logp)  # renormalise the float64 rounding away


def _path_log_factors(q, target, t) -> np.ndarray:
    """log(q'_a / q_a) of the atom masses q' a fraction ``t`` of the way from ``q`` to ``target`` (one
    context; 0 for an atom of no mass)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q1 = np.where(q > 0, q, 1.0)
        step = t * (target - q) / q1
        # log1p where q' is near q; log q' − log q where the path drains an atom (−1 + 1e-35 rounds to −1)
        return np.where(q > 0, np.where(step > -0.5, np.log1p(step), np.log((1 - t) * q + t * target) - np.log(q1)),
                        0.0)


def _path_kl(q, target, t) -> float:
    """KL of the atom masses a fraction ``t`` of the way from ``q`` to ``target`` (one context)."""
    return float(-(q * _path_log_factors(q, target, t)).sum())


@dataclasses.dataclass(frozen=True, eq=False)
class WorstCase:
    """The worst LM found for the transfer bound at a budget: ``logp_lm (n, V)``, its exact ``eps``, the
    head ``error`` (probability part, ρ = 0: :func:`~simlm.theory.anchors.head_errors` with r_LM = r*),
    ``flipped (n,)``, ``tv (n,)``, the ``bounds`` ({form: TransferBound} at ρ = 0), ``share`` ({form:
    error/bound}) and ``tv_share`` = max over the flipped contexts of t(margin_x)/TV_x (0 if none)."""

    logp_lm: np.ndarray
    eps: float
    error: float
    flipped: np.ndarray
    tv: np.ndarray
    bounds: dict
    share: dict
    tv_share: float


def _evaluate(task, ctx, bulk, logp_lm, costs: FlipCosts, forms=None) -> WorstCase:
    zero = np.zeros(len(ctx.weights))
    s0 = task.score + task.bias
    lm = head_errors(task, ctx, bulk, logp_lm, zero, zero)  # r_LM = r*: the probability part
    moved = s0 + probability_part(logp_lm, bulk, task.words, task.coef) - probability_part(ctx.logp, bulk, task.words,
                                                                                         task.coef)
    flipped = (moved >= 0) != task.labels
    tv = context_divergences(ctx.logp, logp_lm)[1]
    bounds = {f: transfer_bound(task, ctx, bulk, logp_lm, 0.0, form=f) for f in ("markov", "per-context")}
    with np.errstate(divide="ignore", invalid="ignore"):
        tv_share = float(np.max(np.where(flipped, costs.threshold / tv, 0.0), initial=0.0))
    return WorstCase(logp_lm, exact_epsilon_rows(ctx, logp_lm), lm.error, flipped, tv, bounds,
                     {f: lm.error / b.bound if b.bound > 0 else (np.inf if lm.error > 0 else 0.0)
                      for f, b in bounds.items()}, tv_share)


def worst_case_lm(task: AnchorTask, ctx: AnchorContexts, bulk, eps: float, *, costs: FlipCosts | None = None,
                  spend: bool = True) -> WorstCase:
    """The LM of (at most, and with ``spend`` exactly) ``eps`` that flips the most π-mass of the anchored
    head's contexts (module docstring): the contexts in increasing order of their cheapest flip's KL
    (:func:`flip_costs`), each flipped while the budget Σ π_x KL_x ≤ ε still affords it (one that no longer
    fits is skipped, and later, cheaper ones in π_x KL_x still flip), then the rest of the budget part of the
    way (in atom masses) to the first unflipped context's flip, stopped short of it.  ε is less than ``eps``
    only when every context that can flip is flipped.

    The most π-mass is a knapsack (value π_x, cost π_x KL_x); in the order of KL (value per cost) the
    prefix is its optimum at every budget a prefix spends exactly (:func:`worst_case_slack` scans the whole
    Pareto frontier of the flip sets, a share of the bound being no knapsack) — and, with equal weights
    (:func:`~simlm.theory.anchors.anchor_contexts`' own), at every budget.
    Between those budgets with unequal weights the skipping order is a lower bound on it (before 2026-12-06
    the order stopped at the first context that did not fit, and on five contexts of Dirichlet(0.7) weights
    flipped none where one fitted).
    ``costs``: :func:`flip_costs` (``by="kl"``) of this task, these rows and this bulk (computed when None;
    costs of another task, rows, bulk or ``by`` are refused: the LM built from them is not the worst for this
    task)."""
    eps = check_positive("eps", eps)
    if costs is None:
        costs = flip_costs(task, ctx, bulk)
    else:
        check_instance("costs", costs, FlipCosts, "the FlipCosts of flip_costs")
        if costs.by != "kl":
            raise ConfigError(f"costs: expected the costs of flip_costs(by='kl') (the worst LM spends its budget "
                              f"on the cheapest flips in KL), got by={costs.by!r}")
        task, bulk = check_task(task, ctx), check_bulk(bulk, ctx.logp.shape)
        if costs.source != _costs_source(task, ctx, bulk):
            raise ConfigError("costs: these flip costs were computed for another task, rows or bulk; pass "
                              "flip_costs(task, ctx, bulk) of this task (or leave costs out)")
    w = ctx.weights
    order = np.argsort(np.where(w > 0, costs.kl, np.inf), kind="stable")
    order = order[np.isfinite(costs.kl[order]) & (w[order] > 0)]
    spent, t = 0.0, np.zeros(len(w))
    for x in order:  # cheapest per unit of π first; one that no longer fits is skipped
        if spent + w[x] * costs.kl[x] <= eps:
            spent += w[x] * costs.kl[x]
            t[x] = 1.0
    rest = order[t[order] < 1]
    if spend and rest.size:
        x = rest[0]
        q = _atoms(task, ctx, bulk)[0][x]
        need = (eps - spent) / w[x]  # KL is convex in t, 0 at 0: bisect for KL = need below the flip
        lo, hi = 0.0, 1.0
        for _ in range(_BISECT):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _path_kl(q, costs.atoms[x], mid) < need else (lo, mid)
        t[x] = lo
    return _evaluate(task, ctx, bulk, _apply(ctx, task, bulk, costs.atoms, t), costs)


#: the most Pareto-optimal flip sets :func:`worst_case_slack` evaluates one by one (a frontier that grows past it
#: is left for the prefixes of both orders and the single flips: ``"exhaustive": False``)
FRONTIER_CAP = 4096


def _flip_frontier(order, value, cost, cap: int):
    """The Pareto frontier of the flip sets — the least Σ π_x KL_x for each flipped π-mass Σ π_x, the sets
    that no other flips more of at no more cost — as ``[(cost, members)]`` in increasing cost (the empty set
    left out), or None past ``cap`` sets.  The contexts enter in ``order`` (cheapest KL first), so a set's
    cost is summed in that order: a prefix's cost is its prefix sum, bit for bit (:func:`worst_case_lm`
    at it flips the same contexts)."""
    front = [(0.0, 0.0, ())]
    for x in order:
        grown = front + [(c + cost[x], v + value[x], m + (int(x),)) for c, v, m in front]
        grown.sort(key=lambda e: (e[0], -e[1]))
        front, best = [], -math.inf
        for e in grown:
            if e[1] > best:
                front.append(e)
                best = e[1]
        if len(front) > cap + 1:
            return None
    return [(c, m) for c, _, m in front if m]


def worst_case_slack(task: AnchorTask, ctx: AnchorContexts, bulk, *, n_budgets: int | None = None) -> dict:
    """The largest share of the bound the worst LM uses, over the LMs that flip whole contexts: the Pareto
    frontier of the flip sets (least Σ π_x KL_x per flipped π-mass; ``n_budgets`` of its sets, spread evenly,
    when given).  The markov bound grows with ε alone and the error is the flipped π-mass, so a set off the
    frontier uses no more of it than one on it; a partial flip adds ε and no error.  With equal weights the
    frontier is the prefixes of the cheapest-first order, the budgets where :func:`worst_case_lm` flips one
    more context; with unequal ones it holds sets no prefix is — a light context alone, where the prefixes'
    first flip already made the bound ≥ 1 (before 2026-12-06 only prefixes were scanned: "trivial at every
    ε" was reported beside an LM using 1.7 % of a bound of 0.57, a review).  The prefixes are scanned too (the
    per-context form is no function of ε alone).  A frontier of more than :data:`FRONTIER_CAP` sets is not
    scanned: the prefixes of the KL and of the π_x KL_x order and each single flip are, and ``"exhaustive"``
    is False (True otherwise).

    Per form, ``{"share", "error", "bound", "eps", "budget", "flipped"}`` at the set of the largest
    error/bound among the non-trivial bounds (below :func:`reachable_error`, the largest error any LM has;
    all None if every bound is trivial: with ``"exhaustive"`` no
    LM flipping whole contexts could violate the markov bound); ``"markov-tail"``: the same for the Markov
    term alone, min(ε/(2t²), 1) at t = t(smallest margin), where P(margin < m) is 0 and cannot carry the
    error; ``"tv_share"``: max_x t(margin_x)/TV_x over the cheapest-in-TV flips (None if no context can
    flip).  ``eps`` is the worst LM's own ε (its KL, at which the bound is evaluated), ``flipped`` the
    contexts it flips and ``budget`` their Σ π_x KL_x: where they are a prefix of the cheapest-first order
    (always with equal weights) ``worst_case_lm`` at ``budget`` (``spend=False``) gives that LM back, while
    its ε, ~1e-16 absolute below (1e-7 relative at ε = 3e-10), may afford one flip fewer."""
    costs = flip_costs(task, ctx, bulk)
    w = ctx.weights
    order = np.argsort(np.where(w > 0, costs.kl, np.inf), kind="stable")
    order = order[np.isfinite(costs.kl[order]) & (w[order] > 0)]
    if n_budgets is not None:
        n_budgets = check_positive_int("n_budgets", n_budgets)
    cost = w * np.where(np.isfinite(costs.kl), costs.kl, 0.0)
    frontier = _flip_frontier(order, w, cost, FRONTIER_CAP)
    exhaustive = frontier is not None
    prefixes = np.cumsum(cost[order])  # bit for bit the budgets at which worst_case_lm flips one more context
    sets = {tuple(int(x) for x in order[:k + 1]): float(prefixes[k]) for k in range(order.size)}
    if exhaustive:
        sets.update({m: c for c, m in frontier})
    else:
        by_cost = order[np.argsort(cost[order], kind="stable")]
        rank = {int(x): i for i, x in enumerate(order)}
        for m in [by_cost[:k] for k in range(1, by_cost.size + 1)] + [[x] for x in order]:
            m = tuple(sorted((int(x) for x in m), key=rank.get))  # summed in the KL order, as the frontier's
            sets.setdefault(m, float(np.cumsum(cost[list(m)])[-1]))
    sets = sorted((c, m) for m, c in sets.items() if c > 0)
    if n_budgets is not None and len(sets) > n_budgets:
        sets = [sets[i] for i in np.unique(np.linspace(0, len(sets) - 1, n_budgets).round().astype(int))]
    t_min = costs.threshold[w > 0].min()  # t at the smallest margin (ρ = 0)
    reachable = reachable_error(task, ctx, bulk)  # no LM errs more: a bound at or above it cannot fail
    empty = {"share": None, "error": None, "bound": None, "eps": None, "budget": None, "flipped": None}
    out = {form: dict(empty) for form in ("markov", "per-context", "markov-tail")}

    def keep(key, error, bound, eps, budget, members):
        if bound < reachable and (out[key]["share"] is None or error / bound > out[key]["share"]):
            out[key] = {"share": error / bound if bound > 0 else math.inf, "error": error, "bound": bound, "eps": eps,
                        "budget": budget, "flipped": sorted(members)}

    for budget, members in sets:
        t = np.zeros(len(w))
        t[list(members)] = 1.0
        wc = _evaluate(task, ctx, bulk, _apply(ctx, task, bulk, costs.atoms, t), costs)
        for form, b in wc.bounds.items():
            keep(form, wc.error, b.bound, wc.eps, float(budget), members)
        keep("markov-tail", wc.error, markov_tail(t_min, wc.eps), wc.eps, float(budget), members)
    out["tv_share"] = float(costs.tv_share.max()) if np.isfinite(costs.kl).any() else None
    out["exhaustive"] = exhaustive
    return out


def tight_world(margin: float = 0.5, gamma: float = 0.25, n_states: int = 2):
    """A world built so that the bound's steps are as tight as they can be for the anchored head of one word:
    words (other, w, b), features f*(x) = log p*(·|x), V* = I, the task word w (c = 1), the bulk B = {b},
    and ``n_states`` = 2k states: one state A with p*(w|x) = p*(b|x) = γ, k − 1 positives with p*(w|x) = γe^{2m},
    p*(b|x) = γ and k negatives with p*(w|x) = γ, p*(b|x) = γe^{2m} (the other word holds the rest).  Then
    log Z_B = ⟨e_b, f⟩ exactly (r = 0), the task's score is log p*(w|x) − log p*(b|x) + const, the balanced
    threshold sits at −m (A's and the negatives' margins are m, the other positives' 3m), γ is the floor of
    the task word and the bulk, and A flips when a fraction tanh(m/2) of w's mass γ moves onto b: TV =
    γ tanh(m/2) against the bound's t(m) = γ m/4 (m ≤ 2).  Returns ``(world, words, coef, bulk_words)``."""
    from simlm.worlds import LogLinearWorld

    m, g = check_positive("margin", margin), check_positive("gamma", gamma)
    k = check_positive_int("n_states", n_states, minimum=2) // 2
    if n_states % 2:
        raise ConfigError(f"n_states: expected an even number of states (balanced classes), got {n_states}")
    if not (2 * m < 700 and g * (1 + math.exp(2 * m)) < 1):  # e^(2m) past float range: no γ > 0 fits either
        raise ConfigError(f"gamma: γ(1 + e^(2·margin)) must be below 1, got gamma={gamma!r}, margin={margin!r}")
    hi = g * math.exp(2 * m)
    p = np.array([[1 - 2 * g, g, g]] + [[1 - g - hi, hi, g]] * (k - 1) + [[1 - g - hi, g, hi]] * k)
    world = LogLinearWorld(np.log(p), np.eye(3), np.zeros((2 * k, 3), int), 0)
    return world, np.array([1]), np.array([1.0]), np.array([2])


__all__ = ["exact_epsilon_rows", "analytic_laws", "lm_residual", "Construction", "n1_construction", "n2_construction",
           "FlipCosts", "flip_costs", "flippable", "reachable_error", "WorstCase", "worst_case_lm", "worst_case_slack",
           "tight_world"]
