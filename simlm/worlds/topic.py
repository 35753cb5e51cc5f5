"""HMM worlds with planted token classes, built as plain :class:`~simlm.worlds.HMM` instances.

Every constructor returns a :class:`ClassedHMM`: the HMM (so every exact method — forward–backward, masked
laws, sampling — works unchanged) and the ground-truth class of each token, ``token_class (V,)``.

Class emissions (:func:`class_emission`, which :func:`block_zipf_hmm` and :func:`topic_syntax_hmm` are built
on).  Tokens are partitioned into m classes; class c owns a block of tokens with Zipf weights
z_c(w) ∝ rank(w)^(−s) inside it.  A state k draws a class from P(c | k) and then a token of that class:

    B[k, w] = P(c(w) | k) · z_{c(w)}(w).

Columns of tokens in one class are proportional (B[:, w] ∝ P(c | ·)), so P(h | w) is the same for every
token of a class: the class is all that a token says about the hidden state, and within a class the
Zipf rank sets the frequency.  A consequence (derived, and the reason these worlds are useful for Tzach et
al.): the Bayes-optimal masked predictor P(x_t | x_−t) = Σ_c P(c_t | x_−t) z_c(·) always predicts the top
token of some class, so it outputs at most m distinct tokens; and substituting a token by another of its
class leaves every posterior over hidden states, hence every exact P(y | x), unchanged.  These guarantees
are those of class emissions only: the classes of :func:`confusion_groups_hmm` are planted confusion
clusters (each state emits its own token, with noise inside its group), whose columns are not proportional
within a group — its Bayes predictor can output every token, and substituting a token by another of its
group changes the posteriors.

- :func:`block_zipf_hmm` — state k emits from its own block (P(c | k) = 1[c = k], with optional leak);
- :func:`topic_syntax_hmm` — a slow topic chain times a fast syntax chain; each token comes from the
  syntax state's block or, with probability ``topic_rate``, from the topic's block, so inferring the topic
  at a position needs many tokens of far context;
- :func:`confusion_groups_hmm` — states in groups, one token per state with emission noise inside the group:
  the Bayes predictor's errors stay inside groups (the planted confusion clusters; not class emissions).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from simlm.checks import as_rng, check_memory, check_positive_int, check_stochastic
from simlm.errors import ConfigError, ShapeError
from simlm.worlds.base import check_number
from simlm.worlds.hmm import HMM


class ClassedHMM(NamedTuple):
    """An HMM and the planted class of each of its V tokens, ``token_class (V,)`` int."""

    hmm: HMM
    token_class: np.ndarray


def zipf_weights(size: int, exponent: float) -> np.ndarray:
    """z(r) ∝ r^(−s) for ranks r = 1..size, normalised ``(size,)``."""
    size = check_positive_int("size", size, maximum=MAX_BLOCK)
    exponent = check_number("exponent", exponent, minimum=0.0, maximum=10.0)
    w = np.arange(1, size + 1, dtype=np.float64) ** (-exponent)
    return w / w.sum()


def class_emission(class_probs, block_size: int, exponent: float, *, class_names: str = "class_probs"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """B[k, w] = P(c(w) | k) z_{c(w)}(w) for ``class_probs (K, m)`` (K, m ≥ 1) and m blocks of ``block_size``
    tokens; returns ``(emission (K, m·block_size), token_class (m·block_size,))``.  ``class_names``: the
    arguments that set the class probabilities, named by the error when the least one is too small."""
    P = check_stochastic("class_probs", class_probs)
    if P.ndim != 2 or P.shape[0] == 0:
        raise ShapeError(f"class_probs: expected a (K, m) matrix of class laws with K ≥ 1, got shape {P.shape}")
    block_size = check_positive_int("block_size", block_size, maximum=MAX_BLOCK)
    check_memory("block_size", P.size * block_size, itemsize=8,
                 what=f"a ({P.shape[0]}, {P.shape[1] * block_size}) float64 emission matrix")
    z = zipf_weights(block_size, exponent)
    least = float(P[P > 0].min() * z[-1])  # the smallest positive emission, a leaked class's last rank
    if least < _FLOAT32_TINY:  # stored as float32 it would be rounded to 0 or subnormal in some states only:
        raise ConfigError(  # a class's columns would stop being proportional, and its tokens' posteriors differ
            f"exponent, block_size, {class_names}: the smallest positive emission P(c|k)·z(w) = {least:.3g} "
            f"(least class probability {P[P > 0].min():.3g} × rank {block_size}'s Zipf weight {z[-1]:.3g}) is below "
            f"float32's smallest normal number {_FLOAT32_TINY:.3g}, so the columns of a class would not stay "
            f"proportional; lower exponent or block_size, or make the least class probability larger ({class_names})")
    emission = (P[:, :, None] * z[None, None, :]).reshape(P.shape[0], -1)
    return emission, np.repeat(np.arange(P.shape[1]), block_size)


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)

#: the largest number of states (or topics, syntax states, groups) and tokens per block a constructor takes.
MAX_STATES, MAX_BLOCK = 4096, 65536


def _size(name: str, value, minimum: int = 1, maximum: int = MAX_STATES) -> int:
    return check_positive_int(name, value, minimum=minimum, maximum=maximum)


def _checked(n_states, block_size, exponent, leak=0.0, *, name="n_states"):
    n = _size(name, n_states)
    b = _size("block_size", block_size, maximum=MAX_BLOCK)
    s = check_number("exponent", exponent, minimum=0.0, maximum=10.0)
    leak = check_number("leak", leak, minimum=0.0, maximum=1.0)
    return n, b, s, leak


def _dirichlet_rows(rng, n: int, concentration: float) -> np.ndarray:
    A = rng.dirichlet(np.full(n, concentration), size=n)
    return A / A.sum(1, keepdims=True)


def block_zipf_hmm(seed: int, n_states: int = 8, block_size: int = 30, *, exponent: float = 1.0,
                   leak: float = 0.0, concentration: float = 1.0) -> ClassedHMM:
    """K states, each emitting from its own block of ``block_size`` Zipf-weighted tokens (V = K·block_size);
    with ``leak`` > 0 a state emits from a uniformly chosen block with probability ``leak``.  Transition rows
    and the initial law ~ Dirichlet(``concentration``) from ``seed``.  Classes = blocks."""
    K, b, s, leak = _checked(n_states, block_size, exponent, leak)
    conc = check_number("concentration", concentration, minimum=1e-3, maximum=1e3)
    rng = as_rng(seed)
    A, pi = _dirichlet_rows(rng, K, conc), rng.dirichlet(np.full(K, conc))
    emission, classes = class_emission((1 - leak) * np.eye(K) + leak / K, b, s, class_names="leak")
    return ClassedHMM(HMM(pi, A, emission), classes)


def topic_syntax_hmm(seed: int, n_topics: int = 3, n_syntax: int = 3, block_size: int = 4, *,
                     switch: float = 0.05, topic_rate: float = 0.3, exponent: float = 1.0,
                     concentration: float = 0.5) -> ClassedHMM:
    """States (z, s) = z·n_syntax + s: the topic z stays with probability 1 − ``switch`` (else moves to a
    uniformly chosen other topic); the syntax s follows a Dirichlet(``concentration``) chain from ``seed``,
    independently.  A token comes from syntax block s with probability 1 − ``topic_rate``, else from topic
    block z; blocks hold ``block_size`` Zipf tokens, syntax blocks first (V = (n_syntax + n_topics)·block_size).

    The topic is the slow variable: one token reveals it only with probability ``topic_rate``, so
    P(z_t | x_−t) pools evidence over ~1/``switch`` positions — the long-range dependence that makes depth
    matter in a transformer."""
    Z = _size("n_topics", n_topics, minimum=2)
    S, b, s, _ = _checked(n_syntax, block_size, exponent, name="n_syntax")
    check_memory("n_topics", (Z * S) ** 2, itemsize=8, what=f"a ({Z * S}, {Z * S}) float64 transition")
    switch = check_number("switch", switch, minimum=0.0, maximum=1.0)
    rate = check_number("topic_rate", topic_rate, minimum=0.0, maximum=1.0)
    conc = check_number("concentration", concentration, minimum=1e-3, maximum=1e3)
    rng = as_rng(seed)
    topic = (1 - switch) * np.eye(Z) + switch * (1 - np.eye(Z)) / (Z - 1)
    syntax = _dirichlet_rows(rng, S, conc)
    pi = np.kron(np.full(Z, 1.0 / Z), rng.dirichlet(np.full(S, conc)))
    P = np.zeros((Z * S, S + Z))
    for z in range(Z):
        for q in range(S):
            P[z * S + q, q] += 1 - rate
            P[z * S + q, S + z] += rate
    emission, classes = class_emission(P, b, s, class_names="topic_rate")
    return ClassedHMM(HMM(pi, np.kron(topic, syntax), emission), classes)


def topic_of_state(n_topics: int, n_syntax: int) -> np.ndarray:
    """The topic z of each state (z, s) of :func:`topic_syntax_hmm`, ``(n_topics·n_syntax,)``."""
    return np.repeat(np.arange(_size("n_topics", n_topics)), _size("n_syntax", n_syntax))


def confusion_groups_hmm(seed: int, n_groups: int = 3, group_size: int = 3, *, noise: float = 0.15,
                         sharpness: float = 0.7) -> ClassedHMM:
    """States in ``n_groups`` groups of ``group_size``; state k emits token k with probability 1 − ``noise``,
    else another token of its group uniformly (V = K).  From state (g, i) the chain moves to group g + 1
    (mod n_groups), to state σ_g(i) with probability ``sharpness`` and uniformly within the group otherwise
    (σ_g random permutations from ``seed``).  Context fixes the group and tilts the state inside it, so the
    Bayes predictor is right most of the time and its errors stay inside the group: the planted classes are
    the groups."""
    G = _size("n_groups", n_groups)
    r = _size("group_size", group_size, minimum=2)
    check_memory("group_size", (G * r) ** 2, itemsize=8, what=f"two ({G * r}, {G * r}) float64 matrices")
    noise = check_number("noise", noise, minimum=0.0, maximum=1.0)
    sharp = check_number("sharpness", sharpness, minimum=0.0, maximum=1.0)
    if noise >= 1 - 1e-9:
        raise ConfigError(f"noise: expected < 1 (a state must emit its own token), got {noise}")
    rng = as_rng(seed)
    K = G * r
    A = np.zeros((K, K))
    for g in range(G):
        nxt = (g + 1) % G
        perm = rng.permutation(r)
        for i in range(r):
            A[g * r + i, nxt * r: nxt * r + r] = (1 - sharp) / r
            A[g * r + i, nxt * r + perm[i]] += sharp
    B = np.zeros((K, K))
    for g in range(G):
        block = slice(g * r, g * r + r)
        B[block, block] = noise / (r - 1)
        B[np.arange(g * r, g * r + r), np.arange(g * r, g * r + r)] = 1 - noise
    return ClassedHMM(HMM(np.full(K, 1.0 / K), A, B), np.repeat(np.arange(G), r))


__all__ = ["ClassedHMM", "zipf_weights", "class_emission", "block_zipf_hmm", "topic_syntax_hmm", "topic_of_state",
           "confusion_groups_hmm"]
