"""The ``simlm`` command's own work, with the sweep stubbed: what it asks run_sweep for (the demo's
results directory, executor and progress bars), the summary line it prints from the rows, and an
``--out`` that cannot be written ending in status 2 and one line."""

from __future__ import annotations

from pathlib import Path

import pytest

import simlm.experiments.report as report
import simlm.experiments.sweep as sweep
from simlm.cli import demo_config_path, main
from simlm.experiments.executors import InProcess, ProcessPool

# bounded rows (a holds verdict): 2 violated (one flagged trivial, as rows stored before a violated row was
# never trivial: counted violated, not trivial, as the report counts it), 1 held and trivial; 2 without a bound
ROWS = [{"holds": True, "trivial": True}, {"holds": False}, {"holds": False, "trivial": True},
        {"holds": None}, {"measured": 1.0}]


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """run_sweep stubbed to record its arguments and return ROWS; nothing is rendered or written."""
    monkeypatch.chdir(tmp_path)
    recorded = []

    def run_sweep(config, out, *, executor=None, progress=True, log=print, after=None):
        recorded.append({"config": config, "out": out, "executor": executor, "progress": progress})
        result = {"rows": ROWS, "errors": [{"cell": "c7", "error": "boom"}], "skipped": [(1, 2, 3)] * 4,
                  "cells": 6, "new_cells": 6, "time_s": 2.0}
        if after is not None:
            after(result)
        return result

    monkeypatch.setattr(sweep, "run_sweep", run_sweep)
    monkeypatch.setattr(report, "render", lambda rows, out: [Path(out) / "report.md"])
    monkeypatch.setattr(report, "console_table", lambda rows: "<table>")
    return recorded


def test_summary_line_counts_the_violated_bounded_rows(calls, capsys):
    assert main(["demo"]) == 1  # a cell failed: listed, then status 1
    out = capsys.readouterr().out
    assert ("6 cells, 5 rows: 2 of 3 bounded rows violated, 1 trivial; 1 cells failed, 4 (world, LM, check) "
            "combinations do not apply; 2.0 s") in out
    assert "  failed c7: boom" in out
    assert f"wrote {Path('runs/demo') / 'results.csv'}, {Path('runs/demo') / 'report.md'}" in out


def test_demo_runs_in_process_into_runs_demo_with_progress_bars(calls, tmp_path):
    assert main(["demo"]) == 1
    (call,) = calls
    assert call["out"] == "runs/demo" and call["progress"] is True
    assert isinstance(call["executor"], InProcess)
    assert call["config"] == sweep.load_config(demo_config_path())
    assert not any(tmp_path.iterdir())  # the stub wrote nothing


def test_demo_quiet_with_workers_uses_a_process_pool_without_bars(calls):
    assert main(["demo", "--quiet", "--workers", "2", "--out", "elsewhere"]) == 1
    (call,) = calls
    assert call["out"] == "elsewhere" and call["progress"] is False
    assert isinstance(call["executor"], ProcessPool) and call["executor"].workers == 2


