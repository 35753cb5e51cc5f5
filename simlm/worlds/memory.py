"""The memory-augmented HMM of Wei, Xie & Ma (NeurIPS 2021, "Why do pretrained language models help in
downstream tasks?"), with exact inference over the joint (memory, state) chain.

Model.  N memory cells hold values m = (m_1, …, m_N) ∈ [M]^N, drawn once per sequence, independently
per cell: P(m) = Π_j ρ[j, m_j], ``memory_prior ρ (N, M)``.  A Markov hidden state z_t = (s_t, q_t) — the
selected cell s ∈ [N] and a syntactic state q ∈ [Q], index z = s·Q + q — follows ``initial π (N·Q,)``
and ``transition A (N·Q, N·Q)``; the token is x_t ~ ``emission[m_{s_t}, q_t, :]``, ``emission (M, Q, V)``.

Exact inference.  Given the memory configuration c ∈ [M^N] (C-order over cells, cell 0 most
significant: c = Σ_j m_j M^{N−1−j}), the model is an HMM, and the pair (c, z) is one HMM with
K = M^N·N·Q states, index c·N·Q + z:

    π_joint(c, z) = P(c) π(z),   A_joint = I_{M^N} ⊗ A,   B_joint[(c, s, q), v] = emission[c_s, q, v].

A_joint is block-diagonal (the memory never changes), so :mod:`simlm.worlds.hmm_core` receives only the
(N·Q, N·Q) block A and each step costs M^N·(N·Q)², never (M^N·N·Q)².  Memory grows as M^N: keep it small.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from simlm.errors import ConfigError, ShapeError, SimlmError
from simlm.precision import EXACT
from simlm.worlds import hmm as hmm_mod
from simlm.worlds import hmm_core as core
from simlm.checks import as_key, as_rng, check_positive_int
from simlm.worlds.base import (WorldBase, check_atol, check_flag, check_float_dtype, check_number,
                               check_probabilities, check_request, stored)
from simlm.worlds.families import _LEAST_WEIGHT, check_permutation_mixture, permutation_mixture, sparse, tempered


def memory_configurations(n_cells: int, n_values: int) -> np.ndarray:
    """All memory configurations, ``(M^N, N)`` int32, C-order: row c holds (m_1, …, m_N), cell 0 most
    significant."""
    return np.indices((n_values,) * n_cells, dtype=np.int32).reshape(n_cells, -1).T


def joint_parameters(memory_prior, initial, emission) -> tuple[np.ndarray, np.ndarray]:
    """The joint HMM's ``initial (K,)`` and ``emission (K, V)``, K = M^N·N·Q (the transition is the
    block A itself, shared by the M^N memory blocks).  numpy in, numpy out."""
    N, M = memory_prior.shape
    cfg = memory_configurations(N, M)  # (G, N)
    joint_emission = emission[cfg].reshape(-1, emission.shape[2])  # (G, N, Q, V) → row (c, s, q) = emission[c_s, q]
    return _joint_initial(memory_prior, initial, cfg), joint_emission


def _joint_initial(memory_prior, initial, cfg) -> np.ndarray:
    """P(c) · π(z) over the configurations ``cfg (G, N)`` and the chain's states z, ``(G · N·Q,)``."""
    p_mem = np.prod(memory_prior[np.arange(memory_prior.shape[0]), cfg], axis=1)  # (G,)  P(c) = Π_j ρ[j, c_j]
    return (p_mem[:, None] * initial[None, :]).reshape(-1)


def _check_joint_size(name: str, N: int, M: int, Q: int, V: int, itemsize: int) -> None:
    """Refuse a world whose joint chain cannot fit, before building it: K = M^N·N·Q joint states, the
    (M^N, N) configurations, the joint initial (K,) and emission (K, V) in float64 on the host and again in
    ``itemsize`` on the device, and the (N·Q, N·Q) block transition."""
    if N * math.log2(max(M, 1)) > 80:  # M^N alone is beyond any memory: do not even form the integer
        raise ConfigError(f"{name}: M^N = {M}^{N} memory configurations (≈ 2^{N * math.log2(M):.0f}) cannot fit; "
                          "the joint chain has M^N·N·Q states")
    G, NQ = M**N, N * Q
    K = G * NQ
    check_request(name, [(G * N, 4 + 8), (K + K * V, 8 + itemsize), (NQ * NQ, 8 + itemsize)],
                   f"the joint chain: M^N·N·Q = {M}^{N}·{N}·{Q} = {K:,} states × {V} symbols")


