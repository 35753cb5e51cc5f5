"""Softmax language models over a finite, enumerable set of contexts — the object of Saunshi, Malladi &
Arora, "A Mathematical Exploration of Why Language Models Help Solve Downstream Tasks" (ICLR 2021).

Contexts s = 1..S, one free feature vector θ_s ∈ R^d per context and word embeddings Φ ∈ R^{d×V}
(column φ_w for word w):

    p_θ(w | s) = softmax(Φᵀθ_s)_w = exp(⟨θ_s, φ_w⟩) / Z_θ(s),   log Z_θ(s) = logsumexp_w ⟨θ_s, φ_w⟩,
    ∇_θ log Z_θ(s) = Σ_w p_θ(w|s) φ_w = Φ p_θ(s)          (the conditional mean feature).

Cross-entropy fit (:func:`fit_cross_entropy`): for each s minimise the convex
ℓ_s(θ) = KL(p*_s ‖ softmax(Φᵀθ)) = log Z_θ(s) − ⟨θ, Φp*_s⟩ + const.  Its gradient is Φp_θ(s) − Φp*_s,
so the optimum *matches moments*: Φ p_θ*(s) = Φ p*_s.  The weighted objective Σ_s w_s ℓ_s separates over
contexts, so the weights do not move the minimiser; they weight ε = Σ_s w_s KL(p*_s ‖ p_θ(s)).
:func:`best_achievable_epsilon` is the ε of that optimum — the part of ε no model with this Φ can remove.

Quad objective (Saunshi et al., §5): ℓ_quad(f, s) = E_{w~p*_s}[−⟨f, φ_w⟩ + ½‖Φᵀf‖²]
= −⟨f, Φp*_s⟩ + ½‖Φᵀf‖² = ½‖Φᵀf − p*_s‖² − ½‖p*_s‖².  It is minimised by any f* with
ΦΦᵀ f* = Φ p*_s, i.e. f*(s) = (ΦΦᵀ)⁻¹Φp*_s when Φ has full row rank (the minimum-norm solution
(Φᵀ)⁺p*_s otherwise), and exactly ℓ_quad(f, s) − ℓ_quad(f*, s) = ½‖Φᵀ(f − f*)‖².

:func:`simlm.worlds.contexts.enumerate_contexts` turns a small world into such a finite problem by brute
force.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

from simlm._optim import minimise

from simlm.errors import ConfigError, DistributionError, ShapeError, TrainingDivergedError
from simlm.precision import exact
from simlm.metrics.epsilon import check_laws, kl_per_sequence
from simlm.checks import check_positive, as_key, check_memory, check_positive_int, check_real_array, check_stochastic

_F32_MAX = float(np.finfo(np.float32).max)

# ---- validation ------------------------------------------------------------------------------------

def _real_or_none(value):
    """``value`` as an array, or None if it is not one (ragged rows): for a dtype test before a check."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        return None


def _check_matrix(name: str, value, shape_hint: str) -> np.ndarray:
    arr = check_real_array(name, value)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ShapeError(f"{name}: expected a non-empty matrix of shape {shape_hint}, got {arr.shape}")
    return arr


def _check_p_star(p_star, S=None, V=None) -> np.ndarray:
    """p* as a float64 (S, V) matrix of laws, S, V ≥ 1: rows within 1e-5 of summing to 1 are accepted and
    returned renormalised, so KLs and fits measure the law and not its ~1e-5 error."""
    if np.iscomplexobj(_real_or_none(p_star)):
        raise DistributionError("p_star: expected real probabilities, got complex values")
    P = check_stochastic("p_star", p_star, atol=1e-5)
    if P.ndim != 2 or P.shape[0] == 0:
        raise ShapeError(f"p_star: expected a non-empty matrix of shape (S, V), got {P.shape}")
    if (S is not None and P.shape[0] != S) or (V is not None and P.shape[1] != V):
        raise ShapeError(f"p_star: expected shape {(S or P.shape[0], V or P.shape[1])}, got {P.shape}")
    return P / P.sum(-1, keepdims=True)


def _check_problem(p_star, phi) -> tuple[np.ndarray, np.ndarray]:
    phi = _check_matrix("phi", phi, "(d, V)")
    P = _check_p_star(p_star)
    if P.shape[1] != phi.shape[1]:
        raise ShapeError(f"p_star: has V = {P.shape[1]} words but phi has {phi.shape[1]} columns (d, V)")
    return P, phi


