"""A run directory survives damage and moves: each kind of file is damaged in a copy of one finished tiny
run, and the rerun either recovers (reproducing the finished results exactly) or stops with a
ConfigError naming the file and how to recover — never a raw Orbax/JSON traceback, never a lost or
silently different result."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from simlm import HMM
from simlm.errors import ConfigError
from simlm.models.transformer import TransformerConfig
from simlm.train import TrainConfig, exact_epsilon, load_lm, train
import simlm.train.trainer as trainer

WORLD = HMM.random(0, 3, 4)
MODEL = TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=1, max_len=8)
# ε starts near 0.2: the first three rungs are crossed within 6 steps, the last never; resume points are
# saved at steps 0, 5, 10 and 12 (last/ = 12 with the final evaluation, previous/ = 10).
CONFIG = TrainConfig(targets=(0.15, 0.1, 0.05, 0.01), batch_size=8, seq_len=8, max_steps=12, eval_every=5,
                     learning_rate=3e-2, warmup_steps=2, eval_sequences=8, checkpoint_every=5)


def run_train(run_dir, config=CONFIG, **kw):
    return train(WORLD, MODEL, config, run_dir, progress=False, **kw)


def rows(run_dir):
    """metrics.jsonl without the wall-clock columns, which no two runs share."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    return [{k: v for k, v in json.loads(l).items() if k not in ("wall_time", "tokens_per_s")} for l in text.splitlines()]


def summary(result):
    records = [(r.seed, r.target, r.reached, r.epsilon, r.epsilon_se, r.step, r.tokens_seen) for r in result.records]
    x = np.asarray(WORLD.sample(CONFIG.eval_seed, CONFIG.eval_sequences, CONFIG.seq_len))
    return records, result.best_epsilon, result.final_step, np.asarray(result.final_lms[0].next_token_logprobs(x))


def same(a, b):
    assert a[:3] == b[:3]
    np.testing.assert_array_equal(a[3], b[3])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_train(run_dir)
    assert [r.reached for r in result.records] == [True, True, True, False]
    assert (run_dir / "previous").is_dir()
    return run_dir, summary(result), rows(run_dir)


