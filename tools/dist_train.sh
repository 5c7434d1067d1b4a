#!/usr/bin/env bash
# Train with the upstream framework's tools/train.py, found from the config (mmpretrain, mmdet or mmseg).
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args...]
# GPUS processes on this machine, one per GPU, or on the CPU where there is no GPU (or with DEVICE=cpu).
# Several machines: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host-of-rank-0 PORT=29500 on each; see
# docs/get_started.md.
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG GPUS [ARGS...]" >&2; exit 2; fi
CONFIG=$1; GPUS=$2; shift 2
exec "$(dirname "$0")/launch_upstream.sh" train "$GPUS" "$CONFIG" "$@"
