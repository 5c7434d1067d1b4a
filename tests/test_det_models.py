"""The COCO configs of configs/involution_det on mmdet: published parameter counts, recipes, loading the ImageNet
backbone with its different stem kernel, and loss/predict of every detector on a small image."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmcv.cnn.utils.flops_counter import get_model_parameters_number
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import involution_mm  # noqa: F401  (registers into mmdet)
from involution_mm.layers import Involution
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from conftest import REPO, assert_imagenet_init_skips_only_the_stem_kernel

CONFIG_DIR = osp.join(REPO, 'configs', 'involution_det')
CONFIGS = sorted(osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py')))
# The paper's table (M). It counts what mmcv's flops counter counts: parameters with requires_grad, i.e.
# without the frozen stem and layer1 of the backbone (frozen_stages=1), 0.139M.
PUBLISHED_PARAMS_M = {
    'faster-rcnn_rednet50-fpn_1x_coco.py': 31.6,
    'faster-rcnn_rednet50-involution-fpn_1x_coco.py': 29.5,
    'faster-rcnn_rednet50-involution-fpn-head_1x_coco.py': 29.0,
    'mask-rcnn_rednet50-fpn_1x_coco.py': 34.2,
    'mask-rcnn_rednet50-involution-fpn_1x_coco.py': 32.2,
    'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py': 29.5,
    'retinanet_rednet50-fpn_1x_coco.py': 27.8,
    'retinanet_rednet50-involution-fpn_1x_coco.py': 26.3,
}
# (warm-up iterations, lr, gradient clipping max_norm) of the official configs
RECIPES = {
    'faster-rcnn_rednet50-fpn_1x_coco.py': (500, 0.02, None),
    'faster-rcnn_rednet50-involution-fpn_1x_coco.py': (2000, 0.02, None),
    'faster-rcnn_rednet50-involution-fpn-head_1x_coco.py': (2000, 0.02, 5),
    'faster-rcnn_rednet50-involution-fpn-head-4inv1fc_1x_coco.py': (2000, 0.02, 5),
    'mask-rcnn_rednet50-fpn_1x_coco.py': (500, 0.02, None),
    'mask-rcnn_rednet50-involution-fpn_1x_coco.py': (2000, 0.02, None),
    'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py': (2000, 0.02, 5),
    'retinanet_rednet50-fpn_1x_coco.py': (2000, 0.01, None),
    'retinanet_rednet50-involution-fpn_1x_coco.py': (2000, 0.01, 40),
}
# involutions in the neck (one per backbone level used) and heads (RPN: 1, mask: 4, box: 4)
INVOLUTIONS_OUTSIDE_BACKBONE = {
    'faster-rcnn_rednet50-fpn_1x_coco.py': 0,
    'faster-rcnn_rednet50-involution-fpn_1x_coco.py': 4,
    'faster-rcnn_rednet50-involution-fpn-head_1x_coco.py': 4 + 1,
    'faster-rcnn_rednet50-involution-fpn-head-4inv1fc_1x_coco.py': 4 + 1 + 4,
    'mask-rcnn_rednet50-fpn_1x_coco.py': 0,
    'mask-rcnn_rednet50-involution-fpn_1x_coco.py': 4,
    'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py': 4 + 1 + 4,
    'retinanet_rednet50-fpn_1x_coco.py': 0,
    'retinanet_rednet50-involution-fpn_1x_coco.py': 3,
}
SIZE = 128  # the test image is SIZE x SIZE


def load_config(name: str) -> Config:
    init_default_scope('mmdet')
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def build_model(name: str, small_test_time: bool = False) -> torch.nn.Module:
    """The detector of a config, without the ImageNet checkpoint (not available in CI)."""
    model_cfg = load_config(name).model
    model_cfg.backbone.init_cfg = None
    if small_test_time:  # fewer RoIs than COCO needs, and keep every detection however low its score
        if 'rpn' in model_cfg.train_cfg:
            model_cfg.train_cfg.rcnn.sampler.num = 64
            model_cfg.train_cfg.rpn_proposal.max_per_img = 100
            model_cfg.test_cfg.rpn.max_per_img = 100
            model_cfg.test_cfg.rcnn.update(score_thr=0.0, max_per_img=5)
        else:
            model_cfg.test_cfg.update(nms_pre=100, score_thr=0.0, max_per_img=5)
    return MODELS.build(model_cfg)


def make_batch() -> dict:
    """What mmdet's COCO dataloader yields for one image: a uint8 image and a DetDataSample with two objects."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_id=1, img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
                                         scale_factor=(1.0, 1.0)))
    boxes = torch.tensor([[8., 12., 70., 90.], [60., 40., 120., 110.]])
    masks = np.zeros((2, SIZE, SIZE), np.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
        mask[y0:y1, x0:x1] = 1
    sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, 2]),
                                       masks=BitmapMasks(masks, SIZE, SIZE))
    return dict(inputs=[image], data_samples=[sample])


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS_M))
def test_parameter_count_matches_the_paper(name):
    model = build_model(name)
    trainable = get_model_parameters_number(model)  # mmcv's counter: parameters with requires_grad
    assert abs(trainable / 1e6 - PUBLISHED_PARAMS_M[name]) < 0.1
    frozen = sum(p.numel() for m in (model.backbone.stem, model.backbone.layer1) for p in m.parameters())
    assert sum(p.numel() for p in model.parameters()) == trainable + frozen  # only stem and layer1 are frozen


