#!/usr/bin/env bash
# Shared body of dist_train.sh and dist_test.sh: run the upstream framework's own train.py/test.py for a
# config, in one process (CPU or one GPU) or in NPROC processes through torchrun (GPUs only).
# Usage: launch_upstream.sh {train|test} NPROC CONFIG [ARGS...]
set -euo pipefail
TOOL=$1; NPROC=$2; CONFIG=$3; shift 3
PYTHON=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: the number of processes (GPUs) must be a positive integer, got '$NPROC'" >&2; exit 2
fi
SCRIPT=$("$PYTHON" -m involution_mm.upstream "$TOOL" "$CONFIG")
if [ "$NPROC" -eq 1 ]; then
    exec "$PYTHON" "$SCRIPT" "$CONFIG" "$@" --launcher none
fi
GPUS_HERE=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
if [ "$GPUS_HERE" -lt "$NPROC" ]; then
    echo "error: $NPROC processes need $NPROC GPUs, this machine has $GPUS_HERE; on CPU use 1" >&2; exit 2
fi
exec "$PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
    "$SCRIPT" "$CONFIG" "$@" --launcher pytorch
