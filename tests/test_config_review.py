"""Config review (2026-12-05): inputs the parser accepted and a run then mishandled — world names that write
outside the results directory, repeated JSON keys, check options that failed every cell (while the command
exited 0), an empty trained-world list, flags of the other experiment, and ε values whose labels collide."""

from __future__ import annotations

import json

import pytest

from simlm.errors import ConfigError
from simlm.experiments.sweep import load_config, parse_config

HMM = {"kind": "hmm", "seed": 0, "options": {"n_states": 2, "n_symbols": 3}}
LOGLINEAR = {"kind": "loglinear", "seed": 0, "options": {"n_states": 4, "n_symbols": 4, "dim": 2}}


def raw(worlds=None, checks=None, **top) -> dict:
    return {"name": "t", "seed": 0, "data": {"n_sequences": 2, "length": 3},
            "worlds": worlds or [{"name": "h", **HMM}], "checks": checks or {"simlm/epsilon": {}}, **top}


@pytest.mark.parametrize("name", ["../sweep", "/tmp/escape", "a/b", ".hidden", "a|b", "", "x y"])
def test_a_world_name_that_is_not_a_plain_file_name_is_refused(name):
    """'../sweep' wrote the world's record over the directory's sweep.json (never resumable after), an
    absolute name wrote outside --out, 'a/b' failed after claiming the directory."""
    with pytest.raises(ConfigError, match=r"worlds\[0\]\.name"):
        parse_config(raw([{"name": name, **HMM}]))


def test_plain_world_names_are_kept():
    names = ["hmm-K10", "memory-M7", "vanilla_K8", "a.b", "eps=0.1", "x+y@z"]
    config = parse_config(raw([{"name": n, **HMM} for n in names]))
    assert [w["name"] for w in config.worlds] == names


