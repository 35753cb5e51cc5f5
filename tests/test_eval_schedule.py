"""The predictive evaluation schedule keeps the ladder's overshoot rule on smooth descents, with few
evaluations; simulated on exact ε trajectories (no training)."""

import json
import math
import types
import warnings

import numpy as np
from hypothesis import example, given, strategies as st

from simlm.train import TrainConfig
from simlm.train.schedule import OVERSHOOT, descent_rate, next_evaluation
from simlm.train.trainer import _fresh_state, _log_and_climb, _next_eval, _replay_gap, _result

TARGETS = (0.3, 0.1, 0.03)
#: long enough for the slowest descent drawn below to pass every rung (rate 1e-4 from ε 3; τ = 100, power 0.75)
LONG = 60_000


def climb(eps_at, targets=TARGETS, every=100, max_steps=2500):
    """The trainer's ladder loop on a trajectory ``eps_at(step)``: (ε/target at each rung reached, evaluations)."""
    rung, trail, reached, evaluations, step = 0, [], [], 0, 0
    while step <= max_steps:
        eps = eps_at(step)
        evaluations += 1
        trail = (trail + [[step, [eps]]])[-4:]
        while rung < len(targets) and eps <= targets[rung]:
            reached.append(eps / targets[rung])
            rung += 1
        if rung == len(targets):
            break
        step = next_evaluation(step, trail, [targets[rung]], every)
    return reached, evaluations


@given(st.floats(0.8, 3.0), st.floats(1e-4, 2e-2), st.integers(0, 200))
def test_descents_through_a_warm_up_reach_every_rung_within_the_overshoot_rule(eps0, rate, warmup):
    # the rate grows linearly over `warmup` steps (a learning-rate warm-up), then stays: log ε falls like
    # r s² / 2w, then like r (s − w/2)
    def eps(s):
        return eps0 * math.exp(-rate * (s * s / (2 * warmup) if s < warmup else s - warmup / 2))

    reached, _ = climb(eps, max_steps=LONG)
    assert len(reached) == len(TARGETS) and all(OVERSHOOT <= r <= 1 for r in reached), reached


@given(st.floats(0.8, 3.0), st.floats(5.0, 100.0), st.floats(0.75, 2.0))
def test_decelerating_descents_reach_every_rung_within_the_overshoot_rule(eps0, tau, power):
    reached, _ = climb(lambda s: eps0 / (1 + s / tau) ** power, max_steps=LONG)
    assert len(reached) == len(TARGETS) and all(OVERSHOOT <= r <= 1 for r in reached), reached


def test_a_slow_final_descent_near_a_target_costs_few_evaluations():
    # ε creeps from 0.045 towards 0.03 over 2500 steps and never reaches it (the experiment-1 case): the
    # former rule evaluated every 4 steps below 1.5 × target, ~600 times
    reached, evaluations = climb(lambda s: 0.03 * (1 + 0.5 * math.exp(-s / 3000)) if s > 100 else 1.0)
    assert len(reached) == 2 and evaluations <= 60


def test_descent_rate_is_the_least_squares_slope_of_log_eps():
    steps = np.array([0, 10, 30, 60])
    assert math.isclose(descent_rate(steps, 2 * np.exp(-0.01 * steps)), -0.01, rel_tol=1e-9)
    assert descent_rate([5], [1.0]) is None and descent_rate([5, 5], [1.0, 0.5]) is None
    assert descent_rate([0, 1], [1.0, 0.0]) is None


