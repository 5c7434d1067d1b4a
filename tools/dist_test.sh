#!/usr/bin/env bash
# Test with the upstream framework's tools/test.py, found from the config (mmpretrain, mmdet or mmseg).
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# GPUS processes on this machine, one per GPU, or on the CPU where there is no GPU (or with DEVICE=cpu).
# Several machines: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host-of-rank-0 PORT=29500 on each; see
# docs/get_started.md.
if [ $# -lt 3 ]; then echo "usage: $0 CONFIG CHECKPOINT GPUS [ARGS...]" >&2; exit 2; fi
CONFIG=$1; CHECKPOINT=$2; GPUS=$3; shift 3
exec "$(dirname "$0")/launch_upstream.sh" test "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
