#!/usr/bin/env bash
# One local run of an experiment in a fresh timestamped workdir.
#
#   launch/local.sh EXPERIMENT [--config.key=value ...]
#   launch/local.sh adding --config=experiments/adding/config.py:smoke
#
# The workdir is runs/EXPERIMENT-YYYYmmdd-HHMMSS (RUNS_DIR overrides runs/); the remaining
# arguments go to `python -m experiments.EXPERIMENT` unchanged. To resume a run, rerun the
# experiment with that run's --workdir (see README, "Running experiments").
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: launch/local.sh EXPERIMENT [flags for python -m experiments.EXPERIMENT]" >&2
  exit 2
fi
experiment="$1"
shift

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-${repo}/.venv/bin/python}"
[[ -x "${python}" ]] || python=python3
workdir="${RUNS_DIR:-${repo}/runs}/${experiment}-$(date +%Y%m%d-%H%M%S)"

echo "workdir: ${workdir}" >&2
cd "${repo}"
exec "${python}" -m "experiments.${experiment}" --workdir "${workdir}" "$@"
