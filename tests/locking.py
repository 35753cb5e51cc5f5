"""Whether a results directory's sweep lock is held, asked as another process would ask it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def sweep_lock_held(out) -> bool:
    """True while some open file description holds ``out/.sweep.lock`` (this one is a new description,
    so a lock taken by this very process counts as held, as it would for another process)."""
    fd = os.open(Path(out) / ".sweep.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def probe_writes(monkeypatch, module, out) -> list:
    """Record, for every ``module.write_json_atomic`` call, whether the sweep lock of ``out`` was held."""
    real, seen = module.write_json_atomic, []

    def write(path, payload, *a, **k):
        seen.append(sweep_lock_held(out))
        return real(path, payload, *a, **k)

    monkeypatch.setattr(module, "write_json_atomic", write)
    return seen
