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
    line) instead of printing the usage and exiting."""

    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def as_flag(message: str, flags: dict) -> str:
    """``message`` with its leading ``field:`` or ``field, field:`` (config fields set by flags) written as
    those flags."""
    m = re.match(r"\w+(?:, \w+)*(?=:)", message)
    if not m or not any(name in flags for name in m[0].split(", ")):
        return message
    return ", ".join(flags.get(name, name) for name in m[0].split(", ")) + message[m.end():]


def run_main(prog: str, command, argv, flags: dict) -> int:
    """``command(argv)``; 0 if it returns, 2 and one line on stderr for a :class:`SimlmError` or an
    ``OSError`` (a file that cannot be written)."""
    try:
        command(argv)
    except SimlmError as err:
        message = as_flag(str(err), flags)
    except OSError as err:
        message = f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")
    else:
        return 0
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2
