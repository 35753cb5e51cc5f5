"""``benchmarks/suite.py --quick`` runs the filter benchmark end to end and writes one JSON and the Markdown
table; the property-speed benchmark's test runs in-process on a few examples.  No assertion on speed
(timings live in the benchmarks, not in tests)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import property_speed  # noqa: E402


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    docs = tmp / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--only", "filters",
                           "--results", str(tmp), "--docs", str(docs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)  # a hang guard, not a speed test
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp / "suite.json").read_text()), docs.read_text()


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_every_filter_agrees_and_every_throughput_is_positive(suite):
    report = suite[0]["benchmarks"]["filters"]["report"]
    assert report["agrees"] is True
    for row in report["results"]:
        assert all(_positive(v) for v in row["seconds"].values())
        assert row["max_abs_diff"] <= 1e-4


def test_the_property_benchmark_runs_every_example_it_asks_for():
    examples, seconds, compiles = property_speed.property_test(5, seed=0)
    assert examples == 5 and _positive(seconds)
    assert isinstance(compiles, int) and compiles >= 0


def test_the_docs_table_replaces_only_its_own_section_and_names_unmeasured_accelerator_rows(suite):
    _, docs = suite
    assert docs.startswith("# Benchmarks\n\nprose kept\n") and docs.count("<!-- suite:begin -->") == 1
    assert "| filters |" in docs
    if jax.default_backend() == "cpu":
        assert docs.count("unmeasured — no accelerator in this run") == 4


def test_a_spent_budget_skips_the_remaining_entries_and_still_writes_the_json_and_the_table(tmp_path):
    import suite as suite_script

    docs = tmp_path / "benchmarks.md"
    rc = suite_script.main(["--only", "filters", "train_bf16", "--budget", "0", "--results", str(tmp_path),
                            "--docs", str(docs)])
    report = json.loads((tmp_path / "suite.json").read_text())
    assert rc == 1 and report["budget_s"] == 0
    assert {name: e["status"] for name, e in report["benchmarks"].items()} == {
        "filters": "skipped (the --budget was spent)", "train_bf16": "skipped (the --budget was spent)"}
    assert "| train_bf16 | — | — | skipped (the --budget was spent) |" in docs.read_text()


def test_quick_mode_keeps_an_entrys_precision_and_drops_its_sizes():
    import suite as suite_script

    script, extra = suite_script.plan(True)["train_bf16"]
    assert script == "train" and suite_script.quick_args(extra) == ["--quick", "--dtype", "bfloat16"]
    assert suite_script.quick_args(suite_script.plan(False)["train"][1]) == ["--quick"]
