"""Tzach et al. (2025): the corrupted-channel Bayes predictor, APT, confusion clusters and per-block readouts."""

import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.stats import rankdata, spearmanr

from bruteforce import params, sequence_prob
from simlm.errors import ConfigError, ShapeError, TokenError
from simlm.experiments.registry import Cell, get_check
from simlm.models import WorldLM
from simlm.strategies import hmms
from simlm.theory.block_readout import (block_features, input_apt, label_posterior, logit_lens, order_parameter,
                                       substitute, substitution_test)
from simlm.theory.corrupted_channel import (Corruption, bayes_corrupted_probs, channels, check_corruption, corrupt,
                                            local_bayes_probs, state_marginals)
from simlm.theory.token_accuracy import (TIE_RTOL, adjusted_rand_index, apt_by_frequency, confusion_clusters, hits,
                                         mean_apt_difference, normalized_mutual_information, token_accuracy,
                                         within_class_errors)
from simlm.worlds import HMM
from simlm.worlds.topic import (block_zipf_hmm, class_emission, confusion_groups_hmm, topic_of_state, topic_syntax_hmm,
                               zipf_weights)


# ---- the Bayes predictor under BERT corruption -------------------------------------------------------

def _events(x: int, V: int, c: Corruption, selected_only: bool):
    """Every corruption event of one position holding token x: (observed id, probability)."""
    q, a, b, k = c
    sel = 1.0 if selected_only else q
    out = [] if selected_only else [(x, 1 - q)]
    out += [(V, sel * a), (x, sel * k)] + [(r, sel * b / V) for r in range(V)]
    return out


def _enumerated_law(hmm, y, t, c: Corruption) -> np.ndarray:
    """P(x_t = · | y, s_t = 1) by summing over every token sequence (each by every hidden path) and every
    corruption event at every position."""
    pi, A, B = params(hmm)
    V, T = B.shape[1], len(y)
    law = np.zeros(V)
    for x in itertools.product(range(V), repeat=T):
        px = sequence_prob(pi, A, B, list(x))
        if px == 0:
            continue
        py = 1.0
        for j in range(T):
            py *= sum(p for obs, p in _events(x[j], V, c, j == t) if obs == y[j])
        law[x[t]] += px * py
    return law / law.sum()


# MASK and random replacement both possible, so every corrupted input has positive probability
corruptions = st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(0.0, 1.0)).map(
    lambda r: Corruption(r[0], *(np.array(r[1:]) / sum(r[1:]))))


@given(hmms(min_states=2, max_states=3, min_symbols=2, max_symbols=3), corruptions, st.data())
def test_corrupted_posterior_equals_enumeration_over_paths_and_corruptions(hmm, c, data):
    T = 3  # one length: one compiled posterior per (K, V)
    y = np.array(data.draw(st.lists(st.integers(0, hmm.n_symbols), min_size=T, max_size=T)), np.int32)
    got = bayes_corrupted_probs(hmm, y[None], c)[0]
    for t in range(T):
        np.testing.assert_allclose(got[t], _enumerated_law(hmm, y, t, c), atol=2e-4)


@given(hmms(min_states=3, max_states=3, min_symbols=3, max_symbols=3, allow_zeros=False), st.integers(0, 2),
       st.integers(0, 2**20))
def test_plain_masking_at_one_position_is_the_single_mask_law(hmm, t, seed):
    x = np.asarray(hmm.sample(seed, 1, 3))
    y = x.copy()
    y[:, t] = hmm.n_symbols
    got = bayes_corrupted_probs(hmm, y, (0.15, 1.0, 0.0, 0.0))[:, t]
    np.testing.assert_allclose(got, np.asarray(hmm.masked_token_probs(x))[:, t], atol=1e-5)


def test_the_channels_are_conditional_laws_and_corruption_matches_its_rates():
    C, Cs = channels(Corruption(), 5)
    np.testing.assert_allclose(C.sum(0), 1.0)
    np.testing.assert_allclose(Cs.sum(0), 1.0)
    x = np.zeros((400, 50), np.int32)
    y, sel = corrupt(0, x, Corruption(), 5)
    assert abs(sel.mean() - 0.15) < 0.01
    assert abs((y[sel] == 5).mean() - 0.8) < 0.03
    assert (y[~sel] == 0).all()


@pytest.mark.parametrize("c", [Corruption(1.0, 1.0, 0.0, 0.0), Corruption(1.0, 0.0, 1.0, 0.0),
                               Corruption(1.0, 0.0, 0.0, 1.0), Corruption(0.5, 0.2, 0.3, 0.5)])
def test_each_kind_of_corruption_happens_at_its_documented_rate(c):
    """Per :class:`Corruption`: a position is selected with probability q; a selected token x becomes MASK
    (id V) with probability a, a uniformly random symbol (x itself with probability 1/V) with b, stays with c:
    P(y = MASK | s) = a, P(y = x | s) = c + b/V, P(y = v | s) = b/V for each v ≠ x.  Pure random
    replacement changes (V − 1)/V = 0.8 of the tokens; pure keeping none.  20 000 positions, seed 0: each
    empirical share within 5 binomial standard errors (≤ 0.018) of its rate."""
    V, n = 5, 20_000
    x = (np.arange(n) % V).astype(np.int32).reshape(400, 50)  # every symbol as often
    y, sel = corrupt(0, x, c, V)
    q, a, b, k = c

    def close(hits, trials, p):
        assert abs(hits.sum() / trials - p) <= 5 * np.sqrt(p * (1 - p) / trials) + 1e-12, (c, hits.sum() / trials, p)

    close(sel, n, q)
    assert (y[~sel] == x[~sel]).all()
    ys, xs, m = y[sel], x[sel], int(sel.sum())
    close(ys == V, m, a)
    close(ys == xs, m, k + b / V)
    for d in range(1, V):  # each other symbol, by its offset from the true one
        close(ys == (xs + d) % V, m, b / V)
    close(ys != xs, m, a + b * (V - 1) / V)  # the share of tokens changed


def test_the_local_predictor_sees_only_the_token_and_its_position():
    hmm = HMM.random(0, 3, 4)
    y = np.array([[4, 1, 2], [4, 3, 2]])
    law = local_bayes_probs(hmm, y)
    np.testing.assert_allclose(law[0, 0], law[1, 0])  # same token, same position: same law
    np.testing.assert_allclose(law[0, 2], law[1, 2])


# ---- APT -------------------------------------------------------------------------------------------

def _exact_bayes_apt(hmm, T: int, t: int, c: Corruption) -> np.ndarray:
    """APT_Bayes(w) at position t by enumeration of every (x, y): Σ p(x) P(y | x, s_t=1) 1[x_t = w = pred(y)]."""
    pi, A, B = params(hmm)
    V = B.shape[1]
    ys = np.array(list(itertools.product(range(V + 1), repeat=T)), np.int32)
    pred = bayes_corrupted_probs(hmm, ys, c)[:, t].argmax(-1)
    C, Cs = channels(c, V)
    hit, occ = np.zeros(V), np.zeros(V)
    for x in itertools.product(range(V), repeat=T):
        px = sequence_prob(pi, A, B, list(x))
        py = np.prod([(Cs if j == t else C)[ys[:, j], x[j]] for j in range(T)], axis=0)
        occ[x[t]] += px
        hit[x[t]] += px * (py * (pred == x[t])).sum()
    return hit / occ


