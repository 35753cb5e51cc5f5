"""The natural-task sweep (Saunshi, Malladi & Arora 2021), run in quick mode: tidy rows, no bound
violated, the excess growing with ε, its files written; and the pieces it is built from."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re

import numpy as np
import pytest

from simlm.errors import ConfigError
from simlm.experiments import natural_tasks as nt
from simlm.experiments import natural_tasks_adversaries as nts
from simlm.worlds.contexts import enumerate_contexts
from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer
from simlm.experiments.checks import _natural_rows
from simlm.experiments.sweep import read_results
from simlm.theory.adversarial import adversarial_laws
from simlm.theory.natural_tasks import (ATOL, LOG2, best_loss_ceiling, check_natural_task, critical_epsilon, gamma,
                                        lm_laws, random_natural_task)
from simlm.worlds import HMM, LogLinearWorld

COLUMNS = {"world", "lm", "family", "target_eps", "calibrated", "task", "prompt", "noise", "eps", "eps_phi",
           "eps_quad", "gamma", "gamma_phi", "bound", "features", "eps_bound", "gamma_bound", "B_choice", "B", "tau",
           "bound_value", "slack", "loss_natural", "loss_best", "excess_natural", "excess_best",
           "ratio_natural", "ratio_best", "probe_loss", "holds", "max_overshoot", "trivial", "trivial_best",
           "loss_ceiling", "slack_used",
           "critical_eps", "residual", "task_kind", "task_critical_eps"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("natural_tasks")
    return nt.command(["--quick", "--out", str(out)]), out


def test_rows_are_tidy_with_the_expected_columns(quick):
    result, _ = quick
    rows = result["rows"]
    assert rows and all(COLUMNS <= set(r) for r in rows)
    assert {r["features"] for r in rows} == set(nt.FEATURES)
    assert {r["family"] for r in rows} == {"analytic-laws", "analytic-softmax", "trained", "adversarial",
                                           "adversarial-fixed-B"}
    assert {r["task"] for r in rows} >= {"p_L"} and min(r["gamma"] for r in rows) < 1
    # one row per (world, LM, ε, task, noise, bound, choice of B)
    keys = [(r["world"], r["lm"], r["target_eps"], r["task"], r["task_kind"], r["bound"], r["B_choice"]) for r in rows]
    assert len(keys) == len(set(keys)) and {k[-1] for k in keys} == set(nt.B_CHOICES)
    for r in rows:  # B* minimises the bound over the grid, so it is at most the bound at B_tau
        if r["B_choice"] == "B_tau":
            star = rows[keys.index(keys[rows.index(r)][:-1] + ("B*",))]
            assert star["bound_value"] <= r["bound_value"] + 1e-12


def test_no_row_has_its_bound_below_the_measured_loss(quick):
    result, _ = quick
    assert result["violations"] == []
    for r in result["rows"]:
        assert r["holds"] and r["max_overshoot"] <= 1e-7, r
        assert r["loss_best"] <= r["bound_value"] + 1e-7 and r["loss_natural"] <= r["bound_value"] + 1e-7, r
        s = r["B"] * math.sqrt(2 * r["eps_bound"] / r["gamma_bound"])
        if r["bound"] == "well-specified":  # τ + r·B√(2ε/γ) + B²ε/(4γ)
            assert r["slack"] == pytest.approx(r["residual"] * s + s * s / 8, rel=1e-9)
        else:
            assert r["slack"] == pytest.approx(s, rel=1e-9)


def test_the_measured_excess_grows_with_eps_for_one_analytic_kind(quick):
    # p_s = (1 − s)p* + s·u: the transferred τ-classifier's scores shrink to a constant, so its loss
    # (convex in s, minimal at s = 0 for a fixed B) rises with ε; B_tau depends on the task alone
    result, _ = quick
    rows = sorted((r for r in result["rows"] if r["lm"] == "uniform-mixture" and r["task"] == "p_L"
                   and r["B_choice"] == "B_tau" and r["bound"] == "any-lm"), key=lambda r: r["eps"])
    assert len({r["B"] for r in rows}) == 1
    assert len(rows) == len(nt.QUICK.eps_grid)
    excess = np.array([r["excess_natural"] for r in rows])
    assert np.all(np.diff(excess) >= -1e-6), excess
    assert excess[-1] > 10 * max(excess[0], 1e-9)
    np.testing.assert_allclose([r["eps"] for r in rows], nt.QUICK.eps_grid, rtol=1e-6)


def test_the_adversaries_reach_their_eps_and_say_how_much_of_the_slack_they_use(quick):
    result, _ = quick
    adv = [r for r in result["rows"] if r["family"].startswith("adversarial") and r["bound"] == "any-lm"]
    assert adv and {r["eps_kind"] for r in adv} == {"absolute", "critical×0.5"}
    for r in adv:
        assert r["eps"] == pytest.approx(r["target_eps"], rel=1e-6) and r["holds"]
        assert r["loss_natural"] <= r["loss_ceiling"] + 1e-12  # (a) is at most the ceiling, any LM's laws
        if r["B_choice"] == "B*":  # B* minimises the bound, so (b) cannot fail iff the bound there is ≥ log 2
            assert r["trivial_best"] == (r["bound_value"] >= math.log(2))
            assert r["slack_used"] <= 1 + 1e-9
        if r["trivial"]:  # no LM can fail it: the bound is at least the largest (a) any LM can give
            assert r["bound_value"] >= r["loss_ceiling"]
        if r["target_eps"] >= r["critical_eps"]:  # past the critical ε (b) cannot fail the bound; (a) still can
            assert r["trivial_best"]
    # below the critical ε the aligned tilt uses a real share of the slack
    half = [r for r in adv if r["eps_kind"] == "critical×0.5" and r["B_choice"] == "B*" and not r["trivial"]]
    assert half and max(r["slack_used"] for r in half) > 0.2


def test_the_summary_separates_trivial_rows_and_reports_the_targets(quick):
    result, _ = quick
    text = nt.summary(result)
    assert "triv" in text.splitlines()[0] and "targets: violations 0" in text and "ε-exponent" in text
    t = nts.targets(result)
    assert t["violations"] == 0 and 0 <= t["loglinear"]["nontrivial_share"] <= 1
    slopes = [v for v in t["loglinear"]["slopes"].values() if np.isfinite(v)]
    assert slopes and all(0.3 <= v <= 0.8 for v in slopes), slopes  # first order at a fixed radius: ≈ √ε


def test_the_natural_task_check_flags_each_row_by_what_its_own_loss_can_reach():
    # the reviewer's case (aligned adversary at 4ε_c, sign task): the bound is ≥ log 2, so the (b) row cannot
    # fail; the (a) row can — an LM's laws take the transferred classifier up to the ceiling — so it is live
    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    task = random_natural_task(C, 0, noise="sign")
    r = check_natural_task(C, adversarial_laws(C, task, 4 * critical_epsilon(C, task), B=16.0), task)
    rows = {x["quantity"]: x for x in _natural_rows("", r.bounds, r.eps, r.atol)}
    for b in r.bounds:
        i = b.index
        a, best = rows[f"{b.name}:loss_natural"], rows[f"{b.name}:loss_best"]
        assert a["trivial"] == bool(b.bound[i] >= b.loss_ceiling[i]) and a["loss_ceiling"] == b.loss_ceiling[i]
        top = best_loss_ceiling(task.pos, task.neg, b.B_grid[i], b.constraint)  # ≤ log 2: the labels' balance
        assert best["trivial"] == bool(b.bound[i] >= top) and best["loss_ceiling"] == top <= LOG2
    assert rows["any-lm:loss_best"]["trivial"] and not rows["any-lm:loss_natural"]["trivial"]


@pytest.mark.parametrize("offset, holds", [(-1e-9, True), (-1e-6, False)])
def test_a_row_within_the_checks_rounding_of_its_bound_gets_the_checks_verdict(offset, holds):
    """The exact laws' loss (a) is τ itself, so with a bound of τ + ``offset`` (a form with no slack) the row
    sits ``−offset`` above its bound: within the check's ``atol`` (1e-9 < 1e-7) it holds, as the bound's own
    verdict does, and the row records that ``atol``; beyond it (1e-6) both say violated.  No slack beyond
    rounding, no share of it."""
    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    task = random_natural_task(C, 0, noise="logistic")
    r = check_natural_task(C, C.next_token_probs, task, forms={"any-lm": lambda t, B, e, g: t + offset})
    b = r.bound("any-lm")
    assert r.atol == ATOL and b.holds is holds
    assert b.loss_natural[b.index] - b.bound[b.index] == pytest.approx(-offset, rel=1e-3)  # over it by −offset
    rows = {x["quantity"]: x for x in _natural_rows("", r.bounds, r.eps, r.atol)}
    for name in ("loss_natural", "loss_best"):
        x = rows[f"any-lm:{name}"]
        assert x["holds"] is holds and x["atol"] == ATOL and x["slack_used"] is None


def test_a_slack_no_larger_than_the_checks_rounding_has_no_share():
    """``slack_used`` divides by bound − τ: a slack of 1e-9 (≤ atol) is rounding, not room, so the bound and
    its rows give no share (NaN, None); a slack of 1e-3 gives the share the loss takes of it (0 here: the
    exact laws' loss (a) is τ)."""
    C = enumerate_contexts(HMM.random(0, 3, 4), 2)
    task = random_natural_task(C, 0, noise="logistic")
    for slack, share in ((1e-9, None), (1e-3, 0.0)):
        r = check_natural_task(C, C.next_token_probs, task, forms={"any-lm": lambda t, B, e, g: t + slack})
        b = r.bound("any-lm")
        [x] = [x for x in _natural_rows("", r.bounds, r.eps, r.atol) if x["quantity"] == "any-lm:loss_natural"]
        if share is None:
            assert math.isnan(b.slack_used) and x["slack_used"] is None
        else:
            assert b.slack_used == pytest.approx(share, abs=1e-6) and x["slack_used"] == pytest.approx(share, abs=1e-6)


def test_bad_adversary_options_raise_typed_errors():
    with pytest.raises(ConfigError, match="adversaries"):
        nt.Config(adversaries=("adversarial-nope",))
    with pytest.raises(ConfigError, match="adversary_radii"):
        nt.Config(adversary_radii=(3.0,))
    with pytest.raises(ConfigError, match="tasks"):
        nt.Config(tasks=("random-gaussian",))


def test_task_options_that_would_make_no_task_or_drop_the_lms_are_refused_with_the_config():
    """They were accepted: no task survived the noise filter (StopIteration mid-sweep), lm_tasks outside the
    checked tasks dropped every analytic and trained LM silently, prompt lengths past max_length made no task;
    a radius within rounding of the grid was kept as given and failed the summary's lookup after the sweep."""
    for options, words in [({"tasks": ("random-sign",), "noises": ("logistic",)}, "^tasks: none of"),
                           ({"tasks": ("random-sign",), "lm_tasks": ("indicative-logistic",)}, "^lm_tasks: "),
                           ({"prompt_lengths": (5,), "max_length": 2}, "^prompt_lengths: "),
                           ({"lm_tasks": ("random-sign",), "noises": ("logistic",)}, "^lm_tasks: ")]:
        with pytest.raises(ConfigError, match=words):
            nt.Config(**options)
    assert nt.Config(adversary_radii=(1.0 + 1e-13,)).adversary_radii == (1.0,)


def test_a_softmax_adversary_float32_cannot_put_at_its_epsilon_is_skipped_with_why_not_mislabelled():
    """On the indicative-sign task u=1 the softmax tilt's θ reaches |θ| ≈ 9e7, where ε_Φ jumps as entries round:
    the solve landed at 0.0013137 and the LM was labelled ε = 0.001 (31 % off).  It is skipped now, with the
    reason; the tasks it can reach keep their LM at ε (≤ 1e-6 relative)."""
    import dataclasses

    world, _ = nt.make_world("loglinear", nt.QUICK)
    config = dataclasses.replace(nt.QUICK, tasks=("indicative-sign",), lm_tasks=("indicative-sign",),
                                 kinds=("uniform-mixture",), eps_grid=(1e-3,), adversaries=("adversarial-softmax",),
                                 critical_fractions=())
    result = nt.evaluate_world("loglinear", world, config, None, trained=False, log_partition=False,
                               log=lambda *a: None)
    rows = [r for r in result["rows"] if r["lm"] == "adversarial-softmax" and r["bound"] == "softmax"]
    assert rows and all(abs(r["eps_phi"] / r["target_eps"] - 1) <= 1e-6 for r in rows)
    assert "u=1" not in {r["task"] for r in rows}
    [skip] = [s for s in result["skipped"] if s["lm"] == "adversarial-softmax" and s["task"] == "u=1"]
    assert "cannot realise 0.001 nats" in skip["why"]


def test_the_results_are_written_as_strict_json(quick):
    result, out = quick

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    saved = json.loads((out / "results.json").read_text(), parse_constant=no_constants)
    assert len(saved["rows"]) == len(result["rows"]) and saved["violations"] == []
    assert saved["log_partition"] and saved["training"] and saved["time_s"] > 0


def test_the_results_and_plots_are_written_under_the_sweeps_lock(quick, monkeypatch):
    """Written after the lock was released, a rerun let in meanwhile could have its newer files overwritten."""
    from locking import probe_writes

    _, out = quick
    seen = probe_writes(monkeypatch, nt, out)
    assert nt.command(["--quick", "--out", str(out)])["new_cells"] == 0
    assert seen == [True]


def test_an_undetermined_log_partition_fit_carries_its_caveat_to_the_report(quick):
    """The quick log-linear world's θ sit in a few tight clusters (one per hidden state) that the quadratic's
    coefficients fit exactly: R² ≈ 1 with ``determined`` False read in report.md as a measurement of 1."""
    _, out = quick
    fits = [r for r in read_results(out) if r["quantity"] == "log_partition:r2_logz"]
    assert any(not r["determined"] for r in fits)
    assert all((r.get("caveat") == nt.UNDETERMINED) == (not r["determined"]) for r in fits)


def test_the_plots_are_pngs(quick):
    pytest.importorskip("matplotlib")
    _, out = quick
    for name in ("natural_tasks", "eps", "gamma", "ratio", "log_partition"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the pieces ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def contexts():
    return enumerate_contexts(LogLinearWorld.random(0, n_states=3, n_symbols=4, dim=2), 2)


def test_a_causal_transformer_on_the_contexts_is_the_softmax_lm_of_its_features(contexts):
    lm = TransformerLM(init_transformer(TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=2,
                                                          max_len=3), seed=0))
    soft = nt.context_softmax_lm(lm, contexts)
    logp = np.asarray(lm.next_token_logprobs(nt.padded_contexts(contexts)), np.float64)
    laws = np.exp(logp[np.arange(len(logp)), contexts.lengths])  # row |s|: the law after s
    np.testing.assert_allclose(lm_laws(soft, contexts), laws, atol=1e-5)


def test_task_prompts_start_with_p_L_and_slice_rarer_with_length():
    contexts = enumerate_contexts(LogLinearWorld.random(0, n_states=3, n_symbols=4, dim=2), 3)
    prompts = nt.task_prompts(contexts, (1, 2))
    assert prompts[0] is None and {len(u) for u in prompts[1:]} == {1, 2}
    p_L = contexts.weights / contexts.weights.sum()
    g = lambda u: gamma(p_L, random_natural_task(contexts, 0, prompt=u).weights)  # = p_L(slice)
    gammas = [g(u) for u in prompts]
    assert gammas[0] == pytest.approx(1.0) and all(x < 1 for x in gammas[1:])
    assert gammas[1] >= gammas[2] and gammas[3] >= gammas[4]  # the most, then the least likely prompt
    assert gammas[4] < gammas[2]  # the rarest 2-token slice is rarer than the rarest 1-token one
    for u in prompts[3:]:  # a longer prompt slices a subset
        assert g(u) < g(u[1:])


def test_solve_scale_hits_the_target_or_says_it_cannot():
    assert nt.solve_scale(lambda s: s**2, 0.25) == pytest.approx(0.5, rel=1e-10)
    with pytest.raises(ConfigError, match="unreachable"):
        nt.solve_scale(lambda s: s / (1 + s), 2.0)


def test_the_experiment_is_the_sweep_of_its_shipped_config(quick):
    """The shipped TOML is the default Config's sweep; the quick run's directory is an ordinary sweep whose
    tidy rows give the experiment's result back (one cell per world and part)."""
    from simlm.experiments.sweep import load_config, parse_config, read_results

    assert load_config(nt.shipped_config()) == parse_config(nt.sweep_config(nt.Config()))
    assert nt.config_of(nt.load_shipped()) == (nt.Config(), True)
    result, out = quick
    assert result["new_cells"] == 2 * len(nt.QUICK.worlds) and not result["errors"]
    again = nt.result_of(read_results(out), nt.QUICK)
    for part in ("rows", "log_partition", "training", "skipped"):
        assert json.dumps(again[part], sort_keys=True) == json.dumps(json.loads(json.dumps(result[part])), sort_keys=True)
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:9] == ["paper", "check", "world", "world_seed", "lm", "lm_seed", "eps", "eps_se", "quantity"]
    # rows of LMs the check built (or skipped) carry their own ε, not the cell's oracle's 0
    unset = lambda v: v is None or (isinstance(v, float) and math.isnan(v))
    own = {q: [r for r in read_results(out) if r["quantity"] == q] for q in ("training:epsilon", "skipped",
                                                                                "log_partition:r2_logz")}
    assert own["training:epsilon"] and own["log_partition:r2_logz"]  # (the quick run skips no target)
    assert all(r["eps"] == r["measured"] and r["eps_se"] == r["epsilon_se"] for r in own["training:epsilon"])
    assert all(unset(r["eps"]) and unset(r["eps_se"]) for r in own["skipped"] + own["log_partition:r2_logz"])


