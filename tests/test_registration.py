"""`import involution_mm` registers into every installed framework and skips only missing ones."""
import subprocess
import sys

import pytest

import involution_mm  # noqa: F401


@pytest.mark.parametrize('framework', ['mmpretrain', 'mmdet', 'mmseg'])
def test_rednet_and_neck_are_registered(framework):
    registry = __import__(f'{framework}.registry', fromlist=['MODELS']).MODELS
    assert registry.get('RedNet') is involution_mm.backbones.RedNet
    if framework != 'mmpretrain':
        assert registry.get('InvolutionFPN') is registry.get('FPN_involution')


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)


def test_a_missing_framework_is_skipped():
    proc = _run('import sys; sys.modules["mmdet"] = None\n'  # find_spec() now reports mmdet as absent
                'import involution_mm\n'
                'from mmpretrain.registry import MODELS\n'
                'assert MODELS.get("RedNet") is not None\n'
                'assert "involution_mm.det" not in sys.modules\n')
    assert proc.returncode == 0, proc.stderr


def test_a_broken_framework_surfaces(tmp_path):
    fake = tmp_path / 'mmseg'
    fake.mkdir()
    (fake / '__init__.py').write_text('raise ImportError("mmseg is broken here")\n')
    proc = _run(f'import sys; sys.path.insert(0, {str(tmp_path)!r})\nimport involution_mm\n')
    assert proc.returncode != 0 and 'mmseg is broken here' in proc.stderr


def test_the_op_imports_with_torch_alone():
    proc = _run('import sys\n'
                'for name in ("mmengine", "mmcv", "mmpretrain", "mmdet", "mmseg"): sys.modules[name] = None\n'
                'import torch, involution_mm\n'
                'x = torch.rand(1, 16, 5, 5); w = torch.rand(1, 1, 3, 3, 5, 5)\n'
                'assert involution_mm.ops.involution(x, w, 1, 1).shape == x.shape\n')
    assert proc.returncode == 0, proc.stderr