def test_bayes_apt_by_counting_and_by_rao_blackwell_agree_with_enumeration():
    hmm = HMM(np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    c = Corruption()
    exact = _exact_bayes_apt(hmm, 3, 1, c)
    x = np.asarray(hmm.sample(0, 6000, 3))
    y, _ = corrupt(1, x, c, 3)
    sel = np.zeros_like(x, bool)
    sel[:, 1] = True  # condition on selection at t = 1 (the corruption there drawn as if selected)
    y[:, 1] = corrupt(2, x[:, 1:2], Corruption(1.0, *c[1:]), 3)[0][:, 0]
    bayes = bayes_corrupted_probs(hmm, y, c)
    r = token_accuracy(bayes, x, sel, bayes)
    np.testing.assert_array_less(np.abs(r.apt - exact), 4 * r.apt_se + 1e-9)
    np.testing.assert_allclose(r.apt_rb, exact, atol=0.03)
    assert r.accuracy == pytest.approx((r.apt * r.counts).sum() / r.counts.sum())


def test_the_standard_error_of_mean_apt_matches_its_spread_over_fresh_test_sets():
    # rare types (seen once or twice per test set, APT 0 or 1) move the type average on their own and have a
    # binomial error of 0; the bootstrap over sequences must still match the spread over independent test sets
    rng = np.random.default_rng(0)
    V, n, T = 12, 48, 8
    freq = 1.0 / np.arange(1, V + 1) ** 2
    freq /= freq.sum()  # the rarest type occurs 1.7 times per test set of 384 positions on average
    right = np.linspace(0.9, 0.1, V)  # P(prediction right | type)
    means, ses = [], []
    for _ in range(300):
        x = rng.choice(V, size=(n, T), p=freq)
        pred = np.where(rng.random((n, T)) < right[x], x, (x + 1) % V)
        r = token_accuracy(np.eye(V)[pred], x, np.ones((n, T), bool))
        means.append(r.mean_apt)
        ses.append(r.mean_apt_se)
    spread, reported = np.std(means, ddof=1), np.mean(ses)
    # seed 0: 0.88 (types absent from a test set are absent from its resamples too, so some of the spread is
    # out of reach); the per-type binomial errors propagated, as before, gave 0.66
    assert 0.78 < reported / spread < 1.25, (reported, spread)
    again = token_accuracy(np.eye(V)[pred], x, np.ones((n, T), bool))
    assert again.mean_apt_se == r.mean_apt_se  # a fixed bootstrap seed: the same inputs, the same error


def _two_correlated_predictors(rng, exponent=2.0, V=12, n=48, T=8, flip=0.1):
    """Zipf(``exponent``) tokens and two predictors that disagree at a share ``flip`` of the positions:
    (x, pred_a, pred_b)."""
    freq = 1.0 / np.arange(1, V + 1) ** exponent
    x = rng.choice(V, size=(n, T), p=freq / freq.sum())
    a = np.where(rng.random((n, T)) < np.linspace(0.9, 0.1, V)[x], x, (x + 1) % V)
    b = np.where(rng.random((n, T)) < flip, np.where(a == x, (x + 1) % V, x), a)
    return x, a, b


@pytest.mark.parametrize("exponent, low, high", [(1.0, 0.85, 1.2), (2.0, 0.6, 0.9)])
def test_the_paired_error_of_a_difference_of_mean_apts_matches_its_spread_over_fresh_test_sets(exponent, low, high):
    """Two readouts of one test set share its variation (which types occur, how often): their ⟨APT⟩s differ by
    far less from one test set to the next than either moves, and mean_apt_difference's error, from the same
    resamples for both, measures the difference's spread, not the two errors in quadrature.  Where the rarest
    type occurs about 10 times per test set (Zipf(1)) it matches (seed 0: 0.97 of the spread); where it occurs
    1.7 times (Zipf(2)) it understates, more than mean_apt_se does (0.74, against 0.88): a type seen once
    adds ±1/#types to the difference where the readouts disagree on it, and a type absent from the test set
    is absent from every resample."""
    rng = np.random.default_rng(0)
    diffs, ses, apart = [], [], []
    for _ in range(300):
        x, a, b = _two_correlated_predictors(rng, exponent)
        sel = np.ones(x.shape, bool)
        ra, rb = (token_accuracy(np.eye(12)[p], x, sel) for p in (a, b))
        diff, se = mean_apt_difference(x, sel, hits(np.eye(12)[a][sel], x[sel]), hits(np.eye(12)[b][sel], x[sel]))
        assert diff == pytest.approx(ra.mean_apt - rb.mean_apt, abs=1e-12)
        diffs.append(diff)
        ses.append(se)
        apart.append(np.hypot(ra.mean_apt_se, rb.mean_apt_se))
    spread = np.std(diffs, ddof=1)
    assert low < np.mean(ses) / spread < high, (np.mean(ses), spread)
    assert np.mean(apart) / spread > 1.6  # the errors in quadrature


def test_the_paired_error_uses_the_resamples_of_mean_apt_se():
    """Against a predictor that is never right the difference is the other's ⟨APT⟩ in every resample, so its
    error is that predictor's mean_apt_se exactly; against itself it is 0."""
    x, a, _ = _two_correlated_predictors(np.random.default_rng(1))
    sel = np.random.default_rng(2).random(x.shape) < 0.4
    r = token_accuracy(np.eye(12)[a], x, sel)
    hit = hits(np.eye(12)[a][sel], x[sel])
    assert mean_apt_difference(x, sel, hit, np.zeros_like(hit)) == (pytest.approx(r.mean_apt, abs=1e-12),
                                                                      pytest.approx(r.mean_apt_se, abs=1e-15))
    assert mean_apt_difference(x, sel, hit, hit) == (0.0, 0.0)
    one = np.zeros(x.shape, bool)
    one[3, :4] = True  # a single sequence: no resample varies
    diff, se = mean_apt_difference(x, one, np.ones(4), np.zeros(4))
    assert diff == 1.0 and np.isnan(se)
    for args, error, match in (((x, sel, hit[:-1], hit), ShapeError, "hits_a: expected one hit per"),
                               ((x, sel, hit, 2 * hit), ConfigError, "hits_b: expected hits in \\[0, 1\\]"),
                               ((x, sel[:, :4], hit, hit), ShapeError, "selected: expected shape"),
                               ((x, np.zeros(x.shape, bool), hit, hit), ShapeError, "no position is selected"),
                               ((x - 1, sel, hit, hit), TokenError, "tokens")):
        with pytest.raises(error, match=match):
            mean_apt_difference(*args)


def _with_apt(hits_of_type, per_type: int):
    """The TokenAccuracy of a predictor right ``hits_of_type[w]`` times of the ``per_type`` positions of type w."""
    V = len(hits_of_type)
    x = np.repeat(np.arange(V), per_type)
    pred = np.concatenate([np.where(np.arange(per_type) < h, w, (w + 1) % V) for w, h in enumerate(hits_of_type)])
    return token_accuracy(np.eye(V)[pred][None], x[None], np.ones((1, x.size), bool))


def test_the_spearman_p_value_is_exact_for_a_few_types():
    """Four types whose APT rises with frequency in perfect order: scipy's t approximation read p = 0, which
    passed the verdict; over the 4! orderings two are as extreme (ρ = ±1), p = 1/12.  Up to 8 types the
    p-value is the share of orderings at least as extreme (enumerated here), above that scipy's."""
    prof = apt_by_frequency(_with_apt([1, 2, 3, 4], 4), [0.1, 0.2, 0.3, 0.4])
    assert prof.spearman == 1.0 and prof.spearman_p == pytest.approx(1 / 12, abs=1e-12)
    f, hits_of_type = np.array([0.3, 0.1, 0.6, 0.2, 0.5, 0.4]), [5, 1, 4, 3, 6, 2]  # ρ = 0.6, no ties
    prof = apt_by_frequency(_with_apt(hits_of_type, 6), f)
    rho = lambda perm: spearmanr(f, perm).statistic
    extreme = [abs(rho(perm)) >= abs(prof.spearman) - 1e-12 for perm in itertools.permutations(hits_of_type)]
    assert prof.spearman == pytest.approx(0.6) and prof.spearman_p == pytest.approx(np.mean(extreme), abs=1e-12)
    nine = apt_by_frequency(_with_apt([1, 2, 4, 3, 5, 7, 6, 8, 9], 9), np.arange(1, 10) / 45)
    assert nine.spearman_p == pytest.approx(spearmanr(np.arange(9), [1, 2, 4, 3, 5, 7, 6, 8, 9]).pvalue)


def test_the_bayes_predictor_on_a_class_world_outputs_one_token_per_class():
    w = block_zipf_hmm(0, n_states=3, block_size=3)
    x = np.asarray(w.hmm.sample(0, 64, 3))
    y, sel = corrupt(1, x, Corruption(0.5, 1.0, 0.0, 0.0), 9)
    bayes = bayes_corrupted_probs(w.hmm, y, (0.5, 1.0, 0.0, 0.0))
    r = token_accuracy(bayes, x, sel, bayes)
    assert r.n_predicted <= 3 and r.mean_apt < r.accuracy
    assert r.epsilon == pytest.approx(0.0, abs=1e-6)


def test_tokens_of_a_class_say_the_same_about_the_hidden_state():
    w = topic_syntax_hmm(0, 2, 2, 3)
    B = np.asarray(w.hmm.emission, np.float64)
    post = B / B.sum(0)  # P(h | w) up to the prior
    for c in np.unique(w.token_class):
        cols = post[:, w.token_class == c]
        np.testing.assert_allclose(cols, cols[:, :1].repeat(cols.shape[1], 1), atol=1e-6)


# ---- confusion clusters ----------------------------------------------------------------------------

def test_the_cluster_pipeline_recovers_planted_groups_from_the_bayes_predictor():
    g = confusion_groups_hmm(0)
    x = np.asarray(g.hmm.sample(0, 128, 16))
    y, sel = corrupt(1, x, Corruption(), 9)
    bayes = bayes_corrupted_probs(g.hmm, y)
    r = token_accuracy(bayes, x, sel)
    cl = confusion_clusters(r.confusion, 0.05, g.token_class)
    assert cl.n_kept == 9 and cl.ari == 1.0 and cl.nmi == pytest.approx(1.0)
    assert within_class_errors(r.confusion, g.token_class) > 0.99


def test_the_paper_filter_drops_rows_whose_diagonal_is_not_the_maximum():
    M = np.array([[5, 1, 0], [4, 2, 0], [0, 1, 3]])
    cl = confusion_clusters(M, 0.3, [0, 0, 1])
    assert cl.kept.tolist() == [True, False, True]
    np.testing.assert_allclose(cl.normalised[0], [1, 0.2, 0])
    assert cl.labels[1] == -1 and sorted(cl.sizes) == [1, 1]


def test_a_token_absent_from_the_test_set_is_no_cluster():
    """An all-zero confusion row (a type that never occurs) is dropped, not kept as a singleton cluster that
    would lower the ARI and NMI against the planted classes."""
    out = confusion_clusters([[5, 1, 0, 0], [1, 5, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]], 0.1, classes=[0, 0, 1, 1])
    assert out.kept.tolist() == [True, True, True, False] and out.labels[3] == -1
    assert out.ari == 1.0 and out.nmi == pytest.approx(1.0)


def test_a_normalised_confusion_at_exactly_tau_links_its_pair():
    """τ is inclusive (N[i, j] ≥ τ): 1/10 at τ = 0.1 links tokens 0 and 1, 1/11 does not."""
    out = confusion_clusters([[10, 1, 0], [0, 10, 0], [0, 0, 10]], 0.1, classes=[0, 0, 1])
    assert out.labels[0] == out.labels[1] != out.labels[2] and out.sizes.tolist() == [2, 1] and out.ari == 1.0
    out = confusion_clusters([[11, 1, 0], [0, 11, 0], [0, 0, 11]], 0.1)
    assert out.sizes.tolist() == [1, 1, 1]


@given(st.integers(2, 4), st.integers(1, 3), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_per_type_apt_its_standard_error_and_kl_equal_counting_position_by_position(V, n, T, seed):
    """Each type's APT, its binomial standard error √(p(1 − p)/n_w) and its mean KL(p_B ‖ p), recomputed by
    looping over the selected positions of that type (several types, random laws and masks)."""
    rng = np.random.default_rng(seed)
    probs, bayes = rng.dirichlet(np.ones(V), (n, T)), rng.dirichlet(np.ones(V), (n, T))
    tokens = rng.integers(0, V, (n, T))
    selected = rng.random((n, T)) < 0.7
    selected[0, 0] = True
    r = token_accuracy(probs, tokens, selected, bayes)
    for w in range(V):
        at = [(i, t) for i in range(n) for t in range(T) if selected[i, t] and tokens[i, t] == w]
        assert r.counts[w] == len(at)
        if not at:
            assert np.isnan(r.apt[w]) and np.isnan(r.apt_se[w]) and np.isnan(r.kl[w])
            continue
        p = np.mean([probs[i, t].argmax() == w for i, t in at])
        assert r.apt[w] == pytest.approx(p, abs=1e-12)
        assert r.apt_se[w] == pytest.approx(np.sqrt(p * (1 - p) / len(at)), abs=1e-12)
        kl = np.mean([sum(b * np.log(b / q) for b, q in zip(bayes[i, t], probs[i, t])) for i, t in at])
        assert r.kl[w] == pytest.approx(kl, rel=1e-9)
    all_kl = [sum(b * np.log(b / q) for b, q in zip(bayes[i, t], probs[i, t]))
              for i in range(n) for t in range(T) if selected[i, t]]
    assert r.epsilon == pytest.approx(np.mean(all_kl), rel=1e-9)


def test_no_kept_row_gives_no_ari_not_an_error():
    """A positive trace and still no row whose diagonal is its maximum (an early block, an untrained model):
    no clustering to score, so ARI and NMI are None (order_parameter raised a ShapeError on such a block)."""
    cl = confusion_clusters(np.array([[1, 2], [3, 0]]), 0.1, [0, 1])
    assert cl.n_kept == 0 and cl.ari is None and cl.nmi is None and len(cl.sizes) == 0


@given(st.lists(st.integers(0, 3), min_size=2, max_size=12), st.permutations(range(4)))
def test_ari_and_nmi_are_one_for_relabelled_partitions(a, perm):
    b = [perm[v] for v in a]
    assert adjusted_rand_index(a, b) == pytest.approx(1.0)
    assert normalized_mutual_information(a, b) == pytest.approx(1.0)


def test_ari_and_nmi_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b = rng.integers(0, 3, 15), rng.integers(0, 4, 15)
        assert adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b))
        assert normalized_mutual_information(a, b) == pytest.approx(metrics.normalized_mutual_info_score(a, b))