def test_nulls_in_numeric_columns_are_nan_again_so_the_summary_reads_numbers(quick):
    """Strict JSON stores NaN and ±inf as null: rebuilt from the tidy rows, such a value is a number again wherever
    its column holds numbers — +inf in the columns that are never NaN (a slack: the bound less τ, +inf where γ_Φ
    = 0 or the LM is at infinite KL; as NaN it printed nan as the summary's median slack), NaN elsewhere — and the
    summary still renders."""
    from simlm.experiments.sweep import read_results

    result, out = quick
    rows = read_results(out)
    first = next(i for i, r in enumerate(rows) if r["quantity"].endswith(":loss_natural"))
    rows[first] = {**rows[first], "slack": None, "ratio_natural": None}
    again = nt.result_of(rows, nt.QUICK)
    assert any(math.isinf(r["slack"]) and math.isnan(r["ratio_natural"]) for r in again["rows"])
    assert nt.summary(again)


# ---- the rows, the table and the verdict, pinned to their definitions -------------------------------------

@pytest.fixture(scope="module")
def quick_world_task():
    """The quick sweep's log-linear world, its contexts and its γ = 1 random-logistic task."""
    world, _ = nt.make_world("loglinear", nt.QUICK)
    contexts = enumerate_contexts(world, nt.QUICK.max_length)
    return contexts, random_natural_task(contexts, nt.QUICK.task_seed, noise="logistic")


