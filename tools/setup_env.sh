#!/usr/bin/env bash
# Build the verified involution-mm stack (README.md, docs/get_started.md) in ./.venv and install this
# package in editable mode. Idempotent: a second run only checks versions. The first run on a machine builds
# mmcv 2.1.0 with ops from source (about 35 min on 2 cores); pip caches that wheel, so later fresh
# environments take a few minutes (mostly the torch download).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PIP_CONSTRAINT="$PWD/tools/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
# have NAME==VERSION...: true when every distribution is installed at that version (local tags ignored)
have() { "$VENV/bin/python" - "$@" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, want = spec.split('==')
    try:
        found = version(name).split('+')[0]
    except PackageNotFoundError:
        sys.exit(1)
    if want != '*' and found != want:
        sys.exit(1)
PYEOF
}

# torch===2.13.0 (exact string) skips the machine's local CPU-only wheel, which has no torchvision.
if ! have torch==2.13.0 torchvision==0.28.0 numpy==1.26.4 opencv-python==4.11.0.86 mmengine==0.10.7; then
    echo "[setup] installing torch 2.13.0, torchvision 0.28.0, mmengine 0.10.7"
    pip install -q "torch===2.13.0" "torchvision==0.28.0" "mmengine==0.10.7" numpy opencv-python
fi
if ! have mmcv==2.1.0; then
    # mmcv's setup.py needs pkg_resources and torch in the build env, and builds with setuptools<70.
    echo "[setup] building mmcv 2.1.0 with ops (first time ~35 min; pip caches the wheel)"
    pip install -q "setuptools==69.5.1" "wheel==0.45.1" "ninja==1.13.0"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip install --no-build-isolation "mmcv==2.1.0"
fi
# torch wants setuptools>=77; mmengine and openmim import pkg_resources, which setuptools 81 removed.
if ! have setuptools==80.9.0; then
    pip install -q "setuptools==80.9.0"
fi
if ! have mmpretrain==1.2.0 mmdet==3.3.0 mmsegmentation==1.2.2 ftfy==* regex==* pytest==8.3.5; then
    echo "[setup] installing mmpretrain 1.2.0, mmdet 3.3.0, mmsegmentation 1.2.2, pytest"
    pip install -q "mmpretrain==1.2.0" "mmdet==3.3.0" "mmsegmentation==1.2.2" ftfy regex "pytest==8.3.5"
fi
if ! have openmim==0.3.9 click==* model-index==* pandas==2.2.3 tabulate==*; then
    # Without opendatalab/openxlab, which would downgrade setuptools, requests and rich; mim train/test
    # do not need them (they only serve dataset downloads).
    echo "[setup] installing openmim 0.3.9"
    pip install -q --no-deps "openmim==0.3.9"
    pip install -q click colorama model-index pandas requests rich tabulate
fi
if ! have nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37; then
    # SASS disassembler for benchmarks/kernel_report.py and its test (about 6 MB; no GPU needed)
    echo "[setup] installing cuobjdump and nvdisasm 13.5"
    pip install -q "nvidia-cuda-cuobjdump==13.5.37" "nvidia-cuda-nvdisasm==13.5.37"
fi
if ! have onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0; then
    # the deploy extra: ONNX export (tools/deployment/export_onnx.py) and its check on ONNX Runtime
    echo "[setup] installing onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.32.0"
    pip install -q "onnx==1.23.2" "onnxscript==0.7.2" "onnxruntime==1.32.0"
fi
# cpu_kernels_stale: true when the compiled CPU kernels (setup.py) are missing or older than their sources
cpu_kernels_stale() {
    local built
    built=$(ls involution_mm/ops/_involution_cpu*.so 2>/dev/null | head -n 1)
    [ -z "$built" ] || [ -n "$(find involution_mm/ops/csrc setup.py -newer "$built" -print -quit)" ]
}
if ! have involution-mm==* || cpu_kernels_stale; then
    # editable: the CPU kernels are compiled in place, next to the sources (about a minute on 2 cores)
    echo "[setup] installing involution-mm (editable; compiles the CPU kernels)"
    MAX_JOBS=${MAX_JOBS:-2} pip install -q --no-deps --no-build-isolation -e .
fi
"$VENV/bin/python" - <<'PYEOF'
import mmcv, mmdet, mmengine, mmpretrain, mmseg, torch, torchvision
from mmcv.ops import nms  # noqa: F401  (the compiled ops are there)
print(f'[setup] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}, mmdet {mmdet.__version__}, '
      f'mmseg {mmseg.__version__}')
from involution_mm.ops import cpu_backend
kernels = cpu_backend.kernels_module()
print(f'[setup] involution-mm CPU kernels: {kernels.isa()} (of {", ".join(kernels.isas())})' if kernels else
      f'[setup] warning: involution-mm CPU kernels not built ({cpu_backend.LOAD_ERROR}); CPU tensors run the '
      'PyTorch backend')
PYEOF
