"""SimAM backbones: upstream keys and parameter counts, output shapes, and SimAM where the paper puts it."""
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope

import involution_mm  # noqa: F401  (registers the models)
from involution_mm.layers import SimAM
from conftest import randomise_norms
from test_simam_layer import simam_reference

# model -> (backbone cfg, the plain upstream backbone, feature channels, published parameters in M)
CLASSIFIERS = {
    'simam-resnet18': (dict(type='SimAMResNet', depth=18), dict(type='ResNet', depth=18), 512, 11.69),
    'simam-resnet34': (dict(type='SimAMResNet', depth=34), dict(type='ResNet', depth=34), 512, 21.80),
    'simam-resnet50': (dict(type='SimAMResNet', depth=50), dict(type='ResNet', depth=50), 2048, 25.56),
    'simam-resnet101': (dict(type='SimAMResNet', depth=101), dict(type='ResNet', depth=101), 2048, 44.55),
    'simam-resnext50': (dict(type='SimAMResNeXt', depth=50, groups=32, width_per_group=4),
                        dict(type='ResNeXt', depth=50, groups=32, width_per_group=4), 2048, 25.03),
    'simam-mobilenetv2': (dict(type='SimAMMobileNetV2'), dict(type='MobileNetV2'), 1280, 3.50),
}


def build(scope: str, cfg: dict) -> nn.Module:
    init_default_scope(scope)
    return __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS.build(cfg)


def classifier(backbone: dict, channels: int) -> dict:
    return dict(type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=1000, in_channels=channels))