@given(st.floats(0.8, 0.85), st.floats(0.015, 0.02), st.integers(8, 200))
@example(0.8, 0.02, 200)  # aimed at the window's middle (AIM 0.9, not 0.1): rung 0.3 at 0.672 × target
@example(0.83518, 0.01518, 144)  # the same, 0.689
@example(0.8, 0.02, 50)  # the spacing let grow 40×, not 4×: rung 0.3 at 0.595
@example(0.83636, 0.01628, 8)  # the same, 0.584
@example(0.82171, 0.0157, 108)  # planned with the slowest rate, not the fastest: rung 0.3 at 0.699
@example(0.80422, 0.01781, 119)  # the same, 0.699
def test_a_steep_warm_up_from_just_above_the_first_rung_is_caught_within_its_window(eps0, rate, warmup):
    """The hardest corner of the warm-up draws above: ε starts at 0.8–0.85, under 3 × the first rung 0.3,
    and falls at up to 0.02 per step after a warm-up of 8–200 steps, so rung 0.3 is crossed while the
    descent is still speeding up.  Every rung is still saved at ε ∈ [0.7, 1] × target (the ladder's rule,
    written out rather than read from the module).  The examples are crossings that an evaluation aimed
    at the middle of the window (AIM 0.9), a spacing let grow 40× (GROWTH 40) or a plan with the slowest
    of the measured rates would each save below 0.7 × target (0.595–0.699)."""
    def eps(s):
        return eps0 * math.exp(-rate * (s * s / (2 * warmup) if s < warmup else s - warmup / 2))

    reached, _ = climb(eps, max_steps=LONG)
    assert len(reached) == len(TARGETS) and all(0.7 <= r <= 1 for r in reached), reached


def exponential_trail(steps, eps_now, rates):
    """A trail ``[[step, [ε]]]`` ending at ``(steps[-1], eps_now)``, log ε linear with slope ``rates[k]``
    between ``steps[k]`` and ``steps[k + 1]`` (an exact exponential descent for one repeated rate)."""
    eps = [eps_now]
    for k in reversed(range(len(steps) - 1)):
        eps.insert(0, eps[0] * math.exp(-rates[k] * (steps[k + 1] - steps[k])))
    return [[s, [e]] for s, e in zip(steps, eps)]


def test_the_next_evaluation_on_an_exponential_descent_is_halfway_to_a_far_window_or_a_tenth_into_a_near_one():
    """ε = ρ · 0.1 at step 100, falling as exp(−0.01 · step): the window [t, 0.7 t] is entered after
    s_in = log ρ / 0.01 steps and is log(1 / 0.7) / 0.01 = 35.7 steps wide (module docstring).  Near
    (ρ 1.2: s_in 18.2 ≤ 35.7) the evaluation is a tenth of the way in, floor(18.2 + 3.57) = 21 steps on;
    far (ρ 3: s_in 109.9 > 35.7) it is halfway there, floor(54.9) = 54 steps on.  Neither is capped:
    eval_every is 1000 and the spacing may grow to 4 × 50."""
    window = math.log(1 / 0.7) / 0.01
    for rho, near in ((1.2, True), (3.0, False)):
        trail = exponential_trail([0, 50, 100], rho * 0.1, [-0.01, -0.01])
        s_in = math.log(rho) / 0.01
        assert (s_in <= window) == near
        ahead = math.floor(s_in + 0.1 * window if near else s_in / 2)
        assert ahead == (21 if near else 54)
        assert next_evaluation(100, trail, [0.1], 1000) == 100 + ahead


def test_a_descent_speeding_up_is_planned_at_its_last_rate_times_the_speed_up_at_most_doubled():
    """ε = 1.2 × 0.1 at step 100 (near the window).  Falling at 0.004 then 0.006 per step (sped up
    1.5×) it is planned at 0.006 × 1.5 = 0.009; at 0.002 then 0.006 (3×) at 0.006 × 2 = 0.012, the
    doubling cap; slowing from 0.006 to 0.004 at the least-squares rate over the trail, 0.005, the
    faster of it and the last interval's.  The step is then a tenth of the way into the window:
    floor((log 1.2 + 0.1 log(1 / 0.7)) / r) = 24, 18 and 43 steps on."""
    for rates, planned, ahead in (((-0.004, -0.006), 0.009, 24), ((-0.002, -0.006), 0.012, 18),
                                  ((-0.006, -0.004), 0.005, 43)):
        trail = exponential_trail([0, 50, 100], 1.2 * 0.1, rates)
        assert math.floor((math.log(1.2) + 0.1 * math.log(1 / 0.7)) / planned) == ahead
        assert next_evaluation(100, trail, [0.1], 1000) == 100 + ahead, rates


