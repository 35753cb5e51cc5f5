"""Downstream tasks: labels are argmax L·posterior of the exact posterior (checked by enumeration over all
hidden paths), task construction never returns a degenerate task, the continuation sampler draws from the
exact conditional law, and the Bayes ceiling behaves as a ceiling."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bruteforce as bf
from simlm.downstream import (MemoryTask, PosteriorTask, bayes_ceiling, bayes_ceiling_bracket, make_memory_task,
                              make_posterior_task, sample_continuations, sample_task_data, sparse_direction,
                              sparse_label_matrix)
from simlm.errors import ConfigError, ShapeError
from simlm.strategies import hmms, memory_hmms, token_sequences
from simlm.worlds import HMM, MemoryHMM

# each new world shape compiles the world's inference functions; a third of the profile's examples
few = settings(max_examples=max(1, settings.default.max_examples // 3))
fewer = settings(max_examples=max(1, settings.default.max_examples // 5))
N, T = 64, 8  # one data shape for most tests, so the world's functions compile once


@pytest.fixture(scope="module")
def world():
    """K = 4, V = 6, mixing enough that posteriors stay uncertain."""
    return HMM.random(3, 4, 6, family="permutation-mixture", transition_temp=0.5, emission_temp=0.5)


@pytest.fixture(scope="module")
def memory_world():
    return MemoryHMM.random(0, n_cells=2, n_values=3, n_syntactic=2, n_symbols=5, transition_temp=0.3,
                            emission_temp=0.3)


def _agree_where_decided(labels, scores, tol=1e-4):
    """Labels equal argmax of the float64 scores wherever the top two scores differ by more than tol
    (float32 posteriors cannot decide closer calls)."""
    top2 = np.sort(scores, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > tol
    np.testing.assert_array_equal(labels[decided], np.argmax(scores, axis=1)[decided])


# ---- labels against enumeration -----------------------------------------------------------------

@few
@given(data=st.data(), position=st.sampled_from(["prepended", "next"]), n_classes=st.integers(2, 3),
       seed=st.integers(0, 2**16))
def test_posterior_labels_equal_argmax_of_enumerated_posterior(data, position, n_classes, seed):
    # positive worlds: arbitrary token ids are possible, so no sampler is compiled per world
    w = data.draw(hmms(max_states=3, max_symbols=3, allow_zeros=False))
    x = data.draw(token_sequences(w, max_length=3, n_sequences=2, possible=False))
    L = sparse_label_matrix(seed, n_classes, w.n_states)
    task = PosteriorTask(L=L, position=position)
    pi, A, B = bf.params(w)
    if position == "prepended":
        post = np.array([bf.prepended_state_law(pi, A, B, list(s)) for s in x])
    else:
        post = np.array([bf.filtered_states(pi, A, B, list(s))[-1] @ A for s in x])
    np.testing.assert_allclose(task.posteriors(w, x), post, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(task.log_posteriors(w, x), np.log(post), rtol=1e-4, atol=1e-5)
    _agree_where_decided(task.labels(w, x), post @ L.T)


def test_direction_labels_are_one_where_mu_dot_posterior_is_nonnegative(world):
    mu = sparse_direction(0, world.n_states, nnz=3)
    task = PosteriorTask(mu=mu)
    x, y = sample_task_data(world, task, 0, N, T)
    np.testing.assert_array_equal(y, (task.posteriors(world, x) @ mu >= 0).astype(np.int32))


def _enumerated_memory_posterior(w, x, cell):
    """P(m_cell = · | x) by summing p(m, z_1:T, x) over every memory configuration and path (float64)."""
    rho, pi, A, E = (np.asarray(a, np.float64) for a in (w.memory_prior, w.initial, w.transition, w.emission))
    N, M = rho.shape
    Q = E.shape[1]
    post = np.zeros(M)
    for m in itertools.product(range(M), repeat=N):
        total = 0.0
        for z in itertools.product(range(N * Q), repeat=len(x)):
            p = pi[z[0]]
            for t in range(len(x)):
                p *= (A[z[t - 1], z[t]] if t else 1.0) * E[m[z[t] // Q], z[t] % Q, x[t]]
            total += p
        post[m[cell]] += np.prod(rho[np.arange(N), m]) * total
    return post / post.sum()


@fewer
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_memory_labels_equal_argmax_of_enumerated_memory_posterior(data, seed):
    w = data.draw(memory_hmms(max_cells=2, max_values=2, max_syntactic=2, max_symbols=3))
    x = data.draw(token_sequences(w, max_length=3, n_sequences=2, possible=False))  # positive world
    cell = data.draw(st.integers(0, w.n_cells - 1))
    L = sparse_label_matrix(seed, 2, w.n_values)
    task = MemoryTask(L=L, cell=cell)
    post = np.array([_enumerated_memory_posterior(w, list(s), cell) for s in x])
    np.testing.assert_allclose(task.posteriors(w, x), post, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(task.log_posteriors(w, x), np.log(post), rtol=1e-4, atol=1e-5)
    _agree_where_decided(task.labels(w, x), post @ L.T)


# ---- labels decided by shares below the float range ------------------------------------------------

def _buried_values():
    """Three values that never change (identity chain, or one memory cell); after 60 zeros value 0 holds all
    but ~9⁻⁶⁰ of the posterior, value 1 holds 9⁻⁶⁰ ≈ 5e-58 and value 2 18⁻⁶⁰ ≈ 5e-76: both far
    below float32, so a label that weighs only values 1 and 2 is a tie in the probabilities."""
    E = np.array([[0.9, 0.1], [0.1, 0.9], [0.05, 0.95]])
    x = np.zeros((1, 60), np.int64)
    log_odds = 60 * np.log(0.1 / 0.05)  # log P(value 1 | x) − log P(value 2 | x) = 60 log 2
    return E, x, log_odds


@pytest.mark.parametrize("position", ["prepended", "next"])
def test_a_label_that_weighs_only_buried_states_is_exact(position):
    E, x, log_odds = _buried_values()
    hmm = HMM(np.full(3, 1 / 3), np.eye(3), E)
    task = PosteriorTask(mu=[0.0, -1.0, 1.0], position=position)  # 1[P_2 ≥ P_1]: exactly 0
    lp = task.log_posteriors(hmm, x)[0]
    assert lp[1] - lp[2] == pytest.approx(log_odds, rel=1e-5) and lp[1] < -100
    assert (task.posteriors(hmm, x)[0, 1:] == 0).all()  # what the float32 probabilities hold: a tie
    assert task.labels(hmm, x)[0] == 0
    # the same task as a label matrix [0; μ], and the probabilities alone, which cannot decide it
    assert PosteriorTask(L=[[0, 0, 0], [0, -1, 1]], position=position).labels(hmm, x)[0] == 0
    assert task.labels_from_posterior(task.posteriors(hmm, x))[0] == 1


def test_a_memory_label_that_weighs_only_buried_values_is_exact():
    E, x, log_odds = _buried_values()
    world = MemoryHMM.one_cell(np.full(3, 1 / 3), [1.0], [[1.0]], E[:, None, :])
    task = MemoryTask(L=[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # class 1 iff P(value 1) > P(value 2): exactly 1
    lp = task.log_posteriors(world, x)[0]
    assert lp[1] - lp[2] == pytest.approx(log_odds, rel=1e-5)
    assert task.labels(world, x)[0] == 1
    assert task.labels_from_posterior(task.posteriors(world, x))[0] == 0  # the flushed tie


def test_labels_from_log_posteriors_read_shares_below_the_float64_range():
    """The values the classes weigh differently are scaled by the largest of them before the weights apply:
    at log-posteriors −900 and −1000 both shares are 0 even in float64 (e^−745 is the least), and the label,
    decided by their ratio e^100, would be a tie."""
    lp = [[0.0, -900.0, -1000.0], [0.0, -1000.0, -900.0], [-np.inf, -1e4, -1e4 - 1e-3]]
    assert PosteriorTask(mu=[0.0, -1.0, 1.0]).labels_from_log_posterior(lp).tolist() == [0, 1, 0]
    assert PosteriorTask(L=[[0, 1, 0], [0, 0, 1]]).labels_from_log_posterior(lp).tolist() == [0, 1, 0]
    assert MemoryTask(L=[[0, 0, 1], [0, 1, 0]]).labels_from_log_posterior(lp).tolist() == [1, 0, 1]


def test_labels_from_posteriors_refuse_negative_entries_by_their_name():
    task = PosteriorTask(mu=[1.0, -1.0])
    with pytest.raises(ConfigError, match=r"^posterior: entry \(0, 1\) is -0.1"):
        task.labels_from_posterior([[1.1, -0.1]])
    assert task.labels_from_posterior([[1.0, -1e-9]]).tolist() == [1]  # rounding below 0 is a 0


def test_log_matvec_is_the_log_of_the_product_in_any_chunks():
    from simlm.downstream.tasks import log_matvec

    rng = np.random.default_rng(0)
    P, M = rng.dirichlet(np.ones(4), size=7), rng.dirichlet(np.ones(3), size=4)
    M[1] = 0.0  # a zero row: −inf logs in the sum
    for chunk in (8, 100, 2**26):
        np.testing.assert_allclose(log_matvec(np.log(P), M, chunk_bytes=chunk), np.log(P @ M), rtol=1e-12)
    far = np.log(P) - 800.0  # shares e^-800: 0 as probabilities, kept as logs
    np.testing.assert_allclose(log_matvec(far, M), np.log(P @ M) - 800.0, rtol=1e-12)


def test_labels_from_log_posteriors_refuse_nan_and_plus_inf():
    task = PosteriorTask(mu=[1.0, -1.0])
    for bad in ([[np.nan, 0.0]], [[np.inf, 0.0]]):
        with pytest.raises(ConfigError, match="log_posterior"):
            task.labels_from_log_posterior(bad)
    with pytest.raises(ShapeError, match="log_posterior"):
        task.labels_from_log_posterior([[0.0, 0.0, 0.0]])
    assert task.labels_from_log_posterior([[-np.inf, 0.0], [0.0, -np.inf], [-np.inf, -np.inf]]).tolist() == [0, 1, 1]


# ---- construction -------------------------------------------------------------------------------

def test_sparse_label_matrix_is_deterministic_and_sparse():
    L = sparse_label_matrix(7, 3, 10, nnz=4)
    assert L.shape == (3, 10) and 1 <= np.count_nonzero(L) <= 4
    np.testing.assert_array_equal(L, sparse_label_matrix(7, 3, 10, nnz=4))
    mu = sparse_direction(7, 10, nnz=2)
    assert mu.shape == (10,) and 1 <= np.count_nonzero(mu) <= 2


@pytest.mark.parametrize("position,n_classes", [("prepended", 2), ("next", 3)])
def test_make_posterior_task_never_returns_a_degenerate_task_on_its_probe(world, position, n_classes):
    for seed in range(4):
        task = make_posterior_task(world, seed, n_classes=n_classes, position=position, n_probe=N,
                                   probe_length=T, min_class_fraction=0.15)
        assert task.seed >= seed and task.n_classes == n_classes
        probe, labels = sample_task_data(world, task, seed, N, T)
        counts = np.bincount(labels, minlength=n_classes)
        assert counts.min() >= 0.15 * counts.sum()


def test_make_memory_task_never_returns_a_degenerate_task_on_its_probe(memory_world):
    for seed in range(3):
        task = make_memory_task(memory_world, seed, cell=1, n_probe=N, probe_length=T)
        _, labels = sample_task_data(memory_world, task, seed, N, T)
        assert np.bincount(labels, minlength=2).min() >= 0.1 * N


def test_make_posterior_task_raises_when_no_draw_can_split_the_probe():
    flat = HMM(np.full(2, 0.5), np.full((2, 2), 0.5), np.full((2, 2), 0.5))  # posterior never moves from π
    with pytest.raises(ConfigError, match="seed"):
        make_posterior_task(flat, 0, n_probe=16, probe_length=2, max_tries=5, min_class_fraction=0.1)


def test_prepended_task_data_are_positions_one_to_T_of_a_sampled_sequence(world):
    task = PosteriorTask(mu=np.ones(world.n_states))
    tokens, labels = sample_task_data(world, task, 5, N, T)
    np.testing.assert_array_equal(tokens, np.asarray(world.sample(5, N, T + 1))[:, 1:])
    np.testing.assert_array_equal(labels, task.labels(world, tokens))


# ---- continuations and the Bayes ceiling ---------------------------------------------------------

@pytest.mark.parametrize("position", ["next", "prepended"])
def test_first_continued_token_follows_the_exact_next_token_law(world, position):
    task = PosteriorTask(mu=np.ones(world.n_states), position=position)
    prefix = sample_task_data(world, task, 1, N, T)[0][:3, :4]
    R = 4000
    cont = sample_continuations(world, prefix, 1, 11, n_continuations=R, task=task)
    pi, A, B = bf.params(world)
    start = pi @ A if position == "prepended" else pi  # the prepended data start from πA
    for i in range(3):
        law = bf.next_token_law(start, A, B, list(prefix[i]) + [0])[-1]
        freq = np.bincount(cont[i, :, 0], minlength=world.n_symbols) / R
        # 5 binomial standard errors, per symbol (fixed seed)
        assert np.all(np.abs(freq - law) <= 5 * np.sqrt(law * (1 - law) / R) + 1e-3), (freq, law)


def test_memory_continuations_follow_the_exact_next_token_law(memory_world):
    prefix = np.asarray(memory_world.sample(2, N, T))[:2, :4]
    R = 4000
    cont = sample_continuations(memory_world, prefix, 1, 3, n_continuations=R)
    law = np.asarray(memory_world.next_token_probs(np.concatenate([prefix, prefix[:, :1]], axis=1)))[:, -1]
    for i in range(2):
        freq = np.bincount(cont[i, :, 0], minlength=memory_world.n_symbols) / R
        assert np.all(np.abs(freq - law[i]) <= 5 * np.sqrt(law[i] * (1 - law[i]) / R) + 1e-3)


def test_bayes_ceiling_is_one_with_the_full_input(world):
    task = make_posterior_task(world, 0, n_probe=N, probe_length=T)
    x, _ = sample_task_data(world, task, 0, N, T)
    assert bayes_ceiling(world, task, x, T) == (1.0, 0.0)


def test_bayes_ceiling_of_a_truncated_input_is_a_probability_below_one(world):
    task = make_posterior_task(world, 0, n_probe=N, probe_length=T)
    x, _ = sample_task_data(world, task, 0, N, T)
    est, se = bayes_ceiling(world, task, x, 2, n_continuations=16, key=0)
    assert 0.5 <= est <= 1.0 and 0 < se < 0.05
    assert est < 1.0  # two tokens of eight do not decide every label in this world
    est0, _ = bayes_ceiling(world, task, x, 0, n_continuations=16, key=0)
    assert est0 <= est + 3 * se  # seeing nothing cannot beat seeing two tokens


@pytest.mark.parametrize("position", ["prepended", "next"])
def test_bayes_ceiling_matches_enumeration_over_every_continuation(position):
    # E over the given sequences of max_y P(y | x_1:T'), P from every length-T sequence of the data chain
    # (x_1 from πA for a prepended task, π for a next-token one: the reverse would move T' = 0 by 0.03 and 0.10)
    pi = np.array([0.9, 0.05, 0.05])
    A = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    B = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    world, T = HMM(pi, A, B), 5
    task = PosteriorTask(mu=np.array([0.0, 1.0, -1.0]), position=position)
    seqs = np.array(list(itertools.product(range(2), repeat=T)))
    prob = np.array([bf.sequence_prob(pi @ A if position == "prepended" else pi, A, B, x) for x in seqs])
    y = task.labels(world, seqs)
    x, _ = sample_task_data(world, task, 0, 48, T)
    for visible in (0, 1, 2):
        exact = []
        for row in x:
            same = np.all(seqs[:, :visible] == row[:visible], axis=1)
            exact.append(max(prob[same & (y == c)].sum() for c in (0, 1)) / prob[same].sum())
        est, _ = bayes_ceiling(world, task, x, visible, n_continuations=4096, key=1)
        # R = 4096 continuations: sampling error ≤ ~0.008 per sequence, the plug-in max's bias upward
        assert np.mean(exact) - 0.005 <= est <= np.mean(exact) + 0.015, (visible, est, np.mean(exact))


# ---- typed errors -------------------------------------------------------------------------------

def test_bad_inputs_raise_typed_errors_naming_the_argument(world, memory_world):
    with pytest.raises(ConfigError, match="world"):
        MemoryTask(L=np.eye(3)).labels(world, [[0, 1]])
    with pytest.raises(ConfigError, match="world"):
        make_memory_task(world, 0)
    with pytest.raises(ConfigError, match="world"):
        PosteriorTask(mu=np.ones(4)).labels(memory_world, [[0, 1]])
    with pytest.raises(ConfigError, match="position"):
        PosteriorTask(mu=np.ones(4), position="middle")
    with pytest.raises(ConfigError, match="position"):
        make_posterior_task(world, 0, position="last")
    with pytest.raises(ConfigError, match="n_classes"):
        make_posterior_task(world, 0, n_classes=1)
    with pytest.raises(ConfigError, match="n_classes"):
        sparse_label_matrix(0, 1, 4)
    with pytest.raises(ShapeError, match="world"):
        PosteriorTask(mu=np.ones(5)).labels(world, [[0, 1]])
    with pytest.raises(ShapeError, match="L"):
        PosteriorTask(L=np.ones((1, 4)))
    with pytest.raises(ConfigError, match="visible_length"):
        bayes_ceiling(world, PosteriorTask(mu=np.ones(4)), [[0, 1, 2]], 4)
    with pytest.raises(ConfigError, match="cell"):
        MemoryTask(L=np.eye(3), cell=2).labels(memory_world, [[0, 1]])


@pytest.mark.parametrize("visible", [0, 1, 2, 3])
def test_the_bayes_ceiling_refuses_impossible_tokens_at_every_visible_length(visible):
    """x_1 = 2 is impossible from state 0, which π never leaves, and so is x_2 = 2 after x_1 = 0: labels are
    undefined.  T' = T refused them; T' < T checked only x_1:T' (T' = 0 nothing) and reported a ceiling."""
    from simlm.downstream.tasks import bayes_ceiling
    from simlm.errors import ZeroProbabilityError

    world = HMM([1.0, 0.0], np.eye(2), [[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    task = PosteriorTask(mu=np.array([1.0, -1.0]), position="next")
    for tokens in ([[2, 2, 2], [2, 0, 1]], [[0, 2, 2], [0, 0, 1]]):
        with pytest.raises(ZeroProbabilityError):
            bayes_ceiling(world, task, np.array(tokens), visible, n_continuations=8)


def test_labels_from_posteriors_refuse_rows_that_are_not_laws():
    """An all-zero row read as a tie (label 1), a row summing to 6 as a law."""
    task = PosteriorTask(mu=[1.0, -1.0, 0.0])
    for rows, bad in (([[0, 0, 0], [0.2, 0.8, 0]], "row 0 sums to 0"), ([[0.2, 0.8, 0], [5, 1, 0]], "row 1 sums to 6")):
        with pytest.raises(ConfigError, match=f"^posterior: {bad}"):
            task.labels_from_posterior(rows)


def test_an_exact_tie_in_a_label_takes_the_documented_rule_not_the_rounding():
    """States 1 and 2 are exchangeable (π, A and B symmetric under swapping them), so P(H_0 = 1 | x) =
    P(H_0 = 2 | x) on every sequence and μ = (0, 1, −1) scores exactly 0: label 1 (μᵀP ≥ 0) for all 64
    sequences of length 6.  The float32 filter's log-posteriors, 2.4e-7 apart, labelled 3 of them 0 (8 from the
    float32 posteriors); with L, the tied classes' lowest wins."""
    import itertools

    from simlm.downstream.tasks import PosteriorTask

    hmm = HMM([.2, .4, .4], [[.5, .25, .25], [.1, .6, .3], [.1, .3, .6]], [[.7, .3], [.2, .8], [.2, .8]])
    xs = np.array(list(itertools.product(range(2), repeat=6)), np.int32)
    task = PosteriorTask(mu=np.array([0.0, 1.0, -1.0]))
    assert task.labels(hmm, xs).tolist() == [1] * 64
    assert task.labels_from_posterior(task.posteriors(hmm, xs)).tolist() == [1] * 64
    three = PosteriorTask(L=np.array([[0.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.0, -1.0, 1.0]]))  # classes 1, 2 tie at 0
    assert three.labels(hmm, xs).tolist() == [0] * 64  # 0 ties them too (every score is 0): the lowest
    shifted = PosteriorTask(L=np.array([[-1.0, -1.0, -1.0], [0.0, 1.0, -1.0], [0.0, -1.0, 1.0]]))
    assert shifted.labels(hmm, xs).tolist() == [1] * 64
    # a clear decision is not a tie: the same world, μ = (0, 1, −0.9)
    assert PosteriorTask(mu=np.array([0.0, 1.0, -0.9])).labels(hmm, xs).tolist() == [1] * 64
    assert PosteriorTask(mu=np.array([0.0, 0.9, -1.0])).labels(hmm, xs).tolist() == [0] * 64