def call_trace(model: nn.Module, x: torch.Tensor) -> List[Tuple[str, torch.Tensor]]:
    """(module name, a copy of its input) for every module call of ``model(x)``, in call order."""
    calls = []
    handles = [module.register_forward_pre_hook(
        lambda _, args, name=name: calls.append((name, args[0].detach().clone())))
        for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def assert_simam_between(model: nn.Module, x: torch.Tensor, pairs: Dict[str, Tuple[str, str]]) -> None:
    """Each SimAM (by name) runs on the raw output of the first module of its pair and feeds the second."""
    calls = call_trace(model, x)
    names = [name for name, _ in calls]
    modules = dict(model.named_modules())
    for simam, (conv, norm) in pairs.items():
        assert names.count(simam) == 1, simam
        at = names.index(simam)
        assert names[at - 1] == conv and names[at + 1] == norm, names[at - 2:at + 3]
        conv_output = nn.Conv2d.forward(modules[conv], calls[at - 1][1])  # the conv without its hooks
        torch.testing.assert_close(calls[at][1], conv_output)
        expected = simam_reference(calls[at][1], modules[simam].e_lambda).float()
        torch.testing.assert_close(calls[at + 1][1], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('model', CLASSIFIERS)
def test_parameters_and_keys_are_the_upstream_ones(model):
    backbone, plain, channels, published = CLASSIFIERS[model]
    ours = build('mmpretrain', classifier(backbone, channels))
    upstream = build('mmpretrain', classifier(plain, channels))
    count = sum(p.numel() for p in ours.parameters())
    assert round(count / 1e6, 2) == published
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in upstream.state_dict().items()}
    assert ours.backbone.e_lambda == 0.1


@pytest.mark.parametrize('depth, channels', [(18, (64, 128, 256, 512)), (50, (256, 512, 1024, 2048))])
def test_resnet_output_shapes_and_placement(depth, channels):
    backbone = build('mmpretrain', dict(type='SimAMResNet', depth=depth, out_indices=(0, 1, 2, 3), e_lambda=0.2))
    backbone.eval()
    randomise_norms(backbone)
    x = torch.randn(2, 3, 64, 64)
    outputs = backbone(x)
    assert [tuple(o.shape) for o in outputs] == [(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate(channels)]
    blocks = {f'{layer}.{i}': block for layer in backbone.res_layers
              for i, block in enumerate(getattr(backbone, layer))}
    assert sum(isinstance(m, SimAM) for m in backbone.modules()) == len(blocks)
    assert all(block.simam.e_lambda == 0.2 for block in blocks.values())
    # listed where it runs, and run there: conv2 -> SimAM -> bn2 in every block
    assert all(list(dict(block.named_children()))[2:5] == ['conv2', 'simam', 'bn2'] for block in blocks.values())
    assert_simam_between(backbone, x[:1], {f'{name}.simam': (f'{name}.conv2', f'{name}.bn2') for name in blocks})


def test_resnext_places_simam_after_the_grouped_conv():
    backbone = build('mmpretrain', dict(type='SimAMResNeXt', depth=50, groups=32, width_per_group=4))
    backbone.eval()
    randomise_norms(backbone)
    x = torch.randn(1, 3, 64, 64)
    assert backbone(x)[-1].shape == (1, 2048, 2, 2)
    first = backbone.layer1[0]
    assert first.conv2.groups == 32 and first.simam.in_channels == 128
    names = [f'{layer}.{i}' for layer in backbone.res_layers for i in range(len(getattr(backbone, layer)))]
    assert_simam_between(backbone, x,
                         {f'{n}.simam': (f'{n}.conv2', f'{n}.bn2') for n in names})


def test_mobilenet_v2_places_simam_after_every_depthwise_conv_only():
    backbone = build('mmpretrain', dict(type='SimAMMobileNetV2', out_indices=(1, 2, 4, 7)))
    backbone.eval()
    randomise_norms(backbone)
    x = torch.randn(1, 3, 64, 64)
    assert [tuple(o.shape) for o in backbone(x)] == [(1, 24, 16, 16), (1, 32, 8, 8), (1, 96, 4, 4),
                                                   (1, 1280, 2, 2)]
    simams = [name for name, m in backbone.named_modules() if isinstance(m, SimAM)]
    assert len(simams) == 17  # one per inverted residual block
    pairs = {}
    for name in simams:
        owner = backbone.get_submodule(name.rsplit('.', 1)[0])
        assert owner.conv.groups == owner.conv.in_channels > 1  # depthwise
        pairs[name] = (name.replace('simam', 'conv'), name.replace('simam', 'bn'))
    assert not any(isinstance(m, SimAM) for m in backbone.conv1.modules())
    assert not any(isinstance(m, SimAM) for m in backbone.conv2.modules())
    assert_simam_between(backbone, x, pairs)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_det_and_seg_simam_resnet_follow_the_paper(scope):
    for depth in (18, 50):  # the upstream BasicBlock takes no plugins; this backbone has SimAM there too
        backbone = build(scope, dict(type='SimAMResNet', depth=depth))
        plain = build(scope, dict(type='ResNet', depth=depth))
        assert {k: v.shape for k, v in backbone.state_dict().items()} == \
            {k: v.shape for k, v in plain.state_dict().items()}
        backbone.eval()
        randomise_norms(backbone)
        x = torch.randn(1, 3, 64, 64)
        assert backbone(x)[-1].shape[1] == (512 if depth == 18 else 2048)
        names = [f'{layer}.{i}' for layer in backbone.res_layers for i in range(len(getattr(backbone, layer)))]
        assert_simam_between(backbone, x, {f'{n}.simam': (f'{n}.conv2', f'{n}.bn2') for n in names})


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_the_plugin_route_runs_simam_after_bn2_and_relu(scope):
    """The documented difference: upstream after_conv2 plugins run on relu(bn2(conv2(x)))."""
    plugins = [dict(cfg=dict(type='SimAM', e_lambda=0.1), stages=(True, True, True, True),
                    position='after_conv2')]
    backbone = build(scope, dict(type='ResNet', depth=50, plugins=plugins))
    backbone.eval()
    names = [name for name, _ in call_trace(backbone, torch.randn(1, 3, 32, 32))]
    at = names.index('layer1.0.simam')
    assert names[at - 3:at + 2] == ['layer1.0.conv2', 'layer1.0.bn2', 'layer1.0.relu', 'layer1.0.simam',
                                    'layer1.0.conv3']
    with pytest.raises(ValueError, match='SimAM would run twice'):
        build(scope, dict(type='SimAMResNet', depth=50, plugins=plugins))


def test_simam_survives_syncbn_conversion_and_deepcopy():
    import copy
    backbone = build('mmpretrain', dict(type='SimAMResNet', depth=18))
    backbone.eval()
    x = torch.randn(1, 3, 32, 32)
    reference = backbone(x)[-1]
    clone = copy.deepcopy(backbone)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(backbone))  # replaces every BN
    assert isinstance(converted.layer1[0].bn2, nn.SyncBatchNorm)
    for other in (clone, converted):
        assert other.layer1[0].simam is not backbone.layer1[0].simam
        names = [name for name, _ in call_trace(other, x)]
        assert names.count('layer1.0.simam') == 1 and names.index('layer1.0.simam') == \
            names.index('layer1.0.conv2') + 1
    torch.testing.assert_close(clone(x)[-1], reference)
