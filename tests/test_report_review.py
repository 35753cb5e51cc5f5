"""The report, the tidy row, the planted-class worlds and the token-accuracy verdicts, after review: the worst
row of a bound is a violated one whenever the bound has one, a violated row is never trivial, a row refuses
what is not a number and columns it computes, the class guarantees hold for the class-emission worlds only,
and a verdict that needs two rungs or finite numbers says n/a without them."""

import itertools
import json
import math

import numpy as np
import pytest

from simlm.errors import ConfigError, ShapeError
from simlm.experiments.registry import row
from simlm.experiments.report import bound_summary, console_table, markdown, worst_row
from simlm.experiments.store import CellStore
from simlm.experiments.token_accuracy_plots import verdicts
from simlm.jsonio import jsonable, write_json_atomic
from simlm.worlds import topic

SHARED = {"paper": "p", "check": "c", "world": "w", "world_seed": 0, "lm_seed": None, "eps": 0.1, "eps_se": 0.0}


def _stored(lm: str, r: dict) -> dict:
    """Row ``r`` of LM ``lm`` as strict JSON stores it (NaN and ±inf become null)."""
    return json.loads(json.dumps(jsonable({**SHARED, "lm": lm, **r})))


# ---- 1. the worst row of a bound with violations is a violated row -----------------------------------------

def test_the_worst_row_is_a_violated_one_even_without_a_share_of_the_slack(tmp_path):
    """A violated row whose bound is its baseline has no share (zero slack), one with an infinite measured
    value a share stored as null: the worst row was the holding one, as if the bound had held.  Of two
    violated rows without a share the one further over its bound is worse (an infinite excess first)."""
    rows = [_stored("ok", row("q", 0.75, 1.0, baseline=0.5)), _stored("bad", row("q", 0.6, 0.5, baseline=0.5)),
            _stored("bad2", row("q", math.inf, 1.0, baseline=0.5))]
    assert worst_row(rows)["lm"] == "bad2" and worst_row(rows[:2])["lm"] == "bad"
    [s] = bound_summary(rows)
    assert s["violations"] == 2 and s["worst_lm"] == "w/bad2" and math.isnan(s["worst_used"])
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    assert "| c | q | 3 | 2 | 0 | violated | w/bad2 |" in markdown(rows, tmp_path, [])


def test_the_report_states_each_checks_tolerance_and_marks_a_holding_share_above_one(tmp_path):
    """A row over its bound by less than its atol holds, and its share (1.0000001) printed as "1" beside "0
    violations"; the tolerance was in no sentence of report.md (a review, 2026-12-06)."""
    rows = [_stored("near", row("q", 0.30000001, 0.3, baseline=0.2, maximum=10.0, atol=1e-7)),
            {**_stored("x", row("r", 0.1, 0.3, baseline=0.0, maximum=10.0)), "check": "exact"}]
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    text = markdown(rows, tmp_path, [])
    assert "| c | q | 1 | 0 | 0 | 1.0000001 (within atol) | w/near |" in text
    assert "the rounding its check forgives: c 1e-07; every other check's rows are judged exactly" in text
    assert "Every row is judged exactly" in markdown(rows[1:], tmp_path, [])
    # a row exactly at its bound uses all its slack and needs no tolerance: "1", not "1 (within atol)"
    exact = [_stored("tight", row("q", 0.3, 0.3, baseline=0.2, maximum=10.0, atol=1e-7))]
    assert exact[0]["slack_used"] == 1.0 and exact[0]["holds"]
    assert "| c | q | 1 | 0 | 0 | 1 | w/tight |" in markdown(exact, tmp_path, [])


def test_a_trivial_row_is_never_the_worst_row_whatever_its_share():
    """A trivial row (bound at the quantity's maximum: no LM could fail it) using 90 % of its slack beside a
    non-trivial row using 10 %: the bound's worst share and worst LM are the non-trivial row's."""
    rows = [_stored("trivial", row("q", 0.9, 1.0, maximum=1.0)), _stored("live", row("q", 0.1, 1.0))]
    assert rows[0]["trivial"] is True and rows[1]["trivial"] is None
    [s] = bound_summary(rows)
    assert (s["trivial"], s["worst_lm"]) == (1, "w/live") and s["worst_used"] == pytest.approx(0.1)


