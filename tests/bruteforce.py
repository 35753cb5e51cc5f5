"""Reference computations by enumeration over every hidden path, in float64 numpy (tests only).

For an HMM with K states and a sequence of length T there are K^T paths; the tests keep K, T ≤ 6.  Longer
sequences (a share buried for hundreds of tokens) are checked against the float64 recursions in log space at
the end, where nothing flushes.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import logsumexp


def params(hmm):
    return (np.asarray(hmm.initial, np.float64), np.asarray(hmm.transition, np.float64),
            np.asarray(hmm.emission, np.float64))


def path_joint(pi, A, B, x):
    """Array over all K^T hidden paths h of p(x, h), shape (K,)*T."""
    K, T = len(pi), len(x)
    out = np.zeros((K,) * T)
    for h in itertools.product(range(K), repeat=T):
        p = pi[h[0]] * B[h[0], x[0]]
        for t in range(1, T):
            p *= A[h[t - 1], h[t]] * B[h[t], x[t]]
        out[h] = p
    return out


def sequence_prob(pi, A, B, x):
    return path_joint(pi, A, B, x).sum() if len(x) else 1.0


def next_token_law(pi, A, B, x):
    """(T, V): row t = p(x_t = · | x_<t) = p(x_<t, v) / p(x_<t)."""
    V = B.shape[1]
    rows = []
    for t in range(len(x)):
        joint = np.array([sequence_prob(pi, A, B, list(x[:t]) + [v]) for v in range(V)])
        rows.append(joint / joint.sum())
    return np.array(rows)


def masked_law(pi, A, B, x, i):
    """(V,): p(x_i = · | x_-i) by substituting every symbol at position i."""
    V = B.shape[1]
    joint = np.array([sequence_prob(pi, A, B, list(x[:i]) + [v] + list(x[i + 1:])) for v in range(V)])
    return joint / joint.sum()


def prepended_masked_law(pi, A, B, x):
    """(V,): p(x_0 = · | x_1:T) for the sequence (x_0, x_1, …, x_T) with x_0 masked."""
    V = B.shape[1]
    joint = np.array([sequence_prob(pi, A, B, [v] + list(x)) for v in range(V)])
    return joint / joint.sum()


def prepended_state_law(pi, A, B, x):
    """(K,): p(h_0 | x_1:T) for the same prepended sequence."""
    K = len(pi)
    # Σ over x_0 of p(h_0, x_0, x_1:T) = π(h_0) Σ_h1 A[h_0, h_1] p(x_1:T | h_1)
    post = np.zeros(K)
    for h0 in range(K):
        start = np.zeros(K)
        start[h0] = 1.0
        post[h0] = pi[h0] * sequence_prob(start @ A, A, B, x)
    return post / post.sum()


def prompted_state_law(pi, A, B, U, x):
    """(K,): P(H_0 | z_1:k, x_1:T) for prompt likelihood rows ``U (k, K)`` before the masked position 0,
    by enumerating the prompt states and every path of x (the prompt chain starts with π)."""
    K = len(pi)
    alpha = pi * U[0]
    for row in U[1:]:
        alpha = np.array([sum(alpha[g] * A[g, h] for g in range(K)) * row[h] for h in range(K)])
    w = np.array([sum(alpha[g] * A[g, h] for g in range(K)) * sequence_prob(np.eye(K)[h] @ A, A, B, x)
                  for h in range(K)])
    return w / w.sum()


def smoothed_states(pi, A, B, x):
    """(T, K): p(h_t | x_1:T)."""
    J = path_joint(pi, A, B, x)
    T = len(x)
    return np.array([J.sum(axis=tuple(a for a in range(T) if a != t)) for t in range(T)]) / J.sum()


def masked_states(pi, A, B, x, i):
    """(K,): p(h_i | x_−i), by summing the hidden paths of every substitution at position i."""
    V, T = B.shape[1], len(x)
    J = sum(path_joint(pi, A, B, list(x[:i]) + [v] + list(x[i + 1:])) for v in range(V))
    marginal = J.sum(axis=tuple(a for a in range(T) if a != i))
    return marginal / marginal.sum()


def filtered_states(pi, A, B, x):
    """(T, K): p(h_t | x_≤t)."""
    return np.array([smoothed_states(pi, A, B, x[: t + 1])[t] for t in range(len(x))])


def log_forward(pi, A, B, x):
    """The forward recursion on float64 log-probabilities: (log p(h_t | x_<t), shape (T, K); log p(x_t | x_<t),
    shape (T,)).  Rows are as the recursion leaves them (a chain stored in float32 sums to 1 within its rounding)."""
    with np.errstate(divide="ignore"):
        lp, la, lb = (np.log(np.asarray(a, np.float64)) for a in (pi, A, B))
    predicted, log_c = [], []
    for xt in x:
        predicted.append(lp)
        joint = lp + lb[:, xt]
        log_c.append(logsumexp(joint))
        lp = logsumexp((joint - log_c[-1])[:, None] + la, axis=0)
    return np.array(predicted), np.array(log_c)


def log_smoothed_states(pi, A, B, x):
    """(T, K): p(h_t | x_1:T) by forward–backward on float64 log-probabilities."""
    predicted, _ = log_forward(pi, A, B, x)
    with np.errstate(divide="ignore"):
        la, lb = np.log(np.asarray(A, np.float64)), np.log(np.asarray(B, np.float64))
    log_beta = np.zeros_like(predicted)
    for t in range(len(x) - 2, -1, -1):
        log_beta[t] = logsumexp(la + (lb[:, x[t + 1]] + log_beta[t + 1])[None], axis=1)
    joint = predicted + lb[:, np.asarray(x)].T + log_beta
    return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
