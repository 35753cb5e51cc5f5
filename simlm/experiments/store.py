"""The results store shared by the experiments: an append-only cell store that a rerun resumes from, and
the config claim that keeps one store to one config."""

from __future__ import annotations

import json
import os
from pathlib import Path


from simlm.jsonio import claim_json, jsonable


class CellStore:
    """Append-only JSONL of finished cells, ``{"cell": key, "records": [...], **info}`` per line.

    Each line is written whole, flushed and fsynced; a torn last line (an interrupted write) is dropped
    on opening, so the file only ever holds finished cells and a rerun skips exactly those."""

    def __init__(self, path):
        self.path, self.cells = Path(path), {}
        if not self.path.exists():
            return
        text, good = self.path.read_text(), []
        for line in text.splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if line.endswith("\n"):
                self.cells[entry["cell"]] = entry
                good.append(line)
        if "".join(good) != text:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(good))
            os.replace(tmp, self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def __len__(self) -> int:
        return len(self.cells)

    def add(self, key: str, records: list, **info) -> None:
        entry = jsonable({"cell": key, "records": records, **info})
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.cells[key] = entry

    def records(self) -> list[dict]:
        """Every stored record, in the order the cells were finished."""
        return [r for entry in self.cells.values() for r in entry["records"]]


def claim(path, config: dict) -> None:
    """A results directory belongs to one config: write ``config`` to ``path`` on first use, and raise
    :class:`~simlm.errors.ConfigError` naming the differing fields if a different one is there."""
    path = Path(path)
    claim_json(path, jsonable(config), owner=f"out: {path.parent} holds results of a different config",
               fix="use another --out")


__all__ = ["CellStore", "claim"]
