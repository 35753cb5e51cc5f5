"""The authors' protocol with trained transformers (simlm.experiments.head_prompt_trained): the quick study
runs and is well-formed, the 20-vector prompt's shapes and truncation, the head forms, and typed errors."""

import dataclasses
import json
from types import SimpleNamespace

import jax
import numpy as np
import optax
import pytest

from simlm.downstream import fit_transformer_prompt
from simlm.errors import ConfigError, TokenError
from simlm.experiments import head_prompt_protocol as hpp
from simlm.experiments import head_prompt_trained as hpt
from simlm.models import MaskedTransformerLM, init_transformer
from simlm.worlds import HMM

#: a tiny version of the authors' protocol: 24-token labels, [MASK] x_1:19 for the head and k = 12
#: prompt vectors before [MASK] x_1:7.
TINY = hpt.TrainedStudy(protocol=dataclasses.replace(hpt.PROTOCOL, worlds_per_size=1, label_length=24,
                                                     visible_length=19, n_train=64, n_test=64),
                        sizes=(4,), prompt_length=12, d_model=8, n_layers=1, n_heads=1, batch_size=8, max_steps=4,
                        targets=(2.0,), prompt_steps=3, probe_steps=2, probe_batch=16, eval_sequences=2,
                        oracle_prompt=False)


