"""mmdet adapter: registers our models into ``mmdet.registry.MODELS``, under the official names too."""
from mmdet.registry import MODELS

from ..backbones import RedNet
from ..layers import SimAM
from ..necks import InvolutionFPN
from .bbox_head import InvolutionConvFCBBoxHead, InvolutionShared4Conv1FCBBoxHead
from .mask_head import InvolutionFCNMaskHead
from .rpn_head import InvolutionRPNHead
from .simam import SimAMResNet

MODELS.register_module(module=RedNet)
MODELS.register_module(module=InvolutionFPN)
MODELS.register_module(name='FPN_involution', module=InvolutionFPN)  # the official repo's name
MODELS.register_module(module=InvolutionRPNHead)
MODELS.register_module(name='RPNHead_involution', module=InvolutionRPNHead)
MODELS.register_module(module=InvolutionFCNMaskHead)
MODELS.register_module(name='FCNMaskHead_involution', module=InvolutionFCNMaskHead)
MODELS.register_module(module=InvolutionConvFCBBoxHead)  # not in the paper
MODELS.register_module(module=InvolutionShared4Conv1FCBBoxHead)  # not in the paper
MODELS.register_module(module=SimAM)  # a plugin layer: ResNet(plugins=[dict(cfg=dict(type='SimAM'), ...)])
MODELS.register_module(module=SimAMResNet)
