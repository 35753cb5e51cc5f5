"""The head/prompt reproduction (Wei, Xie & Ma 2021) in --quick mode: tidy records, conditions, outputs,
and a results store that a rerun resumes instead of recomputing.

Both experiments run once per module (most of the time is compilation).  Experiment 1 runs at |H| = 8
only (``--quick --n-states 8``): the shapes of experiment 2's vanilla-K8 world, so the two share their
compiled programs (the shipped ``--quick`` also runs |H| = 15, which adds compilations, not code paths)."""

import json
import math
import re

import numpy as np
import pytest

from simlm.errors import ConfigError
from simlm.experiments import head_prompt as hp
from simlm.experiments.store import CellStore
from simlm.theory.head_prompt_margins import label_margins

#: the command line of each experiment's quick run, and the Config it stands for
ARGV = {"experiment1": ["experiment1", "--quick", "--n-states", "8"], "experiment2": ["experiment2", "--quick"]}
CONFIG = {"experiment1": hp.Config(**{**hp.QUICK, "n_states": (8,)}), "experiment2": hp.Config(**hp.QUICK)}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Both quick reproductions (three tiny transformers, a few steps each): ~70 s on an idle 2-core machine."""
    out = tmp_path_factory.mktemp("head_prompt")
    runs = {e: hp.command([*ARGV[e], "--out", str(out)]) for e in hp.EXPERIMENTS}
    return out, runs


def _levels(payload, world, seed):
    """oracle, the analytic LM at each target, each ladder rung the seed reached, final."""
    ladder = payload["training"][world]["ladder"]
    return ({"oracle", "final"} | {f"eps={t:g}" for t in hp.QUICK["targets"]}
            | {f"eps<={r['target']:g}" for r in ladder if r["seed"] == seed and r["reached"]})


def _source(level):
    return "oracle" if level == "oracle" else "analytic" if level.startswith("eps=") else "trained"


@pytest.mark.parametrize("experiment, methods", [
    ("experiment1", {"hmm": {"oracle": {"head", "prompt"}, "analytic": {"head"}, "trained": {"head", "prompt"}}}),
    ("experiment2", {"hmm": {"oracle": {"head", "prompt"}, "analytic": {"head"}, "trained": {"head", "prompt"}},
                     "memory": {"oracle": {"attention_head", "attention_prompt", "head"},
                                "analytic": {"attention_head"}, "trained": {"attention_head", "attention_prompt"}}}),
])
def test_one_record_per_world_seed_method_and_level(quick, experiment, methods):
    _, runs = quick
    payload = runs[experiment]
    records = payload["records"]
    keys = [(r["world"], r["seed"], r["method"], r["level"]) for r in records]
    assert len(keys) == len(set(keys))
    expected = {(w["world"], s, m, lv)
                for w in hp.worlds(experiment, CONFIG[experiment]) for s in hp.QUICK["seeds"]
                for lv in _levels(payload, w["world"], s)
                for m in methods[w["kind"]][_source(lv)]}
    assert set(keys) == expected


@pytest.mark.parametrize("experiment", hp.EXPERIMENTS)
def test_accuracies_are_fractions_and_conditions_are_present(quick, experiment):
    records = quick[1][experiment]["records"]
    for r in records:
        assert 0 <= r["train_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
        assert 0.5 <= r["bayes_ceiling"] <= 1 and 0.5 <= r["majority"] <= 1
        assert r["emission_rank"] <= min(r["n_states"], r["n_symbols"]) and r["emission_sigma_min"] >= 0
        if r["kind"] == "hmm":
            assert r["head_residual"] >= 0 and isinstance(r["prompt_feasible"], bool)
            assert r["head_realisable"] == (r["head_margin"] >= 0)  # margins: > 0 exactly where they hold
            assert (r["emission_rank"] == r["n_states"]) == (r["emission_margin"] > 0)
            assert r["prompt_exact"] == (r["prompt_delta_min"] == 0)
        else:
            assert r["memory_sigma_min"] >= 0 and len(r["memory_ranks"]) == hp.QUICK.get("n_syntactic", 4)
            assert r["memory_all_full_rank"] == (r["memory_margin"] > 0) and r["n_cells"] == 1
        assert 0 <= r["share_without_margin"] <= 1 and 0 <= r["n_with_margin"] <= hp.QUICK["n_test"]
        assert 0 <= r["test_seen_in_train"] <= 1
        if r["n_with_margin"]:  # the accuracy on the inputs whose label has a margin
            assert 0 <= r["accuracy_with_margin"] <= 1
        assert r["lm"] == _source(r["level"])
        if r["lm"] == "trained":
            assert r["epsilon"] > 0 and r["epsilon_readout"] > 0 and r["train_step"] is not None
        elif r["lm"] == "analytic":
            assert r["epsilon"] > 0 and r["epsilon_readout"] > 0 and r["train_step"] is None
        else:
            assert r["epsilon"] == 0


def test_trained_rungs_report_the_epsilon_the_ladder_reached(quick):
    payload = quick[1]["experiment1"]
    for r in payload["records"]:
        if r["level"].startswith("eps<="):
            assert r["ladder_epsilon"] <= r["target"]
            assert r["epsilon"] == pytest.approx(r["ladder_epsilon"], rel=1e-4)  # the trainer's held-out set (quick: 8 positions, all)


def test_analytic_lms_are_calibrated_at_the_law_the_heads_read(quick):
    """The analytic LM of level "eps=t" has exact ε = t (1e-3 relative) at the readout law on the task's
    training inputs; on the test inputs the same LM is within 25 % of t."""
    analytic = [r for p in quick[1].values() for r in p["records"] if r["lm"] == "analytic"]
    assert analytic
    for r in analytic:
        assert r["ladder_epsilon"] == pytest.approx(r["target"], rel=1e-3)
        assert r["epsilon_readout"] == pytest.approx(r["target"], rel=0.25)


def test_oracle_head_recovers_the_task_while_emission_has_full_row_rank(quick):
    """Observed on the quick worlds: oracle head 1.000 at |H| = 8 ≤ |X| = 10 (rank B = 8) in both experiments;
    memory attention head 1.000 at M = 2."""
    records = [r for p in quick[1].values() for r in p["records"]]
    small = [r for r in records if r["method"] == "head" and r["lm"] == "oracle" and r["kind"] == "hmm"
             and r["n_states"] <= r["n_symbols"]]
    assert small and all(r["emission_rank"] == r["n_states"] and r["head_residual"] < 1e-6 for r in small)
    assert all(r["test_accuracy"] >= 0.9 for r in small)
    memory = [r for r in records if r["method"] == "attention_head" and r["lm"] == "oracle"]
    assert memory and all(r["test_accuracy"] >= 0.9 for r in memory)


def test_a_prompts_test_accuracy_is_the_one_its_fit_scores(quick):
    """The experiment predicts each test set once (its fits are not given it); a record's test accuracy is
    the one the same fit reports when it is given the test set: the transformer prompt on experiment 2's
    vanilla-K8 final trained LM, seed 0 (0.70 in the quick run, so a wrong set or labels would show).  The
    test set is a draw of its own: drawn with the training set's key it was the training set, row for row, and
    every record's test accuracy its train accuracy (every test passed; 5.5 % of the rows agree by chance)."""
    config = CONFIG["experiment2"]
    spec = next(w for w in hp.worlds("experiment2", config) if w["world"] == "vanilla-K8")
    (record,) = [r for r in quick[1]["experiment2"]["records"] if r["world"] == "vanilla-K8" and r["seed"] == 0
                 and r["lm"] == "trained" and r["level"] == "final" and r["method"] == "prompt"]
    world = spec["make"]()
    workdir = quick[0] / "experiment2" / "work" / "vanilla-K8" / "wei-head-prompt-experiment" / "train"
    lm = hp.train(world, *hp._train_configs(config, "hmm"), workdir, progress=False).final_lms[0]  # resumed
    ctx = hp.task_context(world, "hmm", 0, config)
    (x_train, _), (x_test, _) = ctx["train"], ctx["test"]
    assert x_train.shape == x_test.shape and np.mean(np.all(x_train == x_test, axis=1)) < 0.2
    # the share of test inputs seen in training, by brute force over the pairs (0.85 here: 42 distinct test
    # inputs, 47 training ones)
    seen = np.mean([any((x == t).all() for t in x_train) for x in x_test])
    assert ctx["shared"]["test_seen_in_train"] == seen and 0.5 < seen < 1 and record["test_seen_in_train"] == seen
    p = hp.fit_transformer_prompt(lm, *ctx["train"], k=config.prompt_length, steps=config.transformer_prompt_steps,
                                  seed=0, batch_size=config.transformer_prompt_batch, test=ctx["test"])
    assert 0.0 < record["test_accuracy"] < 1.0 and record["test_accuracy"] == p.test_accuracy