def _infinite_any_lm_bound(contexts, lm, task, **options):
    return check_natural_task(contexts, lm, task, forms={"any-lm": lambda t, B, e, g: math.inf}, **options)


@pytest.mark.parametrize("lm_of, forms, case", [
    (lambda P: 0.999999999 * P + 1e-9 / P.shape[1], "default", lambda x: 0 < x["slack"] <= ATOL),
    (lambda P: 0.8 * P + 0.2 / P.shape[1], "default", lambda x: abs(x["excess_natural"] - x["excess_best"]) > 1e-3),
    (lambda P: 0.8 * P + 0.2 / P.shape[1], "infinite any-lm", lambda x: x["slack"] == math.inf)],
    ids=["slack-below-atol", "a-and-b-apart", "infinite-slack"])
def test_check_rows_read_each_bound_at_b_star_and_at_the_first_radius_that_solves_the_task(
        quick_world_task, lm_of, forms, case, monkeypatch):
    """Per bound of ``check_natural_task``: the B* row at the bound's minimising index, the B_tau row at the
    FIRST (smallest) grid radius with τ(B) ≤ min τ + TAU_TOL; slack = bound − τ, excess = loss − τ;
    ``ratio_*`` = excess/slack, NaN where slack ≤ ATOL; ``slack_used`` = excess (a)/slack, NaN where the
    slack is ≤ ATOL or infinite — at B* the check's own ``slack_used``."""
    contexts, task = quick_world_task
    check = check_natural_task if forms == "default" else _infinite_any_lm_bound
    monkeypatch.setattr(nt, "check_natural_task", check)
    lm = lm_of(contexts.next_token_probs)
    rows = {(r["bound"], r["B_choice"]): r for r in nt.check_rows(contexts, lm, task, {"lm": "test"})}
    r = check(contexts, lm, task)
    assert set(rows) == {(b.name, c) for b in r.bounds for c in nt.B_CHOICES}
    several = False
    for b in r.bounds:
        j = b.worst_index(r.atol)  # the radius where the bound comes nearest to failing, on both records
        assert all(rows[(b.name, c)]["worst_B"] == b.B_grid[j] and rows[(b.name, c)]["worst_bound"] == b.bound[j]
                   and rows[(b.name, c)]["worst_tau"] == b.tau[j] for c in nt.B_CHOICES)
        solved = [i for i in range(len(b.B_grid)) if b.tau[i] <= b.tau.min() + nt.TAU_TOL]
        several |= len(solved) > 1
        for choice, i in (("B*", b.index), ("B_tau", solved[0])):
            x = rows[(b.name, choice)]
            assert x["B"] == b.B_grid[i] and x["tau"] == b.tau[i] and x["bound_value"] == b.bound[i], (b.name, choice)
            slack = b.bound[i] - b.tau[i]
            excess = (b.loss_natural[i] - b.tau[i], b.loss_best[i] - b.tau[i])
            assert x["slack"] == slack and (x["excess_natural"], x["excess_best"]) == excess
            for key, e in (("ratio_natural", excess[0]), ("ratio_best", excess[1])):
                if slack > ATOL:
                    assert x[key] == pytest.approx(e / slack, rel=1e-12, abs=1e-300), (b.name, choice, key)
                else:
                    assert math.isnan(x[key]), (b.name, choice, key, x[key])
            if ATOL < slack < math.inf:
                assert x["slack_used"] == pytest.approx(excess[0] / slack, rel=1e-12, abs=1e-300), (b.name, choice)
            else:
                assert math.isnan(x["slack_used"]), (b.name, choice, x["slack_used"])
            if choice == "B*":
                np.testing.assert_equal(x["slack_used"], b.slack_used)
    assert several  # the first solved radius is not the only one: the choice among them matters
    assert any(case(x) for x in rows.values())  # the case this LM is here for occurs


