"""Head and prompt tuning on an HMM's masked LM — Wei, Xie & Ma (NeurIPS 2021), "Why do pretrained
language models help in downstream tasks?  An analysis of head and prompt tuning".

Setting.  An HMM with ``initial π (K,)``, ``transition A (K, K)``, ``emission B (K, V)``.  A masked
position 0 is prepended before the input x = x_1:T (H_0 ~ π, H_1 ~ πA); the optimal masked LM reads

    P(H_0 = h | x) ∝ π_h β_0(h),   β_0(h) = P(x_1:T | H_0 = h),   φ(x) = Bᵀ P(H_0 | x) ∈ R^V.

The downstream task is y(x) = 1[μᵀ P(H_0 | x) ≥ 0] for a task vector μ ∈ R^K, S = supp(μ) ∩ supp(π):
a state with π_h = 0 has P(H_0 = h | x) = 0 for every x, so μ_h never changes a label, but a prompt can
move mass onto it, where r = α ⊘ π below is undefined — the prompt must keep off it like any h ∉ S.

Head tuning.  A linear head scores bᵀφ(x) = (B b)ᵀ P(H_0 | x).  If μ = B b for some b (μ ∈ col(B)) the
score *is* μᵀP(H_0|x), so sign(head) = y on every input; rank B = K (non-degeneracy) puts every μ in
col(B).  μ ∉ col(B) does not by itself prove that every head fails (only the sign matters); a
:func:`failure_certificate` does: two inputs with equal features and different labels.

Prompt tuning.  k fake tokens z_1..z_k before position 0, each with an emission-likelihood row
u_j ∈ R^K_{≥0} over hidden states (the prompt chain starts at the first prompt position with π):

    α = [((π∘u_1)A ∘ u_2)A … ∘ u_k] A ∈ R^K,   P(H_0 | z, x) ∝ α ∘ β_0(x) ∝ P(H_0 | x) ∘ r,   r = α ⊘ π.

So a prompt reweights the posterior by an x-independent r ≥ 0 (for k = 1, r = Aᵀ(π∘u) ⊘ π).  If r
vanishes off S and is positive on S, the prompted posterior p' lives on S and a head b with
B_S b = μ_S ⊘ r_S (solvable when B_S, the |S|×V rows of B on S, has full row rank |S|) scores

    bᵀBᵀp' = Σ_{h∈S} (μ_h/r_h) p_h r_h / Z = μᵀP(H_0|x) / Z,   Z = Σ_h p_h r_h > 0,

the task's sign again: only B_S needs full row rank, a weaker non-degeneracy than rank B = K.
When can r vanish off S?  r_h = Σ_g α_k(g) A[g,h]/π_h with α_k the (reweighted) law at the last prompt
position, so supp α_k must lie in G = {g : A[g,h] = 0 ∀h ∉ S}, and every h ∈ S needs some g ∈ supp α_k
with A[g,h] > 0.  supp α_k ⊆ R_k, the states reachable at prompt step k from supp π (R_1 = supp π);
any subset is attainable with indicator prompts.  Hence feasible ⇔ ∀h∈S ∃g ∈ G ∩ R_k : A[g,h] > 0.
"Zero" means ≤ δ × the row's largest entry (``delta`` of :func:`prompt_feasibility`, default 0: exact
zeros, the theorem's own hypothesis).  With δ > 0 the hypothesis is only approximate: where the graph
condition holds at δ = 0 too, the constructive prompt is still built from exact zeros (no leak); only
where it needs soft-gated states does it leave prior mass ≤ δ-ish off S (``PromptFeasibility.exact``
False), and that mass is reweighted per input by β_0(x) — it can take most of P(H_0 | z, x) and flip
labels, so the conclusion is then not the theorem's.  The range of δ for which the graph condition
holds is :func:`simlm.theory.head_prompt_margins.feasibility_range`.

Tolerances and margins (derived here, not in the paper).  Every condition takes an explicit ``tol`` and
reports ``margin``, a signed distance to its threshold that is > 0 (≥ 0 for the residual) exactly when
the condition holds: σ_min/σ_max − tol for the ranks, tol − residual for head realisability.  Every
relative threshold — ``tol`` (0 < tol < 1), ``delta`` (0 ≤ δ < 1) and the label ``margin`` (0 < margin
< 1, relative to max|μ|) — must be below 1: at 1 or more the condition is void (every σ is "zero", every
μ "realisable" with the zero head, every label "without margin"), so such a value is refused.
The ranks are those of the parameters as stored: a float32 world's entries carry rounding of ~6e-8 of
their size, so a σ_min/σ_max below ~1e-7 is full rank only as stored — a B built with one row the mean
of two others reads rank K at the default tol = 1e-10 (σ ratio ~1e-8, the head B⁺μ of norm ~1e7–1e8), and
rank K − 1 at tol = 1e-6 or in float64.  Read ``margin`` beside the verdict, or pass the tol of the
precision you mean.

Memory HMMs (:class:`~simlm.worlds.memory.MemoryHMM`) are analysed through their joint HMM over
(memory configuration, cell, syntactic state); :func:`memory_rank` checks the memory-task condition:
the M×V rows emission[:, q, :] have full row rank M.

All analyses are host-side numpy float64 on the world's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import numpy as np

from simlm.errors import ConfigError, ShapeError, ZeroProbabilityError
from simlm.checks import (check_instance, check_non_negative, check_positive, check_positive_int, check_real_array,
                          check_tokens)
from simlm.precision import in_float64
from simlm.worlds import hmm_core as core
from simlm.worlds import prompting
from simlm.worlds.hmm import ChainInference
from simlm.worlds.hmm_core import Chain
from simlm.worlds.memory import MemoryHMM
from simlm.worlds.prompting import check_prompt

_TOL, _MARGIN = 1e-10, 1e-9


def _relative(name: str, value, *, zero: bool = False) -> float:
    """A relative threshold in (0, 1) — [0, 1) with ``zero`` — as a float, or a ConfigError naming ``name``:
    at 1 or more a relative tolerance voids its condition (module docstring)."""
    v = check_non_negative(name, value, finite=True) if zero else check_positive(name, value)
    if v >= 1:
        raise ConfigError(f"{name}: a relative threshold must be below 1 (it is a fraction of the largest "
                          f"entry, singular value or |μ|; at ≥ 1 the condition it sets says nothing), got {value!r}")
    return v


# ---- parameters, posteriors ------------------------------------------------------------------------

def chain64(world) -> Chain:
    """The world's exact chain in float64 numpy with a dense transition: (π (K,), A (K, K), B (K, V)); a
    MemoryHMM gives its joint chain (K = M^N·N·Q)."""
    check_instance("world", world, ChainInference, "an HMM or a MemoryHMM (a world with an exact hidden chain)")
    chain = world.chain
    return Chain(*(np.asarray(a, np.float64) for a in (chain.initial, chain.dense_transition(), chain.emission)))


def _float64(fn, *args) -> tuple[np.ndarray, ...]:
    """``fn(*args)`` — a pure inference function of :mod:`simlm.worlds` — computed in float64, as numpy."""
    out = in_float64(fn, *args)
    return tuple(np.asarray(o, np.float64) for o in (out if isinstance(out, tuple) else (out,)))


_prepended_posterior = core.batched(core.prepended_state_posterior)
_prompted_posterior = core.batched(prompting.prompted_state_posterior)
_prompt_prior, _prompt_reweighting = jax.jit(prompting.prompt_prior), jax.jit(prompting.prompt_reweighting)


def check_task_vector(mu, K: int) -> np.ndarray:
    """μ (K,) as float64: real, finite, not all zero — or a typed error naming ``mu``."""
    m = check_real_array("mu", mu)  # a real numeric task vector: no strings, complex or NaN
    if np.asarray(mu).dtype == bool:  # failure_certificate reads a bool array as labels, not as μ
        raise ConfigError("mu: a bool array is labels, not a task vector; give μ as real weights per hidden state")
    if m.shape != (K,):
        raise ShapeError(f"mu: expected shape ({K},) — one weight per hidden state — got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ConfigError(f"mu: entry {int(np.flatnonzero(~np.isfinite(m))[0])} is not finite")
    if not np.any(m):
        raise ConfigError("mu: all zero, so the task 1[μᵀP(H_0|x) ≥ 0] is constant; give a nonzero task vector")
    return m


def prompt_task_vector(mu, pi) -> np.ndarray:
    """μ (K,) as float64, zeroed where π = 0: the same labels 1[μᵀP(H_0|x) ≥ 0] on every x (P(H_0 = h | x)
    = 0 where π_h = 0), and its support S = supp μ ∩ supp π is the one the prompt theory needs (module
    docstring).  S is empty when μ lives where π = 0 (the task is then constant: μᵀP(H_0|x) = 0)."""
    return np.where(pi > 0, check_task_vector(mu, len(pi)), 0.0)


def _posterior_where_defined(world, tokens, U=None) -> tuple[np.ndarray, np.ndarray]:
    """(P(H_0 | x) (``U`` None) or P(H_0 | z, x) for prompt likelihoods ``U (k, K)``, (n, K) float64 with
    zero rows where undefined; ``defined (n,)``: the input has positive probability (with the prompt)."""
    pi, A, B = chain64(world)
    toks, _ = check_tokens(tokens, B.shape[1])
    if U is None:
        post, steps = _float64(_prepended_posterior, pi, A, B, toks)
    else:
        post, steps = _float64(_prompted_posterior, pi, A, B, check_prompt(U, len(pi)), toks)
    defined = np.isfinite(steps).all(1) & np.isfinite(post).all(1) & (post.sum(1) > 0)
    return np.where(defined[:, None], post, 0.0), defined


def _posterior(world, tokens, U=None) -> np.ndarray:
    """P(H_0 | x) (``U`` None) or P(H_0 | z, x) for prompt likelihoods ``U (k, K)``, (n, K) float64; a
    ZeroProbabilityError for an input of probability zero."""
    post, defined = _posterior_where_defined(world, tokens, U)
    if not defined.all():
        bad = ~defined
        what = "under the world with position 0 prepended" if U is None else "together with the prompt"
        raise ZeroProbabilityError(f"tokens: sequence {int(np.flatnonzero(bad)[0])} has probability zero {what} "
                                   f"({int(bad.sum())} of {len(bad)} sequences), so P(H_0 | ·) is undefined")
    return post


def state_posterior0(world, tokens) -> np.ndarray:
    """P(H_0 | x_1:T) ∝ π ∘ β_0(x) for the prepended masked position, (n, K) float64."""
    return _posterior(world, tokens)


def _reweighting(world, U) -> tuple[np.ndarray, np.ndarray]:
    """(P(H_0 | z) (K,), r = P(H_0 | z) ⊘ π scaled to max 1 (K,)) in float64 (:mod:`simlm.worlds.prompting`)."""
    pi, A, _ = chain64(world)
    u = check_prompt(U, len(pi))
    return _float64(_prompt_prior, pi, A, u)[0], _float64(_prompt_reweighting, pi, A, u)[0]


# ---- records ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmissionRank:
    """Non-degeneracy of B (K, V): singular values (K,), padded with zeros when K > V."""
    rank: int
    n_states: int
    singular_values: np.ndarray
    sigma_min: float
    condition_number: float
    full_row_rank: bool
    tol: float = _TOL
    margin: float = float("nan")  # σ_K/σ_1 − tol: > 0 ⇔ full row rank


@dataclass(frozen=True)
class HeadRealisability:
    """The constructive head b = B⁺μ (V,) on the states of supp π, and ``residual`` = ‖μ − Πμ‖/‖μ‖ there, Π
    the projection onto B's left singular vectors with σ > tol·σ_max: min_b ‖Bb − μ‖/‖μ‖ where that is B's
    rank, else a residual that reads the singular values below tol as zero (an invertible B with σ_min/σ_max
    < tol reads 1.0 for a μ it fits to 1e-12; :func:`head_realisability`)."""
    residual: float
    head: np.ndarray
    realisable: bool
    tol: float
    margin: float = float("nan")  # tol − residual: ≥ 0 ⇔ realisable


@dataclass(frozen=True)
class Verification:
    """A head on (prompted) masked outputs against the labels y = 1[μᵀP(H_0|x) ≥ 0]; prediction
    1[score ≥ 0] (ties count as label 1 on both sides).  Inputs with |μᵀP(H_0|x)| ≤ margin·max|μ| are
    counted apart (relative to μ's scale, as the labels are: the largest |μ_h| over every state, for a head
    and for a prompt alike; inclusive, where :func:`~simlm.theory.head_prompt_margins.label_margins` gives
    an input exactly at its threshold a margin); ``holds`` ⇔ no error outside the margin.

    ``n_undefined``: inputs possible in the world but impossible together with the prompt (P(z, x) = 0,
    so the prompted output — and any prediction from it — is undefined).  Each counts as an error; it
    is within the margin whenever the prompt's reweighting r is positive on S (then P(H_0 ∈ S | x) = 0,
    so μᵀP(H_0|x) = 0: a tie, no margin — always so for a feasible :func:`prompt_feasibility` prompt), and an
    error outside it otherwise (a prompt that hides part of S from an input whose label it decides)."""
    n_samples: int
    fraction_correct: float
    n_errors: int
    n_within_margin: int
    n_errors_outside_margin: int
    margin: float
    max_off_support_mass: float  # max over defined x of P'(H_0 ∉ S | z, x); 0 for a head without prompt
    holds: bool
    n_undefined: int = 0


@dataclass(frozen=True)
class SupportRank:
    """B_S, the emission rows on S = supp(μ) ∩ supp(π): rank, σ_min, full row rank |S|."""
    support: tuple
    rank: int
    sigma_min: float
    full_row_rank: bool
    tol: float = _TOL
    margin: float = float("nan")  # σ_min(B_S)/σ_max(B_S) − tol: > 0 ⇔ full row rank |S|


@dataclass(frozen=True)
class PromptFeasibility:
    """Whether k prompt tokens can make P(H_0 | z, x) vanish off S and stay positive on S.

    ``reachable[j]``: R_{j+1}, states attainable at prompt step j+1; ``allowed[j]``: states used by the
    constructive prompt (indicator rows of ``prompt``, (k, K)); ``gate``: G = {g : A[g, S^c] = 0};
    ``uncovered``: states of S no allowed last-step state leads to.  ``reweighting``: r of the
    constructive prompt (max 1), ``margin`` = min_{h∈S} r_h where feasible, else 0 (at δ > 0 the prompt of an
    infeasible graph can still have r_S > 0, through entries δ reads as zero), ``off_support_mass`` =
    P(H_0 ∉ S | z) (NaN where no prompt is built: no allowed last-step state);
    ``delta``: the soft-zero threshold δ the graph was read at (0: exact zeros; ``tol`` is its old name).
    ``exact``: the constructive prompt leaves exactly zero mass off S (every last-step state has
    A[g, h] = 0 for h ∉ S), so P(H_0 ∉ S | z, x) = 0 for every x — the theorem's hypothesis.  It is built
    from the exact graph whenever that is feasible, so with δ > 0 it is False only where soft-gated states
    are needed; then ``off_support_mass`` > 0 is the leak of the prompt's prior α, which P(H_0 | z, x) ∝
    α ∘ β_0(x) reweights per input — it can carry most of the prompted posterior
    (``Verification.max_off_support_mass``)."""
    feasible: bool
    k: int
    support: tuple
    gate: tuple
    reachable: tuple
    allowed: tuple
    uncovered: tuple
    reweighting: np.ndarray
    margin: float
    off_support_mass: float
    prompt: np.ndarray
    reason: str
    delta: float = 0.0
    exact: bool = False

    @property
    def tol(self) -> float:
        """The soft-zero threshold δ (``delta``) under its former name."""
        return self.delta


@dataclass(frozen=True)
class MemoryRank:
    """For each syntactic state q, the M×V memory-value rows emission[:, q, :]: rank, σ_min."""
    n_values: int
    ranks: np.ndarray
    sigma_min: np.ndarray
    condition_number: np.ndarray
    full_rank: np.ndarray
    any_full_rank: bool
    all_full_rank: bool
    tol: float = _TOL
    margins: np.ndarray | None = None  # (Q,) σ_M/σ_1 − tol at each q: > 0 ⇔ full rank M there


@dataclass(frozen=True)
class FailureCertificate:
    """Pairs (i, j) of inputs with max|φ(x_i) − φ(x_j)| ≤ tol and y_i ≠ y_j (labels from μ: both
    outside the margin).  A pair at distance 0 is a proof that no head on φ gets both right; one at
    distance d > 0 that a head getting both right needs weights of size ≳ 1/d (``tol`` is an absolute
    feature distance, 1e-10 by default: keep it near rounding).  ``pairs`` (m, 2), ``distances`` (m,), ``labels``
    (m, 2), ``posteriors`` (m, 2, K); ``min_cross_distance``: the smallest feature distance between any
    two differently labelled inputs that take part."""
    found: bool
    pairs: np.ndarray
    distances: np.ndarray
    labels: np.ndarray
    posteriors: np.ndarray
    n_samples: int
    min_cross_distance: float
    tol: float


@dataclass(frozen=True)
class HeadPromptConditions:
    """Everything above for one (world, μ, inputs).  ``head_holds``: μ ∈ col(B) and the head B⁺μ is
    right on every input outside the margin; ``prompt_holds``: the prompt is feasible (at the record's
    ``prompt.delta``), B_S has full row rank and the constructive prompt + head are right outside the margin.
    ``consistent``: wherever a theorem's condition holds, its conclusion was observed; ``trivial``:
    ``consistent`` could not have been False — for each theorem, its condition fails or no input lies
    outside the label margin (there was nothing to get wrong; only a failure certificate then says
    anything).

    Read ``consistent`` as a check of the construction, not as evidence for the theorems.  Its head half
    cannot fail beyond rounding: given μ realisable, bᵀφ(x) = (Πμ)ᵀP(H_0|x) identically with ‖Πμ − μ‖ ≤
    tol·‖μ‖, so it fails only if that residual exceeds an input's label margin.  Its prompt half is the same
    identity (P(H_0|z,x) ∝ P(H_0|x) ∘ r) when ``prompt.exact``, so beyond rounding it can fail only through a
    soft-gated prompt (δ > 0 and ``prompt.exact`` False), whose leak off S the theorem does not cover."""
    emission: EmissionRank
    head: HeadRealisability
    head_check: Verification
    support: SupportRank
    prompt: PromptFeasibility
    prompt_head: np.ndarray | None
    prompt_check: Verification | None
    certificate: FailureCertificate | None
    head_holds: bool
    prompt_holds: bool
    consistent: bool
    trivial: bool = False


# ---- 1–3: ranks and head realisability ---------------------------------------------------------------

def _counted(s, tol) -> np.ndarray:
    """Which singular values ``s`` (descending) count towards the rank: σ_i > tol·σ_max (none when all are 0)."""
    return s / s[0] > tol if s[0] > 0 else np.zeros(len(s), bool)  # as the margin σ/σ_max − tol: one rounding


def _row_spectrum(M, tol):
    """(rank, singular values padded to the row count, σ_min, condition) of M (r, V)."""
    s = np.zeros(M.shape[0])
    sv = np.linalg.svd(M, compute_uv=False)
    s[:len(sv)] = sv
    return int(_counted(s, tol).sum()), s, float(s[-1]), float(s[0] / s[-1]) if s[-1] > 0 else float("inf")


def emission_rank(world, *, tol: float = _TOL) -> EmissionRank:
    """Rank of B (K, V) (σ_i > tol·σ_max counts), its singular values, σ_min = σ_K and σ_1/σ_K.
    rank B = K ⇒ every task μ is realised by the head b = B⁺μ (Wei et al.'s non-degeneracy)."""
    tol = _relative("tol", tol)
    B = chain64(world)[2]
    rank, s, smin, cond = _row_spectrum(B, tol)
    return EmissionRank(rank, B.shape[0], s, smin, cond, rank == B.shape[0], tol, _rank_margin(s, tol))


def _rank_margin(s, tol) -> float:
    """σ_min/σ_max − tol for singular values ``s`` (descending): > 0 ⇔ every σ_i > tol·σ_max."""
    return float(s[-1] / s[0] - tol) if s[0] > 0 else -tol


def head_realisability(world, mu, *, tol: float = _TOL) -> HeadRealisability:
    """b = B_P⁺μ_P and the residual ‖μ_P − Π μ_P‖/‖μ_P‖, the distance of μ_P from col(B_P), on the states
    P = supp π (P(H_0 | x) puts no mass elsewhere, so μ there never reaches a label), with Π the projection
    on the left singular vectors of B_P whose σ > tol·σ_max (the rank :func:`emission_rank` counts; B⁺ takes
    the same cutoff); realisable ⇔ residual ≤ tol, i.e. μ_P ∈ col(B_P), in which case bᵀφ(x) = μᵀP(H_0|x)
    for every x.  (The residual of Bb − μ would carry rounding of order ε·cond(B) and call an invertible,
    ill-conditioned B unrealisable.)  μ nonzero only off supp π: every label is 1, b = 0 realises it.
    Before 2026-12-05 μ on every state counted: π = (¾, ¼, 0), μ = (1, −2, 5) read unrealisable (residual
    0.82) although b = B_P⁻¹μ_P makes no error."""
    tol = _relative("tol", tol)
    pi, _, B = chain64(world)
    P = pi > 0
    m = check_task_vector(mu, B.shape[0])[P]
    B = B[P]
    if not np.any(m):
        return HeadRealisability(0.0, np.zeros(B.shape[1]), True, tol, tol)
    U, s, Vt = np.linalg.svd(B, full_matrices=False)
    keep = _counted(s, tol)
    c = U[:, keep].T @ m
    b = Vt[keep].T @ (c / s[keep])
    res = float(np.linalg.norm(m - U[:, keep] @ c) / np.linalg.norm(m))
    return HeadRealisability(res, b, res <= tol, tol, tol - res)


def _verify(m, p, p_scored, B, b, margin, defined=None, scale=None) -> Verification:
    """``defined (n,)``: where the scored posterior exists; elsewhere the prediction counts as wrong.
    ``scale``: the margin's unit, max|μ| (default max|m|)."""
    score_target = p @ m
    y = score_target >= 0
    pred = (p_scored @ (B @ b)) >= 0
    undefined = np.zeros(len(y), bool) if defined is None else ~defined
    scale = np.abs(m).max(initial=0.0) if scale is None else scale
    wrong, near = (pred != y) | undefined, np.abs(score_target) <= margin * scale
    return Verification(len(y), float(np.mean(~wrong)), int(wrong.sum()), int(near.sum()),
                        int((wrong & ~near).sum()), margin, 0.0, not np.any(wrong & ~near), int(undefined.sum()))


def verify_head(world, mu, b, tokens, *, margin: float = _MARGIN) -> Verification:
    """Score bᵀφ(x) = bᵀBᵀP(H_0|x) against y = 1[μᵀP(H_0|x) ≥ 0] on ``tokens`` (n, T); b (V,)."""
    margin = _relative("margin", margin)
    B = chain64(world)[2]
    m, b = check_task_vector(mu, B.shape[0]), _check_head(b, B.shape[1])
    p = state_posterior0(world, tokens)
    return _verify(m, p, p, B, b, margin)


def _check_head(b, V):
    b = check_real_array("b", b)
    if b.shape != (V,):
        raise ShapeError(f"b: expected a head of shape ({V},) over the vocabulary, got {b.shape}")
    return b


def support_rank(world, mu, *, tol: float = _TOL) -> SupportRank:
    """Rank and σ_min of B_S (|S|, V), S = supp(μ) ∩ supp(π): full row rank |S| is the prompt-tuning condition."""
    tol = _relative("tol", tol)
    pi, _, B = chain64(world)
    S = np.flatnonzero(prompt_task_vector(mu, pi))
    if not S.size:  # μ lives where π = 0: no states to read, and the prompt condition cannot hold
        return SupportRank((), 0, 0.0, False, tol, -tol)
    rank, s, smin, _ = _row_spectrum(B[S], tol)
    return SupportRank(tuple(int(h) for h in S), rank, smin, rank == len(S), tol, _rank_margin(s, tol))


# ---- 4: prompts ------------------------------------------------------------------------------------

def _states(mask) -> tuple:
    return tuple(int(h) for h in np.flatnonzero(mask))


def relative_entries(a) -> np.ndarray:
    """Each entry of a law π (K,) or of each row of A (K, K) over the row's largest entry."""
    return a / a.max(-1, keepdims=True)


def prompt_graph(pi, A, support, k: int, delta: float) -> tuple:
    """The graph part of :func:`prompt_feasibility` on float64 arrays π (K,), A (K, K), a bool mask
    ``support`` (K,) of S, at soft-zero threshold δ: an entry is an edge when A[g,h] > δ·max_h' A[g,h']
    (supp π likewise).  Returns (reach [R_1..R_k], gate G, allowed [W_1..W_k], uncovered), bool masks."""
    S = support
    E = relative_entries(A) > delta  # the same relative entries as the δ scan, so both agree at every δ
    gate = ~E[:, ~S].any(1)
    reach = [relative_entries(pi) > delta]
    for _ in range(k - 1):
        reach.append(E[reach[-1]].any(0))
    allowed = [reach[-1] & gate]
    for j in range(k - 2, -1, -1):
        allowed.insert(0, reach[j] & E[:, allowed[0]].any(1))
    return reach, gate, allowed, S & ~E[allowed[-1]].any(0)


def prompt_feasibility(world, mu, *, k: int = 1, delta: float = 0.0, tol: float | None = None) -> PromptFeasibility:
    """Can k prompt tokens make r vanish off S = supp(μ) ∩ supp(π) and stay positive on S?  (Module docstring.)

    Edges are A[g,h] > δ·max_h' A[g,h'] (``delta`` = δ ∈ [0, 1); 0, the default and the theorem's
    hypothesis, keeps every positive entry; compared as A[g,h]/max_h' A[g,h'] > δ; ``tol`` is δ's former
    name); supp π likewise.  Forward reach R_1 = supp π, R_{j+1} = succ(R_j); last-step allowed set W_k =
    G ∩ R_k; backwards W_j = {g ∈ R_j : succ(g) ∩ W_{j+1} ≠ ∅}, so the indicator prompt u_j = 1[W_j] gives
    supp α_j = W_j exactly.  Feasible ⇔ succ(W_k) ⊇ S, read at δ (as
    :func:`~simlm.theory.head_prompt_margins.feasibility_range` reads it).

    The constructive prompt: where the graph is feasible at δ = 0 as well, the indicator prompt of the
    exact graph (``exact`` True: no mass off S, whatever δ); otherwise that of the graph at δ, whose
    soft-gated last-step states leak (``exact`` False, ``off_support_mass`` > 0).  ``reach``, ``gate``,
    ``allowed`` and ``uncovered`` are those of the graph whose prompt is returned."""
    if tol is not None:
        if delta != 0.0:
            raise ConfigError(f"tol: the former name of delta; give one of them, not both (tol={tol!r}, "
                              f"delta={delta!r})")
        delta = _relative("tol", tol, zero=True)
    else:
        delta = _relative("delta", delta, zero=True)
    k = prompting.check_prompt_length(k)
    pi, A, _ = chain64(world)
    S = prompt_task_vector(mu, pi) != 0
    reach, gate, allowed, uncovered = prompt_graph(pi, A, S, k, delta)
    feasible = bool(allowed[-1].any() and not uncovered.any())
    if feasible and delta > 0:
        exact_graph = prompt_graph(pi, A, S, k, 0.0)
        if exact_graph[2][-1].any() and not exact_graph[3].any():
            # exact zeros cover S: the theorem's own prompt, no leak; the record reads the graph it came from
            reach, gate, allowed, uncovered = exact_graph
    U = np.stack(allowed).astype(np.float64)
    if not S.any():
        reason = ("μ is nonzero only where π = 0, where P(H_0 | x) puts no mass: S = supp(μ) ∩ supp(π) is empty "
                  "and the task 1[μᵀP(H_0|x) ≥ 0] is constant")
    elif not gate.any():
        reason = ("no hidden state transitions only into S = supp(μ) ∩ supp(π): every g has A[g, h] > δ·max "
                  "for some h ∉ S, so no prompt makes P(H_0 | z, x) vanish off S")
    elif not allowed[-1].any():
        reason = (f"states {_states(gate)} transition only into S but none is reachable at prompt step "
                  f"{k} from supp(π) = {_states(reach[0])}")
    elif uncovered.any():
        reason = (f"states {_states(uncovered)} of S cannot be entered from the allowed last-step prompt "
                  f"states {_states(allowed[-1])}" + (", so the prompted posterior vanishes on them" if delta == 0
                  else f" through an entry above δ = {delta:g} × its row's largest (smaller ones count as zero "
                       "at this δ; the constructive prompt's r can still be positive there)"))
    else:
        reason = ""
    if allowed[-1].any():
        alpha, r = _reweighting(world, U)
        # > 0 exactly when feasible: at δ > 0 an infeasible graph's prompt can still reach S through an entry
        # the δ reads as zero (r_S > 0), which a positive margin beside feasible False contradicted
        margin = float(r[S].min() / r.max()) if r.max() > 0 and feasible else 0.0
        off = float(alpha[~S].sum() / alpha.sum())
    else:
        r, margin, off = np.zeros(len(pi)), 0.0, float("nan")
    exact = feasible and not np.any(A[np.ix_(allowed[-1], ~S)])
    return PromptFeasibility(feasible, k, _states(S), _states(gate),
                             tuple(_states(R) for R in reach), tuple(_states(W) for W in allowed),
                             _states(uncovered), r, margin, off, U, reason, delta, bool(exact))


def prompt_head(world, mu, U, *, tol: float = _TOL) -> np.ndarray:
    """The head on prompted masked outputs, b = B_S⁺(μ_S ⊘ r_S) (V,): B_S b = μ_S ⊘ r_S when B_S has
    full row rank, which undoes the prompt's reweighting on S (module docstring)."""
    tol = _relative("tol", tol)
    pi, _, B = chain64(world)
    m = prompt_task_vector(mu, pi)
    S = np.flatnonzero(m)
    r = _reweighting(world, U)[1][S]
    if not np.all(r > 0):
        raise ConfigError(f"U: the prompt's reweighting vanishes on states {tuple(int(h) for h in S[~(r > 0)])} "
                          "of S = supp(μ) ∩ supp(π), so no head can undo it there")
    return np.linalg.lstsq(B[S], m[S] / r, rcond=tol)[0]


def verify_prompt(world, mu, U, b, tokens, *, margin: float = _MARGIN) -> Verification:
    """Score bᵀBᵀP(H_0 | z, x) with prompt U (k, K) against y = 1[μᵀP(H_0|x) ≥ 0] on ``tokens``; also
    the largest posterior mass the prompted posterior leaves off S.  An input impossible in the world
    raises ZeroProbabilityError; one possible in the world but not with the prompt has no prompted output
    and is counted (``Verification.n_undefined``, an error; within the margin when r > 0 on S)."""
    margin = _relative("margin", margin)
    pi, _, B = chain64(world)
    m, b = prompt_task_vector(mu, pi), _check_head(b, B.shape[1])
    scale = np.abs(check_task_vector(mu, B.shape[0])).max()  # verify_head's unit: μ's zeros off supp π aside
    check_prompt(U, B.shape[0])  # before any posterior (a bad U was named only after P(H_0 | x) compiled)
    p = state_posterior0(world, tokens)
    q, defined = _posterior_where_defined(world, tokens, U)
    return replace(_verify(m, p, q, B, b, margin, defined, scale),
                   max_off_support_mass=float(q[:, m == 0].sum(1).max(initial=0.0)))


# ---- 5: memory ---------------------------------------------------------------------------------------

def memory_rank(world, *, tol: float = _TOL) -> MemoryRank:
    """For each syntactic state q, rank / σ_min / condition of emission[:, q, :] (M, V).  Full rank M at q
    means the memory value is linearly recoverable from the token law at a position in state q, given the
    memory cell that position reads (with N > 1 cells a head must also find the task's cell)."""
    tol = _relative("tol", tol)
    if not isinstance(world, MemoryHMM):
        raise ConfigError(f"world: memory_rank needs a MemoryHMM (emission (M, Q, V)), got {type(world).__name__}")
    E = np.asarray(world.emission, np.float64)
    spectra = [_row_spectrum(E[:, q, :], tol) for q in range(E.shape[1])]
    ranks = np.array([s[0] for s in spectra])
    full = ranks == E.shape[0]
    return MemoryRank(E.shape[0], ranks, np.array([s[2] for s in spectra]), np.array([s[3] for s in spectra]),
                      full, bool(full.any()), bool(full.all()), tol,
                      np.array([_rank_margin(s[1], tol) for s in spectra]))


# ---- 6: failure certificates ------------------------------------------------------------------------

def failure_certificate(world, mu_or_labels, tokens, *, features="masked", tol: float = _TOL,
                        max_pairs: int = 100, margin: float = _MARGIN) -> FailureCertificate:
    """Pairs of inputs whose features agree within ``tol`` (max abs, an absolute distance: a pair proves no
    head separates it only at distance 0, and at d > 0 needs a head of size ≳ 1/d) but whose labels differ.

    ``mu_or_labels``: a task vector μ (K,) (labels 1[μᵀP(H_0|x) ≥ 0]; only inputs with |μᵀP(H_0|x)| >
    margin·max|μ| take part, so a pair is two clearly different labels, not two scores a rounding
    apart on either side of 0, which a head can still split) or the labels themselves as a bool array
    (n,); 0/1 numbers (integers or floats) are refused (ConfigError), not read as a μ.  ``features``: "masked"
    (φ(x) = BᵀP(H_0|x)) or a callable tokens → (n, d).  Distances are computed between the two label
    classes in blocks (n up to a few thousand); the ``max_pairs`` closest pairs are returned."""
    tol, max_pairs = check_positive("tol", tol), check_positive_int("max_pairs", max_pairs)
    margin = _relative("margin", margin)
    _check_features(features)  # before the forward–backward compiles
    B = chain64(world)[2]
    p = state_posterior0(world, tokens)
    n = len(p)
    lab = np.asarray(mu_or_labels)
    clear = np.ones(n, bool)
    if lab.dtype.kind in "iuf" and lab.size and np.isin(lab, (0, 1)).all():
        # as a μ it would label every input 1 (μ ≥ 0): 0/1 numbers (integers or floats) were meant as labels,
        # and read silently as μ wherever there are K inputs
        raise ConfigError("mu_or_labels: an array of 0s and 1s is ambiguous — labels go in as a bool array "
                          "(labels.astype(bool)); as a task vector μ ≥ 0 it would label every input 1")
    if lab.dtype == bool:
        if lab.shape != (n,):
            raise ShapeError(f"mu_or_labels: labels must have shape ({n},) — one per sequence — got {lab.shape}")
        y = lab
    else:
        y, clear = _clear_labels(p, check_task_vector(mu_or_labels, B.shape[0]), margin)
    return _certificate(B, p, y, clear, tokens, features, tol, max_pairs)


def _check_features(features):
    """``features`` as :func:`failure_certificate` takes it: "masked" or a callable (a ConfigError otherwise)."""
    if not ((isinstance(features, str) and features == "masked") or callable(features)):
        raise ConfigError(f"features: expected 'masked' or a callable tokens → (n, d), got {features!r}")
    return features


def _clear_labels(p, m, margin):
    """The labels 1[μᵀP(H_0|x) ≥ 0] of posteriors ``p`` (n, K), and which of them are clear of the margin."""
    score = p @ m
    return score >= 0, np.abs(score) > margin * np.abs(m).max()


def _certificate(B, p, y, clear, tokens, features, tol, max_pairs) -> FailureCertificate:
    """:func:`failure_certificate` on checked arguments: labels ``y`` (n,), those ``clear`` of the margin."""
    n = len(p)
    if isinstance(features, str) and features == "masked":
        F = p @ B
    else:
        F = check_real_array("features", _check_features(features)(tokens))
        if F.ndim < 1 or F.shape[0] != n:
            raise ShapeError(f"features: the callable returned shape {F.shape}, expected ({n}, d) (one row per sequence)")
        F = F.reshape(n, -1)
    i1, i0 = np.flatnonzero(y & clear), np.flatnonzero(~y & clear)
    found, best = [], float("inf")
    for s in range(0, len(i1), 256):
        block = i1[s:s + 256]
        D = np.abs(F[block, None, :] - F[None, i0, :]).max(-1)  # (b, n0)
        if D.size:
            best = min(best, float(D.min()))
        a, c = np.nonzero(D <= tol)
        found.extend(zip(D[a, c], block[a], i0[c]))
    found = sorted(found)[:max_pairs]
    pairs = np.array([[i, j] for _, i, j in found], dtype=np.int64).reshape(-1, 2)
    dist = np.array([d for d, _, _ in found], dtype=np.float64)
    return FailureCertificate(len(found) > 0, pairs, dist, y[pairs], p[pairs], n, best, tol)


# ---- 7: everything at once --------------------------------------------------------------------------

def check_head_prompt_conditions(world, mu, tokens, *, k: int = 1, tol: float = _TOL, delta: float = 0.0,
                                 margin: float = _MARGIN, feature_tol: float = _TOL) -> HeadPromptConditions:
    """Conditions 1–4 for task μ, the constructive head and prompt checked on ``tokens`` (n, T), and a
    failure certificate (features within ``feature_tol``, an absolute distance) when μ ∉ col(B).  ``tol`` is
    the rank / residual tolerance (0 < tol < 1); ``delta`` the prompt graph's soft-zero threshold (0 ≤ δ < 1;
    0, the default, is the theorem's exact-zero hypothesis) — three different thresholds: a rank tolerance
    passed on as a feature distance certified pairs a head separates (features 0.05 apart at tol = 0.3)."""
    tol, delta, margin = _relative("tol", tol), _relative("delta", delta, zero=True), _relative("margin", margin)
    feature_tol = check_positive("feature_tol", feature_tol)
    emission = emission_rank(world, tol=tol)
    head = head_realisability(world, mu, tol=tol)
    head_check = verify_head(world, mu, head.head, tokens, margin=margin)
    support = support_rank(world, mu, tol=tol)
    prompt = prompt_feasibility(world, mu, k=k, delta=delta)
    b_prompt = prompt_check = None
    if prompt.feasible:
        b_prompt = prompt_head(world, mu, prompt.prompt, tol=tol)
        prompt_check = verify_prompt(world, mu, prompt.prompt, b_prompt, tokens, margin=margin)
    certificate = None
    if not head.realisable:  # μ itself (failure_certificate would refuse a μ of 0s and 1s as ambiguous labels)
        B, p = chain64(world)[2], state_posterior0(world, tokens)
        y, clear = _clear_labels(p, check_task_vector(mu, B.shape[0]), margin)
        certificate = _certificate(B, p, y, clear, tokens, "masked", feature_tol, 100)
    head_holds = head.realisable and head_check.holds
    prompt_cond = prompt.feasible and support.full_row_rank
    prompt_holds = prompt_cond and prompt_check.holds
    consistent = head_holds == head.realisable and prompt_holds == prompt_cond
    # a half can contradict its theorem only where its condition holds and an input lies outside the margin
    trivial = _vacuous(head.realisable, head_check) and _vacuous(prompt_cond, prompt_check)
    return HeadPromptConditions(emission, head, head_check, support, prompt, b_prompt, prompt_check,
                                certificate, head_holds, prompt_holds, consistent, trivial)


def _vacuous(condition: bool, check: Verification | None) -> bool:
    """Whether a theorem's half of ``consistent`` could not have been False: its condition fails, or every
    input is within the label margin (a task constant on the inputs, e.g. μ zero wherever π is not)."""
    return not condition or check.n_within_margin == check.n_samples


__all__ = [
    "EmissionRank", "HeadRealisability", "Verification", "SupportRank", "PromptFeasibility", "MemoryRank",
    "FailureCertificate", "HeadPromptConditions", "state_posterior0", "emission_rank", "head_realisability", "verify_head",
    "chain64", "check_task_vector", "prompt_task_vector", "relative_entries", "support_rank", "prompt_graph", "prompt_feasibility", "prompt_head", "verify_prompt", "memory_rank", "failure_certificate",
    "check_head_prompt_conditions",
]
