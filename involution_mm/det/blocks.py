"""The building block the involution heads share: an involution followed by an optional norm and a ReLU."""
from typing import Optional

import torch.nn as nn
from mmcv.cnn import build_norm_layer

from ..layers import Involution


def involution_block(channels: int,
                     involution_cfg: dict,
                     conv_cfg: Optional[dict] = None,
                     norm_cfg: Optional[dict] = None,
                     inplace: bool = True) -> nn.Sequential:
    """``Sequential(Involution, [norm], ReLU)``: what replaces a 3x3 ConvModule in the involution heads.

    The involution sits at index 0, so its state-dict keys are ``<name>.0.conv1.*`` and ``<name>.0.conv2.*``
    as in the released involution mask heads (which have no norm).

    Args:
        channels (int): Input and output channels (an involution keeps the channel count).
        involution_cfg (dict): Arguments of :class:`Involution` besides ``channels``, e.g.
            ``dict(kernel_size=7)``.
        conv_cfg (dict, optional): Conv config of the kernel-generation convs, unless ``involution_cfg``
            names one. Defaults to None.
        norm_cfg (dict, optional): Norm after the involution; None for none, as in the paper.
            Defaults to None.
        inplace (bool): Whether the ReLU works in place. Defaults to True.
    """
    layers = [Involution(channels, **{'conv_cfg': conv_cfg, **involution_cfg})]
    if norm_cfg is not None:
        layers.append(build_norm_layer(norm_cfg, channels)[1])
    layers.append(nn.ReLU(inplace=inplace))
    return nn.Sequential(*layers)


def check_same_channels(head: str, in_channels: int, out_channels: int, out_name: str) -> None:
    """Refuse a head config whose involution would have to change the channel count."""
    if in_channels != out_channels:
        raise ValueError(f'{head}: an involution keeps the channel count, so {out_name} ({out_channels}) must '
                         f'equal in_channels ({in_channels}); set {out_name}={in_channels} or use the '
                         'convolutional head')
