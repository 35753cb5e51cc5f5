"""The hidden Markov model world: exact optimal causal and masked LMs by forward–backward.

A thin class over :mod:`simlm.worlds.hmm_core`: it validates parameters once at construction, validates
tokens on the host, and calls jit-compiled, sequence-batched core functions.

The module's functions (``token_logprobs(initial, transition, emission, tokens)`` …) check the token ids
outside a trace (``TokenError`` for one outside [0, V)) and take the parameters as given: rows summing to 1,
and every entry 0 or at least its dtype's smallest normal number (1.2e-38 in float32) — the class stores them
so (:func:`~simlm.worlds.base.stored`).  A subnormal entry is read as 0 by
the sequential scan (XLA flushes it) and as its own logarithm's flushed value by the log-space and
associative scans (π = (1, 1e-40, 0): log p(x_1) = −inf against −103.97 = log 2⁻¹⁵⁰), so the answer would
depend on the device and the sequence length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from simlm.errors import ConfigError, ShapeError, SimlmError, ZeroProbabilityError
from simlm.worlds import buckets
from simlm.worlds import hmm_core as core
from simlm.worlds import prompting
from simlm.checks import as_key, as_rng, check_positive_int
from simlm.worlds.base import (PREPENDED, WorldBase, check_atol, check_flag, check_float_dtype, check_probabilities,
                               check_request, stored)
from simlm.worlds.families import random_parameters


# Small shapes run on a few padded bucket shapes, so that a new (n, K, V, T) rarely compiles (buckets.py).
_LAWS, _STATES = (("T", "V"), ("T",)), (("T", "K"), ("T",))
# core.batched: jit(vmap) over sequences, the parallel-or-sequential choice made for the whole batch.
token_logprobs = buckets.bucketed(core.batched(core.token_logprobs, possible=True), (("T",),))
log_likelihood = buckets.bucketed_log_likelihood(token_logprobs)
next_token_probs = buckets.bucketed(core.batched(core.next_token_probs, possible=True), _LAWS)
next_token_logprobs = buckets.bucketed(core.batched(core.next_token_logprobs, possible=True), _LAWS)
# the posteriors and masked laws read the backward messages: their T is padded only for rows summing to 1
smoothed_posterior = buckets.bucketed(core.batched(core.smoothed_posterior), _STATES, reads_backward=True)
masked_state_posterior = buckets.bucketed(core.batched(core.masked_state_posterior), _STATES, reads_backward=True)
masked_token_probs = buckets.bucketed(core.batched(core.masked_token_probs), _LAWS, reads_backward=True)
prepended_state_posterior = buckets.bucketed(core.batched(core.prepended_state_posterior), (("K",), ("T",)),
                                             reads_backward=True)
prepended_mask_probs = buckets.bucketed(core.batched(core.prepended_mask_probs), (("V",), ("T",)),
                                        reads_backward=True)


def _filtered(initial, transition, emission, tokens, parallel=None):
    fw, low = core._split(parallel, core.forward(initial, transition, emission, tokens, parallel))
    return core._checked(parallel, (fw.filtered, fw.token_logprobs), low)


#: p(h_t | x_≤t) ``(n, T, K)`` and the per-step log-probs ``(n, T)``, batched and jitted.
filtered_posterior = buckets.bucketed(core.batched(_filtered), _STATES)

def _logs(fn):
    """``fn`` of one sequence, vmapped over the sequences and jitted (the parameters shared)."""
    return jax.jit(jax.vmap(fn, in_axes=(None, None, None, 0)))


#: the posteriors as logs, computed in log space (``hmm_core.log_*_posterior``): ``(out, log c (n, T))``, in
#: float64 and returned in the world's dtype — a buried share's log is a number near −100 to −1000 whose float32
#: rounding each step adds (a memory posterior's log 8e-4 nats off at T = 400, 1e-2 at 1600: a review 2026-12-06)
log_filtered_posterior = core._in_float64(_logs(core.log_filtered_posterior))
log_smoothed_posterior = core._in_float64(_logs(core.log_smoothed_posterior))
log_prepended_posterior = core._in_float64(_logs(core.log_prepended_posterior))

#: ``(tokens, states)``, each (n, T) int32, from raw parameters (``buckets.sample_tokens``).
sample_tokens = buckets.sample_tokens


# the prompted laws (simlm.worlds.prompting), checked and rerun in log space like the rest; the prompt
# likelihoods (k, K) are shared by every sequence
prompted_state_posterior = core.batched(prompting.prompted_state_posterior)
prompted_prepended_mask_probs = core.batched(prompting.prompted_prepended_mask_probs)
prompted_masked_token_probs = core.batched(prompting.prompted_masked_token_probs)


#: how the prompt methods' errors name their argument ``prompt``: with U, the prompt likelihoods' name in
#: :mod:`simlm.worlds.prompting` (and in the messages tests and callers match on)
_PROMPT = "prompt U"


class ChainInference:
    """The exact-inference internals of :class:`~simlm.worlds.base.WorldBase` for a world whose tokens come
    from one hidden chain ``self._chain`` = (initial, transition, emission) — an HMM's own parameters, or
    a MemoryHMM's joint chain (transition dense or block-diagonal)."""

    def _token_logprobs(self, toks):
        return token_logprobs(*self._chain, toks)

    def _log_likelihood(self, toks):
        return log_likelihood(*self._chain, toks)

    def _next_token_logprobs(self, toks):
        return next_token_logprobs(*self._chain, toks)

    def _masked_token_probs(self, toks, positions):
        probs, steps = masked_token_probs(*self._chain, toks)
        # picked on the host: an indexing op on the device compiles for every new (n, T, V)
        return jax.device_put(np.asarray(probs)[:, np.asarray(positions)]), steps

    def _prepended_mask_probs(self, toks):
        return prepended_mask_probs(*self._chain, toks)

    def next_token_probs(self, tokens) -> jax.Array:
        """p*(x_t = · | x_<t), shape (n, T, V) — computed directly, not as exp(log)."""
        return self._checked(next_token_probs, tokens, "next_token_probs", read_last=False)

    def _checked(self, fn, tokens, method: str, read_last: bool = True, under: str = "under this world"):
        """``fn(*chain, tokens)`` → (out, per-step log-probs) on checked tokens (refused when ``method`` on
        them cannot fit); raises for an impossible sequence (one impossible before x_T only, for a law
        that ``read_last`` = False never conditions on x_T; ``under`` what, in the message); a single
        sequence in gives a single result out."""
        toks, single = self._tokens(tokens, method)
        out, steps = fn(*self._chain, jax.device_put(toks))
        self._require_possible(toks, np.asarray(steps)[:, :None if read_last else -1], under=under)
        return out[0] if single else out

    @property
    def chain(self) -> core.Chain:
        """The exact hidden chain (initial, transition, emission) that generates this world's tokens: an
        HMM's own parameters, a MemoryHMM's joint (memory, cell, state) chain with its block transition."""
        return core.Chain(*self._chain)

    # ---- prompts (Wei, Xie & Ma; the maths is in simlm.worlds.prompting) ---------------------------
    def prompt_reweighting(self, prompt) -> jax.Array:
        """r = P(H | z) ⊘ π scaled to max 1, ``(K,)``: P(H_0 | z, x) ∝ P(H_0 | x) ∘ r for every x, for the
        prompt likelihoods ``prompt (k, K)`` (0 where π = 0; :func:`~simlm.worlds.prompting.prompt_reweighting`).
        :class:`ConfigError` naming the prompt when P(H | z) puts mass on a state the unprompted position 0 never
        takes (π = 0; the pure function's r is then 0 there and the identity false: P(H_0 = h | x) = 0 for every
        x while P(H_0 = h | z, x) need not be), when it vanishes wherever π > 0, or when the prompt itself has
        probability zero: no reweighting r exists then."""
        initial, transition, _ = self._chain
        u = self._prompt(prompt)
        r = prompting.prompt_reweighting(initial, transition, u)
        if not np.asarray(r).max() > 0:
            self._require_possible_prompt(u, "it reweights nothing")
            raise ConfigError(f"{_PROMPT}: its law P(H | z) vanishes (to float precision) on every state the "
                              "unprompted position 0 can take (π > 0), so no reweighting r of P(H_0 | x) gives "
                              "the prompted posterior (prompted_state_posterior has it directly)")
        alpha, pi = np.asarray(prompting.prompt_prior(initial, transition, u)), np.asarray(initial)
        off = np.flatnonzero((pi == 0) & (alpha > 0))
        if off.size:  # P(H_0 = h | x) = 0 for every x there, but P(H_0 = h | z, x) need not be
            raise ConfigError(f"{_PROMPT}: its law P(H | z) puts {alpha[off].sum() / alpha.sum():.3g} of its mass on "
                              f"states the unprompted position 0 never takes (π = 0: {off.tolist()[:8]}), so no "
                              "reweighting r of P(H_0 | x) gives the prompted posterior (prompted_state_posterior "
                              "has it directly)")
        return r

    def prompted_state_posterior(self, tokens, prompt) -> jax.Array:
        """P(H_0 | z_1:k, x_1:T) ``(n, K)`` at a masked position 0 between the prompt ``prompt (k, K)`` and
        x.  Raises :class:`ZeroProbabilityError` for a sequence of probability zero after the prompt (read in
        the prompted chain, so x impossible without the prompt but possible with it is answered), and
        :class:`ConfigError` naming the prompt when the prompt itself has probability zero (as every prompted
        law does)."""
        return self._prompted(prompted_state_posterior, tokens, prompt)

    def prompted_prepended_mask_probs(self, tokens, prompt) -> jax.Array:
        """The prompted masked LM's law at position 0: P(x_0 = · | z, x_1:T) = P(H_0 | z, x) B, ``(n, V)``."""
        return self._prompted(prompted_prepended_mask_probs, tokens, prompt)

    def prompted_masked_token_probs(self, tokens, prompt) -> jax.Array:
        """P(x_t = · | z, x_−t) at every position of x_1:T placed right after the prompt, ``(n, T, V)``: defined
        where p(x_−t | z) > 0 at every t, as :meth:`masked_token_probs` (x itself may be impossible: its token
        at t is a placeholder the law never reads); a position where it is 0 raises
        :class:`ZeroProbabilityError`."""
        return self._prompted(prompted_masked_token_probs, tokens, prompt)

    def _require_possible_prompt(self, u, consequence: str = "no law after it is defined, whatever the tokens"):
        """:class:`ConfigError` naming the prompt when the prompt likelihoods ``u (k, K)`` vanish on every
        path of the chain (P(z) = 0), and what follows (``consequence``)."""
        initial, transition, _ = self._chain
        if not np.asarray(prompting.prompt_prior(initial, transition, u)).max() > 0:
            raise ConfigError(f"{_PROMPT}: the prompt has probability zero under this world (its likelihoods "
                              f"vanish on every path of the chain), so {consequence}")

    def _prompt(self, prompt) -> jax.Array:
        initial = self._chain[0]
        return jnp.asarray(prompting.prompt_rows(prompt, initial.shape[0], initial.dtype, name=_PROMPT))

    def _prompted(self, fn, tokens, prompt):
        u = self._prompt(prompt)
        toks, single = self._tokens(tokens, "masked_token_probs")  # the prompted laws build as much
        out, steps = fn(*self._chain, u, jax.device_put(toks))  # steps: log p(x_t | z, x_<t), prompted chain
        if not np.isfinite(np.asarray(steps)).all():
            self._require_possible_prompt(u)
        if fn is prompted_masked_token_probs:  # defined where p(x_−t | z) > 0, which p(x | z) = 0 leaves open
            initial, transition, emission = self._chain  # the substitutions scored from the prompt's law
            prompted = lambda t: log_likelihood(prompting.prompt_prior(initial, transition, u), transition, emission, t)
            self._require_masked_possible(toks, np.arange(toks.shape[1]), steps, under="after this prompt",
                                          log_likelihood=prompted)
        else:
            self._require_possible(toks, steps, "its law after this prompt is undefined (the prompted chain, "
                                                "started at the prompt's law, cannot produce it)",
                                   under="after this prompt")
        dead = ~(np.asarray(out).reshape(len(toks), -1).sum(-1) > 0)
        if dead.any():
            raise ZeroProbabilityError(
                f"tokens: sequence {int(np.flatnonzero(dead)[0])} is impossible after this prompt (the prompt's "
                f"likelihoods vanish on every state compatible with it; {int(dead.sum())} of {len(toks)} "
                "sequences), so its prompted law is undefined")
        return out[0] if single else out

    # ---- sizes (see WorldBase.check_request): what sampling and inference build, at their itemsize ----
    def _sample_arrays(self, n: int, T: int) -> list:
        # one uniform per draw (T, 2, n); tokens and states (T, n) out of the scan, then transposed
        return [(2 * n * T, self._itemsize)] + [(n * T, 4)] * 4

    def _inference_arrays(self, method: str, n: int, T: int, P: int) -> list:
        K, V, f = self._chain[0].shape[0], self.n_symbols, self._itemsize
        laws = {"next_token_probs": [n * T * V, K * V], "next_token_logprobs": [n * T * V] * 2 + [K * V],
                "masked_token_probs": [n * T * K] * 4 + [n * T * V, n * P * V],
                "prepended_mask_probs": [n * T * K, n * K, n * V],
                "state_posterior": [n * T * K] * 5, "masked_state_posterior": [n * T * K] * 4,
                "prepended_state_posterior": [n * T * K, n * K], "memory_posterior": [n * T * K] * 2}
        return [(e, f) for e in [n * T, *laws.get(method, [])]]


