#!/usr/bin/env bash
# Train with the upstream framework's tools/train.py, found from the config (mmpretrain, mmdet or mmseg).
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args...]   (GPUS=1 also runs on a CPU-only machine)
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG GPUS [ARGS...]" >&2; exit 2; fi
CONFIG=$1; GPUS=$2; shift 2
exec "$(dirname "$0")/launch_upstream.sh" train "$GPUS" "$CONFIG" "$@"