def test_a_near_tie_that_the_posteriors_resolve_is_not_a_tie():
    """The tie rule reads rounding only: a decision 6e-6 away from 0 (π = (0.499997, 0.500003), resolved by 200
    float32 ulps) keeps its label 0, and a row of L shared by every class (argmax(L P) does not see it) does not
    widen the tolerance (with 100 added to every class a margin of 2e-4 was read as a tie, going to class 0)."""
    from simlm.downstream.tasks import PosteriorTask

    w = HMM([0.499997, 0.500003], [[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]])
    x = np.zeros((3, 4), np.int32)
    task = PosteriorTask(mu=np.array([1.0, -1.0]))
    assert task.labels(w, x).tolist() == [0, 0, 0]
    assert task.labels_from_posterior(np.array([[0.499997, 0.500003]], np.float32)).tolist() == [0]
    Q = np.array([[0.6, 0.4], [0.4, 0.6]], np.float32)
    for offset in (0.0, 100.0):
        L = np.array([[0.0, 0.001], [0.001, 0.0]]) + offset
        assert PosteriorTask(L=L).labels_from_posterior(Q).tolist() == [1, 0], offset


def _log_posterior0(pi, A, B, x):
    """float64 log P(H_0 | x) by a log-space backward pass (H_0 the state before x_1, H_1 ~ π A)."""
    from scipy.special import logsumexp
    with np.errstate(divide="ignore"):
        lA, lB, lpi = np.log(A), np.log(B), np.log(pi)
    out = []
    for s in x:
        beta = lB[:, s[-1]].copy()
        for t in range(len(s) - 2, -1, -1):
            beta = lB[:, s[t]] + logsumexp(lA + beta[None, :], axis=1)
        lp = lpi + logsumexp(lA + beta[None, :], axis=1)
        out.append(lp - logsumexp(lp))
    return np.array(out)