def test_with_no_descent_the_next_evaluation_waits_eval_every_far_from_the_target_and_a_fifth_of_it_near():
    """ε flat or rising: no rate to plan with, so the spacing is eval_every (100) while ρ = ε / t > 4 and
    eval_every // 5 (20) for ρ ≤ 4; after a single evaluation it is eval_every // 25 (4), to measure one."""
    flat = lambda e: [[0, [e]], [100, [e]]]
    assert next_evaluation(100, flat(0.5), [0.1], 100) == 200  # ρ 5
    assert next_evaluation(100, flat(0.2), [0.1], 100) == 120  # ρ 2
    assert next_evaluation(100, [[0, [0.1]], [100, [0.2]]], [0.1], 100) == 120  # rising, ρ 2
    assert next_evaluation(0, [[0, [0.5]]], [0.1], 100) == 4


@given(st.integers(0, 1000), st.integers(1, 300), st.floats(0.01, 10.0), st.floats(0.01, 10.0),
       st.floats(0.001, 1.0), st.integers(1, 300))
@example(90, 10, 1.0, 1.0, 0.1, 100)  # flat, ρ 10: eval_every ahead, 4 × 10 grown, but step 100 comes first
def test_the_next_evaluation_is_never_past_the_next_multiple_of_eval_every(step, spacing, before, now, target,
                                                                             every):
    """Every multiple of eval_every stays an evaluation step, as under a fixed spacing (benchmarks read
    them): the next evaluation is after ``step`` and at most at the next multiple (100 after step 90)."""
    trail = [[max(0, step - spacing), [before]], [step, [now]]] if step else [[0, [now]]]
    nxt = next_evaluation(step, trail, [target], every)
    assert step < nxt <= (step // every + 1) * every


# ---- the trainer's side of the ladder: replay spacing, the next evaluation during a replay, the climb ----

LADDER = TrainConfig(targets=(0.3, 0.1), eval_every=50)


def test_a_replay_is_due_more_than_one_step_after_the_anchor_at_a_quarter_of_the_distance_rounded_up():
    """ε 0.01 is past rung 0.3's window [0.21, 0.3]: the steps since the anchor are replayed, with
    evaluations 4 × as close, i.e. every ceil(d / 4) steps for d = step − anchor ≥ 2 (two steps back:
    every step); one step back nothing is replayed (no evaluation can come closer)."""
    for d in range(1, 13):
        gap = _replay_gap({"ladder": [0]}, LADDER, [(0.01, 0, 0, 0)], 8, 8 + d)
        assert gap == (0 if d < 2 else math.ceil(d / 4)), d


def test_eps_exactly_at_the_window_floor_is_kept_not_replayed():
    """ε = 0.21 = 0.7 × 0.3 is inside rung 0.3's closed window [0.21, 0.3]: the evaluation is kept (no
    replay), even eight steps after the anchor."""
    assert 0.21 == OVERSHOOT * 0.3  # the tie, exactly as floats
    assert _replay_gap({"ladder": [0]}, LADDER, [(0.21, 0, 0, 0)], 2, 10) == 0


def test_a_replay_ends_at_the_step_it_came_from():
    """A replay of steps 0–8 (it came from step 8, evaluating every 2 steps): before step 8 the next
    evaluation is at most 2 steps on and the replay is kept; at step 8 it is over, dropped from the state,
    and the next evaluation is the schedule's own (flat ε 1.5, ρ 5: eval_every, capped at 4 × 8 → 40)."""
    trail = [[0, [1.5]], [6, [1.5]]]
    state = {"ladder": [0], "trail": trail, "replay": [8, 2]}
    assert _next_eval(state, LADDER, 6) == 8 and state["replay"] == [8, 2]
    trail = [[0, [1.5]], [8, [1.5]]]
    state = {"ladder": [0], "trail": trail, "replay": [8, 2]}
    assert _next_eval(state, LADDER, 8) == next_evaluation(8, trail, [0.3], 50) == 40 and "replay" not in state


def test_a_rung_is_recorded_at_the_first_evaluation_with_eps_at_most_its_target(tmp_path, monkeypatch):
    """ε ≤ t reaches rung t: ε exactly 0.3 at step 3 saves rung 0.3 there (overshoot 1), and ε 0.0995,
    just under 0.1, saves rung 0.1 at step 5.  The checkpoint writer is stubbed: this is the bookkeeping."""
    saved = []
    monkeypatch.setattr("simlm.train.trainer.save_model",
                        lambda path, params, meta: saved.append((meta["step"], meta["overshoot"])) or {"checksum": ""})
    run = types.SimpleNamespace(config=LADDER, member_params=lambda params, i: params)
    state = _fresh_state(1)
    for step, eps in ((0, 0.5), (3, 0.3), (5, 0.0995)):
        _log_and_climb(run, state, tmp_path, {}, None, [(eps, 0.0, 0.0, 0.0)], None, step, 1, 1.0)
    assert [(r["target"], r["step"], r["epsilon"]) for r in state["records"]] == [(0.3, 3, 0.3), (0.1, 5, 0.0995)]
    assert saved == [(3, 1.0), (5, 0.0995 / 0.1)] and state["ladder"] == [2]


def test_with_no_descent_the_spacing_is_a_fifth_of_eval_every_up_to_four_times_the_target():
    """ρ = 3 is under 4 (module docstring: eval_every only while ρ > 4), so flat ε is evaluated again
    eval_every // 5 = 20 steps on, not eval_every."""
    assert next_evaluation(100, [[0, [0.3]], [100, [0.3]]], [0.1], 100) == 120  # ρ 3


def test_the_spacing_grows_at_most_four_times_the_previous_spacing_not_the_whole_trail():
    """Flat ε, ρ 10: eval_every (1000) ahead, but never more than GROWTH = 4 × the previous spacing,
    100 − 90 = 10 (not the trail's whole span, 100): 40 steps on."""
    trail = [[0, [1.0]], [90, [1.0]], [100, [1.0]]]
    assert next_evaluation(100, trail, [0.1], 1000) == 140


def test_the_next_evaluation_is_the_earliest_any_member_asks_for():
    """Two members, flat ε: member 0 at ρ 10 asks for eval_every (100), member 1 at ρ 5/3 for
    eval_every // 5 (20); the earlier, 20 steps on, is taken."""
    trail = [[0, [1.0, 0.5]], [100, [1.0, 0.5]]]
    assert next_evaluation(100, trail, [0.1, 0.3], 100) == 120


def test_a_window_exactly_its_own_width_off_is_near_so_aimed_a_tenth_into():
    """ρ = 1 / 0.7 exactly: s_in equals the window's width, so the window is not "further off than its own
    width" (module docstring) and the evaluation is a tenth of the way into it, floor(1.1 · 35.67) = 39
    steps on, not halfway there (17)."""
    eps_now = 0.1 * (1 / OVERSHOOT)
    assert eps_now / 0.1 == 1 / OVERSHOOT  # the tie, exactly as floats
    trail = exponential_trail([0, 50, 100], eps_now, [-0.01, -0.01])
    window = math.log(1 / OVERSHOOT) / 0.01
    assert math.floor(1.1 * window) == 39
    assert next_evaluation(100, trail, [0.1], 1000) == 139


def climb_members(config, evaluations, run_dir, monkeypatch):
    """``_log_and_climb`` over ``evaluations`` ``[(step, (ε of each member))]`` with the checkpoint writer
    stubbed (as above) and tokens_per_step as the trainer passes it (all members): the ladder state, the
    saves ``(seed, target, step, ε)`` and the warnings raised."""
    saved = []
    monkeypatch.setattr("simlm.train.trainer.save_model",
                        lambda path, params, meta: saved.append((meta["seed"], meta["target"], meta["step"],
                                                                 meta["epsilon"])) or {"checksum": ""})
    run = types.SimpleNamespace(config=config, member_params=lambda params, i: params, lm=lambda params, i: None)
    state = _fresh_state(len(config.seeds))
    tokens_per_step = len(config.seeds) * config.batch_size * config.seq_len
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, eps in evaluations:
            _log_and_climb(run, state, run_dir, {}, None, [(e, 0.0, 0.0, 0.0) for e in eps], None, step,
                           tokens_per_step, 1.0)
    return run, state, saved, [str(w.message) for w in caught]


def test_tokens_seen_counts_the_tokens_each_seed_has_trained_on(tmp_path, monkeypatch):
    """Two seeds, batches of 8 × 12 tokens: at step 4 each member has seen 4 · 8 · 12 = 384 tokens (its own
    batches), not the ensemble's 768 — in the ladder record and in every metrics.jsonl row."""
    config = TrainConfig(targets=(0.3, 0.1), seeds=(0, 1), batch_size=8, seq_len=12)
    _, state, _, _ = climb_members(config, [(4, (0.25, 0.25))], tmp_path, monkeypatch)
    assert [(r["seed"], r["target"], r["tokens_seen"]) for r in state["records"]] == [(0, 0.3, 384), (1, 0.3, 384)]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["tokens_seen"]) for r in rows] == [(0, 384), (1, 384)]


