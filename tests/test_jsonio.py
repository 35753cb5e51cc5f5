"""simlm.jsonio: what is written is what reads back, and what JSON cannot hold is refused."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from simlm.jsonio import json_text, read_back, read_json, write_json_atomic


def test_read_back_equals_the_file_written(tmp_path):
    payload = {"b": (1, np.float32(2.5), jnp.arange(2)), "a": {"x": math.inf, "y": np.int64(3)}, "c": math.nan}
    write_json_atomic(tmp_path / "f.json", payload)
    assert read_back(payload) == read_json(tmp_path / "f.json")
    assert read_back(payload) == {"a": {"x": None, "y": 3}, "b": [1, 2.5, [0, 1]], "c": None}


@pytest.mark.parametrize("payload", [{(1, 2): "a"}, {"x": object()}, {"x": {1, 2}}])
def test_read_back_refuses_what_the_writer_refuses(payload):
    for fn in (read_back, json_text):
        with pytest.raises((TypeError, ValueError)):
            fn(payload)


def test_numpy_ml_dtypes_scalars_and_keys_are_written_as_they_read_back():
    """A bfloat16 or float8 scalar inf/NaN (what indexing a bf16 loss array gives) made the write fail, as did
    a numpy int key, and keys of mixed types (json's sort_keys compared 1 with "b")."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    payload = {"x": [ml_dtypes.bfloat16(np.inf), ml_dtypes.float8_e4m3fn(np.nan), ml_dtypes.bfloat16(1.5)],
               np.int64(7): 2, "b": 3, False: 4, None: 5, 2.5: 6}
    expected = {"x": [None, None, 1.5], "7": 2, "b": 3, "false": 4, "null": 5, "2.5": 6}  # as json writes keys
    assert read_back(payload) == expected and json.loads(json_text(payload)) == expected


def test_json_text_is_strict_json():
    text = json_text({"x": [math.inf, -math.inf, math.nan, 1.0]})
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"x": [None, None, None, 1.0]}


@pytest.mark.parametrize("keys", [(1, "1"), (True, "true"), (None, "null"), (np.float64(1.5), "1.5")])
def test_dict_keys_that_collide_as_json_keys_are_refused_not_merged(keys):
    """{1: "int", "1": "str"} read back as {"1": "str"}: one value lost, silently (json.dumps with sort_keys
    raises on such a dict; a review, 2026-12-07)."""
    from simlm.errors import ConfigError

    with pytest.raises(ConfigError, match="^keys: .* collide as JSON object keys"):
        read_back(dict(zip(keys, ("a", "b"))))
    assert read_back({1: "a", 2: "b"}) == {"1": "a", "2": "b"}


def test_a_failed_atomic_write_leaves_the_file_as_it_was_and_no_temporary_file(tmp_path, monkeypatch):
    """A full disk left `<name>.<pid>-<tid>.tmp` in the results directory (a review, 2026-12-07)."""
    import os

    from simlm.jsonio import write_text_atomic

    path = tmp_path / "a.json"
    write_text_atomic(path, "old")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
