"""mmsegmentation adapter: registers our models into ``mmseg.registry.MODELS``, under the official names too."""
from mmseg.registry import MODELS

from ..backbones import RedNet
from ..layers import SimAM
from ..necks import InvolutionFPN
from .simam import SimAMResNet

MODELS.register_module(module=RedNet)
MODELS.register_module(module=InvolutionFPN)
MODELS.register_module(name='FPN_involution', module=InvolutionFPN)  # the official repo's name
MODELS.register_module(module=SimAM)  # a plugin layer: ResNet(plugins=[dict(cfg=dict(type='SimAM'), ...)])
MODELS.register_module(module=SimAMResNet)
