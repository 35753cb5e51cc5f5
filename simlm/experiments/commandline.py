"""What the experiments' command lines share: every error a user can cause — a bad flag, a bad value, a
results directory that cannot be used — ends the command with exit status 2 and one line on stderr
naming the flag, never a traceback (as the ``simlm`` command does)."""

from __future__ import annotations

import argparse
import re
import sys

from simlm.errors import ConfigError, SimlmError


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors raise :class:`ConfigError` (so :func:`run_main` prints them as one
    line) instead of printing the usage and exiting, and which takes flags only as spelt (no prefixes)."""

    def __init__(self, *args, **kwargs):
        # no abbreviations: head_prompt_protocol tells --trained from the rest by the literal flag, and --train
        # read as --trained ran the other study
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def directory(text: str) -> str:
    """A ``--out`` directory: a non-empty path (``--out ''`` wrote the results into the working directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a results directory, got an empty path")
    return text


def as_flag(message: str, flags: dict) -> str:
    """``message`` with its leading ``field:`` or ``field, field:`` (config fields set by flags) written as
    those flags."""
    m = re.match(r"\w+(?:, \w+)*(?=:)", message)
    if not m or not any(name in flags for name in m[0].split(", ")):
        return message
    return ", ".join(flags.get(name, name) for name in m[0].split(", ")) + message[m.end():]


def positive_int(name):
    """An argparse type: an integer ≥ 1 (its error names the value)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
        return value
    parse.__name__ = name
    return parse


def workers_value(text):
    """An argparse type for ``--workers``: an integer ≥ 1, or ``auto`` (:func:`~simlm.experiments.executors.auto_workers`)."""
    return "auto" if text == "auto" else positive_int("workers")(text)


workers_value.__name__ = "workers"


def add_run_options(p, *, workers: str = "1") -> None:
    """The options of every command that runs a sweep: where its cells run, and its progress bars.
    ``workers`` describes the default of ``--workers`` in its help; a command whose default is not 1
    leaves ``args.workers`` None when the flag is absent and decides (``"auto"`` for the experiments made
    of a few long jobs, 1 for their ``--quick`` runs)."""
    from simlm.experiments.executors import EXECUTORS

    p.add_argument("--workers", type=workers_value, default=1 if workers == "1" else None,
                   help="parallel jobs (a process pool when > 1 with the default executor), or auto: one per CPU "
                        f"core on a CPU backend, 1 on an accelerator (default: {workers})")
    p.add_argument("--executor", choices=EXECUTORS, default="inprocess",
                   help="where jobs run: here, a local process pool, or Ray (pip install 'simlm[distributed]')")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto or ray://head:10001)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def check_run_options(args) -> None:
    """Refuse the options of :func:`add_run_options` that would be ignored, without building an executor (no
    Ray started): ``--address`` is a Ray cluster's; ``--workers`` sizes the local process pool, so with
    ``--executor ray``, whose tasks go wherever its cluster has CPUs, a value other than 1 is refused rather than
    ignored (every command that runs a sweep: ``simlm sweep`` and the experiments).  A command calls it with
    its other checks, before it makes its results directory."""
    from simlm.experiments.executors import check_address

    check_address(args.executor, args.address)
    if args.executor == "ray" and args.workers not in (None, 1):
        raise ConfigError(f"workers: sizes the local process pool and is not used by --executor ray (got "
                          f"{args.workers!r}); leave it out, Ray runs as many jobs as its cluster has CPUs")


def figure_path(value, field: str = "figure"):
    """``value``, a flag's path for a PNG (None: not given), as a :class:`~pathlib.Path`, checked before anything
    runs and without making anything (the command makes its directory when it writes it): not a directory, and
    the nearest existing folder above it a directory this process may write in, else a :class:`ConfigError`
    naming ``field`` (a bad path used to end a finished sweep, or leave an empty results directory behind)."""
    import os
    from pathlib import Path

    if value is None:
        return None
    figure = Path(value)
    if figure.is_dir():
        raise ConfigError(f"{field}: {figure} is a directory; give the path of a .png file")
    above = figure.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"{field}: cannot write {figure} ({above} is not a directory)")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}: cannot write {figure} (no permission to write in {above})")
    return figure


def executor_of(args):
    """The executor the options of :func:`add_run_options` ask for (checked by :func:`check_run_options`)."""
    from simlm.experiments.executors import auto_workers, make_executor

    check_run_options(args)
    workers = auto_workers() if args.workers == "auto" else args.workers
    return make_executor(args.executor, workers=workers, address=args.address)


#: what an interrupted sweep says (every finished cell is stored, so the same command resumes)
INTERRUPTED = "interrupted; the finished cells are kept, rerun the same command to resume"


def run_main(prog: str, command, argv, flags: dict) -> int:
    """``command(argv)``; 0 if it returns, 1 if it returns a payload listing failed cells (``errors``: they
    are stored, listed and rerun; the tables hold the others), as ``simlm sweep`` exits, and 2 with one line
    on stderr for a :class:`SimlmError` or an ``OSError`` (a file that cannot be written); Ctrl-C 130 with one
    line, as ``simlm`` exits (every finished cell is stored)."""
    try:
        payload = command(argv)
    except KeyboardInterrupt:
        print(f"{prog}: {INTERRUPTED}", file=sys.stderr)
        return 130
    except SimlmError as err:
        message = as_flag(str(err), flags)
    except OSError as err:
        message = f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")
    else:
        failed = payload.get("errors") if isinstance(payload, dict) else None
        if failed:  # a run whose cells failed is not a success, though it wrote what it has
            print(f"{prog}: {len(failed)} cell(s) failed (listed above; a rerun recomputes them)", file=sys.stderr)
            return 1
        return 0
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2
