#!/usr/bin/env bash
# Sets up .venv on a fresh machine: torch (CPU build, pinned), pycomp built from source, test tools.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip wheel setuptools 2>&1 | grep -v -i "warning" || true
# torch==2.13.0 is the local CPU build here; an unpinned torch would pull a multi-GB CUDA build.
pip install -q torch==2.13.0 2>&1 | grep -v -i "warning" || true
pip install -q numpy scikit-learn safetensors rich tqdm pyyaml pytest pytest-benchmark ninja "triton==3.9.0" 2>&1 \
  | grep -v -i "warning" || true
# --no-build-isolation: the build must see the torch installed above.
MAX_JOBS="${MAX_JOBS:-2}" pip install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v -i "warning" || true
python -c "import pycomp._C" || { echo "pycomp._C failed to build or import" >&2; exit 1; }