def _memory_posterior(joint_initial, transition, joint_emission, one_hot, toks):
    """P(m_j = v | x_1:T), ``(n, N, M)``: the filtered joint law at T summed over z gives P(c | x_1:T)
    (c never changes, so this is also its smoothed law at every t), then per-cell marginals
    P(m_j = v | x) = Σ_c P(c | x)·[c_j = v] via ``one_hot (G, N, M)``."""
    filt, steps = hmm_mod.filtered_posterior(joint_initial, transition, joint_emission, toks)
    G = one_hot.shape[0]
    p_c = filt[:, -1].reshape(filt.shape[0], G, -1).sum(-1)
    return jnp.einsum("nc,cjm->njm", p_c, one_hot, precision=EXACT), steps


@jax.jit
@partial(jax.vmap, in_axes=(None, None, None, None, 0))
def _log_memory_posterior(joint_initial, transition, joint_emission, one_hot, toks):
    """log P(m_j = v | x_1:T), ``(n, N, M)``, and log c_t ``(n, T)``: :func:`_memory_posterior` on
    log-probabilities (the filter in log space, then log-sum-exps over z and over the configurations)."""
    log_filt, log_c = core.log_filtered_posterior(joint_initial, transition, joint_emission, toks)
    log_c_of = logsumexp(log_filt[-1].reshape(one_hot.shape[0], -1), axis=-1)  # log P(c | x), (G,)
    return logsumexp(jnp.where(one_hot > 0, log_c_of[:, None, None], -jnp.inf), axis=0), log_c


