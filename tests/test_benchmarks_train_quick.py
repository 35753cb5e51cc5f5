"""The training benchmarks run end to end in ``--quick`` mode and write the JSON they promise.

Each script runs in a subprocess (as a user runs it); no wall-clock assertions, only that the report
holds its keys and that every measured quantity is a positive number."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(script: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_machine(report: dict):
    for key in ("jax", "backend", "cpu_count", "python"):
        assert key in report["machine"], key


def check_train_rows(report: dict, *, peer: bool):
    assert report["results"], report
    for row in report["results"]:
        for key in ("params_simlm", "simlm_tok_s", "simlm_step_tok_s", "simlm_tflops", "simlm_batch_s"):
            assert positive(row[key]), (key, row[key])
        for key in ("params_hf", "hf_tok_s", "ratio", "ratio_step_only"):
            assert positive(row[key]) if peer else row[key] is None, (key, row[key])


def test_train_benchmark_without_the_peer_measures_simlm_and_marks_the_peer_unavailable(tmp_path):
    report = run_quick("train", tmp_path, "--no-peer", "--sizes", "tiny")  # the test below runs both sizes
    check_machine(report)
    assert [row["size"] for row in report["results"]] == ["tiny"]
    assert report["peer"]["available"] is False and report["peer"]["reason"]
    check_train_rows(report, peer=False)
    assert report["target"]["met"] is None


def test_train_benchmark_with_the_peer_reports_both_sides_and_their_ratio(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    report = run_quick("train", tmp_path)
    check_machine(report)
    assert report["peer"]["available"] is True and report["peer"]["torch"]
    check_train_rows(report, peer=True)
    for row in report["results"]:  # the same shape on both sides: counts differ by the 2 extra output rows
        assert row["params_hf"] - row["params_simlm"] == 2 * row["d_model"]
    assert positive(report["target"]["worst"])


def test_ensemble_benchmark_reports_both_runs_and_their_ratio(tmp_path):
    report = run_quick("ensemble", tmp_path)
    check_machine(report)
    assert [r["seeds"] for r in report["results"]] == [1, report["config"]["ensemble"]]
    for row in report["results"]:
        for key in ("total_s", "steady_s_per_step", "steady_tok_s", "step_s", "step_best_s", "batch_s"):
            assert positive(row[key]), (key, row[key])
    for key in ("steady", "total", "step_alone", "step_alone_best", "batch_alone"):
        assert positive(report["ratios"][key]), key
    assert report["target"]["ratio"] == report["ratios"]["steady"]


def test_time_to_eps_benchmark_reports_every_rung(tmp_path):
    report = run_quick("time_to_eps", tmp_path)
    check_machine(report)
    rungs = report["rungs"]
    assert [r["target"] for r in rungs] == sorted(report["train_config"]["targets"], reverse=True)
    for rung in rungs:
        if rung["reached"]:  # a rung can be crossed at step 0, by the untrained model
            assert positive(rung["epsilon"]) and rung["epsilon"] <= rung["target"], rung
            assert all(rung[key] >= 0 for key in ("step", "tokens_seen", "wall_time")), rung
    assert rungs[0]["reached"], rungs  # ε ≤ 1 nats/token is within any budget
    for key in ("total_s", "final_step", "best_epsilon"):
        assert positive(report[key]), key
    assert report["curve"] and all(positive(p["epsilon"]) for p in report["curve"])
