#!/usr/bin/env bash
# Multi-host run of one experiment on a Cloud TPU pod slice: the same command on every worker.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh EXPERIMENT WORKDIR [flags]
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh adding /mnt/shared/runs/adding \
#       --config=experiments/adding/config.py:t400
#
# Assumes the repository is checked out and installed (.venv) at REPO_DIR (default ~/seqjax) on
# every worker, and that WORKDIR is a filesystem all workers share (e.g. a Filestore mount).
# SEQJAX_DISTRIBUTED=auto makes each process call jax.distributed.initialize(), which reads the
# pod's topology from the TPU metadata. Rerunning the same command resumes the run.
set -euo pipefail

if [[ $# -lt 2 || -z "${TPU_NAME:-}" || -z "${ZONE:-}" ]]; then
  echo "usage: TPU_NAME=... ZONE=... launch/tpu_pod.sh EXPERIMENT WORKDIR [flags]" >&2
  exit 2
fi
experiment="$1"
workdir="$2"
shift 2
repo_dir="${REPO_DIR:-~/seqjax}"

args=""
for a in "$@"; do args+=" $(printf '%q' "$a")"; done
command="cd ${repo_dir} && SEQJAX_DISTRIBUTED=auto .venv/bin/python -m experiments.${experiment}"
command+=" --workdir $(printf '%q' "${workdir}")${args}"

exec gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all \
  --command "${command}"
