"""The benchmarks' optional peers (``benchmarks/peers.py``): a missing one is reported, an installed one
cannot change the matmul precision simlm runs under."""

import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peers import import_peer, pinned  # noqa: E402


def test_a_missing_peer_is_none():
    assert import_peer("no_such_peer_library.sub") == (None, None)


def test_importing_a_peer_leaves_the_matmul_precision_as_it_was():
    before = jax.config.jax_default_matmul_precision
    module, _ = import_peer("dynamax.hidden_markov_model")
    assert module is not None and jax.config.jax_default_matmul_precision == before


def test_pinned_runs_under_the_precision_and_restores_it():
    before = jax.config.jax_default_matmul_precision
    assert pinned(lambda: jax.config.jax_default_matmul_precision, "bfloat16")() == "bfloat16"
    assert jax.config.jax_default_matmul_precision == before


def test_worlds_reports_an_unavailable_peer_instead_of_a_ratio(monkeypatch):
    import worlds

    monkeypatch.setattr(worlds, "DYNAMAX", None)
    tg = worlds.targets([{"K": 256, "forward_fraction_of_matmul": 0.7}])
    for name in ("sampling_ratio", "inference_ratio"):
        assert tg[name]["worst"] is None and tg[name]["met"] is None and "peer unavailable" in tg[name]["note"]
    assert tg["forward_fraction"]["met"] is True  # the simlm-only rows are still judged
