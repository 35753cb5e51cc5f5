"""The sweep runner end to end: configs validated with named errors, tidy results, resume after SIGKILL
without lost or duplicated cells, a directory claimed by one config, executors that agree, and a report
re-rendered from the directory alone."""

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib

import jax
import jax.numpy as jnp
import pytest

from simlm.cli import main
from simlm.errors import ConfigError
from simlm.experiments.commandline import executor_of
from simlm.experiments.executors import (ACCELERATOR_MEMORY, InProcess, ProcessPool, _share_accelerator,
                                        _single_threaded_xla, auto_workers)
from simlm.experiments.registry import COLUMNS, checks
from simlm.experiments.sweep import load_config, parse_config, read_results, run_sweep

TINY = {"name": "tiny", "seed": 0, "data": {"n_sequences": 8, "length": 6},
        "worlds": [{"name": "h", "kind": "hmm", "seed": 1, "options": {"n_states": 3, "n_symbols": 3}}],
        "lms": {"oracle": True, "analytic": {"kinds": ["logit-noise", "temperature"], "eps": [0.02, 0.005]}},
        "checks": {"simlm/epsilon": {}, "saunshi/natural-task": {"max_length": 1}}}


def write_config(path, raw=TINY):
    path.write_text(json.dumps(raw))
    return path


def table(out):
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return sorted((r["world"], r["lm"], r["check"], r["quantity"], r["measured"], r["bound"], r["holds"]) for r in rows)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run of the tiny config through the command line."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    config = write_config(out.parent / "tiny.json")
    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 0
    return config, out