def test_frequencies_equal_up_to_rounding_are_ties_in_the_frequency_profile():
    """Every token of the confusion-groups world has exact frequency 1/9; computed in floats the nine differ
    in their last bits, and ranking by those bits once gave a Spearman of 0.26 (sign set by the rounding)."""
    from simlm.experiments.token_accuracy import frequencies

    g = confusion_groups_hmm(0)
    f = frequencies(g.hmm, 32)
    np.testing.assert_allclose(f, 1 / 9, rtol=1e-6)
    x = np.asarray(g.hmm.sample(0, 256, 32))
    y, sel = corrupt(1, x, Corruption(), 9)
    b = bayes_corrupted_probs(g.hmm, y)
    r = token_accuracy(b, x, sel, b)
    assert (r.counts > 0).all() and np.ptp(r.apt) > 0  # APT varies: only the frequencies are tied
    rng = np.random.default_rng(0)
    for tied in (f, np.full(9, 1 / 9), 1 / 9 + 1e-17 * rng.permutation(9), 1e-12 * (1 + 1e-12 * rng.random(9))):
        prof = apt_by_frequency(r, tied)
        assert np.isnan(prof.spearman) and np.isnan(prof.spearman_p) and prof.n_types.tolist() == [0, 0, 0, 0, 9]
        assert prof.mean_apt[-1] == pytest.approx(r.apt.mean())
    # 1e-6 apart is no tie: ranks and quantile bins as given
    prof = apt_by_frequency(r, f * (1 + 1e-6 * np.arange(9)))
    assert prof.spearman == pytest.approx(spearmanr(np.arange(9), r.apt).statistic)
    assert prof.spearman_p == pytest.approx(spearmanr(np.arange(9), r.apt).pvalue)
    assert prof.n_types.tolist() == [2, 2, 1, 2, 2]
    # two tied groups: one rank each
    two = np.where(np.arange(9) < 4, 0.1, 0.12) * (1 + 1e-14 * rng.random(9))
    prof = apt_by_frequency(r, two, n_bins=2)
    assert prof.spearman == pytest.approx(spearmanr(np.arange(9) >= 4, r.apt).statistic)
    assert prof.n_types.tolist() == [4, 5]


# ---- per-block readouts, fine-tuning, substitution ---------------------------------------------------

def _identity_last_block_lm(world, n_layers=2, seed=0):
    from flax import nnx

    from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer

    model = init_transformer(TransformerConfig(n_symbols=int(world.n_symbols), d_model=16, n_layers=n_layers,
                                               n_heads=2, max_len=8, causal=False), seed)
    last = model.blocks[-1]
    for layer in (last.attn.out, last.down):  # both residual branches write zero: the block is the identity
        layer.kernel = nnx.Param(np.zeros_like(layer.kernel[...]))
        layer.bias = nnx.Param(np.zeros_like(layer.bias[...]))
    return TransformerLM(model)


def test_readouts_of_an_identity_last_block_reproduce_the_final_layer():
    w = topic_syntax_hmm(0, 2, 2, 2)
    lm = _identity_last_block_lm(w.hmm)
    x = np.asarray(w.hmm.sample(0, 24, 8))
    y, _ = corrupt(1, x, Corruption(), int(w.hmm.n_symbols))
    f = block_features(lm, y)
    np.testing.assert_allclose(logit_lens(lm, f[-2]), logit_lens(lm, f[-1]), atol=1e-5)
    # the last readout is the model's own output layer: LN(h_L) are its features (checked on clean input)
    np.testing.assert_allclose(block_features(lm, x)[-1], np.asarray(lm.features(x)), atol=1e-5)
    op = order_parameter(lm, w.hmm, x, x, classes=w.token_class, readouts=("lens",))
    lens = op.rows
    assert (lens[-1].mean_apt, lens[-1].accuracy) == (lens[-2].mean_apt, lens[-2].accuracy)
    assert lens[-1].epsilon == pytest.approx(lens[-2].epsilon, abs=1e-5)
    assert op.final.accuracy == lens[-1].accuracy and op.bayes.accuracy >= op.local.accuracy - 0.05


@pytest.mark.filterwarnings("ignore:fit_linear_head")  # 2 probe steps, two symbols never seen: not the point
def test_final_is_the_models_own_readout_whichever_readouts_are_asked():
    """OrderParameter.final is the final model's own accuracy: with readouts=("probe",) it comes from the last
    block's lens, as with the lens readout (reading block 0's — the embedding layer's — there passed every
    test, each of which asked for the lens: a mutation review, 2026-12-07).  The shapes above: nothing new to
    compile but a 2-step probe."""
    w = topic_syntax_hmm(0, 2, 2, 2)
    lm = _identity_last_block_lm(w.hmm)
    x = np.asarray(w.hmm.sample(0, 24, 8))
    lens = order_parameter(lm, w.hmm, x, x, readouts=("lens",))
    probe = order_parameter(lm, w.hmm, x, x, readouts=("probe",), probe_steps=2).final
    assert (probe.accuracy, probe.mean_apt) == (lens.final.accuracy, lens.final.mean_apt)
    assert probe.epsilon == pytest.approx(lens.final.epsilon, rel=1e-6)
    block0 = lens.rows[0]
    assert abs(block0.epsilon - lens.final.epsilon) > 1e-4  # block 0 reads another (4.1e-4 away on this model)


def test_a_rows_mean_apt_is_the_type_average_of_its_readouts_apt_by_counting_and_by_rao_blackwell():
    """For each lens row, from the readout argmax softmax(Φᵀ LN(h_k)) on the test inputs (corrupted with
    seed + 1) at the selected positions: mean_apt = the average over occurring types w of #{pred = x = w} /
    #{x = w}; mean_apt_rb = the average of Σ 1[pred = w] p_B(w | y) / Σ p_B(w | y) (the Rao–Blackwell APT)."""
    w = topic_syntax_hmm(0, 2, 2, 2)
    V = int(w.hmm.n_symbols)
    lm = _identity_last_block_lm(w.hmm)
    x = np.asarray(w.hmm.sample(0, 24, 8))  # the shapes of the test above: nothing new to compile
    op = order_parameter(lm, w.hmm, x, x, readouts=("lens",))
    y, sel = corrupt(1, x, Corruption(), V)
    b = np.asarray(bayes_corrupted_probs(w.hmm, y, Corruption()), np.float64)[sel]
    f = block_features(lm, y)
    truth = x[sel]
    types = np.unique(truth)
    for row in op.rows:
        pred = logit_lens(lm, f[row.block])[sel].argmax(-1)
        apt = [np.mean(pred[truth == t] == t) for t in types]
        rb = [b[pred == t, t].sum() / b[:, t].sum() for t in types]
        assert row.mean_apt == pytest.approx(np.mean(apt), abs=1e-12)
        assert row.mean_apt_rb == pytest.approx(np.mean(rb), abs=1e-6)
        # the errors of its rise from block 0 and of its gap to Bayes pair it with those readouts' hits
        right = (pred == truth).astype(float)
        first = (logit_lens(lm, f[0])[sel].argmax(-1) == truth).astype(float)
        assert row.rise_se == (0.0 if row.block == 0 else mean_apt_difference(x, sel, right, first)[1])
        assert row.bayes_gap_se == mean_apt_difference(x, sel, right, hits(b, truth, TIE_RTOL))[1] > 0
    assert not np.allclose(op.series("lens", "mean_apt"), op.series("lens", "mean_apt_rb"), atol=0.01)


def test_the_kl_is_computed_from_log_probabilities_where_float32_probabilities_underflow():
    """Logits (0, −120): the float32 softmax is (1, 0).  From the log-probabilities the KL to the Bayes law
    (0.99, 0.01) is finite (1.1440 nats, float64); from the probabilities alone it is +∞ — never the clipped
    0.01 · (log 0.01 + 690.8) = 6.85 that a floor at 1e-300 gave."""
    logits = np.array([0.0, -120.0])
    logq = logits - np.logaddexp.reduce(logits)
    b = np.array([[[0.99, 0.01]]])
    exact = float(np.sum(b * (np.log(b) - logq)))
    p32 = np.asarray(np.exp(logq), np.float32)[None, None]
    assert p32[0, 0, 1] == 0.0
    assert token_accuracy(p32, [[0]], [[True]], b).epsilon == np.inf
    r = token_accuracy(p32, [[0]], [[True]], b, log_probs=np.asarray(logq, np.float32)[None, None])
    assert r.epsilon == pytest.approx(exact, rel=1e-6) and r.kl[0] == pytest.approx(exact, rel=1e-6)
    assert token_accuracy(p32, [[0]], [[True]], np.array([[[1.0, 0.0]]])).epsilon == 0.0  # 0 · log 0 = 0


def test_the_lens_epsilon_is_the_kl_from_its_logits_when_they_are_far_apart():
    """With Φ scaled up (logit gaps of hundreds of nats, float32 softmax entries 0) the lens ε of
    :func:`order_parameter` is the mean KL(p_B ‖ softmax(Φᵀ LN(h_k))) computed in float64 from the logits."""
    from types import SimpleNamespace

    w = topic_syntax_hmm(0, 2, 2, 2)
    V = int(w.hmm.n_symbols)
    base = _identity_last_block_lm(w.hmm)
    lm = SimpleNamespace(graphdef=base.graphdef, state=base.state, config=base.config,
                         unembedding=np.asarray(base.unembedding) * 3000.0)
    x = np.asarray(w.hmm.sample(0, 16, 8))
    op = order_parameter(lm, w.hmm, x, x, readouts=("lens",))  # seed 0: the test inputs are corrupted with seed 1
    y, sel = corrupt(1, x, Corruption(), V)
    b = np.asarray(bayes_corrupted_probs(w.hmm, y, Corruption()), np.float64)[sel]
    f = block_features(lm, y).astype(np.float64)
    for row in op.rows:
        logits = f[row.block][sel] @ np.asarray(lm.unembedding, np.float64)
        logq = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        kl = np.where(b > 0, b * (np.log(np.where(b > 0, b, 1.0)) - logq), 0.0).sum(-1)
        assert np.isfinite(row.epsilon) and row.epsilon == pytest.approx(kl.mean(), rel=1e-3)


