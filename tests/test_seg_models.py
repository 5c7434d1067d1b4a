"""The Cityscapes configs of configs/involution_seg on mmseg: registry, official key layouts, published
parameter counts, SyncBN, loading the ImageNet backbone, and loss/predict of the built segmentors."""
import copy
import os.path as osp
from typing import Any, Dict

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import involution_mm  # noqa: F401  (registers into mmseg)
from conftest import REPO, assert_imagenet_init_skips_only_the_stem_kernel, state_dict_layout
from involution_mm.backbones import RedNet
from involution_mm.necks import InvolutionFPN

pytest.importorskip('mmseg')
from mmseg.registry import MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

CONFIG_DIR = osp.join(REPO, 'configs', 'involution_seg')
FPN_CONV = 'fpn_rednet50_4xb2-80k_cityscapes-512x1024.py'
FPN_INVOLUTION = 'fpn_rednet50-involution-neck_4xb2-80k_cityscapes-512x1024.py'
UPERNET = 'upernet_rednet50_4xb2-80k_cityscapes-512x1024.py'
PUBLISHED_PARAMS_M = {FPN_CONV: 18.5, FPN_INVOLUTION: 16.4, UPERNET: 56.4}
NUM_CLASSES = 19
SMALL = (64, 128)  # height, width of the test images: Cityscapes' 1:2 aspect


def load_config(name: str) -> Config:
    init_default_scope('mmseg')
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def norm_cfgs(node: Any, path: str = 'model') -> Dict[str, dict]:
    """Every ``norm_cfg`` dict under a config node, by its dotted path."""
    found = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'norm_cfg' and isinstance(value, dict):
                found[f'{path}.{key}'] = value
            else:
                found.update(norm_cfgs(value, f'{path}.{key}'))
    return found


def cpu_model_cfg(cfg: Config) -> ConfigDict:
    """The model config as a CPU user runs it: SyncBN -> BN, no pretrained backbone, small crops."""
    model = copy.deepcopy(cfg.model)
    for norm in norm_cfgs(model).values():
        if norm['type'] == 'SyncBN':
            norm['type'] = 'BN'
    model.backbone.init_cfg = None
    model.data_preprocessor.size = SMALL
    return model


@pytest.fixture(scope='module')
def cpu_models() -> Dict[str, torch.nn.Module]:
    """One segmentor per config, built once for the module."""
    torch.manual_seed(0)
    return {name: MODELS.build(cpu_model_cfg(load_config(name))) for name in PUBLISHED_PARAMS_M}


def make_batch(batch_size: int = 2, seed: int = 0) -> dict:
    """What mmseg's dataloader yields for Cityscapes-like images: uint8 images and SegDataSamples."""
    gen = torch.Generator().manual_seed(seed)
    height, width = SMALL
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8))
        labels = torch.randint(0, NUM_CLASSES, (1, height, width), generator=gen)
        labels[:, -4:] = 255  # an ignored strip, as in Cityscapes' labelTrainIds
        sample = SegDataSample(metainfo=dict(img_shape=SMALL, ori_shape=SMALL, pad_shape=SMALL))
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_our_classes_are_in_the_mmseg_registry():
    assert MODELS.get('RedNet') is RedNet
    assert MODELS.get('InvolutionFPN') is InvolutionFPN
    assert MODELS.get('FPN_involution') is InvolutionFPN  # the official repo's name
    assert MODELS.get('FPN') is not InvolutionFPN  # upstream's FPN is untouched


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS_M))
def test_config_recipe(name):
    cfg = load_config(name)
    assert cfg.crop_size == (512, 1024) and cfg.model.data_preprocessor.size == (512, 1024)
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 2
    assert cfg.model.decode_head.num_classes == NUM_CLASSES
    norms = norm_cfgs(cfg.model)
    assert 'model.backbone.norm_cfg' in norms and 'model.decode_head.norm_cfg' in norms
    assert {n['type'] for n in norms.values()} == {'SyncBN'}, norms
    backbone = cfg.model.backbone
    assert backbone.type == 'RedNet' and backbone.depth == 50 and backbone.stem_involution_kernel == 7
    assert cfg.model.pretrained is None
    assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS_M))
