#!/usr/bin/env bash
# Collect in .whl/ the wheels a GPU machine with torch but no OpenMMLab packages (and no network) needs to
# run benchmarks/models.py and the model tests: pure-Python mmengine and mmpretrain, mmcv built without
# its compiled ops (it installs as mmcv-lite and imports as mmcv; RedNet and ResNet use only mmcv.cnn), and
# the small packages they import. Run here, where pip reaches PyPI; on the GPU machine:
#
#   pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=.whl
PY_VERSION=${PY_VERSION:-3.12}
mkdir -p "$OUT"

# Pure-Python wheels (any Python 3): the OpenMMLab packages and what they import beyond a torch image.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" -d "$OUT" \
    mmengine==0.10.7 mmpretrain==1.2.0 addict yapf platformdirs termcolor mat4py model-index ordered-set \
    "importlib-metadata<9" setuptools==80.9.0
# (importlib-metadata 9 and later import lazy_importer; mmengine imports pkg_resources, gone from setuptools 81)

# mmcv 2.1.0 ships only a source archive for Python 3.12; built with MMCV_WITH_OPS=0 it is pure Python.
if ! ls "$OUT"/mmcv_lite-2.1.0-*.whl >/dev/null 2>&1; then
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$build" mmcv==2.1.0
    MMCV_WITH_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$OUT" \
        "$build"/mmcv-2.1.0.tar.gz
fi
ls "$OUT"
du -sh "$OUT"
