"""FCN mask head whose 3x3 convs are 7x7 involutions followed by ReLU (Li et al., CVPR 2021)."""
from typing import Optional

import torch
import torch.nn as nn
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmengine.model import ModuleList

from ..layers.arguments import check_int, check_involution_cfg, check_involution_channels, check_norm_cfg
from .blocks import check_same_channels, involution_block


class InvolutionFCNMaskHead(FCNMaskHead):
    """mmdet's FCNMaskHead with each conv an involution + ReLU (official name ``FCNMaskHead_involution``).

    ``convs[i]`` is ``Sequential(Involution(in_channels, 7), ReLU)``, so the state-dict keys match the
    released models (``convs.N.0.conv1.*``, ``convs.N.0.conv2.*``, ``upsample``, ``conv_logits``).
    Upsampling, logits, targets, loss and mask pasting are mmdet's. An involution keeps the channel count,
    so ``conv_out_channels`` must equal ``in_channels``; ``conv_kernel_size`` is unused (the involution
    kernel size comes from ``involution_cfg``).

    Args:
        num_convs (int): Number of involution blocks. Defaults to 4.
        roi_feat_size (int): Reserved, as in FCNMaskHead. Defaults to 14.
        in_channels (int): Channels of the RoI features. Defaults to 256.
        conv_kernel_size (int): Unused; kept so FCNMaskHead configs port unchanged. Defaults to 3.
        conv_out_channels (int): Must equal ``in_channels``. Defaults to 256.
        num_classes (int): Number of classes. Defaults to 80.
        class_agnostic (bool): Predict one mask for all classes. Defaults to False.
        upsample_cfg (dict): Upsampling layer config. Defaults to ``dict(type='deconv', scale_factor=2)``.
        conv_cfg (dict, optional): Conv config of the kernel-generation convs. Defaults to None.
        norm_cfg (dict, optional): Norm after each involution; None (the paper) for none. Defaults to None.
        predictor_cfg (dict): Config of ``conv_logits``. Defaults to ``dict(type='Conv')``.
        loss_mask (dict): Mask loss config.
        involution_cfg (dict): Arguments of each ``Involution`` besides the channels.
            Defaults to ``dict(kernel_size=7)``.
        logits_init_std (float, optional): ``init_weights`` draws ``conv_logits`` from N(0, std^2) with a
            zero bias, so that a new head predicts 0.5 everywhere and its first mask loss is about log(2).
            None keeps FCNMaskHead's (and the original implementation's) Kaiming initialisation, under which
            the involution blocks amplify the RoI features 1.4-5x each and the first mask loss is 0.9 to 36
            (measured).
            Defaults to 0.001, as Detectron2 initialises its mask predictor.
        init_cfg (dict, optional): Must be None, as in FCNMaskHead. Defaults to None.
    """

    def __init__(self,
                 num_convs: int = 4,
                 roi_feat_size: int = 14,
                 in_channels: int = 256,
                 conv_kernel_size: int = 3,
                 conv_out_channels: int = 256,
                 num_classes: int = 80,
                 class_agnostic: bool = False,
                 upsample_cfg: dict = dict(type='deconv', scale_factor=2),
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 predictor_cfg: dict = dict(type='Conv'),
                 loss_mask: dict = dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0),
                 involution_cfg: dict = dict(kernel_size=7),
                 logits_init_std: Optional[float] = 0.001,
                 init_cfg: Optional[dict] = None) -> None:
        owner = type(self).__name__
        check_int(owner, 'num_convs', num_convs, low=0)
        check_int(owner, 'in_channels', in_channels, low=1)
        check_involution_cfg(owner, involution_cfg)
        check_same_channels(owner, in_channels, conv_out_channels, 'conv_out_channels')
        if logits_init_std is not None and not (isinstance(logits_init_std, (int, float))
                                                and not isinstance(logits_init_std, bool) and logits_init_std >= 0):
            raise ValueError(f'{owner} logits_init_std must be a number >= 0, or None for Kaiming, got '
                             f'{logits_init_std!r}')
        if num_convs:
            check_involution_channels(owner, 'in_channels', in_channels, 'its involutions (convs)',
                                      involution_cfg=involution_cfg)
            check_norm_cfg(owner, norm_cfg, {'convs (after each involution)': in_channels}, optional=True)
        # The parent builds everything but the convs; with equal channels its upsample and conv_logits
        # are the same with or without convs.
        super().__init__(
            num_convs=0,
            roi_feat_size=roi_feat_size,
            in_channels=in_channels,
            conv_kernel_size=conv_kernel_size,
            conv_out_channels=conv_out_channels,
            num_classes=num_classes,
            class_agnostic=class_agnostic,
            upsample_cfg=upsample_cfg,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            predictor_cfg=predictor_cfg,
            loss_mask=loss_mask,
            init_cfg=init_cfg)
        self.num_convs = num_convs
        self.involution_cfg = dict(involution_cfg)
        self.logits_init_std = logits_init_std
        self.convs = ModuleList(
            involution_block(in_channels, self.involution_cfg, conv_cfg, norm_cfg) for _ in range(num_convs))

    def init_weights(self) -> None:
        """FCNMaskHead's initialisation, then ``conv_logits`` from N(0, ``logits_init_std``^2) with zero bias.

        The involutions keep the Kaiming initialisation of their kernel-generation convs, as in the original
        implementation. Unlike 3x3 convs with that initialisation, whose output has the scale of their input,
        an involution block amplifies spatially correlated features (1.4-5x each, measured on RoI features),
        so under FCNMaskHead's Kaiming ``conv_logits`` the first logits of four blocks are 6-25 in RMS and the
        first mask loss 0.9 to 36 instead of log(2). Small logits weights make every new head start at log(2).
        """
        super().init_weights()
        conv = self.conv_logits
        if self.logits_init_std is not None and isinstance(getattr(conv, 'weight', None), torch.Tensor):
            nn.init.normal_(conv.weight, std=self.logits_init_std)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
