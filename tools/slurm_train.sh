#!/usr/bin/env bash
# Train on a SLURM cluster: srun starts GPUS processes, GPUS_PER_NODE on each machine and one per GPU, each
# running the upstream framework's own tools/train.py (found from the config) with --launcher slurm, from
# which mmengine reads its rank and the first machine's address. The config and arguments are checked here
# first, on the machine you submit from.
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# Environment: GPUS (default 8), GPUS_PER_NODE (default GPUS, at most 8), CPUS_PER_TASK (default 5),
# SRUN_ARGS (more srun options, e.g. "--time=2-00:00:00 --qos=high"), PORT (the port on the first machine;
# mmengine's default is 29500), PYTHON (default python).
set -euo pipefail
if [ $# -lt 4 ]; then echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [ARGS...]" >&2; exit 2; fi
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; WORK_DIR=$4; shift 4
source "$(dirname "$0")/slurm_common.sh"
SCRIPT=$("$PYTHON" -m involution_mm.launch script train "$CONFIG" --work-dir="$WORK_DIR" "$@")
# shellcheck disable=SC2086  # SRUN_ARGS holds several options
exec srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
    "$PYTHON" -u "$SCRIPT" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "$@"