def stationary_law(transition: np.ndarray) -> np.ndarray:
    """μ = μA, Σμ = 1 for a row-stochastic ``transition (K, K)`` (rows renormalised in float64): on the first
    closed communicating class C (a class no positive entry leaves; every finite chain has one), the unique
    solution of μ_C (A_CC − I) = 0, Σμ_C = 1 by least squares, 0 off C.  Unique on an irreducible chain."""
    from scipy.sparse.csgraph import connected_components

    A = np.asarray(transition, np.float64)
    A = A / A.sum(axis=1, keepdims=True)
    _, label = connected_components(A > 0, directed=True, connection="strong")  # the communicating classes
    leaves = np.zeros(label.max() + 1, bool)  # a class is closed when no positive entry leaves it
    rows, cols = np.nonzero(A > 0)
    leaves[label[rows][label[rows] != label[cols]]] = True
    C = np.flatnonzero(label == next(label[i] for i in range(len(A)) if not leaves[label[i]]))
    S = A[np.ix_(C, C)]
    system = np.vstack([S.T - np.eye(len(C)), np.ones((1, len(C)))])
    rhs = np.zeros(len(C) + 1)
    rhs[-1] = 1.0
    mu_c = np.clip(np.linalg.lstsq(system, rhs, rcond=None)[0], 0.0, None)
    mu = np.zeros(len(A))
    mu[C] = mu_c / mu_c.sum()
    return mu