def test_task_prompts_are_the_most_and_least_likely_suffix_slices_with_two_distinct_laws():
    """Brute force over every prompt u of each length k: its slice is the contexts ENDING with u (the
    task's own ``prompt=`` slicing), kept only if they hold ≥ 2 distinct laws; the prompts are None, then per k
    the slices of largest and smallest mass p_L(slice) (ties: by u), without repeats."""
    contexts = enumerate_contexts(LogLinearWorld.random(0, 3, 4, dim=2), 3)
    P, p_L = contexts.next_token_probs, contexts.weights / contexts.weights.sum()
    expected = [None]
    for k in (1, 2):
        ok = []
        for u in itertools.product(range(4), repeat=k):
            sl = [i for i, s in enumerate(contexts.prefixes) if len(s) >= k and tuple(s[-k:]) == u]
            assert np.array_equal(sl, np.flatnonzero(random_natural_task(contexts, 0, prompt=u).weights))
            if np.abs(P[sl] - P[sl[0]]).max() > 1e-6:  # ≥ 2 distinct laws
                ok.append((p_L[sl].sum(), u))
        ok.sort()
        expected += [u for u in (ok[-1][1], ok[0][1]) if u not in expected]
    prompts = nt.task_prompts(contexts, (1, 2))
    assert prompts == expected == [None, (3,), (0,), (3, 2), (2, 2)]
    for u in prompts[1:]:
        task = random_natural_task(contexts, 0, prompt=u)
        assert len(np.unique(P[task.weights > 0].round(9), axis=0)) >= 2  # a task with two labels' worth of laws