def test_a_negligible_state_does_not_widen_the_tie_tolerance_of_the_others():
    """The tie tolerance took the row's largest |log P| for every term: a sink state of log P ≈ −200, whose share
    counts nothing, made it 4e-4 relative in float32, and labels of true margin up to 4e-4 (1400× their rounding)
    read as ties and went to label 1 (571 of 3000, a review 2026-12-06).  Each term now carries its own
    rounding: every label clear of 1e-5 relative is the float64 label."""
    pi, A = np.array([0.5, 0.49, 0.01]), np.array([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0], [0.0, 0.0, 1.0]])
    B = np.array([[0.5, 0.5, 0.0], [0.52, 0.48, 0.0], [0.01, 0.01, 0.98]])  # state 2: a sink that rarely emits 0/1
    world = HMM(pi, A, B)
    x = np.random.default_rng(0).integers(0, 2, (600, 50)).astype(np.int32)
    P = np.exp(_log_posterior0(*(np.asarray(a, np.float64) for a in world.parameter_arrays()), x))
    task = PosteriorTask(mu=np.array([1.0, -np.median(P[:, 0] / P[:, 1]), 1.0]))  # the boundary mid-data
    truth = P @ task.mu >= 0
    clear = np.abs(P @ task.mu) > 1e-5 * (P @ np.abs(task.mu))
    assert (~clear).sum() < 40 and (clear & (np.abs(P @ task.mu) < 4e-4 * (P @ np.abs(task.mu)))).sum() > 50
    np.testing.assert_array_equal(task.labels(world, x).astype(bool)[clear], truth[clear])