def test_the_shares_of_trivial_rows_reach_the_report_where_no_row_could_fail(tmp_path):
    """tzach/token-accuracy's expected_accuracy rows are all trivial (≤ the Bayes accuracy for every LM) and
    their share is the number that informs (the share of the Bayes gap an LM closes; −21 for a noisy LM, 1
    for the oracle): the report said `–` and dropped it (a review, 2026-12-07).  It now gives their range,
    and keeps `worst used` for the rows that could fail wherever there is one."""
    trivial = [_stored("noisy", row("q", 0.1, 0.3, baseline=0.2, maximum=0.3)),
               _stored("oracle", row("q", 0.3, 0.3, baseline=0.2, maximum=0.3))]
    assert [r["trivial"] for r in trivial] == [True, True]
    [s] = bound_summary(trivial)
    assert s["trivial_used"] == pytest.approx((-1.0, 1.0)) and math.isnan(s["worst_used"])
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    assert "| c | q | 2 | 0 | 2 | – (trivial: -1 to 1) | – |" in markdown(trivial, tmp_path, [])
    live = trivial + [_stored("live", row("q", 0.25, 0.5, baseline=0.2))]
    assert "| c | q | 3 | 0 | 2 | 0.167 | w/live |" in markdown(live, tmp_path, [])
    assert bound_summary([_stored("live", row("q", 0.25, 0.5))])[0]["trivial_used"] is None


def test_a_row_that_says_why_it_was_not_run_shows_why_in_the_report(tmp_path):
    """The natural-tasks experiment's ``skipped`` row (measured: its ε target) read as a measurement of 0.1."""
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    rows = [_stored("u@0.1", row("skipped", 0.1, why="eps: 0.1 is unreachable: max ≈ 0.0861 (|x| ≤ 1)"))]
    assert "| 0.1 — not run: eps: 0.1 is unreachable: max ≈ 0.0861 (\\|x\\| ≤ 1) |" in markdown(rows, tmp_path, [])


def test_a_rows_caveat_is_printed_beside_its_number(tmp_path):
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    rows = [_stored("fit", row("log_partition:r2_logz", 1.0, caveat="undetermined: θ too alike | say so"))]
    assert "| 1 — undetermined: θ too alike \\| say so |" in markdown(rows, tmp_path, [])


def test_the_combinations_that_do_not_apply_are_counted_per_check_in_the_report(tmp_path):
    """summary.json's (world, LM, check) combinations that do not apply were on the console only: report.md
    showed wei/head-tuning with 1 row and no word on why."""
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    assert "do not apply" not in markdown([], tmp_path, [])
    skipped = [{"cell": "w|lm@0.3#0|c/a", "why": "needs X"}, {"cell": "w|lm@0.1#0|c/a", "why": "needs X"},
               {"cell": "v|oracle#None|c/a", "why": "needs Y"}, {"cell": "v|oracle#None|c/b", "why": "needs Z"}]
    write_json_atomic(tmp_path / "summary.json", {"skipped": skipped})
    text = markdown([], tmp_path, [])
    assert "- `c/a`: 3 — needs X (2); needs Y (1)\n- `c/b`: 1 — needs Z (1)" in text


def test_violated_rows_come_first_and_one_without_a_share_before_one_with_a_share():
    rows = [_stored("ok", row("q", 0.9, 1.0)), _stored("over", row("q", 1.2, 1.0)),
            _stored("nan", row("q", math.nan, 1.0))]
    assert worst_row(rows)["lm"] == "nan"
    assert [line.split()[2] for line in console_table(rows).splitlines()[2:]] == ["nan", "over", "ok"]
    assert worst_row(rows[:2])["lm"] == "over" and worst_row(rows[:1])["lm"] == "ok"


