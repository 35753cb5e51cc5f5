"""The ``simlm`` command.  It parses and validates arguments and calls library code; no logic of its own.

    simlm demo   [--out runs/demo]                 the embedded default sweep, its table, plots and report
    simlm sweep  CONFIG.toml [--out DIR] [--workers N] [--executor inprocess|process|ray] [--address ADDR]
                                                   (--address only with --executor ray, --workers not with it)
    simlm report DIR                               re-render tables, plots and report.md from stored results
    simlm worlds                                   the world kinds and their parameters
    simlm checks                                   the registered checks and what they test

Every error a user can cause exits with status 2 and one line naming the argument.  A sweep (or demo) whose
cells failed exits with status 1 after writing every result it has and listing each failure (a rerun into
the directory recomputes the failed cells only).  Violated bounds are results, counted in the summary line
and report.md: the run exits with status 0.  Trained ladder rungs no seed reached (no LM, so no cells) are
listed with the best ε reached.  Ctrl-C exits with status 130 and one line: every finished cell is stored, and
the same command resumes.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import os
import sys
import textwrap
import warnings
from importlib import resources
from pathlib import Path

from simlm.errors import ConfigError, SimlmError
from simlm.experiments.commandline import INTERRUPTED, Parser, add_run_options, as_flag, directory, executor_of

#: the run options whose errors name the flag the user typed (``address: …`` → ``--address: …``)
FLAGS = {"out": "--out", "workers": "--workers", "executor": "--executor", "address": "--address"}


def demo_config_path() -> Path:
    """The shipped config of ``simlm demo`` (``simlm/experiments/configs/demo.toml``)."""
    return Path(str(resources.files("simlm.experiments") / "configs" / "demo.toml"))


def _run(config, args) -> int:
    from simlm.experiments.report import console_table, has_bound, is_trivial, render
    from simlm.experiments.sweep import run_sweep

    paths = []

    def rendered(result):  # under the sweep's lock: a second sweep or `simlm report` cannot write in between
        print(console_table(result["rows"]))
        paths.extend(render(result["rows"], args.out))

    result = run_sweep(config, args.out, executor=executor_of(args), progress=not args.quiet, after=rendered)
    bounded, lost = [r for r in result["rows"] if has_bound(r)], result.get("lost", [])
    print(f"\n{result['cells']} cells, {len(result['rows'])} rows: {sum(not r['holds'] for r in bounded)} of "
          f"{len(bounded)} bounded rows violated, {sum(is_trivial(r) for r in bounded)} trivial; "
          f"{len(result['errors']) - len(lost)} cells failed" + (f", {len(lost)} training ladders lost" if lost else "")
          + f", {len(result['skipped'])} (world, LM, check) combinations do not apply; {result['time_s']:.1f} s")
    for e in result["errors"]:
        print(f"  failed {e['cell']}: {e['error']}")
    if result.get("unreached"):  # no LM there, so no cell and no row: said, not dropped silently
        print(f"{len(result['unreached'])} trained ladder rungs not reached (no LM, no cells):")
        for u in result["unreached"]:
            print(f"  world {u['world']} seed {u['seed']}: ε ≤ {u['target']:g} not reached in {u['steps']} steps "
                  f"(best ε {u['best_eps']:.4g})")
    out = Path(args.out)
    tables = [out / "results.csv"] + [out / "results.parquet"] * (out / "results.parquet").exists()
    print(f"wrote {', '.join(str(p) for p in tables + list(paths))}")
    return 1 if result["errors"] else 0  # every finished cell is written; the failed ones are listed above


def _demo(args) -> int:
    from simlm.experiments.sweep import load_config

    return _run(load_config(demo_config_path()), args)


def _sweep(args) -> int:
    from simlm.experiments.sweep import load_config

    return _run(load_config(args.config), args)


def _report(args) -> int:
    from simlm.experiments.store import running
    from simlm.experiments.sweep import results_directory

    # a folder that is no results directory is refused before its lock file is made there
    with running(results_directory(args.dir), "dir"):  # not while a sweep writes into it (a review, 2026-12-07)
        return _report_unlocked(args)


def _report_unlocked(args) -> int:
    from simlm.experiments.report import console_table, render
    from simlm.experiments.sweep import read_results, write_tables

    rows = read_results(args.dir)
    table = Path(args.dir) / "results.csv"
    if not rows and table.exists() and len(table.read_text(encoding="utf-8", errors="replace").splitlines()) > 1:
        # a log that lost every cell (a corrupt file is kept as cells.jsonl.corrupt-<n>) must not blank the
        # tables written from it when it was whole
        raise ConfigError(f"dir: {args.dir} has no finished cell in its cell log, but {table} holds rows: left "
                          "as it is (a corrupt log is kept beside it as cells.jsonl.corrupt-<n>)")
    write_tables(rows, Path(args.dir))
    print(console_table(rows))
    print(f"wrote {', '.join(str(p) for p in render(rows, args.dir))}")
    return 0


def _worlds(args) -> int:
    from simlm.experiments.sweep import PLANTED_FAMILIES, WORLD_KINDS, planted_constructor
    from simlm.worlds import HMM, LogLinearWorld, MemoryHMM

    def describe(label, name, fn):
        params = [str(p) for n, p in inspect.signature(fn).parameters.items()
                  if n not in ("cls", "seed") and p.kind != p.VAR_KEYWORD]  # **unknown only names a refusal
        paragraphs = (inspect.getdoc(fn) or "").split("\n\n")
        # the first paragraph, and the list it introduces when it ends in a colon (a family's options)
        doc = paragraphs[0].replace("\n", " ")
        if doc.endswith(":") and len(paragraphs) > 1:
            doc += "\n" + textwrap.indent(paragraphs[1], " " * 12)
        print(f"{label:11} {name}(seed, {', '.join(params)})\n            {doc}\n")

    random = {"hmm": HMM, "memory-hmm": MemoryHMM, "loglinear": LogLinearWorld}
    for kind in WORLD_KINDS:
        if kind in random:
            describe(kind, f"{random[kind].__name__}.random", random[kind].random)
    for family in PLANTED_FAMILIES:  # kind "planted-hmm", options.family selects the constructor
        fn = planted_constructor(family)
        describe("planted-hmm", f"family = {family!r}: {fn.__name__}", fn)
    return 0


def _checks(args) -> int:
    from simlm.experiments.registry import checks

    registered = sorted(checks().items())
    width = max(len(name) for name, _ in registered)  # the longest name keeps its column
    for name, check in registered:
        print(f"{name:{width}} [{check.paper}]\n    {check.description}\n    options: {check.defaults or '{}'}\n")
    return 0


def _run_options(p, default_out):
    p.add_argument("--out", type=directory, default=default_out,
                   help=f"results directory (default {default_out}); rerunning resumes")
    add_run_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="simlm", description="synthetic worlds with an exact optimal LM: sweep "
                                     "LMs at controlled ε and check the papers' claims against ground truth",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,  # the usage, not the
                                     epilog=(__doc__ or "").partition("\n\n")[2] or None)  # module's note (-OO: none)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    demo = sub.add_parser("demo", help="run the embedded default sweep (1–3 minutes on a 2-core CPU)",
                          epilog="example: simlm demo --out runs/demo")
    _run_options(demo, "runs/demo")
    demo.set_defaults(run=_demo)
    sweep = sub.add_parser("sweep", help="run (or resume) a sweep config",
                           epilog="example: simlm sweep my_sweep.toml --out runs/my_sweep --workers 2")
    sweep.add_argument("config", help="a .toml or .json sweep config (see simlm.experiments.sweep.parse_config)")
    _run_options(sweep, "runs/sweep")
    sweep.set_defaults(run=_sweep)
    report = sub.add_parser("report", help="re-render tables, plots and report.md from a results directory",
                            epilog="example: simlm report runs/demo")
    report.add_argument("dir", help="a sweep's results directory")
    report.set_defaults(run=_report)
    worlds = sub.add_parser("worlds", help="the world kinds a config can name, with their parameters",
                            epilog="example: simlm worlds")
    worlds.set_defaults(run=_worlds)
    checks = sub.add_parser("checks", help="the registered checks and what they test", epilog="example: simlm checks")
    checks.set_defaults(run=_checks)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SimlmError as err:  # a usage error: one line, status 2
        print(f"simlm: error: {err}", file=sys.stderr)
        return 2
    flags = {**FLAGS, "out": "DIR", "dir": "DIR"} if args.command == "report" else FLAGS  # its directory is DIR
    # a warning is printed as one line of the command's ("simlm sweep: warning: …"), not as Python's
    # "<file>:<line>: RuntimeWarning: …" with the source line under it (what is recorded, e.g. by pytest.warns,
    # is unchanged: only the printed form is)
    shown, warnings.formatwarning = warnings.formatwarning, _warning_line(args.command)
    try:
        return args.run(args)
    except SimlmError as err:
        message = str(err)
    except KeyboardInterrupt:  # Ctrl-C: every finished cell is stored; say so in one line, not a traceback
        said = INTERRUPTED if args.command in _SWEEPS else "interrupted"
        print(f"simlm {args.command}: {said}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # whoever read the output stopped (`simlm worlds | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 1
    except OSError as err:  # a file of the results directory that cannot be written is the --out's (or DIR's), as
        # is a full or read-only disk (a write's error names no file); any other (Ray's connection for --address,
        # say) is said as it is, naming no flag
        where = getattr(args, "out", None) or getattr(args, "dir", None)
        ours = _under(err.filename, where) or (where is not None and err.filename is None and err.errno in _DISK)
        message = f"out: {err}" if ours else str(err)
    finally:
        warnings.formatwarning = shown
    print(f"simlm {args.command}: error: {as_flag(message, flags)}", file=sys.stderr)
    return 2


def _warning_line(command: str):
    def line(message, category, filename, lineno, line=None):
        kind = "" if category in (RuntimeWarning, UserWarning) else f"{category.__name__}: "
        return f"simlm {command}: warning: {kind}{message}\n"
    return line


#: the commands that run a sweep's cells (and so have finished cells to keep when interrupted)
_SWEEPS = ("demo", "sweep")

#: the errors of a write that say where it went only through the disk: full, over quota, read-only
_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _under(filename, directory) -> bool:
    """Whether ``filename`` (an OSError's, or None) is ``directory`` or inside it."""
    if filename is None or directory is None:
        return False
    path, top = Path(os.fsdecode(filename)).resolve(), Path(directory).resolve()
    return path == top or top in path.parents


if __name__ == "__main__":
    sys.exit(main())
