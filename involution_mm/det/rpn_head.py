"""RPN head whose 3x3 conv is a 7x7 involution (Li et al., CVPR 2021)."""
import torch.nn as nn
from mmdet.models.dense_heads import RPNHead
from mmdet.utils import MultiConfig

from ..layers import Involution
from ..layers.arguments import check_int, check_involution_cfg, check_involution_channels
from .blocks import check_same_channels, involution_block


class InvolutionRPNHead(RPNHead):
    """mmdet's RPNHead with ``rpn_conv`` an involution (official name ``RPNHead_involution``).

    Everything but ``rpn_conv`` is mmdet's RPNHead: anchors, losses, proposals, and the ReLU after
    ``rpn_conv``. With ``num_convs=1`` (the paper) ``rpn_conv`` is an ``Involution`` and the state-dict keys
    match the released models (``rpn_conv.conv1.*``, ``rpn_conv.conv2.*``, ``rpn_cls``, ``rpn_reg``); more
    convs stack involution + ReLU blocks. An involution keeps the channel count, so ``feat_channels`` must
    equal ``in_channels``.

    As in the official code, only ``rpn_cls`` and ``rpn_reg`` are initialised from N(0, 0.01); the
    involution keeps the Kaiming initialisation of its kernel-generation convs.

    Args:
        in_channels (int): Channels of the input feature maps.
        num_classes (int): Must be 1, as in RPNHead. Defaults to 1.
        involution_cfg (dict): Arguments of each ``Involution`` besides the channels.
            Defaults to ``dict(kernel_size=7)``.
        num_convs (int): Number of involutions before the predictors. Defaults to 1.
        init_cfg (dict | list[dict]): Initialization config. Defaults to N(0, 0.01) for ``rpn_cls`` and
            ``rpn_reg``.
        **kwargs: Other arguments of mmdet's ``AnchorHead`` (``feat_channels``, ``anchor_generator``...).
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int = 1,
                 involution_cfg: dict = dict(kernel_size=7),
                 num_convs: int = 1,
                 init_cfg: MultiConfig = dict(
                     type='Normal', std=0.01, override=[dict(name='rpn_cls'),
                                                        dict(name='rpn_reg')]),
                 **kwargs) -> None:
        check_int('InvolutionRPNHead', 'num_convs', num_convs, low=1)
        check_int('InvolutionRPNHead', 'in_channels', in_channels, low=1)
        check_involution_cfg('InvolutionRPNHead', involution_cfg)
        check_involution_channels('InvolutionRPNHead', 'in_channels', in_channels, 'its involution (rpn_conv)',
                                  involution_cfg=involution_cfg)
        self.involution_cfg = dict(involution_cfg)  # read by _init_layers, which the parent calls
        super().__init__(in_channels, num_classes=num_classes, init_cfg=init_cfg, num_convs=num_convs, **kwargs)

    def _init_layers(self) -> None:
        """Build ``rpn_conv`` (involutions), ``rpn_cls`` and ``rpn_reg``."""
        check_same_channels(type(self).__name__, self.in_channels, self.feat_channels, 'feat_channels')
        if self.num_convs == 1:
            self.rpn_conv = Involution(self.in_channels, **self.involution_cfg)
        else:
            # ReLUs not in place, as in mmdet's RPNHead with several convs
            self.rpn_conv = nn.Sequential(*(involution_block(self.in_channels, self.involution_cfg, inplace=False)
                                            for _ in range(self.num_convs)))
        self.rpn_cls = nn.Conv2d(self.feat_channels, self.num_base_priors * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(self.feat_channels, self.num_base_priors * self.bbox_coder.encode_size, 1)