def test_a_stored_row_flagged_trivial_and_violated_counts_as_violated_not_trivial():
    """Rows stored before a violated row was never trivial: the report takes the verdict."""
    old = {**SHARED, "lm": "old", "quantity": "q", "measured": 2.0, "bound": 1.0, "holds": False, "trivial": True,
           "slack_used": 2.0}
    rows = [old, _stored("ok", row("q", 0.5, 1.0))]
    [s] = bound_summary(rows)
    assert (s["violations"], s["trivial"], s["worst_lm"]) == (1, 0, "w/old")
    assert "(trivial)" not in console_table(rows)


# ---- 2. a row is trivial only where it holds -------------------------------------------------------------

@pytest.mark.parametrize("measured, bound", [(2.0, 1.0), (math.nan, 2.0), (math.inf, 1.0), (1.5, 2.0)])
def test_a_row_that_fails_or_exceeds_its_maximum_is_not_trivial(measured, bound):
    r = row("q", measured, bound, maximum=1.0)
    assert r["trivial"] is False
    assert row("q", 0.5, 2.0, maximum=1.0)["trivial"] is True and row("q", 0.5, 2.0)["trivial"] is None


# ---- 3. the class guarantees hold for the class-emission worlds only ----------------------------------------

def _class_guarantees(classed, T: int = 3) -> tuple:
    """By enumeration of every sequence of length ``T``: whether the emission columns of each class are
    proportional, whether every masked argmax is the top token of a class, and the largest change of a
    posterior P(h_t | x) when one token is replaced by another of its class."""
    pi, A, B = (np.asarray(a, np.float64) for a in classed.hmm.parameter_arrays())
    cls, (K, V) = classed.token_class, B.shape
    paths, xs = np.array(list(itertools.product(range(K), repeat=T))), np.array(list(itertools.product(range(V), repeat=T)))
    joint = pi[paths[:, 0]][None] * np.prod([B[paths[:, t]][:, xs[:, t]].T for t in range(T)], 0)
    joint *= np.prod([A[paths[:, t - 1], paths[:, t]] for t in range(1, T)], 0)[None]
    total = joint.sum(1)
    post = np.stack([np.stack([joint[:, paths[:, t] == k].sum(1) for k in range(K)], 1) for t in range(T)], 1)
    post = post / np.where(total > 0, total, 1)[:, None, None]
    proportional = all(np.linalg.matrix_rank(B[:, cls == c], tol=1e-6) <= 1 for c in np.unique(cls))
    tops = {int(np.flatnonzero(cls == c)[np.argmax(B[:, cls == c].sum(0))]) for c in np.unique(cls)}
    grid = total.reshape((V,) * T)
    argmaxes = {int(w) for t in range(T) for w in np.argmax(grid, t)[grid.sum(t) > 0]}
    index = {tuple(x): i for i, x in enumerate(xs)}
    change = max(np.abs(post[index[(*x[:t], w, *x[t + 1:])]] - post[i]).max()
                 for i, x in enumerate(map(tuple, xs)) if total[i] > 0 for t in range(T)
                 for w in np.flatnonzero(cls == cls[x[t]]) if total[index[(*x[:t], w, *x[t + 1:])]] > 0)
    return proportional, argmaxes <= tops, change


@pytest.mark.parametrize("build", [lambda: topic.block_zipf_hmm(0, 3, 2, leak=0.3),
                                   lambda: topic.topic_syntax_hmm(0, 2, 1, 2, switch=0.2, topic_rate=0.4)])
def test_the_class_emission_worlds_keep_their_class_guarantees(build):
    proportional, class_tops, change = _class_guarantees(build())
    assert proportional and class_tops and change < 1e-5


def test_the_confusion_groups_world_has_none_of_them_and_the_docstring_says_so():
    proportional, class_tops, change = _class_guarantees(topic.confusion_groups_hmm(0, 2, 2, noise=0.2, sharpness=0.6))
    assert not proportional and not class_tops and change > 0.1
    doc = topic.__doc__
    claims = doc[doc.index("Class emissions"):doc.index("- :func:`block_zipf_hmm`")]
    assert "confusion_groups_hmm" in claims  # the paragraph of guarantees names the constructor they miss


def test_class_emission_refuses_no_states():
    with pytest.raises(ShapeError, match="class_probs"):
        topic.class_emission(np.zeros((0, 2)), 2, 1.0)


# ---- 4. verdicts that need two rungs or finite numbers --------------------------------------------------

