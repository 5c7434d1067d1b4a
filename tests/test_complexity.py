"""tools/analysis_tools/get_flops.py: RedNet FLOPs and parameters against the published table."""
import os.path as osp
import sys

import pytest
import torch

from conftest import REPO
from involution_mm.backbones import RedNet
from involution_mm.complexity import model_complexity
from involution_mm.layers import Involution

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
from get_flops import complexity_of_config  # noqa: E402

PUBLISHED = {26: (1.73, 9.23), 38: (2.22, 12.39), 50: (2.71, 15.54), 101: (4.74, 25.65), 152: (6.79, 33.99)}


@pytest.mark.parametrize('depth', sorted(PUBLISHED))
def test_rednet_flops_and_params_match_the_paper(depth):
    config = osp.join(REPO, f'configs/rednet/rednet{depth}_64xb32-warmup-coslr-130e_in1k.py')
    result = complexity_of_config(config)
    gflops, mparams = PUBLISHED[depth]
    assert abs(result['flops'] / 1e9 / gflops - 1) < 0.03
    assert abs(result['params'] / 1e6 - mparams) < 0.01


@pytest.mark.parametrize('config,gflops,mparams', [
    ('configs/involution_det/faster-rcnn_rednet50-involution-fpn_1x_coco.py', 135.0, 29.5),
    ('configs/involution_seg/fpn_rednet50-involution-neck_4xb2-80k_cityscapes-512x1024.py', 205.2, 16.4),
])
def test_dense_prediction_flops_match_the_published_tables(config, gflops, mparams):
    """At the input shapes the tables used (mmdet 2.x: 1280x800; mmseg 0.x: 2048x1024)."""
    result = complexity_of_config(osp.join(REPO, config))
    assert abs(result['flops'] / 1e9 / gflops - 1) < 0.03
    assert abs(result['trainable_params'] / 1e6 - mparams) < 0.1


def test_the_involution_handle_counts_every_aggregation():
    model = RedNet(26).eval()
    expected = 0

    def count(module, inputs, output):
        nonlocal expected
        expected += output.numel() * module.kernel_size**2

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, Involution)]
    x = torch.rand(1, 3, 96, 64)
    model(x)
    for hook in hooks:
        hook.remove()
    result = model_complexity(model, (x, ))
    assert result['by_operator']['involution'] == expected > 0
    assert 'involution_mm::involution' not in result['uncounted']