def _check_weights(weights, S: int) -> np.ndarray:
    """Context weights as a probability vector (S,); None means uniform (bools weigh 0/1: a mask)."""
    if weights is None:
        return np.full(S, 1.0 / S)
    w = check_real_array("weights", weights)
    if w.shape != (S,):
        raise ShapeError(f"weights: expected shape ({S},) (one per context), got {w.shape}")
    if np.any(w < 0) or not w.any():
        raise ConfigError("weights: expected finite non-negative weights with a positive sum")
    w = w / w.max()  # first by the largest: a sum of weights near 1e308 overflowed, and w / inf read ε = 0
    return w / w.sum()


def _concrete(*arrays) -> bool:
    """True unless one of the arrays is traced: the pure functions check concrete input on the host."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


# ---- the model -------------------------------------------------------------------------------------

@exact
def log_partition(theta, phi) -> jax.Array:
    """log Z_θ(s) = logsumexp_w ⟨θ_s, φ_w⟩: ``theta (S, d)``, ``phi (d, V)`` → ``(S,)``.  Pure jnp
    (jit-able); concrete arguments are checked first (real, finite, shapes that fit)."""
    if _concrete(theta, phi):
        theta, phi = _check_logits(*_check_pair(theta, phi))
    return jax.nn.logsumexp(jnp.asarray(theta) @ jnp.asarray(phi), axis=-1)


def _check_pair(theta, phi, name: str = "theta") -> tuple[np.ndarray, np.ndarray]:
    """``theta (S, d)`` and ``phi (d, V)`` as arrays; ``name`` is how the caller calls theta."""
    phi = _check_matrix("phi", phi, "(d, V)")
    theta = _check_matrix(name, theta, "(S, d)")
    if theta.shape[1] != phi.shape[0]:
        raise ShapeError(f"{name}: has d = {theta.shape[1]} but phi has d = {phi.shape[0]} rows (d, V)")
    return theta, phi


def _check_logits(theta, phi, name: str = "theta") -> tuple[np.ndarray, np.ndarray]:
    """θ, Φ whose entries and logits Φᵀθ fit float32, where the laws are computed (else NaN laws)."""
    with np.errstate(over="ignore", invalid="ignore"):
        logits = theta @ phi
    top = float(np.abs(logits).max()) if np.isfinite(logits).all() else np.inf
    if max(np.abs(theta).max(), np.abs(phi).max(), top) > _F32_MAX:
        raise ConfigError(f"{name}: the logits Φᵀθ (max |Φᵀθ| = {top:.3g}, max |θ| = "
                          f"{np.abs(theta).max():.3g}, max |Φ| = {np.abs(phi).max():.3g}) overflow float32 "
                          f"({_F32_MAX:.3g}), where the laws are computed; rescale {name} or phi")
    return theta, phi


def context_kl(p_star, logprobs) -> jax.Array:
    """KL(p*_s ‖ p_s) per context, ``(S, V)``, ``(S, V)`` → ``(S,)`` nats (0·log 0 = 0; +inf where p_s
    gives probability 0 to a word p*_s does not): :func:`~simlm.metrics.epsilon.kl_per_sequence` with one
    position per context.  Concrete arguments are checked first: ``p_star`` rows are laws within 1e-5,
    ``logprobs`` rows log-laws within :data:`~simlm.metrics.epsilon.LOGSUMEXP_TOL` (both then renormalised),
    else a typed error naming the context.  Computed in float32, or in float64 for float64 input under
    ``jax.enable_x64(True)`` (the theory's exact ε, :func:`simlm.theory.natural_tasks.lm_epsilon`)."""
    if _concrete(p_star, logprobs):
        P = _check_p_star(p_star)
        logprobs = check_laws("logprobs", logprobs, P.shape, lambda i: f"context {i[0]}")
        p_star = jnp.asarray(P)  # float64 stays float64 only under enable_x64
    logp = jnp.log(jnp.asarray(p_star))
    return kl_per_sequence(logp[:, None, :], jnp.asarray(logprobs)[:, None, :])


class SoftmaxContextLM:
    """p_θ(·|s) = softmax(Φᵀθ_s) for contexts s = 0..S−1: ``theta (S, d)``, ``phi (d, V)`` (float32).

    ``grad_norm`` (max over contexts of ‖Φ(p_θ(s) − p*_s)‖₂), ``n_steps`` and ``converged`` are set by
    :func:`fit_cross_entropy` and None otherwise."""

    def __init__(self, theta, phi, *, grad_norm=None, n_steps=None, converged=None):
        theta, phi = _check_logits(*_check_pair(theta, phi))  # stored and evaluated in float32
        self.theta, self.phi = jnp.asarray(theta, jnp.float32), jnp.asarray(phi, jnp.float32)
        self.grad_norm, self.n_steps, self.converged = grad_norm, n_steps, converged

    def __repr__(self):
        S, d = self.theta.shape
        return f"SoftmaxContextLM(n_contexts={S}, dim={d}, n_symbols={self.n_symbols}, grad_norm={self.grad_norm})"

    @property
    def n_contexts(self) -> int:
        return self.theta.shape[0]

    @property
    def n_symbols(self) -> int:
        return self.phi.shape[1]

    @property
    def unembedding(self) -> jax.Array:
        """Φ, ``(d, V)``."""
        return self.phi

    def features(self) -> jax.Array:
        """f(s) = θ_s, ``(S, d)``."""
        return self.theta

    @exact
    def logprobs(self) -> jax.Array:
        """log p_θ(·|s) = log_softmax(Φᵀθ_s), ``(S, V)``."""
        return jax.nn.log_softmax(self.theta @ self.phi, axis=-1)

    def probs(self) -> jax.Array:
        """p_θ(·|s), ``(S, V)``."""
        return jnp.exp(self.logprobs())

    @exact
    def conditional_mean_features(self) -> jax.Array:
        """Φ p_θ(s) = Σ_w p_θ(w|s) φ_w = ∇_θ log Z_θ(s), ``(S, d)``."""
        return self.probs() @ self.phi.T

    def epsilon(self, p_star, weights=None) -> float:
        """ε = Σ_s w_s KL(p*_s ‖ p_θ(s)) (weights normalised to sum 1; uniform by default), nats: the
        stored float32 θ and Φ, evaluated in float64 (float32 laws would add ~1e-7 relative error, all of
        an ε near 0)."""
        P = _check_p_star(p_star, self.n_contexts, self.n_symbols)
        w = _check_weights(weights, self.n_contexts)
        with jax.enable_x64(True):
            logprobs = jax.nn.log_softmax(jnp.asarray(self.theta, jnp.float64) @ jnp.asarray(self.phi, jnp.float64), -1)
            kl = np.asarray(context_kl(jnp.asarray(P, jnp.float64), logprobs), np.float64)
        return float(np.sum(np.where(w > 0, w * kl, 0.0)))


# ---- cross-entropy fit by Newton's method ----------------------------------------------------------

@jax.jit
@exact
def _newton(theta0, phi, P, steps, tol):
    b = P @ phi.T  # Φ p*_s, (S, d)
    ts = 2.0 ** -jnp.arange(40, dtype=theta0.dtype)  # backtracking step sizes
    rcond = 1e3 * jnp.finfo(theta0.dtype).eps

    def objective(theta):  # ℓ_s(θ) up to a constant, (S,)
        return log_partition(theta, phi) - jnp.sum(theta * b, -1)

    def gradient(theta):
        return jax.nn.softmax(theta @ phi, -1) @ phi.T - b

    def step(carry):
        theta, _, k = carry
        q = jax.nn.softmax(theta @ phi, -1)
        m = q @ phi.T
        g = m - b
        # Hessian Cov_{p_θ}(φ_w); solved by its pseudo-inverse since Φᵀθ is invariant along any u
        # with Φᵀu ∝ 1, and the optimum may lie at infinity (zeros in p*)
        H = jnp.einsum("sv,dv,ev->sde", q, phi, phi) - m[:, :, None] * m[:, None, :]
        lam, U = jnp.linalg.eigh(H)
        inv = jnp.where(lam > rcond * lam[:, -1:], 1.0 / jnp.where(lam > 0, lam, 1.0), 0.0)
        delta = jnp.einsum("sde,se,sfe,sf->sd", U, inv, U, g)
        # Armijo backtracking per context; where float32 cannot see a decrease, the best candidate
        f0 = objective(theta)
        cand = theta[None] - ts[:, None, None] * delta[None]
        fc = jax.vmap(objective)(cand)
        ok = fc <= f0 - 1e-4 * ts[:, None] * jnp.sum(g * delta, -1)
        t = jnp.where(ok.any(0), ts[jnp.argmax(ok, 0)],
                      jnp.where(fc.min(0) < f0, ts[jnp.argmin(fc, 0)], 0.0))
        theta = theta - t[:, None] * delta
        return theta, jnp.linalg.norm(gradient(theta), axis=-1).max(), k + 1

    def going(carry):
        _, gnorm, k = carry
        return (gnorm > tol) & (k < steps)

    init = (theta0, jnp.linalg.norm(gradient(theta0), axis=-1).max(), 0)
    return jax.lax.while_loop(going, step, init)


def fit_cross_entropy(p_star, phi, *, weights=None, steps: int = 100, tol: float = 1e-8) -> SoftmaxContextLM:
    """θ* minimising Σ_s w_s KL(p*_s ‖ softmax(Φᵀθ_s)) for ``p_star (S, V)``, ``phi (d, V)``, by damped
    Newton steps per context (pseudo-inverse Hessian, Armijo backtracking) from θ = 0, in float64,
    until max_s ‖Φ(p_θ(s) − p*_s)‖₂ ≤ ``tol`` · max_w ‖φ_w − φ̄‖₂ or ``steps`` iterations.  The tolerance
    is relative to the spread of Φ's columns (φ̄ their mean), as the optimum is: Φ → cΦ leaves the floor
    unchanged (θ absorbs c) but scales the gradient by c.  The weights only validate here (the objective
    separates over contexts, so they do not move θ*).  The returned model carries ``grad_norm`` (absolute),
    ``n_steps`` and ``converged``; it stores θ and Φ in float32, which adds a rounding error of about
    1e-7·‖θ‖·‖Φ‖² to its moments (and a common offset of Φ's columns far above their spread rounds that
    spread: an offset of 1e4 moved ε from 0.114701 to 0.114661, the floor of the rounded Φ)."""
    P, phi = _check_problem(p_star, phi)
    _check_weights(weights, P.shape[0])
    if np.abs(phi).max() > _F32_MAX:  # the fitted LM stores and evaluates Φ in float32
        raise ConfigError(f"phi: entries up to {np.abs(phi).max():.3g} overflow float32 ({_F32_MAX:.3g}), where the "
                          "fitted LM's laws are computed; rescale phi")
    steps = check_positive_int("steps", steps)
    tol = check_positive("tol", tol)
    S, d, V = P.shape[0], phi.shape[0], phi.shape[1]
    check_memory("p_star", S * (d * d * V + 40 * d + 4 * V), itemsize=8,
                 what=f"the Newton steps of {S} contexts with d = {d}, V = {V}")
    tol = tol * float(np.linalg.norm(phi - phi.mean(1, keepdims=True), axis=0).max())  # relative to Φ's spread
    # a scoped float64 solve: float32 cannot resolve the objective's decrease near the optimum
    with jax.enable_x64(True):
        theta0 = jnp.zeros((P.shape[0], phi.shape[0]), jnp.float64)
        theta, gnorm, k = _newton(theta0, jnp.asarray(phi), jnp.asarray(P), steps, tol)
        theta, gnorm, k = np.asarray(theta), float(gnorm), int(k)
    if not (np.isfinite(theta).all() and np.isfinite(gnorm)):
        raise ConfigError(f"phi: the Newton fit overflowed (max |Φ| = {np.abs(phi).max():.3g}); rescale phi")
    return SoftmaxContextLM(theta, phi, grad_norm=gnorm, n_steps=k, converged=gnorm <= tol)


def best_achievable_epsilon(p_star, phi, weights=None, *, steps: int = 100, tol: float = 1e-8) -> float:
    """min_θ Σ_s w_s KL(p*_s ‖ softmax(Φᵀθ_s)) (weights normalised; uniform by default), nats: the ε of
    :func:`fit_cross_entropy`'s optimum (``steps``, ``tol`` as there), the floor any softmax LM with this Φ has —
    within about ``tol`` above it where p* has zeros (the optimum lies at infinity and the fit stops on its
    gradient: 2e-9 at tol 1e-8 for a floor of 0), and within ~1e-8 on either side from the float32 rounding of θ
    and Φ (the model stores both in float32: 4–7e-9 below the float64 Φ's floor in a review, 2026-12-07).  The float64
    :func:`simlm.theory.natural_tasks.softmax_excess` polishes the fit (~1e-11)."""
    return fit_cross_entropy(p_star, phi, weights=weights, steps=steps, tol=tol).epsilon(p_star, weights)


def fit_cross_entropy_joint(p_star, dim: int, *, weights=None, steps: int = 3000, lr: float = 0.05,
                            seed: int = 0) -> SoftmaxContextLM:
    """Learn Φ too: (θ, Φ) minimising Σ_s w_s KL(p*_s ‖ softmax(Φᵀθ_s)) with ``dim`` features, by Adam
    (``optax.adam(lr)``) from a small random start fixed by ``seed``.  Non-convex (a low-rank
    factorisation of the log-probabilities); its ε upper-bounds the best ε of any d-dimensional softmax
    LM and is at most :func:`best_achievable_epsilon` for any fixed Φ it improves on.  Weights are
    normalised (uniform by default)."""
    P = _check_p_star(p_star)
    S, V = P.shape
    d = check_positive_int("dim", dim)
    check_memory("dim", 4 * (S * d + d * V + S * V), what=f"(θ, Φ) of dim {d} with Adam's moments, and the laws")
    steps = check_positive_int("steps", steps)
    lr = check_positive("lr", lr)
    w = jnp.asarray(_check_weights(weights, S), jnp.float32)
    k_theta, k_phi = jax.random.split(as_key(check_positive_int("seed", seed, minimum=0), "seed"))
    params = {"theta": 0.1 * jax.random.normal(k_theta, (S, d)), "phi": 0.1 * jax.random.normal(k_phi, (d, V))}
    logP = jnp.log(jnp.asarray(P, jnp.float32))
    opt = optax.adam(lr)

    @exact
    def loss(p):
        logq = jax.nn.log_softmax(p["theta"] @ p["phi"], axis=-1)
        return jnp.sum(w * kl_per_sequence(logP[:, None, :], logq[:, None, :]))

    def fit(p):
        fitted = minimise(loss, p, opt, steps)[0]
        return fitted, loss(p), loss(fitted)

    params, start, end = jax.jit(fit)(params)
    start, end = float(start), float(end)
    # Adam at too large an lr ended at ε 4.0 (lr 100) and 6.6e6 (1e4) from ~0.4, returned as fits (a review,
    # 2026-12-07): refused where it ends non-finite or above its start by more than max(1e-3, 1 %) — tighter than
    # prompt_fit.DIVERGENCE_TOLERANCE, max(1 nat, the start), which forgives minibatch fits' wandering: this fit
    # is full-batch and deterministic
    finite = np.isfinite(end) and all(np.isfinite(np.asarray(a)).all() for a in params.values())
    if not finite or end > start + max(1e-3, 0.01 * abs(start)):
        raise TrainingDivergedError(f"lr: fit_cross_entropy_joint diverged at lr = {lr:g}: its weighted KL went from "
                                    f"{start:.4g} at the start to {end:.4g}; lower lr")
    return SoftmaxContextLM(params["theta"], params["phi"], n_steps=steps)


# ---- the Quad objective ---------------------------------------------------------------------------

def _check_quad(f, p_star, phi):
    P, phi = _check_problem(p_star, phi)
    f = _check_matrix("f", f, "(S, d)")
    if f.shape != (P.shape[0], phi.shape[0]):
        raise ShapeError(f"f: expected shape {(P.shape[0], phi.shape[0])} (contexts of p_star, rows of phi), got {f.shape}")
    return f, P, phi


def quad_minimiser(p_star, phi) -> jax.Array:
    """f*(s) = (ΦΦᵀ)⁻¹Φp*_s, ``(S, d)`` — the minimum-norm (Φᵀ)⁺p*_s when ΦΦᵀ is singular (a rank-deficient
    Φ is fine: ℓ_quad then has a flat valley of minimisers, and this is the shortest)."""
    P, phi = _check_problem(p_star, phi)
    f = P @ np.linalg.pinv(phi)
    if not np.isfinite(f).all() or np.abs(f).max() > _F32_MAX:
        raise ConfigError("phi: f* = (Φᵀ)⁺p* overflows float32 (the smallest nonzero singular value of Φ is too small)")
    return jnp.asarray(f, jnp.float32)


@exact
def quad_loss(f, p_star, phi) -> jax.Array:
    """ℓ_quad(f, s) = −⟨f_s, Φp*_s⟩ + ½‖Φᵀf_s‖² per context: ``f (S, d)`` → ``(S,)``.  Pure jnp (jit-able);
    concrete arguments are checked first."""
    if _concrete(f, p_star, phi):
        f, p_star, phi = _check_quad(f, p_star, phi)
    f, P, phi = jnp.asarray(f), jnp.asarray(p_star), jnp.asarray(phi)
    return -jnp.sum(f * (P @ phi.T), -1) + 0.5 * jnp.sum((f @ phi) ** 2, -1)


@exact
def quad_excess(f, p_star, phi) -> jax.Array:
    """ℓ_quad(f, s) − ℓ_quad(f*, s) = ½‖Φᵀ(f_s − f*_s)‖² = ½‖Φᵀf_s − Π_Φ p*_s‖² per context:
    ``f (S, d)``, ``p_star (S, V)``, ``phi (d, V)`` → ``(S,)`` (any leading axes ``(..., d)``, ``(..., V)``
    inside ``jax.jit``).

    Π_Φ = Φ⁺Φ is the projection onto the row space of Φ and Φᵀf* = Π_Φ p*, so no f* is formed: a sum of
    squares, never negative, with no cancellation between two losses.  Pure jnp (jit-able; the trainer's
    exact Quad ε is its mean over positions); concrete arguments are checked first.  Computed in
    float32, or in float64 for float64 input under ``jax.enable_x64(True)`` (the theory's ε_quad,
    :func:`simlm.theory.natural_tasks.quad_epsilon`).  Π_Φ of a concrete Φ is computed on the host in float64,
    from Φ as given (float32's pinv cutoff, ~5e-6 of σ_max, dropped real directions of an ill-conditioned Φ:
    0.023 for an ε_quad of 0 at condition 1e6, a review 2026-12-06); under a trace in float32 it is
    ``pinv``'s, right to ~1e-5 up to a condition of ~1e4 and not beyond."""
    concrete = _concrete(f, p_star, phi)
    if concrete:
        f, p_star, phi = _check_quad(f, p_star, phi)
        # from Φ in float64, as given: Π_Φ from Φ rounded to float32 took a direction of a rank-deficient Φ
        # (σ ~ 1e-7 of rounding, above float64 pinv's cutoff) as real: ε_quad 0.05 at the exact minimiser
        Q = np.linalg.pinv(phi) @ phi
    f, P, phi = jnp.asarray(f), jnp.asarray(p_star), jnp.asarray(phi)
    proj = jnp.asarray(Q, dtype=jnp.result_type(P.dtype, phi.dtype)) if concrete else jnp.linalg.pinv(phi) @ phi
    return 0.5 * jnp.sum((f @ phi - P @ proj) ** 2, -1)


def quad_fit(p_star, phi, *, steps: int = 2000, lr=None, init=None) -> jax.Array:
    """Minimise Σ_s ℓ_quad(f_s, s) by gradient descent (``optax.sgd``) from ``init`` (default 0):
    ∇ = ΦΦᵀf_s − Φp*_s per context, so with the default lr = 1/λ_max(ΦΦᵀ) the error contracts by
    1 − λ_min/λ_max per step (a Φ = 0 has gradient 0: every f minimises, and ``init`` is returned).
    Returns f ``(S, d)``."""
    P, phi = _check_problem(p_star, phi)
    steps = check_positive_int("steps", steps)
    if np.abs(phi).max() > _F32_MAX ** 0.5:
        raise ConfigError(f"phi: entries up to {np.abs(phi).max():.3g} make ΦΦᵀ overflow float32, where quad_fit runs")
    if lr is None:
        top = np.linalg.eigvalsh(phi @ phi.T)[-1]
        lr = 1.0 / top if top > 0 else 1.0
    else:
        lr = check_positive("lr", lr)
    f0 = np.zeros((P.shape[0], phi.shape[0])) if init is None else check_real_array("init", init)
    if f0.shape != (P.shape[0], phi.shape[0]):
        raise ShapeError(f"init: expected shape {(P.shape[0], phi.shape[0])}, got {f0.shape}")
    P, phi_j, f0 = (jnp.asarray(a, jnp.float32) for a in (P, phi, f0))
    total = lambda f: quad_loss(f, P, phi_j).sum()
    f = jax.jit(lambda f: minimise(total, f, optax.sgd(lr), steps)[0])(f0)
    if not np.isfinite(np.asarray(f)).all():
        raise ConfigError(f"lr: gradient descent diverged with lr = {lr:g}; it is stable below 2/λ_max(ΦΦᵀ) "
                          f"= {2 / np.linalg.eigvalsh(phi @ phi.T)[-1]:.4g} (the default is 1/λ_max)")
    return f


__all__ = [
    "SoftmaxContextLM",
    "log_partition",
    "context_kl",
    "fit_cross_entropy",
    "fit_cross_entropy_joint",
    "best_achievable_epsilon",
    "quad_minimiser",
    "quad_loss",
    "quad_excess",
    "quad_fit",
]