def _result(rungs: int = 1, apt=(0.10, 0.12), ari=(0.2, 0.6), first_ari=(0.2, 0.3), accuracy=(0.5, 0.6)) -> dict:
    """The least result dict :func:`verdicts` reads; the last rung's probe ⟨APT⟩ ``apt`` and cluster ARI
    ``ari`` along blocks (the first rung's ``first_ari`` where there are two), Bayes ⟨APT⟩ 0.19 and ARI 1;
    every standard error of a rise or a gap 0.001 (0.01 for the fine-tuned accuracy's rise)."""
    rows = lambda apts, aris: [{"readout": "probe", "mean_apt": a, "rise_se": 1e-3, "bayes_gap_se": 1e-3, "ari": b}
                               for a, b in zip(apts, aris)]
    return {"thresholds": [0.02, 0.05, 0.1],
            "block_zipf": {"n_classes": 3, "masked": {"spearman": .3, "spearman_p": 1e-6, "within_class_errors": .4,
                                                      "n_predicted": 3,
                                                      "mean_apt": .013, "accuracy": .112, "clusters": []}},
            "topic": {"rungs": [{"rows": rows((0.10, 0.11), ari), "spearman": .9}] * (rungs - 1)
                      + [{"rows": rows(apt, ari), "spearman": .9}],
                      "bayes": {"spearman": .9, "spearman_p": 1e-9, "mean_apt": 0.19}, "local": {"mean_apt": 0.12}},
            "groups": {"selected": {"clusters": [{"ari": 1.0}] * 3}},
            "groups_ladder": {"rungs": [{"rows": rows(apt, first_ari)}] * (rungs - 1) + [{"rows": rows(apt, ari)}],
                              "bayes": {"clusters": [{"ari": 1.0}] * 3}},
            "finetune": {"accuracy": list(accuracy), "rise_se": 0.01, "corr_bayes": 0., "corr_model": 0.,
                         "bayes_accuracy": .9},
            "substitution": {m: {"tv_exact": t, "dconf_model": 0.}
                             for m, t in (("within", 0.0), ("across", .2), ("random", .1))}}


def test_clusters_sharpening_needs_two_rungs_and_defined_aris():
    sharpen = "clusters_sharpen_along_blocks"
    one = verdicts(_result(1))[sharpen]
    assert one[0] == "n/a" and "one rung" in one[1]
    assert verdicts(_result(2))[sharpen][0] == "(ii)"  # rises; 0.6 is closer to Bayes' 1 than the first rung's 0.3
    assert verdicts(_result(2, first_ari=(0.2, 0.9)))[sharpen][0] == "(iii)"  # rises, but moved away from Bayes
    assert verdicts(_result(2, ari=(0.6, 0.2)))[sharpen][0] == "(iii)"  # falls along blocks
    # the documented groups-world run: ARI 0 at block 0 -> 1 (Bayes) at the last block, at every rung
    assert verdicts(_result(2, ari=(0.0, 1.0), first_ari=(0.0, 1.0)))[sharpen][0] == "(ii)"
    off_grid = _result(2)
    off_grid["config"] = {"threshold": 0.15}  # a τ at which no Bayes clustering was computed
    verdict, why = verdicts(off_grid)[sharpen]
    assert verdict == "n/a" and "not at the probes' τ" in why
    # a rise that stays as far from Bayes at every rung closes nothing as ε falls
    assert verdicts(_result(2, ari=(0.0, 0.43), first_ari=(0.0, 0.43)))[sharpen][0] == "(iii)"
    undefined = verdicts(_result(2, ari=(None, 0.6)))[sharpen]  # an undefined ARI is not an ARI of 0
    assert undefined[0] == "n/a" and "undefined" in undefined[1]
    assert verdicts(_result(2, ari=(0.2, math.nan)))[sharpen][0] == "n/a"


def test_finetuning_is_read_on_one_lm_so_a_rise_cannot_be_a_gap_closing_as_eps_falls():
    improves = "finetuning_improves_along_blocks"
    for rungs in (1, 2):
        v = verdicts(_result(rungs))[improves]
        assert v[0] == "n/a" and "last rung" in v[1]
    assert verdicts(_result(2, accuracy=(0.6, 0.5)))[improves][0] == "(iii)"
    assert verdicts(_result(2, accuracy=(math.nan, 0.6)))[improves][0] == "n/a"


