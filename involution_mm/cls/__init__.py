"""mmpretrain adapter: registers our backbones into ``mmpretrain.registry.MODELS`` and our ImageNet models
into mmpretrain's model hub, so ``mmpretrain.get_model('rednet50_64xb32-warmup-coslr-130e_in1k')`` works."""
import os.path as osp

from mmpretrain.apis import ModelHub
from mmpretrain.registry import MODELS

from ..backbones import RedNet
from ..layers import SimAM
from .simam import SimAMMobileNetV2, SimAMResNet, SimAMResNeXt

MODELS.register_module(module=RedNet)
MODELS.register_module(module=SimAM)
MODELS.register_module(module=SimAMResNet)
MODELS.register_module(module=SimAMResNeXt)
MODELS.register_module(module=SimAMMobileNetV2)

# The configs live in the source tree (configs/), beside the package: an editable or source install has them.
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSIFIER_METAFILES = ('configs/rednet/metafile.yml', 'configs/simam/metafile.yml')


def register_model_index() -> None:
    """Add our ImageNet models (their metafiles) to mmpretrain's ModelHub, where the configs are present."""
    for metafile in CLASSIFIER_METAFILES:
        path = osp.join(REPO_ROOT, metafile)
        if osp.isfile(path):
            ModelHub.register_model_index(path, config_prefix=REPO_ROOT)


register_model_index()
