#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, each part's output also written to OUT_DIR/<part>.log:
#   tests   the op tests, CUDA ones included (test_ops_cuda.py skips nothing when CUDA and CuPy are there)
#   op      tools/benchmark.py at the RedNet-50 stage shapes, batch 64, float16 and float32, with the tiling sweep
#   models  tools/benchmark_models.py, RedNet-50 against ResNet-50, contiguous, then channels_last with a profile
#
#   tools/cuda_checks.sh OUT_DIR [tests] [op] [models]      # default: all three
#
# Where mmengine is not installed and .whl/ holds the wheels of tools/device_wheels.sh, they are installed
# into a scratch folder first (no network needed).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/cuda_checks.sh OUT_DIR [tests] [op] [models]}
shift
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(tests op models)
for part in "${parts[@]}"; do
    case $part in tests | op | models) ;; *) echo "unknown part '$part': choose tests, op or models" >&2; exit 2 ;; esac
done
mkdir -p "$out"
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import mmengine' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/involution_site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/involution_site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
"$PYTHON" - <<'EOF' 2>&1 | tee "$out/versions.log"
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())
import cupy
print('cupy', cupy.__version__)
EOF

status=0
for part in "${parts[@]}"; do
    case $part in
    tests)
        "$PYTHON" -m pytest -q -rs tests/test_ops_cuda.py tests/test_cuda_kernels.py tests/test_ops.py ;;
    op)
        for dtype in float16 float32; do
            "$PYTHON" tools/benchmark.py --device cuda --batch 64 --dtype "$dtype" --tiling
        done ;;
    models)
        "$PYTHON" tools/benchmark_models.py --batch 64 256 --dtype float32 float16 &&
            "$PYTHON" tools/benchmark_models.py --batch 64 256 --dtype float32 float16 --channels-last --profile ;;
    esac 2>&1 | tee "$out/$part.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
exit $status
