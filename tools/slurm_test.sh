#!/usr/bin/env bash
# Test on a SLURM cluster: srun starts GPUS processes, GPUS_PER_NODE on each machine and one per GPU, each
# running the upstream framework's own tools/test.py (found from the config) with --launcher slurm. The
# config, checkpoint and arguments are checked here first, on the machine you submit from.
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# Environment: as tools/slurm_train.sh (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PORT, PYTHON).
set -euo pipefail
if [ $# -lt 4 ]; then echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [ARGS...]" >&2; exit 2; fi
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; CHECKPOINT=$4; shift 4
source "$(dirname "$0")/slurm_common.sh"
SCRIPT=$("$PYTHON" -m involution_mm.launch script test "$CONFIG" "$CHECKPOINT" "$@")
# shellcheck disable=SC2086  # SRUN_ARGS holds several options
exec srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
    "$PYTHON" -u "$SCRIPT" "$CONFIG" "$CHECKPOINT" --launcher=slurm "$@"
