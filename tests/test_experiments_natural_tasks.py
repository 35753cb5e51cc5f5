"""The natural-task sweep (Saunshi, Malladi & Arora 2021), run in quick mode: tidy rows, no bound
violated, the excess growing with ε, its files written; and the pieces it is built from."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simlm.errors import ConfigError
from simlm.experiments import natural_tasks as nt
from simlm.experiments import natural_tasks_adversaries as nts
from simlm.worlds.contexts import enumerate_contexts
from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer
from simlm.experiments.checks import _natural_rows
from simlm.theory.adversarial import adversarial_laws
from simlm.theory.natural_tasks import (ATOL, LOG2, check_natural_task, critical_epsilon, gamma, lm_laws,
                                        random_natural_task)
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
        assert best["trivial"] == bool(b.bound[i] >= LOG2)
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


def test_the_results_are_written_as_strict_json(quick):
    result, out = quick

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    saved = json.loads((out / "results.json").read_text(), parse_constant=no_constants)
    assert len(saved["rows"]) == len(result["rows"]) and saved["violations"] == []
    assert saved["log_partition"] and saved["training"] and saved["time_s"] > 0


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


def test_nulls_in_numeric_columns_are_nan_again_so_the_summary_reads_numbers(quick):
    """Strict JSON stores NaN and ±inf as null (a bound with γ_Φ = 0 is inf): rebuilt from the tidy rows, such
    a value is NaN again wherever its column holds numbers, and the summary still renders."""
    from simlm.experiments.sweep import read_results

    result, out = quick
    rows = read_results(out)
    first = next(i for i, r in enumerate(rows) if r["quantity"].endswith(":loss_natural"))
    rows[first] = {**rows[first], "slack": None}
    again = nt.result_of(rows, nt.QUICK)
    assert any(math.isnan(r["slack"]) for r in again["rows"])
    assert "nan" in nt.summary(again)