def test_each_lm_family_is_named_for_what_it_is_and_carries_the_bounds_its_features_allow(quick):
    """The perturbed laws (kinds needing no direction) are ``analytic-laws``: laws only, so only the p_f bounds
    (the check has no (θ, Φ) for Φp_f or f); θ* + σG and f* + σG are ``analytic-softmax`` and the trained
    transformers ``trained``: softmax LMs, so every feature set."""
    result, _ = quick
    pairs = {(r["lm"].split("@")[0], r["family"]) for r in result["rows"]}
    assert pairs == {("uniform-mixture", "analytic-laws"), ("theta-noise", "analytic-softmax"),
                     ("quad-noise", "analytic-softmax"), ("trained-ce", "trained"),
                     ("adversarial-aligned", "adversarial"), ("adversarial-aligned", "adversarial-fixed-B")}
    for family, features in (("analytic-laws", {"p_f"}), ("analytic-softmax", set(nt.FEATURES)),
                             ("trained", set(nt.FEATURES))):
        rows = [r for r in result["rows"] if r["family"] == family]
        assert {r["features"] for r in rows} == features, family
        assert all(math.isnan(r["eps_phi"]) != (family != "analytic-laws") for r in rows), family


def test_the_analytic_and_trained_lms_are_checked_on_the_lm_tasks_only(quick):
    """Config: the analytic and trained LMs (and the softmax and Quad adversaries) on ``lm_tasks`` only, on
    every prompt; the law adversaries (aligned, search) on every task."""
    result, _ = quick
    config = nt.QUICK
    assert set(config.lm_tasks) < set(config.tasks)  # some task is for the law adversaries alone
    prompts = {r["task"] for r in result["rows"]}
    for family in ("analytic-laws", "analytic-softmax", "trained"):
        rows = [r for r in result["rows"] if r["family"] == family]
        assert {r["task_kind"] for r in rows} == set(config.lm_tasks), family
        assert {r["task"] for r in rows} == prompts, family
    others = [r for r in result["rows"] if r["task_kind"] not in config.lm_tasks]
    assert {r["task_kind"] for r in others} == set(config.tasks) - set(config.lm_tasks)
    assert {r["lm"].split("@")[0] for r in others} <= {"adversarial-aligned", "adversarial-search"}


def _summary_number(token):
    return math.nan if token == "nan" else float(token)


def test_the_summary_table_body_is_the_rows_grouped_and_counted(quick):
    """Each body line of the summary is one (B choice, features, bound, family, trivial) group of the rows:
    its row count, median slack and excess (a), median and max ratio (a), max ratio (b), the largest (b)/bound
    and the rows that do not hold; then the counts over the B* rows of B at the grid's smallest radius, of
    ``trivial`` and of ``trivial_best`` ((b) alone)."""
    result, _ = quick
    rows = result["rows"]
    lines = nt.summary(result).splitlines()
    assert set(lines[1]) == {"-"}
    end = next(i for i, line in enumerate(lines) if line.startswith("B* at the grid's smallest radius"))
    seen = set()
    for line in lines[2:end]:
        choice, features, bound, family, triv, *numbers = line.split()
        assert triv in ("yes", "no") and len(numbers) == 8, line
        key = (choice, features, bound, family, triv == "yes")
        g = [r for r in rows if (r["B_choice"], r["features"], r["bound"], r["family"], r["trivial"]) == key]
        ra = [r["ratio_natural"] for r in g if np.isfinite(r["ratio_natural"])]  # NaN: no slack beyond rounding
        rb = [r["ratio_best"] for r in g if np.isfinite(r["ratio_best"])]
        want = [len(g), np.median([r["slack"] for r in g]), np.median([r["excess_natural"] for r in g]),
                np.median(ra) if ra else math.nan, max(ra, default=math.nan), max(rb, default=math.nan),
                max(r["loss_best"] / r["bound_value"] for r in g),
                sum(1 for r in g if not r["holds"])]
        got = [_summary_number(t) for t in numbers]
        assert got[0] == want[0] and got[7] == want[7], line
        np.testing.assert_allclose(got[1:7], want[1:7], rtol=6e-3, err_msg=line)  # printed to 3 digits
        seen.add(key)
    assert seen == {(r["B_choice"], r["features"], r["bound"], r["family"], r["trivial"]) for r in rows}
    star = [r for r in rows if r["B_choice"] == "B*"]
    assert lines[end] == (f"B* at the grid's smallest radius in {sum(r['B'] == r['B_grid'][0] for r in star)} "
                          f"of {len(star)} rows")
    counts = re.search(r": (\d+) of (\d+) rows at B\*; \(b\) alone \(bound ≥ log 2 at every B\): (\d+)$", lines[end + 1])
    assert counts and [int(x) for x in counts.groups()] == [sum(r["trivial"] for r in star), len(star),
                                                             sum(r["trivial_best"] for r in star)]
    assert 0 < sum(r["trivial"] for r in star) < sum(r["trivial_best"] for r in star)  # the two counts differ here


