"""Model and layer arguments (issue 24): Pretrained init in every form, SimAM modules that can be replaced,
and arguments refused in the user's terms where they enter (RedNet, InvolutionFPN, the involution heads,
SimAM, the op)."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope

import involution_mm  # noqa: F401  (registers the models)
from involution_mm.backbones import RedNet, insert_simam_after
from involution_mm.checkpoint import CheckpointError
from involution_mm.layers import Involution, SimAM
from involution_mm.necks import InvolutionFPN
from involution_mm.ops import involution, simam
from conftest import mmengine_warnings, randomise_norms


def build(scope: str, cfg: dict) -> nn.Module:
    init_default_scope(scope)
    return __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS.build(cfg)


def save_backbone(model: nn.Module, path, prefix: str = 'backbone.') -> str:
    """A checkpoint holding ``model`` as the backbone of a detector or classifier."""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    state['head.fc.weight'] = torch.rand(10, 4)
    torch.save(dict(state_dict=state, meta={}), str(path))
    return str(path)


# ------------------------------------------------------------------------------------------------------------
# Pretrained init_cfg: every form keeps the checkpoint, and a checkpoint that fits nothing is refused

BACKBONES = {  # name -> (scope, config)
    'RedNet': ('mmpretrain', dict(type='RedNet', depth=26)),
    'SimAMResNet (mmpretrain)': ('mmpretrain', dict(type='SimAMResNet', depth=18)),
    'SimAMResNeXt (mmpretrain)': ('mmpretrain', dict(type='SimAMResNeXt', depth=50, num_stages=1, strides=(1, ),
                                                     dilations=(1, ), out_indices=(0, ), groups=32,
                                                     width_per_group=4)),
    'SimAMMobileNetV2 (mmpretrain)': ('mmpretrain', dict(type='SimAMMobileNetV2', widen_factor=0.25)),
    'SimAMResNet (mmdet)': ('mmdet', dict(type='SimAMResNet', depth=18)),
    'SimAMResNet (mmseg)': ('mmseg', dict(type='SimAMResNet', depth=18)),
}


@pytest.mark.parametrize('form', ['dict', 'list', 'list with others'])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_pretrained_init_keeps_every_checkpoint_tensor(name, form, tmp_path):
    """Issue 24 item 2: the list form zeroed the pretrained last norm of every block (zero_init_residual)."""
    scope, cfg = BACKBONES[name]
    torch.manual_seed(0)
    source = build(scope, cfg)
    randomise_norms(source)
    pretrained = dict(type='Pretrained', checkpoint=save_backbone(source, tmp_path / 'ckpt.pth'),
                      prefix='backbone.')
    init_cfg = {'dict': pretrained, 'list': [pretrained],
                'list with others': [dict(type='Kaiming', layer='Conv2d'), pretrained]}[form]
    model = build(scope, dict(cfg, init_cfg=init_cfg))
    model.init_weights()
    expected = source.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_detector_checkpoint_without_prefix_is_refused_with_the_prefix_to_pass(tmp_path):
    path = save_backbone(RedNet(26), tmp_path / 'detector.pth')
    model = RedNet(26, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match=r"RedNet init_cfg Pretrained loads nothing from .*detector.pth: "
                       r"none of its \d+ tensors fits one of the \d+ weights of RedNet; its keys under "
                       r"'backbone.' fit \d+ of them: pass prefix='backbone.'"):
        model.init_weights()


def test_the_wrong_checkpoint_or_prefix_is_refused(tmp_path):
    other = build('mmpretrain', dict(type='SimAMMobileNetV2', widen_factor=0.25))
    path = save_backbone(other, tmp_path / 'mobilenet.pth')
    with pytest.raises(CheckpointError, match='none of its .* tensors fits one of the .* weights of RedNet$'):
        RedNet(26, init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')).init_weights()
    with pytest.raises(CheckpointError, match="holds no weights under prefix='neck.'; its keys under 'backbone.' "
                       "fit 0 of them|holds no weights under prefix='neck.'$"):
        RedNet(26, init_cfg=dict(type='Pretrained', checkpoint=path, prefix='neck.')).init_weights()


def test_a_partial_checkpoint_is_reported_and_the_rest_initialised(tmp_path):
    """RedNet-26 weights into a RedNet-38: the blocks only RedNet-38 has get the default initialisation."""
    torch.manual_seed(0)
    source = randomise_norms(RedNet(26))
    path = save_backbone(source, tmp_path / 'rednet26.pth')
    model = RedNet(38, init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    def weights(module):  # counted without the BN counters
        return len([k for k in module.state_dict() if not k.endswith('num_batches_tracked')])

    fits, own = weights(source), weights(model)  # RedNet-26's keys are all in RedNet-38
    warning = mmengine_warnings(model.init_weights)
    assert f'rednet26.pth fits {fits} of the {own} weights of RedNet; {own - fits} are missing from it ' \
           '(layer1.1.conv1.weight, ' in warning, warning
    assert torch.equal(model.layer1[0].norm3.weight, source.layer1[0].norm3.weight)
    new_block = model.layer1[1]
    assert not new_block.norm3.weight.any()  # zero_init_residual
    # Kaiming normal, fan_out (64 channels), not PyTorch's construction-time uniform (std 1/sqrt(3 * 256))
    assert new_block.conv1.weight.std().item() == pytest.approx((2 / 64)**0.5, rel=0.2)


# ------------------------------------------------------------------------------------------------------------
# SimAM in the backbones: the module tree is what runs (issue 24 item 3)

def test_replacing_or_deleting_a_simam_module_changes_the_forward():
    torch.manual_seed(0)
    model = build('mmpretrain', dict(type='SimAMResNet', depth=18, out_indices=(0, )))
    plain = build('mmpretrain', dict(type='ResNet', depth=18, out_indices=(0, )))
    model.eval(), plain.eval()  # mmpretrain's ResNet.train returns None
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)[0]
        block = model.layer1[0]
        block.simam = SimAM(e_lambda=1000)
        replaced = model(x)[0]
        assert not torch.equal(replaced, reference)
        clone = copy.deepcopy(model)  # the copy runs its own modules
        del clone.layer1[0].simam
        torch.testing.assert_close(model(x)[0], replaced)
        assert not torch.equal(clone(x)[0], replaced)
        for layer in (model.layer1, model.layer2):
            for block in layer:
                del block.simam
        torch.testing.assert_close(model(x)[0], plain(x)[0])
        # inserted again, SimAM runs once per block, as built
        for block in model.layer1:
            insert_simam_after(block, 'conv2', 0.1)
        model.layer1[0].conv2 = copy.deepcopy(model.layer1[0].conv2)  # a new conv keeps its SimAM
        torch.testing.assert_close(model(x)[0], reference)


# ------------------------------------------------------------------------------------------------------------
# SimAM's lambda (issue 24 item 5)

def test_a_lambda_that_vanishes_in_float32_is_refused():
    with pytest.raises(ValueError, match=r'SimAM e_lambda=1e-46 vanishes in float32, in which SimAM computes '
                       r'\(a constant map would give NaN\); pass at least 1.18e-38'):
        SimAM(e_lambda=1e-46)
    with pytest.raises(ValueError, match=r'SimAM e_lambda=1e-46 vanishes in float32'):
        simam(torch.ones(1, 2, 3, 3), 1e-46)  # the functional op too
    smallest = SimAM(e_lambda=torch.finfo(torch.float32).tiny)
    for dtype in (torch.float32, torch.float16):
        assert torch.isfinite(smallest(torch.ones(1, 2, 3, 3, dtype=dtype))).all()


# ------------------------------------------------------------------------------------------------------------
# InvolutionFPN levels (issue 24 item 6)

@pytest.mark.parametrize('kwargs, message', [
    (dict(start_level=-1), r'InvolutionFPN start_level must be from 0 to 3 \(an index into the 4 levels of '
     r'in_channels\), got -1'),
    (dict(start_level=4), 'InvolutionFPN start_level must be from 0 to 3 .*, got 4'),
    (dict(start_level=2, end_level=1, num_outs=1), r'InvolutionFPN end_level must be -1 \(the last level\) or '
     r'from start_level=2 to 3 \(the last of the 4 levels of in_channels\), got 1'),
    (dict(end_level=-2), 'end_level must be -1 .* got -2'),
    (dict(end_level=4), 'end_level must be -1 .* got 4'),
    (dict(end_level=2, num_outs=5), 'InvolutionFPN with end_level=2 outputs exactly levels 0 to 2, so num_outs '
     'must be 3, got 5; pass num_outs=3, or end_level=-1 to add extra levels'),
    (dict(num_outs=3), r'InvolutionFPN num_outs=3 is fewer than the 4 backbone levels from start_level=0; pass '
     r'num_outs=4 or more'),
    (dict(start_level=1.0), r'InvolutionFPN start_level must be an int, got 1.0 \(float\)'),
    (dict(out_channels=100), r'InvolutionFPN out_channels=100 gives its output involutions \(fpn_convs\) 100 '
     r'channels, but an involution needs a multiple of 16 \(group_channels=16, reduction_ratio=4\); pass '
     r'out_channels=96 or 112'),
    (dict(involution_cfg=7), r'InvolutionFPN involution_cfg must be a dict of Involution arguments'),
])
def test_fpn_refuses_levels_that_do_not_fit(kwargs, message):
    args = {**dict(in_channels=[16, 32, 64, 128], out_channels=16, num_outs=5), **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        InvolutionFPN(**args)


def test_fpn_levels_from_start_level_are_in_order():
    neck = InvolutionFPN([16, 32, 64, 128], 16, num_outs=3, start_level=1).eval()
    inputs = [torch.rand(1, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([16, 32, 64, 128])]
    assert [tuple(o.shape[2:]) for o in neck(inputs)] == [(16, 16), (8, 8), (4, 4)]


# ------------------------------------------------------------------------------------------------------------
# Layer and model arguments in the user's terms (issue 24, minor)

@pytest.mark.parametrize('kwargs, error, message', [
    (dict(norm_cfg=dict(type='BNN')), ValueError,
     r"RedNet norm_cfg type 'BNN' is not a registered norm layer; use one of 'BN', 'SyncBN', 'GN'"),
    (dict(norm_cfg=dict(type='GN')), ValueError, r"RedNet norm_cfg GN needs num_groups: pass "
     r"norm_cfg=dict\(type='GN', num_groups=N\) .*\(here N must divide 8, e.g. num_groups=8\)"),
    (dict(norm_cfg=None), TypeError, r"RedNet needs norm layers: norm_cfg=None is not supported; pass e.g. "
     r"norm_cfg=dict\(type='BN'\)"),
    (dict(norm_cfg=dict(type='GN', num_groups=32)), ValueError,
     r"RedNet norm_cfg=\{'type': 'GN', 'num_groups': 32\} cannot normalise the 8 channels of stem.1.conv1 "
     r"\(the stem involution's kernel generation\): .*num_groups.* \(here N must divide 8, e.g. num_groups=8\)"),
    (dict(stem_channels=2), ValueError, r'RedNet stem_channels=2 gives its stem involution \(stem.1\) 1 channels, '
     r'but an involution needs a multiple of 16 .*; pass stem_channels=32 \(or another multiple of 32\)'),
    (dict(base_channels=3), ValueError, r'RedNet base_channels=3 gives the involutions of its first stage '
     r'\(layer1.\*.conv2\) 3 channels, .*; pass base_channels=16 \(or another multiple of 16\)'),
])
def test_rednet_arguments_in_the_users_terms(kwargs, error, message):
    with pytest.raises(error, match=message):
        RedNet(26, **kwargs)


def test_rednet_with_group_norm_that_fits_builds():
    model = RedNet(26, norm_cfg=dict(type='GN', num_groups=8), out_indices=(0, )).eval()
    assert tuple(model(torch.rand(1, 3, 32, 32))[0].shape) == (1, 256, 8, 8)


@pytest.mark.parametrize('cfg, error, message', [
    (dict(type='InvolutionRPNHead', in_channels=24, feat_channels=24), ValueError,
     r'InvolutionRPNHead in_channels=24 gives its involution \(rpn_conv\) 24 channels, but an involution needs '
     r'a multiple of 16 .*; pass in_channels=16 or 32'),
    (dict(type='InvolutionRPNHead', in_channels=32, feat_channels=32, num_convs=1.5), TypeError,
     r'InvolutionRPNHead num_convs must be an int, got 1.5 \(float\)'),
    (dict(type='InvolutionRPNHead', in_channels=32, feat_channels=32, num_convs='2'), TypeError,
     r"InvolutionRPNHead num_convs must be an int, got '2' \(str\)"),
    (dict(type='InvolutionRPNHead', in_channels=32, feat_channels=32, num_convs=0), ValueError,
     'InvolutionRPNHead num_convs must be at least 1, got 0'),
    (dict(type='InvolutionFCNMaskHead', num_convs=-1), ValueError,
     'InvolutionFCNMaskHead num_convs must be at least 0, got -1'),
    (dict(type='InvolutionFCNMaskHead', logits_init_std=-1), ValueError,
     'InvolutionFCNMaskHead logits_init_std must be a number >= 0, or None for Kaiming, got -1'),
    (dict(type='InvolutionFCNMaskHead', in_channels=40, conv_out_channels=40), ValueError,
     r'InvolutionFCNMaskHead in_channels=40 gives its involutions \(convs\) 40 channels'),
    (dict(type='InvolutionShared4Conv1FCBBoxHead', in_channels=40, conv_out_channels=40), ValueError,
     r'InvolutionShared4Conv1FCBBoxHead in_channels=40 gives its involutions 40 channels'),
])
def test_head_arguments_in_the_users_terms(cfg, error, message):
    with pytest.raises(error, match=message):
        build('mmdet', cfg)


def test_involution_names_its_norm_problem():
    with pytest.raises(ValueError, match=r"Involution norm_cfg=\{'type': 'GN', 'num_groups': 16\} cannot "
                       r'normalise the 8 channels of conv1 \(its kernel generation\)'):
        Involution(32, norm_cfg=dict(type='GN', num_groups=16))


@pytest.mark.skipif(not hasattr(torch, 'float8_e4m3fn'), reason='no float8 in this torch')
def test_the_op_refuses_float8():
    x = torch.rand(1, 16, 4, 4).to(torch.float8_e4m3fn)
    weight = torch.rand(1, 1, 3, 3, 4, 4).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r'involution needs floating-point tensors \(float16, bfloat16, float32, '
                       r'float64\), got torch.float8_e4m3fn'):
        involution(x, weight, 1, 1, 1)
