"""The planted-class worlds of simlm.worlds.topic against their docstrings, entry by entry where the draws allow
(mutation review 2026-12-07: a chain that stayed inside its group, an identity σ_g, a uniform syntax law and an
ignored ``concentration`` each passed every other test)."""
import numpy as np
import pytest

from simlm.worlds.topic import block_zipf_hmm, confusion_groups_hmm, topic_syntax_hmm


def _dense(world):
    return tuple(np.asarray(a, np.float64) for a in (world.hmm.initial, world.hmm.transition, world.hmm.emission))


def test_confusion_groups_move_to_the_next_group_sharply_onto_a_seeded_permutation():
    """From (g, i) every unit of mass goes to group g + 1 (mod G): sharpness + (1 − sharpness)/r on σ_g(i),
    (1 − sharpness)/r on each other state there; σ_g a permutation, drawn from the seed (not the identity on
    every seed); the emission and the uniform initial law exactly as documented."""
    G, r, sharp, noise = 3, 3, 0.7, 0.15
    identity_everywhere, K = True, G * r
    for seed in range(4):
        pi, A, B = _dense(confusion_groups_hmm(seed, G, r, sharpness=sharp, noise=noise))
        want_A = np.zeros((K, K))
        for g in range(G):
            nxt = slice((g + 1) % G * r, (g + 1) % G * r + r)
            sigma = A[g * r:(g + 1) * r, nxt].argmax(1)
            assert sorted(sigma) == list(range(r))
            want_A[g * r:(g + 1) * r, nxt] = (1 - sharp) / r + sharp * np.eye(r)[sigma]
            identity_everywhere &= bool((sigma == np.arange(r)).all())
        np.testing.assert_allclose(A, want_A, rtol=1e-6, atol=1e-7)
        want_B = np.kron(np.eye(G), noise / (r - 1) * (1 - np.eye(r)) + (1 - noise) * np.eye(r))
        np.testing.assert_allclose(B, want_B, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(pi, 1 / K, rtol=1e-6)
    assert not identity_everywhere


@pytest.mark.parametrize("seed", [0, 1])
def test_block_zipf_concentration_sets_how_peaked_the_chain_is(seed):
    """Dirichlet(1e3) rows are within ~0.005 (one sd) of uniform; Dirichlet(1e-2) rows put ≳ 0.9 on one state."""
    _, flat, _ = _dense(block_zipf_hmm(seed, 6, 2, concentration=1e3))
    pi_flat = _dense(block_zipf_hmm(seed, 6, 2, concentration=1e3))[0]
    _, peaked, _ = _dense(block_zipf_hmm(seed, 6, 2, concentration=1e-2))
    np.testing.assert_allclose(flat, 1 / 6, atol=0.03)
    np.testing.assert_allclose(pi_flat, 1 / 6, atol=0.03)
    assert peaked.max(1).min() > 0.8


@pytest.mark.parametrize("seed", [0, 1])
def test_topic_syntax_chain_is_the_topic_chain_times_a_dirichlet_syntax_chain(seed):
    """A = topic ⊗ syntax (the topic stays with 1 − switch, else moves uniformly) and π = uniform over topics ⊗
    a Dirichlet(concentration) syntax law: at concentration 1e-2 the syntax law is near one-hot, at 1e3 near
    uniform (a uniform syntax law passed every other test)."""
    Z, S, switch = 2, 4, 0.1
    pi, A, _ = _dense(topic_syntax_hmm(seed, Z, S, 1, concentration=1e-2, switch=switch))
    syntax = A[:S, :S] / (1 - switch)
    topic = (1 - switch) * np.eye(Z) + switch * (1 - np.eye(Z)) / (Z - 1)
    np.testing.assert_allclose(A, np.kron(topic, syntax), rtol=1e-6, atol=1e-7)
    pi = pi.reshape(Z, S)
    np.testing.assert_allclose(pi.sum(1), 1 / Z, rtol=1e-5)
    np.testing.assert_allclose(pi[0], pi[1], rtol=1e-5)
    assert pi[0].max() * Z > 0.8
    pi_flat, A_flat, _ = _dense(topic_syntax_hmm(seed, Z, S, 1, concentration=1e3, switch=switch))
    np.testing.assert_allclose(pi_flat, 1 / (Z * S), atol=0.03)
    np.testing.assert_allclose(A_flat[:S, :S] / (1 - switch), 1 / S, atol=0.03)