def test_a_rung_not_reached_is_reported_per_seed(tmp_path, monkeypatch):
    """Seed 0 reaches rung 0.3 (ε 0.25), seed 1 nothing (ε 0.5): seed 1's rung 0.3 is still not reached,
    though another seed reached it."""
    config = TrainConfig(targets=(0.3, 0.1), seeds=(0, 1), eval_every=50)
    run, state, _, _ = climb_members(config, [(0, (0.5, 0.5)), (3, (0.25, 0.5))], tmp_path, monkeypatch)
    result = _result(run, None, state, tmp_path, {})
    assert result.not_reached == [(0, 0.1), (1, 0.3), (1, 0.1)]
    assert [(r.seed, r.target, r.reached) for r in result.records] == [(0, 0.3, True), (0, 0.1, False),
                                                                         (1, 0.3, False), (1, 0.1, False)]


def test_one_evaluation_past_several_rungs_saves_each_of_them_there(tmp_path, monkeypatch):
    """ε 0.24 at step 4 is ≤ both 0.3 and 0.25: both rungs are saved at step 4 (each at the first
    evaluation with ε ≤ its target), not the second one later at step 6."""
    config = TrainConfig(targets=(0.3, 0.25), eval_every=50)
    _, state, saved, _ = climb_members(config, [(0, (0.5,)), (4, (0.24,)), (6, (0.23,))], tmp_path, monkeypatch)
    assert saved == [(0, 0.3, 4, 0.24), (0, 0.25, 4, 0.24)] and state["ladder"] == [2]


def test_best_epsilon_is_the_lowest_seen_not_the_last(tmp_path, monkeypatch):
    """ε 0.5, 0.2, 0.3: the best ε seen is 0.2 (TrainResult.best_epsilon: seed → best ε seen)."""
    config = TrainConfig(targets=(0.1,), eval_every=50)
    run, state, _, _ = climb_members(config, [(0, (0.5,)), (3, (0.2,)), (6, (0.3,))], tmp_path, monkeypatch)
    assert _result(run, None, state, tmp_path, {}).best_epsilon == {0: 0.2}


def test_a_rung_saved_exactly_at_the_window_floor_is_no_overshoot(tmp_path, monkeypatch):
    """ε = 0.21 = 0.7 × 0.3 is inside the closed window [0.7, 1] × target: rung 0.3 is saved with no
    "below the ladder's window" warning."""
    assert 0.21 == OVERSHOOT * 0.3  # the tie, exactly as floats
    config = TrainConfig(targets=(0.3, 0.1), eval_every=50)
    _, _, saved, messages = climb_members(config, [(0, (0.5,)), (3, (0.21,))], tmp_path, monkeypatch)
    assert saved == [(0, 0.3, 3, 0.21)]
    assert not [m for m in messages if "below the ladder's window" in m], messages