def test_within_class_substitution_leaves_the_exact_label_posterior_unchanged():
    w = topic_syntax_hmm(0, 2, 2, 3)
    x = np.asarray(w.hmm.sample(0, 32, 10))
    out = substitution_test(w.hmm, lambda t: np.zeros(len(t)), x, w.token_class, topic_of_state(2, 2), 5, seed=1)
    assert out.within.tv_exact < 1e-5 < 1e-2 < out.across.tv_exact and out.within.dconf_model == 0.0
    sub = substitute(x, w.token_class, "across", 1.0, 0)
    assert (w.token_class[sub] != w.token_class[x]).all()


def test_a_substitution_that_changes_nothing_is_nan_not_an_effect_of_zero():
    """Classes of one token leave "within" nothing to substitute; the test then measured nothing (it used to
    report a change of 0, which the verdict read as "exactly true of the Bayes predictor")."""
    w = topic_syntax_hmm(0, 2, 2, 1)
    x = np.asarray(w.hmm.sample(0, 32, 10))
    assert np.array_equal(substitute(x, w.token_class, "within", 1.0, 0), x)
    out = substitution_test(w.hmm, lambda t: np.zeros(len(t)), x, w.token_class, topic_of_state(2, 2), 5, seed=1)
    assert np.isnan(out.within[:3]).all() and out.within.n_impossible == 0 and out.within.substituted == 0
    assert out.across.tv_exact > 1e-2 and out.random.tv_exact > 1e-2
    none = substitution_test(w.hmm, lambda t: np.zeros(len(t)), x, w.token_class, topic_of_state(2, 2), 5,
                             fraction=0.0)
    assert np.isnan(np.asarray(none)[:, :3]).all() and (np.asarray(none)[:, 3:] == 0).all()


def _verdict_input(rungs, within=0.0, se=0.001):
    """The least result dict :func:`verdicts` reads: probe ⟨APT⟩ along blocks per rung, Bayes at 0.19, every
    standard error of a rise or of a gap to Bayes ``se``."""
    rows = lambda apts: [{"readout": "probe", "mean_apt": a, "rise_se": se, "bayes_gap_se": se, "ari": 1.0}
                         for a in apts]
    clusters = [{"ari": 1.0}] * 3
    return {"thresholds": [0.02, 0.05, 0.1],
            "block_zipf": {"n_classes": 8, "masked": {"spearman": .3, "spearman_p": 1e-6, "within_class_errors": .4,
                                                      "n_predicted": 8, "mean_apt": .013, "accuracy": .112,
                                                      "clusters": [{"ari": 0.0}] * 3}},
            "topic": {"rungs": [{"rows": rows(a), "spearman": .9} for a in rungs],
                      "bayes": {"spearman": .9, "spearman_p": 1e-9, "mean_apt": 0.19}, "local": {"mean_apt": 0.12}},
            "groups": {"selected": {"clusters": clusters}},
            "groups_ladder": {"rungs": [{"rows": rows([0, 1])}], "bayes": {"clusters": clusters}},
            "finetune": {"accuracy": [.9, .9], "rise_se": se, "corr_bayes": 0., "corr_model": 0.,
                         "bayes_accuracy": .95},
            "substitution": {m: {"tv_exact": t, "dconf_model": 0.}
                             for m, t in (("within", within), ("across", .2), ("random", .1))}}


def test_verdicts_say_n_a_where_the_run_cannot_decide():
    from simlm.experiments.token_accuracy_plots import verdicts

    order, explanation = "order_parameter_rises_along_blocks", "explanation_strong_match_substitution"
    assert verdicts(_verdict_input([[0.10, 0.12], [0.10, 0.18]]))[order][0] == "(ii)"  # rises, closes toward 0.19
    assert verdicts(_verdict_input([[0.10, 0.18], [0.10, 0.12]]))[order][0] == "(iii)"  # rises, moves away
    assert verdicts(_verdict_input([[0.12, 0.10], [0.13, 0.11]]))[order][0] == "(iii)"  # falls along blocks
    one = verdicts(_verdict_input([[0.10, 0.12]]))[order]  # one rung: rising, but closing is not measured
    assert one[0] == "n/a" and "one rung" in one[1]
    assert verdicts(_verdict_input([[0.10, 0.12]]))[explanation][0] == "(i)"
    assert verdicts(_verdict_input([[0.10, 0.12]], within=float("nan")))[explanation][0] == "n/a"
    assert verdicts(_verdict_input([[0.10, 0.12]], within=0.01))[explanation][0] == "(iii)"


def test_the_cluster_verdict_reads_the_clusters():
    """It read only the block-zipf Bayes numbers, so it said "(i)" with every cluster ARI at 0."""
    from simlm.experiments.token_accuracy_plots import verdicts

    r = _verdict_input([[0.10, 0.12]])
    assert verdicts(r)["small_strong_match_clusters"][0] == "(i)"
    r["groups"]["selected"]["clusters"] = [{"ari": 0.0}] * 3
    assert verdicts(r)["small_strong_match_clusters"][0] == "(iii)"
    r["groups"]["selected"]["clusters"] = [{"ari": None}] * 3
    assert verdicts(r)["small_strong_match_clusters"][0] == "n/a"
    assert verdicts(r)["apt_much_below_accuracy"][0] == "(i)"
    r["block_zipf"]["masked"]["mean_apt"] = 0.1
    assert verdicts(r)["apt_much_below_accuracy"][0] == "(iii)"



def test_every_verdict_is_decided_at_its_stated_threshold():
    """Each verdict's boundary, from both sides (a threshold moved, a strict comparison made loose, a min read
    for a max or a sign dropped changes one of these)."""
    from simlm.experiments.token_accuracy_plots import verdicts

    def verdict(key, edit, rungs=([0.10, 0.12], [0.10, 0.18])):
        r = _verdict_input([list(a) for a in rungs])
        edit(r)
        return verdicts(r)[key][0]

    def masked(**kw):
        return lambda r: r["block_zipf"]["masked"].update(kw)

    # (i) where the Bayes predictor's APT grows with frequency on both worlds: every Spearman ρ > 0
    apt = "apt_grows_with_frequency"
    assert verdict(apt, masked(spearman=0.01)) == "(i)"
    assert verdict(apt, masked(spearman=0.0)) == "(iii)"
    assert verdict(apt, lambda r: r["topic"]["bayes"].update(spearman=-0.01)) == "(iii)"
    # ⟨APT⟩ below half the accuracy, with at most one output per class
    below = "apt_much_below_accuracy"
    assert verdict(below, masked(mean_apt=0.0559, accuracy=0.112)) == "(i)"
    assert verdict(below, masked(mean_apt=0.056, accuracy=0.112)) == "(iii)"
    assert verdict(below, masked(n_predicted=9)) == "(iii)"
    # the best Bayes cluster ARI against the planted groups reaches 0.9
    clusters = "small_strong_match_clusters"

    def aris(*values):
        return lambda r: r["groups"]["selected"].update(clusters=[{"ari": a} for a in values])

    assert verdict(clusters, aris(0.9, 0.2, None)) == "(i)"
    assert verdict(clusters, aris(0.2, 0.95, float("nan"))) == "(i)"  # the best τ, not the first or worst
    assert verdict(clusters, aris(0.899, 0.5, 0.1)) == "(iii)"
    # a readout that ends where it started along the blocks did not rise; a last rung at Bayes closed the gap
    order = "order_parameter_rises_along_blocks"
    assert verdict(order, lambda r: None, rungs=([0.10, 0.12], [0.12, 0.12])) == "(iii)"
    assert verdict(order, lambda r: None, rungs=([0.10, 0.19], [0.10, 0.19])) == "(ii)"
    assert verdict(order, lambda r: None, rungs=([0.10, 0.17], [0.10, 0.17])) == "(iii)"  # as far from Bayes
    assert verdict(order, lambda r: None, rungs=([0.10, 0.21], [0.10, 0.17])) == "(iii)"  # 0.02 either side
    # the probes' clusters are compared with Bayes at the probes' τ: by default the third swept threshold
    sharpen = "clusters_sharpen_along_blocks"

    def ladder(first, last, bayes_by_tau):
        def edit(r):
            rows = lambda aris: [{"readout": "probe", "mean_apt": 0.1, "ari": a} for a in aris]
            r["groups_ladder"] = {"rungs": [{"rows": rows(first)}, {"rows": rows(last)}],
                                  "bayes": {"clusters": [{"ari": a} for a in bayes_by_tau]}}
        return edit

    assert verdict(sharpen, ladder([0.2, 0.5], [0.2, 0.7], [0.5, 0.5, 0.8])) == "(ii)"  # 0.3 → 0.1 from τ = 0.1's
    assert verdict(sharpen, ladder([0.2, 0.5], [0.2, 0.7], [0.3, 0.3, 0.3])) == "(iii)"  # 0.2 → 0.4: away
    assert verdict(sharpen, ladder([0.2, 0.5], [0.2, 0.7], [0.3, 0.3, 0.8])) == "(ii)"  # only τ = 0.1's is read
    with_tau = ladder([0.2, 0.5], [0.2, 0.7], [0.3, 0.8, 0.3])
    assert verdict(sharpen, lambda r: (with_tau(r), r.update(config={"threshold": 0.05}))) == "(ii)"
    # fine-tuning: no rise is (iii), a rise n/a (one LM)
    fine = "finetuning_improves_along_blocks"
    assert verdict(fine, lambda r: r["finetune"].update(accuracy=[0.9, 0.9])) == "(iii)"
    assert verdict(fine, lambda r: r["finetune"].update(accuracy=[0.9, 0.91])) == "n/a"
    # confidence independent of the input's APT: |corr| < 0.2 on the Bayes predictor, of either sign
    conf = "confidence_independent_of_input_apt"
    for corr, want in ((0.19, "(i)"), (-0.19, "(i)"), (0.2, "(iii)"), (-0.5, "(iii)"), (0.5, "(iii)")):
        assert verdict(conf, lambda r: r["finetune"].update(corr_bayes=corr)) == want, corr
    # substitution: exact P(y|x) moves < 1e-3 within a class and > 1e-3 across
    sub = "explanation_strong_match_substitution"

    def tv(within, across):
        return lambda r: (r["substitution"]["within"].update(tv_exact=within),
                          r["substitution"]["across"].update(tv_exact=across))

    assert verdict(sub, tv(0.00099, 0.0011)) == "(i)"
    assert verdict(sub, tv(0.001, 0.2)) == "(iii)"
    assert verdict(sub, tv(0.0, 0.001)) == "(iii)"


