"""The SimAM configs carry the paper's recipes, and their models have SimAM where each route puts it.
(tests/test_configs.py checks that every config builds.)"""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import involution_mm  # noqa: F401
from conftest import REPO
from involution_mm.layers import SimAM

CLS = {
    'simam-resnet18_8xb32_in1k.py': ('SimAMResNet', 18),
    'simam-resnet34_8xb32_in1k.py': ('SimAMResNet', 34),
    'simam-resnet50_8xb32_in1k.py': ('SimAMResNet', 50),
    'simam-resnet101_8xb32_in1k.py': ('SimAMResNet', 101),
    'simam-resnext50-32x4d_8xb32_in1k.py': ('SimAMResNeXt', 50),
}
MOBILENET = 'simam-mobilenet-v2_8xb32-coslr-150e_in1k.py'


def load(folder: str, name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', folder, name))


def fields(cfg: dict) -> dict:
    """A config dict without the ``_scope_`` that ``mmpretrain::`` inheritance adds."""
    return {k: v for k, v in cfg.items() if k != '_scope_'}


def test_the_six_imagenet_configs_exist():
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(REPO, 'configs/simam/*.py'))) == \
        sorted([*CLS, MOBILENET])


@pytest.mark.parametrize('name', CLS)
def test_resnet_recipe(name):
    cfg = load('simam', name)
    assert (cfg.model.backbone.type, cfg.model.backbone.depth) == CLS[name]
    assert cfg.model.backbone.e_lambda == 0.1 and cfg.model.backbone.zero_init_residual is False
    assert cfg.model.head.in_channels == (512 if CLS[name][1] < 50 else 2048)
    assert fields(cfg.optim_wrapper.optimizer) == dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert fields(cfg.param_scheduler) == dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90],
                                               gamma=0.1)
    assert cfg.train_cfg.max_epochs == 100
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 256


def test_mobilenet_v2_recipe():
    cfg = load('simam', MOBILENET)
    assert fields(cfg.model.backbone) == dict(type='SimAMMobileNetV2', widen_factor=1.0, e_lambda=0.1)
    assert fields(cfg.optim_wrapper.optimizer) == dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=4e-5)
    assert cfg.param_scheduler.type == 'CosineAnnealingLR' and cfg.param_scheduler.T_max == 150
    assert cfg.param_scheduler.eta_min == 0 and cfg.train_cfg.max_epochs == 150
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 256


DET = [f'{model}-rcnn_{backbone}_fpn_4xb2-1x_coco.py' for model in ('faster', 'mask')
       for backbone in ('r50-simam', 'r101-simam', 'simam-r50', 'simam-r101')]


@pytest.mark.parametrize('name', DET)
def test_coco_recipe_and_backbone(name):
    cfg = load('simam_det', name)
    assert cfg.model.type == ('FasterRCNN' if name.startswith('faster') else 'MaskRCNN')
    backbone = cfg.model.backbone
    depth = 101 if 'r101' in name else 50
    assert backbone.depth == depth
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/simam-resnet{depth}_mmdet.pth')
    if 'simam-r' in name:  # the paper's placement
        assert backbone.type == 'SimAMResNet' and backbone.plugins is None and backbone.e_lambda == 0.1
    else:  # the upstream ResNet and its plugins
        assert backbone.type == 'ResNet'
        assert backbone.plugins == [dict(cfg=dict(type='SimAM', e_lambda=0.1), stages=(True, True, True, True),
                                         position='after_conv2')]
    assert cfg.optim_wrapper.optimizer.lr == 0.01 and cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 8  # 4 GPUs x 2 images
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ('LinearLR', 0.001, 500, False)
    assert (steps.milestones, cfg.train_cfg.max_epochs) == ([8, 11], 12)


def test_coco_models_have_simam_in_every_block():
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    for name in ('faster-rcnn_r50-simam_fpn_4xb2-1x_coco.py', 'faster-rcnn_simam-r50_fpn_4xb2-1x_coco.py'):
        backbone = MODELS.build(load('simam_det', name).model).backbone
        blocks = [block for layer in backbone.res_layers for block in getattr(backbone, layer)]
        assert len(blocks) == 16 and all(isinstance(block.simam, SimAM) for block in blocks)
        assert all(block.simam.e_lambda == 0.1 for block in blocks)
