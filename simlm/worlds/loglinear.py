"""A log-linear world: p*(w | x) = softmax_w(⟨v*_w, f*(x)⟩) holds exactly (Wu, Lee & Ge, NeurIPS 2023).

Contexts come from a deterministic-transition automaton with S states, a start state and a table
``next_state[h, w]`` (S, V): after emitting w in state h it moves to next_state[h, w].  The context
x_<t therefore fixes the state h_t = h(x_<t), and the true representation is f*(x_<t) = z_{h_t} ∈ ℝ^d,
a row of Z (S, d).  Word embeddings V* (d, V) have columns v*_w.  Generation:

    h_1 = start,   x_t ~ softmax(V*ᵀ z_{h_t}),   h_{t+1} = next_state[h_t, x_t].

Masked law.  With L_t(h) = log p(x_{t:T} | h_t = h) over *all* states (0-indexed, L_T = 0),

    L_t(h) = log p*(x_t | h) + L_{t+1}(next_state[h, x_t]),
    log p(x_i = w | x_-i) = log_softmax_w[ log p*(w | h_i) + L_{i+1}(next_state[h_i, w]) ],

exact at cost O(S) per step plus O(V) per position; L_t is carried shifted to max_h L_t(h) = 0, which
the normalisation over w cancels.  A masked x_0 prepended before x_1 is emitted from
the start state: p(x_0 = w | x_1:T) ∝ p*(w | start) · exp L_0(next_state[start, w]).

The functions below take one sequence ``tokens (T,)`` and are jit/vmap-able (the shape of
:mod:`simlm.worlds.hmm_core`); :class:`LogLinearWorld` vmaps them over sequences.
"""

from __future__ import annotations

import inspect
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from simlm.errors import ConfigError, ShapeError, SimlmError
from simlm.precision import mm
from simlm.checks import check_real_array, as_key, as_rng, check_positive_int
from simlm.worlds.base import WorldBase, check_flag, check_number, check_request
from simlm.worlds.hmm_core import cumulative_rows, inverse_cdf, tree_sum


# ---- pure core (one sequence) -------------------------------------------------------------------

def emission_logprobs(representations, word_embeddings) -> jax.Array:
    """log p*(w | h) = log_softmax_w(z_h · V*), shape (S, V); finite for finite parameters."""
    return jax.nn.log_softmax(mm(representations, word_embeddings), axis=-1)


def state_path(next_state, start, tokens) -> jax.Array:
    """h_t = h(x_<t) for t = 1..T, shape (T,): h_1 = start, h_{t+1} = next_state[h_t, x_t]."""
    return jax.lax.scan(lambda h, x: (next_state[h, x], h), jnp.asarray(start, jnp.int32), tokens)[1]


def backward_messages(log_emission, next_state, tokens) -> tuple[jax.Array, jax.Array]:
    """L̃_0 (S,) and L̃_{t+1} for t = 0..T-1 (T, S), where L̃_t = L_t − max_h L_t(h) and
    L_t(h) = log p(x_{t:T} | h_t = h).  The masked laws are invariant to a shift of L_t by a constant,
    and the shift keeps the messages O(1) so float32 keeps its precision however long the sequence."""
    def step(after, x):
        here = log_emission[:, x] + after[next_state[:, x]]
        return here - here.max(), after

    return jax.lax.scan(step, jnp.zeros(log_emission.shape[0], log_emission.dtype), tokens, reverse=True)


def masked_token_logprobs(log_emission, next_state, start, tokens, positions) -> tuple[jax.Array, jax.Array]:
    """log p(x_i = · | x_-i) at each i in ``positions (P,)``, shape (P, V); with the steps (T,)."""
    path = state_path(next_state, start, tokens)
    _, after = backward_messages(log_emission, next_state, tokens)
    h = path[positions]
    cont = jnp.take_along_axis(after[positions], next_state[h], axis=-1)  # L_{i+1}(next_state[h_i, w])
    return jax.nn.log_softmax(log_emission[h] + cont, axis=-1), log_emission[path, tokens]


def prepended_mask_logprobs(log_emission, next_state, start, tokens) -> tuple[jax.Array, jax.Array]:
    """log p(x_0 = · | x_1:T) for a masked x_0 emitted from the start state, shape (V,); with the
    steps log p*(x_t | x_<t) of the unprepended sequence (T,) (every step is finite in this world)."""
    first, _ = backward_messages(log_emission, next_state, tokens)
    scores = log_emission[start] + first[next_state[start]]
    path = state_path(next_state, start, tokens)
    return jax.nn.log_softmax(scores), log_emission[path, tokens]


