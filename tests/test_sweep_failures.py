"""Review (2026-12-05) of how a sweep survives what goes wrong in its jobs: an error that is not simlm's own
inside a check, a pool worker that dies, and a run stopped while jobs are queued."""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import nullcontext

import pytest

import simlm.experiments.registry as registry
from simlm.experiments.executors import InProcess, ProcessPool, WorkerLost
from simlm.experiments.store import CellStore
from simlm.experiments.sweep import parse_config, run_sweep

RAW = {"name": "t", "seed": 0, "data": {"n_sequences": 4, "length": 4},
       "worlds": [{"name": n, "kind": "hmm", "seed": s, "options": {"n_states": 2, "n_symbols": 3}}
                  for n, s in (("h1", 1), ("h2", 2))],
       "lms": {"oracle": True}, "checks": {"simlm/epsilon": {}}}


def test_an_error_that_is_not_simlms_fails_its_cell_not_the_sweep(monkeypatch, tmp_path):
    """A ValueError (or a MemoryError, XLA's RESOURCE_EXHAUSTED) raised in one cell's check stopped the whole
    sweep: no tables, no summary, and every rerun stopped at the same cell, never running those after it."""
    check = registry.get_check("simlm/epsilon")

    def run(cell):
        if cell.world_spec["name"] == "h1":
            raise ValueError("planned failure")
        return check.run(cell)

    monkeypatch.setitem(registry._REGISTRY, "simlm/epsilon", dataclasses.replace(check, run=run))
    result = run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)
    [error] = result["errors"]
    assert error["cell"].startswith("h1|") and error["error"].startswith("ValueError: planned failure (raised at")
    assert {r["world"] for r in result["rows"]} == {"h2"}
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.json").exists()


class _LosesSecondJob(InProcess):
    """Runs every job here but reports the second's worker as dead, as ProcessPool.map does."""

    shares_filesystem = True

    def map(self, fn, payloads):
        for i, p in enumerate(payloads):
            yield p, (WorkerLost("terminated abruptly") if i == 1 else fn(p))


def test_the_cells_of_a_dead_workers_job_fail_and_the_tables_are_written(tmp_path):
    """A pool worker killed (out of memory, a signal) raised BrokenProcessPool out of the sweep: no tables,
    no summary, a traceback.  Its job's unstored cells are failed cells now, listed and rerun."""
    result = run_sweep(parse_config(RAW), tmp_path, executor=_LosesSecondJob(), progress=False, log=lambda *a: None)
    [error] = result["errors"]
    assert "worker process died before its job returned" in error["error"] and "terminated abruptly" in error["error"]
    assert (tmp_path / "summary.json").exists() and len(CellStore(tmp_path / "cells.jsonl")) == 2
    again = run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)
    assert again["new_cells"] == 1 and not again["errors"]


def test_a_pool_stopped_while_jobs_are_queued_starts_none_of_them(tmp_path):
    """Ctrl-C (or a consumer that stops) left the pool running its whole queue before returning."""
    paths = [tmp_path / f"job{i}" for i in range(8)]
    results = ProcessPool(1, single_threaded=False).map(os.system, [f"sleep 0.3 && touch {p}" for p in paths])
    next(results)
    results.close()  # GeneratorExit at the yield, as KeyboardInterrupt would be
    ran = sum(p.exists() for p in paths)
    assert 1 <= ran <= 3, ran  # the first, the one running and at most one the worker had already taken


def test_a_dead_worker_loses_its_job_and_the_queued_ones_run_in_a_fresh_pool(tmp_path):
    """A worker killed (out of memory, a signal) broke the pool, and every job still queued came back as
    WorkerLost without having run: one bad job of a long sweep lost the rest of its run.  Those no worker had
    started run in a fresh pool now; the killed job is lost (and only it, with one worker)."""
    paths = [tmp_path / f"job{i}" for i in range(5)]
    commands = [f"touch {p}" for p in paths]
    commands[1] = "kill -9 $PPID"  # the shell's parent: the worker running the job
    results = dict(ProcessPool(1, single_threaded=False).map(os.system, commands))
    assert isinstance(results.pop(commands[1]), WorkerLost)
    assert results == {c: 0 for i, c in enumerate(commands) if i != 1}
    assert [p.exists() for p in paths] == [True, False, True, True, True]


