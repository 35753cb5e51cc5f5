"""Tests that close gaps a mutation review found (2026-12-07): each pins a documented number or rule that a
mutant of the code could change while every other test passed (the mutant named in each test's docstring)."""

from __future__ import annotations

import math
import types
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from profiles import scaled

import simlm.experiments.checks as builtin_checks
from simlm.checks import check_distributions, check_stochastic
from simlm.downstream import head_tuning, make_posterior_task
from simlm.downstream.heads import LinearHead
from simlm.downstream.tasks import PosteriorTask, bayes_ceiling, sample_task_data
from simlm.errors import ConfigError, DistributionError
from simlm.experiments.registry import Cell, get_check
from simlm.models import WorldLM
from simlm.train.schedule import OVERSHOOT, TRAIL, next_evaluation
from simlm.train.trainer import TrainConfig, _fresh_state, _log_and_climb, _replay_gap, masked_eval_positions
from simlm.worlds import HMM


# ---- checks ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("check, atol, kw", [(check_distributions, 1e-5, {}), (check_stochastic, 1e-6, {}),
                                             (check_stochastic, 1e-3, {"atol": 1e-3})])
def test_a_row_off_by_a_little_more_than_atol_is_refused_and_a_little_less_kept(check, atol, kw):
    """|Σ p − 1| ≤ atol passes and more is refused — near the edge (0.9 and 1.2 × atol), not only at 0.5 and
    5 × atol, which a threshold of 2 × atol passed."""
    check("p", [[0.25, 0.75 + 0.9 * atol]], **kw)
    check("p", [[0.25, 0.75 - 0.9 * atol]], **kw)
    for off in (1.2 * atol, -1.2 * atol):
        with pytest.raises(DistributionError, match=r"^p row 0 sums to"):
            check("p", [[0.25, 0.75 + off]], **kw)


# ---- experiment_checks -------------------------------------------------------------------------------------

WORLD = {"name": "h", "kind": "hmm", "seed": 1, "options": {"n_states": 2, "n_symbols": 2}}


def test_head_tuning_scores_its_head_on_fresh_inputs_not_on_its_training_set(monkeypatch):
    """wei/head-tuning's head_accuracy is 'scored on fresh inputs' (docstring): the test draw's key differs from
    the training draw's (in this cell and across cell seeds), the head is fitted on the training draw's
    features and scored on the test draw's.  A test set drawn with the training key (the same tokens: the
    accuracy a training accuracy) passed every existing test.  Stubs as tests/test_sweep_store.py's
    _head_tuning_rows: only the check's own plumbing runs."""
    world = HMM.random(0, 3, 4)
    task = SimpleNamespace(mu=np.array([1.0, -1.0, 0.0]), posteriors=lambda w, tokens: np.full((len(tokens), 3), 1 / 3))
    draws, fitted_on, scored_on = [], [], []

    def data(w, t, seed, n, length):
        draws.append((seed, n))
        return np.full((n, length), seed, np.int32), (np.arange(n) % 2).astype(np.int32)

    def fit(features, labels):
        fitted_on.append(set(np.asarray(features).ravel().tolist()))
        return SimpleNamespace(predict=lambda f: scored_on.append(set(np.asarray(f).ravel().tolist()))
                               or np.ones(len(f), np.int32))

    monkeypatch.setattr(builtin_checks, "make_posterior_task", lambda w, seed: task)
    monkeypatch.setattr(builtin_checks, "sample_task_data", data)
    monkeypatch.setattr(builtin_checks, "task_features", lambda lm, tokens, t: np.asarray(tokens)[:, :1])
    monkeypatch.setattr(builtin_checks, "fit_linear_head", fit)
    options = {"n_train": 4, "n_test": 6, "length": 3, "task_seed": 0}
    keys = {}
    for seed in (0, 1):
        draws.clear(), fitted_on.clear(), scored_on.clear()
        builtin_checks.head_tuning_check(Cell(world, WORLD, None, {"source": "oracle"}, None, options, seed))
        (k_train, n_train), (k_test, n_test) = draws
        assert (n_train, n_test) == (4, 6) and k_train != k_test
        assert fitted_on == [{k_train}] and scored_on == [{k_test}]
        keys[seed] = {k_train, k_test}
    assert not keys[0] & keys[1]  # no cell's test set is another seed's training set


