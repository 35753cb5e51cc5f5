"""When the trainer evaluates ε next: predicted from the ε trajectory, so evaluations are few and the
ladder's overshoot rule still holds.

The ladder checkpoints a member the first time an evaluation finds ε ≤ t (the next target) and aims to
catch it while ε ≥ :data:`OVERSHOOT` · t.  Evaluating often near t catches every crossing but costs an
evaluation every few steps for as long as ε hovers just above t, which on a slow final descent is
most of the run.  Instead the rate is measured: on the last :data:`TRAIL` evaluations, the
least-squares slope r = d log ε / d step (derived here; log ε is close to linear in the step over a few
hundred steps of a smooth descent), or the slope over the last interval alone where that is steeper,
and while the descent speeds up (as during the learning-rate warm-up) that slope times its speed-up
over the interval before, at most doubled.  With ρ = ε / t > 1 the crossing window [t, 0.7 t] is entered after
s_in = log ρ / (−r) steps and left after s_out = log(ρ / 0.7) / (−r).  While the window is further off
than its own width, the next evaluation comes halfway there (s_in / 2), to measure the rate again closer
to the crossing; once it is near, the evaluation is placed a tenth of the way into the window,
s_in + (s_out − s_in) / 10.  Never more than ``eval_every`` steps ahead nor less than one, and never
more than :data:`GROWTH` times the previous spacing: a rate measured over a short interval (early in
a warm-up, when the descent is still speeding up) is trusted only a few such intervals ahead.  A
descent that slows (the usual case) is at most a tenth of the way into the window at the evaluation aimed
there, so it is caught there or at a later one, never below the window; one that speeds up by more than the aim
allows can land below 0.7 t, as it could under any fixed spacing — at least ≈ 1.8× the measured rate over
the gap (the aim s_in + w/10, w = s_out − s_in, is taken only while s_in ≤ w, where (s_in + w)/(s_in + w/10)
≥ 2/1.1; an evaluation halfway there needs more than 2×); the trainer then replays the steps since
the evaluation before, evaluating :data:`REPLAY` times as often, until the crossing is caught in the
window or is seen to happen within one step.  With no descent measured (ε flat or
rising, e.g. before the warm-up has moved the parameters) the spacing is ``eval_every`` while ρ > 4 and
``eval_every // 5`` below; after the first evaluation the next comes ``eval_every // 25`` steps later,
to measure a rate (a descent steep enough to cross a rung within ``eval_every`` steps is then seen).
"""

from __future__ import annotations

import math

import numpy as np

#: the ladder's rule: a rung is saved at ε ∈ [OVERSHOOT · target, target]
OVERSHOOT = 0.7
#: evaluations used to measure the rate of descent
TRAIL = 4
#: where in the crossing window [t, 0.7 t] (in log ε) the next evaluation is aimed
AIM = 0.1
#: the spacing grows at most this many times from one evaluation to the next
GROWTH = 4
#: a rung crossed past its window is replayed with evaluations this many times closer together
REPLAY = 4


def descent_rate(steps, eps) -> float | None:
    """Least-squares slope of log ε against the step (per step; negative while ε falls), or None for
    fewer than two evaluations at distinct steps or a non-positive ε."""
    steps, eps = np.asarray(steps, np.float64), np.asarray(eps, np.float64)
    if steps.size < 2 or np.ptp(steps) == 0 or not np.all(eps > 0):
        return None
    x, y = steps - steps.mean(), np.log(eps)
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def _gap(ratio: float, rate: float | None, every: int) -> int:
    if rate is None:  # one evaluation so far: the next, soon, gives a rate
        return max(1, every // 25)
    if rate >= 0:
        return every if ratio > 4 else max(1, every // 5)
    s_in = math.log(ratio) / -rate
    window = math.log(1 / OVERSHOOT) / -rate  # s_out − s_in
    ahead = s_in + AIM * window if s_in <= window else s_in / 2  # far off: halve the distance, re-measure
    return int(min(every, max(1, math.floor(ahead))))


def next_evaluation(step: int, trail: list, next_targets: list, every: int) -> int:
    """The step of the next evaluation after one at ``step``.

    ``trail``: the last evaluations as ``[step, [ε of each member]]`` (oldest first, the one at ``step``
    last); ``next_targets``: each member's next rung, None for a member that reached all of them;
    ``every``: the largest spacing.  The earliest step any member asks for (module docstring), and never
    past the next multiple of ``every``: those steps are always evaluated, as under a fixed spacing."""
    gaps = [_gap(trail[-1][1][i] / t, _rate(trail, i), every) for i, t in enumerate(next_targets) if t is not None]
    grown = GROWTH * (trail[-1][0] - trail[-2][0]) if len(trail) >= 2 else every
    # every multiple of `every` stays an evaluation step, as before the prediction (benchmarks read them)
    return min(step + max(1, min(min(gaps, default=every), grown)), (step // every + 1) * every)


def _rate(trail: list, member: int) -> float | None:
    """The rate to plan with: the faster of the trail's least-squares rate and the last interval's, and
    while the descent speeds up (the last interval steeper than the one before, as in a learning-rate
    warm-up) the last interval's rate times that speed-up, at most doubled."""
    steps, eps = [s for s, _ in trail], [e[member] for _, e in trail]
    last = descent_rate(steps[-2:], eps[-2:])
    rates = [r for r in (descent_rate(steps, eps), last) if r is not None]
    before = descent_rate(steps[-3:-1], eps[-3:-1]) if len(steps) >= 3 else None
    if last is not None and before is not None and last < before < 0:
        rates.append(last * min(2.0, last / before))
    return min(rates, default=None)