def test_the_top_share_carries_no_rounding_of_its_own():
    """Each share is exp(log P_k − log P_top): the top's is exactly 1, and its rounding is already in every other
    share's.  Counted on the top too, the tolerance doubled on ordinary rows: a decision of margin 1e-3 (float32
    resolves it to 2.4e-5) read as a tie, label 1 (a review of the per-term tolerance, 2026-12-06)."""
    task = PosteriorTask(mu=np.array([0.0, 1.0, -1.0]))
    lp = np.array([[0.0, -200.0, -200.001], [0.0, -200.001, -200.0], [0.0, -200.0, -200.0]], np.float32)
    np.testing.assert_array_equal(task.labels_from_log_posterior(lp), [1, 0, 1])  # the third an exact tie


def test_a_label_matrix_tie_read_through_rounding_goes_to_the_lowest_class_either_way():
    """States 1 and 2 tie exactly (P = 0.4 each) but their float32 log-posteriors come one ulp apart, either
    way: L's classes 0 (P1 − P2) and 1 (P2 − P1) tie, so the label is 0 (the lowest tied class) for both
    roundings (without the tie rule, the ulp above read class 1).  A decision beyond rounding is kept."""
    task = PosteriorTask(L=np.array([[0.0, 1.0, -1.0], [0.0, -1.0, 1.0]]))
    lp = np.log(np.array([0.2, 0.4, 0.4], np.float32))
    up, down = lp.copy(), lp.copy()
    up[2] = np.nextafter(up[2], np.float32(0))  # P2 a rounding above P1: argmax alone says class 1
    down[2] = np.nextafter(down[2], np.float32(-1))  # P2 a rounding below
    assert task.labels_from_log_posterior(np.stack([up, down])).tolist() == [0, 0]
    clear = np.log(np.array([0.19, 0.40, 0.41], np.float32))
    assert task.labels_from_log_posterior(clear[None]).tolist() == [1]


