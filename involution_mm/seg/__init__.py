"""mmsegmentation adapter: registers our models into ``mmseg.registry.MODELS``, under the official names too."""
from mmseg.registry import MODELS

from ..backbones import RedNet
from ..necks import InvolutionFPN

MODELS.register_module(module=RedNet)
MODELS.register_module(module=InvolutionFPN)
MODELS.register_module(name='FPN_involution', module=InvolutionFPN)  # the official repo's name