def test_the_order_parameter_and_the_apt_gap_need_finite_numbers():
    assert verdicts(_result(2, apt=(math.nan, 0.12)))["order_parameter_rises_along_blocks"][0] == "n/a"
    r = _result(2)
    r["block_zipf"]["masked"]["mean_apt"] = math.nan
    assert verdicts(r)["apt_much_below_accuracy"][0] == "n/a"


# ---- 5. a row refuses what is not a number and the columns it computes ---------------------------------

def test_a_row_refuses_a_non_number_and_a_computed_column():
    with pytest.raises(ConfigError, match="measured"):
        row("q", None, 1.0)
    with pytest.raises(ConfigError, match="bound"):
        row("q", 0.5, "1.0")
    for key in ("holds", "trivial", "slack_used"):
        with pytest.raises(ConfigError, match=key):
            row("q", 2.0, 1.0, **{key: True})
    assert row("q", np.float32(0.5), np.int64(1), extra=3)["extra"] == 3


# ---- review (2026-12-05): what the tables and plots of a results directory show ------------------------

def test_a_column_parquet_cannot_type_is_written_as_text_not_a_crash(tmp_path):
    """A list mixing numbers and labels, or an integer past 64 bits, raised in pyarrow after every cell was
    stored: no summary, and every later `simlm report` of the directory raised the same."""
    pq = pytest.importorskip("pyarrow.parquet")
    from simlm.experiments.sweep import write_tables

    rows = [{**row("q", 0.1, 1.0), "mixed": [1.0, "B*"], "huge": 2**70},
            {**row("q", 0.2, 1.0), "mixed": [2.0, "B"], "huge": 3}]
    paths = write_tables(rows, tmp_path)
    table = pq.read_table(paths[-1]).to_pydict()
    assert table["mixed"] == ['[1.0, "B*"]', '[2.0, "B"]'] and table["huge"] == [str(2**70), "3"]
    assert table["measured"] == [0.1, 0.2]


