"""Examples per second of a user's hypothesis property test over simlm's strategies, with and without shape buckets.

The property: for an HMM from ``simlm.strategies.hmms(max_states=5, max_symbols=6)`` and sequences from
``token_sequences(hmm, max_length=8)``, the next-token laws sum to one.  Each new (K, V, T) used to be a
compilation; with shape buckets (``simlm.worlds.buckets``) the shapes fall into a few buckets.  Measured
in one run: the unbucketed baseline (``buckets.LARGEST = 0``, cold: every shape new), then the bucketed
test cold (its first compilations included) and warm (a second run of the same test, fresh examples).
Each run also counts its XLA compilations (a warm run should have none).

What an example costs once nothing compiles: hypothesis drawing the world (a few structure draws per
array — ``simlm.strategies`` builds the rows with numpy), building the HMM, one compiled sampler call and
one compiled law call.  Drawing each probability as a hypothesis float cost ~30 ms an example; the
device calls cost ~1 ms on an idle machine but several under CPU contention (each waits on XLA's threads).

Target: ≥ 50 examples/s warm (not judged in ``--quick``).  Timings are wall time of hypothesis runs
(shrinking is off and no example fails, so every example runs once); noisy under CPU contention — the
load average is printed with them.

    .venv/bin/python benchmarks/property_speed.py [--examples 300]
    .venv/bin/python benchmarks/property_speed.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import numpy as np  # noqa: E402
import jax  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from _common import REPO_ROOT, meets, print_table, write_json  # noqa: E402
from simlm.strategies import hmms, worlds_with_tokens  # noqa: E402
from simlm.worlds import buckets  # noqa: E402

TARGET = 50.0
_COMPILES = [0]


def _count_compile(event: str, _seconds: float, **_kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--examples", type=int, default=300)
    p.add_argument("--baseline-examples", type=int, default=100, help="examples of the unbucketed run")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "property_speed.json"))
    p.add_argument("--quick", action="store_true", help="10 examples each, 5 unbucketed")
    args = p.parse_args(argv)
    if args.quick:
        args.examples, args.baseline_examples = 10, 5
    return args


def property_test(n_examples: int, seed: int):
    """The user's test, as hypothesis runs it: ``(examples run, seconds, XLA compilations)``."""
    count, compiles = [0], _COMPILES[0]

    @settings(max_examples=n_examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(worlds_with_tokens(hmms(max_states=5, max_symbols=6), max_length=8))
    def next_token_laws_sum_to_one(case):
        hmm, x = case
        count[0] += 1
        np.testing.assert_allclose(np.asarray(hmm.next_token_probs(x)).sum(-1), 1.0, atol=1e-5)

    next_token_laws_sum_to_one._hypothesis_internal_use_seed = seed
    start = time.perf_counter()
    next_token_laws_sum_to_one()
    return count[0], time.perf_counter() - start, _COMPILES[0] - compiles


def main(argv=None) -> int:
    args = parse_args(argv)
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    rows = []
    largest = buckets.LARGEST
    buckets.LARGEST = 0  # no shape is padded: the code path before buckets
    try:
        n, s, c = property_test(args.baseline_examples, seed=1)
    finally:
        buckets.LARGEST = largest
    rows.append({"run": "unbucketed, cold", "examples": n, "seconds": s, "examples_per_s": n / s, "compiles": c})
    for run, seed in (("bucketed, cold", 2), ("bucketed, warm", 3)):
        n, s, c = property_test(args.examples, seed=seed)
        rows.append({"run": run, "examples": n, "seconds": s, "examples_per_s": n / s, "compiles": c})
    print_table(rows, ["run", "examples", "seconds", ("examples_per_s", "examples/s"), "compiles"],
                title="hypothesis property test: next-token laws sum to one (K ≤ 5, V ≤ 6, T ≤ 8)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) after the runs: {load:.1f} on {os.cpu_count()} cores")
    warm = rows[-1]["examples_per_s"]
    met = None if args.quick else meets(warm, TARGET)  # 10 examples are a smoke test, not a rate
    print(f"\ntarget ≥ {TARGET:g} examples/s warm: {warm:.1f} → "
          f"{'not judged (--quick)' if met is None else 'met' if met else 'MISSED'} "
          f"(bucketed warm ÷ unbucketed cold: {warm / rows[0]['examples_per_s']:.1f}×)")
    write_json(args.out, {"benchmark": "property_speed", "config": vars(args), "results": rows, "load_average": load,
                          "targets": {"examples_per_s": {"target": TARGET, "value": warm, "met": met}}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