# ---- batched, compiled ----------------------------------------------------------------------------

_paths = jax.vmap(state_path, (None, None, 0))  # (S, V), (), (n, T) → (n, T)
_batch_paths = jax.jit(_paths)
_batch_representation = jax.jit(lambda Z, next_state, start, toks: Z[_paths(next_state, start, toks)])
_state_probs = jax.jit(lambda Z, W: jnp.exp(emission_logprobs(Z, W)))
_emission_logits = jax.jit(mm)  # full float32 (simlm.precision)


@jax.jit
def _batch_token_logprobs(Z, W, next_state, start, toks):
    return emission_logprobs(Z, W)[_paths(next_state, start, toks), toks]


@jax.jit
def _batch_log_likelihood(Z, W, next_state, start, toks):
    return tree_sum(_batch_token_logprobs(Z, W, next_state, start, toks))


@jax.jit
def _batch_next_token_logprobs(Z, W, next_state, start, toks):
    out = emission_logprobs(Z, W)[_paths(next_state, start, toks)]
    return out, jnp.take_along_axis(out, toks[..., None], axis=-1)[..., 0]


def _masked_logprobs(Z, W, next_state, start, toks, positions):
    f = jax.vmap(masked_token_logprobs, (None, None, None, 0, None))
    return f(emission_logprobs(Z, W), next_state, start, toks, positions)


def _prepended_logprobs(Z, W, next_state, start, toks):
    return jax.vmap(prepended_mask_logprobs, (None, None, None, 0))(emission_logprobs(Z, W), next_state, start, toks)


# the log laws as computed (finite where a float32 probability underflows), and their exp
_batch_masked_log = jax.jit(_masked_logprobs)
_batch_prepended_log = jax.jit(_prepended_logprobs)


@jax.jit
def _batch_masked(Z, W, next_state, start, toks, positions):
    logp, steps = _masked_logprobs(Z, W, next_state, start, toks, positions)
    return jnp.exp(logp), steps


@jax.jit
def _batch_prepended(Z, W, next_state, start, toks):
    logp, steps = _prepended_logprobs(Z, W, next_state, start, toks)
    return jnp.exp(logp), steps


@partial(jax.jit, static_argnums=(5, 6))
def _sample(Z, W, next_state, start, key, n: int, length: int):
    """One uniform per draw: x_t = inverse_cdf(cum[h_t], u_t), h_{t+1} = next_state[h_t, x_t]."""
    cum_emission = cumulative_rows(jnp.exp(emission_logprobs(Z, W)))  # (S, V)
    u = jax.random.uniform(key, (length, n), dtype=cum_emission.dtype)

    def step(h, u_t):
        x = inverse_cdf(cum_emission[h], u_t)
        return next_state[h, x], (x, h)

    _, (x, h) = jax.lax.scan(step, jnp.full((n,), start, jnp.int32), u)
    return x.T, h.T


# ---- host-side checks -----------------------------------------------------------------------------

def _real_array(name: str, value, ndim: int) -> np.ndarray:
    """:func:`simlm.checks.check_real_array` with ``ndim`` axes, none empty."""
    arr = check_real_array(name, value)
    if arr.ndim != ndim or 0 in arr.shape:
        raise ShapeError(f"{name}: expected a non-empty {ndim}-d array, got shape {arr.shape}")
    return arr


def _check_fits(name: str, arr: np.ndarray, dtype) -> None:
    """Entries of ``arr`` must be finite in the storage ``dtype`` (1e300 is finite in float64, inf in float32)."""
    top = np.finfo(dtype).max
    if arr.size and np.abs(arr).max() > top:
        idx = tuple(int(i) for i in np.argwhere(np.abs(arr) > top)[0])
        raise ConfigError(f"{name}: entry {idx if len(idx) > 1 else idx[0]} is {arr[idx]:.3g}, which overflows "
                          f"{np.dtype(dtype).name} (largest finite {top:.3g})")


#: the largest worst-case float32 rounding error, in nats, that a world's logits may carry (see _check_logits).
LOGIT_TOLERANCE = 1e-2


