"""Review fixes of simlm.experiments.head_prompt_trained: bad arguments are refused with typed errors naming
them before anything is computed or trained, a one-class training set is refused, the probe refuses a
schedule whose only step is at learning rate 0, and the docs' data-size recipe is the stored run's."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from simlm.errors import ConfigError, TokenError
from simlm.experiments import head_prompt_protocol as hpp
from simlm.experiments import head_prompt_trained as hpt

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: the tests' tiny study (as tests/test_head_prompt_trained.py); nothing here trains it
TINY = hpt.TrainedStudy(protocol=dataclasses.replace(hpt.PROTOCOL, worlds_per_size=1, label_length=24,
                                                     visible_length=19, n_train=64, n_test=64),
                        sizes=(4,), prompt_length=12, d_model=8, n_layers=1, n_heads=1, batch_size=8, max_steps=4,
                        targets=(2.0, 0.5), prompt_steps=3, probe_steps=2, probe_batch=16, eval_sequences=2,
                        oracle_prompt=False)


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if data is drawn, a head is fitted or a transformer is trained."""
    for name in ("_inputs", "task_data", "train", "fit_linear_head", "fit_probe"):
        monkeypatch.setattr(hpt, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} ran before the arguments were checked"))


@pytest.mark.parametrize("args, name", [((np.arange(10), 5, 2), "x"),  # one sequence, not (n, T)
                                        ((np.full((2, 10), 0.5), 5, 2), "x"),  # not token ids
                                        ((np.zeros((2, 10), int), 5, 2.5), "k"),
                                        ((np.zeros((2, 10), int), 5.0, 2), "visible_length"),
                                        ((np.zeros((2, 10), int), 5, True), "k"),
                                        ((np.zeros((2, 10), int), 11, 2), "visible_length"),
                                        ((np.zeros((2, 10), int), 5, 5), "k")])
def test_prompted_inputs_refuses_bad_arguments_by_name(args, name):
    with pytest.raises((ConfigError, TokenError), match=f"^{name}:"):
        hpt.prompted_inputs(*args)
    head, prompt = hpt.prompted_inputs(np.arange(20).reshape(2, 10) % 10, 5, 2)
    assert head.shape == (2, 5) and prompt.shape == (2, 3) and np.array_equal(prompt, [[0, 1, 2], [0, 1, 2]])


@pytest.mark.parametrize("change, name", [({"target": 0.3}, "target"),  # not a ladder target: no checkpoint
                                          ({"target": "x"}, "target"), ({"target": -1.0}, "target"),
                                          ({"work": None}, "work"), ({"work": 3}, "work"),
                                          ({"study": hpt.PROTOCOL}, "study"), ({"K": 4.0}, "K"), ({"K": 1}, "K")])
def test_read_world_refuses_bad_arguments_before_computing_anything(tmp_path, nothing_runs, change, name):
    args = {"K": 4, "world_seed": 1, "study": TINY, "work": tmp_path, "target": 2.0, **change}
    with pytest.raises(ConfigError, match=f"^{name}:"):
        hpt.read_world(**args)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("change, name", [({"study": hpt.PROTOCOL}, "study"), ({"K": 1}, "K"),
                                          ({"world_seed": -1}, "world_seed"), ({"world_seed": 1.0}, "world_seed")])
def test_study_world_refuses_bad_arguments_before_computing_anything(nothing_runs, change, name):
    args = {"K": 4, "world_seed": 1, "study": TINY, **change}
    with pytest.raises(ConfigError, match=f"^{name}:"):
        hpt.study_world(**args)


def test_a_one_class_training_set_is_refused_before_anything_is_fitted(monkeypatch):
    with pytest.raises(ConfigError, match="^n_train:"):  # no second class possible: refused when the study is made
        dataclasses.replace(TINY, protocol=dataclasses.replace(TINY.protocol, n_train=1))
    with pytest.raises(ConfigError, match="n_train"):
        hpt.parse(["--trained", "--quick", "--n-train", "1"])
    # world 1's first three labels (of 3 + 3 sequences) are all 1; world 2's are not
    study = dataclasses.replace(TINY, protocol=dataclasses.replace(TINY.protocol, n_train=3, n_test=3))
    _, data, _, _ = hpt._inputs(4, 2, study)
    assert len(set(data.y[:3].tolist())) == 2
    for name in ("train", "fit_linear_head", "fit_probe", "fit_exact_prompt"):
        monkeypatch.setattr(hpt, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} ran on a one-class training set"))
    with pytest.raises(ConfigError, match="^n_train: the 3 training sequences .* all have label 1"):
        hpt.study_world(4, 1, study, log=lambda s: None)