def test_the_default_number_of_label_slots_is_the_documented_one():
    """Default nnz = C · max(2, K // 2) for L and max(2, K // 2) for μ, at K where K // 2 > 2 (the other
    tests' worlds have K ≤ 5, where every default of the form max(2, K // m) agrees)."""
    from simlm.downstream.tasks import sparse_direction, sparse_label_matrix

    for K in (6, 9, 20):
        for seed in range(3):
            np.testing.assert_array_equal(sparse_direction(seed, K), sparse_direction(seed, K, max(2, K // 2)))
            np.testing.assert_array_equal(sparse_label_matrix(seed, 3, K),
                                          sparse_label_matrix(seed, 3, K, nnz=3 * max(2, K // 2)))


def test_the_split_ceiling_is_unbiased_where_the_plug_in_one_is_many_standard_errors_high():
    """A world whose every label is a fair coin given nothing (π = (½, ½), symmetric A and B, μ = (1, −1), T' = 0):
    the ceiling is 0.5, and the plug-in max of R = 8 frequencies reads 0.631 ± 0.0053 on these 500 sequences — 25 of its
    own standard errors high (55 on 2000), the bias outside the error it reports (a review, 2026-12-08).
    ``estimate="split"`` picks the class on half the continuations and scores it on the other half: 0.5 within 3
    standard errors, and below the plug-in estimate (the two bracket the ceiling in expectation).  Bad ``estimate``, and
    a split of R = 1, are refused naming the argument."""
    world = HMM([0.5, 0.5], [[0.8, 0.2], [0.2, 0.8]], [[0.9, 0.1], [0.1, 0.9]])
    task = PosteriorTask(mu=np.array([1.0, -1.0]))
    x, _ = sample_task_data(world, task, 0, 500, 8)
    plug, plug_se = bayes_ceiling(world, task, x, 0, n_continuations=8)
    split, split_se = bayes_ceiling(world, task, x, 0, n_continuations=8, estimate="split")
    assert plug - 0.5 > 20 * plug_se
    assert abs(split - 0.5) < 3 * split_se and split < plug
    with pytest.raises(ConfigError, match="^estimate: expected 'plug-in' or 'split', got 'mean'"):
        bayes_ceiling(world, task, x, 0, estimate="mean")
    with pytest.raises(ConfigError, match="^n_continuations: the split estimate .* at least 2, got 1"):
        bayes_ceiling(world, task, x, 0, n_continuations=1, estimate="split")
    # both from one set of continuations (one key): the two calls' numbers, at the cost of one
    bracket = bayes_ceiling_bracket(world, task, x, 0, n_continuations=8)
    assert bracket == (split, split_se, plug, plug_se)
    assert bayes_ceiling_bracket(world, task, x, 8, n_continuations=2) == (1.0, 0.0, 1.0, 0.0)  # T' = T: exact
    with pytest.raises(ConfigError, match="^n_continuations: the split estimate .* at least 2, got 1"):
        bayes_ceiling_bracket(world, task, x, 0, n_continuations=1)
