#!/usr/bin/env bash
# Everything a GPU machine should confirm, in one call: the fast paths' tests on the GPU, the
# speed tables against PyTorch (cuDNN) and flax, and the longest trainable sequences.
#
#   launch/gpu_checks.sh [OUT_DIR]      # default OUT_DIR: runs/gpu-checks-YYYYmmdd-HHMMSS
#
# Writes OUT_DIR/{pytest.log, bench-auto.json, bench-scan.json, bench-pallas.json,
# bench-cudnn.json, longest.json} and prints the tables. Needs jax with CUDA, torch and
# pytest(-xdist).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
out="${1:-${repo}/runs/gpu-checks-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "${out}"
cd "${repo}"
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}" PYTHONUNBUFFERED=1
# Several test processes share the GPU: each takes memory as it goes, not 75% up front. The GPU
# kernels are tested as XLA compiles them by default (the CPU suite lowers the backend's
# optimisation level to compile faster; tests/conftest.py).
SEQJAX_TEST_XLA_OPT=default XLA_PYTHON_CLIENT_PREALLOCATE=false "${python}" -m pytest -q -n 4 -p no:cacheprovider \
  tests/kernels tests/recurrent_test.py \
  > "${out}/pytest.log" 2>&1
echo "GPU tests (exit ${?}): $(tail -1 "${out}/pytest.log")"

bench() {
  local name="$1"; shift
  "${python}" -m experiments.benchmark --json="${out}/${name}.json" "$@" 2>&1 | grep '^|\|note'
}
bench bench-auto                      # what users get: impl='auto'
bench bench-scan --impl=scan --peers=torch
bench bench-pallas --impl=pallas --peers=torch --shapes=64x512x64x64,16x1024x64x64
bench bench-cudnn --impl=cudnn --cells=lstm --dtypes=float32 --peers=torch   # jax.experimental.rnn
"${python}" -m experiments.benchmark --longest=64x1024x1024 --remat --dtypes=float32 \
  --json="${out}/longest-remat.json" 2>&1 | grep 'longest'
"${python}" -m experiments.benchmark --longest=64x1024x1024 --dtypes=float32 \
  --json="${out}/longest.json" 2>&1 | grep 'longest'
echo "results in ${out}"