def test_a_run_without_failed_cells_exits_0_and_one_with_a_failed_cell_exits_1(monkeypatch, tmp_path):
    """A sweep whose cells failed exited 0, so a script or CI running it saw success."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(report, "render", lambda rows, out: [])
    monkeypatch.setattr(report, "console_table", lambda rows: "")
    for errors, status in (([], 0), ([{"cell": "c7", "error": "boom"}], 1)):
        monkeypatch.setattr(sweep, "run_sweep", lambda *a, errors=errors, **k: {
            "rows": ROWS, "errors": errors, "skipped": [], "cells": 6, "new_cells": 6, "time_s": 2.0})
        assert main(["demo", "--quiet"]) == status


def test_an_out_that_cannot_be_created_exits_2_with_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["demo", "--quiet", "--out", str(blocker / "results")]) == 2  # its parent is a file
    err = capsys.readouterr().err
    assert err.startswith("simlm demo: error: ") and err.count("\n") == 1 and err.endswith("\n")
    assert list(tmp_path.iterdir()) == [blocker]


def test_an_experiment_command_whose_cells_failed_exits_1(capsys):
    """The experiments' commands (head_prompt, anchors, natural_tasks) exited 0 with every cell failed: only
    `simlm sweep` said so in its status.  A payload listing failed cells is exit 1 now, as for `simlm sweep`."""
    from simlm.experiments.commandline import run_main

    assert run_main("prog", lambda argv: {"errors": [{"cell": "c", "error": "boom"}], "rows": []}, [], {}) == 1
    assert "prog: 1 cell(s) failed" in capsys.readouterr().err
    assert run_main("prog", lambda argv: {"errors": [], "rows": [1]}, [], {}) == 0
    assert run_main("prog", lambda argv: None, [], {}) == 0


def test_an_os_error_names_out_only_for_a_file_of_the_results_directory(monkeypatch, tmp_path, capsys):
    """Every OSError was labelled ``--out:`` — a broken pipe from ``simlm worlds | head`` and Ray's connection
    error for ``--address`` too."""
    monkeypatch.chdir(tmp_path)
    for error, said in ((PermissionError(13, "Permission denied", str(tmp_path / "o" / "results.csv")),
                         "simlm demo: error: --out: [Errno 13] Permission denied: "),
                        (OSError(28, "No space left on device"),  # a write's error: no file named
                         "simlm demo: error: --out: [Errno 28] No space left on device"),
                        (ConnectionError(111, "Connection refused"),
                         "simlm demo: error: [Errno 111] Connection refused")):
        def run_sweep(*args, error=error, **kwargs):
            raise error
        monkeypatch.setattr(sweep, "run_sweep", run_sweep)
        assert main(["demo", "--quiet", "--out", "o"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(said) and err.count("\n") == 1, err


@pytest.mark.parametrize("command", ["worlds", "checks"])
def test_a_reader_that_stops_reading_is_no_error_of_simlm(command):
    """``simlm worlds | head``: the closed pipe was reported as ``simlm worlds: error: --out: [Errno 32] Broken
    pipe`` with status 2; now nothing is said and the status is 1 (as Python's documentation does it)."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-m", "simlm.cli", command], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # before simlm has written (its imports take a second)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1 and err == "", err


@pytest.mark.parametrize("command", [["demo"], ["sweep", "any.toml"]])
def test_an_empty_out_is_a_usage_error_not_the_working_directory(command, tmp_path, monkeypatch, capsys):
    """``--out ''`` ran the sweep into the working directory (Path('') is '.')."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--quiet", "--out", ""]) == 2
    assert "argument --out: expected a results directory, got an empty path" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    from simlm.experiments import anchors
    assert anchors.main(["--out", " "]) == 2 and not list(tmp_path.iterdir())
    from simlm.errors import ConfigError
    from simlm.experiments.store import results_dir
    with pytest.raises(ConfigError, match="^out: expected a results directory, got an empty path"):
        results_dir("")  # the Python API's runs too


def test_a_warning_is_printed_as_one_line_of_the_command_and_the_format_is_restored():
    """A resumed sweep's warning was printed as Python's '/…/simlm/cli.py:44: RuntimeWarning: …' with the
    source line under it (a review, 2026-12-06); the command prints it as its own line."""
    import warnings

    from simlm import cli

    line = cli._warning_line("sweep")
    assert line("o: 1 of its 1 finished cells …", RuntimeWarning, "/x/cli.py", 44) == \
        "simlm sweep: warning: o: 1 of its 1 finished cells …\n"
    assert line("old", DeprecationWarning, "f", 1) == "simlm sweep: warning: DeprecationWarning: old\n"
    before = warnings.formatwarning
    assert cli.main(["checks"]) == 0 and warnings.formatwarning is before


def test_report_of_a_missing_directory_or_a_file_says_which(tmp_path, capsys):
    """Both read 'has no cells.jsonl (not a sweep results directory)'."""
    (tmp_path / "f").write_text("x")
    for target, said in ((tmp_path / "none", "does not exist"), (tmp_path / "f", "is a file, not a sweep results")):
        assert main(["report", str(target)]) == 2
        assert capsys.readouterr().err == f"simlm report: error: DIR: {target} {said}" + (
            "\n" if said == "does not exist" else " directory\n")


def test_an_out_under_a_file_or_an_empty_dir_is_named_as_such_not_an_errno(tmp_path, capsys, monkeypatch):
    """``--out a_file/sub`` read "--out: [Errno 20] Not a directory: …" (the OSError's text inside the typed
    message); ``simlm report ""`` read "DIR: . has no cells.jsonl" (Path('') is the working directory), and
    ``run_sweep(config, "")`` ran into the working directory (the command line refused it, the API did not)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    assert main(["demo", "--quiet", "--out", "a_file/sub"]) == 2
    assert capsys.readouterr().err == ("simlm demo: error: --out: cannot use a_file/sub as the results directory "
                                       "(Not a directory)\n")
    for blank in ("", " "):
        assert main(["report", blank]) == 2
        assert capsys.readouterr().err == ("simlm report: error: DIR: expected a sweep results directory, got an "
                                           f"empty path {blank!r}\n")
    from simlm.errors import ConfigError
    with pytest.raises(ConfigError, match="^out: expected a results directory, got an empty path ''"):
        sweep.run_sweep(sweep.load_config(demo_config_path()), "", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_report_of_a_folder_that_is_no_results_directory_leaves_nothing_in_it(tmp_path, capsys):
    """The refusal was right, but the directory lock was taken first: the folder kept a .sweep.lock."""
    assert main(["report", str(tmp_path)]) == 2
    assert "has no cells.jsonl" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_ctrl_c_is_one_line_and_status_130_not_a_traceback(monkeypatch, tmp_path, capsys):
    """Every finished cell is already stored: the line says so and how to resume."""
    from simlm import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_demo", interrupted)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quiet"]) == 130
    assert capsys.readouterr().err == ("simlm demo: interrupted; the finished cells are kept, rerun the same command "
                                       "to resume\n")
    monkeypatch.setattr(cli, "_checks", interrupted)
    assert main(["checks"]) == 130 and capsys.readouterr().err == "simlm checks: interrupted\n"  # no cells to keep
    from simlm.experiments.commandline import run_main  # the experiments' python -m commands alike
    assert run_main("prog", interrupted, [], {}) == 130
    assert capsys.readouterr().err.startswith("prog: interrupted; the finished cells are kept")