def test_jobs_that_each_kill_their_worker_are_each_lost_once(tmp_path):
    """Each fresh pool runs the queue on; a job that kills every worker it meets is lost, never rerun."""
    commands = [f"kill -9 $PPID; touch {tmp_path / f'job{i}'}" for i in range(3)]
    results = list(ProcessPool(1, single_threaded=False).map(os.system, commands))
    assert sorted(p for p, _ in results) == sorted(commands)
    assert all(isinstance(r, WorkerLost) for _, r in results)


def test_two_claims_of_one_new_directory_at_once_let_one_config_in(monkeypatch, tmp_path):
    """Both saw no sweep.json and went on: one directory filled with two configs' cells under one sweep.json
    (a 1-in-8 race, made certain here by a slow write).  The claim holds the store's lock now."""
    import threading
    import time

    import simlm.jsonio as jsonio
    from simlm.errors import ConfigError
    from simlm.experiments.store import claim

    write = jsonio.write_json_atomic

    def slow(path, payload):
        time.sleep(0.5)
        return write(path, payload)

    monkeypatch.setattr(jsonio, "write_json_atomic", slow)
    outcome = {}

    def run(name, config, delay):
        time.sleep(delay)
        try:
            outcome[name] = claim(tmp_path / "sweep.json", config, cells=tmp_path / "cells.jsonl")
        except ConfigError as err:
            outcome[name] = err

    threads = [threading.Thread(target=run, args=("a", {"n": 16}, 0.0)),
               threading.Thread(target=run, args=("b", {"n": 24}, 0.1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(outcome["a"], str) and isinstance(outcome["b"], ConfigError)
    assert json.loads((tmp_path / "sweep.json").read_text()) == {"n": 16}


def test_a_worker_whose_parent_is_gone_removes_the_pools_compilation_cache(tmp_path):
    """A parent killed by SIGTERM (timeout, a scheduler) left its temporary XLA cache behind (25 of them were
    found in one machine's /tmp); the worker that notices the parent is gone removes it as it leaves."""
    import subprocess
    import sys

    cache = tmp_path / "simlm-xla-cache-x"
    (cache / "entry").mkdir(parents=True)
    # a child whose parent (this test's direct child) exits at once: the watch sees it handed to another
    code = ("import os, subprocess, sys\n"
            "if len(sys.argv) == 1:\n"
            "    subprocess.Popen([sys.executable, __file__, str(os.getpid())]); os._exit(0)\n"
            "from simlm.experiments.executors import _exit_without\n"
            f"_exit_without(int(sys.argv[1]), {str(cache)!r}, every=0.05)\n")
    script = tmp_path / "watch.py"
    script.write_text(code)
    subprocess.run([sys.executable, str(script)], check=True)
    for _ in range(600):  # the grandchild imports simlm first
        if not cache.exists():
            break
        __import__("time").sleep(0.05)
    assert not cache.exists()


def test_a_dead_workers_cell_that_failed_before_reads_this_runs_failure(monkeypatch, tmp_path):
    """A cell stored as failed by an earlier run, then lost with its worker in this one, kept the earlier
    run's error (a bug since fixed) as if it still happened."""
    check = registry.get_check("simlm/epsilon")

    def bad(cell):
        raise ValueError("the first run's failure")

    monkeypatch.setitem(registry._REGISTRY, "simlm/epsilon", dataclasses.replace(check, run=bad))
    run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)
    monkeypatch.setitem(registry._REGISTRY, "simlm/epsilon", check)
    result = run_sweep(parse_config(RAW), tmp_path, executor=_LosesSecondJob(), progress=False, log=lambda *a: None)
    [error] = result["errors"]
    assert "worker process died" in error["error"] and "first run" not in error["error"]


def test_a_lock_is_reentrant_however_its_directory_is_spelt(tmp_path):
    """claim() holds the store's lock and reads the cells under it again: with the cells' path spelt
    through '..' the inner lock was a second flock on the same file in one process, a hang."""
    import signal

    from simlm.experiments.store import claim

    (tmp_path / "sub").mkdir()
    (tmp_path / "cells.jsonl").write_text("")
    def hang(*_):
        raise RuntimeError("claim() waited on a lock this thread holds")  # not an OSError: locked() goes on past those

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)  # a hang fails this test, not the suite
    try:
        assert claim(tmp_path / "sweep.json", {"n": 1}, cells=tmp_path / "sub" / ".." / "cells.jsonl")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _hold_and_die(lock) -> None:
    lock.acquire()
    os._exit(9)


def test_unpinning_does_not_wait_for_ever_on_a_lock_a_dead_worker_held(monkeypatch):
    """A worker killed while it held the pins' lock (it started XLA's backend under it: seconds on a GPU)
    left the pool's parent blocked in _unpin for ever, its sweep hung.  The backend starts before the lock
    now, and _unpin waits a bounded time."""
    import multiprocessing
    import time

    from simlm.experiments import executors

    context = multiprocessing.get_context("spawn")
    pins = context.Array("q", [0, 0, 0, 0])
    dead = context.Process(target=_hold_and_die, args=(pins.get_lock(),))
    dead.start()
    dead.join()
    monkeypatch.setattr(executors, "_UNPIN_WAIT_S", 0.5)
    started = time.perf_counter()
    executors._unpin(pins, [0])
    assert pins.get_obj()[1] == 1 and time.perf_counter() - started < 5  # pins[1] would wait on the lock


def test_auto_workers_counts_the_cores_this_process_may_use(monkeypatch):
    """--workers auto read os.cpu_count(): under taskset -c 0 (or a 2-core cpuset of a 64-core machine) it
    started a worker per core of the machine, pinned several to each usable core."""
    from simlm.experiments import executors

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert executors.usable_cores() == 1 and executors.auto_workers() == 1
    assert ProcessPool(1).single_threaded


class _LosesTraining(InProcess):
    """Reports the worker of every training job as dead, runs every other job here."""

    shares_filesystem = True

    def map(self, fn, payloads):
        from simlm.experiments.sweep import train_job

        for p in payloads:
            yield p, (WorkerLost("terminated abruptly") if fn is train_job else fn(p))


def test_a_training_worker_that_dies_loses_its_ladder_not_the_sweep(tmp_path):
    """A worker killed while training a ladder stopped the sweep with a JSONDecodeError (the reason lost,
    no tables, no summary).  The ladder is listed as lost now (an error: exit status 1), the other cells
    run, and a rerun trains it."""
    from simlm.experiments.report import markdown

    raw = {**RAW, "worlds": RAW["worlds"][:1],
           "lms": {"oracle": True, "trained": {"targets": [0.05], "model": {"d_model": 8, "n_layers": 1, "n_heads": 1},
                                               "train": {"max_steps": 2, "batch_size": 4, "eval_every": 1}}}}
    result = run_sweep(parse_config(raw), tmp_path, executor=_LosesTraining(), progress=False, log=lambda *a: None)
    [lost] = result["lost"]
    assert lost["world"] == "h1" and "terminated abruptly" in lost["error"]
    assert [e["cell"] for e in result["errors"]] == ["h1|trained ladder"]
    assert {r["lm"] for r in result["rows"]} == {"oracle"} and (tmp_path / "results.csv").exists()
    assert "Ladders lost in the last run" in markdown(result["rows"], tmp_path, [])
    again = run_sweep(parse_config(raw), tmp_path, progress=False, log=lambda *a: None)
    assert not again["lost"] and not again["errors"]
    assert "Ladders lost" not in markdown(again["rows"], tmp_path, [])


def test_a_training_that_diverges_loses_its_ladder_not_the_sweep(tmp_path):
    """A ladder whose training diverged raised out of the sweep before any cell ran: no table, no summary,
    exit status 2, and the same on every rerun (a review, 2026-12-06).  Its ladder is listed as lost with
    the divergence; the oracle's cells run and are written."""
    from simlm.experiments.report import markdown

    raw = {**RAW, "worlds": RAW["worlds"][:1],
           "lms": {"oracle": True, "trained": {"targets": [0.01], "model": {"d_model": 8, "n_layers": 1, "n_heads": 1},
                                               "train": {"max_steps": 20, "batch_size": 4, "eval_every": 5,
                                                         "learning_rate": 1e30}}}}
    result = run_sweep(parse_config(raw), tmp_path, progress=False, log=lambda *a: None)
    [lost] = result["lost"]
    assert lost["world"] == "h1" and "the training diverged" in lost["error"] and "non-finite" in lost["error"]
    assert [e["cell"] for e in result["errors"]] == ["h1|trained ladder"]
    assert {r["lm"] for r in result["rows"]} == {"oracle"} and (tmp_path / "results.csv").exists()
    assert (tmp_path / "summary.json").exists()
    assert "diverges again" in markdown(result["rows"], tmp_path, [])


def test_a_training_that_raises_loses_its_ladder_not_the_sweep(tmp_path, monkeypatch):
    """Only a divergence was caught: any other error of the training (XLA's RESOURCE_EXHAUSTED, a damaged run
    directory) stopped the sweep before any cell ran, with no table, no summary and a raw traceback, where the
    same error killing a pool worker lost only its ladder (a review, 2026-12-07)."""
    import simlm.train

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB")

    monkeypatch.setattr(simlm.train, "train", out_of_memory)
    raw = {**RAW, "worlds": RAW["worlds"][:1],
           "lms": {"oracle": True, "trained": {"targets": [0.01], "model": {"d_model": 8, "n_layers": 1, "n_heads": 1},
                                               "train": {"max_steps": 2, "batch_size": 4, "eval_every": 1}}}}
    result = run_sweep(parse_config(raw), tmp_path, progress=False, log=lambda *a: None)
    [lost] = result["lost"]
    assert lost["world"] == "h1" and "the training failed" in lost["error"]
    assert "RuntimeError: RESOURCE_EXHAUSTED" in lost["error"] and "raised at" in lost["error"]
    assert [e["cell"] for e in result["errors"]] == ["h1|trained ladder"]
    assert {r["lm"] for r in result["rows"]} == {"oracle"}
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.json").exists()


def test_a_training_that_diverges_keeps_the_rungs_it_reached_before(tmp_path):
    """A ladder that reached rungs and then diverged gave the sweep no LM at all, although each rung reached
    is a checkpointed model at its measured ε (a review, 2026-12-06).  Here the initial model is already
    below the loose rung (saved at step 0, with the ladder's warning), and a learning rate of 1e30 diverges
    at the next evaluation: that rung's cells run, the ladder is listed as lost with the rung it kept, and a
    rerun gives the same."""
    from simlm.experiments.report import markdown

    raw = {**RAW, "worlds": RAW["worlds"][:1],
           "lms": {"oracle": True, "trained": {"targets": [50.0, 0.01], "model": {"d_model": 8, "n_layers": 1,
                                                                                   "n_heads": 1},
                                               "train": {"max_steps": 20, "batch_size": 4, "eval_every": 5,
                                                         "learning_rate": 1e30}}}}
    for run in range(2):
        with pytest.warns(RuntimeWarning, match="initial model is already there") if run == 0 else nullcontext():
            result = run_sweep(parse_config(raw), tmp_path, progress=False, log=lambda *a: None)
        [lost] = result["lost"]
        assert "the training diverged, so only the 1 rung(s) reached before it have cells (seed 0 at ε ≤ 50)" \
            in lost["error"] and "non-finite" in lost["error"]
        assert [e["cell"] for e in result["errors"]] == ["h1|trained ladder"]
        trained = {r["lm"] for r in result["rows"] if r["lm"] != "oracle"}
        assert trained == {"trained-ce@50"}, trained
        assert all(r["eps"] < 50 for r in result["rows"] if r["lm"] != "oracle")
    assert "(the rungs it reached before have their cells)" in markdown(result["rows"], tmp_path, [])


def test_train_names_the_rungs_it_saved_before_it_diverged(tmp_path):
    """train() raised TrainingDivergedError with nothing to say which rungs it had saved: its ``reached``
    lists them, each loadable at its recorded ε."""
    from simlm.errors import TrainingDivergedError
    from simlm.metrics import exact_epsilon
    from simlm.models import TransformerConfig
    from simlm.train import TrainConfig, load_lm, train
    from simlm.worlds import HMM

    world = HMM.random(1, 2, 3)
    config = TrainConfig(targets=(50.0, 0.01), max_steps=20, batch_size=4, seq_len=4, eval_every=5,
                         eval_sequences=4, learning_rate=1e30, seeds=(0, 1))
    with pytest.warns(RuntimeWarning, match="initial model"), pytest.raises(TrainingDivergedError) as err:
        train(world, TransformerConfig(n_symbols=3, d_model=8, n_layers=1, n_heads=1, max_len=4), config,
              tmp_path / "run", progress=False)
    assert [(r.seed, r.target, r.step, r.reached) for r in err.value.reached] == [(0, 50.0, 0, True),
                                                                                 (1, 50.0, 0, True)]
    for r in err.value.reached:
        assert r.path.startswith(str(tmp_path / "run"))
        eps, _ = exact_epsilon(world, load_lm(r.path), world.sample(config.eval_seed, 4, 4))
        assert eps == pytest.approx(r.epsilon, rel=1e-5)


def test_a_resume_whose_world_record_is_gone_is_refused(tmp_path):
    """worlds/<name>.json missing (or unreadable) was rewritten with this run's held-out digest while the
    stored cells, computed on other tokens, were reused: nothing could tell them apart any more."""
    import pytest

    from simlm.errors import ConfigError

    config = parse_config(RAW)
    run_sweep(config, tmp_path, progress=False, log=lambda *a: None)
    (tmp_path / "worlds" / "h1.json").unlink()
    (tmp_path / "worlds" / "h2.json").write_text("{torn")
    with pytest.raises(ConfigError, match=r"h1\.json is missing, but .* holds 1 cell\(s\) of world 'h1'"):
        run_sweep(config, tmp_path, progress=False, log=lambda *a: None)
    (tmp_path / "cells.jsonl").write_text("")  # no cells of theirs: nothing to mix, the records are written afresh
    assert run_sweep(config, tmp_path, progress=False, log=lambda *a: None)["new_cells"] == 2


def test_a_store_that_cannot_be_rewritten_is_read_as_repaired(monkeypatch, tmp_path):
    """Reading a store with a torn last line (a killed sweep) rewrote the file: on a read-only copy
    read_results and CellStore raised PermissionError."""
    from simlm.experiments import store as store_module

    path = tmp_path / "cells.jsonl"
    path.write_text(json.dumps({"cell": "a", "records": []}) + "\n" + '{"cell": "b", "rec')

    def refuse(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_module, "_replace_bytes", refuse)
    assert list(CellStore(path).cells) == ["a"]
    assert path.read_text().endswith('"rec')  # left as it was


def test_a_repair_that_cannot_replace_the_store_names_the_copy_it_made(monkeypatch, tmp_path):
    """A corrupt line is copied to <name>.corrupt-1 before the store is rewritten; when the rewrite then
    failed, the warning said only that the file was left as it is, not where the copy was."""
    import pytest

    from simlm.experiments import store as store_module

    path = tmp_path / "cells.jsonl"
    path.write_text("garbage\n" + json.dumps({"cell": "a", "records": []}) + "\n")

    def refuse(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_module, "_replace_bytes", refuse)
    with pytest.warns(RuntimeWarning, match=r"left as it is.*a copy of it is at .*cells\.jsonl\.corrupt-1"):
        assert list(CellStore(path).cells) == ["a"]


def test_a_ray_job_whose_worker_crashed_is_lost_not_the_sweep_and_a_job_that_raised_reaches_the_caller():
    """Ray's get raises once a task's worker died (after its retries) or ran out of memory: the job is yielded
    as WorkerLost, as a process pool's is, so the sweep records its cells as failed and goes on; an exception of
    the job itself (RayTaskError) reaches the caller, as a pool's job's does.  A fake Ray: no cluster needed."""
    import types

    from simlm.experiments.executors import RayExecutor

    class RayError(Exception):
        pass

    class RayTaskError(RayError):
        pass

    class WorkerCrashedError(RayError):
        pass

    outcome = {"a": 1, "b": WorkerCrashedError("the worker died unexpectedly"), "c": 3}

    def get(ref):
        if isinstance(outcome[ref], Exception):
            raise outcome[ref]
        return outcome[ref]

    fake = types.SimpleNamespace(
        exceptions=types.SimpleNamespace(RayError=RayError, RayTaskError=RayTaskError),
        remote=lambda **kw: (lambda fn: types.SimpleNamespace(remote=lambda p: p)),
        wait=lambda refs, num_returns: (refs[:1], refs[1:]), get=get)
    executor = RayExecutor.__new__(RayExecutor)
    executor.ray, executor.num_cpus_per_job = fake, 1
    results = dict(executor.map(lambda p: p, ["a", "b", "c"]))
    assert results["a"] == 1 and results["c"] == 3
    assert isinstance(results["b"], WorkerLost) and "WorkerCrashedError" in results["b"]
    outcome["b"] = RayTaskError("ValueError in the job")
    with pytest.raises(RayTaskError):
        dict(executor.map(lambda p: p, ["a", "b", "c"]))


def test_a_row_json_cannot_hold_fails_its_cell_not_the_sweep(monkeypatch, tmp_path):
    """A check returning a row with a set in it raised TypeError from the store's json.dumps, outside the
    cell's try: the sweep stopped at that cell with a traceback, no tables were written, and every rerun
    stopped at the same cell (the later cells never computed).  It is that cell's error now."""
    check = registry.get_check("simlm/epsilon")

    def run(cell):
        rows = check.run(cell)
        return [{**rows[0], "note": {1, 2}}] + rows[1:] if cell.world_spec["name"] == "h1" else rows

    monkeypatch.setitem(registry._REGISTRY, "simlm/epsilon", dataclasses.replace(check, run=run))
    result = run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)
    [error] = result["errors"]
    assert error["cell"].startswith("h1|") and "cannot be stored as JSON" in error["error"]
    assert {r["world"] for r in result["rows"]} == {"h2"} and (tmp_path / "results.csv").exists()
    assert len(CellStore(tmp_path / "cells.jsonl")) == 2