def max_logit(dim: int, dtype=None) -> float:
    """The largest Σ_k |z_hk||v*_kw| a world of dimension ``dim`` may have: a dot product of d terms is
    rounded by at most (d + 1)·u·Σ_k |z_hk||v*_kw| (u = 2^-24 in float32), which must stay within
    :data:`LOGIT_TOLERANCE` nats.  Larger logits would give laws off by that much — and from ~1e9 in float32
    the rounding residue the fused softmax exponentiates overflows to inf.  The tolerance is per logit, so per
    next-token law (0.006 nats at 0.999 of the limit, a review); the log-space masked and prepended laws sum
    T − i later positions' logits and are accurate relative to |log p| (~T·u·|log p|: 2.7 nats at T = 256 in an
    entry of |log p| > 1e3, whose probability is 0 in float32), not to within a fixed number of nats."""
    u = float(np.finfo(jnp.result_type(float) if dtype is None else dtype).eps) / 2
    return LOGIT_TOLERANCE / ((dim + 1) * u)


def _check_logits(Z: np.ndarray, W: np.ndarray, dtype) -> None:
    """Refuse parameters whose logits z_h · v*_w the device cannot compute in ``dtype`` to within
    :data:`LOGIT_TOLERANCE` nats (:func:`max_logit`), overflow included."""
    with np.errstate(over="ignore"):
        bound = float((np.abs(Z) @ np.abs(W)).max())
    limit = max_logit(Z.shape[1], dtype)
    if not bound <= limit:
        raise ConfigError(f"representations, word_embeddings: the logits z_h · v*_w reach {bound:.3g} in magnitude; "
                          f"{np.dtype(dtype).name} would overflow or round them by more than {LOGIT_TOLERANCE:g} nats "
                          f"(the limit for dimension {Z.shape[1]} is {limit:.3g}); scale the parameters down")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ---- the world ------------------------------------------------------------------------------------

