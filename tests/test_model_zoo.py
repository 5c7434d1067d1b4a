"""The model zoo metadata: metafiles parse, name existing configs, cover every config, and mmpretrain's
``get_model`` finds our ImageNet models."""
import glob
import os.path as osp

import mmpretrain
import pytest
from modelindex.load_model_index import load

import involution_mm  # noqa: F401  (registers the model index)
from conftest import REPO


def _models():
    index = load(osp.join(REPO, 'model-index.yml'))
    index.build_models_with_collections()
    return index.models


def test_every_metafile_entry_names_an_existing_config_once():
    models = _models()
    configs = [m.config for m in models]
    assert len(configs) == len(set(configs)) == len({m.name for m in models})
    for model in models:
        assert osp.isfile(osp.join(REPO, model.config)), model.config
        assert osp.splitext(osp.basename(model.config))[0] == model.name


def test_every_config_is_in_the_model_index():
    listed = {m.config for m in _models()}
    configs = {osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
               if '_base_' not in p}
    assert configs == listed


def test_published_results_and_links_where_published():
    models = {m.name: m for m in _models()}
    rednet50 = models['rednet50_64xb32-warmup-coslr-130e_in1k']
    assert rednet50.metadata.parameters == 15540000 and rednet50.metadata.flops == 2710000000
    assert rednet50.results[0].metrics == {'Top 1 Accuracy': 78.35, 'Top 5 Accuracy': 94.13}
    assert rednet50.weights.startswith('https://')
    mask = models['mask-rcnn_rednet50-involution-fpn_1x_coco']
    assert {r.task: r.metrics for r in mask.results} == {'Object Detection': {'box AP': 40.8},
                                                         'Instance Segmentation': {'mask AP': 36.4}}


@pytest.mark.parametrize('name,backbone', [('rednet26_64xb32-warmup-coslr-130e_in1k', 'RedNet'),
                                           ('simam-resnet18_8xb32_in1k', 'SimAMResNet')])
def test_mmpretrain_get_model_builds_our_models(name, backbone):
    assert name in mmpretrain.list_models()
    assert type(mmpretrain.get_model(name).backbone).__name__ == backbone