def test_a_row_that_relabels_its_cell_is_refused(monkeypatch, tmp_path):
    """A row could overwrite the runner's world/check/paper columns and be filed under a cell that never
    computed it; repeating the cell's own value stays allowed (the experiments' rows carry ``world``)."""
    check = registry.get_check("simlm/epsilon")

    def run(cell):
        own = cell.world_spec["name"]
        return [{**r, "world": own if own == "h2" else "elsewhere"} for r in check.run(cell)]

    monkeypatch.setitem(registry._REGISTRY, "simlm/epsilon", dataclasses.replace(check, run=run))
    result = run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)
    [error] = result["errors"]
    assert error["cell"].startswith("h1|") and "['world']" in error["error"] and "'h1'" in error["error"]
    assert {r["world"] for r in result["rows"]} == {"h2"}


def test_a_second_sweep_into_a_running_directory_is_refused(tmp_path):
    """Two sweeps into one --out at once each computed every cell (8 + 8 in the run log of an 8-cell sweep),
    and a worker lost in one wrote its cells as failed over the other's finished ones (a review, 2026-12-06):
    while one runs (it holds <out>/.sweep.lock) another is refused; once it ends the directory is free."""
    import simlm.experiments.store as store
    from simlm.errors import ConfigError

    with store.running(tmp_path):
        with pytest.raises(ConfigError, match=r"^out: another sweep is running into .* \(it holds .*\.sweep\.lock\)"):
            run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)
    assert not (tmp_path / "cells.jsonl").exists()
    assert len(run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)["rows"]) > 0