@jax.tree_util.register_pytree_node_class
class LogLinearWorld(WorldBase):
    """p*(w | x_<t) = softmax(V*ᵀ z_{h(x_<t)})_w exactly; contexts from a deterministic automaton.

    Args:
      representations: Z (S, d), row h is f*(x) for every context x in automaton state h.
      word_embeddings: V* (d, V), column w is v*_w.
      next_state: (S, V) ints in [0, S); the state after emitting w in state h.
      start_state: h_1, in [0, S).
      anchor: optional ground-truth anchor vector v0 (d,) (see :meth:`random`), returned by :meth:`anchor_vector`.
      mean: optional mean representation m (d,), returned by :meth:`mean_representation`.
      carrier_ids: ids of the carrier words (:meth:`random` pushes them down in every context).

    A pytree whose leaves are Z, V*, next_state (and anchor, mean when given); unflattening skips
    validation, so the pure functions above can be jitted or differentiated through a world.
    """

    def __init__(self, representations, word_embeddings, next_state, start_state: int = 0, *,
                 anchor=None, mean=None, carrier_ids=()):
        dtype = jnp.result_type(float)
        Z = _real_array("representations", representations, 2)
        W = _real_array("word_embeddings", word_embeddings, 2)
        (S, d), V = Z.shape, W.shape[1]
        if W.shape[0] != d:
            raise ShapeError(f"word_embeddings: has {W.shape[0]} rows but representations has dimension d = {d}; "
                             "expected word_embeddings of shape (d, V)")
        check_request("representations, word_embeddings", [(S * d + d * V, np.dtype(dtype).itemsize),
                                                             (S * V, 4 + 8)],
                       f"the world's parameters, {S} states × {V} symbols × dimension {d}, and its logits")
        _check_fits("representations", Z, dtype)
        _check_fits("word_embeddings", W, dtype)
        _check_logits(Z, W, dtype)
        try:
            nxt = np.asarray(next_state)
        except (TypeError, ValueError):
            raise ConfigError(f"next_state: expected an (S, V) = {(S, V)} integer array, got a ragged or "
                              f"unconvertible {type(next_state).__name__}") from None
        if nxt.shape != (S, V):
            raise ShapeError(f"next_state: expected shape (S, V) = {(S, V)}, got {nxt.shape}")
        if nxt.dtype == bool or not np.issubdtype(nxt.dtype, np.integer):
            raise ConfigError(f"next_state: expected integer state ids, got dtype {nxt.dtype}")
        if nxt.min() < 0 or nxt.max() >= S:
            h, w = (int(i) for i in np.argwhere((nxt < 0) | (nxt >= S))[0])
            raise ConfigError(f"next_state: entry ({h}, {w}) is {int(nxt[h, w])}, outside [0, {S})")
        if isinstance(start_state, (bool, np.bool_)) or not isinstance(start_state, (int, np.integer)) \
                or not 0 <= start_state < S:
            raise ConfigError(f"start_state: expected an integer in [0, {S}), got {start_state!r}")
        extras = {}
        for name, v in (("anchor", anchor), ("mean", mean)):
            if v is not None:
                extras[name] = _real_array(name, v, 1)
                if extras[name].shape != (d,):
                    raise ShapeError(f"{name}: expected shape (d,) = ({d},), got {extras[name].shape}")
                _check_fits(name, extras[name], dtype)
        try:
            ids = np.asarray(carrier_ids).reshape(-1)
        except (TypeError, ValueError):
            ids = np.asarray([None])  # ragged: refused below
        if ids.dtype == object or ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool
                                                or ids.min() < 0 or ids.max() >= V
                                                or np.unique(ids).size != ids.size):
            raise ConfigError(f"carrier_ids: expected distinct integer word ids in [0, {V}), got {carrier_ids!r}")
        # cast on the host and device_put: jnp.asarray would compile a small program per new shape
        put = partial(lambda dt, a: None if a is None else jax.device_put(np.asarray(a, dt)), dtype)
        self._Z, self._W, self._anchor, self._mean = put(Z), put(W), put(extras.get("anchor")), put(extras.get("mean"))
        self._next = jax.device_put(nxt.astype(np.int32))
        self._start = int(start_state)
        self._carriers = tuple(int(i) for i in ids)

    # ---- pytree ----
    def tree_flatten(self):
        return (self._Z, self._W, self._next, self._anchor, self._mean), (self._start, self._carriers)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj._Z, obj._W, obj._next, obj._anchor, obj._mean = children
        obj._start, obj._carriers = aux
        return obj

    # ---- sizes and parameters ----
    def __repr__(self):  # as HMM's and MemoryHMM's: sizes and fingerprint, not an object address
        return (f"LogLinearWorld(n_states={self.n_states}, n_symbols={self.n_symbols}, dim={self.dim}, "
                f"fingerprint={self.fingerprint()})")

    @property
    def n_symbols(self) -> int:
        return self._W.shape[1]

    @property
    def n_states(self) -> int:
        return self._Z.shape[0]

    @property
    def dim(self) -> int:
        return self._Z.shape[1]

    @property
    def start_state(self) -> int:
        return self._start

    @property
    def next_state(self) -> jax.Array:
        """(S, V) int32 automaton transitions."""
        return self._next

    @property
    def representations(self) -> jax.Array:
        """Z (S, d): f*(x) = z_{h(x)}."""
        return self._Z

    @property
    def word_embeddings(self) -> jax.Array:
        """V* (d, V): column w is v*_w."""
        return self._W

    @property
    def carrier_ids(self) -> np.ndarray:
        """int32 (k,) ids of the carrier words (empty when there are none)."""
        return np.asarray(self._carriers, dtype=np.int32)

    def anchor_vector(self) -> jax.Array:
        """The ground-truth anchor v0 (d,) the world was built from."""
        if self._anchor is None:
            raise ConfigError("anchor_vector: this world was built without an anchor vector "
                              "(use LogLinearWorld.random(..., geometry='anchor') or pass anchor=...)")
        return self._anchor

    def mean_representation(self) -> jax.Array:
        """The mean representation m (d,) shared by every context (the LayerNorm-bias-like offset)."""
        if self._mean is None:
            raise ConfigError("mean_representation: this world was built without a mean representation "
                              "(use LogLinearWorld.random or pass mean=...)")
        return self._mean

    def emission_logits(self) -> jax.Array:
        """z_h · v*_w, shape (S, V)."""
        return _emission_logits(self._Z, self._W)

    def state_probs(self) -> jax.Array:
        """p*(w | h) = softmax_w(z_h · V*), shape (S, V)."""
        return _state_probs(self._Z, self._W)

    def parameter_arrays(self) -> tuple:
        """The arrays that define this world (its fingerprint hashes them; a sweep stores them)."""
        extra = [a for a in (self._anchor, self._mean) if a is not None]
        if len(extra) == 1:  # which one it is, as an empty array in the other's place (else an anchor = a mean)
            extra = [self._anchor, np.zeros(0)] if self._mean is None else [np.zeros(0), self._mean]
        return [self._Z, self._W, self._next, np.array([self._start]), self.carrier_ids, *extra]

    # ---- contexts ----
    def states(self, tokens) -> jax.Array:
        """Automaton state h_t = h(x_<t) before each token, int32 (n, T)."""
        toks, single = self._tokens(tokens, "states")
        out = _batch_paths(self._next, self._start, jax.device_put(toks))
        return out[0] if single else out

    def true_representation(self, tokens) -> jax.Array:
        """f*(x_<t) = z_{h_t}, shape (n, T, d)."""
        toks, single = self._tokens(tokens, "true_representation")
        out = _batch_representation(self._Z, self._next, self._start, jax.device_put(toks))
        return out[0] if single else out

    # ---- sampling ----
    def sample(self, key, n_sequences: int, length: int, *, return_states: bool = False):
        """Draw int32 tokens (n, T) (and the states h_t (n, T) with ``return_states=True``) by inverse
        CDF with one uniform per token; the same key or seed gives bit-identical tokens.  Each draw resolves
        its probabilities to float32's 2⁻²³ grid, as :meth:`HMM.sample`'s: a token rarer than ~1e-7 is drawn
        at a multiple of 2⁻²³, maybe never, where the exact laws give it its own probability."""
        n = check_positive_int("n_sequences", n_sequences)
        T = check_positive_int("length", length)
        return_states = check_flag("return_states", return_states)
        self._check_sample(n, T)
        key = as_key(key)  # after the host checks: making a key from a seed compiles
        toks, states = _sample(self._Z, self._W, self._next, self._start, key, n, T)
        return (toks, states) if return_states else toks

    # ---- sizes (see WorldBase.check_request) ----
    def _sample_arrays(self, n: int, T: int) -> list:
        # one uniform per token (T, n); tokens and states (T, n) out of the scan, then transposed
        return [(n * T, self._itemsize)] + [(n * T, 4)] * 4

    def _inference_arrays(self, method: str, n: int, T: int, P: int) -> list:
        S, V, d, f = self.n_states, self.n_symbols, self.dim, self._itemsize
        floats = {"log_likelihood": [n * T], "token_logprobs": [n * T],
                  "next_token_logprobs": [n * T * V] * 2 + [n * T], "true_representation": [n * T * d],
                  "masked_token_probs": [n * T * S, n * T] + [n * P * V] * 4,
                  "prepended_mask_probs": [n * T * S, n * T] + [n * V] * 3}.get(method, [])
        return [(n * T, 4)] + [(e, f) for e in floats]

    # ---- WorldBase internals on validated int32 (n, T) tokens ----
    def _args(self):
        return self._Z, self._W, self._next, self._start

    def _token_logprobs(self, toks):
        return _batch_token_logprobs(*self._args(), toks)

    def _log_likelihood(self, toks):
        return _batch_log_likelihood(*self._args(), toks)

    def _next_token_logprobs(self, toks):
        return _batch_next_token_logprobs(*self._args(), toks)

    def _masked_token_probs(self, toks, positions):
        return _batch_masked(*self._args(), toks, positions)

    def _prepended_mask_probs(self, toks):
        return _batch_prepended(*self._args(), toks)

    def _log_masked_token_probs(self, toks, positions):
        return _batch_masked_log(*self._args(), toks, positions)

    def _log_prepended_mask_probs(self, toks):
        return _batch_prepended_log(*self._args(), toks)

    # ---- random worlds ----
    @classmethod
    def random(cls, seed, n_states: int = 8, n_symbols: int = 32, dim: int = 16, *,
               geometry: str = "anchor", representation: str = "constant-norm", n_carriers: int = 0,
               mean_norm: float = 1.0, radius: float = 3.0, anchor_norm: float = 2.0, sigma: float = 1.5,
               norm_spread: float = 0.5, gain=None, carrier_gap: float = 8.0, **unknown) -> "LogLinearWorld":
        """A random world from an integer seed (numpy Generator; same seed, same world).

        Representations z_h = m + s_h, with m a random vector of norm ``mean_norm`` shared by every
        context (it acts like a LayerNorm bias and gives word w the offset ⟨v_w, m⟩ in every context):

        - ``"constant-norm"``: s_h ⊥ m, ‖s_h‖ = ``radius``, so ‖z_h‖² = mean_norm² + radius² for all h;
        - ``"layernorm"``: s_h = gain ⊙ (y_h − ȳ_h)/std(y_h), y_h ~ N(0, I_d) (LayerNorm without learned
          parameters, then a fixed ``gain``: a positive scalar or (d,) array, default radius/√d, which
          makes ‖s_h‖ = radius);
        - ``"free"``: s_h = r_h u_h with u_h uniform on the sphere, r_h = radius·exp(norm_spread·N(0,1)).

        Word embeddings, σ = ``sigma``, n_w ~ N(0, I_d/d):

        - ``"anchor"``: v_w = v0 + σ n_w with v0 a random vector of norm ``anchor_norm``.  Then for the
          bulk words log Z(f) = ⟨v0, f⟩ + log Σ_w e^{σ⟨n_w, f⟩} ≈ ⟨v0, f⟩ + log V + σ²‖f‖²/(2d): when ‖f‖ is
          the same for every context log Z is linear in f along v0, so log p*(w | x) ≈ ⟨v_w − v0, f(x)⟩ −
          const: the anchor-vector property of Wu, Lee & Ge (2023);
        - ``"unstructured"``: v_w = σ n_w, no common mean (no anchor).

        Carriers (the last ``n_carriers`` ids): v_c = (bulk draw) − κ m/‖m‖² with κ = ``carrier_gap``
        nats, so their logit sits κ⟨m, z_h⟩/‖m‖² below a bulk word's — exactly κ under "constant-norm",
        about κ under the others when mean_norm ≫ radius/√d; a draw where it is below κ/2 in some state (a
        carrier not rare there) is refused, naming mean_norm.  Needs mean_norm > 0.  The automaton
        ``next_state`` is uniform random; the start state is 0.  Another keyword is a ConfigError naming it.
        """
        if unknown:
            options = [k for k in inspect.signature(cls.random).parameters if k not in ("seed", "unknown")]
            raise ConfigError(f"{sorted(unknown)[0]}: not an option of LogLinearWorld.random; its options are "
                              f"{options}")
        rng = as_rng(seed)
        S = check_positive_int("n_states", n_states)
        V = check_positive_int("n_symbols", n_symbols)
        d = check_positive_int("dim", dim)
        if not isinstance(geometry, str) or geometry not in ("anchor", "unstructured"):
            raise ConfigError(f"geometry: expected 'anchor' or 'unstructured', got {geometry!r}")
        if not isinstance(representation, str) or representation not in ("constant-norm", "layernorm", "free"):
            raise ConfigError(f"representation: expected 'constant-norm', 'layernorm' or 'free', got {representation!r}")
        k = check_positive_int("n_carriers", n_carriers, minimum=0)
        if k >= V:
            raise ConfigError(f"n_carriers: {k} leaves no bulk words among n_symbols = {V}")
        mean_norm = check_number("mean_norm", mean_norm, minimum=0.0)
        if 0 < mean_norm < 1e-150 or mean_norm > 1e150:  # m/‖m‖² below needs ‖m‖² to be a normal float64
            raise ConfigError(f"mean_norm: expected 0 or a number in [1e-150, 1e150], got {mean_norm!r}")
        radius, sigma = check_number("radius", radius, positive=True), check_number("sigma", sigma, positive=True)
        anchor_norm = check_number("anchor_norm", anchor_norm, positive=True)
        norm_spread = check_number("norm_spread", norm_spread, minimum=0.0)  # 0: every r_h = radius
        carrier_gap = check_number("carrier_gap", carrier_gap, positive=True)
        if isinstance(gain, (bool, np.bool_)):
            raise ConfigError(f"gain: expected a positive number or (d,) positive array, got {gain!r}")
        check_request("n_states, n_symbols, dim", [(S * d, 8 * 4), (d * V, 8 * 3), (S * V, 8 + 4 + 8)],
                       f"a random log-linear world, {S} states × {V} symbols × dimension {d}, in float64")
        if k and mean_norm == 0:
            raise ConfigError("mean_norm: carriers are pushed down along the mean representation m, so "
                              f"n_carriers = {k} needs mean_norm > 0")
        if gain is not None and representation != "layernorm":
            raise ConfigError(f"gain: only used with representation='layernorm', got representation={representation!r}")
        if representation == "layernorm" and d < 2:
            raise ConfigError(f"dim: representation='layernorm' standardises over coordinates and needs dim ≥ 2, got {d}")
        if representation == "constant-norm" and d < 2 and mean_norm > 0:
            raise ConfigError("dim: representation='constant-norm' with mean_norm > 0 needs dim ≥ 2 "
                              "(s_h ⊥ m must have norm radius)")

        m = mean_norm * _unit(rng.normal(size=d))
        if representation == "constant-norm":
            g = rng.normal(size=(S, d))
            if mean_norm > 0:
                g = g - np.outer(g @ m, m) / mean_norm**2
            Z = m + radius * _unit(g)
        elif representation == "layernorm":
            try:
                gvec = np.full(d, radius / np.sqrt(d)) if gain is None else np.asarray(gain)
            except (TypeError, ValueError):
                gvec = np.asarray(None)  # ragged: refused as non-numeric below
            if gvec.dtype == bool:  # as the scalar True is
                raise ConfigError(f"gain: expected a positive number or (d,) positive array, got {gain!r}")
            gvec = _real_array("gain", np.full(d, gvec) if gvec.ndim == 0 else gvec, 1)
            if gvec.shape != (d,) or np.any(gvec <= 0):
                raise ConfigError(f"gain: expected a positive number or (d,) = ({d},) positive array, got {gain!r}")
            y = rng.normal(size=(S, d))
            Z = m + gvec * (y - y.mean(1, keepdims=True)) / y.std(1, keepdims=True)
        else:
            with np.errstate(over="ignore"):  # an overflow to inf is refused by the constructor, naming the options
                r = radius * np.exp(norm_spread * rng.normal(size=(S, 1)))
            Z = m + r * _unit(rng.normal(size=(S, d)))

        v0 = anchor_norm * _unit(rng.normal(size=d)) if geometry == "anchor" else None
        W = sigma * rng.normal(size=(d, V)) / np.sqrt(d) + (0.0 if v0 is None else v0[:, None])
        carriers = np.arange(V - k, V)
        if k:
            W[:, carriers] -= carrier_gap * (m / mean_norm**2)[:, None]
            # the gap in context h is κ⟨m, z_h⟩/‖m‖²: exactly κ under "constant-norm"; under the others s_h has a
            # component along m, and at mean_norm ~ radius/√d a carrier rose above the bulk in some contexts
            # (+6 nats under "layernorm", +10.5 under "free" at the defaults): refused below κ/2 anywhere
            share = Z @ m / mean_norm**2  # 1 under "constant-norm" (s_h ⊥ m), up to rounding at a tiny mean_norm
            if representation != "constant-norm" and share.min() < 0.5:
                h = int(np.argmin(share))
                raise ConfigError(
                    f"mean_norm: with representation={representation!r} a carrier's logit sits carrier_gap·⟨m, z_h⟩/"
                    f"‖m‖² below a bulk word's, {share[h]:.3g}·carrier_gap in state {h} (under half the gap): the "
                    f"carriers are not rare there; raise mean_norm well above radius/√dim = {radius / np.sqrt(d):.3g}, "
                    "or use representation='constant-norm' (exactly carrier_gap in every state)")
        next_state = rng.integers(0, S, size=(S, V))
        try:
            return cls(Z, W, next_state, 0, anchor=v0, mean=m, carrier_ids=carriers)
        except SimlmError as err:
            raise type(err)(f"{err} (built by LogLinearWorld.random from mean_norm={mean_norm:g}, radius={radius:g}, "
                            f"norm_spread={norm_spread:g}, gain={'default' if gain is None else 'given'}, "
                            f"sigma={sigma:g}, anchor_norm={anchor_norm:g}, carrier_gap={carrier_gap:g}: "
                            "lower them; where a carrier word's embedding overflows, raise mean_norm instead: the "
                            "carriers are shifted by carrier_gap / mean_norm)") from None


__all__ = ["LogLinearWorld", "LOGIT_TOLERANCE", "max_logit", "emission_logprobs", "state_path", "backward_messages", "masked_token_logprobs",
           "prepended_mask_logprobs"]
