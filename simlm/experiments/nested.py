"""A nested result — dicts, lists, numbers, strings, None — as tidy rows and back, one row per leaf.

An experiment whose result is a nested record (per rung, per block, per readout …) stores it through the
sweep's tidy rows without losing a number: :func:`leaf_rows` writes each leaf as a
:func:`~simlm.experiments.registry.row` whose ``quantity`` is the leaf's path (a list's name marked ``[]``:
``rungs[]/rows[]/mean_apt``) and ``index`` its list positions (``"2/7"``), and :func:`nested_of` rebuilds
the record from those rows — exactly, because JSON keeps every float, and ``vtype`` says how to read the
leaf back (a NaN, stored as null in strict JSON, stays a NaN; a None stays a None; an int stays an int).
Empty lists and dicts have no leaf and do not come back; keys must not contain ``/`` or end in ``[]``.
"""

from __future__ import annotations

import math

import numpy as np

from simlm.experiments.registry import row


def _leaves(value, path=(), index=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (str(k),), index)
    elif isinstance(value, (list, tuple, np.ndarray)):
        path = path[:-1] + (path[-1] + "[]",)
        for i, v in enumerate(value):
            yield from _leaves(v, path, index + (i,))
    else:
        yield path, index, value


def _vtype(leaf) -> str:
    if leaf is None or isinstance(leaf, str):
        return "none" if leaf is None else "str"
    if isinstance(leaf, (bool, np.bool_)):
        return "bool"
    return "int" if isinstance(leaf, (int, np.integer)) else "float"


def leaf_rows(value: dict, **columns) -> list:
    """One row per leaf of the dict ``value``: ``quantity`` its path, ``index`` its list positions (None
    outside lists), ``measured`` the number (NaN for a string, kept in ``text``, and for a None), ``vtype``
    (``float | int | bool | str | none``); ``columns`` are added to every row."""
    out = []
    for path, index, leaf in _leaves(value):
        vtype = _vtype(leaf)
        out.append(row("/".join(path), math.nan if vtype in ("none", "str") else float(leaf),
                       index="/".join(map(str, index)) or None, vtype=vtype, text=leaf if vtype == "str" else None,
                       **columns))
    return out


def _leaf(r: dict):
    vtype, measured = r["vtype"], r["measured"]
    if vtype in ("none", "str"):
        return None if vtype == "none" else r["text"]
    measured = math.nan if measured is None else measured  # NaN is stored as null (strict JSON)
    return {"bool": bool, "int": int}.get(vtype, float)(measured)


def _child(holder, slot, kind):
    """``holder[slot]`` (a dict's key or a list's position), made an empty ``kind`` if not there yet."""
    if (slot not in holder) if isinstance(holder, dict) else holder[slot] is None:
        holder[slot] = kind()
    return holder[slot]


def nested_of(rows) -> dict:
    """The dict whose :func:`leaf_rows` are ``rows`` (in their order)."""
    tree = {}
    for r in rows:
        positions = iter(int(i) for i in (r["index"] or "").split("/") if i)
        names = r["quantity"].split("/")
        node = tree
        for depth, name in enumerate(names):
            key, lists = name, 0
            while key.endswith("[]"):  # a list (of lists …) under this key
                key, lists = key[:-2], lists + 1
            holder, slot = node, key
            for _ in range(lists):
                items = _child(holder, slot, list)
                i = next(positions)
                items.extend(None for _ in range(i + 1 - len(items)))
                holder, slot = items, i
            if depth == len(names) - 1:
                holder[slot] = _leaf(r)
            else:
                node = _child(holder, slot, dict)
    return tree


__all__ = ["leaf_rows", "nested_of"]
