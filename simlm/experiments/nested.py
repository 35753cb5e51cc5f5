"""A nested result — dicts, lists, numbers, strings, None — as tidy rows and back, one row per leaf.

An experiment whose result is a nested record (per rung, per block, per readout …) stores it through the
sweep's tidy rows without losing a number: :func:`leaf_rows` writes each leaf as a
:func:`~simlm.experiments.registry.row` whose ``quantity`` is the leaf's path (a list's name marked ``[]``:
``rungs[]/rows[]/mean_apt``) and ``index`` its list positions (``"2/7"``), and :func:`nested_of` rebuilds
the record from those rows — exactly, because JSON keeps every float, and ``vtype`` says how to read the
leaf back (a NaN, stored as null in strict JSON, stays a NaN; ±inf, also null there, have their own
vtypes ``inf`` and ``-inf``; a None stays a None; an int stays an int, one beyond float precision
(|n| > 2⁵³) kept exact in ``text``).
Empty lists and dicts have no leaf: under a dict key they do not come back, inside a list they come back as
None — except after a list's last leaf, where the list comes back shorter (``[1, []]`` as ``[1]``; a list of
empties alone does not come back).  Keys must be strings (an int key 1 would come back as "1", and beside a
key "1" would overwrite it) that do not contain ``/`` or end in ``[]`` (a :class:`~simlm.errors.ConfigError`
names the key); numpy and JAX arrays are read as the lists (or, 0-d, the scalars) they hold.
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np

from simlm.errors import ConfigError
from simlm.experiments.registry import row


def _leaves(value, path=(), index=()):
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value).tolist()  # a list, or the scalar of a 0-d array
    if isinstance(value, dict):
        for k, v in value.items():
            name = str(k)
            if not isinstance(k, str):  # it would come back as str(k), or overwrite a key spelt str(k)
                raise ConfigError(f"value: the key {'/'.join(path + (name,))!r} is not a string "
                                  f"({type(k).__name__}); the leaf rows' paths would give it back as one")
            if "/" in name or name.endswith("[]"):  # the path's separator and a list's mark: it would not come back
                raise ConfigError(f"value: the key {'/'.join(path + (name,))!r} contains '/' or ends in '[]', "
                                  "which the leaf rows' paths use")
            yield from _leaves(v, path + (name,), index)
    elif isinstance(value, (list, tuple)):
        path = path[:-1] + (path[-1] + "[]",)
        for i, v in enumerate(value):
            yield from _leaves(v, path, index + (i,))
    else:
        yield path, index, value


#: ints beyond this magnitude are not all floats: they are kept exact as text
_EXACT_FLOAT_INT = 2 ** 53


def _vtype(leaf) -> str:
    if leaf is None or isinstance(leaf, str):
        return "none" if leaf is None else "str"
    if isinstance(leaf, (bool, np.bool_)):
        return "bool"
    if isinstance(leaf, (int, np.integer)):
        return "int"
    return {math.inf: "inf", -math.inf: "-inf"}.get(float(leaf), "float")


def _measured(leaf, vtype: str) -> float:
    if vtype in ("none", "str"):
        return math.nan
    try:
        return float(leaf)
    except OverflowError:  # an int beyond the floats (its text keeps it)
        return math.inf if int(leaf) > 0 else -math.inf


def leaf_rows(value: dict, **columns) -> list:
    """One row per leaf of the dict ``value``: ``quantity`` its path, ``index`` its list positions (None
    outside lists), ``measured`` the number (NaN for a string, kept in ``text``, and for a None), ``vtype``
    (``float | inf | -inf | int | bool | str | none``), ``text`` the string, or the digits of an int beyond
    2⁵³ (which a float would round); ``columns`` are added to every row."""
    if not isinstance(value, dict):
        raise ConfigError(f"value: expected a dict (the nested record), got {type(value).__name__}")
    out = []
    for path, index, leaf in _leaves(value):
        vtype = _vtype(leaf)
        big = vtype == "int" and abs(int(leaf)) > _EXACT_FLOAT_INT
        out.append(row("/".join(path), _measured(leaf, vtype), index="/".join(map(str, index)) or None, vtype=vtype,
                       text=leaf if vtype == "str" else str(int(leaf)) if big else None, **columns))
    return out


def leaf_name(quantity: str, index) -> str:
    """A leaf row's ``quantity`` with its list positions ``index`` ("0/2") put in the path's ``[]`` marks
    (``apt[]`` → ``apt[0]``): the entries of one list told apart; a leaf outside lists as it is."""
    if index in (None, ""):
        return quantity
    positions = iter(str(index).split("/"))
    return re.sub(r"\[\]", lambda _: f"[{next(positions, '')}]", quantity)


def _leaf(r: dict):
    vtype, measured = r["vtype"], r["measured"]
    if vtype in ("none", "str", "inf", "-inf"):
        return {"none": None, "str": r.get("text"), "inf": math.inf, "-inf": -math.inf}[vtype]
    if vtype == "int" and r.get("text") is not None:
        return int(r["text"])
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


__all__ = ["leaf_rows", "leaf_name", "nested_of"]
