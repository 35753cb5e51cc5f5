"""Random HMM parameter families: ``HMM.random(seed, n_states, n_symbols, family=..., **options)``.

Each family is a function ``(rng, K, V, **options) → (initial (K,), transition (K, K), emission (K, V))``
in float64 numpy; construction-time randomness comes from a numpy Generator seeded by an integer.
"""

from __future__ import annotations

import inspect

import numpy as np

from simlm.errors import ConfigError
from simlm.checks import check_positive_int
from simlm.worlds.base import check_number, check_request

_F64 = 8  # bytes: the families build float64 numpy arrays


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def tempered(u: np.ndarray, temp: float) -> np.ndarray:
    """softmax((u − ½)/temp) over the last axis.  When 1/temp overflows the logits (temp ≈ 1e-310), the same
    law is taken from (u − max u)/temp, whose largest entry is exactly 0: its limit, one-hot on argmax u,
    instead of the NaN of inf − inf.  (Finite logits take the first form, so seeds give the same worlds.)"""
    with np.errstate(over="ignore", invalid="ignore"):
        p = softmax((u - 0.5) / temp)
    if np.all(np.isfinite(p)):
        return p
    with np.errstate(over="ignore", divide="ignore"):
        return softmax((u - u.max(axis=-1, keepdims=True)) / temp)


def _positive(name, value) -> float:
    return check_number(name, value, positive=True)


def dirichlet(rng, K, V, *, initial_concentration=1.0, transition_concentration=1.0,
              emission_concentration=1.0):
    """π ~ Dir(a_π·1), each row of A ~ Dir(a_A·1), each row of B ~ Dir(a_B·1).  Small
    concentrations give sparse, near-deterministic rows; 1 is uniform on the simplex."""
    a_pi = _positive("initial_concentration", initial_concentration)
    a_A = _positive("transition_concentration", transition_concentration)
    a_B = _positive("emission_concentration", emission_concentration)
    check_request("n_states, n_symbols", [(K * K + K * V + K, 2 * _F64)],
                   f"a random HMM's Dirichlet draws, {K} states × {V} symbols, in float64")
    return (rng.dirichlet(np.full(K, a_pi)), rng.dirichlet(np.full(K, a_A), size=K),
            rng.dirichlet(np.full(V, a_B), size=K))


def permutation_mixture(rng, K, V, *, start_temp=10.0, transition_temp=0.01, emission_temp=0.01,
                        n_permutations=None):
    """The family of Wei, Xie & Ma (NeurIPS 2021) experiments.

    π = softmax((U − ½)/start_temp), U ~ Unif(0,1)^K;
    A = Σ_p w_p P_p, w = softmax((U − ½)/transition_temp) over ``n_permutations`` (default K) random
    permutation matrices P_p — a convex combination of permutations, so A is doubly stochastic;
    B[k] = softmax((U_k − ½)/emission_temp), U_k ~ Unif(0,1)^V.
    Low temperatures make A close to one permutation and B close to one-hot rows."""
    t_pi = _positive("start_temp", start_temp)
    t_A = _positive("transition_temp", transition_temp)
    t_B = _positive("emission_temp", emission_temp)
    P = K if n_permutations is None else check_positive_int("n_permutations", n_permutations)
    check_permutation_mixture("n_states, n_symbols, n_permutations", K, V, P)
    initial = tempered(rng.uniform(size=K), t_pi)
    w = tempered(rng.uniform(size=P), t_A)
    perms = np.stack([np.eye(K)[rng.permutation(K)] for _ in range(P)])
    transition = np.einsum("p,pij->ij", w, perms)
    emission = tempered(rng.uniform(size=(K, V)), t_B)
    return initial, transition, emission


def sparse(rng, K, V, *, out_degree=2, initial_support=None, transition_concentration=1.0,
           emission_concentration=1.0, emission_support=None):
    """Worlds with exact zeros in their transitions, for which Wei, Xie & Ma's prompt condition can hold
    exactly (it needs states g with A[g, h] = 0 for every h off a task's support).

    Each row of A is supported on ``out_degree`` states drawn uniformly without replacement (weights
    ~ Dir(a_A·1) on them, exact zeros elsewhere); π is uniform on ``initial_support`` random states (all
    K by default); each row of B ~ Dir(a_B·1) over ``emission_support`` random symbols (all V by
    default).  ``out_degree`` and the supports are clipped to K (V)."""
    d = min(check_positive_int("out_degree", out_degree), K)
    n_pi = K if initial_support is None else min(check_positive_int("initial_support", initial_support), K)
    n_b = V if emission_support is None else min(check_positive_int("emission_support", emission_support), V)
    a_A = _positive("transition_concentration", transition_concentration)
    a_B = _positive("emission_concentration", emission_concentration)
    check_request("n_states, n_symbols", [(K * K + K * V + K, 2 * _F64)],
                   f"a random sparse HMM, {K} states × {V} symbols, in float64")
    initial = np.zeros(K)
    initial[rng.choice(K, n_pi, replace=False)] = 1.0 / n_pi
    transition, emission = np.zeros((K, K)), np.zeros((K, V))
    for g in range(K):
        transition[g, rng.choice(K, d, replace=False)] = _dirichlet(rng, d, a_A)
        emission[g, rng.choice(V, n_b, replace=False)] = _dirichlet(rng, n_b, a_B)
    return initial, transition, emission


