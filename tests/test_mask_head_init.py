"""The involution mask head starts where a freshly initialised mask head does (issue 24 item 7): the first
training iteration on the tiny COCO data gives a mask loss of about log(2), the binary cross-entropy of
predicting 0.5 everywhere."""
import math
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import involution_mm  # noqa: F401  (registers into mmdet)
from involution_mm.det import InvolutionFCNMaskHead
from mmdet.registry import DATASETS, MODELS
from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
from demo_data import coco  # noqa: E402

CONFIG = osp.join(REPO, 'configs', 'involution_det', 'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py')


@pytest.fixture(scope='module')
def first_batch(tmp_path_factory):
    """The config's training pipeline on the first two images of the tiny COCO data, at their own size."""
    init_default_scope('mmdet')
    root = str(tmp_path_factory.mktemp('demo') / 'coco')
    coco.write(root)
    cfg = Config.fromfile(CONFIG)
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = root
    dataset_cfg.pipeline[2].scale = (160, 128)  # Resize
    dataset = DATASETS.build(dataset_cfg)
    return cfg, pseudo_collate([dataset[0], dataset[1]])


def test_first_iteration_mask_loss_is_that_of_an_untrained_head(first_batch):
    """Seed 1 gave 2.45 (seed 0: 1.0) with FCNMaskHead's Kaiming initialisation of conv_logits."""
    cfg, batch = first_batch
    model_cfg = cfg.model.copy()
    model_cfg.backbone.init_cfg = None  # no ImageNet checkpoint here (as in tests/test_e2e_det.py)
    model_cfg.train_cfg.rcnn.sampler.num = 64
    torch.manual_seed(1)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    losses = model(**model.data_preprocessor(batch, training=True), mode='loss')
    assert losses['loss_mask'].item() == pytest.approx(math.log(2), abs=0.05)


def test_the_logits_start_small_unless_the_original_initialisation_is_asked_for():
    head = InvolutionFCNMaskHead(num_convs=1, in_channels=32, conv_out_channels=32, num_classes=3)
    head.init_weights()
    assert head.conv_logits.weight.std().item() == pytest.approx(0.001, rel=0.3)
    assert not head.conv_logits.bias.any()
    original = InvolutionFCNMaskHead(num_convs=1, in_channels=32, conv_out_channels=32, num_classes=3,
                                     logits_init_std=None)
    original.init_weights()  # FCNMaskHead's: Kaiming normal, fan_out (3 classes)
    assert original.conv_logits.weight.std().item() == pytest.approx((2 / 3)**0.5, rel=0.3)