def test_a_tiny_study_returns_every_form_on_the_same_sequences(tmp_path, monkeypatch):
    # read_at: the trained forms read again at the ε ≤ 2 rung (reached at the start) and at ε ≤ 0.01 (never
    # reached in 4 steps: no records)
    study = dataclasses.replace(TINY, targets=(2.0, 0.01), read_at=(2.0, 0.01))
    fits, laws = _spy_on_the_heads(monkeypatch)
    rows = hpt.run(study, tmp_path)
    methods = [r["method"] for r in rows]
    trained = ["head", "probe", "head-7", "hidden-head", "prompt-12", "prompt-1"]
    assert methods == ["oracle-head", "oracle-probe", "oracle-head-7", *trained, *[f"{m}@2" for m in trained]]
    final, rung = rows[3], rows[methods.index("head@2")]
    assert final["train_steps"] == 4 and rung["train_steps"] == 0 and rung["read_at"] == 2.0
    hmm = hpp.world(4, 1)
    result = hpt.train(hmm, *study.configs(), tmp_path / "work" / "H4_w1", progress=False)  # restored, not retrained
    held = np.asarray(hmm.sample(hpt.EVAL_SEED, study.eval_sequences, study.seq_len))
    # the rung's checkpoint was read, not the final model
    assert rung["epsilon"] == pytest.approx(float(hpt.exact_masked_epsilon(hmm, result.lm(2.0), held)[0]), rel=1e-6)
    assert rung["epsilon"] != pytest.approx(final["epsilon"], rel=1e-3)
    # the readout ε is the exact KL at the law the head reads on the held-out (test) inputs, not the training ones
    _, _, x_head, _ = hpt._inputs(4, 1, study)
    test_x = x_head[study.protocol.n_train:]
    assert final["epsilon_readout"] == pytest.approx(
        float(hpt.exact_prepended_epsilon(hmm, result.final_lms[0], test_x)[0]), rel=1e-6)
    assert rung["epsilon_readout"] == pytest.approx(
        float(hpt.exact_prepended_epsilon(hmm, result.lm(2.0), test_x)[0]), rel=1e-6)
    # every form's readout ε is that of the law at a MASK before its own test tokens (head-7 and prompt-12 read
    # x_1:7, prompt-1 x_1:18): head-7 and the prompts carried head's, a law they never read
    for r in rows[3:]:
        lm = result.lm(2.0) if "read_at" in r else result.final_lms[0]
        want = hpt.exact_prepended_epsilon(hmm, lm, test_x[:, :r["tokens"]])[0]
        assert r["epsilon_readout"] == pytest.approx(float(want), rel=1e-6), r["method"]
    # each head form is fitted on the law it names — probabilities, not log-probabilities — with the
    # study's probe settings (the tiny world scores every form alike, so the accuracies cannot tell)
    tr = slice(0, study.protocol.n_train)
    assert laws == [19, 7]  # the oracle's laws after x_1:19 (head, probe) and x_1:7 (head-7)
    # (read on every sequence, the shapes the study compiled, and the training rows kept)
    exact = np.asarray(hmm.prepended_mask_probs(x_head), np.float64)[tr]
    exact7 = np.asarray(hmm.prepended_mask_probs(x_head[:, :7]), np.float64)[tr]
    expected = [exact, exact, exact7]
    for lm in (result.final_lms[0], result.lm(2.0)):
        trained = np.exp(np.asarray(lm.prepended_mask_logprobs(x_head), np.float64))[tr]
        trained7 = np.exp(np.asarray(lm.prepended_mask_logprobs(x_head[:, :7]), np.float64))[tr]
        assert np.abs(trained - trained7).max() > 1e-5  # far above the tolerance below
        expected += [trained, trained, trained7, np.asarray(lm.prepended_mask_features(x_head), np.float64)[tr]]
    assert [name for name, _, _ in fits] == ["head", "probe", "head"] + ["head", "probe", "head", "head"] * 2
    for (name, f, kwargs), want in zip(fits, expected, strict=True):
        np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-9)
        if name == "probe":
            assert kwargs == {"epochs": study.probe_epochs, "batch_size": study.probe_batch, "lr": study.probe_lr}
    rows = [r for r in rows if "read_at" not in r]
    # only the rungs the model reached are listed: ε ≤ 0.01 was never reached in 4 steps
    assert all(r["rungs"] == [2.0] for r in rows if r["features"] == "trained")
    tokens = {r["method"]: r["tokens"] for r in rows}
    assert tokens["head"] == tokens["oracle-head"] == 19 and tokens["prompt-12"] == tokens["head-7"] == 19 - 12
    assert tokens["prompt-1"] == 18  # [p][MASK] x_1:18: the same 20 positions as [MASK] x_1:19
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and 0.5 <= r["majority"] <= 1 and r["nnz"] <= 6
        assert (r["features"] == "exact") == r["method"].startswith("oracle")
        if r["features"] == "trained":
            assert np.isfinite(r["epsilon"]) and r["epsilon"] > 0 and np.isfinite(r["epsilon_readout"])
    assert len({r["majority"] for r in rows}) == 1  # one task, one test set for every method
    (s,) = [s for s in hpt.summary(rows) if s["method"] == "prompt-12"]
    assert s["n"] == 1 and s["n_states"] == 4 and s["epsilon"] > 0
    # the world is one stored cell: a rerun into the same directory returns its records without recomputing
    monkeypatch.setattr(hpt, "study_world", lambda *a, **k: pytest.fail("a stored world was recomputed"))
    monkeypatch.setattr(hpt, "read_world", lambda *a, **k: pytest.fail("a stored rung was re-read"))
    assert [r for r in hpt.run(study, tmp_path) if "read_at" not in r] == rows
    assert len((tmp_path / "cells.jsonl").read_text().splitlines()) == 3  # the world and its two rungs
    # the ladder reads the ε every record reports (all positions of the held-out set), so the rungs a model
    # reached and its ε are one quantity: the final evaluation's ε is the final record's
    rows_log = [json.loads(line) for line in (tmp_path / "work" / "H4_w1" / "metrics.jsonl").read_text().splitlines()]
    assert rows_log[-1]["step"] == 4 and rows_log[-1]["epsilon"] == pytest.approx(final["epsilon"], rel=1e-5)


def _spy_on_the_heads(monkeypatch):
    """Record every head fit (its name, features and options) and the length of every sequence the world's
    exact law at the prepended MASK is read after."""
    fits, laws = [], []

    def spy(name, fn):
        def wrapped(features, labels, **kwargs):
            fits.append((name, np.asarray(features, np.float64), kwargs))
            return fn(features, labels, **kwargs)
        return wrapped

    def law(self, x):
        laws.append(np.shape(x)[-1])
        return exact_law(self, x)

    exact_law = HMM.prepended_mask_probs
    monkeypatch.setattr(hpt, "fit_linear_head", spy("head", hpt.fit_linear_head))
    monkeypatch.setattr(hpt, "fit_probe", spy("probe", hpt.fit_probe))
    monkeypatch.setattr(HMM, "prepended_mask_probs", law)
    return fits, laws