def test_the_executor_flag_reaches_the_executor(calls, monkeypatch):
    """--executor process with one worker is a process pool of 1, not the in-process default (silently run in
    process, it passed every test: each covered the default or --workers 2); --executor ray with its --address
    builds Ray's executor (stubbed: no Ray is started)."""
    import simlm.experiments.executors as executors

    made = []

    class FakeRay:
        shares_filesystem = True

        def __init__(self, address=None, **kwargs):
            made.append(address)

    monkeypatch.setattr(executors, "RayExecutor", FakeRay)
    assert main(["demo", "--quiet", "--executor", "process"]) == 1
    pool = calls.pop()["executor"]
    assert type(pool) is ProcessPool and pool.workers == 1
    assert main(["demo", "--quiet", "--executor", "process", "--workers", "3"]) == 1
    assert calls.pop()["executor"].workers == 3
    assert main(["demo", "--quiet", "--executor", "ray", "--address", "auto"]) == 1
    assert isinstance(calls.pop()["executor"], FakeRay) and made == ["auto"]
    assert main(["demo", "--quiet"]) == 1 and type(calls.pop()["executor"]) is InProcess


def test_the_summary_counts_a_lost_ladder_once(monkeypatch, tmp_path, capsys):
    """A lost training ladder is among the errors and among the lost: counted once, as a ladder (no test
    printed a run with one)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(report, "render", lambda rows, out: [])
    monkeypatch.setattr(report, "console_table", lambda rows: "")
    ladder = {"cell": "h|trained ladder", "error": "worker died"}
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: {
        "rows": [], "errors": [ladder, {"cell": "c7", "error": "boom"}], "lost": [ladder], "skipped": [],
        "cells": 3, "new_cells": 3, "time_s": 1.0})
    assert main(["demo", "--quiet"]) == 1
    assert "3 cells, 0 rows: 0 of 0 bounded rows violated, 0 trivial; 1 cells failed, 1 training ladders lost" in \
        capsys.readouterr().out



def test_simlm_sweep_renders_report_md_under_the_directorys_sweep_lock(tmp_path, monkeypatch):
    """report.md and the plots were written after the lock was released: a second sweep or `simlm report`
    let in then had its report.md overwritten by the first run's older rows (a review, 2026-12-07)."""
    import argparse

    from locking import sweep_lock_held
    from simlm import cli
    from simlm.experiments.sweep import parse_config

    out = tmp_path / "out"
    config = parse_config({"name": "t", "data": {"n_sequences": 2, "length": 3},
                           "worlds": [{"name": "hmm", "kind": "hmm", "seed": 0,
                                       "options": {"n_states": 2, "n_symbols": 3}}],
                           "lms": {"oracle": True}, "checks": {"simlm/epsilon": {}}})
    real, seen = report.render, []

    def render(rows, out_dir):
        seen.append("held" if sweep_lock_held(out_dir) else "free")
        return real(rows, out_dir)

    monkeypatch.setattr(report, "render", render)
    args = argparse.Namespace(out=str(out), quiet=True, workers=1, executor="inprocess", address=None)
    assert cli._run(config, args) == 0
    assert cli._run(config, args) == 0  # a rerun (resume) into the same directory renders under the lock too
    assert seen == ["held", "held"] and (out / "report.md").exists()
