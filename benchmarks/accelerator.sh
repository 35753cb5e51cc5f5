#!/usr/bin/env bash
# One prepared run on a machine with an accelerator: the exactness tests that only mean something there
# (products at full float32 — TF32 would be a silent wrong number), then the benchmark suite within a
# time budget.  Everything lands in OUTDIR as it is produced (four files: log, pytest.log, suite.json,
# benchmarks.md), so a run stopped at its limit still returns what it measured.
#
#   bash benchmarks/accelerator.sh OUTDIR [SUITE_BUDGET_SECONDS=420]
#
# Peers that the machine lacks (dynamax, hmmlearn and their dependencies) travel as wheels in .whl/ and are
# installed into /tmp (no network needed); simlm runs from the checkout.
set -uo pipefail
out=${1:?usage: bash benchmarks/accelerator.sh OUTDIR [SUITE_BUDGET_SECONDS]}
budget=${2:-420}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/simlm-peers \
      .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/simlm-peers"
  fi
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  echo "== exactness on this backend"
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_precision.py tests/test_hmm_exact.py \
    tests/test_hmm_parallel.py tests/test_memory.py 2>&1 | tee "$out/pytest.log" | tail -15
  echo "== benchmark suite, budget ${budget} s"
  timeout --kill-after=15 $((budget + 60)) python3 benchmarks/suite.py --budget "$budget" \
    --results /tmp/simlm-results --docs "$out/benchmarks.md"
  cp /tmp/simlm-results/suite.json "$out/suite.json" 2>/dev/null || echo "no suite.json"
  date -u
} 2>&1 | tee "$out/log"