# ---- heads -------------------------------------------------------------------------------------------------

@settings(max_examples=scaled(50), deadline=None)
@given(st.lists(st.tuples(st.floats(-3, 3, width=32, allow_subnormal=False), st.integers(0, 1)), min_size=1,
                max_size=12))
def test_accuracy_is_the_share_of_every_example_predicted_right(data):
    """LinearHead.accuracy = mean over all n examples of [argmax logits = label], by brute force on a 1-feature
    head (logit of class 1 = f, of class 0 = 0; a tie goes to class 0); an accuracy leaving out the last
    example passed every test.  No subnormal feature: XLA flushes 1.4e-45 to 0, a tie (the thorough profile's
    counterexample to this brute force, not to the head)."""
    f = np.array([[x] for x, _ in data], np.float32)
    y = np.array([c for _, c in data], np.int32)
    head = LinearHead(np.array([[0.0, 1.0]]), np.zeros(2), np.zeros(1), np.ones(1), np.zeros(0))
    want = np.mean([(1 if x > 0 else 0) == c for x, c in data])
    assert head.accuracy(f, y) == want


def test_the_bayes_ceiling_is_nan_beside_labels_that_are_not_the_tasks():
    """Documented (head_tuning): where the test labels given are other labels (noisy, permuted) the Bayes ceiling
    is NaN, not the task's ceiling beside an accuracy on other labels; with the task's own labels given it is
    computed.  Kills a ceiling computed whatever the labels."""
    world = HMM.random(0, 3, 4)
    task = make_posterior_task(world, 0, n_probe=64, probe_length=6)
    train, test = sample_task_data(world, task, 1, 64, 6), sample_task_data(world, task, 2, 32, 6)
    other = (test[0], 1 - test[1])
    r = head_tuning(WorldLM(world), world, task, train, other, visible_length=2, n_continuations=8)
    assert np.isnan(r.bayes_ceiling) and np.isnan(r.bayes_ceiling_se)
    r = head_tuning(WorldLM(world), world, task, train, test, visible_length=2, n_continuations=8)
    assert 0.5 <= r.bayes_ceiling <= 1.0


# ---- schedule ----------------------------------------------------------------------------------------------

def test_with_no_descent_the_wait_switches_from_a_fifth_to_eval_every_exactly_above_rho_4():
    """Module docstring: with ε flat or rising, the spacing is eval_every while ρ > 4 and eval_every // 5 below.
    ρ = 3.5 and ρ = 4 are below (a fifth), ρ = 4.5 above (eval_every); kills `ratio > 3` and `ratio >= 4`."""
    flat = lambda e: [[0, [e]], [100, [e]]]
    assert next_evaluation(100, flat(0.35), [0.1], 100) == 120  # ρ 3.5
    assert next_evaluation(100, flat(0.4), [0.1], 100) == 120   # ρ 4 exactly (0.4 / 0.1 == 4.0 in floats): not above 4
    assert next_evaluation(100, flat(0.45), [0.1], 100) == 200  # ρ 4.5


def _trail(log_eps, steps=(0, 100, 200, 300)):
    return [[s, [float(np.exp(y))]] for s, y in zip(steps, log_eps)]


def _aimed(rate, rho):
    """The docstring's aim for a descent at ``rate`` (< 0) with ρ = ε / t, in float64."""
    s_in, w = math.log(rho) / -rate, math.log(1 / 0.7) / -rate
    return math.floor(s_in + 0.1 * w if s_in <= w else s_in / 2)


def test_a_last_interval_steeper_than_the_trails_least_squares_rate_is_planned_with():
    """Rates per interval +0.01, −0.02, −0.01 (log ε 0, 1, −1, −2): the least-squares slope is −0.008, the last
    interval's −0.01 is steeper and not speeding up (−0.01 > −0.02), so the plan uses −0.01 (module docstring:
    'or the slope over the last interval alone where that is steeper').  Kills dropping ``last`` from the rates."""
    trail = _trail([0.0, 1.0, -1.0, -2.0])
    t = float(np.exp(-2.0 - 0.2))  # ρ = e^0.2
    assert next_evaluation(300, trail, [t], 1000) == 300 + _aimed(-0.01, math.exp(0.2)) == 323
    assert _aimed(-0.008, math.exp(0.2)) == 29  # what the least-squares rate alone would give: 329


