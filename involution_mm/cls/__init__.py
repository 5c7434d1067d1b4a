"""mmpretrain adapter: registers our backbones into ``mmpretrain.registry.MODELS``."""
from mmpretrain.registry import MODELS

from ..backbones import RedNet

MODELS.register_module(module=RedNet)
