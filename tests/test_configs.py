"""Every config under configs/ loads, imports involution_mm, and builds its model through the registry."""
import glob
import importlib
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from conftest import REPO

CONFIGS = sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep))


def test_configs_exist():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_through_the_registry(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    assert 'involution_mm' in cfg.custom_imports['imports']
    assert cfg.custom_imports.get('allow_failed_imports') is False
    scope = cfg.default_scope
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model = registry.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