def test_the_speed_up_is_the_last_interval_over_the_one_before_on_a_four_point_trail():
    """Intervals at −0.001, −0.004, −0.006 per step (the trainer keeps TRAIL = 4 evaluations): the descent speeds
    up, and its plan is the last rate times last/before = 1.5 with ``before`` the interval just before the last
    (−0.004), −0.009 — not the least-squares rate of the three evaluations before the last (−0.0025, a speed-up
    of 2.4, capped at 2: −0.012)."""
    trail = _trail(np.cumsum([0.0, -0.1, -0.4, -0.6]))
    rho = math.exp(0.5)
    t = float(trail[-1][1][0] / rho)
    assert next_evaluation(300, trail, [t], 1000) == 300 + _aimed(-0.009, rho)
    assert _aimed(-0.009, rho) != _aimed(-0.012, rho)


# ---- tasks -------------------------------------------------------------------------------------------------

def test_the_bayes_ceiling_is_the_plain_mean_of_label_frequencies_over_r_continuations():
    """Each P(y | x_1:T') is the label frequency over R continuations (docstring), so with R = 4 and n = 3 every
    per-sequence max is a multiple of 1/4 and the estimate a multiple of 1/12 — no smoothing, no shrinkage (a
    Laplace-smoothed (R·max + 1)/(R + 1), 0.8·max + 0.2 here, passed the R = 4096 enumeration test)."""
    pi = np.array([0.9, 0.05, 0.05])
    A = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    B = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    world = HMM(pi, A, B)
    task = PosteriorTask(mu=np.array([0.0, 1.0, -1.0]), position="next")
    x, _ = sample_task_data(world, task, 0, 3, 5)
    for visible in (0, 2):
        for key in range(2):
            est, se = bayes_ceiling(world, task, x, visible, n_continuations=4, key=key)
            k = est * 12
            assert abs(k - round(k)) < 1e-9 and 6 <= round(k) <= 12, (visible, key, est)


def test_a_posterior_row_off_1_by_a_little_more_than_1e_4_is_refused_and_a_little_less_kept():
    """labels_from_posterior refuses a row that is no law (|Σ − 1| > 1e-4): 1 + 2e-4 and 1 − 2e-4 are refused,
    1 ± 5e-5 kept (a tolerance of 0.1 passed the existing test, which tries only a row far off)."""
    task = PosteriorTask(mu=np.array([1.0, -1.0, 0.5]), position="next")
    assert task.labels_from_posterior(np.array([[0.5, 0.25, 0.25 + 5e-5], [0.5, 0.25, 0.25 - 5e-5]])).tolist() == [1, 1]
    for off in (2e-4, -2e-4):
        with pytest.raises(ConfigError, match=r"^posterior: row 0 sums to"):
            task.labels_from_posterior(np.array([[0.5, 0.25, 0.25 + off]]))


# ---- token_accuracy ----------------------------------------------------------------------------------------

class _DrainedLM:
    """The Bayes law with symbol 0 drained to log-probability −800 (exp underflows to 0 in float64), the rest
    renormalised in log space."""

    def __init__(self, hmm):
        self.hmm = hmm

    def masked_token_logprobs(self, x):
        b = np.asarray(self.hmm.masked_token_probs(x), np.float64)
        logp = np.log(b) - np.log1p(-b[..., :1])
        logp[..., 0] = -800.0
        return logp


def test_the_kl_of_an_lm_whose_law_underflows_is_read_from_its_logs():
    """kl_epsilon = mean KL(p* ‖ p_LM) from the LM's log-probabilities (the check's comment: 'exact where p
    underflows'): a finite brute-force float64 value, not the inf or clipped value exp(−800) = 0 gives."""
    hmm = HMM.random(0, 4, 6)
    x = np.asarray(hmm.sample(0, 8, 6))
    lm = _DrainedLM(hmm)
    cell = Cell(hmm, {"kind": "hmm"}, lm, {"source": "analytic", "laws": ["masked"]}, x, {"max_sequences": 8}, 0)
    rows = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}
    bayes = np.asarray(hmm.masked_token_probs(x), np.float64)
    kl = np.mean(np.sum(bayes * (np.log(bayes) - lm.masked_token_logprobs(x)), -1))
    assert np.isfinite(kl) and kl > 1.0
    assert rows["kl_epsilon"]["measured"] == pytest.approx(kl, rel=1e-6)