def test_a_report_of_a_directory_a_sweep_is_running_into_is_refused(tmp_path, capsys):
    """`simlm report DIR` during a sweep wrote tables of the cells stored so far, which could land after the
    sweep's own: results.csv with 27 of 56 rows, nothing said (a review, 2026-12-07).  It is refused while the
    sweep holds the directory's lock, and renders once it ends."""
    import simlm.experiments.store as store
    from simlm.cli import main

    run_sweep(parse_config(RAW), tmp_path, progress=False, log=lambda *a: None)
    rows = (tmp_path / "results.csv").read_text()
    with store.running(tmp_path):
        assert main(["report", str(tmp_path)]) == 2
    assert "simlm report: error: DIR: another sweep is running into" in capsys.readouterr().err
    assert (tmp_path / "results.csv").read_text() == rows
    assert main(["report", str(tmp_path)]) == 0


class _AnotherRunFinishesThenTheWorkerDies(InProcess):
    """Before reporting the second job's worker dead, stores that job's cells as finished by another run (as a
    sweep beside this one, or one before it, could have)."""

    shares_filesystem = True

    def map(self, fn, payloads):
        from simlm.experiments.store import append_cell

        for i, p in enumerate(payloads):
            if i == 1:
                job = json.loads(p)
                for _, _, key in job["cells"]:
                    world, lm, check = key.split("|")  # a whole row: one without its check is a damaged line
                    finished = {"check": check, "world": world, "lm": lm.split("#")[0], "eps": 0.0, "quantity": "q",
                                "measured": 1.0}
                    append_cell(os.path.join(job["out"], "cells.jsonl"), key, [finished],
                                run=99, code="other", config=job["tag"]["config"], seconds=0.0)
                yield p, WorkerLost("terminated abruptly")
            else:
                yield p, fn(p)


