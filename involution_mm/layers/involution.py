"""The involution layer: a per-position kernel generated from the input, then aggregated by the op."""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from ..ops import involution


class Involution(BaseModule):
    """Involution (Li et al., CVPR 2021) with the paper's kernel generation.

    The kernel for each output position comes from the input at that position: a 1x1 conv reduces the
    channels by ``reduction_ratio`` (with norm and activation), a second 1x1 conv maps them to
    ``kernel_size ** 2 * groups`` values. With ``stride > 1`` the input is average-pooled first. Each group of
    ``group_channels`` channels shares one kernel. Padding keeps the output at ``ceil(H / stride)``.

    State-dict keys follow the official implementation: ``conv1.conv.weight``, ``conv1.bn.*``,
    ``conv2.conv.weight`` and ``conv2.conv.bias``.

    Args:
        channels (int): Input and output channels; a multiple of ``group_channels``.
        kernel_size (int): Odd size of the generated kernel. Defaults to 7.
        stride (int): Stride of the aggregation. Defaults to 1.
        dilation (int): Spacing between kernel taps. Defaults to 1.
        group_channels (int): Channels sharing one kernel. Defaults to 16.
        reduction_ratio (int): Channel reduction of the kernel-generation bottleneck. Defaults to 4.
        conv_cfg (dict, optional): Config of the kernel-generation convs. Defaults to None (Conv2d).
        norm_cfg (dict): Norm after the first kernel-generation conv. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation after that norm. Defaults to ``dict(type='ReLU')``.
        backend (str): Backend of the involution op, see ``involution_mm.ops.involution``.
            Defaults to 'auto'.
        init_cfg (dict | list[dict], optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 channels: int,
                 kernel_size: int = 7,
                 stride: int = 1,
                 dilation: int = 1,
                 group_channels: int = 16,
                 reduction_ratio: int = 4,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 backend: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if channels % group_channels:
            raise ValueError(f'Involution needs channels divisible by group_channels, got channels='
                             f'{channels} and group_channels={group_channels}')
        if channels < reduction_ratio or channels % reduction_ratio:
            raise ValueError(f'Involution needs channels divisible by reduction_ratio, got channels='
                             f'{channels} and reduction_ratio={reduction_ratio}')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'Involution needs an odd kernel_size, got {kernel_size}')
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.groups = channels // group_channels
        self.backend = backend
        self.conv1 = ConvModule(channels, channels // reduction_ratio, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                act_cfg=act_cfg)
        self.conv2 = ConvModule(channels // reduction_ratio, kernel_size**2 * self.groups, 1, conv_cfg=conv_cfg,
                                norm_cfg=None, act_cfg=None)
        # ceil_mode matches the aggregation's ceil(H / stride) on odd sizes; on even sizes it changes nothing.
        self.avgpool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f'Involution({self.channels}) expects input (B, {self.channels}, H, W), got '
                             f'{tuple(x.shape)}')
        weight = self.conv2(self.conv1(self.avgpool(x)))
        batch, _, height, width = weight.shape
        weight = weight.view(batch, self.groups, self.kernel_size, self.kernel_size, height, width)
        return involution(x, weight, self.stride, self.padding, self.dilation, backend=self.backend)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'dilation={self.dilation}, groups={self.groups}, backend={self.backend!r}')