def test_rises_gaps_and_correlations_are_judged_against_their_noise():
    """Each of them counted at any size: a rise of ⟨APT⟩ of 1e-4 along the blocks was "rises", a gap to Bayes
    narrower by 1e-4 "closes", any ρ > 0 "(i)".  Now a rise must pass GAP_Z standard errors of the paired
    difference, a narrowing GAP_Z × the rungs' errors in quadrature (or the last block sit within GAP_Z of its
    own of Bayes), and ρ its p-value; an error that is not recorded (rows of an older run) is n/a."""
    from simlm.experiments.token_accuracy_plots import SPEARMAN_P, verdicts
    from simlm.theory.block_readout import GAP_Z

    assert GAP_Z == 2.0 and SPEARMAN_P == pytest.approx(0.0455, abs=1e-4)
    order, fine = "order_parameter_rises_along_blocks", "finetuning_improves_along_blocks"
    apt = "apt_grows_with_frequency"

    def verdict(key, rungs, se, edit=lambda r: None):
        r = _verdict_input([list(a) for a in rungs], se=se)
        edit(r)
        return verdicts(r)[key]

    # the last rung rises 0.02 along its blocks: above 2 × 0.0099, within 2 × 0.0101
    assert verdict(order, ([0.10, 0.15], [0.10, 0.12]), 0.0099)[0] == "(iii)"  # rises, but away from Bayes
    assert verdict(order, ([0.15, 0.16], [0.17, 0.19]), 0.0099)[0] == "(ii)"  # rises, ends at Bayes
    v = verdict(order, ([0.15, 0.16], [0.17, 0.19]), 0.0101)
    assert v[0] == "(iii)" and "within 2 standard errors" in v[1]
    # the gap to Bayes narrows 0.05 → 0.03 (by 0.02): beyond 2·√2 × 0.007, within 2·√2 × 0.0072; a last block
    # 0.03 from Bayes is at Bayes within 2 × 0.0151 and not within 2 × 0.0149
    assert verdict(order, ([0.10, 0.14], [0.10, 0.16]), 0.007)[0] == "(ii)"
    v = verdict(order, ([0.10, 0.14], [0.10, 0.16]), 0.0072)
    assert v[0] == "(iii)" and "narrows by less than" in v[1]
    assert verdict(order, ([0.10, 0.16], [0.10, 0.16]), 0.0151)[0] == "(ii)"
    assert verdict(order, ([0.10, 0.16], [0.10, 0.16]), 0.0149)[0] == "(iii)"

    def first_rung_gap_se(value):  # "at Bayes" reads the last rung's own error, not the first's
        return lambda r: [row.update(bayes_gap_se=value) for row in r["topic"]["rungs"][0]["rows"]]
    assert verdict(order, ([0.10, 0.16], [0.10, 0.16]), 0.0149, first_rung_gap_se(0.02))[0] == "(iii)"
    for key, value in (("rise_se", float("nan")), ("bayes_gap_se", None)):  # undefined, or an older run's rows
        def drop(r):
            for row in r["topic"]["rungs"][-1]["rows"]:
                row[key] = value
        assert verdict(order, ([0.10, 0.16], [0.10, 0.18]), 0.001, drop)[0] == "n/a"
    # fine-tuning: a rise beyond its noise is n/a (one LM), a rise within it is no rise
    accuracy = lambda *a: lambda r: r["finetune"].update(accuracy=list(a))
    assert verdict(fine, ([0.1, 0.2],), 0.0049, accuracy(0.9, 0.91))[0] == "n/a"
    assert verdict(fine, ([0.1, 0.2],), 0.0051, accuracy(0.9, 0.91))[0] == "(iii)"
    # a positive ρ counts where its p-value is below the level of 2 standard errors
    p = lambda value: lambda r: r["block_zipf"]["masked"].update(spearman_p=value)
    assert verdict(apt, ([0.1, 0.2],), 0.001, p(0.045))[0] == "(i)"
    assert verdict(apt, ([0.1, 0.2],), 0.001, p(0.046))[0] == "(iii)"
    assert verdict(apt, ([0.1, 0.2],), 0.001, p(float("nan")))[0] == "n/a"
    assert verdict(apt, ([0.1, 0.2],), 0.001, lambda r: r["topic"]["bayes"].pop("spearman_p"))[0] == "n/a"
    # no rise needs no error: a fall, or a ρ ≤ 0, is (iii) with its error or p-value missing
    nan = float("nan")
    assert verdict(order, ([0.10, 0.16], [0.12, 0.10]), nan)[0] == "(iii)"
    assert verdict(fine, ([0.1, 0.2],), nan, accuracy(0.95, 0.9))[0] == "(iii)"
    assert verdict(apt, ([0.1, 0.2],), 0.001, lambda r: r["block_zipf"]["masked"].update(spearman=-0.1,
                                                                                       spearman_p=nan))[0] == "(iii)"

    def lens_only(r):  # no probe row to read: n/a, not an IndexError
        for g in r["topic"]["rungs"]:
            for row in g["rows"]:
                row["readout"] = "lens"
    assert verdict(order, ([0.10, 0.16], [0.10, 0.18]), 0.001, lens_only)[0] == "n/a"


def test_a_within_class_substitution_that_cannot_move_the_law_is_said_to_be_true_by_construction():
    from simlm.experiments.token_accuracy_plots import verdicts

    key = "explanation_strong_match_substitution"
    exact = verdicts(_verdict_input([[0.10, 0.12]], within=1e-17))[key]
    assert exact[0] == "(i)" and "true by construction" in exact[1]
    measured = verdicts(_verdict_input([[0.10, 0.12]], within=1e-6))[key]
    assert measured[0] == "(i)" and "construction" not in measured[1]


# ---- the sweep check and bad input -----------------------------------------------------------------

def test_the_sweep_check_on_the_oracle_closes_the_whole_gap():
    hmm = HMM.random(0, 4, 6)
    x = np.asarray(hmm.sample(0, 16, 10))
    cell = Cell(hmm, {"kind": "hmm"}, WorldLM(hmm), {"source": "oracle", "laws": ["masked"]}, x, {"max_sequences": 16}, 0)
    rows = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}
    assert rows["accuracy"]["measured"] == rows["bayes_accuracy"]["measured"]
    e = rows["expected_accuracy"]
    assert e["holds"] and e["trivial"] and e["slack_used"] == pytest.approx(1.0, abs=1e-6)
    assert rows["kl_epsilon"]["measured"] == pytest.approx(0.0, abs=1e-5)


class _HalfBayesLM:
    """A masked LM that is not the oracle: ½ the Bayes law + ½ a fixed random law per position (seeded)."""

    def __init__(self, hmm, length: int, seed: int = 0):
        self.hmm = hmm
        self.noise = np.random.default_rng(seed).dirichlet(np.ones(hmm.n_symbols), size=length)

    def masked_token_logprobs(self, x):
        return np.log(0.5 * np.asarray(self.hmm.masked_token_probs(x), np.float64) + 0.5 * self.noise[: x.shape[1]])


def _spearman(a, b) -> float:
    """Pearson's correlation of the average ranks (ties share their mean rank)."""
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def test_the_sweep_check_reads_the_first_max_sequences_against_the_most_frequent_token_baseline():
    """A non-oracle LM on 16 sequences with ``max_sequences`` 8, by brute force on the first 8 (as the module
    docstring defines the rows): ``accuracy`` = share of positions where the LM's argmax is the token;
    ``expected_accuracy`` = mean p*(pred | x_−t) under the ceiling mean max_v p*(v | x_−t), its ``slack_used``
    measured from the baseline of always predicting the most frequent token of those sequences; the
    ``bayes_spearman`` column is Spearman's ρ of the Bayes predictor's per-type APT with frequency (the LM's
    is the row's value)."""
    hmm = HMM.random(0, 4, 6)
    x = np.asarray(hmm.sample(0, 16, 10))
    lm = _HalfBayesLM(hmm, 10)
    cell = Cell(hmm, {"kind": "hmm"}, lm, {"source": "analytic", "laws": ["masked"]}, x, {"max_sequences": 8}, 0)
    rows = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}
    kept = x[:8]
    bayes = np.asarray(hmm.masked_token_probs(kept), np.float64)
    pred = lm.masked_token_logprobs(kept).argmax(-1)
    assert rows["accuracy"]["measured"] == pytest.approx(np.mean(pred == kept), rel=1e-12)
    counts = np.bincount(kept.ravel(), minlength=6)
    top = int(np.argmax(counts))
    assert np.sum(counts == counts[top]) == 1  # one most frequent token
    expected = np.mean([bayes[i, t, pred[i, t]] for i in range(8) for t in range(10)])
    ceiling, baseline = bayes.max(-1).mean(), bayes[..., top].mean()
    e = rows["expected_accuracy"]
    # the check reads the Bayes law in float64, this reference the world's float32 one: to its rounding
    assert e["measured"] == pytest.approx(expected, rel=1e-6) and e["bound"] == pytest.approx(ceiling, rel=1e-6)
    assert e["slack_used"] == pytest.approx((expected - baseline) / (ceiling - baseline), rel=1e-5)
    seen = np.flatnonzero(counts)
    bayes_pred = bayes.argmax(-1)
    apt = {v: [np.mean(bayes_pred[kept == v] == v), np.mean(pred[kept == v] == v)] for v in seen}
    rho_bayes = _spearman(counts[seen], [apt[v][0] for v in seen])
    rho_lm = _spearman(counts[seen], [apt[v][1] for v in seen])
    s = rows["apt_frequency_spearman"]
    assert s["measured"] == pytest.approx(rho_lm, abs=1e-12)
    assert s["bayes_spearman"] == pytest.approx(rho_bayes, abs=1e-12)
    assert abs(rho_lm - rho_bayes) > 0.05  # the case that tells the two apart
    # the p-values over every ordering of the APTs (≤ 8 types): twice the smaller one-sided share, at most 1
    for key, rho, side in (("p_value", rho_lm, 1), ("bayes_p_value", rho_bayes, 0)):
        apts = [apt[v][side] for v in seen]
        null = np.array([_spearman(counts[seen], perm) for perm in itertools.permutations(apts)])
        want = min(1.0, 2 * min(np.mean(null >= rho - 1e-12), np.mean(null <= rho + 1e-12)))
        assert len(seen) <= 8 and s[key] == pytest.approx(want, abs=1e-12)


BAD = {"None": None, "str": "bogus", "bool": True, "neg": -1, "zero": 0, "frac": 1.5, "nan": float("nan"),
       "inf": float("inf"), "huge": 10**12, "complex": 1 + 2j, "empty": [], "ragged": [[1, 2], [3]],
       "matrix": np.ones((2, 2, 2)), "object": object()}


