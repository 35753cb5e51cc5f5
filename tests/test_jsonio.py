"""simlm.jsonio: what is written is what reads back, and what JSON cannot hold is refused."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from simlm.errors import ConfigError
from simlm.jsonio import claim_json, differing, json_text, read_back, read_json, write_json_atomic


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


# ---- strict reading: a NaN token is a damaged file or line, not a number ------------------------------------

def _row(**kw):
    return {"paper": "p", "check": "c", "world": "w", "lm": "oracle", "quantity": "q", "measured": 0.0,
            "bound": 1.0, "holds": True, "trivial": False, **kw}


def test_a_nan_token_in_the_cell_store_is_a_damaged_line_not_a_finished_cell(tmp_path):
    """simlm writes a NaN as null with its mark (and holds False); a line edited to NaN beside holds = true was
    loaded as a finished cell and tabulated as holding (a review, 2026-12-07): now dropped and recomputed."""
    from simlm.experiments.store import CellStore, append_cell
    path = tmp_path / "cells.jsonl"
    append_cell(path, "good", [_row(measured=math.nan)])
    with open(path, "a") as f:
        f.write('{"cell": "edited", "records": [' + json.dumps(_row()).replace('"measured": 0.0', '"measured": NaN')
                + "]}\n")
    with pytest.warns(RuntimeWarning, match="dropped 1 corrupt line"):
        store = CellStore(path)
    assert list(store.cells) == ["good"] and math.isnan(store.cells["good"]["records"][0]["measured"])


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_read_json_refuses_non_finite_tokens_and_numbers_that_overflow(tmp_path, token):
    from simlm.errors import ConfigError
    (tmp_path / "a.json").write_text('{"x": [1, %s]}' % token)
    with pytest.raises(ConfigError, match=f"a.json is unreadable or corrupt .*{token} is not"):
        read_json(tmp_path / "a.json")


def test_a_measured_value_that_overflows_to_inf_is_a_damaged_cell_line(tmp_path):
    """1e999 is read as inf by Python's json: the NaN token's way past the strict decoder (a review)."""
    from simlm.experiments.store import CellStore, append_cell
    path = tmp_path / "cells.jsonl"
    append_cell(path, "good", [_row()])
    with open(path, "a") as f:
        f.write('{"cell": "edited", "records": [' + json.dumps(_row()).replace('"measured": 0.0', '"measured": 1e999')
                + "]}\n")
    with pytest.warns(RuntimeWarning, match="dropped 1 corrupt line"):
        assert list(CellStore(path).cells) == ["good"]


def test_a_null_best_eps_in_a_damaged_summary_prints_a_dash_not_a_traceback(tmp_path):
    from simlm.experiments import report
    from simlm.experiments.store import CellStore
    write_json_atomic(tmp_path / "sweep.json", {"name": "hand-made"})
    CellStore(tmp_path / "cells.jsonl")
    (tmp_path / "summary.json").write_text(json.dumps({"unreached": [
        {"world": "w", "seed": 0, "target": 0.1, "best_eps": None, "steps": 3}]}))
    assert "ε ≤ 0.1 not reached in 3 steps (best ε –)" in report.markdown([], tmp_path, [])


def test_differing_names_the_dotted_paths_and_a_key_one_side_lacks_beside_a_null(tmp_path):
    """A refusal named the top-level key alone; and a key one table lacks where the other holds null is a
    difference (``get`` read both as None: a checkpoint with a config field the run lacks passed as the run's)."""
    assert differing({"lms": {"analytic": {"eps": [0.1]}, "oracle": True}},
                     {"lms": {"analytic": {"eps": [0.2]}, "oracle": True}}) == ["lms.analytic.eps"]
    assert differing({"lms": {"x": None, "eps": [1]}}, {"lms": {"eps": [1]}}) == ["lms.x"]
    assert differing({"x": None}, {}) == ["x"] and differing({"a": {"b": 1}}, {"a": {"b": 1}}) == []
    claim_json(tmp_path / "c.json", {"lms": {"x": None}}, owner="o", fix="f")
    with pytest.raises(ConfigError, match=r"differs in \['lms.x'\]"):  # it read "differs in []"
        claim_json(tmp_path / "c.json", {"lms": {}}, owner="o", fix="f")


def test_a_checkpoint_whose_config_has_a_field_the_run_lacks_is_another_runs(tmp_path):
    from simlm.train.trainer import _Foreign, _refuse_foreign

    with pytest.raises(_Foreign, match=r"differs in \['train_config.new_field'\]"):
        _refuse_foreign(tmp_path, {"train_config": {"a": 1, "new_field": None}}, {"train_config": {"a": 1}})