def test_a_repeated_json_key_is_refused_not_silently_replaced(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"name": "t", "seed": 0, "seed": 4, "worlds": [{"name": "h", "kind": "hmm", '
                    '"options": {"n_states": 2, "n_symbols": 3, "n_states": 5}}], "checks": {"simlm/epsilon": {}}}')
    with pytest.raises(ConfigError, match="'(seed|n_states)' appears twice"):
        load_config(path)
    path.write_text(json.dumps(raw()))
    assert load_config(path).seed == 0


def test_check_options_that_cannot_run_are_refused_when_the_config_is_parsed():
    """Each failed every cell at run time (and `simlm sweep` exited 0)."""
    with pytest.raises(ConfigError, match="checks.wei/head-prompt.visible_length"):
        parse_config(raw(checks={"wei/head-prompt": {"visible_length": 30, "label_length": 8}}))
    with pytest.raises(ConfigError, match="checks.wu/anchors.top_k: expected at most 3 for world 'l'"):
        parse_config(raw([{"name": "l", **LOGLINEAR}], {"wu/anchors": {"top_k": 50}}))
    with pytest.raises(ConfigError, match="checks.wu/anchors.n_words"):
        parse_config(raw([{"name": "l", **LOGLINEAR}], {"wu/anchors": {"n_words": 5}}))
    # no log-linear world: its top_k is not judged against a world it never runs on, and a check no cell runs
    # is refused as such (it was skipped in every cell, named in summary.json alone)
    with pytest.raises(ConfigError, match=r"^checks.wu/anchors: runs in no \(world, LM\) cell of this config — "
                                          r"world 'h': needs a log-linear world$"):
        parse_config(raw([{"name": "h", **HMM}], {"wu/anchors": {"top_k": 50}}))
    parse_config(raw([{"name": "l", **LOGLINEAR}], {"wu/anchors": {"top_k": 3, "n_words": 4}}))
    from simlm.experiments import token_accuracy as ta

    for options, field in ((dict(d_model=30, n_heads=4), "d_model"), (dict(targets=[0.1, 0.1]), "targets")):
        with pytest.raises(ConfigError, match=f"checks.{ta.CHECK}.{field}"):
            ta.validate_options(options)


def test_an_empty_list_of_trained_worlds_is_refused():
    """[lms.trained] with worlds = [] trained nothing and never checked its model/train tables."""
    trained = {"objective": "cross-entropy", "targets": [0.1], "worlds": [], "model": {"no_such_field": 1}}
    with pytest.raises(ConfigError, match="lms.trained.worlds"):
        parse_config(raw(lms={"oracle": True, "trained": trained}))


@pytest.mark.parametrize("experiment, flag", [("experiment2", "--n-states"), ("experiment1", "--n-slots")])
def test_a_flag_of_the_other_head_prompt_experiment_is_refused(experiment, flag, tmp_path, capsys):
    from simlm.experiments import head_prompt

    assert head_prompt.main([experiment, flag, "4", "--quick", "--out", str(tmp_path / "out")]) == 2
    assert f"{flag}: used by" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_head_prompt_full_input_with_a_visible_length_is_refused(tmp_path, capsys):
    """--full-input set T' = T over a --visible-length given beside it, without a word (T' = 4 asked, 8 run)."""
    from simlm.experiments import head_prompt

    out = tmp_path / "out"
    argv = ["experiment1", "--quick", "--no-train", "--visible-length", "4", "--full-input", "--out", str(out)]
    assert head_prompt.main(argv) == 2
    assert "--full-input" in capsys.readouterr().err
    assert not out.exists()


def test_natural_tasks_refuses_values_whose_labels_collide():
    """--eps 0.1 0.1000001 made two LMs both labelled theta-noise@0.1 (240 duplicated row keys)."""
    from simlm.experiments import natural_tasks as nt

    for field, values in (("eps_grid", (0.1, 0.1000001)), ("ce_targets", (0.1, 0.1)), ("quad_targets", (0.01, 0.01)),
                          ("critical_fractions", (0.5, 0.5)), ("kinds", ("theta-noise", "theta-noise"))):
        with pytest.raises(ConfigError, match=field):
            nt.Config(**{field: values})


def test_a_seed_past_2_to_the_53_is_refused_when_parsed(tmp_path):
    """A JSON config can hold any integer; a seed ≥ 2**63 passed the parser and failed every cell, and so did
    one ≥ 2**62 in wei/head-tuning (it draws with 2·seed + 2).  The cap is 2**53 − 1; a cell at it runs."""
    from simlm.experiments.sweep import SEED_MAX, run_sweep

    for where, config in (("config.seed", raw(seed=SEED_MAX + 1)),
                          (r"worlds\[0\].seed", raw([{"name": "h", **{**HMM, "seed": 2**70}}])),
                          (r"lms.analytic.seeds\[0\]", raw(lms={"oracle": True, "analytic": {"eps": [0.1],
                                                                                               "seeds": [2**63]}}))):
        with pytest.raises(ConfigError, match=where):
            parse_config(config)
    checks = {"wei/head-tuning": {"n_train": 8, "n_test": 4, "length": 2}, "simlm/epsilon": {}}
    result = run_sweep(parse_config(raw(seed=SEED_MAX, checks=checks)), tmp_path / "out", progress=False,
                       log=lambda *a: None)
    assert not result["errors"] and {r["check"] for r in result["rows"]} == set(checks)


def test_a_misspelt_required_world_option_is_named_beside_the_one_missing():
    """``n_state = 3`` read "missing 1 required positional argument: 'n_states'", never naming the typo (a
    review, 2026-12-06)."""
    from simlm.experiments.sweep import build_world

    with pytest.raises(ConfigError, match=r"^worlds\.h\.options: .*'n_states'; 'n_state' given: a misspelling of "
                                          r"'n_states'\?$"):
        build_world({"name": "h", "kind": "hmm", "seed": 0, "options": {"n_state": 3, "n_symbols": 4}})
    with pytest.raises(ConfigError, match=r"missing 1 required positional argument: 'n_symbols'$"):
        build_world({"name": "h", "kind": "hmm", "seed": 0, "options": {"n_states": 3}})


def test_parse_config_fills_the_documented_defaults():
    """parse_config's docstring: name "sweep", seed 0, data 32 × 16, world seed 0, lms.oracle true; [lms.analytic]
    kinds ["logit-noise"], seeds [0], laws ["next-token"]; [lms.trained] objective "cross-entropy", seeds [0],
    every world.  Every test config set them; demo.toml leans on several, so a changed default changes the
    demo's numbers."""
    minimal = {"worlds": [{"name": "h", "kind": "hmm", "options": {"n_states": 2, "n_symbols": 2}}],
               "checks": {"simlm/epsilon": {}}}
    c = parse_config(minimal)
    assert (c.name, c.seed, c.data) == ("sweep", 0, {"n_sequences": 32, "length": 16})
    assert c.worlds[0]["seed"] == 0 and c.worlds[0]["options"] == {"n_states": 2, "n_symbols": 2}
    assert c.lms == {"oracle": True, "analytic": None, "trained": None}
    c = parse_config({**minimal, "lms": {"analytic": {"eps": [0.1]}, "trained": {"targets": [0.1]}}})
    assert c.lms["oracle"] is True
    assert c.lms["analytic"] == {"kinds": ["logit-noise"], "eps": [0.1], "seeds": [0], "laws": ["next-token"]}
    t = c.lms["trained"]
    assert (t["objective"], t["seeds"], t["worlds"], t["model"], t["train"]) == ("cross-entropy", [0], None, {}, {})