def test_a_sweep_writes_tidy_rows_with_the_shared_columns(finished):
    _, out = finished
    with open(out / "results.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:len(COLUMNS)] == list(COLUMNS)
    # 1 world × (oracle + 2 kinds × 2 ε) × 2 checks; the natural-task worst-case rows name their own LM, the
    # adversary built at each analytic LM's ε (the oracle's ε is rounding: no adversary)
    worst = [r for r in rows if r["quantity"].startswith("worst-case:")]
    assert len({(r["lm"], r["check"]) for r in rows if r not in worst}) == 10
    assert len({r["lm"] for r in worst}) == 4 and all(r["lm"].startswith("adversarial-search") for r in worst)
    assert all(r["holds"] in ("True", "") for r in rows)  # the oracle and analytic LMs violate nothing
    eps = {r["lm"]: float(r["eps"]) for r in rows if r["check"] == "simlm/epsilon" and r["quantity"] == "epsilon"}
    assert eps["oracle"] == 0.0 and abs(eps["logit-noise@0.005"] / 0.005 - 1) < 1e-3
    for name in ("sweep.json", "environment.json", "worlds/h.json", "summary.json", "cells.jsonl", "report.md"):
        assert (out / name).exists(), name
    assert json.loads((out / "worlds" / "h.json").read_text())["parameters"]


def test_the_epsilon_check_measures_the_law_each_lm_is_calibrated_on_and_bounds_tv_by_pinsker(finished):
    """simlm/epsilon measures ε on the first law the LM defines (the next-token law here), on the held-out
    tokens the LM was calibrated on: its measured ε is the LM's calibrated ε (the ``eps`` column) up to
    rounding — ε on the masked law differs by 1 % for logit-noise@0.02.  The tv row's bound is Pinsker's
    √(ε/2) of that ε (√ε would be 0.1414 at ε = 0.02, not 0.1)."""
    _, out = finished
    with open(out / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["check"] == "simlm/epsilon"]
    eps = {r["lm"]: r for r in rows if r["quantity"] == "epsilon"}
    tv = {r["lm"]: r for r in rows if r["quantity"] == "tv"}
    assert len(eps) == 5 and set(tv) == set(eps)
    for lm, r in eps.items():
        measured = float(r["measured"])
        assert r["law"] == "next-token" and measured == pytest.approx(float(r["eps"]), rel=1e-6, abs=1e-12), lm
        assert float(tv[lm]["bound"]) == pytest.approx(math.sqrt(measured / 2), rel=1e-12, abs=1e-15), lm
        assert float(tv[lm]["measured"]) <= float(tv[lm]["bound"]), lm
    assert float(tv["logit-noise@0.02"]["bound"]) == pytest.approx(0.1, rel=1e-3)


def test_the_parquet_table_equals_the_csv(finished):
    pq = pytest.importorskip("pyarrow.parquet")
    _, out = finished
    parquet = pq.read_table(out / "results.parquet").to_pylist()
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(parquet) == len(rows)
    assert [(r["lm"], r["quantity"], r["measured"]) for r in parquet] == \
        [(r["lm"], r["quantity"], float(r["measured"])) for r in rows]


def test_report_rerenders_from_the_directory_alone(finished):
    _, out = finished
    before = table(out)
    for name in ("results.csv", "report.md"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert table(out) == before and "## Bounds" in (out / "report.md").read_text()


def test_report_on_a_cell_log_that_lost_every_cell_leaves_the_tables_as_they_are(finished, tmp_path, capsys):
    """A garbage cells.jsonl (kept as cells.jsonl.corrupt-1) made `simlm report` rewrite results.csv as a
    header alone and exit 0: the one readable copy of the results was blanked."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished[1], out)
    before = (out / "results.csv").read_text()
    (out / "cells.jsonl").write_text("garbage\n" * 3)
    with pytest.warns(RuntimeWarning, match="dropped 3 corrupt line"):
        assert main(["report", str(out)]) == 2
    assert f"error: DIR: {out} has no finished cell in its cell log" in capsys.readouterr().err  # (named dir:)
    assert (out / "results.csv").read_text() == before and list(out.glob("cells.jsonl.corrupt-*"))


def test_a_rerun_skips_finished_cells(finished, capsys):
    config, out = finished
    lines = (out / "cells.jsonl").read_text()
    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 0
    assert (out / "cells.jsonl").read_text() == lines


def test_a_rerun_logs_its_environment_after_the_earlier_runs(finished, tmp_path):
    """environment.json keeps the run that computed the rows and appends each rerun with the cells it
    computed, and the report names them all."""
    import shutil

    config, reference = finished
    out = tmp_path / "rerun"
    shutil.copytree(reference, out)
    earlier = json.loads((out / "environment.json").read_text())["runs"]
    result = run_sweep(load_config(config), out, progress=False)
    assert result["cells"] == 10 and result["new_cells"] == 0  # the sweep's cells, of which none computed now
    assert json.loads((out / "summary.json").read_text())["cells"] == 10
    runs = json.loads((out / "environment.json").read_text())["runs"]
    assert runs[:-1] == earlier and earlier[0]["cells_computed"] == 10 and runs[-1]["cells_computed"] == 0
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert f"computed by {len(runs)} runs" in report and report.count(": computed ") == len(runs)


def test_every_analytic_seed_is_an_lm_of_its_own_and_rows_carry_the_lm_and_world_seeds(tmp_path):
    """``lms.analytic.seeds`` = [0, 1] gives two LMs per (kind, ε), each its own cell; each row names its LM's
    seed (None for the oracle, which has none) and its world's."""
    world = {"name": "h", "kind": "hmm", "seed": 1, "options": {"n_states": 2, "n_symbols": 2}}
    raw = {**TINY, "data": {"n_sequences": 2, "length": 2}, "worlds": [world], "checks": {"simlm/epsilon": {}},
           "lms": {"oracle": True, "analytic": {"kinds": ["logit-noise"], "eps": [0.05], "seeds": [0, 1]}}}
    result = run_sweep(parse_config(raw), tmp_path, progress=False)
    assert result["cells"] == 3
    assert sorted({(r["lm"], r["lm_seed"]) for r in result["rows"]}, key=str) == \
        [("logit-noise@0.05", 0), ("logit-noise@0.05", 1), ("oracle", None)]
    assert {r["world_seed"] for r in result["rows"]} == {1}


def test_a_different_config_into_the_same_directory_is_refused(finished, tmp_path, capsys):
    _, out = finished
    other = write_config(tmp_path / "other.json", {**TINY, "seed": 1})
    assert main(["sweep", str(other), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different config" in err and "seed" in err
    edited = write_config(tmp_path / "edited.json", {**TINY, "lms": {**TINY["lms"], "analytic": {
        **TINY["lms"]["analytic"], "eps": [0.02, 0.01]}}})
    assert main(["sweep", str(edited), "--out", str(out), "--quiet"]) == 2
    assert "(differs in ['lms.analytic.eps'])" in capsys.readouterr().err  # it named 'lms' alone


def test_sigkill_mid_sweep_loses_nothing_and_the_rerun_matches(finished, tmp_path):
    config, reference = finished
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "simlm.cli", "sweep", str(config), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        log = out / "cells.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)  # the cells are quick once compiled (the session shares its XLA cache): look often
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed, "the sweep finished before it could be killed"
    done = len((out / "cells.jsonl").read_text().splitlines())
    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 0  # the rerun: in-process is enough
    keys = [json.loads(line)["cell"] for line in (out / "cells.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 10 and done >= 3  # nothing lost, nothing duplicated
    assert table(out) == table(reference)


def test_a_process_pool_gives_the_in_process_results(finished, tmp_path):
    config, reference = finished
    # XLA's threads as in this process: unoptimised (the suite's compile mode, tests/conftest.py) a reduction's
    # order follows the thread count, and the rows would differ in their last bits for that reason alone
    pool = ProcessPool(2, single_threaded=False)
    run_sweep(load_config(config), tmp_path / "pool", executor=pool, progress=False)
    assert table(tmp_path / "pool") == table(reference)
    # row for row in the config's order, not the order the workers finished in (a review, 2026-12-06)
    assert (tmp_path / "pool" / "results.csv").read_text() == (reference / "results.csv").read_text()


def test_a_pool_returns_each_result_with_its_own_payload():
    """Results come back in completion order, each beside the payload it was computed from (the sweep files
    a world's trained LMs, and each job's cells, under the payload that names them)."""
    pairs = list(ProcessPool(1, single_threaded=False).map(str.upper, ["a", "b", "c"]))
    assert sorted(pairs) == [("a", "A"), ("b", "B"), ("c", "C")]


def test_a_pool_that_fills_the_cores_runs_xla_on_one_thread_per_worker(monkeypatch):
    flag = "--xla_cpu_multi_thread_eigen=false"
    assert ProcessPool(os.cpu_count()).single_threaded
    assert not ProcessPool(os.cpu_count(), single_threaded=False).single_threaded
    with pytest.raises(ConfigError, match="single_threaded"):
        ProcessPool(2, single_threaded="yes")
    [(_, worker_flags)] = list(ProcessPool(1, single_threaded=True).map(os.getenv, ["XLA_FLAGS"]))
    assert flag in worker_flags.split()
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")  # the worker's own flags are kept, the flag added once
    _single_threaded_xla()
    _single_threaded_xla()
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {flag}"


def test_a_pools_workers_allocate_a_gpus_memory_as_they_need_it(monkeypatch):
    """JAX claims 75 % of a GPU at its first computation: a second worker on the same GPU would run out of
    memory, so each worker allocates on demand — unless you said how much it takes (then yours is kept)."""
    names = list(ACCELERATOR_MEMORY)
    for name in names:
        monkeypatch.delenv(name, raising=False)
    seen = dict(ProcessPool(1, single_threaded=False).map(os.getenv, names))
    assert seen == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": None,
                    "XLA_PYTHON_CLIENT_ALLOCATOR": None}
    assert _share_accelerator() == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", ".3")
    assert _share_accelerator() == {}
    seen = dict(ProcessPool(1, single_threaded=False).map(os.getenv, names))
    assert seen == {"XLA_PYTHON_CLIENT_PREALLOCATE": None, "XLA_PYTHON_CLIENT_MEM_FRACTION": ".3",
                    "XLA_PYTHON_CLIENT_ALLOCATOR": None}


_ORPHAN = """
import os, sys, time
from simlm.experiments.executors import ProcessPool
def job(path):
    open(path, "w").write(str(os.getpid()))
    time.sleep(600)
if __name__ == "__main__":
    for _ in ProcessPool(1, single_threaded=False).map(job, [sys.argv[1]]):
        pass
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited orphan waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_a_pool_worker_leaves_when_the_sweep_is_killed(tmp_path):
    """SIGTERM to the sweep's process alone (not its group): its worker used to go on with the job, writing
    into the run's directory where a rerun then collided with it."""
    script, pid_file = tmp_path / "sweep.py", tmp_path / "worker.pid"
    script.write_text(_ORPHAN)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=tmp_path)
    try:
        for _ in range(600):  # the worker has started its job (a spawned process imports simlm first)
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
        for _ in range(300):  # it polls every 0.5 s
            if not _running(worker):
                return
            time.sleep(0.1)
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the pool worker outlived its sweep by 30 s")
    finally:
        parent.kill()


def test_workers_auto_is_a_process_per_core_on_cpu_and_the_wei_experiments_default(monkeypatch):
    assert auto_workers() == os.cpu_count()  # the tests run on a CPU backend
    assert isinstance(executor_of(argparse.Namespace(executor="inprocess", workers="auto", address=None)),
                      ProcessPool if os.cpu_count() > 1 else InProcess)
    import simlm.experiments.head_prompt as hp

    seen = []

    def stop(args):
        seen.append(args.workers)
        raise ConfigError("stop here")

    monkeypatch.setattr(hp, "executor_of", stop)
    for argv, workers in ((["experiment1"], "auto"), (["experiment1", "--quick"], 1),
                          (["experiment2", "--quick", "--workers", "auto"], "auto"), (["experiment1", "--workers", "3"], 3)):
        with pytest.raises(ConfigError, match="stop here"):
            hp.command([*argv, "--out", "/nonexistent/never-claimed"])
        assert seen.pop() == workers, argv


def test_ray_gives_the_in_process_results(finished, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from simlm.experiments.executors import RayExecutor

    config, reference = finished
    for name in ACCELERATOR_MEMORY:
        monkeypatch.delenv(name, raising=False)
    executor = RayExecutor(num_cpus=2)
    try:
        run_sweep(load_config(config), tmp_path / "ray", executor=executor, progress=False)
        [(_, preallocate)] = list(executor.map(os.getenv, ["XLA_PYTHON_CLIENT_PREALLOCATE"]))
    finally:
        ray.shutdown()
    assert table(tmp_path / "ray") == table(reference)
    assert preallocate == "false"  # tasks on one GPU machine share its device, as a pool's workers do


def _with(path, value):
    raw = json.loads(json.dumps(TINY))
    *keys, last = path
    d = raw
    for k in keys:
        d = d[k]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return raw


@pytest.mark.parametrize("raw, name", [
    (_with(["worlds"], []), "worlds"),
    (_with(["worlds", 0, "kind"], "markov"), r"worlds\[0\].kind"),
    (_with(["worlds", 0, "seed"], -1), r"worlds\[0\].seed"),
    (_with(["worlds", 0, "options"], {"n_states": 0, "n_symbols": 3}), "n_states"),
    (_with(["worlds", 0, "options"], {"n_state": 3, "n_symbols": 3}), "options"),
    (_with(["data", "n_sequences"], 1), "data.n_sequences"),
    (_with(["data", "length"], "8"), "data.length"),
    (_with(["data", "n_sequences"], 10**12), "data.n_sequences"),
    (_with(["data", "length"], 10**12), "data.n_sequences, data.length: "),  # was blamed on n_sequences alone
    (_with(["lms", "analytic", "eps"], [0.1, -1]), r"lms.analytic.eps\[1\]"),
    (_with(["lms", "analytic", "eps"], [float("nan")]), r"lms.analytic.eps\[0\]"),
    (_with(["lms", "analytic", "kinds"], ["noise"]), "lms.analytic.kinds"),
    (_with(["lms", "analytic", "laws"], ["causal"]), "lms.analytic.laws"),
    # two ε that the LMs' labels (and so their cells' keys) write alike: one cell would overwrite the other
    (_with(["lms", "analytic", "eps"], [0.1, 0.1000001]), "lms.analytic.eps: 0.1 and 0.1000001 are both labelled"),
    (_with(["lms", "trained"], {"targets": [0.3, 0.3000001]}), "lms.trained.targets: 0.3 and 0.3000001"),
    (_with(["lms", "oracle"], "yes"), "lms.oracle"),
    (_with(["lms", "trained"], {"targets": [0.1], "objective": "mle"}), "lms.trained.objective"),
    (_with(["lms", "trained"], {"targets": [0.1], "model": {"d_model": -4}}), "d_model"),
    (_with(["lms", "trained"], {"targets": [0.1], "train": {"max_step": 4}}), "lms.trained"),
    (_with(["lms", "trained"], {"targets": [0.1], "worlds": ["nowhere"]}), "lms.trained.worlds"),
    (_with(["lms", "trained"], {"targets": [0.1], "worlds": ["h", "h"]}), "lms.trained.worlds: expected distinct"),
    (_with(["checks"], {}), "checks"),
    (_with(["checks"], {"nobody/nothing": {}}), "checks"),
    (_with(["checks"], {"simlm/epsilon": {"bogus": 1}}), "checks.simlm/epsilon"),
    (_with(["colour"], "blue"), "config"),
    (_with(["seed"], True), "config.seed"),
])
def test_bad_configs_name_the_key(raw, name):
    with pytest.raises(ConfigError, match=name):
        parse_config(raw)


def test_bad_config_files_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not valid TOML" in err[0] and "cannot read" in err[1]


def test_the_listing_commands_name_every_world_kind_and_check(capsys):
    assert main(["worlds"]) == 0 and main(["checks"]) == 0
    text = capsys.readouterr().out
    assert all(k in text for k in ("hmm", "memory-hmm", "loglinear")) and all(c in text for c in checks())
    # a family's options are listed, not cut at the colon that introduces them
    assert all(option in text for option in ('"permutation-mixture"', '"sparse"', "prior_concentration", "emission_temp"))
    assert "carrier_gap" in text and "**" not in text  # LogLinearWorld.random's **unknown is a refusal, no option


def test_the_demo_config_is_valid_and_uses_every_check_that_applies_to_its_worlds():
    """Every check but the one that needs planted-class worlds, which a config may not list where no cell runs it
    (the demo listed it "so that it names every check": its whole entry was skipped)."""
    from simlm.cli import demo_config_path

    config = load_config(demo_config_path())
    assert set(checks()) - set(config.checks) == {"tzach/token-accuracy-experiment"}
    raw = tomllib.loads(demo_config_path().read_text())
    raw["checks"]["tzach/token-accuracy-experiment"] = {}
    with pytest.raises(ConfigError, match=r"^checks.tzach/token-accuracy-experiment: runs in no \(world, LM\) cell of "
                                          r"this config — world 'hmm': needs a planted-hmm world"):
        parse_config(raw)


def test_a_check_whose_condition_only_the_oracle_judges_is_refused_without_the_oracle():
    """wei/head-tuning reports rank B = |H| (its row rank_deficit, the paper's non-degeneracy condition) once per
    world, in the oracle's cell: without the oracle a rank-deficient world's sweep read "0 of 0 bounded rows
    violated" (a review, 2026-12-07)."""
    from simlm.cli import demo_config_path

    raw = tomllib.loads(demo_config_path().read_text())
    raw["lms"]["oracle"] = False
    raw["checks"] = {"wei/head-tuning": {}}
    with pytest.raises(ConfigError, match=r"^checks.wei/head-tuning: reports its non-degeneracy condition rank "
                                          r"B = \|H\| \(the row rank_deficit\) in the oracle's cell only"):
        parse_config(raw)
    raw["lms"]["oracle"] = True
    parse_config(raw)


def test_a_damaged_cell_log_is_recovered_and_the_rerun_matches(finished, tmp_path):
    import shutil

    config, reference = finished
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    lines = (out / "cells.jsonl").read_text().splitlines(keepends=True)
    # a garbage line in the middle and a torn last line: both dropped (with a backup), the cells recomputed
    (out / "cells.jsonl").write_text("".join(lines[:3]) + "{}\n" + "".join(lines[3:-1]) + lines[-1][:20])
    with pytest.warns(RuntimeWarning):
        run_sweep(load_config(config), out, progress=False)
    assert table(out) == table(reference)
    keys = [json.loads(line)["cell"] for line in (out / "cells.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 10 and list(out.glob("cells.jsonl.corrupt-*"))


def test_a_damaged_sweep_config_is_restored_from_the_summary_or_named_with_the_fix(finished, tmp_path, capsys):
    import shutil

    config, reference = finished
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    (out / "sweep.json").write_text('{"name": "ti')
    with pytest.warns(RuntimeWarning, match="was corrupt; restored it from the config in .*summary.json"):
        assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["new_cells"] == 0  # nothing recomputed
    (out / "sweep.json").write_text('{"name": "ti')
    (out / "summary.json").unlink()
    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sweep.json" in err and "corrupt" in err and len(err.strip().splitlines()) == 1

def test_parquet_takes_columns_whose_rows_differ_in_kind(tmp_path):
    """A check may put a number in one row and a label in another (the natural-tasks adversaries' radius:
    1.0 or "B*"): the column is written as text, whole numbers mixed with floats as floats — as text where
    float64 would round one (2⁵³ + 1 read 2⁵³ in Parquet beside its exact value in the CSV)."""
    pq = pytest.importorskip("pyarrow.parquet")
    from simlm.experiments.sweep import write_tables

    rows = [{"quantity": "q", "measured": 1.0, "radius": "B*", "grid": [1.0, 2.0], "n": 1, "seed": 3, "big": 2**53 + 1},
            {"quantity": "q", "measured": 2, "radius": 1.0, "grid": None, "n": 2.5, "seed": 4, "big": 0.5}]
    write_tables(rows, tmp_path)
    back = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [r["radius"] for r in back] == ["B*", "1.0"] and [r["n"] for r in back] == [1.0, 2.5]
    assert [r["big"] for r in back] == [str(2**53 + 1), "0.5"]
    assert [r["seed"] for r in back] == [3, 4] and back[0]["grid"] == [1.0, 2.0] and back[1]["measured"] == 2.0


def test_a_run_records_what_decides_its_rounding(finished):
    """A trained number depends on more than the code: the packages' versions, the CPU's instruction sets,
    XLA's flags, the executor's threads.  environment.json records them (two environments' experiment-1
    tables differed by up to 0.10 where the same code reproduced itself bit for bit, and the older run had
    left no record of its versions)."""
    import importlib.metadata

    import jax

    _, out = finished
    run = json.loads((out / "environment.json").read_text())["runs"][0]  # later tests may rerun it
    assert run["jax"] == jax.__version__
    assert run["packages"]["jaxlib"] == importlib.metadata.version("jaxlib")
    assert run["packages"]["flax"] == importlib.metadata.version("flax")
    assert run["packages"]["optax"] == importlib.metadata.version("optax")
    assert run["jax_config"]["jax_threefry_partitionable"] == jax.config.values["jax_threefry_partitionable"]
    assert run["xla_flags"] == os.environ.get("XLA_FLAGS", "") and run["cpu"]
    assert run["executor"] == "InProcess"  # the command line's default, --workers 1
    report = (out / "report.md").read_text()
    assert f"jax {run['jax']}, flax {run['packages']['flax']} on" in report and run["cpu"] in report


def test_the_cpu_is_named_with_its_vector_extensions(tmp_path):
    from simlm.runtime import cpu_description

    x86 = tmp_path / "x86"
    cpu = "model name\t: AMD EPYC 9654\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n"
    x86.write_text(f"processor\t: 0\n{cpu}\nprocessor\t: 1\n{cpu}")
    assert cpu_description(x86) == "AMD EPYC 9654 (avx avx2 fma avx512f avx512_bf16)"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n")
    assert cpu_description(arm) == "0xd40 (asimd sve)"
    assert cpu_description(tmp_path / "absent")  # no cpuinfo: what the platform module says, never empty


def _compile_one(payload: str) -> str:
    """A pool job: compile a new function (never in the process's own caches); which cache directory the
    worker compiles through, and whether the program was read back from it."""
    events = []
    jax.monitoring.register_event_listener(lambda event, **kwargs: events.append(event))
    jax.jit(lambda x: jnp.sin(x) * float(payload))(jnp.arange(8.0)).block_until_ready()
    return json.dumps({"dir": jax.config.jax_compilation_cache_dir,
                       "hit": "/jax/compilation_cache/cache_hits" in events})


def test_a_pools_workers_share_a_compilation_cache_of_their_own_or_yours(monkeypatch, tmp_path):
    """Without a JAX_COMPILATION_CACHE_DIR of yours the workers compile through one temporary directory,
    removed when the map ends: the second job's program (the same text) is read back from it.  With
    one, they use yours."""
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    first, second = (json.loads(r) for _, r in ProcessPool(1, single_threaded=False).map(_compile_one, ["3", "3"]))
    assert first["dir"] == second["dir"] and "simlm-xla-cache-" in first["dir"]
    assert not first["hit"] and second["hit"] and not os.path.exists(first["dir"])
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path))
    [(_, mine)] = list(ProcessPool(1, single_threaded=False).map(_compile_one, ["5"]))
    assert json.loads(mine)["dir"] == str(tmp_path) and any(tmp_path.iterdir())


def _affinity(payload: str) -> str:
    """A pool job: the cores of each of this worker's threads once XLA's backend runs, and — for a job of
    ``"wait"`` — whether every thread was let out onto every core within a minute (the pool's last job)."""
    jnp.zeros(1).block_until_ready()
    threads = lambda: [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")]  # noqa: E731
    start, freed = threads(), None
    if payload == "wait":
        for _ in range(600):
            if all(len(t) > 1 for t in threads()):
                freed = True
                break
            time.sleep(0.1)
    return json.dumps({"job": payload, "pid": os.getpid(), "start": start, "freed": freed})


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs Linux and two cores")
def test_a_pool_that_fills_the_cores_pins_each_worker_to_a_core_until_a_core_is_free():
    """XLA runs a "single-threaded" worker's independent operations on a second thread, and two such workers
    on two cores slowed each other down; each worker's threads are pinned to one core of their own, and let
    out onto every core once the pool's last job is running alone."""
    cores = sorted(os.sched_getaffinity(0))
    results = [json.loads(r) for _, r in ProcessPool(2, single_threaded=True).map(_affinity, ["a", "b", "c", "wait"])]
    started = [r for r in results if r["job"] != "wait"]  # begun before the third job ended: pinned
    for r in started:
        assert len({tuple(t) for t in r["start"]}) == 1 and len(r["start"][0]) == 1  # every thread on one core
    by_worker = {r["pid"]: r["start"][0][0] for r in started}
    assert len(set(by_worker.values())) == len(by_worker) and set(by_worker.values()) <= set(cores)
    assert [r["freed"] for r in results if r["freed"] is not None] == [True]
    # not filling the cores' threads (single_threaded=False): nothing pinned — one worker with its job shows it (a
    # pool that pinned here would pin it before the job starts, as above)
    unpinned = [json.loads(r) for _, r in ProcessPool(1, single_threaded=False).map(_affinity, ["a"])]
    assert all(t == cores for r in unpinned for t in r["start"])


def test_a_cell_whose_rows_are_not_rows_is_a_damaged_line(finished, tmp_path):
    """A line edited to "measured": "abc" (or "holds": "yes") was read as a cell and tabulated beside its
    verdict; it is a damaged line now: dropped with a warning and a backup, and its cell recomputed by the
    next run."""
    import shutil

    config, reference = finished
    for column, value in (("measured", "abc"), ("bound", [1.0]), ("holds", "yes")):
        out = tmp_path / column
        shutil.copytree(reference, out)
        lines = (out / "cells.jsonl").read_text().splitlines(keepends=True)
        entry = json.loads(lines[2])
        entry["records"][0][column] = value
        (out / "cells.jsonl").write_text("".join(lines[:2]) + json.dumps(entry) + "\n" + "".join(lines[3:]))
        with pytest.warns(RuntimeWarning, match="dropped 1 corrupt line"):
            assert all(r.get(column) != value for r in read_results(out))
        assert list(out.glob("cells.jsonl.corrupt-*"))
        run_sweep(load_config(config), out, progress=False)
        assert table(out) == table(reference)
