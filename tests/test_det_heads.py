"""Involution neck and heads for mmdet: official key layouts, output shapes, channel checks, initialisation."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

import involution_mm  # noqa: F401  (registers into mmdet)
from involution_mm.det import (InvolutionConvFCBBoxHead, InvolutionFCNMaskHead, InvolutionRPNHead,
                               InvolutionShared4Conv1FCBBoxHead)
from involution_mm.layers import Involution
from mmdet.registry import MODELS
from conftest import REPO, state_dict_layout

CONFIGS = osp.join(REPO, 'configs', 'involution_det')


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def model_cfg(name: str):
    return Config.fromfile(osp.join(CONFIGS, name)).model


def backbone_like_features(size: int = 64, batch: int = 1):
    """C2..C5 of a RedNet-50 for a ``size`` x ``size`` image (strides 4 to 32)."""
    return tuple(torch.rand(batch, c, size // s, size // s) for c, s in ((256, 4), (512, 8), (1024, 16), (2048, 32)))


@pytest.mark.parametrize('registered, official', [('InvolutionRPNHead', 'RPNHead_involution'),
                                                  ('InvolutionFCNMaskHead', 'FCNMaskHead_involution'),
                                                  ('InvolutionFPN', 'FPN_involution')])
def test_official_names_are_aliases(registered, official):
    assert MODELS.get(registered) is MODELS.get(official) is not None


def test_box_heads_are_registered():
    assert MODELS.get('InvolutionShared4Conv1FCBBoxHead') is InvolutionShared4Conv1FCBBoxHead
    assert MODELS.get('InvolutionConvFCBBoxHead') is InvolutionConvFCBBoxHead


@pytest.mark.parametrize('config, layout, shapes', [
    ('mask-rcnn_rednet50-involution-fpn_1x_coco.py', 'det_fpn_involution_neck_5outs',
     [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]),  # P2-P5 and a max-pooled P6
    ('retinanet_rednet50-involution-fpn_1x_coco.py', 'det_fpn_involution_neck_retina',
     [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]),  # P3-P5, then P6 and P7 from stride-2 convs on C5
])
def test_neck_of_each_config_matches_the_official_layout(config, layout, shapes, official_layouts):
    neck = MODELS.build(model_cfg(config).neck).eval()
    assert state_dict_layout(neck, 'neck.') == official_layouts[layout]
    outs = neck(backbone_like_features(64))
    assert [tuple(o.shape) for o in outs] == [(1, 256) + s for s in shapes]
    assert all(isinstance(neck.fpn_convs[i], Involution) for i in range(len(neck.lateral_convs)))


def test_rpn_head_matches_the_official_layout_and_keeps_mmdet_outputs(official_layouts):
    head = MODELS.build(model_cfg('mask-rcnn_rednet50-involution-fpn-head_1x_coco.py').rpn_head)
    assert isinstance(head, InvolutionRPNHead) and isinstance(head.rpn_conv, Involution)
    assert state_dict_layout(head, 'rpn_head.') == official_layouts['det_rpn_head_involution']
    feats = tuple(torch.rand(2, 256, s, s) for s in (16, 8, 4, 2, 1))
    cls_scores, bbox_preds = head(feats)
    assert [tuple(c.shape) for c in cls_scores] == [(2, 3, s, s) for s in (16, 8, 4, 2, 1)]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 12, s, s) for s in (16, 8, 4, 2, 1)]
    assert all((c.abs() > 0).any() for c in cls_scores)


def test_rpn_head_initialises_only_the_predictors_from_n_0_001():
    head = InvolutionRPNHead(in_channels=64, feat_channels=64)
    head.init_weights()
    for predictor in (head.rpn_cls, head.rpn_reg):
        assert predictor.weight.std().item() == pytest.approx(0.01, rel=0.3)
        assert not predictor.bias.any()
    # the involution keeps ConvModule's Kaiming init, as the official head left it: std sqrt(2 / 16)
    assert head.rpn_conv.conv1.conv.weight.std().item() == pytest.approx((2 / 16) ** 0.5, rel=0.3)


def test_rpn_head_with_several_convs_stacks_involution_blocks():
    head = InvolutionRPNHead(in_channels=32, feat_channels=32, num_convs=2, involution_cfg=dict(kernel_size=3))
    assert [type(block[0]) for block in head.rpn_conv] == [Involution, Involution]
    assert head.rpn_conv[0][0].kernel_size == 3
    cls_score, bbox_pred = head.forward_single(torch.rand(1, 32, 6, 6))
    # AnchorHead's default anchors: 3 scales x 3 ratios
    assert cls_score.shape == (1, 9, 6, 6) and bbox_pred.shape == (1, 36, 6, 6)


def test_rpn_head_refuses_a_channel_change():
    with pytest.raises(ValueError, match=r'feat_channels \(128\) must equal in_channels \(256\)'):
        InvolutionRPNHead(in_channels=256, feat_channels=128)
    with pytest.raises(ValueError, match='InvolutionRPNHead num_convs must be at least 1, got 0'):
        InvolutionRPNHead(in_channels=256, num_convs=0)


def test_mask_head_matches_the_official_layout(official_layouts):
    head = MODELS.build(model_cfg('mask-rcnn_rednet50-involution-fpn-head_1x_coco.py').roi_head.mask_head)
    assert isinstance(head, InvolutionFCNMaskHead)
    assert state_dict_layout(head, 'roi_head.mask_head.') == official_layouts['det_fcn_mask_head_involution']
    for block in head.convs:
        assert [type(m) for m in block] == [Involution, nn.ReLU]
    rois = torch.rand(3, 256, 14, 14)
    assert head(rois).shape == (3, 80, 28, 28)


def test_mask_head_trains():
    head = InvolutionFCNMaskHead(num_convs=2, in_channels=32, conv_out_channels=32, num_classes=3)
    head.init_weights()
    rois = torch.rand(4, 32, 14, 14, requires_grad=True)
    loss = head.loss_mask(head(rois), torch.rand(4, 28, 28).round(), torch.tensor([0, 1, 2, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert rois.grad.abs().sum() > 0 and head.convs[0][0].conv2.conv.weight.grad.abs().sum() > 0


def test_mask_head_refuses_a_channel_change():
    with pytest.raises(ValueError, match=r'conv_out_channels \(128\) must equal in_channels \(256\)'):
        MODELS.build(dict(type='FCNMaskHead_involution', in_channels=256, conv_out_channels=128))


def test_box_head_has_involution_shared_convs():
    head = MODELS.build(model_cfg('faster-rcnn_rednet50-involution-fpn-head-4inv1fc_1x_coco.py').roi_head.bbox_head)
    assert isinstance(head, InvolutionShared4Conv1FCBBoxHead)
    assert len(head.shared_convs) == 4 and len(head.shared_fcs) == 1
    assert all(type(block[0]) is Involution and block[0].kernel_size == 7 for block in head.shared_convs)
    assert head.shared_fcs[0].in_features == 256 * 7 * 7
    cls_score, bbox_pred = head(torch.rand(5, 256, 7, 7))
    assert cls_score.shape == (5, 81) and bbox_pred.shape == (5, 320)


def test_box_head_with_separate_branches_and_norm():
    head = InvolutionConvFCBBoxHead(num_cls_convs=1, num_cls_fcs=1, num_reg_convs=2, num_reg_fcs=1, in_channels=32,
                                    conv_out_channels=32, fc_out_channels=64, roi_feat_size=7, num_classes=4,
                                    norm_cfg=dict(type='GN', num_groups=8))
    assert [len(head.cls_convs), len(head.reg_convs)] == [1, 2]
    assert isinstance(head.reg_convs[1][1], nn.GroupNorm)
    cls_score, bbox_pred = head(torch.rand(2, 32, 7, 7))
    assert cls_score.shape == (2, 5) and bbox_pred.shape == (2, 16)


def test_box_head_refuses_a_channel_change():
    with pytest.raises(ValueError, match=r'conv_out_channels \(128\) must equal in_channels \(256\)'):
        InvolutionShared4Conv1FCBBoxHead(in_channels=256, conv_out_channels=128)