def test_a_violated_bound_is_one_violation_not_one_per_choice_of_b(quick):
    """A bound fails at some B of the grid or not: its B* and B_tau rows share the verdict (``holds`` is over
    the whole grid), and the result lists the bound once, by its B* row."""
    _, out = quick
    rows = read_results(out)
    mine = lambda r: (r["quantity"].startswith("any-lm:") and r["quantity"].endswith(":loss_natural")
                      and r["lm_kind"] == "uniform-mixture" and r["target_eps"] == 0.1 and r["task"] == "p_L")
    hit = [i for i, r in enumerate(rows) if mine(r)]
    assert len(hit) == len(nt.B_CHOICES)
    for i in hit:
        rows[i] = {**rows[i], "holds_every_B": False}
    again = nt.result_of(rows, nt.QUICK)
    assert len(again["violations"]) == 1
    [v] = again["violations"]
    assert v["B_choice"] == "B*" and v["lm"] == "uniform-mixture" and v["bound"] == "any-lm"
    assert sum(not r["holds"] for r in again["rows"]) == 2


# ---- review (2026-12-05): the trained LMs' seed, calibration as stored, an unbounded ceiling ------------

def test_trained_lm_rows_carry_the_seed_the_lm_was_trained_with(tmp_path):
    """Bound rows of a trained LM read lm_seed = config.seed (1) while the transformer trained with seed 0,
    and its training:epsilon row said 0: one LM, two seeds in one sweep."""
    cfg = nt.Config(worlds=("loglinear",), n_symbols=4, n_states=3, dim=3, max_length=2, seed=1, eps_grid=(0.1,),
                    kinds=("uniform-mixture",), prompt_lengths=(1,), ce_targets=(1.0,), quad_targets=(), d_model=4,
                    max_steps=30, tasks=("random-logistic",), adversaries=(), critical_fractions=(0.5,))
    nt.run(cfg, tmp_path, train_lms=True, log=lambda *a: None)
    seeds = {(r["quantity"].split(":")[0] == "training", r["lm_seed"]) for r in read_results(tmp_path)
             if str(r["lm"]).startswith("trained") and not r["quantity"].startswith("log_partition")}
    assert seeds == {(True, 0), (False, 0)}
    analytic = {r["lm_seed"] for r in read_results(tmp_path) if str(r["lm"]).startswith("uniform-mixture")}
    assert analytic == {1}


def test_a_softmax_lm_is_labelled_with_its_target_only_if_it_reaches_it_as_stored():
    """θ* + σG and f* + σG were calibrated on float64 θ and Φ; the LM stores them in float32 and the check
    measures ε on what it stores: at ε = 1e-4 on this world ε_Φ read 1.3e-6 relative off the target it was
    labelled with (CALIBRATION_RTOL is 1e-6).  Calibrated on the stored values now: every LM yielded is
    within the tolerance as the check measures it (measured ≤ 6.6e-7), a target the rounding steps over is
    skipped, saying so."""
    from simlm.theory.natural_tasks import quad_epsilon, softmax_excess

    cfg = nt.Config(worlds=("loglinear",), n_symbols=4, n_states=3, dim=3, max_length=2, eps_grid=(1e-5, 1e-4, 1e-3),
                    kinds=("theta-noise", "quad-noise"), prompt_lengths=(1,), ce_targets=(0.3,), quad_targets=(),
                    tasks=("random-logistic",), adversaries=(), critical_fractions=(0.5,))
    world, phi = nt.make_world("loglinear", cfg)
    contexts = enumerate_contexts(world, cfg.max_length)
    P, p_L = contexts.next_token_probs, contexts.weights / contexts.weights.sum()
    skipped = []
    yielded = list(nt.analytic_lms(world, contexts, phi, cfg, skipped))
    for labels, lm in yielded:
        theta, phi_s = np.asarray(lm.theta, np.float64), np.asarray(lm.phi, np.float64)
        reached = (float(p_L @ softmax_excess(theta, phi_s, P)) if labels["calibrated"] == "eps_phi"
                   else quad_epsilon(contexts, theta, phi_s))
        assert abs(reached / labels["target_eps"] - 1) <= nt.CALIBRATION_RTOL, labels
    assert len(yielded) >= 4 and len(yielded) + len(skipped) == 6
    assert all("not reached" in s["why"] for s in skipped)


def test_an_unbounded_quad_ceiling_reads_inf_again_not_nan():
    """loss_ceiling is +inf on Quad features; stored as null it read NaN, so loss ≤ ceiling was False.  A bound
    (never NaN: refused) and its slack read +inf too — as NaN the summary's median slack of a group with seven
    infinite bounds printed nan (a review, 2026-12-06) — while a ratio over a slack of 0 is NaN again."""
    rows = [{"loss_ceiling": None, "slack": None, "bound_value": None, "ratio_natural": None},
            {"loss_ceiling": 0.7, "slack": 0.1, "bound_value": 0.8, "ratio_natural": 0.5}]
    again = nt._numbers_again(rows)
    assert again[0]["loss_ceiling"] == again[0]["slack"] == again[0]["bound_value"] == math.inf
    assert math.isnan(again[0]["ratio_natural"])
    assert np.median([math.inf, 0.5, 0.9]) == 0.9  # the summary's median of such a group


def test_the_best_classifiers_loss_is_at_most_its_ceiling_and_a_uniform_lm_reaches_it():
    """(b)'s maximum was log 2, too high for unbalanced labels (π₊ = 0.746 here: the labels' entropy 0.57 for
    large B), so bounds between the true maximum and log 2 — which no LM can make (b) fail — read
    non-trivial (18 of 50 rows in the reviewer's scan).  The maximum is the best constant score's loss now:
    |z| ≤ 2B on laws (box), and an LM with one law after every context reaches it."""
    C = enumerate_contexts(HMM.random(5, 3, 4), 1)
    task = random_natural_task(C, 3, noise="sign")
    assert abs(task.pos.sum() - 0.746) < 1e-3
    uniform = np.full(C.next_token_probs.shape, 0.25)
    rng = np.random.default_rng(0)
    others = [rng.dirichlet(np.ones(4), size=len(C.prefixes)) for _ in range(5)] + [C.next_token_probs]
    for laws, reaches in [(uniform, True)] + [(q, False) for q in others]:
        b = check_natural_task(C, laws, task).bound("any-lm")
        top = best_loss_ceiling(task.pos, task.neg, b.B_grid, b.constraint)
        assert np.all(b.loss_best <= top + 1e-9) and np.all(top <= LOG2 + 1e-15)
        if reaches:
            np.testing.assert_allclose(b.loss_best, top, rtol=1e-6, atol=1e-9)
    assert best_loss_ceiling(task.pos, task.neg, 256.0, "box") == pytest.approx(
        -(0.746 * np.log(0.746) + 0.254 * np.log(0.254)), abs=2e-3)  # the labels' entropy