def test_layouts_and_parameter_counts(name, cpu_models, official_layouts):
    model = cpu_models[name]
    assert state_dict_layout(model.backbone, 'backbone.') == official_layouts['rednet50_seg_backbone']
    if name == FPN_INVOLUTION:
        assert state_dict_layout(model.neck, 'neck.') == official_layouts['seg_fpn_involution_neck_4outs']
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params_m - PUBLISHED_PARAMS_M[name]) < 0.1, f'{name}: {params_m:.3f}M'


def test_involution_neck_saves_what_the_paper_says(cpu_models):
    def count(module):
        return sum(p.numel() for p in module.parameters())
    conv, inv = cpu_models[FPN_CONV], cpu_models[FPN_INVOLUTION]
    assert count(conv.backbone) == count(inv.backbone) and count(conv.decode_head) == count(inv.decode_head)
    # only the four output convs differ: 3x3 conv with bias vs 7x7 involution (1x1 conv to 64 + BN,
    # 1x1 conv with bias to 49 * 16 groups)
    conv_3x3, involution_7x7 = 256 * 256 * 9 + 256, 256 * 64 + 2 * 64 + 64 * 49 * 16 + 49 * 16
    assert count(conv.neck) - count(inv.neck) == 4 * (conv_3x3 - involution_7x7)


def test_cpu_switch_leaves_no_sync_bn(cpu_models):
    for name, model in cpu_models.items():
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert bns and not any(isinstance(m, torch.nn.SyncBatchNorm) for m in bns), name


def test_imagenet_backbone_loads_except_the_stem_involution_kernel(tmp_path):
    """The ImageNet RedNet-50 has a 3x3 stem involution; mmengine skips it with a size-mismatch warning."""
    backbone_cfg = cpu_model_cfg(load_config(FPN_INVOLUTION)).backbone
    assert_imagenet_init_skips_only_the_stem_kernel(MODELS, backbone_cfg, tmp_path)


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS_M))
def test_loss_backward(name, cpu_models):
    model = cpu_models[name].train()
    data = model.data_preprocessor(make_batch(), training=True)
    losses = model(**data, mode='loss')
    expected = {'decode.loss_ce'} | ({'aux.loss_ce'} if name == UPERNET else set())
    assert expected <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    model.zero_grad()
    total.backward()
    for part in ('backbone.stem.1.conv2', 'backbone.layer4', 'decode_head.conv_seg') + (
            ('neck',) if model.with_neck else ()):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert grads and all(g is not None for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
    model.zero_grad()


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS_M))
def test_predict_whole_and_slide(name, cpu_models):
    model = cpu_models[name].eval()
    height, width = SMALL

    def predict(test_cfg):
        model.test_cfg = ConfigDict(test_cfg)
        data = model.data_preprocessor(make_batch(), training=False)
        with torch.no_grad():
            return model(**data, mode='predict')

    whole = predict(dict(mode='whole'))
    assert len(whole) == 2
    for result in whole:
        assert result.pred_sem_seg.data.shape == (1, height, width)
        assert result.seg_logits.data.shape == (NUM_CLASSES, height, width)
        assert 0 <= result.pred_sem_seg.data.min() and result.pred_sem_seg.data.max() < NUM_CLASSES
        assert 'gt_sem_seg' in result  # kept for the metric
    # one window covering the image is whole-image inference; overlapping windows are averaged
    single = predict(dict(mode='slide', crop_size=SMALL, stride=SMALL))
    for a, b in zip(whole, single):
        torch.testing.assert_close(a.seg_logits.data, b.seg_logits.data)
    slid = predict(dict(mode='slide', crop_size=(height, height), stride=(height, height // 2)))
    for a, b in zip(whole, slid):
        assert b.seg_logits.data.shape == a.seg_logits.data.shape
        assert not torch.allclose(a.seg_logits.data, b.seg_logits.data)
    model.test_cfg = ConfigDict(mode='whole')