def test_hostile_arguments_raise_typed_errors_or_give_finite_answers():
    from simlm.errors import SimlmError

    h = HMM.random(0, 3, 4)
    x = np.asarray(h.sample(0, 4, 5))
    y, sel = corrupt(0, x, Corruption(), 4)
    b = bayes_corrupted_probs(h, y)
    r = token_accuracy(b, x, sel, b)
    surface = [(block_zipf_hmm, (0, 3, 4), {"exponent": 1.0, "leak": 0.1}),
               (topic_syntax_hmm, (0, 2, 2, 2), {"switch": 0.1, "topic_rate": 0.3}),
               (confusion_groups_hmm, (0, 2, 2), {"noise": 0.1, "sharpness": 0.5}),
               (corrupt, (0, x, Corruption(), 4), {}), (bayes_corrupted_probs, (h, y, Corruption()), {}),
               (local_bayes_probs, (h, y, Corruption()), {}), (token_accuracy, (b, x, sel, b), {}),
               (apt_by_frequency, (r, np.ones(4) / 4, 2), {}),
               (confusion_clusters, (r.confusion, 0.1, [0, 0, 1, 1]), {}),
               (within_class_errors, (r.confusion, [0, 0, 1, 1]), {}), (adjusted_rand_index, ([0, 1, 1], [0, 1, 0]), {}),
               (substitute, (x, [0, 0, 1, 1], "within", 0.5, 0), {}),
               (label_posterior, (h, x, [0, 1, 1], 2), {}), (input_apt, (r.apt, x), {}),
               (state_marginals, (h, 5), {}), (channels, (Corruption(), 4), {})]
    failures = []
    for fn, args, kwargs in surface:
        slots = [(i, None) for i in range(len(args))] + [(None, k) for k in kwargs]
        for (i, k), (name, bad) in itertools.product(slots, BAD.items()):
            a, kw = list(args), dict(kwargs)
            if k is None:
                a[i] = bad
            else:
                kw[k] = bad
            try:
                out = fn(*a, **kw)
            except SimlmError:
                continue
            except Exception as err:  # noqa: BLE001 — the failure being looked for
                failures.append(f"{fn.__name__}[{i if k is None else k}]={name}: {type(err).__name__}")
                continue
            if isinstance(out, (float, np.ndarray)) and np.isnan(np.asarray(out, float)).any():
                failures.append(f"{fn.__name__}[{i if k is None else k}]={name}: NaN")
    assert not failures, failures


def test_laws_that_are_not_laws_are_refused_not_read_as_a_kl():
    """Log-probabilities passed as ``bayes`` read as ε = 0 (a "perfect" LM), log-probabilities as ``probs``
    as ε = NaN, an unnormalised ``bayes`` as ε = 8.6."""
    from simlm.errors import DistributionError

    p, b = np.array([[[0.7, 0.3], [0.2, 0.8]]]), np.array([[[0.9, 0.1], [0.4, 0.6]]])
    x, s = [[0, 1]], [[True, True]]
    assert token_accuracy(p, x, s, b).epsilon == pytest.approx(0.5 * (0.9 * np.log(0.9 / 0.7) + 0.1 * np.log(0.1 / 0.3)
                                                                      + 0.4 * np.log(0.4 / 0.2) + 0.6 * np.log(0.6 / 0.8)))
    for probs, bayes, name in ((p, np.log(b), "bayes"), (np.log(p), b, "probs"), (p, 5 * b, "bayes")):
        with pytest.raises(DistributionError, match=f"^{name}"):
            token_accuracy(probs, x, s, bayes)
    # scores are fine where only their argmax is read (without bayes); with bayes, probs is a law and
    # log_probs its logs (tests/test_token_accuracy_review.py)
    assert token_accuracy(np.log(p), x, s).accuracy == 1.0
    assert token_accuracy(p, x, s, b, log_probs=np.log(p)).epsilon == pytest.approx(token_accuracy(p, x, s, b).epsilon)


def test_the_local_law_of_an_impossible_input_is_an_error_as_the_bayes_law_is():
    h = HMM(np.array([1., 0.]), np.array([[0., 1.], [1., 0.]]), np.array([[1., 0.], [0., 1.]]))
    y, c = np.array([[1, 1]]), (0.5, 1., 0., 0.)  # b = 0: no random symbol can explain x_0 = 1
    for fn in (bayes_corrupted_probs, local_bayes_probs):
        with pytest.raises(TokenError, match="^inputs: sequence 0 is impossible"):
            fn(h, y, c)
    np.testing.assert_allclose(local_bayes_probs(h, np.array([[0, 2]]), c), [[[1, 0], [0, 1]]])


def test_the_bayes_summary_of_a_world_with_few_tokens_bins_what_occurs():
    """``apt_by_frequency`` defaulted to 5 bins and refused a world with fewer token types (any V ≤ 4)."""
    from simlm.experiments import token_accuracy as ta

    for world in (block_zipf_hmm(0, 2, 2), confusion_groups_hmm(0, 2, 2)):
        out = ta.bayes_summary(world, 16, 8, Corruption(), 0)
        assert 1 <= len(out["selected"]["apt_by_frequency"]) <= world.hmm.n_symbols


@pytest.mark.parametrize("call, error", [
    (lambda h: label_posterior(h, [[0, 1]], [0, 1], 1.5), ConfigError),
    (lambda h: label_posterior(h, [[0, 1]], [0, 1.7], 1), ShapeError),
    (lambda h: label_posterior(h, [[0, 1]], ["a", "b"], 1), ShapeError),
    (lambda h: label_posterior(h, [[0, 1]], [0, 1], 2), ConfigError),
    (lambda h: input_apt([0.5, np.nan, 0.1], [[0, 3]]), TokenError),
    (lambda h: state_marginals(h, 0), ConfigError),
    (lambda h: state_marginals(h, 1.5), ConfigError),
    (lambda h: channels(Corruption(), 0), ConfigError),
    (lambda h: channels((1.5, 0.8, 0.1, 0.1), 3), ConfigError),
    (lambda h: check_corruption((0.15, 0.8, 0.1)), ConfigError),
    (lambda h: check_corruption((0.0, 0.8, 0.1, 0.1)), ConfigError),
    (lambda h: check_corruption((0.15, 0.8, 0.3, 0.1)), ConfigError),
    (lambda h: bayes_corrupted_probs(h, [[0, 7]]), TokenError),
    (lambda h: bayes_corrupted_probs(h, [0, 1]), TokenError),
    (lambda h: confusion_clusters(np.ones((2, 3)), 0.1), ShapeError),
    (lambda h: confusion_clusters(np.eye(3), 0.0), ConfigError),
    (lambda h: token_accuracy(np.ones((1, 2, 3)) / 3, [[0, 1]], [[False, False]]), ShapeError),
    (lambda h: block_zipf_hmm(0, exponent=-1.0), ConfigError),
    (lambda h: topic_syntax_hmm(0, n_topics=1), ConfigError),
])
def test_bad_input_raises_a_typed_error_naming_the_argument(call, error):
    with pytest.raises(error):
        call(HMM.random(0, 2, 3))


@pytest.mark.parametrize("call, name", [(lambda: zipf_weights(0, 1.0), "size"),
                                        (lambda: zipf_weights(3, -1.0), "exponent"),
                                        (lambda: class_emission([[1.5, -0.5]], 2, 1.0), "class_probs"),
                                        (lambda: class_emission([0.5, 0.5], 2, 1.0), "class_probs"),
                                        (lambda: class_emission([[0.5, 0.5]], 0, 1.0), "block_size")])
def test_the_emission_helpers_refuse_what_is_no_law_naming_it(call, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        call()


@pytest.mark.parametrize("kwargs, name", [({"n_syntax": 0}, "n_syntax"), ({"n_syntax": 5000}, "n_syntax"),
                                          ({"n_topics": 1}, "n_topics"), ({"block_size": 0}, "block_size")])
def test_topic_syntax_errors_name_its_own_arguments(kwargs, name):
    with pytest.raises(ConfigError, match=f"^{name}: "):
        topic_syntax_hmm(0, **kwargs)


# ---- the experiment as the sweep of its shipped config (planted-hmm worlds) ---------------------------

def test_the_experiment_is_the_sweep_of_its_shipped_config():
    """The shipped TOML is the default Config's sweep, and the Config comes back from it; an edited layout
    is refused by the experiment (``simlm sweep`` runs it)."""
    from simlm.experiments import token_accuracy as ta
    from simlm.experiments.sweep import load_config, parse_config

    assert load_config(ta.shipped_config()) == parse_config(ta.sweep_config(ta.Config()))
    assert ta.config_of(ta.load_shipped()) == ta.Config()
    assert ta.config_of(ta.sweep_config(ta.QUICK)) == ta.QUICK
    edited = ta.load_shipped()
    edited["worlds"][0]["options"]["block_size"] = 10
    with pytest.raises(ConfigError, match="not the experiment's layout"):
        ta.config_of(edited)


_leaves = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=3)
                       | st.floats(allow_infinity=False, width=32),
                       lambda inner: st.lists(inner, min_size=1, max_size=3)
                       | st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, min_size=1, max_size=3),
                       max_leaves=12)


@given(st.dictionaries(st.text("xyz", min_size=1, max_size=2), _leaves, min_size=1, max_size=3))
def test_a_nested_result_comes_back_from_its_stored_tidy_rows(value):
    """Leaves as rows, through strict JSON (as the cell store keeps them), and back: equal leaf by leaf (NaN
    as NaN, None as None, ints as ints)."""
    import json

    from simlm.experiments.nested import leaf_rows, nested_of
    from simlm.jsonio import jsonable

    stored = json.loads(json.dumps(jsonable(leaf_rows(value, section="s")), allow_nan=False))
    back = nested_of(stored)
    same = lambda a, b: (type(a) is type(b) and (a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b)))
                         if not isinstance(a, (dict, list)) else
                         (a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)) if isinstance(a, dict) else
                         (len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))))
    assert same(back, value)


def test_the_bayes_parts_stored_rows_are_the_bayes_summary(tmp_path):
    """A planted world in a sweep: the experiment check's stored rows give back exactly the Bayes summary
    computed directly, the rows are tidy, and a rerun computes nothing."""
    from simlm.experiments import token_accuracy as ta
    from simlm.experiments.sweep import parse_config, read_results, run_sweep
    from simlm.jsonio import jsonable

    config = ta.Config(zipf_sequences=16, zipf_length=8)
    spec = {"name": "bz", "kind": "planted-hmm", "seed": 3,
            "options": {"family": "block-zipf", "n_states": 3, "block_size": 4}}
    raw = {"worlds": [spec], "data": {"n_sequences": 2, "length": 2}, "checks": {ta.CHECK: ta.check_options(config)}}
    first = run_sweep(parse_config(raw), tmp_path, progress=False)
    assert first["new_cells"] == 1 and not first["errors"]
    got = ta.result_of(read_results(tmp_path), config)["bz:bayes"]
    direct = block_zipf_hmm(3, 3, 4)
    want = {"n_classes": 3, **ta.bayes_summary(direct, 16, 8, Corruption(), config.seed)}
    assert jsonable(got) == jsonable(want)
    assert all(r["world"] == "bz" and r["bound"] is None for r in first["rows"])
    assert run_sweep(parse_config(raw), tmp_path, progress=False)["new_cells"] == 0