def _stub_world(K, w, study, work, log=print):
    return [{"n_states": K, "world_seed": w, "task_seed": 1000 * w, "method": "head", "accuracy": 0.5,
             "majority": 0.5, "accuracy_with_margin": 0.5, "epsilon": 0.1}]


def test_a_results_directory_returns_only_this_runs_cells_and_refuses_other_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(hpt, "study_world", _stub_world)
    two = dataclasses.replace(TINY, sizes=(4, 6))
    assert len(hpt.run(two, tmp_path)) == 2
    # the same settings, fewer cells: only those are returned (the other size stays stored, not averaged in)
    assert [r["n_states"] for r in hpt.run(TINY, tmp_path)] == [4]
    assert [r["world_seed"] for r in hpt.run(dataclasses.replace(TINY, first_world=2), tmp_path)] == [2]
    # other settings: refused, before anything runs, rather than mixed with cells computed differently
    monkeypatch.setattr(hpt, "study_world", lambda *a, **k: pytest.fail("ran into a foreign directory"))
    for change in ({"max_steps": 5}, {"protocol": dataclasses.replace(TINY.protocol, n_train=32)}, {"probe_steps": 3}):
        with pytest.raises(ConfigError, match="^out"):
            hpt.run(dataclasses.replace(TINY, **change), tmp_path)
    # a lost study.json (deleted after it was damaged, as the error advises): the same command resumes
    (tmp_path / "study.json").unlink()
    monkeypatch.setattr(hpt, "study_world", _stub_world)
    assert [r["world_seed"] for r in hpt.run(dataclasses.replace(TINY, first_world=3), tmp_path)] == [3]
    # cells of a run that recorded no settings (before study.json existed): refused
    old = tmp_path / "old"
    old.mkdir()
    rows = [{k: v for k, v in r.items() if k != "task_seed"} for r in _stub_world(4, 1, TINY, None)]
    (old / "cells.jsonl").write_text(json.dumps({"cell": "H4_w1_t1000", "records": rows}) + "\n")
    with pytest.raises(ConfigError, match="^out.*no settings"):
        hpt.run(TINY, old)


def test_a_repeated_rung_is_read_once():
    assert dataclasses.replace(TINY, targets=(2.0, 0.5), read_at=(2.0, 2, 0.5, 2.0)).read_at == (2.0, 0.5)


def test_the_probe_runs_the_authors_steps_whatever_the_training_set():
    assert hpt.DEFAULT.probe_epochs == 1300  # 1300 × ⌊500/128⌋ = 3900 steps
    study, _ = hpt.parse(["--trained", "--n-train", "5000"])
    assert study.probe_epochs == 100  # 100 × ⌊5000/128⌋ = 3900: the authors' 100 epochs, not 1300 of them
    assert hpt.parse(["--trained", "--authors-scale"])[0].probe_epochs == 100
    assert dataclasses.replace(TINY, probe_steps=5).probe_epochs == 2  # 64 // 16 = 4 a pass: 2 passes, ≥ 5 steps


def test_the_probe_refuses_a_learning_rate_that_is_zero_in_float32():
    """1e-50 is 0 in float32: no step would move the probe, whose accuracy would be its random start's."""
    f = np.random.default_rng(0).normal(size=(64, 3))
    with pytest.raises(ConfigError, match="lr: 1e-50 is below float32's smallest normal"):
        hpt.fit_probe(f, (f[:, 0] > 0).astype(int), epochs=3, batch_size=32, lr=1e-50)


def test_a_one_vector_prompt_study_fits_and_stores_prompt_1_once(monkeypatch):
    """With prompt_length = 1 the k-prompt is prompt-1 (one name, the same tokens): it was fitted twice and
    stored twice a world, so the summary counted each world twice (n = 2 from one world, s.d. 0)."""
    fits = []
    real = hpt.fit_transformer_prompt
    monkeypatch.setattr(hpt, "fit_transformer_prompt", lambda *a, **k: fits.append(k["k"]) or real(*a, **k))
    rows = hpt.study_world(4, 1, dataclasses.replace(TINY, prompt_length=1), log=lambda s: None)
    assert [r["method"] for r in rows].count("prompt-1") == 1 and fits == [1]
    (s,) = [s for s in hpt.summary(rows) if s["method"] == "prompt-1"]
    assert s["n"] == 1