def test_a_sweep_json_that_is_not_an_object_is_a_config_error(tmp_path):
    from simlm.experiments.sweep import read_results

    (tmp_path / "cells.jsonl").write_text("")
    (tmp_path / "sweep.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="sweep.json holds a JSON list"):  # an AttributeError in simlm report
        read_results(tmp_path)


def test_an_infinite_bound_is_trivial_whatever_the_maximum():
    """No finite value fails +∞; without a maximum the row read non-trivial ('worst used 0')."""
    assert row("q", 0.3, math.inf)["trivial"] is True
    assert row("q", math.nan, math.inf)["trivial"] is None and row("q", math.nan, math.inf)["holds"] is False
    assert row("q", 0.3, 1.0)["trivial"] is None


def test_the_oracle_is_drawn_left_of_every_lm_on_the_log_axis():
    """LMs at ε = 7.2e-5 were drawn in the oracle's column at 1e-4, reading as ε = 0."""
    from simlm.experiments.report import _oracle_x

    assert _oracle_x([0.0, 0.01, 0.3]) == 1e-4
    assert _oracle_x([0.0, 7.2e-5, 0.1]) == pytest.approx(7.2e-6)


def test_the_console_table_tells_long_names_apart_and_says_when_it_is_cut():
    """Names were cut at their end (adversarial-aligned@B=1@0.01 and …@0.0015834 both read
    'adversarial-aligned@B='), trivial rows led the 'worst first' order, and the table stopped at 60 rows
    without saying so."""
    rows = [{**row(q, 0.5, 1.0, maximum=1.0 if trivial else None), "check": "c", "world": "w", "lm": lm, "eps": 0.1}
            for lm, q, trivial in (("adversarial-aligned@B=1@0.01", "worst-case:well-specified:loss_natural", False),
                                   ("adversarial-aligned@B=1@0.0015834", "worst-case:well-specified:loss_best", False),
                                   ("oracle", "q", True))]
    lines = console_table(rows, limit=2).splitlines()
    assert "@0.01" in lines[2] + lines[3] and "@0.0015834" in lines[2] + lines[3]
    assert "loss_natural" in lines[2] + lines[3] and "loss_best" in lines[2] + lines[3]
    assert "(trivial)" not in lines[2] + lines[3]  # the trivial row comes last, and is cut
    assert lines[-1].startswith("… the first 2 of 3 bounded rows")


# ---- 5. after the second review: the row keeps its baseline; the CLI counts trivial rows as the report -------

def test_a_row_keeps_its_baseline_so_its_share_is_recomputable_from_the_row_alone():
    r = row("q", 0.75, 1.0, baseline=0.5)
    assert r["baseline"] == 0.5 and r["slack_used"] == pytest.approx((r["measured"] - 0.5) / (r["bound"] - 0.5))
    assert "baseline" not in row("q", 0.75, 1.0)  # no baseline given: none stored (0 is not a claim)


def test_the_sweeps_summary_line_counts_a_violated_row_flagged_trivial_as_violated(monkeypatch, tmp_path, capsys):
    """A stored row of the old shape (holds False, trivial True): report.md counted it violated and not trivial,
    the CLI's line '1 of 1 bounded rows violated, 1 trivial'."""
    from simlm import cli
    from simlm.experiments import sweep

    old = {**SHARED, "lm": "old", "quantity": "q", "measured": 2.0, "bound": 1.0, "holds": False, "trivial": True,
           "slack_used": 2.0}
    result = {"rows": [old], "cells": 1, "errors": [], "skipped": [], "time_s": 0.0}
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: result)
    monkeypatch.setattr("simlm.experiments.report.render", lambda rows, out: [])
    config = tmp_path / "s.toml"
    config.write_text('name = "s"\n[data]\nn_sequences = 2\nlength = 2\n[[worlds]]\nname = "w"\nkind = "hmm"\n'
                      '[worlds.options]\nn_states = 2\nn_symbols = 2\n[lms]\noracle = true\n[checks."simlm/epsilon"]\n')
    cli.main(["sweep", str(config), "--out", str(tmp_path / "out"), "--quiet"])
    assert "1 of 1 bounded rows violated, 0 trivial" in capsys.readouterr().out


def test_the_verdict_notes_quote_the_last_rungs_numbers():
    """The notes that say "(last rung)" quote the last rung's numbers (no test read the notes: the first
    rung's passed)."""
    rows = lambda apts, aris: [{"readout": "probe", "mean_apt": a, "ari": r} for a, r in zip(apts, aris)]
    clusters = [{"ari": 1.0}] * 3
    r = {"thresholds": [0.02, 0.05, 0.1],
         "block_zipf": {"n_classes": 8, "masked": {"spearman": .3, "within_class_errors": .4, "n_predicted": 8,
                                                   "mean_apt": .013, "accuracy": .112, "clusters": clusters}},
         "topic": {"rungs": [{"rows": rows([0.10, 0.12], [0, 0]), "spearman": .11},
                             {"rows": rows([0.10, 0.18], [0, 0]), "spearman": .77}],
                   "bayes": {"spearman": .9, "mean_apt": 0.19}, "local": {"mean_apt": 0.12}},
         "groups": {"selected": {"clusters": clusters}},
         "groups_ladder": {"rungs": [{"rows": rows([0, 0], [0.2, 0.3])}, {"rows": rows([0, 0], [0.4, 0.6])}],
                           "bayes": {"clusters": clusters}},
         "finetune": {"accuracy": [.9, .9], "corr_bayes": 0., "corr_model": 0., "bayes_accuracy": .95},
         "substitution": {m: {"tv_exact": t, "dconf_model": 0.} for m, t in (("within", 0.0), ("across", .2),
                                                                            ("random", .1))}}
    v = verdicts(r)
    assert "(last rung) [0.1, 0.18]" in v["order_parameter_rises_along_blocks"][1]
    assert "(last rung) [0.4, 0.6]" in v["clusters_sharpen_along_blocks"][1]
    assert "trained (last) 0.77" in v["apt_grows_with_frequency"][1]