def test_the_probe_refuses_a_schedule_whose_only_step_is_at_learning_rate_zero():
    rng = np.random.default_rng(0)
    f = rng.dirichlet(np.ones(4), size=16)
    y = np.arange(16) % 2
    with pytest.raises(ConfigError, match="^epochs:"):  # 1 epoch of one full batch: 1 step, at lr 0
        hpt.fit_probe(f, y, epochs=1, batch_size=16)
    with pytest.raises(ConfigError, match="^epochs:"):  # a batch larger than the data is the whole of it
        hpt.fit_probe(f, y, epochs=1, batch_size=64)
    with pytest.raises(ConfigError, match="^probe_steps:"):
        dataclasses.replace(TINY, probe_steps=1)
    # two steps: the second is at the full learning rate and moves the weights
    two = hpt.fit_probe(f, y, epochs=2, batch_size=16)
    start = hpt.LinearLogits().init(hpt.as_key(0, "seed"), 4, 2)
    assert two.losses.shape == (2,) and not np.allclose(two.weight, np.asarray(start["W"]))


def test_the_docs_data_size_recipe_is_the_stored_runs_protocol():
    text = (DOCS / "head_prompt.md").read_text()
    assert "P = dataclasses.replace(head_prompt_trained.PROTOCOL, n_train=5000, n_test=1000)" in text
    assert "task_data(world(12, w), task_seed(w, 0, P), P)" in text and "task_seed(w), AUTHORS" not in text
    P = dataclasses.replace(hpt.PROTOCOL, n_train=5000, n_test=1000)
    assert P.sampling == "prepended"  # the study's sampling, not AUTHORS' "start"
    stored = json.loads((DOCS / "head_prompt_trained_h12_datasize.json").read_text())
    assert [r["task_seed"] for r in stored] == [hpp.task_seed(r["world"], 0, P) for r in stored]


# ---- the probe refuses divergence and a schedule too large to allocate; the table says its counts -----------

def _probe_data():
    rng = np.random.default_rng(0)
    f = rng.dirichlet(np.ones(10), size=256)
    return f, (f[:, 0] + 0.1 * rng.standard_normal(256) > 0.1).astype(int)


@pytest.mark.parametrize("lr", [1e3, 1e6, 1e30])
def test_fit_probe_refuses_a_diverged_fit(lr):
    """lr 1e3 took the loss on all training data from 0.69 to 12.7 and returned the probe (training accuracy
    0.73) with no error, where every other fit raises (a review, 2026-12-07)."""
    from simlm.errors import TrainingDivergedError
    f, y = _probe_data()
    with pytest.raises(TrainingDivergedError, match="lr"):
        hpt.fit_probe(f, y, epochs=20, batch_size=32, lr=lr)
    assert hpt.fit_probe(f, y, epochs=20, batch_size=32).accuracy(f, y) > 0.6  # the default still fits


def test_a_probe_schedule_too_large_to_allocate_is_refused_not_hung():
    from simlm.errors import SimlmError
    f, y = _probe_data()
    with pytest.raises(SimlmError, match="epochs"):
        hpt.fit_probe(f, y, epochs=10**12)
    with pytest.raises(SimlmError, match="probe_steps"):
        hpt.TrainedStudy(probe_steps=10**15)


def test_the_table_says_how_many_worlds_a_shorter_row_averages_and_how_many_lms_reached_no_rung():
    """head@0.3 averaged the 15 worlds that reached the rung beside head over 20 (5 of them with no rung, a
    failed pretraining, averaged in), with no count: the earlier checkpoint read better than the final model."""
    base = dict(n_states=12, features="trained", accuracy_with_margin=1.0, majority=0.6, epsilon=0.05)
    recs = [dict(base, world_seed=w, method="head", accuracy=a, rungs=rg)
            for w, a, rg in ((1, 0.9, [0.3, 0.1]), (2, 0.8, [0.3]), (3, 0.6, []))]
    recs += [dict(base, world_seed=w, method="head@0.3", accuracy=a, read_at=0.3) for w, a in ((1, 0.95), (2, 0.85))]
    rows = hpt.summary(recs)
    assert next(r for r in rows if r["method"] == "head")["n_without_rung"] == 1
    lines = hpt.markdown(rows).splitlines()
    assert "(n = 2)" in next(line for line in lines if line.startswith("| head@0.3 "))
    assert "1 of 3" in next(line for line in lines if line.startswith("| LMs without a rung"))