def test_the_twenty_vector_prompt_fills_the_positions_the_head_reads():
    study = dataclasses.replace(hpt.DEFAULT, d_model=8, n_layers=1, n_heads=1)
    cfg, tc = study.configs()
    assert tc.seq_len == cfg.max_len == 80  # trained on (MASK, x_1:79): the authors' max_seq_length
    lm = MaskedTransformerLM(init_transformer(cfg, 0))
    x = np.random.default_rng(0).integers(0, 10, size=(8, 128))
    head_x, prompt_x = hpt.prompted_inputs(x, 79, 20)
    assert head_x.shape == (8, 79) and prompt_x.shape == (8, 59) and np.array_equal(prompt_x, x[:, :59])
    assert 20 + 1 + prompt_x.shape[1] == 1 + head_x.shape[1] == study.seq_len  # the prompt sees 20 fewer tokens
    y = np.arange(8) % 2
    p = fit_transformer_prompt(lm, prompt_x, y, k=20, steps=2)
    assert p.prefix.shape == (20, 8) and p.head.weight.shape == (10, 2)
    assert p.features(lm, prompt_x).shape == (8, 10)  # the law at MASK after the 20 vectors
    with pytest.raises(TokenError):  # beyond the model's positions: a typed error, not a JAX one
        fit_transformer_prompt(lm, x[:, :61], y, k=20, steps=2)
    with pytest.raises(ConfigError, match="^k"):
        hpt.prompted_inputs(x, 79, 79)


def test_the_authors_probe_reads_raw_features_and_simlm_head_standardises():
    rng = np.random.default_rng(1)
    f = rng.dirichlet(np.ones(5), size=200)
    y = (f[:, 0] > f[:, 1]).astype(int)
    probe = hpt.fit_probe(f, y, epochs=50, batch_size=32)
    assert np.all(probe.mean == 0) and np.all(probe.scale == 1) and probe.losses.shape == (50 * 6,)
    assert probe.accuracy(f, y) > 0.9


@pytest.mark.parametrize("argv, name", [(["--trained", "--bogus"], "--bogus"), (["--sizes"], "--sizes"),
                                        (["--worlds", "x"], "--worlds"), (["--quick", "--authors-scale"], "--quick"),
                                        (["--sizes", "1"], "sizes"), (["--worlds", "0"], "--worlds"),
                                        (["--trained", "--read-at", "x"], "--read-at")])
def test_bad_options_are_named(argv, name):
    with pytest.raises(ConfigError, match=name):
        hpt.parse(argv)


@pytest.mark.parametrize("change, name", [({"prompt_length": 79}, "prompt_length"), ({"probe_lr": 0}, "probe_lr"),
                                          ({"probe_lr": 1e-50}, "probe_lr: 1e-50 is below float32's smallest normal"),
                                          ({"sizes": (4, 4)}, "sizes"), ({"read_at": (0.2,)}, "read_at"),
                                          ({"read_at": (-0.3,)}, "read_at"),
                                          ({"protocol": hpp.Protocol(tasks_per_world=3)}, "protocol")])
def test_bad_studies_are_named(change, name):
    with pytest.raises(ConfigError, match=f"^{name}"):
        dataclasses.replace(hpt.DEFAULT, **change)


@pytest.mark.parametrize("argv, name", [(["--trained", "--bogus"], "--bogus"), (["--bogus"], "--bogus"),
                                        (["--sizes", "4"], "--sizes: only with --trained"),
                                        (["--trained", "--n-test", "-1"], "--n-test")])
def test_bad_command_lines_exit_2_with_one_line_naming_the_flag(argv, name, capsys):
    assert hpp.main(argv) == 2
    err = capsys.readouterr().err
    assert name in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_summary_skips_a_world_without_margin_whether_nan_or_stored_as_null():
    row = {"method": "head", "n_states": 4, "accuracy": 0.5, "majority": 0.5, "epsilon": 0.1}
    for missing in (float("nan"), None):
        (s,) = hpt.summary([{**row, "accuracy_with_margin": 1.0}, {**row, "accuracy_with_margin": missing}])
        assert s["n"] == 2 and s["accuracy_with_margin"] == 1.0 and s["n_worlds_with_margin"] == 1  # (no count before)