@pytest.mark.parametrize("phi, z_max", [(np.eye(3), 2.0), (np.array([[1.0, -1.0, 0.0]]), 1.0)])
def test_the_softmax_best_classifiers_ceiling_is_reached_with_the_ones_in_the_span_or_not(phi, z_max):
    """Under the softmax bounds' span-box, v ∈ range(Φᵀ) with ‖v‖_∞ ≤ B: where that range holds the all-ones
    vector, v = c·1 scores every law c and the constant scores reach |z| ≤ 2B, as under the box; the ceiling of
    (b) took |z| ≤ B, one radius too high, so rows no LM could fail read non-trivial (a review, 2026-12-06:
    π₊ = 0.867, Φ = I).  Where 1 is not in the range, |z| ≤ B: an LM whose law is orthogonal to it reaches it."""
    from simlm.models import SoftmaxContextLM
    from simlm.theory.natural_tasks import natural_task

    C = enumerate_contexts(HMM.random(0, 2, 3), 1)
    P = np.asarray(C.next_token_probs, np.float64)
    z = P @ np.array([1.0, -1.0, 0.3])
    task = natural_task(C, np.array([1.0, -1.0, 0.3]), -np.quantile(z, 0.1) + 1e-3, noise="sign")
    p, n = task.pos.sum(), task.neg.sum()
    assert abs(p - 0.867) < 1e-3
    Bs = np.array([0.25, 0.5, 1.0])
    expected = p * np.logaddexp(0, -np.clip(np.log(p / n), -z_max * Bs, z_max * Bs)) + \
        n * np.logaddexp(0, np.clip(np.log(p / n), -z_max * Bs, z_max * Bs))
    # one law after every context: any law for Φ = I; for Φ = (1, −1, 0) the uniform law (θ = 0), orthogonal to it
    same = np.log([0.5, 0.3, 0.2]) if z_max == 2.0 else np.zeros(1)
    rng = np.random.default_rng(1)
    for k in range(8):
        theta = np.tile(same, (len(P), 1)) if k == 0 else 2 * rng.normal(size=(len(P), len(phi)))
        b = check_natural_task(C, SoftmaxContextLM(theta, phi), task, Phi=phi, B_grid=Bs).bound("softmax")
        assert b.constraint == "span-box"
        np.testing.assert_allclose(b.loss_best_ceiling, expected, rtol=1e-12)
        assert np.all(b.loss_best <= b.loss_best_ceiling + 1e-9), k
        if k == 0:  # one law after every context reaches it
            np.testing.assert_allclose(b.loss_best, expected, rtol=1e-6, atol=1e-9)


def test_best_loss_ceiling_refuses_radii_and_weights_that_are_not_ones():
    for B, pos, neg in ((math.inf, [0.5], [0.0]), (-1.0, [0.5], [0.5]), (math.nan, [0.5], [0.5]),
                        (1.0, [-0.5], [0.5]), (1.0, [0.0], [0.0])):
        with pytest.raises(ConfigError):
            best_loss_ceiling(pos, neg, B, "box")


def test_worst_index_is_where_a_bound_fails_most_else_its_largest_share_of_the_slack(quick_world_task):
    """``TransferBound.worst_index``: a NaN loss first, then the largest excess over the bound beyond ``atol``,
    then the largest share (a − τ)/(bound − τ) among radii with slack beyond ``atol``, else B*."""
    import dataclasses

    contexts, task = quick_world_task
    b = check_natural_task(contexts, 0.9 * contexts.next_token_probs + 0.1 / contexts.next_token_probs.shape[1],
                           task).bound("any-lm")
    share = (b.loss_natural - b.tau) / (b.bound - b.tau)
    assert b.worst_index() == int(np.argmax(share))
    over = b.loss_natural.copy()
    over[1], over[3] = b.bound[1] + 1e-3, b.bound[3] + 2e-3
    assert dataclasses.replace(b, loss_natural=over).worst_index() == 3
    assert dataclasses.replace(b, loss_natural=over).worst_index(atol=5e-3) != 3  # within atol: judged by share
    best = b.loss_best.copy()
    best[2] = math.nan
    assert dataclasses.replace(b, loss_natural=over, loss_best=best).worst_index() == 2
    infinite = b.bound.copy(), b.loss_natural.copy()
    infinite[0][0] = infinite[1][0] = math.inf  # a loss of +inf under a bound of +inf holds: not NaN's blind spot
    best = b.loss_best.copy()
    best[3] = b.bound[3] + 0.01
    assert dataclasses.replace(b, bound=infinite[0], loss_natural=infinite[1], loss_best=best).worst_index() == 3
    flat = dataclasses.replace(b, bound=b.tau.copy(), loss_natural=b.tau.copy(), loss_best=b.tau.copy())
    assert flat.worst_index(atol=1e-9) == b.index  # no slack anywhere: B*


def _experiment_rows(monkeypatch, tmp_path, world, records) -> list:
    """The experiment check's tidy rows of one analytic cell on ``world`` whose evaluation gave ``records``."""
    import types

    monkeypatch.setattr(nt, "evaluate_world",
                        lambda *a, **k: {"rows": records, "log_partition": [], "training": [], "skipped": []})
    monkeypatch.setattr(nt, "_config", lambda w, o: types.SimpleNamespace(seed=0))
    cell = types.SimpleNamespace(world=world, options={"train_lms": False}, world_spec={"name": "w"}, part="analytic",
                                 workdir=str(tmp_path))
    return nt.experiment_check(cell)


