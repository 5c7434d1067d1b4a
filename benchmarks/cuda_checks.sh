#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, each part's output also written to OUT_DIR/<part>.log:
#   tests   the op tests, CUDA ones included (test_ops_cuda.py skips nothing when CUDA and CuPy are there), the
#           fused layer's and SimAM's (tests/test_fused_involution.py, tests/test_simam_fused.py: float32 with TF32
#           as users run it, float16 and bfloat16 over every case) and the self-check's (tests/test_self_check.py:
#           TF32 switches, strided bias, 64-bit kernel-gradient offsets, fault injection, a CUDA-graph capture
#           without warm-up in a fresh process)
#   verdict each default fast path's self-check on this GPU (fused involution, SimAM, CuPy op; float16,
#           bfloat16, float32 as run: TF32 by default) and its time against the path it replaces, at the
#           RedNet-50 and SimAM-ResNet-50 shapes (benchmarks/self_check_verdict.py): what decides the defaults
#   op      the CuPy kernels at the RedNet-50 stage shapes, batch 64 and 256, float16 and float32 (issue 13's figures:
#           benchmarks/op.py --kernels): forward, input- and weight-gradient shares of the bandwidth bound,
#           contiguous and channels_last, their time ratio, and float32 forward+backward against the original
#           CuPy kernel's formulation
#   op-tiling  (only when named) every tiling of the CuPy kernels at each stage, batch 64 and 256, float16 and
#           float32, both layouts; prints the tuning table for involution_mm/ops/cuda_tiling.py
#   models  benchmarks/models.py, RedNet-50 against ResNet-50, contiguous, then channels_last with a profile
#   simam   SimAM-ResNet-50 against ResNet-50, eager, both layouts, float32 and float16, batch 64 and 256, and a
#           profile of its channels_last float16 step
#   simam-compiled  the same comparison under torch.compile (each model compiles 8 times: expect minutes)
#   fused   the fused involution layer against the unfused one at every RedNet-50 involution shape, float16, batch
#           64 and 256, contiguous and channels_last (benchmarks/op.py --layer: issue 14's layer targets)
#   rednet  RedNet-50 (fused layers) against ResNet-50, float16, batch 256, eager and compiled, both layouts,
#           then each model's best mode and the memory ratios (benchmarks/best_modes.py: issue 14's model targets)
#   latency the op at batch 1 (benchmarks/op.py --latency): per-call host time and latency against F.conv2d,
#           float16 and float32 (issue 12)
#   compile RedNet-50 against ResNet-50, float16, batch 1, 64 and 256, eager, torch.compile and its CUDA-graph
#           mode (reduce-overhead), in each of COMPILE_LAYOUTS (default: contiguous channels_last; name one per
#           device call if both do not fit in 10 minutes) (issue 12)
#   fused-sweep  (only when named) every tile configuration of each fused kernel at stages 1, 2 (stride 2)
#           and 4, channels_last, to re-tune involution_mm/ops/triton/involution_tiles.py
#
#   benchmarks/cuda_checks.sh OUT_DIR [tests] [verdict] [op] [models] [simam] [simam-compiled] [fused] [rednet]
#                                [fused-sweep] [op-tiling]
#   (default: all but fused-sweep and op-tiling; one device call of 10 minutes fits "fused rednet", not all of them)
#
# Where mmengine is not installed and .whl/ holds the wheels of benchmarks/device_wheels.sh, they are installed
# into a scratch folder first (no network needed).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/cuda_checks.sh OUT_DIR [PART ...], parts listed at the top of this file}
shift
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(tests verdict op models simam simam-compiled fused rednet latency compile)
for part in "${parts[@]}"; do
    case $part in tests | verdict | op | op-tiling | models | simam | simam-compiled | fused | rednet | latency | \
        compile | fused-sweep) ;;
    *) echo "unknown part '$part': choose tests, verdict, op, op-tiling, models, simam, simam-compiled, fused," \
            "rednet, latency, compile or fused-sweep" >&2
       exit 2 ;; esac
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
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton: not installed (SimAM runs its PyTorch formula)')
import cupy
print('cupy', cupy.__version__)
EOF

status=0
for part in "${parts[@]}"; do
    case $part in
    tests)
        "$PYTHON" -m pytest -q -rs tests/test_ops_cuda.py tests/test_cuda_kernels.py tests/test_ops.py \
            tests/test_op_registration.py tests/test_fused_involution.py tests/test_simam_fused.py \
            tests/test_self_check.py ;;
    verdict)
        "$PYTHON" benchmarks/self_check_verdict.py --device cuda --batch 32 ;;
    latency)
        for dtype in float16 float32; do
            "$PYTHON" benchmarks/op.py --latency --device cuda --dtype "$dtype" --repeats 50 || exit 1
        done ;;
    compile)
        "$PYTHON" benchmarks/models.py --model rednet50 --batch 1 64 256 --dtype float16 \
            --layout ${COMPILE_LAYOUTS:-contiguous channels_last} --mode eager compiled reduce-overhead ;;
    op)
        "$PYTHON" benchmarks/op.py --device cuda --kernels --batch 64 256 --dtype float16 float32 ;;
    op-tiling)
        "$PYTHON" benchmarks/op.py --device cuda --tiling --batch 64 256 --dtype float16 float32 ;;
    models)
        "$PYTHON" benchmarks/models.py --batch 64 256 --dtype float32 float16 &&
            "$PYTHON" benchmarks/models.py --batch 64 256 --dtype float32 float16 --channels-last --profile ;;
    simam)
        "$PYTHON" benchmarks/models.py --model simam-resnet50 --batch 64 256 --dtype float32 float16 \
            --layout contiguous channels_last &&
            "$PYTHON" benchmarks/models.py --model simam-resnet50 --batch 256 --dtype float16 \
                --layout channels_last --iterations 5 --profile ;;
    simam-compiled)
        "$PYTHON" benchmarks/models.py --model simam-resnet50 --batch 64 256 --dtype float32 float16 \
            --layout contiguous channels_last --mode compiled --warmup 2 ;;
    fused)
        "$PYTHON" benchmarks/op.py --layer --device cuda --batch 64 256 --dtype float16 &&
            "$PYTHON" benchmarks/op.py --layer --device cuda --batch 64 256 --dtype float16 --channels-last ;;
    rednet)
        "$PYTHON" benchmarks/models.py --model rednet50 --batch 256 --dtype float16 \
            --layout contiguous channels_last --mode eager compiled --warmup 2 | tee "$out/rednet-table.log" &&
            "$PYTHON" benchmarks/best_modes.py "$out/rednet-table.log" ;;
    fused-sweep)
        "$PYTHON" benchmarks/op.py --layer --device cuda --batch 64 --dtype float16 --channels-last --sweep \
            --layers 1 '2 s2' 4 ;;
    esac 2>&1 | tee "$out/$part.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
exit $status