def test_the_summary_gives_the_sample_sd_over_worlds_and_the_mean_majority_in_increasing_size():
    row = {"method": "head", "accuracy_with_margin": 1.0, "epsilon": 0.1}
    records = [{**row, "n_states": 12, "accuracy": 0.6, "majority": 0.5},
               *[{**row, "n_states": 4, "accuracy": a, "majority": m} for a, m in ((0.5, 0.5), (0.7, 0.7), (0.9, 0.6))]]
    rows = hpt.summary(records)
    assert [r["n_states"] for r in rows] == [4, 12]  # one row per |H|, smallest first
    small = rows[0]
    # sd over worlds with Bessel's correction: sqrt(((-0.2)² + 0² + 0.2²) / (3 − 1)) = 0.2
    assert small["n"] == 3 and small["accuracy"] == pytest.approx(0.7) and small["accuracy_sd"] == pytest.approx(0.2)
    assert small["majority"] == pytest.approx(0.6)  # the mean majority over worlds, (0.5 + 0.7 + 0.6) / 3
    assert "| head | 0.700 ± 0.200 | 0.600 (n = 1) |" in hpt.markdown(rows).splitlines()  # one world: no s.d.


def test_the_markdown_epsilon_and_majority_rows_read_the_head_method_only():
    head = {"method": "head", "n_states": 4, "accuracy": 0.7, "accuracy_with_margin": 1.0, "majority": 0.5,
            "epsilon": 0.1}
    rows = hpt.summary([head, {**head, "method": "probe", "epsilon": 0.3, "majority": 0.9}])
    lines = hpt.markdown(rows).splitlines()
    assert "| trained ε (mean) | 0.100 |" in lines and "| majority | 0.500 |" in lines


def test_the_authors_probe_reshuffles_its_batches_every_epoch(monkeypatch):
    seen = []

    def spy(f, y, batches, *args, **kwargs):
        seen.append(np.asarray(batches))
        return probe_fn(f, y, batches, *args, **kwargs)

    probe_fn = hpt._probe
    monkeypatch.setattr(hpt, "_probe", spy)
    rng = np.random.default_rng(1)
    f = rng.dirichlet(np.ones(5), size=200)
    hpt.fit_probe(f, (f[:, 0] > f[:, 1]).astype(int), epochs=3, batch_size=32)
    (batches,) = seen
    epochs = batches.reshape(3, 6 * 32)  # ⌊200/32⌋ = 6 full batches an epoch, the 8 left over dropped
    for e in epochs:
        assert len(set(e.tolist())) == e.size  # each epoch draws every sequence at most once
    # a fresh order every epoch, not one order repeated, and not the data's own order
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(6 * 32))