def test_every_config_is_listed():
    assert set(CONFIGS) == set(RECIPES) == set(INVOLUTIONS_OUTSIDE_BACKBONE)
    assert set(PUBLISHED_PARAMS_M) < set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_recipe(name):
    cfg = load_config(name)
    warmup_iters, lr, max_norm = RECIPES[name]
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ('LinearLR', 0.001, warmup_iters, False)
    assert (steps.type, steps.milestones, steps.gamma, cfg.train_cfg.max_epochs) == ('MultiStepLR', [8, 11], 0.1, 12)
    assert cfg.optim_wrapper.optimizer.lr == lr and cfg.auto_scale_lr.base_batch_size == 16
    clip = cfg.optim_wrapper.get('clip_grad')
    assert (clip and clip.max_norm) == max_norm
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.depth, backbone.stem_involution_kernel) == ('RedNet', 50, 7)
    assert (backbone.frozen_stages, backbone.norm_eval) == (1, True)
    assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'


def test_imagenet_checkpoint_initialises_all_but_the_stem_involution_kernel(tmp_path):
    """The ImageNet RedNet-50 has a 3x3 stem involution, the detection one 7x7: mmengine loads every other
    tensor, skips the two kernel-generating ones with a size-mismatch warning, and leaves them at their init."""
    backbone_cfg = load_config('mask-rcnn_rednet50-involution-fpn-head_1x_coco.py').model.backbone
    backbone = assert_imagenet_init_skips_only_the_stem_kernel(MODELS, backbone_cfg, tmp_path)
    # left at ConvModule's initialisation: Kaiming normal (fan_out = 98) and zero bias
    kernel_gen = backbone.stem[1].conv2.conv
    assert not kernel_gen.bias.any()
    assert kernel_gen.weight.std().item() == pytest.approx((2 / 98) ** 0.5, rel=0.25)


@pytest.mark.parametrize('name', CONFIGS)
def test_loss_and_predict(name):
    torch.manual_seed(0)
    model = build_model(name, small_test_time=True)
    is_mask_rcnn = getattr(getattr(model, 'roi_head', None), 'with_mask', False)

    model.train()
    data = model.data_preprocessor(make_batch(), training=True)
    losses = model(**data, mode='loss')
    expected = {'loss_cls', 'loss_bbox'} | ({'loss_rpn_cls', 'loss_rpn_bbox'} if hasattr(model, 'rpn_head') else set())
    assert expected | ({'loss_mask'} if is_mask_rcnn else set()) <= set(losses)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    involutions = {n: m for n, m in model.named_modules() if isinstance(m, Involution) and 'backbone' not in n}
    assert len(involutions) == INVOLUTIONS_OUTSIDE_BACKBONE[name]
    for module_name, module in involutions.items():
        assert module.conv2.conv.weight.grad.abs().sum() > 0, module_name

    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(make_batch(), training=False), mode='predict')
    pred = results[0].pred_instances
    assert len(pred) == 5 and pred.bboxes.shape == (5, 4) and pred.labels.max() < 80
    assert (pred.bboxes >= 0).all() and (pred.bboxes <= SIZE).all()
    if is_mask_rcnn:
        assert pred.masks.shape == (5, SIZE, SIZE) and pred.masks.dtype == torch.bool