def test_a_lost_worker_never_writes_a_failure_over_a_finished_cell(tmp_path):
    """The lost job's cells were written as failed unless this run had stored them: a cell another run had
    finished was overwritten with the failure (the later line wins)."""
    result = run_sweep(parse_config(RAW), tmp_path, executor=_AnotherRunFinishesThenTheWorkerDies(), progress=False,
                       log=lambda *a: None)
    assert not result["errors"] and len(CellStore(tmp_path / "cells.jsonl")) == 2
    assert {"q"} <= {r["quantity"] for r in result["rows"]}


class _RunsSecondJobThenItsWorkerDies(InProcess):
    """Runs every job here (each stores its cells as they end), then reports the second's worker as dead."""

    shares_filesystem = True

    def map(self, fn, payloads):
        for i, p in enumerate(payloads):
            out = fn(p)
            yield p, (WorkerLost("terminated abruptly") if i == 1 else out)


def test_a_cell_this_run_stored_as_failed_keeps_its_own_error_when_its_worker_dies(monkeypatch, tmp_path):
    """A cell that failed in this run and was stored before its worker died keeps its own error, not "worker
    process died" (the tests covered a failure from an earlier run and a cell another run finished)."""
    check = registry.get_check("simlm/epsilon")

    def bad(cell):
        raise ValueError("this run's own failure")

    monkeypatch.setitem(registry._REGISTRY, "simlm/epsilon", dataclasses.replace(check, run=bad))
    result = run_sweep(parse_config(RAW), tmp_path, executor=_RunsSecondJobThenItsWorkerDies(), progress=False,
                       log=lambda *a: None)
    assert len(result["errors"]) == 2
    assert all("this run's own failure" in e["error"] and "worker process died" not in e["error"]
               for e in result["errors"])
