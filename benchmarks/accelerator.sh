#!/usr/bin/env bash
# One prepared run on a machine with an accelerator: the exactness tests that only mean something there
# (products at full float32 — TF32 would be a silent wrong number; the fused attention kernel against the
# einsum path), then the benchmark suite in the time that is left.  Everything lands in OUTDIR as it is
# produced (four files: log, pytest.log, suite.json, benchmarks.md; the suite rewrites the last two after
# every entry), so a run stopped at its limit still returns what it measured.
#
#   bash benchmarks/accelerator.sh OUTDIR [TOTAL_SECONDS=540 [TEST_SECONDS=150 [ENTRY_SECONDS=3600 [ENTRIES]]]]
#
# TOTAL_SECONDS bounds the whole script (tests ≤ TEST_SECONDS, the suite gets the rest less 30 s for the
# start-up and the copy, one script at most ENTRY_SECONDS of it); keep it under the limit of whatever runs
# the script.  ENTRIES (quoted, space-separated suite entries, e.g. "experiment1") runs only those: one
# 600-s call cannot hold every accelerator row (docs/benchmarks.md says which call measures which).  Peers
# that the machine lacks (dynamax, hmmlearn and their dependencies) travel as wheels in .whl/ — fetched
# beforehand where there is a network by `bash benchmarks/fetch_wheels.sh` (.whl/ is git-ignored: carry it)
# — and are installed into /tmp (no network needed); a flax ≥ 0.12 in .whl/fallback/ is used only where the
# machine's own cannot import simlm; simlm runs from the checkout.
set -uo pipefail
out=$(mkdir -p "${1:?usage: bash benchmarks/accelerator.sh OUTDIR [TOTAL_SECONDS [TEST_SECONDS [ENTRY_SECONDS]]]}" && cd "$1" && pwd)
total=${2:-540}
tests=${3:-150}  # seconds for the exactness tests
entry=${4:-3600}  # seconds for one benchmark script at most
only=${5:-}  # suite entries to run (all, in plan order, when empty)
py=${PYTHON:-python3}  # the interpreter (PYTHON=.venv/bin/python to try it on a CPU checkout)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/simlm-peers \
      .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/simlm-peers"
  fi
  "$py" -c "import dynamax.hidden_markov_model, hmmlearn.hmm; print('peers: dynamax, hmmlearn import')" ||
    echo "!! dynamax or hmmlearn does not import: the worlds and filters rows will have no peer"
  "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"
  # simlm needs flax ≥ 0.12 (NNX); where the machine's flax cannot build a model and run it, the carried one
  smoke="import flax, jax.numpy as jnp; from simlm.models import TransformerConfig, init_transformer
m = init_transformer(TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=4), 0)
assert bool(jnp.isfinite(m(jnp.zeros((1, 4), jnp.int32))).all()); print('flax', flax.__version__, 'runs simlm')"
  if ! "$py" -c "$smoke" && ls .whl/fallback/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/simlm-fallback \
      .whl/fallback/*.whl && export PYTHONPATH="/tmp/simlm-fallback:$PYTHONPATH" && "$py" -c "$smoke"
  fi
  echo "== exactness on this backend"
  if [ "$tests" -gt 0 ]; then
    timeout "$tests" "$py" -m pytest -q -p no:cacheprovider tests/test_attention_kernels.py tests/test_precision.py \
      tests/test_hmm_exact.py tests/test_hmm_parallel.py tests/test_memory.py 2>&1 | tee "$out/pytest.log" | tail -15
    code=${PIPESTATUS[0]}  # the tests' own status (the pipe's is tail's): a failure or a cut run is said below
    case $code in
      0) exactness="all passed" ;;
      124) exactness="cut by the ${tests}-s bound (exit 124): not all ran" ;;
      *) exactness="FAILED (pytest exit $code): see pytest.log" ;;
    esac
  else
    exactness="not run (TEST_SECONDS = 0)"
  fi
  echo "exactness: $exactness"
  export SIMLM_EXACTNESS="$exactness"  # suite.py writes it into suite.json and the table's header
  budget=$((total - SECONDS - 30)); budget=$((budget < 0 ? 0 : budget))
  echo "== benchmark suite, budget ${budget} s"
  # shellcheck disable=SC2086  # ENTRIES is a list of words
  timeout --kill-after=10 $((budget + 20)) "$py" benchmarks/suite.py --budget "$budget" \
    --timeout "$entry" --results /tmp/simlm-results --summary "$out/suite.json" --docs "$out/benchmarks.md" \
    ${only:+--only $only}
  date -u
} 2>&1 | tee "$out/log"