def test_the_experiment_checks_worst_radius_row_carries_only_that_radius_columns(monkeypatch, tmp_path):
    """The ``<bound>:worst_B`` row was built from the B* record: its B and bound were the worst radius's, its
    bound_value, loss_natural, slack, residual, error … B*'s."""
    world = HMM.random(0, n_states=2, n_symbols=3)
    C = enumerate_contexts(world, 1)
    task = random_natural_task(C, 0, noise="logistic")
    laws = 0.9 * C.next_token_probs + 0.1 / C.next_token_probs.shape[1]
    records = nt.check_rows(C, laws, task, {"lm": "mix", "target_eps": 0.01, "family": "x"})
    rows = _experiment_rows(monkeypatch, tmp_path, world, records)
    b = check_natural_task(C, laws, task).bound("any-lm")
    j = b.worst_index(ATOL)
    [worst] = [r for r in rows if r["quantity"] == "any-lm:worst_B"]
    assert worst["B"] == b.B_grid[j] and worst["bound"] == b.bound[j] and worst["tau"] == b.tau[j]
    assert worst["measured"] == b.loss_natural[j] and worst["loss"] == "loss_natural"
    assert not set(worst) & {"bound_value", "loss_natural", "slack", "residual", "error_natural", "tau_gap",
                             "slack_used_at_B", "loss_best_ceiling"}


def test_the_experiment_checks_worst_radius_row_is_trivial_only_if_every_radius_is(monkeypatch, tmp_path):
    """Its ``trivial`` was its own radius's: the log-linear case of tests/test_checks.py (the aligned adversary
    at ε = 0.45911 comes nearest the any-lm bound at B = 0.25, trivial there, not at B = 8) read trivial while
    the record's ``trivial_every_B`` was False (row 627 of a review's run of the experiment, 2026-12-06)."""
    from simlm.experiments.sweep import build_world

    world = build_world({"kind": "loglinear", "name": "loglinear", "seed": 0,
                         "options": {"dim": 3, "geometry": "anchor", "n_states": 4, "n_symbols": 6}})
    C = enumerate_contexts(world, 2)
    task = random_natural_task(C, 0, noise="logistic")
    cache: dict = {}
    laws = adversarial_laws(C, task, 0.45911, method="aligned", cache=cache)
    records = nt.check_rows(C, laws, task, {"lm": "adversarial-aligned", "target_eps": 0.45911, "family": "x"})
    rows = {r["quantity"]: r for r in _experiment_rows(monkeypatch, tmp_path, world, records)}
    b = check_natural_task(C, laws, task, tau_cache=cache).bound("any-lm")
    worst = rows["any-lm:worst_B"]
    j = b.worst_index(ATOL)
    assert worst["B"] == b.B_grid[j] and worst["loss_ceiling"] <= worst["bound"] and worst["holds"]
    assert worst["trivial_every_B"] is False and worst["trivial"] is False
    for q, r in rows.items():
        if q.endswith(":worst_B"):
            assert r["trivial"] == (r["holds"] and r["trivial_every_B"]), q


@pytest.mark.parametrize("name", ["loglinear", "loglinear-unstructured", "hmm"])
def test_the_world_is_drawn_from_seed_not_task_seed(name):
    """The sweep's world (the ``world_seed`` column) is drawn from ``seed``; ``task_seed`` draws the tasks
    only: changing it leaves the world and its Φ, changing ``seed`` changes the world (every other test has
    seed = task_seed = 0, so a world drawn from task_seed passed them)."""
    base = nt.Config(worlds=(name,), n_symbols=4, n_states=3, dim=3, max_length=2, seed=3, task_seed=5)
    world, phi = nt.make_world(name, base)
    assert nt.world_spec(name, base)["seed"] == 3
    same, phi_same = nt.make_world(name, dataclasses.replace(base, task_seed=0))
    other, _ = nt.make_world(name, dataclasses.replace(base, seed=0, task_seed=5))
    assert world.fingerprint() == same.fingerprint() and np.array_equal(phi, phi_same)
    assert world.fingerprint() != other.fingerprint()


def test_the_experiment_checks_best_in_ball_row_is_judged_against_its_own_ceiling(monkeypatch, tmp_path):
    """``<bound>:<B>:loss_best`` is (b), whose most any LM can make it is ``loss_best_ceiling`` (≤ log 2), not
    (a)'s ``loss_ceiling``: on the aligned adversary at 4ε_c (sign task) the any-lm bound at B* is above (b)'s
    ceiling, so its (b) row is trivial while its (a) row is live (judged by (a)'s ceiling it read live)."""
    world = HMM.random(0, 3, 4)
    C = enumerate_contexts(world, 2)
    task = random_natural_task(C, 0, noise="sign")
    laws = adversarial_laws(C, task, 4 * critical_epsilon(C, task), B=16.0)
    records = nt.check_rows(C, laws, task, {"lm": "adversarial-aligned", "target_eps": 0.1, "family": "x"})
    rows = {r["quantity"]: r for r in _experiment_rows(monkeypatch, tmp_path, world, records)}
    for rec in records:
        q = f"{rec['bound']}:{rec['B_choice']}"
        a, b = rows[f"{q}:loss_natural"], rows[f"{q}:loss_best"]
        assert a["trivial"] == bool(a["holds"] and rec["bound_value"] >= rec["loss_ceiling"]), q
        assert b["trivial"] == bool(b["holds"] and rec["bound_value"] >= rec["loss_best_ceiling"]), q
        assert b["loss_ceiling"] == rec["loss_best_ceiling"] and a["loss_ceiling"] == rec["loss_ceiling"]
    assert rows["any-lm:B*:loss_best"]["trivial"] and not rows["any-lm:B*:loss_natural"]["trivial"]