@partial(jax.jit, static_argnums=(5, 6))
def _sample(cum_prior, cum_initial, cum_transition, cum_emission, key, n, T):
    """Memory m ~ ρ, then z_1 ~ π, z_t ~ A[z_{t−1}], then x_t ~ emission[m_{s_t}, q_t]: one uniform per
    draw (N for the memory, two per step)."""
    N, Q = cum_prior.shape[0], cum_emission.shape[1]
    k_mem, k_seq = jax.random.split(key)
    memory = core.inverse_cdf(cum_prior, jax.random.uniform(k_mem, (n, N), cum_prior.dtype))  # (n, N)
    u = jax.random.uniform(k_seq, (T, 2, n), cum_transition.dtype)
    cum_start_ext = jnp.concatenate([cum_transition, cum_initial[None]], axis=0)  # virtual start row
    rows = jnp.arange(n)

    def step(z_prev, u_t):
        z = core.inverse_cdf(cum_start_ext[z_prev], u_t[0])
        x = core.inverse_cdf(cum_emission[memory[rows, z // Q], z % Q], u_t[1])
        return z, (x, z)

    _, (tokens, states) = jax.lax.scan(step, jnp.full((n,), N * Q, jnp.int32), u)
    return tokens.T, states.T, memory


_RANDOM_OPTIONS = dict(prior_concentration=None, start_temp=10.0, transition_temp=0.01, emission_temp=0.01,
                       n_permutations=None, family="permutation-mixture", out_degree=2, dtype=jnp.float32)


@jax.tree_util.register_pytree_node_class
class MemoryHMM(hmm_mod.ChainInference, WorldBase):
    """Memory-augmented HMM: ``memory_prior (N, M)``, ``initial (N·Q,)``, ``transition (N·Q, N·Q)``,
    ``emission (M, Q, V)`` (see the module docstring for the model and its joint HMM).

    Every row must be a probability vector within ``atol`` (in (0, 1e-3]); arrays are stored in ``dtype``
    (float32, or float64 with ``jax_enable_x64``), a row off 1 by more than ``dtype``'s rounding renormalised
    (:func:`~simlm.worlds.base.check_probabilities`).  The joint
    ``initial (K,)`` and ``emission (K, V)``, K = M^N·N·Q, are built once here and are pytree leaves
    like the parameters (a transformation of the leaves must keep them consistent).
    """

    def __init__(self, memory_prior, initial, transition, emission, *, atol: float = 1e-6, dtype=jnp.float32):
        atol, dtype = check_atol(atol), check_float_dtype(dtype)
        rho = check_probabilities("memory_prior", memory_prior, atol=atol, dtype=dtype)
        pi = check_probabilities("initial", initial, atol=atol, dtype=dtype)
        A = check_probabilities("transition", transition, atol=atol, dtype=dtype)
        B = check_probabilities("emission", emission, atol=atol, dtype=dtype)
        if rho.ndim != 2:
            raise ShapeError(f"memory_prior: expected shape (N, M) = (cells, values), got {rho.shape}")
        N, M = rho.shape
        if B.ndim != 3 or B.shape[0] != M:
            raise ShapeError(f"emission: expected shape (M, Q, V) with M = {M} to match memory_prior's {M} "
                             f"values, got {B.shape}")
        Q = B.shape[1]
        for name, n, what in (("memory_prior", N, "cells (rows)"), ("emission", Q, "syntactic states (axis 1)")):
            if n == 0:  # it named initial, whose shape followed from these (a review, 2026-12-06)
                raise ShapeError(f"{name}: no {what}: a world needs at least one")
        if pi.shape != (N * Q,):
            raise ShapeError(f"initial: expected shape ({N * Q},) = N·Q for memory_prior's N = {N} cells and "
                             f"emission's Q = {Q} syntactic states, got {pi.shape}")
        if A.shape != (N * Q, N * Q):
            raise ShapeError(f"transition: expected shape ({N * Q}, {N * Q}) = (N·Q, N·Q) for N = {N}, Q = {Q}, "
                             f"got {A.shape}")
        _check_joint_size("memory_prior, emission", N, M, Q, B.shape[2], dtype.itemsize)
        # P(c)·π(z) of the *stored* factors (what the sampler draws from), rounded once: a world rebuilt from
        # its own parameters is then the same world to the bit (from the unrounded factors, memory-M5's joint
        # start differed in 10 of 20 entries from its rebuild, under one fingerprint)
        kept, joint_emission = joint_parameters(*(np.asarray(stored(a, dtype), np.float64) for a in (rho, pi)), B)
        # a product below the range of factors that are not (a factor below it is stored as 0, as is its product)
        lost = np.flatnonzero((kept > 0) & (kept < np.finfo(dtype).tiny))
        if lost.size:  # stored, it would be 0: a sequence only that (memory, state) can start read as impossible
            c, z = divmod(int(lost[0]), N * Q)
            raise ConfigError(f"memory_prior, initial: the joint start probability P(memory configuration {c}) · "
                              f"initial[{z}] = {kept[lost[0]]:.3g} is below {np.dtype(dtype).name}'s "
                              f"smallest normal number ({np.finfo(dtype).tiny:.3g}) although both factors are "
                              f"not; it would be stored as 0 ({lost.size} such pair(s)). Use dtype=float64 "
                              "(with jax_enable_x64) or larger probabilities")
        self._set(*(jnp.asarray(stored(a, dtype)) for a in (rho, pi, A, B, kept, joint_emission)))

    def _set(self, memory_prior, initial, transition, emission, joint_initial, joint_emission):
        self.memory_prior, self.initial, self.transition, self.emission = memory_prior, initial, transition, emission
        self.joint_initial, self.joint_emission = joint_initial, joint_emission

    # pytree: arrays are the leaves; unflattening skips validation (the leaves may be tracers)
    def tree_flatten(self):
        return (self.memory_prior, self.initial, self.transition, self.emission,
                self.joint_initial, self.joint_emission), None

    @classmethod
    def tree_unflatten(cls, _, leaves):
        obj = object.__new__(cls)
        obj._set(*leaves)
        return obj

    def __repr__(self):
        return (f"MemoryHMM(n_cells={self.n_cells}, n_values={self.n_values}, n_syntactic={self.n_syntactic}, "
                f"n_symbols={self.n_symbols}, fingerprint={self.fingerprint()})")

    @property
    def n_symbols(self) -> int:
        return self.emission.shape[2]

    @property
    def n_cells(self) -> int:
        return self.memory_prior.shape[0]

    @property
    def n_values(self) -> int:
        return self.memory_prior.shape[1]

    @property
    def n_syntactic(self) -> int:
        return self.emission.shape[1]

    @property
    def n_joint_states(self) -> int:
        """K = M^N·N·Q, the states of the joint HMM over (memory configuration, cell, syntactic state)."""
        return self.joint_initial.shape[0]

    def parameter_arrays(self) -> tuple:
        """The arrays that define this world (its fingerprint hashes them; a sweep stores them)."""
        return self.memory_prior, self.initial, self.transition, self.emission

    @property
    def _chain(self):
        return self.joint_initial, self.transition, self.joint_emission

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def one_cell(cls, prior, initial, transition, emission, *, atol: float = 1e-6, dtype=jnp.float32) -> "MemoryHMM":
        """The one-cell model of Wei, Xie & Ma's code with a factorised start law: a slot value m ~ ``prior
        (M,)`` fixed per sequence and, independently, a hidden chain ``initial (Q,)``, ``transition (Q, Q)``;
        x_t ~ ``emission[m, h_t]``, ``emission (M, Q, V)``.  Its joint HMM has states (slot, hidden), index
        m·Q + h, start law prior ⊗ initial, the block-diagonal transition kron(I_M, transition) and emission
        rows emission[m, h].  (Their ``generate_data_memory.py`` draws one joint start law over (slot,
        hidden), not always a product; such a model is the plain :class:`~simlm.worlds.HMM` with that start
        law and these transition and emission rows.)"""
        p = check_probabilities("prior", prior, atol=check_atol(atol), dtype=check_float_dtype(dtype))
        if p.ndim != 1:
            raise ShapeError(f"prior: expected shape (M,), got {p.shape}")
        return cls(p[None, :], initial, transition, emission, atol=atol, dtype=dtype)

    @classmethod
    def random(cls, seed: int, n_cells: int, n_values: int, n_syntactic: int, n_symbols: int,
               **options) -> "MemoryHMM":
        """A random memory HMM (construction-time randomness from ``seed``).  Options (defaults):

        - ``prior_concentration=None`` — memory prior uniform, ρ[j] = 1/M; a number a > 0 draws each
          ρ[j] ~ Dir(a·1);
        - ``start_temp=10``, ``transition_temp=0.01``, ``n_permutations=None`` — π and A over the N·Q
          states (s, q) from Wei, Xie & Ma's permutation-mixture family
          (:func:`simlm.worlds.families.permutation_mixture`);
        - ``emission_temp=0.01`` — emission[m, q] = softmax((U − ½)/emission_temp), U ~ Unif(0,1)^V;
        - ``family="permutation-mixture"`` — or ``"sparse"``: π and A over the N·Q states from
          :func:`simlm.worlds.families.sparse` (each row of A on ``out_degree=2`` states, exact zeros
          elsewhere).  An option the family does not read — ``start_temp``, ``transition_temp`` or
          ``n_permutations`` with ``"sparse"``, ``out_degree`` with ``"permutation-mixture"`` — is refused
          (ConfigError), as :meth:`HMM.random <simlm.worlds.HMM.random>` refuses them: it would be ignored;
        - ``dtype=float32`` — the stored parameters' dtype (float64 needs ``jax_enable_x64``): a draw whose joint
          start probability P(c)·π(z) falls below float32's range while both factors are within it (a small
          ``start_temp`` or ``prior_concentration``, for some seeds) is refused naming those options, and
          float64 holds it.  A factor itself below the range is stored as 0, as every parameter of a world is
          (0 or at least the dtype's smallest normal number): at ``start_temp=0.001`` π's draw 3e-160 makes
          its state one no sequence starts in, and the default ``transition_temp=0.01`` gives A exact zeros
          (its permutation weights e^−100 and below) — in float32; the same seed in float64 keeps them.

        A Dirichlet prior draw's entries below twice float32's smallest normal number (small
        ``prior_concentration`` draws exact zeros in float64) are lifted to it, as the families' Dirichlet
        draws are (:func:`simlm.worlds.families.sparse`), so that every memory value stays possible."""
        unknown = sorted(set(options) - set(_RANDOM_OPTIONS))
        if unknown:
            raise ConfigError(f"{unknown[0]}: not an option of MemoryHMM.random; its options are "
                              f"{list(_RANDOM_OPTIONS)}")
        opt = {**_RANDOM_OPTIONS, **options}
        rng = as_rng(seed)
        N, M = check_positive_int("n_cells", n_cells), check_positive_int("n_values", n_values)
        Q, V = check_positive_int("n_syntactic", n_syntactic), check_positive_int("n_symbols", n_symbols)
        t_B = check_number("emission_temp", opt["emission_temp"], positive=True)
        a = opt["prior_concentration"]
        a = None if a is None else check_number("prior_concentration", a, positive=True)
        family = opt["family"]
        if family not in ("permutation-mixture", "sparse"):
            raise ConfigError(f"family: expected 'permutation-mixture' or 'sparse', got {family!r}")
        for name, used_by in (("n_permutations", "permutation-mixture"), ("start_temp", "permutation-mixture"),
                              ("transition_temp", "permutation-mixture"), ("out_degree", "sparse")):
            if name in options and options[name] is not None and family != used_by:  # it would be ignored
                raise ConfigError(f"{name}: only family={used_by!r} reads it; this world's family is {family!r}")
        itemsize = check_float_dtype(opt["dtype"]).itemsize  # float64 worlds hold twice the bytes
        _check_joint_size("n_cells, n_values, n_syntactic, n_symbols", N, M, Q, V, itemsize)
        if family == "permutation-mixture":  # its (N·Q)³ mixture, refused before anything is drawn
            P = N * Q if opt["n_permutations"] is None else check_positive_int("n_permutations", opt["n_permutations"])
            check_permutation_mixture("n_cells, n_syntactic, n_permutations", N * Q, 1, P)
        if a is None:
            prior = np.full((N, M), 1.0 / M)
        else:
            prior = rng.dirichlet(np.full(M, a), size=N)
            low = (prior < _LEAST_WEIGHT).any(1)  # only those rows change: every other draw is the plain one
            prior[low] = np.maximum(prior[low], _LEAST_WEIGHT)
            prior[low] /= prior[low].sum(1, keepdims=True)
        if family == "sparse":
            initial, transition, _ = sparse(rng, N * Q, 1, out_degree=opt["out_degree"])
        else:
            initial, transition, _ = permutation_mixture(rng, N * Q, 1, start_temp=opt["start_temp"],
                                                         transition_temp=opt["transition_temp"],
                                                         n_permutations=opt["n_permutations"])
        emission = tempered(rng.uniform(size=(M, Q, V)), t_B)
        try:
            return cls(prior, initial, transition, emission, dtype=opt["dtype"])
        except SimlmError as err:
            if "joint start probability" not in str(err):  # the dtype's own refusal, say: as it is
                raise
            # a draw whose joint start probability is below the dtype's range, for this seed: the options named
            raise type(err)(f"{err} (drawn by MemoryHMM.random(seed={seed!r}) with options {options}: raise "
                            + ("start_temp or " if family == "permutation-mixture" else "")
                            + "prior_concentration, or pass dtype=float64 with jax_enable_x64)") from None

    def joint_hmm(self) -> hmm_mod.HMM:
        """The joint chain as a dense :class:`~simlm.worlds.hmm.HMM` with K = M^N·N·Q states (its
        transition I_{M^N} ⊗ A is materialised: for small worlds, users and tests).  Its rows are copies
        and products of this world's validated rows, so it is assembled without re-validation."""
        G = self.n_joint_states // self.transition.shape[0]
        K, f = self.n_joint_states, self._itemsize
        check_request("joint_hmm", [(G * G, f), (K * K, 2 * f)], f"the dense joint transition, {K} × {K}")
        dense = jnp.kron(jnp.eye(G, dtype=self.transition.dtype), self.transition)
        return hmm_mod.HMM.tree_unflatten(None, (self.joint_initial, dense, self.joint_emission))

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, key, n_sequences: int, length: int, *, return_states: bool = False):
        """Tokens ``(n, T)`` int32; with ``return_states=True`` also the states z = s·Q + q ``(n, T)``
        int32 and the memory ``(n, N)`` int32.  Memory first (per cell from ρ), then the z chain, then
        the emissions, by inverse CDF with one uniform per draw; the same key or seed gives bit-identical
        output.  Each draw resolves its probabilities to the grid of uniforms in the world's dtype, as
        :meth:`HMM.sample`'s (float32: 2⁻²³, float64: 2⁻⁵²): in float32 a value rarer than ~1e-7 is drawn at
        a multiple of 2⁻²³, maybe never."""
        n = check_positive_int("n_sequences", n_sequences)
        T = check_positive_int("length", length)
        return_states = check_flag("return_states", return_states)
        self._check_sample(n, T)
        key = as_key(key)  # after the host checks: making a key from a seed compiles
        cums = [core.cumulative_rows(a) for a in self.parameter_arrays()]
        tokens, states, memory = _sample(*cums, key, n, T)
        return (tokens, states, memory) if return_states else tokens

    # ---- exact inference (the WorldBase internals come from ChainInference, on the joint chain) ----
    def state_posterior(self, tokens, *, smoothed: bool = True) -> jax.Array:
        """P(z_t = s·Q + q | x_1:T) (``smoothed=True``) or P(z_t | x_≤t) (filtering), shape (n, T, N·Q):
        the joint posterior over (c, z) summed over the memory configuration c."""
        fn = hmm_mod.smoothed_posterior if check_flag("smoothed", smoothed) else hmm_mod.filtered_posterior
        post = self._checked(fn, tokens, "state_posterior")
        return post.reshape(post.shape[:-1] + (-1, self.transition.shape[0])).sum(-2)

    def memory_posterior(self, tokens) -> jax.Array:
        """P(m_j = v | x_1:T), shape (n, N, M): each cell's value given the whole sequence."""
        one_hot = np.eye(self.n_values, dtype=self.joint_initial.dtype)[memory_configurations(self.n_cells, self.n_values)]
        return self._checked(lambda *a: _memory_posterior(*a[:3], one_hot, a[3]), tokens, "memory_posterior")

    def log_memory_posterior(self, tokens) -> jax.Array:
        """log of :meth:`memory_posterior`, (n, N, M), computed in log space, in float64 and returned in the
        world's dtype (a float32 scan added each step's rounding: 8e-4 nats off at T = 400): a value whose share
        is far below the float range keeps it as a large negative number (−inf only for an exact 0)."""
        one_hot = np.eye(self.n_values, dtype=self.joint_initial.dtype)[memory_configurations(self.n_cells, self.n_values)]
        log_posterior = core._in_float64(lambda i, a, e, toks: _log_memory_posterior(i, a, e, one_hot, toks))
        return self._checked(log_posterior, tokens, "memory_posterior")

    # ---- sizes (see WorldBase.check_request) ----
    def _sample_arrays(self, n: int, T: int) -> list:
        # the memory (n, N), one uniform per draw (T, 2, n); tokens and states (T, n), then transposed
        return [(n * self.n_cells, 4 + self._itemsize), (2 * n * T, self._itemsize)] + [(n * T, 4)] * 4

    def _inference_arrays(self, method: str, n: int, T: int, P: int) -> list:
        extra = [(self.n_joint_states // self.n_syntactic * self.n_values, self._itemsize)] \
            if method == "memory_posterior" else []  # the (M^N, N, M) one-hot of the configurations
        return super()._inference_arrays(method, n, T, P) + extra