class _ZeroBiasedLM:
    """½ the Bayes law + ½ on symbol 0: its argmax is always 0."""

    def __init__(self, hmm):
        self.hmm = hmm

    def masked_token_logprobs(self, x):
        b = 0.5 * np.asarray(self.hmm.masked_token_probs(x), np.float64)
        b[..., 0] += 0.5
        return np.log(b)


def test_n_predicted_counts_the_lms_and_the_bayes_predictors_distinct_outputs_each():
    """``n_predicted`` (distinct outputs of the LM's argmax) beside ``bayes_n_predicted`` (the Bayes
    predictor's), by brute force for an LM that predicts symbol 0 everywhere (the Bayes count was
    read only on the oracle, where the two are equal)."""
    hmm = HMM.random(0, 4, 6)
    x = np.asarray(hmm.sample(0, 8, 6))
    lm = _ZeroBiasedLM(hmm)
    cell = Cell(hmm, {"kind": "hmm"}, lm, {"source": "analytic", "laws": ["masked"]}, x, {"max_sequences": 8}, 0)
    r = {r["quantity"]: r for r in get_check("tzach/token-accuracy").run(cell)}["n_predicted"]
    bayes = np.asarray(hmm.masked_token_probs(x), np.float64)
    n_lm, n_bayes = len(np.unique(lm.masked_token_logprobs(x).argmax(-1))), len(np.unique(bayes.argmax(-1)))
    assert n_lm != n_bayes  # the case that tells them apart
    assert (r["measured"], r["bayes_n_predicted"]) == (n_lm, n_bayes)


# ---- trainer -----------------------------------------------------------------------------------------------

def test_the_trail_the_schedule_plans_from_keeps_the_last_trail_evaluations(tmp_path, monkeypatch):
    """The schedule's least-squares rate is over the last TRAIL (= 4) evaluations (schedule docstring): after
    six evaluations the trail holds exactly the last four, oldest first.  Kills a trail cut to the last two."""
    monkeypatch.setattr("simlm.train.trainer.save_model", lambda path, params, meta: {"checksum": ""})
    config = TrainConfig(targets=(1e-3,), seeds=(0,))
    run = types.SimpleNamespace(config=config, member_params=lambda params, i: params)
    state = _fresh_state(1)
    evals = [(0, 0.9), (10, 0.8), (20, 0.7), (30, 0.6), (40, 0.5), (50, 0.4)]
    for step, eps in evals:
        _log_and_climb(run, state, tmp_path, {}, None, [(eps, 0.0, 0.0, 0.0)], None, step, 1, 1.0)
    assert TRAIL == 4
    assert state["trail"] == [[s, [e]] for s, e in evals[-TRAIL:]]


def test_eps_just_below_the_window_floor_is_replayed():
    """ε = 0.2 is below rung 0.3's window floor 0.7 × 0.3 = 0.21 (and above 0.5 × 0.3): the steps since the
    anchor are replayed every ceil(8 / 4) = 2 steps.  Kills a floor at any other fraction below 2/3."""
    ladder = TrainConfig(targets=(0.3, 0.1), eval_every=50)
    assert OVERSHOOT == 0.7
    assert _replay_gap({"ladder": [0]}, ladder, [(0.2, 0, 0, 0)], 2, 10) == 2
    assert _replay_gap({"ladder": [0]}, ladder, [(0.2101, 0, 0, 0)], 2, 10) == 0


def test_masked_eval_positions_are_every_position_when_eval_positions_reaches_seq_len():
    """min(eval_positions, seq_len) positions evenly over 0..seq_len − 1 (docstring, e.g. 0, 3, 7 for 3 of 8):
    at eval_positions ≥ seq_len every position is scored — none is skipped (a count of seq_len − 1 left out
    position 6 of 8, and the trainer's masked ε was over 7 positions)."""
    for T, k, want in ((8, 3, [0, 3, 7]), (8, 8, list(range(8))), (8, 20, list(range(8))), (5, 1, [0])):
        got = masked_eval_positions(TrainConfig(objective="masked-lm", seq_len=T, eval_positions=k))
        assert got.dtype == np.int32 and got.tolist() == want, (T, k, got)