@pytest.mark.parametrize("experiment", hp.EXPERIMENTS)
def test_json_holds_the_records_and_the_plot_is_a_png(quick, experiment):
    out, runs = quick
    saved = json.loads((out / experiment / f"{experiment}.json").read_text())
    assert saved["records"] == json.loads(json.dumps(runs[experiment]["records"]))
    assert saved["new_cells"] > 0 and saved["summary"] and not saved["errors"]
    pytest.importorskip("matplotlib")
    assert (out / experiment / f"{experiment}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("experiment", hp.EXPERIMENTS)
def test_the_experiment_is_the_sweep_of_its_shipped_config(quick, experiment):
    """The shipped TOML is the default Config's sweep, the quick run's directory is an ordinary sweep
    (tidy results.csv, one cell per world and seed), and its records come back from the rows alone."""
    from simlm.experiments.sweep import load_config, parse_config, read_results

    assert load_config(hp.shipped_config(experiment)) == parse_config(hp.sweep_config(experiment, hp.Config()))
    assert hp.config_of(experiment, hp.load_shipped(experiment)) == hp.Config()
    out, runs = quick
    rows = read_results(out / experiment)
    strip = lambda records: [{k: v for k, v in r.items() if k not in ("experiment", "n_slots")} for r in records]
    assert strip(hp.records_of(rows)) == strip(json.loads(json.dumps(runs[experiment]["records"])))
    worlds = hp.worlds(experiment, CONFIG[experiment])
    assert runs[experiment]["new_cells"] == len(worlds) * len(hp.QUICK["seeds"])
    header = (out / experiment / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:9] == ["paper", "check", "world", "world_seed", "lm", "lm_seed", "eps", "eps_se", "quantity"]


def test_the_json_and_figure_are_written_under_the_sweeps_lock(quick, monkeypatch):
    """Written after the lock was released, a rerun let in meanwhile could have its newer files overwritten."""
    from locking import probe_writes

    out, _ = quick
    seen = probe_writes(monkeypatch, hp, out / "experiment2")
    hp.command([*ARGV["experiment2"], "--out", str(out)])
    assert seen == [True]


@pytest.mark.parametrize("experiment", hp.EXPERIMENTS)
def test_rerun_skips_every_finished_cell(quick, experiment):
    out, runs = quick
    again = hp.command([*ARGV[experiment], "--out", str(out)])
    assert again["new_cells"] == 0
    assert again["skipped_cells"] == runs[experiment]["new_cells"] + runs[experiment]["skipped_cells"]
    assert again["records"] == runs[experiment]["records"]


def test_experiment2_builds_worlds_with_more_memory_cells():
    """Experiment 2 with N = 1, 2 memory cells: one world per (N, M), the vanilla twin only once per M, the
    memory conditions and the label margins of a cell-0 task on the N = 2 world."""
    config = hp.Config(**{**hp.QUICK, "n_cells": (1, 2)}, trained=False, analytic=None)
    specs = hp.worlds("experiment2", config)
    assert [s["world"] for s in specs] == ["memory-M2", "vanilla-K8", "memory-N2-M2"]
    assert specs[-1]["options"]["n_cells"] == 2
    world = specs[-1]["make"]()
    assert world.n_cells == 2 and world.n_joint_states == 2**2 * 2 * 4
    task = hp.make_memory_task(world, 0)
    cond = hp.conditions(world, "memory", task, config)
    assert cond["n_cells"] == 2 and cond["memory_all_full_rank"] == (cond["memory_margin"] > 0)
    x = np.asarray(world.sample(1, 256, 16))  # the task probe's shape: its compiled posterior is reused
    margins = hp.held_out_margins(world, task, x)
    assert margins.margins.shape == (256,) and 0 <= margins.share_without_margin <= 1


def test_store_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "cells.jsonl"
    store = CellStore(path)
    store.add("a", [{"x": 1.0}], seconds=0.5)
    store.add("b", [{"x": float("nan")}])
    with open(path, "a") as f:
        f.write('{"cell": "c", "records": [')  # an interrupted write
    reopened = CellStore(path)
    assert "a" in reopened and "b" in reopened and "c" not in reopened
    (a, b) = reopened.records()
    assert a == {"x": 1.0} and list(b) == ["x"] and math.isnan(b["x"])  # NaN kept beside the row, read back
    reopened.add("c", [])
    assert [json.loads(line)["cell"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_cell_appended_after_a_torn_line_is_kept(tmp_path):
    """One worker killed mid-write, another (the same sweep, its store not reopened) appending its finished
    cell after it: the cell was glued onto the torn line and dropped with it; it now starts a line of its own."""
    from simlm.experiments.store import append_cell

    path = tmp_path / "cells.jsonl"
    append_cell(path, "a", [{"x": 1.0}])
    with open(path, "a") as f:
        f.write('{"cell": "b", "records": [{"x"')  # a worker killed mid-write
    append_cell(path, "c", [{"x": 3.0}])
    with pytest.warns(RuntimeWarning, match="dropped 1 corrupt line"):
        reopened = CellStore(path)
    assert list(reopened.cells) == ["a", "c"] and reopened.records() == [{"x": 1.0}, {"x": 3.0}]


def test_a_results_directory_refuses_a_different_config(tmp_path):
    from simlm.experiments.sweep import parse_config

    theirs = parse_config(hp.sweep_config("experiment1", hp.Config(**{**hp.QUICK, "n_train": 64}))).to_dict()
    (tmp_path / "experiment1").mkdir()
    (tmp_path / "experiment1" / "sweep.json").write_text(json.dumps(theirs))
    with pytest.raises(ConfigError, match=re.escape(f"different config (differs in ['checks.{hp.CHECK}.n_train'])")):
        hp.run("experiment1", hp.Config(**hp.QUICK), tmp_path)


def test_a_results_directory_of_the_previous_protocol_is_refused_not_mixed(tmp_path):
    """A directory written before the transformers trained at the prompt's length (its options carry no
    protocol) would otherwise pass as this config and have its cells reused beside new ones."""
    from simlm.experiments.sweep import parse_config

    old = parse_config(hp.sweep_config("experiment1", hp.Config(**hp.QUICK))).to_dict()
    del old["checks"][hp.CHECK]["protocol"]  # as the previous code wrote it
    (tmp_path / "experiment1").mkdir()
    (tmp_path / "experiment1" / "sweep.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=re.escape(f"different config (differs in ['checks.{hp.CHECK}.protocol'])")):
        hp.run("experiment1", hp.Config(**hp.QUICK), tmp_path)
    options = hp.check_options(hp.Config(**hp.QUICK))
    with pytest.raises(ConfigError, match="protocol: this simlm runs the experiment's protocol 2"):
        hp.validate_options({**options, "protocol": 1})


def test_config_rejects_a_visible_length_beyond_the_label_length():
    with pytest.raises(ConfigError, match="visible_length"):
        hp.Config(label_length=8, visible_length=9)
    assert hp.Config(label_length=8, visible_length=8).visible_length == 8


def test_a_memory_worlds_size_is_its_joint_chains():
    """|H| of a memory world is M^N·N·Q, the states of its chain (M·Q, its vanilla twin's, for one cell); it
    was M·Q for every N (8 for memory-N3-M2, whose chain has 96 states)."""
    specs = hp.worlds("experiment2", hp.Config(n_cells=(1, 2, 3), n_slots=(2,)))
    sizes = {w["world"]: w["n_states"] for w in specs}
    assert sizes == {"memory-M2": 8, "vanilla-K8": 8, "memory-N2-M2": 32, "memory-N3-M2": 96}
    assert all(w["n_states"] == w["make"]().n_joint_states for w in specs if w["kind"] == "memory")


def test_summary_averages_over_seeds():
    base = dict(world="w", kind="hmm", n_states=4, n_slots=None, method="head", lm="oracle", level="oracle")
    rows = hp.summarise([{**base, "seed": s, "test_accuracy": a, "epsilon": 0.0} for s, a in ((0, 0.8), (1, 1.0))])
    assert len(rows) == 1 and rows[0]["n_seeds"] == 2
    assert rows[0]["accuracy"] == pytest.approx(0.9)
    assert rows[0]["accuracy_sd"] == pytest.approx(np.std([0.8, 1.0], ddof=1))
    assert "0.900" in hp.table(rows)


def test_a_row_of_one_seed_has_no_standard_deviation():
    """One seed (a rung only one reached) printed ± 0.000 and drew a zero bar, as if three seeds agreed."""
    base = dict(world="w", kind="hmm", n_states=4, n_slots=None, method="head", lm="oracle", level="oracle")
    [row] = hp.summarise([{**base, "seed": 0, "test_accuracy": 0.75, "epsilon": 0.0}])
    assert row["n_seeds"] == 1 and row["accuracy_sd"] is None
    line = hp.table([row]).splitlines()[-1].split()
    assert line[line.index("0.750") + 1] == "-"


def test_a_training_set_of_one_class_is_refused():
    """n_train = 2 drew two sequences of one label for every seed; the heads and prompts then reported 0.4-0.6
    accuracies (below the majority rate, train accuracy 1) as results, with only a warning."""
    from simlm.worlds import HMM

    world = HMM.random(0, 8, 10, family="permutation-mixture", transition_temp=0.01, emission_temp=0.01)
    config = hp.Config(n_train=2, n_test=16, n_continuations=4, trained=False)
    with pytest.raises(ConfigError, match="^n_train: the 2 training sequences of seed 0's task all have label"):
        hp.task_context(world, "hmm", 0, config)


#: the table's columns, left to right (a header of two words is one column)
COLUMNS = ["world", "|H|", "method", "lm", "level", "ε", "ε read", "acc", "±sd", "n", "acc|m", "n|m", "no m", "seen",
           "ceil", "major", "rank", "σmin", "resid", "feas", "δmin"]


def _cells(rows):
    """Each data line of ``hp.table(rows)`` as {column: text}: no cell of these rows holds a space."""
    head, _, *lines = hp.table(rows).splitlines()
    assert head.split() == [w for c in COLUMNS for w in c.split()]
    return [dict(zip(COLUMNS, line.split(), strict=True)) for line in lines]


def test_summary_orders_trained_rungs_from_the_largest_target_down():
    """Rows of one world and method: the oracle, the analytic LMs from the largest ε down, the trained rungs
    from the largest target down, then the final trained LM — whatever order the records came in."""
    base = dict(world="w", kind="hmm", n_states=4, n_slots=None, method="head", seed=0, test_accuracy=0.9)
    levels = [("trained", "final"), ("trained", "eps<=0.03"), ("analytic", "eps=0.03"), ("trained", "eps<=0.3"),
              ("oracle", "oracle"), ("analytic", "eps=0.3")]
    rows = hp.summarise([{**base, "lm": lm, "level": lv} for lm, lv in levels])
    assert [r["level"] for r in rows] == ["oracle", "eps=0.3", "eps=0.03", "eps<=0.3", "eps<=0.03", "final"]


def test_a_number_no_record_holds_is_a_dash_not_a_zero():
    """A trained row without a readout ε, margins or conditions: those means are None and the table shows
    ``-`` in their columns (0 would claim a measurement)."""
    record = dict(world="w", kind="hmm", n_states=4, n_slots=None, method="head", lm="trained", level="final",
                  seed=0, test_accuracy=0.9, epsilon=0.1)
    (row,) = hp.summarise([record])
    assert row["n_seeds_with_margin"] == 0 and row["n_seeds"] == 1  # the seeds the margin accuracy averages
    for k in ("epsilon_readout", "accuracy_with_margin", "share_without_margin", "test_seen_in_train",
              "bayes_ceiling", "majority", "emission_rank", "emission_sigma_min", "head_residual", "prompt_feasible",
              "prompt_delta_min"):
        assert row[k] is None, k
    (cells,) = _cells([row])
    assert cells == {"world": "w", "|H|": "4", "method": "head", "lm": "trained", "level": "final", "ε": "0.1",
                     "acc": "0.900", "±sd": "-", "n": "1", "n|m": "0",
                     **{c: "-" for c in ("ε read", "acc|m", "no m", "seen", "ceil", "major", "rank", "σmin", "resid",
                                         "feas", "δmin")}}


def test_the_summary_and_table_carry_the_share_of_test_inputs_seen_in_training():
    """``test_seen_in_train`` is averaged over seeds like the other shares and shown in the table's ``seen``."""
    base = dict(world="w", kind="hmm", n_states=4, n_slots=None, method="head", lm="oracle", level="oracle",
                epsilon=0.0)
    rows = hp.summarise([{**base, "seed": s, "test_accuracy": 0.9, "test_seen_in_train": f}
                         for s, f in ((0, 0.4), (1, 0.7))])
    assert rows[0]["test_seen_in_train"] == pytest.approx(0.55)
    (cells,) = _cells(rows)
    assert cells["seen"] == "0.550"


def test_seen_in_training_compares_rows_of_ids_whatever_their_integer_dtype():
    """Rows as ids (an int64 training set beside int32 test inputs read 0 when compared as raw bytes); inputs
    of two lengths, or that are not ids, are refused, not read as "nothing seen" or truncated."""
    from simlm.errors import ShapeError, TokenError

    train = np.array([[0, 1, 2], [2, 2, 0], [1, 0, 1]], np.int64)
    test = np.array([[2, 2, 0], [0, 0, 0], [0, 1, 2], [1, 1, 1]], np.int32)
    assert hp.seen_in_training(train, test) == 0.5 == hp.seen_in_training(train.astype(np.int32), test)
    with pytest.raises(ShapeError, match="^train_inputs, test_inputs: "):
        hp.seen_in_training(train[:, :2], test)
    with pytest.raises(TokenError, match="^train_inputs: expected integer token ids"):
        hp.seen_in_training(train + 0.5, test)


def test_table_shows_the_bayes_ceiling_and_the_majority_rate_in_their_columns():
    base = dict(world="w", kind="hmm", n_states=4, n_slots=None, method="head", lm="oracle", level="oracle",
                epsilon=0.0, bayes_ceiling=0.95, majority=0.6)
    rows = hp.summarise([{**base, "seed": s, "test_accuracy": a} for s, a in ((0, 0.8), (1, 1.0))])
    assert rows[0]["bayes_ceiling"] == pytest.approx(0.95) and rows[0]["majority"] == pytest.approx(0.6)
    (cells,) = _cells(rows)
    assert (cells["ceil"], cells["major"], cells["acc"]) == ("0.950", "0.600", "0.900")


class _ReadFirstFeature:
    """A stand-in head: predicts the integer in its features' first column."""

    def predict(self, f):
        return np.asarray(f)[:, 0].astype(int)

    def accuracy(self, f, y):
        return float(np.mean(self.predict(f) == np.asarray(y)))


def test_evaluate_reports_the_accuracy_on_the_inputs_with_a_margin(monkeypatch):
    """μ = (1, −1): the last test posterior (0.5, 0.5) has μᵀP = 0, no margin; the head gets the other three
    right and the last wrong, so accuracy 0.75 and accuracy with margin 1.0 on n_with_margin = 3."""
    monkeypatch.setattr(hp, "task_features", lambda lm, x, position: np.asarray(x, np.float64))
    monkeypatch.setattr(hp, "fit_linear_head", lambda f, y, seed: _ReadFirstFeature())
    post = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.5, 0.5]])
    y_te = np.ones(4, np.int32)
    ctx = {"train": (np.array([[0], [1]]), np.array([0, 1])), "test": (np.array([[1], [1], [1], [0]]), y_te),
           "margins": label_margins(np.array([1.0, -1.0]), post)}
    (row,) = hp.evaluate(None, None, "hmm", ctx, 0, hp.Config(), source="analytic")
    assert row["method"] == "head" and row["train_accuracy"] == 1.0 and row["test_accuracy"] == 0.75
    assert row["n_with_margin"] == 3 and row["accuracy_with_margin"] == 1.0


def test_training_time_of_a_world_is_its_longest_cell():
    """Seeds of one world train in separate cells; the world's training wall time is the longest of them."""
    rows = [{"check": hp.CHECK, "quantity": "train_steps", "world": "w", "ladder": "[]", "measured": 7,
             "train_seconds": s} for s in (12.0, 0.3)]
    assert hp.training_of(rows) == {"w": {"ladder": [], "final_step": 7, "seconds": 12.0}}
    assert hp.training_of(rows[::-1])["w"]["seconds"] == 12.0


@pytest.mark.parametrize("kind, k", [("hmm", 1), ("hmm", 3), ("memory", 1), ("memory", 2)])
def test_every_position_a_head_or_prompt_reads_was_trained_at(kind, k):
    """The prompted input (p_1:k, MASK, x_1:T') — (p_1:k, x_1:T') on memory worlds — is as long as the
    training sequences: a position past them keeps its initial embedding (the trained prompt read x_T' there
    when the model was trained on (MASK, x_1:T') alone)."""
    config = hp.Config(**{**hp.QUICK, "prompt_length": k})
    model, training = hp._train_configs(config, kind)
    read = k + config.visible_length + (kind == "hmm")
    assert training.seq_len == model.max_len == read


@pytest.mark.parametrize("options, match", [({"prompt_length": 10**9}, "prompt_length: expected an integer ≤ 10000"),
                                            ({"world_seed": 2**64}, "world_seed: expected an integer ≤"),
                                            ({"prompt_length": 0}, "prompt_length")])
def test_config_refuses_a_prompt_length_or_world_seed_the_cells_cannot_use(options, match):
    with pytest.raises(ConfigError, match=match):
        hp.Config(**options)


@pytest.mark.parametrize("options, match", [({"temperature": 0.0}, "temperature"),
                                            ({"analytic": "task-adversarial"}, "analytic: expected None or one of")])
def test_config_names_a_bad_temperature_or_analytic_family(options, match):
    with pytest.raises(ConfigError, match=match):
        hp.Config(**options)


class _SharedFilesRecorder:
    """A stand-in for a process pool (its jobs share these files): runs each job here, in the order it is
    given them, and keeps the payloads."""

    shares_filesystem = True

    def __init__(self):
        self.payloads = []

    def map(self, fn, payloads):
        for p in payloads:
            self.payloads.append(json.loads(p))
            yield p, fn(p)


def test_each_seed_is_a_job_of_its_own_taken_seed_by_seed_with_the_in_process_records(tmp_path):
    """Where the jobs share these files, a world's seeds are separate jobs (the seeds' common training is
    shared through the trainer's locked directory), every world's first seed first — and the records are
    the ones the in-process run, one job per world, computes."""
    config = hp.Config(**{**hp.QUICK, "seeds": (0, 1)}, trained=False, analytic=None)
    pool = _SharedFilesRecorder()
    split = hp.run("experiment1", config, tmp_path / "split", executor=pool, log=lambda *a: None)
    jobs = [[f"{c[2].split('|')[0]}|{c[1]}" for c in p["cells"]] for p in pool.payloads]
    assert jobs == [["hmm-K8|seed=0"], ["hmm-K15|seed=0"], ["hmm-K8|seed=1"], ["hmm-K15|seed=1"]]
    together = hp.run("experiment1", config, tmp_path / "together", log=lambda *a: None)
    key = lambda r: (r["world"], r["seed"], r["lm"], r["method"])
    assert sorted(split["records"], key=key) == sorted(together["records"], key=key)


def test_experiment2s_figure_draws_one_bayes_ceiling_line_per_kind(tmp_path, monkeypatch):
    """A memory world has as many hidden states as its vanilla twin and a ceiling of its own: one line through
    every oracle row zigzagged between the two at each |H| (x = 8, 8, 12, 12).  Ceilings 0.99 / 0.98 (memory)
    and 0.80 / 0.75 (vanilla) now give one line per kind, each through its own."""
    import matplotlib
    from matplotlib.axes import Axes

    from simlm.experiments import head_prompt_report

    matplotlib.use("Agg")
    records = [{"world": w, "kind": kind, "n_states": n, "n_slots": n // 4, "n_cells": 1 if kind == "memory" else None,
                "method": "attention_head" if kind == "memory" else "head", "lm": "oracle", "level": "oracle",
                "test_accuracy": 0.7 + 0.01 * seed, "bayes_ceiling": ceiling}
               for w, kind, n, ceiling in (("memory-M2", "memory", 8, 0.99), ("vanilla-K8", "hmm", 8, 0.80),
                                           ("memory-M3", "memory", 12, 0.98), ("vanilla-K12", "hmm", 12, 0.75))
               for seed in (0, 1)]
    lines, plot = {}, Axes.plot

    def spy(self, *args, **kwargs):
        if str(kwargs.get("label", "")).startswith("Bayes ceiling"):
            lines.setdefault(kwargs["label"], (list(args[0]), list(args[1])))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    head_prompt_report.plot({"summary": head_prompt_report.summarise(records), "experiment": "experiment2",
                             "config": {"n_symbols": 10, "targets": [], "visible_length": 4, "label_length": 8,
                                        "seeds": [0, 1]}}, tmp_path / "experiment2.png")
    assert lines == {"Bayes ceiling (memory)": ([8, 12], [0.99, 0.98]),
                     "Bayes ceiling (vanilla)": ([8, 12], [0.80, 0.75])}


def test_a_point_averaging_fewer_seeds_says_how_many_in_the_figure(tmp_path, monkeypatch):
    """A rung reached by 2 of 3 seeds was drawn like a point over all 3 (the table says n; the figure did not)."""
    import matplotlib
    from matplotlib.axes import Axes

    from simlm.experiments import head_prompt_report

    matplotlib.use("Agg")
    records = [{"world": f"K{n}", "kind": "hmm", "n_states": n, "method": "head", "lm": "trained", "level": level,
                "test_accuracy": 0.8, "bayes_ceiling": 0.9, "emission_sigma_min": 0.1, "head_residual": 0.0,
                "emission_rank": n}
               for n in (4, 8) for level, seeds in (("oracle", 3), ("eps<=0.1", 2 if n == 8 else 3))
               for _ in range(seeds)]
    notes, annotate = [], Axes.annotate
    monkeypatch.setattr(Axes, "annotate", lambda self, text, xy, *a, **k: notes.append((text, xy)) or
                        annotate(self, text, xy, *a, **k))
    head_prompt_report.plot({"summary": head_prompt_report.summarise(records), "experiment": "experiment1",
                             "config": {"n_symbols": 10, "targets": [0.1], "visible_length": 4, "label_length": 8,
                                        "seeds": [0, 1, 2]}}, tmp_path / "experiment1.png")
    assert notes == [("n=2", (8, 0.8))]


def test_whole_cells_glued_on_one_line_are_both_kept(tmp_path):
    """Two finished cells with the newline between them lost were dropped together as one corrupt line (and
    recomputed), though the store's docstring promises a finished cell is never dropped (a review, 2026-12-06).
    Each is kept, the line rewritten as two, NaN marks and all; a line that is not all cells is still dropped."""
    import warnings

    from simlm.experiments.store import append_cell

    path = tmp_path / "cells.jsonl"
    append_cell(path, "A", [{"x": 1.0}])
    append_cell(path, "B", [{"x": float("nan")}])
    a, b = path.read_text().splitlines()
    path.write_text(a + b + "\n" + a.replace('"A"', '"C"') + ' {"not": "a cell"}\n')
    with pytest.warns(RuntimeWarning, match="dropped 1 corrupt line"):
        store = CellStore(path)
    assert list(store.cells) == ["A", "B"] and math.isnan(store.cells["B"]["records"][0]["x"])
    assert [json.loads(line)["cell"] for line in path.read_text().splitlines()] == ["A", "B"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = CellStore(path)
    assert math.isnan(again.cells["B"]["records"][0]["x"])
    assert [r["x"] for r in again.records(order=["B", "A"])][1:] == [1.0]  # in the order asked, then the rest
    assert math.isnan(again.records(order=["B"])[0]["x"]) and again.records(order=["Z"])[0] == {"x": 1.0}


def test_the_records_ceilings_are_the_plug_in_and_split_estimates_of_the_test_set():
    """``bayes_ceiling`` is :func:`bayes_ceiling`'s plug-in estimate on the seed's test set with its key, bit for
    bit, and ``bayes_ceiling_lower`` the split one from the same continuations (new 2026-12-08: the plug-in sits
    above the ceiling in expectation, the split below); the sweep check's rows carry both."""
    from simlm.downstream import bayes_ceiling
    from simlm.worlds import HMM

    world = HMM.random(0, 8, 10, family="permutation-mixture", transition_temp=0.01, emission_temp=0.01)
    config = hp.Config(n_train=16, n_test=16, n_continuations=4, trained=False)
    ctx = hp.task_context(world, "hmm", 0, config)
    shared, task = ctx["shared"], ctx["task"]
    x_te = hp.sample_task_data(world, task, 1000 * 0 + 2, config.n_test, config.label_length)[0]
    Tv, key = config.visible_length, 1000 * 0 + 3
    plug = bayes_ceiling(world, task, x_te, Tv, n_continuations=4, key=key)
    split = bayes_ceiling(world, task, x_te, Tv, n_continuations=4, key=key, estimate="split")
    assert (shared["bayes_ceiling"], shared["bayes_ceiling_se"]) == plug
    assert (shared["bayes_ceiling_lower"], shared["bayes_ceiling_lower_se"]) == split
    assert split[0] <= plug[0]