@pytest.mark.parametrize("options, where", [
    ({"family": "zipf"}, "worlds.w.options.family"),
    ({}, "worlds.w.options.family"),
    ({"family": "block-zipf", "block_size": 0}, "worlds.w.options.block_size"),
    ({"family": "topic-syntax", "switch": 1.5}, "worlds.w.options.switch"),
    ({"family": "confusion-groups", "n_blocks": 2}, "worlds.w.options"),
])
def test_a_bad_planted_world_option_is_a_named_config_error_with_status_2(tmp_path, capsys, options, where):
    import json

    from simlm.cli import main
    from simlm.experiments.sweep import parse_config

    raw = {"worlds": [{"name": "w", "kind": "planted-hmm", "options": options}], "checks": {"simlm/epsilon": {}}}
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        parse_config(raw)
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    assert main(["sweep", str(tmp_path / "bad.json"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and where in err[0] and not (tmp_path / "out").exists()


def test_bad_options_of_the_experiment_check_name_the_option():
    from simlm.experiments import token_accuracy as ta
    from simlm.experiments.sweep import parse_config

    raw = ta.sweep_config(ta.QUICK)
    raw["checks"][ta.CHECK]["max_steps"] = 0
    with pytest.raises(ConfigError, match=r"checks\.tzach/token-accuracy-experiment\.max_steps"):
        parse_config(raw)


def test_simlm_worlds_lists_every_planted_family(capsys):
    from simlm.cli import main
    from simlm.experiments.sweep import PLANTED_FAMILIES

    assert main(["worlds"]) == 0
    text = capsys.readouterr().out
    assert all(f"family = {f!r}" in text for f in PLANTED_FAMILIES) and "planted-hmm" in text


# ---- the planted worlds' parameters, against their docstrings ------------------------------------------

@pytest.mark.parametrize("leak", [0.0, 0.2, 1.0])
def test_a_leaky_state_emits_from_a_uniformly_chosen_block_with_probability_leak(leak):
    """block_zipf_hmm: state k emits from its own block, but with probability ``leak`` from a block chosen
    uniformly among all K, so P(block c | k) = (1 − leak)·1[c = k] + leak/K."""
    K, b = 3, 4
    _, _, B = params(block_zipf_hmm(0, K, b, leak=leak).hmm)
    mass = B.reshape(K, K, b).sum(2)
    want = (1 - leak) * np.eye(K) + leak / K
    np.testing.assert_allclose(mass, want, atol=1e-6)


def test_inside_every_block_rank_r_has_weight_proportional_to_r_to_the_minus_exponent():
    """z_c(w) ∝ rank(w)^(−s): rank 1 (the block's first token) is the likeliest, rank r has r^(−s) of its
    weight — in a state's own block and in the blocks it leaks to."""
    K, b, s = 3, 5, 1.3
    _, _, B = params(block_zipf_hmm(0, K, b, exponent=s, leak=0.3).hmm)
    ranks = np.arange(1, b + 1, dtype=np.float64)
    for k in range(K):
        for c in range(K):
            block = B[k, c * b:(c + 1) * b]
            np.testing.assert_allclose(block / block[0], ranks ** -s, rtol=1e-5)


def test_each_group_moves_its_states_to_the_next_group_by_a_seeded_random_permutation():
    """From state (g, i) the likeliest next state is σ_g(i) in group g + 1: σ_g is a permutation of the
    group, a random one from ``seed`` (one per group): the same seed gives the same σ, seeds give different
    ones, and the groups of one world do not all share one σ."""
    G, r = 3, 4

    def sigmas(seed):
        _, A, _ = params(confusion_groups_hmm(seed, G, r, sharpness=0.6).hmm)
        out = []
        for g in range(G):
            nxt = (g + 1) % G
            sigma = A[g * r:(g + 1) * r, nxt * r:(nxt + 1) * r].argmax(1)
            assert sorted(sigma) == list(range(r))
            out.append(tuple(int(i) for i in sigma))
        return tuple(out)

    drawn = [sigmas(seed) for seed in range(8)]
    assert sigmas(0) == drawn[0]
    assert len(set(drawn)) > 1
    assert any(len(set(world)) > 1 for world in drawn)
    assert any(s != tuple(range(r)) for world in drawn for s in world)


@pytest.mark.parametrize("noise, sharpness", [(0.15, 0.7), (0.3, 0.0), (0.0, 1.0)])
def test_every_state_moves_to_the_next_group_and_emits_its_own_token_or_noise_inside_its_group(noise, sharpness):
    """State k = (g, i): all its transition mass is on group g + 1 (mod n_groups), ``sharpness`` on one state
    plus (1 − sharpness)/r on each; it emits token k with probability 1 − noise, every other token of its
    group with noise/(r − 1), and nothing outside its group."""
    G, r = 3, 3
    w = confusion_groups_hmm(1, G, r, noise=noise, sharpness=sharpness)
    _, A, B = params(w.hmm)
    group = np.arange(G * r) // r
    np.testing.assert_array_equal(w.token_class, group)
    for k in range(G * r):
        nxt = group == (group[k] + 1) % G
        assert A[k, ~nxt].sum() == 0.0
        want = np.full(r, (1 - sharpness) / r)
        want[-1] += sharpness
        np.testing.assert_allclose(np.sort(A[k, nxt]), want, atol=1e-6)
        emit = np.where(group == group[k], noise / (r - 1), 0.0)
        emit[k] = 1 - noise
        np.testing.assert_allclose(B[k], emit, atol=1e-6)


@pytest.mark.parametrize("noise", [1.0, 1.5, -0.1])
def test_confusion_groups_refuse_a_noise_that_leaves_no_own_token_naming_it(noise):
    """A state emits its own token with probability 1 − noise > 0: noise must lie in [0, 1)."""
    with pytest.raises(ConfigError, match="^noise: "):
        confusion_groups_hmm(0, 2, 3, noise=noise)


@pytest.mark.parametrize("noise", [0.0, 0.99])
def test_confusion_groups_take_a_noise_anywhere_in_zero_to_one(noise):
    _, _, B = params(confusion_groups_hmm(0, 2, 3, noise=noise).hmm)
    np.testing.assert_allclose(np.diag(B), 1 - noise, atol=1e-6)


def test_the_syntax_chain_is_drawn_from_a_dirichlet_of_the_given_concentration():
    """The syntax rows ~ Dirichlet(α·1_S): near uniform for α = 1e3, near one-hot for α = 1e-3, and over
    seeds E Σ_j p_j² = (α + 1)/(Sα + 1) (the Dirichlet's second moment)."""
    Z, S = 2, 3

    def syntax(seed, alpha):  # switch 0: the transition is I_Z ⊗ syntax
        _, A, _ = params(topic_syntax_hmm(seed, Z, S, 1, switch=0.0, concentration=alpha).hmm)
        np.testing.assert_allclose(A[S:, S:], A[:S, :S])
        return A[:S, :S]

    for seed in range(5):
        assert np.abs(syntax(seed, 1e3) - 1 / S).max() < 0.06
        assert syntax(seed, 1e-3).max(1).min() > 0.99
    for alpha in (0.5, 4.0):
        squares = np.concatenate([(syntax(seed, alpha) ** 2).sum(1) for seed in range(200)])
        se = squares.std() / np.sqrt(squares.size)
        assert squares.mean() == pytest.approx((alpha + 1) / (S * alpha + 1), abs=5 * se)


# ---- exact ties; a Bayes law of other inputs --------------------------------------------------------

def test_an_exact_tie_is_split_evenly_so_a_flat_lm_does_not_depend_on_the_token_numbering():
    """A flat law predicts each token with chance 1/V: its accuracy is 1/V whatever the tokens are and however
    they are numbered (ties went to token 0: the accuracy was token 0's frequency, 0.391 or 0.266 by the
    numbering).  A two-way tie holding the true token counts ½, its confusion row ½ on each, both predicted."""
    x = np.array([[0, 0, 1, 2], [0, 2, 2, 0]])
    every, flat = np.ones(x.shape, bool), np.full((2, 4, 3), 1 / 3)
    bayes = np.random.default_rng(0).dirichlet(np.ones(3), size=(2, 4))
    for perm in itertools.permutations(range(3)):
        r = token_accuracy(flat, np.array(perm)[x], every, bayes[..., perm])
        assert r.accuracy == pytest.approx(1 / 3, abs=1e-15) and r.n_predicted == 3
        np.testing.assert_allclose(r.confusion, np.bincount(np.array(perm)[x].ravel(), minlength=3)[:, None] / 3
                                   * np.ones(3))
        np.testing.assert_allclose(np.nansum(r.apt_rb * bayes[..., perm].sum((0, 1))), 8 / 3, rtol=1e-12)
    two = np.array([[[0.4, 0.4, 0.2]]])
    r = token_accuracy(two, [[1]], [[True]], np.array([[[0.3, 0.5, 0.2]]]))
    assert r.accuracy == 0.5 and r.n_predicted == 2 and r.confusion[1].tolist() == [0.5, 0.5, 0.0]
    assert r.apt_rb[0] == pytest.approx(0.3 / 0.3 * 0.5) and r.apt_rb[1] == pytest.approx(0.5 * 0.5 / 0.5)


def test_the_sweep_checks_expected_accuracy_of_a_flat_lm_is_one_over_v():
    hmm = HMM([.5, .5], [[.9, .1], [.2, .8]], [[.6, .3, .1], [.1, .2, .7]])
    x = np.asarray(hmm.sample(0, 8, 6))

    class Flat:
        def masked_token_logprobs(self, x):
            return np.full(x.shape + (3,), -np.log(3.0))

    cell = Cell(hmm, {"kind": "hmm"}, Flat(), {"source": "analytic", "laws": ["masked"]}, x, {"max_sequences": 8}, 0)
    rows = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}
    assert rows["expected_accuracy"]["measured"] == pytest.approx(1 / 3, rel=1e-6)
    assert rows["accuracy"]["measured"] == pytest.approx(1 / 3, abs=1e-15) and rows["n_predicted"]["measured"] == 3


def test_a_bayes_law_that_rules_out_the_true_token_is_refused():
    """The Bayes law of other inputs read as a Rao–Blackwell APT of 0 and a KL beside an accuracy of 1."""
    from simlm.errors import DistributionError

    with pytest.raises(DistributionError, match=r"^bayes: at sequence 0, position 0, gives the true token 0"):
        token_accuracy(np.array([[[0.0, 1.0], [0.0, 1.0]]]), [[0, 1]], [[True, True]], np.array([[[0, 1], [1, 0]]]))


def test_the_sweep_check_splits_the_exact_ties_of_the_bayes_law():
    """A confusion-groups world's masked law P(x_t | x_−t) has exact ties (0.5, 0.5), which float32 read as
    0.50000006 and 0.5: the check credited the Bayes predictor with one of the tied tokens (accuracy 0.6625
    here, ⟨APT⟩ 0.6582) where the even split gives 0.65625 (0.6517).  The Bayes law is float64 now and its
    ties within TIE_RTOL are ties; every number by enumeration over the hidden paths."""
    from bruteforce import masked_law

    w = confusion_groups_hmm(0, n_groups=2, group_size=2).hmm
    x = np.asarray(w.sample(0, 32, 5))
    pi, A, B = params(w)
    law = np.array([[masked_law(pi, A, B, s, t) for t in range(5)] for s in x])
    tie = np.abs(law - law.max(-1, keepdims=True)) <= 1e-12
    assert (tie.sum(-1) > 1).sum() == 4
    hit = np.take_along_axis(tie, x[..., None], -1)[..., 0] / tie.sum(-1)
    cell = Cell(w, {"kind": "hmm"}, WorldLM(w), {"source": "oracle", "laws": ["masked"]}, x, {"max_sequences": 32}, 0)
    rows = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}
    assert rows["bayes_accuracy"]["measured"] == pytest.approx(hit.mean(), abs=1e-12)
    assert rows["bayes_mean_apt"]["measured"] == pytest.approx(np.mean([hit[x == v].mean() for v in np.unique(x)]),
                                                               abs=1e-12)
    # the world's float32 rows sum to 1 within 3e-8, which the filter's P(h_t | x_−t) B and the enumeration's
    # ratio of joint probabilities read differently: to that rounding
    assert rows["expected_accuracy"]["bound"] == pytest.approx(law.max(-1).mean(), abs=1e-7)


def test_the_sweep_checks_baseline_splits_a_tie_for_the_most_frequent_token():
    """Tokens 0 and 2 are equally frequent: the baseline "always the most frequent token" took the lower id,
    so ``slack_used`` moved with how the tokens were numbered; with the tie split, −0.681 in both."""
    pi, A, B = np.array([.5, .5]), np.array([[.8, .2], [.3, .7]]), np.array([[.5, .3, .2], [.1, .3, .6]])
    x = np.array([[0, 0, 2, 2, 1], [1, 0, 2, 0, 2], [2, 2, 1, 0, 0]])  # counts 6, 3, 6
    noise = np.random.default_rng(1).dirichlet(np.ones(3), size=(3, 5))
    slack = []
    for perm in ([0, 1, 2], [2, 1, 0]):  # the same world, LM and data with the tokens renumbered
        inv = np.argsort(perm)
        w = HMM(pi, A, B[:, inv])

        class LM:
            def masked_token_logprobs(self, x, w=w, inv=inv):
                return np.log(0.3 * np.asarray(w.masked_token_probs(x), np.float64) + 0.7 * noise[..., inv])

        xp = np.asarray(perm)[x]
        cell = Cell(w, {"kind": "hmm"}, LM(), {"source": "analytic", "laws": ["masked"]}, xp, {"max_sequences": 3}, 0)
        e = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}["expected_accuracy"]
        bayes = np.asarray(w.masked_token_probs(xp), np.float64)
        assert e["baseline"] == pytest.approx(bayes[..., [perm[0], perm[2]]].mean(), abs=1e-6)
        slack.append(e["slack_used"])
    assert slack[0] == pytest.approx(slack[1], abs=1e-6) and slack[0] == pytest.approx(-0.6812, abs=1e-3)