#: the least weight :func:`_dirichlet` gives a support entry: twice float32's smallest normal number, so that
#: it stays positive after the renormalisation and in a world's float32 storage, which flushes anything
#: smaller to 0 (``simlm.worlds.base.stored``) — float64's smallest normal would not survive it
_LEAST_WEIGHT = 2 * float(np.finfo(np.float32).tiny)


def _dirichlet(rng, n: int, a: float) -> np.ndarray:
    """A Dir(a·1) draw whose entries are all positive in the world built from it (small ``a`` can underflow
    an entry to 0 in float64, or below float32's range, which would silently shrink the support the caller
    asked for): entries below :data:`_LEAST_WEIGHT` are lifted to it.  Draws with no such entry — every
    draw at the default concentration 1, in practice — are the plain Dirichlet draw, renormalised."""
    w = np.maximum(rng.dirichlet(np.full(n, a)), _LEAST_WEIGHT)
    return w / w.sum()


def check_permutation_mixture(name: str, K: int, V: int, P: int) -> None:
    """Refuse a permutation mixture that cannot fit: it stacks P permutation matrices (P, K, K) in float64
    (each built from a K × K identity, a Python object apiece) before mixing them."""
    check_request(name, [(P * K * K, 2 * _F64), (P, 256), (K * K + K * V, 2 * _F64)],
                   f"a permutation mixture of {P} permutations of {K} states, {V} symbols, in float64")


def ginc(rng, K, V, *, n_concepts=2, n_entities=None, entity_stay=0.9, property_temp=0.1,
         emission_noise=0.0):
    """A GINC-style world (Xie, Raghunathan, Liang & Ma, 2022): a concept c is drawn once per sequence
    and a hidden state (entity e, property q) follows the concept's chain
    A_c = kron(E_c, Q_c), E_c = ``entity_stay``·I + (1 − ``entity_stay``)·J/n_entities sticky (stay, else
    move to a uniformly drawn entity, itself included: P(stay) = entity_stay + (1 − entity_stay)/n_entities),
    Q_c a permutation mixture at ``property_temp``.  Every concept shares one deterministic emission table
    token = table[e, q] (distinct tokens where V allows), optionally smoothed by ``emission_noise``.

    State index = (c·n_entities + e)·n_properties + q; K = n_concepts·n_entities·n_properties.
    ``n_entities`` defaults to the largest divisor of K/n_concepts not above √(K/n_concepts)."""
    C = check_positive_int("n_concepts", n_concepts)
    if K % C:
        raise ConfigError(f"n_states: {K} is not divisible by n_concepts={C}")
    per = K // C
    if n_entities is None:
        n_entities = max(d for d in range(1, int(np.sqrt(per)) + 1) if per % d == 0)
    E = check_positive_int("n_entities", n_entities)
    if per % E:
        raise ConfigError(f"n_states: {K} is not n_concepts·n_entities·n_properties for n_concepts={C}, n_entities={E}")
    Qn = per // E
    entity_stay = check_number("entity_stay", entity_stay, minimum=0.0, maximum=1.0)
    property_temp = _positive("property_temp", property_temp)
    emission_noise = check_number("emission_noise", emission_noise, minimum=0.0)
    if not emission_noise < 1:
        raise ConfigError(f"emission_noise: expected a number in [0, 1), got {emission_noise!r}")
    check_request("n_states, n_symbols", [(K * K + 3 * K * V + max(V, E * Qn), 2 * _F64)],
                   f"a random GINC world, {K} states × {V} symbols, in float64")
    table = (rng.permutation(max(V, E * Qn))[: E * Qn] % V).reshape(E, Qn)
    blocks = []
    for _ in range(C):
        ent = entity_stay * np.eye(E) + (1 - entity_stay) * np.full((E, E), 1.0 / E)
        _, prop, _ = permutation_mixture(rng, Qn, 1, transition_temp=property_temp)
        blocks.append(np.kron(ent, prop))
    transition = np.zeros((K, K))
    for c, blk in enumerate(blocks):
        transition[c * per:(c + 1) * per, c * per:(c + 1) * per] = blk
    one_hot = np.zeros((E * Qn, V))  # row e·Q + q is one-hot on table[e, q] (no V × V identity)
    one_hot[np.arange(E * Qn), table.reshape(-1)] = 1.0
    emission_block = (1 - emission_noise) * one_hot + emission_noise / V
    emission = np.tile(emission_block, (C, 1))
    initial = np.full(K, 1.0 / K)
    return initial, transition, emission


FAMILIES = {"dirichlet": dirichlet, "permutation-mixture": permutation_mixture, "ginc": ginc, "sparse": sparse}


def random_parameters(seed_rng, n_states, n_symbols, family, options):
    """Dispatch to a family, turning unknown families and options into :class:`ConfigError`."""
    if not isinstance(family, str) or family not in FAMILIES:
        raise ConfigError(f"family: unknown HMM family {family!r}; choose one of {sorted(FAMILIES)}")
    fn = FAMILIES[family]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("rng", "K", "V")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not an option of family {family!r}; its options are {allowed}")
    K = check_positive_int("n_states", n_states)
    V = check_positive_int("n_symbols", n_symbols)
    return fn(seed_rng, K, V, **options)