@jax.tree_util.register_pytree_node_class
class HMM(ChainInference, WorldBase):
    """A hidden Markov model with K hidden states and V symbols.

    ``initial[k] = P(h_1 = k)``, ``transition[i, j] = P(h_{t+1} = j | h_t = i)``,
    ``emission[k, v] = P(x_t = v | h_t = k)``.  Rows must be probability vectors (within ``atol``);
    they are stored in ``dtype`` (float32 by default, or float64 with ``jax_enable_x64``): rows within
    ``dtype``'s rounding of 1 exactly as given, rows further off (within ``atol``) renormalised, so that
    the samples and the exact laws are of one chain and a world rebuilt from its own parameters is the
    same world (:func:`~simlm.worlds.base.check_probabilities`).  ``atol``, in (0, 1e-3], is how far a row
    may sum from 1 and still be read as a law.
    """

    def __init__(self, initial, transition, emission, *, atol: float = 1e-6, dtype=jnp.float32):
        atol, dtype = check_atol(atol), check_float_dtype(dtype)
        pi = check_probabilities("initial", initial, atol=atol, dtype=dtype)
        A = check_probabilities("transition", transition, atol=atol, dtype=dtype)
        B = check_probabilities("emission", emission, atol=atol, dtype=dtype)
        if pi.ndim != 1:
            raise ShapeError(f"initial: expected shape (K,), got {pi.shape}")
        K = pi.shape[0]
        if A.shape != (K, K):
            raise ShapeError(f"transition: expected shape ({K}, {K}) to match initial's {K} states, got {A.shape}")
        if B.ndim != 2 or B.shape[0] != K:
            raise ShapeError(f"emission: expected shape ({K}, V) to match initial's {K} states, got {B.shape}")
        check_request("transition, emission", [(a.size, dtype.itemsize) for a in (pi, A, B)],
                       f"the HMM's parameters on the device, {K} states × {B.shape[1]} symbols")
        # cast (subnormals flushed, as XLA computes with them) and put on the device: jnp.asarray would
        # compile a conversion (or a copy) for every new shape
        self._set(*(jax.device_put(stored(a, dtype)) for a in (pi, A, B)))

    def _set(self, initial, transition, emission):
        self.initial, self.transition, self.emission = initial, transition, emission

    # pytree: arrays are the leaves; unflattening skips validation (the leaves may be tracers)
    def tree_flatten(self):
        return (self.initial, self.transition, self.emission), None

    @classmethod
    def tree_unflatten(cls, _, leaves):
        obj = object.__new__(cls)
        obj._set(*leaves)
        return obj

    def __repr__(self):
        return f"HMM(n_states={self.n_states}, n_symbols={self.n_symbols}, fingerprint={self.fingerprint()})"

    @property
    def n_states(self) -> int:
        return self.initial.shape[0]

    @property
    def n_symbols(self) -> int:
        return self.emission.shape[1]

    def parameter_arrays(self) -> tuple:
        """The arrays that define this world (its fingerprint hashes them; a sweep stores them)."""
        return self.initial, self.transition, self.emission

    @property
    def _chain(self):
        return self.initial, self.transition, self.emission

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def random(cls, seed: int, n_states: int, n_symbols: int, *, family: str = "dirichlet", dtype=jnp.float32,
               **options) -> "HMM":
        """A random HMM from a named family (see :mod:`simlm.worlds.families`):

        - ``"dirichlet"`` — rows from symmetric Dirichlets (``*_concentration`` options);
        - ``"permutation-mixture"`` — Wei, Xie & Ma's family (``start_temp=10``,
          ``transition_temp=0.01``, ``emission_temp=0.01``);
        - ``"ginc"`` — (concept, entity, property) states, ``kron(entity_T, property_T)`` per concept,
          a deterministic emission table shared by concepts (``n_concepts``, ``n_entities``, …);
        - ``"sparse"`` — exact zeros in the transitions: each row of A on ``out_degree=2`` random states
          (``initial_support``, ``emission_support``, ``*_concentration``), where Wei, Xie & Ma's prompt
          condition can hold exactly.

        ``dtype`` (float32; float64 needs ``jax_enable_x64``) is the stored parameters' dtype, as
        :meth:`MemoryHMM.random <simlm.worlds.MemoryHMM.random>` takes it.  The families draw in float64 and the
        world stores each entry as 0 or at least the dtype's smallest normal number, so a draw below float32's
        range (the permutation mixture's small temperatures) is 0 in a float32 world and kept in a float64 one:
        ``HMM(*HMM.random(...).parameter_arrays(), dtype=jnp.float64)`` is the float32 world, its zeros included,
        not this one."""
        rng = as_rng(seed)
        dtype = check_float_dtype(dtype)  # before the draw: a bad dtype is named as such, not as the family's option
        params = random_parameters(rng, n_states, n_symbols, family, options)
        try:
            return cls(*params, dtype=dtype)
        except SimlmError as err:  # an option so extreme that the draws are not distributions (1e308)
            raise type(err)(f"{err} (drawn by HMM.random from family {family!r} with options {options}: "
                            "out of range for float64 draws)") from None

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, key, n_sequences: int, length: int, *, return_states: bool = False):
        """``(n, T)`` int32 tokens (and ``(n, T)`` states) by inverse-CDF sampling, one uniform per draw.
        The same key or seed gives bit-identical output.  A float32 uniform resolves each draw's
        probabilities to its 2⁻²³ grid: a token or state rarer than ~1e-7 is drawn at a multiple of 2⁻²³
        (maybe never), where the exact laws give it its own probability (:func:`~simlm.worlds.hmm_core.sample`)."""
        n = check_positive_int("n_sequences", n_sequences)
        T = check_positive_int("length", length)
        return_states = check_flag("return_states", return_states)
        self._check_sample(n, T)
        key = as_key(key)  # after the host checks: making a key from a seed compiles
        tokens, states = sample_tokens(*self._chain, key, n, T)
        return (tokens, states) if return_states else tokens

    def state_posterior(self, tokens, *, smoothed: bool = True) -> jax.Array:
        """p(h_t | x_1:T) (``smoothed=True``, forward–backward) or p(h_t | x_≤t) (filtering), (n, T, K)."""
        fn = smoothed_posterior if check_flag("smoothed", smoothed) else filtered_posterior
        return self._checked(fn, tokens, "state_posterior")

    def masked_state_posterior(self, tokens, positions=None) -> jax.Array:
        """p(h_t | x_−t): the state law at t when x_t is masked, ``(n, P, K)`` at ``positions`` (all T when
        None), as :meth:`masked_token_probs` gives the token laws there.  Defined where p*(x_−t) > 0: x_t is a
        placeholder it never reads, so an impossible one is answered; a requested position where every token
        is impossible is refused, naming it."""
        def law(toks, pos):  # every position in one pass, picked on the host, as the token laws
            out, steps = masked_state_posterior(*self._chain, toks)
            return jax.device_put(np.asarray(out)[:, np.asarray(pos)]), steps

        return self._masked(law, tokens, positions, "masked_state_posterior")

    def prepended_state_posterior(self, tokens) -> jax.Array:
        """p(h_0 | x_1:T) for a masked position 0 prepended before x_1, (n, K); h_0 ~ π, h_1 ~ πA."""
        return self._checked(prepended_state_posterior, tokens, "prepended_state_posterior", under=PREPENDED)

    def log_state_posterior(self, tokens, *, smoothed: bool = True) -> jax.Array:
        """log of :meth:`state_posterior`, (n, T, K), computed in log space (in float64, returned in the world's
        dtype): a share far below the float range is a large negative number here, where the probabilities hold
        0 (−inf only for an exact 0)."""
        fn = log_smoothed_posterior if check_flag("smoothed", smoothed) else log_filtered_posterior
        return self._checked(fn, tokens, "state_posterior")

    def log_prepended_state_posterior(self, tokens) -> jax.Array:
        """log of :meth:`prepended_state_posterior`, (n, K), computed in log space (in float64, returned in the
        world's dtype)."""
        return self._checked(log_prepended_posterior, tokens, "prepended_state_posterior", under=PREPENDED)

    def stationary_distribution(self) -> np.ndarray:
        """A stationary law μ = μA, float64: the unique one of an irreducible chain; for a reducible chain,
        the one of its first closed class (the closed class of the lowest state index), 0 elsewhere.

        Solved on that class's rows renormalised in float64 (μS = μ, Σμ = 1), not read off the eigenvalue
        closest to 1: the stored float32 rows sum to 1 only to ~1e-8, which moves the Perron root by as much,
        so a chain that mixes more slowly than that (e.g. topics switching with probability 1e-8) had another
        eigenvector picked — a law that passes μA ≈ μ to 4e-9 and is 1/6 off in total variation."""
        return stationary_law(np.asarray(self.transition, np.float64))

    # ---- interoperability -----------------------------------------------------------------------
    @classmethod
    def from_hmmlearn(cls, model) -> "HMM":
        """From a fitted ``hmmlearn.hmm.CategoricalHMM`` (``startprob_``, ``transmat_``, ``emissionprob_``)."""
        try:
            arrays = model.startprob_, model.transmat_, model.emissionprob_
        except AttributeError as err:
            raise ConfigError(f"model: expected a fitted hmmlearn CategoricalHMM, got {type(model).__name__} "
                              f"({err})") from None
        return _named("model", lambda: cls(*arrays))

    def to_hmmlearn(self):
        """An ``hmmlearn.hmm.CategoricalHMM`` with these parameters (hmmlearn must be installed)."""
        _require("hmmlearn", "to_hmmlearn")
        from hmmlearn.hmm import CategoricalHMM

        m = CategoricalHMM(n_components=self.n_states, n_features=self.n_symbols, init_params="", params="")
        m.startprob_ = np.asarray(self.initial, np.float64)
        m.transmat_ = np.asarray(self.transition, np.float64)
        m.emissionprob_ = np.asarray(self.emission, np.float64)
        return m

    def to_dynamax(self):
        """``(model, params)`` for ``dynamax.hidden_markov_model.CategoricalHMM`` (emission_dim = 1)."""
        _require("dynamax", "to_dynamax")
        from dynamax.hidden_markov_model import CategoricalHMM

        model = CategoricalHMM(self.n_states, 1, self.n_symbols)
        params, _ = model.initialize(
            initial_probs=self.initial, transition_matrix=self.transition,
            emission_probs=self.emission[:, None, :],
        )
        return model, params

    @classmethod
    def from_dynamax(cls, params) -> "HMM":
        """From dynamax CategoricalHMM parameters (emission_dim must be 1)."""
        try:
            pi, A, B = params.initial.probs, params.transitions.transition_matrix, params.emissions.probs
        except AttributeError as err:
            raise ConfigError(f"params: expected the parameters of a dynamax CategoricalHMM (as from "
                              f"model.initialize(...)), got {type(params).__name__} ({err})") from None
        try:
            B = np.asarray(B)
        except (TypeError, ValueError):
            raise ConfigError("params: emissions.probs is not an array of shape (K, 1, V)") from None
        if B.ndim != 3 or B.shape[1] != 1:
            raise ShapeError(f"params: expected emission probs of shape (K, 1, V), got {B.shape}")
        return _named("params", lambda: cls(pi, A, B[:, 0, :]))


def _named(argument: str, build):
    """``build()``, with a simlm error re-raised naming ``argument`` first — the object the user passed —
    since the error names the parameter it failed on (``initial``, ``transition``, …)."""
    try:
        return build()
    except SimlmError as err:
        raise type(err)(f"{argument}: {err}") from None


def _require(package: str, method: str) -> None:
    """A :class:`ConfigError` naming the optional ``package`` a ``method`` needs, when it is not installed."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"{method}: needs the optional package {package} (pip install {package})")
