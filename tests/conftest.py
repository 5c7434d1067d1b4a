"""Shared fixtures and helpers: the reference layouts, running our tools and the upstream ones as a user
would, and checks shared by the test modules."""
import copy
import importlib.util
import json
import logging
import os
import re
import os.path as osp
import subprocess
import sys
from typing import Callable, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn

# Without CUDA the Triton kernels run in Triton's interpreter. Triton defines its standard library
# (tl.sum, tl.cdiv, ...) for the interpreter only when TRITON_INTERPRET=1 is set before its first import,
# and any test module (through torch._dynamo) may import it, so it is set here, before collection.
if not torch.cuda.is_available() and 'triton' not in sys.modules:
    os.environ.setdefault('TRITON_INTERPRET', '1')
# The fused ops' Triton kernels run here: compiled for a GPU, or in the interpreter.
TRITON_RUNS_HERE = importlib.util.find_spec('triton') is not None and (
    torch.cuda.is_available() or os.environ.get('TRITON_INTERPRET') == '1')
needs_triton = pytest.mark.skipif(not TRITON_RUNS_HERE, reason='needs Triton (CUDA, or TRITON_INTERPRET=1)')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Every state-dict key and shape of the original implementation's released models (the fidelity contract
# of DESIGN.md, a copy of the team's reference/official_layouts.json).
LAYOUTS_FILE = osp.join(REPO, 'tests', 'data', 'official_layouts.json')


@pytest.fixture(scope='session')
def official_layouts() -> Dict[str, Dict[str, List[int]]]:
    """Every state-dict key and shape of the original implementation's released models."""
    if not osp.isfile(LAYOUTS_FILE):
        pytest.fail(f'{LAYOUTS_FILE} is missing: it holds the official key layouts the models must match')
    with open(LAYOUTS_FILE) as f:
        return json.load(f)


def state_dict_layout(module, prefix: str = '') -> Dict[str, List[int]]:
    """``{prefix + key: shape}`` of a module's state dict, in the form of official_layouts.json."""
    return {prefix + k: list(v.shape) for k, v in module.state_dict().items()}


def run_command(args: List[str], timeout: int = 1200, env: Dict[str, str] = None) -> str:
    """Run a command from the repo root with this interpreter first on PATH; fail with its output."""
    full_env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + full_env.get('PATH', '')
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited with {proc.returncode}:\n{proc.stdout[-8000:]}')
    return proc.stdout


def parse_test_accuracies(log: str) -> Tuple[float, float]:
    """top-1 and top-5 of the ``Epoch(test)`` line that mmpretrain's test.py prints; fails without one."""
    found = re.search(r'Epoch\(test\).*accuracy/top1: ([\d.]+)\s+accuracy/top5: ([\d.]+)', log)
    if not found:
        pytest.fail(f'no test accuracy in the output:\n{log[-3000:]}')
    return float(found.group(1)), float(found.group(2))


def randomise_norms(model: nn.Module) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters (so that moving an operation across a
    BN changes the output); returns the model in eval mode."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


def mmengine_warnings(action: Callable[[], object]) -> str:
    """The warnings mmengine's current logger emits while ``action`` runs, one per line."""
    from mmengine.logging import MMLogger
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        action()
    finally:
        logger.removeHandler(handler)
    return '\n'.join(messages)


def assert_imagenet_init_skips_only_the_stem_kernel(registry, backbone_cfg, tmp_path) -> nn.Module:
    """Initialise a dense-prediction RedNet-50 (7x7 stem involution) from an ImageNet RedNet-50 checkpoint
    (3x3 stem involution, plus the classifier) through its config's ``Pretrained`` init; check that every
    tensor loads except the two kernel-generating ones of the stem, which are skipped with a warning that
    names them. Returns the initialised backbone."""
    from involution_mm.backbones import RedNet
    torch.manual_seed(0)
    imagenet = RedNet(50, stem_involution_kernel=3).state_dict()
    checkpoint = {f'backbone.{k}': v for k, v in imagenet.items()}
    checkpoint.update({'head.fc.weight': torch.rand(1000, 2048), 'head.fc.bias': torch.rand(1000)})
    path = str(tmp_path / 'rednet50_in1k.pth')
    torch.save(dict(state_dict=checkpoint, meta={}), path)
    backbone_cfg = copy.deepcopy(backbone_cfg)
    backbone_cfg.init_cfg = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    backbone = registry.build(backbone_cfg)
    warning = mmengine_warnings(backbone.init_weights)

    skipped = {'stem.1.conv2.conv.weight', 'stem.1.conv2.conv.bias'}
    for key, value in backbone.state_dict().items():
        if key in skipped:
            assert value.shape[0] == 7 * 7 * 2 and imagenet[key].shape[0] == 3 * 3 * 2
        else:
            assert torch.equal(value, imagenet[key]), key
    assert '2 have another shape there (stem.1.conv2.conv.weight, stem.1.conv2.conv.bias)' in warning, warning
    assert 'are missing' not in warning
    return backbone
