#!/usr/bin/env bash
# Shared body of dist_train.sh and dist_test.sh: run the upstream framework's own train.py/test.py for a
# config, in one process (CPU or one GPU) or in NPROC processes through torchrun (GPUs only).
# Usage: launch_upstream.sh {train|test} NPROC CONFIG [ARGS...]
# Everything a user can get wrong is checked here, before the framework's 30 s of set-up, with one line that
# says what to do.
set -euo pipefail
TOOL=$1; NPROC=$2; CONFIG=$3; shift 3
PYTHON=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

fail() { echo "error: $*" >&2; exit 2; }

# require_checkpoint PATH: a local checkpoint (not a URL) must be an existing file
require_checkpoint() {
    case $1 in *://*) return ;; esac
    if [ -d "$1" ]; then
        fail "the checkpoint $1 is a folder; give the path of a .pth file"
    elif [ ! -f "$1" ]; then
        fail "the checkpoint $1 does not exist; give the path of an existing .pth file (or a URL)"
    fi
}

HAS_TORCH='import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c "$HAS_TORCH" 2>/dev/null; then
    hint="run make install to build $ROOT/.venv, then PYTHON=$ROOT/.venv/bin/python"
    if [ -x "$ROOT/.venv/bin/python" ]; then hint="e.g. PYTHON=$ROOT/.venv/bin/python"; fi
    fail "no Python with torch at PYTHON=$PYTHON; point PYTHON at your environment's interpreter ($hint)"
fi
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    fail "the number of processes (GPUs) must be a positive integer, got '$NPROC'"
fi
if [ ! -f "$CONFIG" ]; then fail "the config $CONFIG does not exist; give the path of a config file"; fi
if [ "$TOOL" = test ]; then
    require_checkpoint "${1:-}"
else  # a checkpoint to resume or to load: --resume PATH, --resume=PATH, load_from=PATH in --cfg-options
    previous=
    for arg in "$@"; do
        case $arg in
            --resume=*) require_checkpoint "${arg#--resume=}" ;;
            load_from=None|load_from=) ;;
            load_from=*) require_checkpoint "${arg#load_from=}" ;;
            -*) ;;
            *) if [ "$previous" = --resume ]; then require_checkpoint "$arg"; fi ;;
        esac
        previous=$arg
    done
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
