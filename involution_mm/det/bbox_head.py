"""RoI box heads whose convs are 7x7 involutions followed by ReLU. Not in the paper; ours."""
from typing import Tuple

import torch.nn as nn
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead

from ..layers.arguments import check_involution_cfg, check_involution_channels
from .blocks import check_same_channels, involution_block


class InvolutionConvFCBBoxHead(ConvFCBBoxHead):
    """mmdet's ConvFCBBoxHead with each 3x3 ConvModule replaced by an involution block.

    Not in the paper (its "involution heads" are the RPN and mask heads): this extends the idea to the box
    head of Faster/Mask R-CNN. Each conv of the shared, cls and reg branches is
    ``Sequential(Involution(C, 7), [norm], ReLU)``, as in :class:`InvolutionFCNMaskHead`; the fcs,
    predictors, losses and initialisation are mmdet's. An involution keeps the channel count, so
    ``conv_out_channels`` must equal the channels entering each branch that has convs.

    Args:
        involution_cfg (dict): Arguments of each ``Involution`` besides the channels.
            Defaults to ``dict(kernel_size=7)``.
        **kwargs: Arguments of mmdet's ``ConvFCBBoxHead`` (``num_shared_convs``, ``num_shared_fcs``...,
            ``conv_out_channels``, ``conv_cfg`` for the kernel-generation convs, ``norm_cfg`` for a norm after
            each involution, ``init_cfg``...).
    """

    def __init__(self, involution_cfg: dict = dict(kernel_size=7), **kwargs) -> None:
        check_involution_cfg(type(self).__name__, involution_cfg)
        self.involution_cfg = dict(involution_cfg)  # read by _add_conv_fc_branch, which the parent calls
        super().__init__(**kwargs)

    def _add_conv_fc_branch(self,
                            num_branch_convs: int,
                            num_branch_fcs: int,
                            in_channels: int,
                            is_shared: bool = False) -> Tuple[nn.ModuleList, nn.ModuleList, int]:
        """Add a branch: involution blocks, then mmdet's fcs (built for the unchanged channel count)."""
        if num_branch_convs:
            check_same_channels(type(self).__name__, in_channels, self.conv_out_channels, 'conv_out_channels')
            check_involution_channels(type(self).__name__, 'in_channels', in_channels, 'its involutions',
                                      involution_cfg=self.involution_cfg)
        _, branch_fcs, last_layer_dim = super()._add_conv_fc_branch(0, num_branch_fcs, in_channels, is_shared)
        branch_convs = nn.ModuleList(
            involution_block(in_channels, self.involution_cfg, self.conv_cfg, self.norm_cfg)
            for _ in range(num_branch_convs))
        return branch_convs, branch_fcs, last_layer_dim


class InvolutionShared4Conv1FCBBoxHead(InvolutionConvFCBBoxHead):
    """Four shared involution blocks and one shared fc, like mmdet's ``Shared4Conv1FCBBoxHead``.

    Not in the paper; see :class:`InvolutionConvFCBBoxHead`.

    Args:
        fc_out_channels (int): Channels of the shared fc. Defaults to 1024.
        involution_cfg (dict): Arguments of each ``Involution`` besides the channels.
            Defaults to ``dict(kernel_size=7)``.
        **kwargs: Other arguments of mmdet's ``ConvFCBBoxHead`` (``in_channels``, ``roi_feat_size``,
            ``num_classes``, ``bbox_coder``, losses, ``init_cfg``...).
    """

    def __init__(self, fc_out_channels: int = 1024, involution_cfg: dict = dict(kernel_size=7), **kwargs) -> None:
        super().__init__(
            involution_cfg=involution_cfg,
            num_shared_convs=4,
            num_shared_fcs=1,
            num_cls_convs=0,
            num_cls_fcs=0,
            num_reg_convs=0,
            num_reg_fcs=0,
            fc_out_channels=fc_out_channels,
            **kwargs)
