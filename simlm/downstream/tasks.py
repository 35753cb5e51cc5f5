"""Downstream tasks whose label is a function of the posterior over hidden variables (Wei, Xie & Ma,
NeurIPS 2021, "Why do pretrained language models help in downstream tasks?"), and their Bayes ceiling.

Labels.  A task holds a label matrix L ∈ R^{C×K} (or, binary, a direction μ ∈ R^K) and reads a posterior
P ∈ Δ^K computed exactly from the world:

    y = argmax_c (L P)_c            (C classes; ties go to the lowest class)
    y = 1[μᵀ P ≥ 0]                  (binary direction form, the authors' g(x) = 1[μᵀ P(H_0 | x) ≥ 0])

- :class:`PosteriorTask` on an :class:`~simlm.worlds.HMM`, ``position``:
  ``"prepended"`` — P = P(H_0 | x_1:T) for a masked position 0 prepended before x_1 (H_0 ~ π, H_1 ~ πA),
  read through a masked LM; ``"next"`` — P = P(H_{T+1} | x_1:T) = P(H_T | x_1:T) A, the state after the
  last token, read through the causal next-token law.
- :class:`MemoryTask` on a :class:`~simlm.worlds.MemoryHMM`: P = P(m_j = · | x_1:T) ∈ Δ^M for one cell j.

Label matrices are sparse like the authors' code: ``nnz`` (row, column) slots drawn uniformly *with
replacement* get N(0, 1) values (a repeated slot keeps the last draw).

Data.  :func:`sample_task_data` samples tokens from the world and labels them with the exact posterior of
the given tokens.  For ``"prepended"`` it samples T + 1 tokens and drops x_0 — the masked token — so the
tokens handed out are x_1..x_T of a sequence whose position 0 had H_0 ~ π; their own law is the HMM
started from πA.

Bayes ceiling.  A model that sees only x_1:T' of the x_1:T the label was computed from can do no better
than E[max_y P(y | x_1:T')].  :func:`bayes_ceiling` estimates it by sampling continuations x_{T'+1:T}
exactly given the prefix (:func:`sample_continuations`) and labelling each completed sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from simlm.errors import ConfigError, ShapeError, ZeroProbabilityError
from simlm.precision import mm
from simlm.worlds import hmm_core as core
from simlm.checks import (as_array, as_batch, as_key, as_rng, check_finite, check_instance, check_memory,
                          check_non_negative, check_positive_int, check_real_array, check_tokens, mean_and_sem)
from simlm.worlds.hmm import HMM, ChainInference
from simlm.worlds.memory import MemoryHMM

POSITIONS = ("prepended", "next")


# ---- sparse label matrices ----------------------------------------------------------------------

def _default_nnz(n_states: int) -> int:
    return max(2, n_states // 2)


def sparse_label_matrix(seed: int, n_classes: int, n_states: int, *, nnz: int | None = None) -> np.ndarray:
    """L ``(C, K)`` float64: ``nnz`` slots of the C·K drawn uniformly with replacement, each set to an
    N(0, 1) draw (default nnz = C · max(2, K // 2)); all other entries 0.  Deterministic in ``seed``."""
    C = check_positive_int("n_classes", n_classes, minimum=2)
    K = check_positive_int("n_states", n_states)
    nnz = C * _default_nnz(K) if nnz is None else check_positive_int("nnz", nnz)
    return _sparse_normal(seed, C * K, nnz, "n_classes, n_states").reshape(C, K)


def sparse_direction(seed: int, n_states: int, nnz: int | None = None) -> np.ndarray:
    """μ ``(K,)`` float64 for binary labels 1[μᵀP ≥ 0]: ``nnz`` coordinates drawn uniformly with
    replacement set to N(0, 1) draws (default max(2, K // 2)).  Deterministic in ``seed``."""
    K = check_positive_int("n_states", n_states)
    nnz = _default_nnz(K) if nnz is None else check_positive_int("nnz", nnz)
    return _sparse_normal(seed, K, nnz, "n_states")


def _sparse_normal(seed, size: int, nnz: int, name: str) -> np.ndarray:
    """``(size,)`` zeros with ``nnz`` slots drawn uniformly with replacement set to N(0, 1) draws (a repeated
    slot keeps the last draw)."""
    rng = as_rng(seed)
    check_memory(name, size, itemsize=8, what="the label weights")
    check_memory("nnz", nnz, itemsize=16, what="the drawn slots and values")
    out = np.zeros(size)
    out[rng.integers(0, size, size=nnz)] = rng.standard_normal(nnz)
    return out


# ---- tasks --------------------------------------------------------------------------------------

def _check_weights(L, mu, what: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    if (L is None) == (mu is None):
        raise ConfigError("L: give exactly one of L (C×K label matrix) and mu (binary direction)")
    if L is not None:
        L = check_real_array("L", L).copy()
        if L.ndim != 2 or L.shape[0] < 2 or L.shape[1] < 1:
            raise ShapeError(f"L: expected a (C, {what}) label matrix with C ≥ 2 classes, got shape {L.shape}")
        L.setflags(write=False)
        return L, None
    mu = check_real_array("mu", mu).copy()
    if mu.ndim != 1 or mu.size < 1:
        raise ShapeError(f"mu: expected a direction of shape ({what},), got {mu.shape}")
    mu.setflags(write=False)
    return None, mu


class _LinearLabels:
    """Shared by the tasks: labels from a posterior by argmax(L P) or 1[μᵀP ≥ 0]."""

    L: np.ndarray | None
    mu: np.ndarray | None

    @property
    def n_classes(self) -> int:
        return 2 if self.L is None else self.L.shape[0]

    @property
    def n_hidden(self) -> int:
        """Length of the posterior the label reads (K states, or M values for a memory task)."""
        return (self.mu if self.L is None else self.L).shape[-1]

    @property
    def label_matrix(self) -> np.ndarray:
        """L ``(C, K)``; for the direction form [0; μ] (equal labels except on exact ties μᵀP = 0)."""
        return self.L if self.L is not None else np.stack([np.zeros_like(self.mu), self.mu])

    def labels_from_posterior(self, posterior) -> np.ndarray:
        """int32 ``(n,)`` labels from posteriors ``(n, K)`` (:meth:`labels_from_log_posterior` of their log)."""
        P = check_real_array("posterior", posterior)
        if P.ndim != 2 or P.shape[1] != self.n_hidden:
            raise ShapeError(f"posterior: expected shape (n, {self.n_hidden}), got {P.shape}")
        if (P < -1e-6).any():
            i = tuple(int(a) for a in np.argwhere(P < -1e-6)[0])
            raise ConfigError(f"posterior: entry {i} is {P[i]:.3g}, expected probabilities (≥ 0)")
        if (off := np.abs(P.sum(1) - 1.0) > 1e-4).any():  # an all-zero row read as a tie, a scaled one as a law
            i = int(np.flatnonzero(off)[0])
            raise ConfigError(f"posterior: row {i} sums to {P[i].sum():.6g}, expected a law over the "
                              f"{self.n_hidden} hidden values (sum 1)")
        with np.errstate(divide="ignore"):
            return self.labels_from_log_posterior(np.log(np.maximum(P, 0.0)),  # a rounding −1e-9 is a 0
                                                  roundoff=_roundoff(np.asarray(posterior).dtype))

    def labels_from_log_posterior(self, log_posterior, *, roundoff: float | None = None) -> np.ndarray:
        """int32 ``(n,)`` labels argmax(L P) (or 1[μᵀP ≥ 0]) from log-posteriors ``(n, K)``, in float64.

        Only the hidden values on which the classes' weights differ move the argmax, and only their shares
        relative to each other: they are scaled by the largest of them before the weights apply.  So a
        label decided by shares of 1e-100 (a nearly one-hot posterior on a value every class weighs alike)
        is read here, where the same shares as float32 probabilities are 0 and the label a tie.  The ratio
        of two shares is as exact as their log-posteriors: from a float32 world's filter, to about
        |log P|·6e-8 relative (~1e-5 at 1e-96).  A score within that resolution of the decision — |μᵀP|, or
        the best class's score less another's, at most Σ_k |μ_k| P_k r_k (or Σ_k |L_best,k − L_c,k| P_k r_k: a
        row common to every class cancels and counts nothing), each term's rounding r_k = :data:`LABEL_TIE_ULPS`
        · u · (1 + |log P_k| + |log P_top|), P_top the largest P_j the weights read (its own share is exactly 1
        and carries none), from its own log-posterior (a negligible share of log P = −200 no longer widens the
        others'), with u the unit roundoff of the computation the log-posteriors come from (``roundoff``; by
        default the input's dtype's, 2⁻²⁴ for float32 and 2⁻⁵³ for float64; :meth:`labels` passes its world's)
        — is an exact tie read through rounding, and takes the documented rule: label 1 for μ, the lowest tied class
        for L (two exchangeable states with μ = (0, 1, −1) tie on every sequence; their float32 log-posteriors, 2e-7
        apart, labelled 3 of 64 sequences 0, and a float64 rerun, 4e-16 apart, still one)."""
        raw = as_array("log_posterior", log_posterior, what="an array of numbers with rows of equal length")
        if raw.dtype.kind not in "biuf":
            raise ConfigError(f"log_posterior: expected real numbers, got dtype {raw.dtype}")
        lp = raw.astype(np.float64)
        if np.isnan(lp).any() or np.isposinf(lp).any():  # −inf, an exact 0, is the one non-finite value
            raise ConfigError("log_posterior: expected log-probabilities (finite or −inf), got NaN or +inf")
        if lp.ndim != 2 or lp.shape[1] != self.n_hidden:
            raise ShapeError(f"log_posterior: expected shape (n, {self.n_hidden}), got {lp.shape}")
        W = self.label_matrix
        moving = np.ptp(W, axis=0) > 0
        lp = lp[:, moving]
        top = lp.max(axis=1, initial=-np.inf, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)  # all −inf (or none): every score 0
        shares = np.exp(lp - top)
        u = _roundoff(raw.dtype) if roundoff is None else check_non_negative("roundoff", roundoff)
        # each share's relative rounding, from its own log and the top's (a share of 0 carries none): one state
        # of log P = −200 with a negligible share widened every term's to 4e-4 in float32 (with the row's
        # largest |log P|), and 571 of 3000 labels of margin up to 4e-4, 1400× their rounding, read as ties
        # and went to label 1 (a review 2026-12-06)
        shares_err = shares * LABEL_TIE_ULPS * u * (1.0 + np.where(np.isfinite(lp), np.abs(lp), 0.0) + np.abs(top))
        if lp.shape[1]:  # the top's share is exp(0) = 1 exactly: its rounding is in every other share's already
            shares_err[np.arange(len(lp)), lp.argmax(axis=1)] = 0.0
        if self.L is None:
            mu = self.mu[moving]
            return (shares @ mu >= -(shares_err @ np.abs(mu))).astype(np.int32)
        Lm = self.L[:, moving]
        scores = shares @ Lm.T  # (n, C)
        best = scores.argmax(axis=1)
        # the rounding of the best class's score less each other's: Σ_k err_k |L_best,k − L_c,k|
        slack = np.einsum("nk,nck->nc", shares_err, np.abs(Lm[best][:, None, :] - Lm[None]))
        tied = scores[np.arange(len(best)), best][:, None] - scores <= slack
        return np.argmax(tied, axis=-1).astype(np.int32)  # the lowest class within rounding of the best

    def labels(self, world, tokens) -> np.ndarray:
        """int32 labels ``(n,)`` of token sequences ``(n, T)`` from their exact posterior, read in log space
        (:meth:`log_posteriors`, :meth:`labels_from_log_posterior`, ties within the rounding of the world's
        dtype)."""
        return self.labels_from_log_posterior(self.log_posteriors(world, tokens), roundoff=label_roundoff(world))


#: a label score within this many unit roundoffs × (1 + |log P_k| + |log P_top|) of each of its terms (the top's
#: excepted) is an exact tie read through rounding (``labels_from_log_posterior``): the float32 filter's
#: log-posteriors of a tie came 4 ulps apart at T = 6
LABEL_TIE_ULPS = 32


def _roundoff(dtype) -> float:
    """The unit roundoff of ``dtype``'s floats (2⁻⁵³ for anything that is not a narrower float)."""
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype).eps / 2) if dtype.kind == "f" and dtype.itemsize < 8 else 2.0**-53


def label_roundoff(world) -> float:
    """The unit roundoff of the log-posteriors ``world`` computes: its parameters' dtype's (a float32 world's,
    cast to float64 arrays, still carry float32's rounding)."""
    return _roundoff(jnp.asarray(world.emission).dtype)


@dataclass(frozen=True, eq=False)
class PosteriorTask(_LinearLabels):
    """A label of the HMM posterior at ``position`` (see the module docstring): ``L (C, K)`` or ``mu (K,)``.

    ``seed`` records which draw made the task (informational)."""

    L: np.ndarray | None = None
    mu: np.ndarray | None = None
    position: str = "prepended"
    seed: int | None = None

    def __post_init__(self):
        L, mu = _check_weights(self.L, self.mu, "K")
        object.__setattr__(self, "L", L)
        object.__setattr__(self, "mu", mu)
        check_position(self.position)

    def check_world(self, world) -> None:
        """:class:`ConfigError`/:class:`ShapeError` unless ``world`` is an HMM with the task's K states."""
        _check_world(world, HMM, self.n_hidden, "n_states")

    def posteriors(self, world, tokens) -> np.ndarray:
        """``"prepended"``: P(H_0 | x_1:T); ``"next"``: P(H_{T+1} | x_1:T) = P(H_T | x_1:T) A.  (n, K)."""
        self.check_world(world)
        if self.position == "prepended":
            return np.asarray(world.prepended_state_posterior(as_batch(tokens)))
        filt = world.state_posterior(as_batch(tokens), smoothed=False)[:, -1]
        return np.asarray(mm(filt, world.transition))

    def log_posteriors(self, world, tokens) -> np.ndarray:
        """log of :meth:`posteriors`, computed in log space, float64 ``(n, K)`` (shares far below the
        float range kept; −inf only for an exact 0)."""
        self.check_world(world)
        if self.position == "prepended":
            return np.asarray(world.log_prepended_state_posterior(as_batch(tokens)), np.float64)
        log_filt = np.asarray(world.log_state_posterior(as_batch(tokens), smoothed=False)[:, -1], np.float64)
        return log_matvec(log_filt, world.transition)  # log Σ_i P(h_T = i | x) A[i, ·]


def log_matvec(log_rows, matrix, *, chunk_bytes: int = 2**26) -> np.ndarray:
    """log(e^{log_rows} M) ``(n, K')`` for ``log_rows (n, K)`` and a matrix ``M (K, K')`` ≥ 0, in float64 and
    in log space (a row's shares below the float range kept), over chunks of rows of at most
    ``chunk_bytes`` of (n, K, K') temporaries."""
    lr = np.asarray(log_rows, np.float64)
    with np.errstate(divide="ignore"):
        log_m = np.log(np.asarray(matrix, np.float64))
    step = max(1, chunk_bytes // (8 * log_m.size))
    return np.concatenate([logsumexp(lr[i:i + step, :, None] + log_m[None], axis=1)
                           for i in range(0, len(lr), step)]) if len(lr) else np.zeros((0, log_m.shape[1]))


@dataclass(frozen=True, eq=False)
class MemoryTask(_LinearLabels):
    """A label of one memory cell's posterior P(m_cell = · | x_1:T): ``L (C, M)`` or ``mu (M,)``."""

    L: np.ndarray | None = None
    mu: np.ndarray | None = None
    cell: int = 0
    seed: int | None = None

    def __post_init__(self):
        L, mu = _check_weights(self.L, self.mu, "M")
        object.__setattr__(self, "L", L)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "cell", check_positive_int("cell", self.cell, minimum=0))

    def check_world(self, world) -> None:
        """:class:`ConfigError`/:class:`ShapeError` unless ``world`` is a MemoryHMM with the task's M values
        and its cell."""
        _check_world(world, MemoryHMM, self.n_hidden, "n_values")
        if self.cell >= world.n_cells:
            raise ConfigError(f"cell: {self.cell} is not a cell of this world (it has {world.n_cells})")

    def posteriors(self, world, tokens) -> np.ndarray:
        """P(m_cell = v | x_1:T), ``(n, M)``."""
        self.check_world(world)
        return np.asarray(world.memory_posterior(as_batch(tokens))[:, self.cell])

    def log_posteriors(self, world, tokens) -> np.ndarray:
        """log of :meth:`posteriors`, computed in log space, float64 ``(n, M)``."""
        self.check_world(world)
        return np.asarray(world.log_memory_posterior(as_batch(tokens))[:, self.cell], np.float64)


def check_position(position) -> str:
    if not isinstance(position, str) or position not in POSITIONS:
        raise ConfigError(f"position: expected one of {POSITIONS}, got {position!r}")
    return position


def check_task(task, world):
    """``task`` if it is a :class:`PosteriorTask` or :class:`MemoryTask` that fits ``world``."""
    if not isinstance(task, (PosteriorTask, MemoryTask)):
        raise ConfigError(f"task: expected a PosteriorTask or a MemoryTask, got {type(task).__name__}")
    task.check_world(world)
    return task


def _check_world(world, cls, size: int, attr: str) -> None:
    if not isinstance(world, cls):
        raise ConfigError(f"world: this task needs a {cls.__name__}, got {type(world).__name__}")
    have = world.n_states if cls is HMM else world.n_values
    if have != size:
        raise ShapeError(f"world: the task's labels read {size} hidden values but the world has {attr} = {have}")


# ---- construction with a non-degenerate probe ---------------------------------------------------

def _redraw_options(make, seed, n_classes, min_class_fraction, max_tries) -> tuple[int, float, int]:
    """``(seed, min_class_fraction, max_tries)`` checked, and the first draw ``make(seed)`` built (its ``nnz``
    checked) — on the host, before the probe is sampled and labelled (where they were checked after the
    probe's compile, a bad seed named as the sampler's ``key``: a review, 2026-12-06)."""
    frac = check_finite("min_class_fraction", min_class_fraction)
    if not 0 <= frac <= 1 / n_classes:
        raise ConfigError(f"min_class_fraction: expected a number in [0, 1/{n_classes}], got {min_class_fraction!r}")
    seed, tries = check_positive_int("seed", seed, minimum=0), check_positive_int("max_tries", max_tries)
    make(seed)
    return seed, frac, tries


def _redraw(make, labels_of, seed, n_classes, frac, max_tries):
    for s in range(seed, seed + max_tries):
        task = make(s)
        counts = np.bincount(labels_of(task), minlength=n_classes)
        if counts.min() > 0 and counts.min() >= frac * counts.sum():
            return task
    raise ConfigError(f"seed: no label draw among seeds {seed}..{seed + max_tries - 1} gives every class a place and "
                      f"at least a {frac:g} fraction of the probe; the posterior may barely vary in this world")


def make_posterior_task(world, seed: int, *, n_classes: int = 2, position: str = "prepended", nnz: int | None = None,
                        min_class_fraction: float = 0.1, n_probe: int = 256, probe_length: int = 16,
                        max_tries: int = 100) -> PosteriorTask:
    """A :class:`PosteriorTask` on ``world`` (an HMM): μ = :func:`sparse_direction` for ``n_classes = 2``,
    else L = :func:`sparse_label_matrix`, drawn from ``seed``, then ``seed + 1``, … until the labels of a
    probe sample (``n_probe`` sequences of ``probe_length`` tokens drawn with key ``seed``) have every class
    at least a ``min_class_fraction`` fraction (and every class present, whatever the fraction).
    ``ConfigError`` after ``max_tries`` draws."""
    if not isinstance(world, HMM):
        raise ConfigError(f"world: a posterior task needs an HMM, got {type(world).__name__}")
    C = check_positive_int("n_classes", n_classes, minimum=2)
    check_position(position)
    K = world.n_states

    def make(s):
        if C == 2:
            return PosteriorTask(mu=sparse_direction(s, K, nnz), position=position, seed=s)
        return PosteriorTask(L=sparse_label_matrix(s, C, K, nnz=nnz), position=position, seed=s)

    seed, frac, tries = _redraw_options(make, seed, C, min_class_fraction, max_tries)
    probe_task = PosteriorTask(mu=np.zeros(K), position=position)
    probe, _ = sample_task_data(world, probe_task, seed, check_positive_int("n_probe", n_probe),
                                check_positive_int("probe_length", probe_length))
    post = probe_task.log_posteriors(world, probe)
    return _redraw(make, lambda t: t.labels_from_log_posterior(post, roundoff=label_roundoff(world)), seed, C,
                   frac, tries)


def make_memory_task(world, seed: int, *, cell: int = 0, n_classes: int = 2, nnz: int | None = None,
                     min_class_fraction: float = 0.1, n_probe: int = 256, probe_length: int = 16,
                     max_tries: int = 100) -> MemoryTask:
    """A :class:`MemoryTask` on ``world`` (a MemoryHMM) with L = :func:`sparse_label_matrix` ``(C, M)``,
    redrawn like :func:`make_posterior_task` until the probe labels are not degenerate."""
    if not isinstance(world, MemoryHMM):
        raise ConfigError(f"world: a memory task needs a MemoryHMM, got {type(world).__name__}")
    C = check_positive_int("n_classes", n_classes, minimum=2)
    M = world.n_values
    probe_task = MemoryTask(L=np.zeros((2, M)), cell=cell)
    check_task(probe_task, world)  # a cell the world lacks, before the probe is sampled
    make = lambda s: MemoryTask(L=sparse_label_matrix(s, C, M, nnz=nnz), cell=cell, seed=s)  # noqa: E731
    seed, frac, tries = _redraw_options(make, seed, C, min_class_fraction, max_tries)
    probe = world.sample(seed, check_positive_int("n_probe", n_probe), check_positive_int("probe_length", probe_length))
    post = probe_task.log_posteriors(world, probe)
    return _redraw(make, lambda t: t.labels_from_log_posterior(post, roundoff=label_roundoff(world)), seed, C,
                   frac, tries)


def sample_task_data(world, task, key_or_seed, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens (n, T) int32, labels (n,) int32)``: T = ``length`` tokens from the world, labelled by the
    exact posterior of those tokens.  For a ``"prepended"`` task T + 1 tokens are drawn and x_0 dropped,
    so the tokens are x_1..x_T with H_0 ~ π before them (see the module docstring)."""
    check_task(task, world)
    n = check_positive_int("n", n)
    T = check_positive_int("length", length)
    prepended = isinstance(task, PosteriorTask) and task.position == "prepended"
    drawn = T + 1 if prepended else T
    world._check_sample(n, drawn, names="n, length")  # the size named as here, not as world.sample names it
    key = as_key(key_or_seed, "key_or_seed")  # after the host checks: making a key from a seed compiles
    tokens = np.asarray(world.sample(key, n, drawn))
    tokens = tokens[:, 1:] if prepended else tokens
    return tokens, task.labels(world, tokens)


# ---- exact continuations and the Bayes ceiling --------------------------------------------------

def data_chain(world, task=None) -> core.Chain:
    """The hidden chain that generated a task's tokens: ``world.chain``, started one step later (πA) for a
    ``"prepended"`` posterior task, whose tokens x_1:T follow the masked position 0."""
    check_instance("world", world, ChainInference, "an HMM or a MemoryHMM (a world with an exact hidden chain)")
    chain = world.chain
    if isinstance(task, PosteriorTask) and task.position == "prepended":
        return chain._replace(initial=core.predict(chain.initial, chain.transition))
    return chain


def _predicted_one(initial, transition, emission, prefix, parallel=None):
    fw, low = core._split(parallel, core.forward(initial, transition, emission, prefix, parallel))
    return core._checked(parallel, (core.predict(fw.filtered[-1], transition), fw.token_logprobs), low)


#: p(h_{T'+1} | x_1:T') ``(n, K)`` and the per-step log-probs ``(n, T')``.
_predicted_state = core.batched(_predicted_one)


@jax.jit
def _run_chain(predicted, transition, emission, u_start, u):
    """From h_{T'+1} ~ ``predicted (n, K)`` run the chain: x_t ~ B[h_t], h_{t+1} ~ A[h_t] (A dense or
    block-diagonal, state index g·k + i), by inverse CDF with the uniforms ``u_start (n, R)`` for the first
    state and ``u (n_new, 2, n, R)`` for each step.  Returns tokens ``(n, R, n_new)``."""
    k = transition.shape[-1]
    cum_pred, cum_A, cum_B = (core.cumulative_rows(a) for a in (predicted, transition, emission))
    h0 = core.inverse_cdf(cum_pred[:, None, :], u_start)  # (n, R)

    def step(h, u_t):
        x = core.inverse_cdf(cum_B[h], u_t[1])
        g, i = h // k, h % k
        rows = cum_A[i] if transition.ndim == 2 else cum_A[g, i]
        return g * k + core.inverse_cdf(rows, u_t[0]), x

    _, xs = jax.lax.scan(step, h0, u)
    return jnp.moveaxis(xs, 0, -1)


def _continue(predicted, transition, emission, key, n_continuations: int, n_new: int) -> np.ndarray:
    """Run :func:`_run_chain` with uniforms from a numpy Generator seeded by the key's bits (host uniforms:
    XLA's compile time of jax.random.uniform grows with the array size, seconds for these shapes)."""
    key = as_key(key)
    bits = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    rng = np.random.default_rng(np.asarray(bits, np.uint32).ravel().tolist())
    n = predicted.shape[0]
    check_memory("n_continuations, n_new", n * n_continuations * (2 * n_new + 1), what=f"the uniforms of {n} × "
                 f"{n_continuations} continuations of {n_new} tokens")
    dtype = np.dtype(emission.dtype)
    u_start = rng.random((n, n_continuations), dtype=np.float32).astype(dtype)
    u = rng.random((n_new, 2, n, n_continuations), dtype=np.float32).astype(dtype)
    return np.asarray(_run_chain(predicted, transition, emission, u_start, u))


def sample_continuations(world, prefix, n_new: int, key, *, n_continuations: int = 1, task=None) -> np.ndarray:
    """x_{T'+1:T'+n_new} ~ p(· | x_1:T') exactly, ``(n, R, n_new)`` int32 for ``prefix (n, T')``.

    The hidden state after the prefix is drawn from the predicted law p(h_{T'+1} | x_1:T') = p(h_T' | x_1:T') A
    (forward filter), then the chain runs forward, all (n, R) chains at once.  ``task`` picks the chain
    that generated the prefix (:func:`data_chain`: the ``"prepended"`` data start from πA)."""
    if task is not None:
        check_task(task, world)
    params = data_chain(world, task)
    toks, _ = check_tokens(prefix, params[2].shape[1], "prefix")
    R, n_new = check_positive_int("n_continuations", n_continuations), check_positive_int("n_new", n_new)
    as_key(key, "key")  # all three before the filter compiles (a review, 2026-12-06)
    pred, steps = _predicted_state(*params, jnp.asarray(toks))
    if not np.all(np.isfinite(np.asarray(steps))):
        raise ZeroProbabilityError("prefix: a sequence has probability zero under this world")
    return _continue(pred, params[1], params[2], key, R, n_new)


def bayes_ceiling(world, task, tokens_full, visible_length: int, *, n_continuations: int = 64,
                  key=0, estimate: str = "plug-in") -> tuple[float, float]:
    """Best accuracy of any predictor that sees x_1:T' (T' = ``visible_length``) of the ``tokens_full
    (n, T)`` the labels were computed from: E[max_y P(y | x_1:T')], as (estimate, standard error).

    Each P(y | x_1:T') is the label frequency over R = ``n_continuations`` exact continuations; the mean over the n
    sequences is returned with its standard error over sequences, which does not include the bias below.
    ``estimate="plug-in"`` (the default) takes the max of the R frequencies: biased *upward* where classes are close, by
    O(1/√R) — for a sequence whose label is a fair coin by about +0.14 at R = 8, +0.05 at R = 64 — an upper bound in
    expectation (on a world whose every label is a fair coin the ceiling 0.5 read 0.549 ± 0.0008 at R = 64 over 2000
    sequences: 59 standard errors; a review, 2026-12-08); its noise can still put one run below the exact value
    (0.6944 ± 0.0010 against 0.6959).  ``estimate="split"`` picks the class on the first ⌊R/2⌋ continuations and
    scores it on the others: the accuracy of a predictor that exists, so unbiased for a lower bound (exact where the
    picked class is the best), and the two estimates bracket the ceiling in expectation (R ≥ 2).  T' = T returns
    (1.0, 0.0) exactly; T' = 0 uses the prior law of the chain.  ``n_continuations``, ``key``, ``estimate`` and
    n ≥ 2 are checked first, at T' = T too."""
    R = check_positive_int("n_continuations", n_continuations)
    if estimate not in ("plug-in", "split"):
        raise ConfigError(f"estimate: expected 'plug-in' or 'split', got {estimate!r}")
    if estimate == "split":
        _check_split(R)
    y = _continuation_labels(world, task, tokens_full, visible_length, R, key)
    return mean_and_sem(_split(y, task.n_classes) if estimate == "split" else _plug_in(y, task.n_classes),
                        "tokens_full")


def bayes_ceiling_bracket(world, task, tokens_full, visible_length: int, *, n_continuations: int = 64,
                          key=0) -> tuple[float, float, float, float]:
    """``(lower, lower_se, upper, upper_se)``: :func:`bayes_ceiling`'s split and plug-in estimates from one set
    of R = ``n_continuations`` ≥ 2 continuations (the cost of one), which bracket the ceiling in expectation."""
    R = _check_split(check_positive_int("n_continuations", n_continuations))
    y = _continuation_labels(world, task, tokens_full, visible_length, R, key)
    return (*mean_and_sem(_split(y, task.n_classes), "tokens_full"),
            *mean_and_sem(_plug_in(y, task.n_classes), "tokens_full"))


def _check_split(R: int) -> int:
    """``R``, or a ConfigError: the split estimate picks on half the continuations and scores on the other half."""
    if R < 2:
        raise ConfigError(f"n_continuations: the split estimate picks on half the continuations and scores on the "
                          f"other half, which needs at least 2, got {R}")
    return R


def _continuation_labels(world, task, tokens_full, visible_length, R: int, key) -> np.ndarray:
    """``(n, R)`` labels of the R exact continuations of each sequence's first T' tokens; where T' = T (the
    predictor sees what decides the label) two copies of one class, ``(n, 2)``, which either estimate reads as 1."""
    params = data_chain(world, check_task(task, world))
    toks, _ = check_tokens(tokens_full, params[2].shape[1], "tokens_full")
    n, T = toks.shape
    if isinstance(visible_length, (bool, np.bool_)) or not isinstance(visible_length, (int, np.integer)) \
            or not 0 <= visible_length <= T:
        raise ConfigError(f"visible_length: expected an integer in [0, {T}] (the length of tokens_full), "
                          f"got {visible_length!r}")
    T_vis = int(visible_length)
    as_key(key, "key")  # (T' = T took any n_continuations and key; both were checked after the labels' compile)
    mean_and_sem(np.ones(n), "tokens_full")  # n ≥ 2, checked before anything compiles
    task.labels(world, toks)  # a sequence of probability 0 has no label, whatever T' (T' < T read only x_1:T')
    if T_vis == T:  # every continuation is the sequence itself: 1 exactly, by either estimate
        return np.zeros((n, 2), np.int64)
    if T_vis == 0:
        pred = jnp.broadcast_to(params[0], (n, params[0].shape[0]))
        cont = _continue(pred, params[1], params[2], key, R, T)
    else:
        cont = sample_continuations(world, toks[:, :T_vis], T - T_vis, key, n_continuations=R, task=task)
    full = np.concatenate([np.broadcast_to(toks[:, None, :T_vis], (n, R, T_vis)), cont], axis=-1)
    return task.labels(world, full.reshape(n * R, T)).reshape(n, R)


def _frequencies(y, n_classes: int) -> np.ndarray:
    """``(n, n_classes)``: each class's frequency among each sequence's continuation labels ``y (n, R)``."""
    return np.stack([(y == c).mean(axis=1) for c in range(n_classes)], axis=1)


def _plug_in(y, n_classes: int) -> np.ndarray:
    """Per sequence, the largest label frequency over its continuations."""
    return _frequencies(y, n_classes).max(axis=1)


def _split(y, n_classes: int) -> np.ndarray:
    """Per sequence, the class of the first half's frequencies (ties: the lowest) scored on the other half."""
    half = y.shape[1] // 2
    pick = _frequencies(y[:, :half], n_classes).argmax(axis=1)
    return (y[:, half:] == pick[:, None]).mean(axis=1)


__all__ = ["POSITIONS", "PosteriorTask", "MemoryTask", "sparse_label_matrix", "sparse_direction",
           "make_posterior_task", "make_memory_task", "sample_task_data", "data_chain",
           "sample_continuations", "bayes_ceiling", "bayes_ceiling_bracket", "check_position", "check_task"]