@pytest.mark.parametrize("n, epochs, warmup", [(200, 3, 9), (256, 200, 500)])
def test_the_authors_probe_warms_up_over_half_its_steps_up_to_500(monkeypatch, n, epochs, warmup):
    seen = []

    def spy(f, y, batches, lr, key, steps, warmup):
        seen.append((steps, warmup))
        return probe_fn(f, y, batches, lr, key, steps, warmup)

    probe_fn = hpt._probe
    monkeypatch.setattr(hpt, "_probe", spy)
    f = np.random.default_rng(1).dirichlet(np.ones(3), size=n)
    hpt.fit_probe(f, (f[:, 0] > f[:, 1]).astype(int), epochs=epochs, batch_size=32)
    assert seen == [(epochs * (n // 32), warmup)]  # 18 steps: 9 warm; 1600 steps: the HF Trainer's 500


def test_a_later_rung_is_read_from_its_own_checkpoint_and_step(tmp_path, monkeypatch):
    records = [SimpleNamespace(target=2.0, reached=True, step=0), SimpleNamespace(target=0.5, reached=True, step=40),
               SimpleNamespace(target=0.1, reached=False, step=None)]
    result = SimpleNamespace(records=records, lm=lambda target: f"the ε ≤ {target:g} checkpoint")
    seen = []

    def trained_rows(hmm, lm, data, x_head, x_prompt, study, add, suffix, **meta):
        seen.append((lm, suffix, meta))
        return {"epsilon": 0.4, "epsilon_readout": 0.4}

    monkeypatch.setattr(hpt, "train", lambda *args, **kwargs: result)
    monkeypatch.setattr(hpt, "_trained_rows", trained_rows)
    study = dataclasses.replace(TINY, targets=(2.0, 0.5, 0.1))
    hpt.read_world(4, 1, study, tmp_path, 0.5, log=lambda *a: None)
    assert seen == [("the ε ≤ 0.5 checkpoint", "@0.5", {"read_at": 0.5, "train_steps": 40})]
    assert hpt.read_world(4, 1, study, tmp_path, 0.1, log=lambda *a: None) == [] and len(seen) == 1
    # a target within isclose of a rung but of another label (0.500004) is read as that rung: it was accepted
    # and then found no checkpoint named "0.500004" after the study had run
    hpt.read_world(4, 1, study, tmp_path, 0.500004, log=lambda *a: None)
    assert seen[-1] == ("the ε ≤ 0.5 checkpoint", "@0.5", {"read_at": 0.5, "train_steps": 40})
    assert dataclasses.replace(study, read_at=(0.500004, 2.0000001)).read_at == (0.5, 2.0)
    with pytest.raises(ConfigError, match="^target: 0.51 is not one of the ladder's targets"):
        hpt.read_world(4, 1, study, tmp_path, 0.51, log=lambda *a: None)


def test_every_trained_flag_reaches_the_study():
    """Every flag of the trained study's command line reaches the study (only --n-train was read, through
    probe_epochs: --first-world dropped, or --n-test taken from --n-train, passed)."""
    study, out = hpt.parse(["--trained", "--sizes", "4", "12", "--worlds", "2", "--n-train", "300", "--n-test", "200",
                            "--max-steps", "77", "--first-world", "5", "--read-at", "0.1"])
    p = study.protocol
    assert (study.sizes, p.worlds_per_size, p.n_train, p.n_test) == ((4, 12), 2, 300, 200)
    assert (study.max_steps, study.first_world, study.read_at, out) == (77, 5, (0.1,), None)


def test_every_study_setting_reaches_the_model_and_trainer():
    """Each setting, at a value other than its default, reaches the model and the trainer (a dropped
    mask_rate fell back to the trainer's default — the study's own — and passed)."""
    study = dataclasses.replace(hpt.DEFAULT, d_model=24, n_layers=3, n_heads=2, batch_size=7, max_steps=333,
                                learning_rate=2e-3, targets=(0.4, 0.2), mask_rate=0.05, eval_sequences=9)
    model, tc = study.configs()
    assert (model.d_model, model.n_layers, model.n_heads, model.max_len) == (24, 3, 2, study.seq_len)
    assert (tc.batch_size, tc.max_steps, tc.learning_rate, tuple(tc.targets), tc.mask_rate, tc.eval_sequences,
            tc.eval_positions, tc.seq_len) == (7, 333, 2e-3, (0.4, 0.2), 0.05, 9, study.seq_len, study.seq_len)


def test_the_authors_probe_decays_its_learning_rate_to_zero(monkeypatch):
    """Warmup from 0 to lr over min(500, steps/2) steps, then linear decay to 0 over the rest, as documented
    (lr is traced, so the pieces are read where they are built; a schedule left at lr passed every test)."""
    seen = []
    real = optax.linear_schedule

    def spy(init_value, end_value, transition_steps, *a, **k):
        seen.append((init_value if isinstance(init_value, float) else "lr",
                     end_value if isinstance(end_value, float) else "lr", transition_steps))
        return real(init_value, end_value, transition_steps, *a, **k)

    monkeypatch.setattr(optax, "linear_schedule", spy)
    jax.clear_caches()  # the schedule is built where the fit is traced: traced anew, whatever ran before
    f = np.random.default_rng(3).dirichlet(np.ones(3), size=96)
    hpt.fit_probe(f, (f[:, 0] > f[:, 1]).astype(int), epochs=7, batch_size=32, lr=0.01)  # 21 steps, 10 warm
    assert seen == [(0.0, "lr", 10), ("lr", 0.0, 11)]
