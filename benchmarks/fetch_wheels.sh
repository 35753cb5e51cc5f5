#!/usr/bin/env bash
# Fetch, where there is a network, the wheels benchmarks/accelerator.sh installs on a GPU machine that has none:
# the peers the machine lacks (dynamax and its dependencies, hmmlearn) for its Python (3.12, x86-64 Linux), and
# the flax it falls back on where the machine's own cannot import simlm.  Into .whl/ (git-ignored: name it in
# the device tool's `carry`).
#
#   bash benchmarks/fetch_wheels.sh [PYTHON_VERSION=3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
py=${PYTHON:-python3}
common=(--quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
# Every version pinned, into an empty .whl/: accelerator.sh installs .whl/*.whl in one pip call, and two
# versions of one package there (a later day's tfp-nightly beside an earlier one) make pip refuse them all.
rm -rf .whl
"$py" -m pip download "${common[@]}" -d .whl dynamax==1.0.3 hmmlearn==0.3.3 tfp-nightly==0.26.0.dev20261027 \
  dm-tree==0.1.10 decorator==5.3.2 gast==0.7.0 fastprogress==1.0.3 threadpoolctl==3.8.0
"$py" -m pip download "${common[@]}" -d .whl/fallback flax==0.12.8
ls .whl .whl/fallback
