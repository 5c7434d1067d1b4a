#!/usr/bin/env bash
# Shared body of dist_train.sh and dist_test.sh: find a Python with torch, then hand over to
# involution_mm/launch.py, which checks the config and arguments in seconds (one line and exit status 2 for
# anything wrong) and starts the upstream framework's own train.py/test.py: in one process, or in NPROC
# processes on this machine (on each of NNODES machines) through torchrun, on GPUs or on the CPU.
# Usage: launch_upstream.sh {train|test} NPROC CONFIG [CHECKPOINT] [ARGS...]
# Environment: PYTHON (default python), NNODES, NODE_RANK, MASTER_ADDR, PORT or MASTER_PORT, DEVICE
# (auto, cpu or cuda); see docs/get_started.md.
set -euo pipefail
TOOL=$1; NPROC=$2; shift 2
PYTHON=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

HAS_TORCH='import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c "$HAS_TORCH" 2>/dev/null; then
    hint="run make install to build $ROOT/.venv, then PYTHON=$ROOT/.venv/bin/python"
    if [ -x "$ROOT/.venv/bin/python" ]; then hint="e.g. PYTHON=$ROOT/.venv/bin/python"; fi
    echo "error: no Python with torch at PYTHON=$PYTHON; point PYTHON at your environment's interpreter ($hint)" >&2
    exit 2
fi
# The quickest checks again here, so that these mistakes are told in a second (the same messages).
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: the number of processes (GPUs) must be a positive integer, got '$NPROC'" >&2; exit 2
fi
if [ ! -f "${1:-}" ]; then echo "error: the config ${1:-} does not exist; give the path of a config file" >&2; exit 2; fi
if [ "$TOOL" = test ] && [[ "${2:-}" != *://* ]]; then
    if [ -d "${2:-}" ]; then echo "error: the checkpoint $2 is a folder; give the path of a .pth file" >&2; exit 2; fi
    if [ ! -f "${2:-}" ]; then
        echo "error: the checkpoint ${2:-} does not exist; give the path of an existing .pth file (or a URL)" >&2
        exit 2
    fi
fi
exec "$PYTHON" -m involution_mm.launch "$TOOL" "$NPROC" "$@"