@pytest.fixture
def copy(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    return run_dir


def rerun_recovers(run_dir, finished, warns=None):
    """Rerun on the damaged directory: same results and log as the untouched run, and the expected warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_train(run_dir)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if warns:
        assert any(warns in m for m in messages), messages
    same(summary(result), finished[1])
    assert rows(run_dir) == finished[2]
    for r in result.records:
        if r.reached:
            assert Path(r.path).is_relative_to(run_dir)
            assert result.lm(r.target).metadata["step"] == r.step
    return messages


def truncate(path: Path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def orbax_data(directory: Path) -> Path:
    """The array data file Orbax reads back (the largest file under state/d/)."""
    return max((directory / "state" / "d").iterdir(), key=lambda p: p.stat().st_size)


def rung(run_dir, target=0.1):
    return run_dir / "seed_0" / f"eps_{target:g}"


# ---- a resumed run equals an uninterrupted one ----------------------------------------------------
def test_a_finished_run_rerun_is_a_no_op_that_keeps_every_row(copy, finished):
    before = (copy / "last" / "metadata.json").read_bytes()
    assert not rerun_recovers(copy, finished)  # no warning
    assert (copy / "last" / "metadata.json").read_bytes() == before  # nothing re-saved


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    config = TrainConfig(**{**CONFIG.to_dict(), "seeds": (0, 1)})
    run_dir = tmp_path_factory.mktemp("two_seeds")
    return config, run_train(run_dir, config), rows(run_dir)


def test_a_resumed_log_equals_the_uninterrupted_one_row_for_row(two_seeds, tmp_path):
    """Interrupted at an evaluation step where a rung is crossed, with two seeds."""
    config, whole, whole_rows = two_seeds
    until = 3
    assert until in {r["step"] for r in whole_rows}
    run_train(tmp_path, config, until_step=until)
    parts = run_train(tmp_path, config)
    assert rows(tmp_path) == whole_rows
    assert all(r["loss"] is not None for r in whole_rows if r["step"] > 0)
    assert [r.epsilon for r in parts.records] == [r.epsilon for r in whole.records]


def test_an_interruption_before_the_first_resume_point_resumes(finished, tmp_path, monkeypatch):
    """Killed between the step-0 resume point (whose best ε is +inf, stored as null) and the next one."""
    batch = trainer.Training.batch

    def interrupted(self, step):
        if step == 3:
            raise KeyboardInterrupt
        return batch(self, step)

    monkeypatch.setattr(trainer.Training, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train(tmp_path / "run")
    monkeypatch.setattr(trainer.Training, "batch", batch)
    same(summary(run_train(tmp_path / "run")), finished[1])
    assert rows(tmp_path / "run") == finished[2]


# ---- moved and copied run directories ---------------------------------------------------------------
def test_a_moved_run_directory_reruns_and_loads_from_its_new_place(copy, finished, tmp_path):
    moved = tmp_path / "moved"
    copy.rename(moved)
    assert not rerun_recovers(moved, finished)


def test_a_copied_run_directory_is_independent_of_the_original(copy, finished, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(copy, twin)
    shutil.rmtree(copy / "seed_0")  # the original loses its ladder: the copy must not need it
    assert not rerun_recovers(twin, finished)


# ---- damaged files: recovered ----------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "invalid utf-8", "not an object"])
def test_a_damaged_config_json_is_rewritten_from_the_checkpoint(copy, finished, damage):
    cfg = copy / "config.json"
    good = cfg.read_bytes()
    {"truncated": lambda: truncate(cfg), "invalid utf-8": lambda: cfg.write_bytes(b"\xff\xfe{"),
     "not an object": lambda: cfg.write_text("42")}[damage]()
    rerun_recovers(copy, finished, warns="config.json")
    assert json.loads(cfg.read_bytes()) == json.loads(good)


@pytest.mark.parametrize("damage", ["truncated", "no ladder state"])
def test_a_damaged_last_metadata_falls_back_to_the_previous_resume_point(copy, finished, damage):
    meta = copy / "last" / "metadata.json"
    {"truncated": lambda: truncate(meta), "no ladder state": lambda: meta.write_text(json.dumps({**json.loads(meta.read_text()), "ladder_state": 7}))}[damage]()
    rerun_recovers(copy, finished, warns=str(meta))
    assert json.loads((copy / "last" / "metadata.json").read_text())["ladder_state"]["step"] == CONFIG.max_steps


# Orbax's reader thread may log "Event loop is closed" after TensorStore reports a truncated file.
orbax_noise = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@orbax_noise
@pytest.mark.parametrize("damage", ["truncated orbax file", "deleted state"])
def test_damaged_last_arrays_fall_back_to_the_previous_resume_point(copy, finished, damage):
    if damage == "truncated orbax file":
        truncate(orbax_data(copy / "last"))
    else:
        shutil.rmtree(copy / "last" / "state")
    rerun_recovers(copy, finished, warns=str(copy / "last"))


def test_a_damaged_last_resume_point_is_rewritten_even_when_the_run_stops_at_the_previous_one(copy, finished):
    """last/ damaged, previous/ at step 10, stopped at step 10: the resume point is saved again (a valid
    last/ at step 10), so the next rerun resumes from it with no warning."""
    meta = copy / "last" / "metadata.json"
    truncate(meta)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_train(copy, until_step=10)
    assert any(str(meta) in str(w.message) for w in caught)
    assert json.loads(meta.read_text())["ladder_state"]["step"] == 10
    assert not rerun_recovers(copy, finished)  # no warning


def test_both_resume_points_damaged_retrains_from_the_start(copy, finished):
    truncate(copy / "last" / "metadata.json")
    shutil.rmtree(copy / "previous" / "state")
    rerun_recovers(copy, finished, warns="resuming from the start")


@pytest.mark.parametrize("damage", ["truncated", "invalid utf-8", "deleted"])
def test_a_damaged_ladder_metadata_is_rewritten_on_resume(copy, finished, damage):
    meta = rung(copy) / "metadata.json"
    good = json.loads(meta.read_text())
    {"truncated": lambda: truncate(meta), "invalid utf-8": lambda: meta.write_bytes(b"{\"x\": \"\xff\"}"),
     "deleted": meta.unlink}[damage]()
    with pytest.raises(ConfigError, match=f"checkpoint: {rung(copy)}.*rerun train"):
        load_lm(rung(copy))  # before the rerun: named, with the way to recover
    rerun_recovers(copy, finished, warns=str(meta))
    assert json.loads(meta.read_text()) == good
    load_lm(rung(copy))


@orbax_noise
@pytest.mark.parametrize("damage", ["truncated orbax file", "deleted state", "swapped arrays"])
def test_damaged_ladder_arrays_are_a_named_error_for_load_lm(copy, damage):
    if damage == "truncated orbax file":
        truncate(orbax_data(rung(copy)))
    else:
        shutil.rmtree(rung(copy) / "state")
        if damage == "swapped arrays":  # another rung's arrays, same shapes: only the checksum can tell
            shutil.copytree(rung(copy, 0.05) / "state", rung(copy) / "state")
    problem = {"truncated orbax file": "cannot be read", "deleted state": "is missing", "swapped arrays": "checksum"}
    with pytest.raises(ConfigError, match=f"checkpoint: {rung(copy)}.*{problem[damage]}.*rerun train"):
        load_lm(rung(copy))


@orbax_noise
def test_damaged_ladder_arrays_are_retrained(copy, finished):
    truncate(orbax_data(rung(copy)))
    rerun_recovers(copy, finished, warns=str(rung(copy)))
    load_lm(rung(copy))


def test_a_torn_last_metrics_line_is_dropped_and_recomputed(copy, finished):
    """The torn row is the resume point's own evaluation: it is recomputed from last/ (no warning, nothing
    retrained or re-saved), not a reason to fall back to previous/."""
    metrics = copy / "metrics.jsonl"
    before = (copy / "last" / "metadata.json").read_bytes()
    metrics.write_bytes(metrics.read_bytes()[:-20])  # the final evaluation's row, torn mid-write
    assert not rerun_recovers(copy, finished)  # no warning
    assert (copy / "last" / "metadata.json").read_bytes() == before


def test_a_torn_line_after_the_resume_point_is_dropped(finished, tmp_path):
    run_dir = tmp_path / "run"
    run_train(run_dir, until_step=8)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "seed": 0, "epsil')  # killed while logging after the last save
    rerun_recovers(run_dir, finished)


def test_damaged_middle_metrics_lines_are_recovered(copy, finished):
    metrics = copy / "metrics.jsonl"
    lines = metrics.read_bytes().split(b"\n")
    lines[2], lines[4] = b"{}", b"\xff\xfe"
    metrics.write_bytes(b"\n".join(lines))
    rerun_recovers(copy, finished, warns=f"line 3 of {metrics}")


def test_a_metrics_line_edited_to_nan_is_damaged(copy, finished):
    """simlm never writes a NaN token; a row edited to one is damaged (recomputed), not an ε read as NaN."""
    metrics = copy / "metrics.jsonl"
    lines = metrics.read_bytes().split(b"\n")
    row = json.loads(lines[2])
    lines[2] = json.dumps({**row, "epsilon": float("nan")}).encode()
    metrics.write_bytes(b"\n".join(lines))
    rerun_recovers(copy, finished, warns=f"line 3 of {metrics}")


def test_a_deleted_metrics_file_is_recomputed(copy, finished):
    (copy / "metrics.jsonl").unlink()
    rerun_recovers(copy, finished, warns="metrics")


# ---- damage that cannot be recovered safely: a named error saying how ----------------------------------
def test_a_damaged_config_json_without_a_confirming_checkpoint_is_a_named_error(copy):
    truncate(copy / "config.json")
    truncate(copy / "last" / "metadata.json")
    (copy / "previous" / "metadata.json").write_bytes(b"\xff")
    with pytest.raises(ConfigError, match=f"run_dir: {copy / 'config.json'} is unreadable.*rm {copy / 'config.json'}"):
        run_train(copy)


def test_a_checkpoint_of_another_run_is_never_used(copy):
    meta = copy / "last" / "metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "world_fingerprint": "0" * 16}))
    with pytest.raises(ConfigError, match=f"run_dir: {copy / 'last'} holds a checkpoint of a different run"):
        run_train(copy)
    (copy / "config.json").unlink()  # a deleted config.json does not let it through either
    with pytest.raises(ConfigError, match="different run"):
        run_train(copy)


def test_a_directory_left_with_another_runs_rungs_alone_is_not_claimed(copy):
    """config.json and both resume points gone, the rungs of another run left: the directory was claimed, its
    metrics overwritten, and the rungs this run never reached kept under its config.json."""
    rungs = sorted(copy.glob("seed_*/eps_*"))
    assert rungs
    for rung in rungs:
        meta = rung / "metadata.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "world_fingerprint": "0" * 16}))
    (copy / "config.json").unlink()
    shutil.rmtree(copy / "last")
    shutil.rmtree(copy / "previous")
    metrics = (copy / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=f"run_dir: {rungs[0]} holds a checkpoint of a different run"):
        run_train(copy)
    assert not (copy / "config.json").exists() and (copy / "metrics.jsonl").read_bytes() == metrics


def test_load_lm_checks_the_run_it_came_from(copy, finished, tmp_path):
    result = run_train(copy)
    rung_dir = Path(result.records[1].path)
    meta = json.loads((rung_dir / "metadata.json").read_text())
    (rung_dir / "metadata.json").write_text(json.dumps({**meta, "world_fingerprint": "0" * 16}))
    with pytest.raises(ConfigError, match="different run.*world_fingerprint"):
        result.lm(result.records[1].target)
    lm = load_lm(rung_dir)  # without expectations it loads, and its ε is the recorded one
    x = np.asarray(WORLD.sample(CONFIG.eval_seed, CONFIG.eval_sequences, CONFIG.seq_len))
    assert exact_epsilon(WORLD, lm, x)[0] == pytest.approx(result.records[1].epsilon, rel=1e-5)


def _swap(a: Path, b: Path):
    a.rename(a.with_name("swap")), b.rename(a), a.with_name("swap").rename(b)


def test_a_rung_read_back_by_its_result_is_that_rung_and_a_checkpoint_without_checksum_is_refused(copy):
    """TrainResult.lm checked only the run's header: rung directories swapped on disk gave the 0.05 rung's model
    for lm(0.1).  And a metadata.json without its checksum skipped the check of the arrays: another rung's state/
    loaded as this rung's model (a review 2026-12-06).  Both are now ConfigErrors naming the checkpoint."""
    result = run_train(copy)  # finished: read back
    assert result.lm(0.1).metadata["target"] == 0.1
    rungs = copy / "seed_0"
    _swap(rungs / "eps_0.1", rungs / "eps_0.05")
    with pytest.raises(ConfigError, match=r"eps_0\.1 was saved by a different run \(differs in \['step', 'target'\]\)"):
        result.lm(0.1)
    _swap(rungs / "eps_0.1", rungs / "eps_0.05")
    _swap(rungs / "eps_0.1" / "state", rungs / "eps_0.05" / "state")
    meta = json.loads((rungs / "eps_0.1" / "metadata.json").read_text())
    del meta["checksum"]
    (rungs / "eps_0.1" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"eps_0\.1/metadata\.json has no checksum"):
        load_lm(rungs / "eps_0.1")