def test_argmax_split_ties_within_rtol_of_the_maximum():
    from simlm.theory.token_accuracy import TIE_RTOL, argmax_split, hits

    q = np.array([[0.50000006, 0.5, 0.0], [0.5 + 1e-12, 0.5 - 1e-12, 0.0], [0.6, 0.4, 0.0]])
    assert argmax_split(q)[1].tolist() == []  # exact ties only, by default
    pred, tied, share = argmax_split(q, TIE_RTOL)
    assert pred.tolist() == [0, 0, 0] and tied.tolist() == [1] and share.tolist() == [[0.5, 0.5, 0.0]]
    assert argmax_split(q, 1e-6)[1].tolist() == [0, 1]
    assert hits(q, [1, 1, 1], 1e-6).tolist() == [0.5, 0.5, 0.0]
    with pytest.raises(ConfigError, match="^rtol"):
        argmax_split(q, -1e-9)
    with pytest.raises(ConfigError, match="^tie_rtol"):
        token_accuracy(q[None], [[0, 1, 0]], [[True] * 3], tie_rtol=float("nan"))


def test_the_token_accuracy_se_is_binomial_over_the_selected_positions():
    """accuracy_se = √(acc(1 − acc)/N), N the number of selected positions (not sequences, not all
    positions): no test read it (a mutation review, 2026-12-07)."""
    from simlm.theory.token_accuracy import token_accuracy
    rng = np.random.default_rng(0)
    n, T, V = 3, 7, 4
    probs = rng.dirichlet(np.ones(V), size=(n, T))
    tokens = rng.integers(0, V, size=(n, T))
    selected = rng.random((n, T)) < 0.6
    r = token_accuracy(probs, tokens, selected)
    N = int(selected.sum())
    acc = float(np.mean(probs.argmax(-1)[selected] == tokens[selected]))
    assert 0 < acc < 1 and N not in (n, n * T)
    assert r.accuracy == pytest.approx(acc, abs=1e-12)
    assert r.accuracy_se == pytest.approx(np.sqrt(acc * (1 - acc) / N), rel=1e-12)


def test_within_class_errors_counts_only_the_off_diagonal_errors():
    """Errors (0→1) in class, (0→2), (1→2), (2→0) across: 1 of 7 weighted errors stays in its class; the
    diagonal (correct predictions, trivially 'in class') is no error (counted, it read 16/22 = 0.73)."""
    M = np.array([[5, 1, 2], [0, 4, 1], [3, 0, 6]])
    assert within_class_errors(M, [0, 0, 1]) == pytest.approx(1 / 7, abs=1e-15)
    assert np.isnan(within_class_errors(np.diag([3.0, 2.0, 1.0]), [0, 0, 1]))  # no error: NaN, not 1


def test_the_mean_apt_bootstrap_resamples_whole_sequences():
    """Sequences right or wrong as a whole (p = share right): ⟨APT⟩ = p̂ and its error over fresh test sets is
    the binomial √(p̂(1 − p̂)/m) of the m sequences; resampling positions instead read it √T ≈ 3.2× too small."""
    m, T = 40, 10
    x = np.tile(np.arange(T) % 2, (m, 1))  # every sequence holds both types equally
    right = np.random.default_rng(3).random(m) < 0.5
    pred = np.where(right[:, None], x, 1 - x)
    r = token_accuracy(np.eye(2)[pred], x, np.ones((m, T), bool))
    p = right.mean()
    assert r.mean_apt == pytest.approx(p, abs=1e-12)
    assert r.mean_apt_se == pytest.approx(np.sqrt(p * (1 - p) / m), rel=0.15)


def test_ratio_to_divides_by_the_bayes_apt_and_is_nan_where_it_is_zero_or_undefined():
    """APT / APT_Bayes per type: types 0–3 with APT (0.5, 0, 0.2, NaN) against Bayes (1.0, 0.5, 0, 0.5) give
    (0.5, 0, NaN, NaN)."""
    x = np.array([[0, 0, 1, 1, 2, 2, 2, 2, 2]])
    sel = np.ones_like(x, bool)
    lm = token_accuracy(np.eye(4)[np.array([[0, 1, 0, 0, 2, 0, 0, 0, 0]])], x, sel)
    bayes = token_accuracy(np.eye(4)[np.array([[0, 0, 1, 0, 0, 0, 0, 0, 0]])], x, sel)
    np.testing.assert_allclose(lm.apt[:3], [0.5, 0.0, 0.2])
    np.testing.assert_allclose(lm.ratio_to(bayes), [0.5, 0.0, np.nan, np.nan])


@pytest.mark.parametrize("Z, S, switch", [(3, 2, 0.3), (4, 1, 0.6), (2, 3, 0.1)])
def test_the_topic_stays_with_1_minus_switch_else_moves_to_another_topic_uniformly(Z, S, switch):
    """topic_syntax_hmm's chain: P(z' | z, q) = 1 − switch on z' = z, switch/(Z − 1) on every other topic,
    whatever the syntax q; P(q' | z, q) does not depend on z (a switch that could land on its own topic passed
    every other test but one number pinned in another module)."""
    A = np.asarray(topic_syntax_hmm(0, Z, S, 2, switch=switch).hmm.transition, np.float64).reshape(Z, S, Z, S)
    want = (1 - switch) * np.eye(Z) + switch * (1 - np.eye(Z)) / (Z - 1)
    for q in range(S):
        np.testing.assert_allclose(A[:, q].sum(-1), want, atol=1e-6)
    syntax = A.sum(2)
    np.testing.assert_allclose(syntax, np.broadcast_to(syntax[:1], syntax.shape), atol=1e-6)


def test_the_sweep_checks_mean_apt_and_kl_of_a_non_oracle_lm_are_the_lms_own():
    """``mean_apt`` (type-averaged APT of the LM's argmax) and ``kl_epsilon`` (mean KL(p* ‖ p_LM) over the
    positions) by brute force for an LM that is not the oracle, whose numbers differ from the Bayes
    predictor's (only the oracle's rows were read, where the LM's and Bayes's are equal and KL is 0)."""
    hmm = HMM.random(0, 4, 6)
    x = np.asarray(hmm.sample(0, 16, 10))[:8]
    lm = _HalfBayesLM(hmm, 10)
    cell = Cell(hmm, {"kind": "hmm"}, lm, {"source": "analytic", "laws": ["masked"]}, x, {"max_sequences": 8}, 0)
    rows = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}
    bayes = np.asarray(hmm.masked_token_probs(x), np.float64)
    logp = lm.masked_token_logprobs(x)
    pred = logp.argmax(-1)
    apt = [np.mean(pred[x == v] == v) for v in np.unique(x)]
    kl = np.mean(np.sum(bayes * (np.log(bayes) - logp), -1))
    assert rows["mean_apt"]["measured"] == pytest.approx(np.mean(apt), abs=1e-12)
    assert rows["kl_epsilon"]["measured"] == pytest.approx(kl, rel=1e-5)
    assert abs(np.mean(apt) - rows["bayes_mean_apt"]["measured"]) > 0.01 and kl > 0.01  # they differ here
