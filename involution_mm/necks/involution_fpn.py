"""FPN whose output convs are involutions; one class for mmdet and mmsegmentation."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from ..layers import Involution
from ..layers.arguments import check_int, check_involution_cfg, check_involution_channels, check_norm_cfg

EXTRA_CONV_SOURCES = ('on_input', 'on_lateral', 'on_output')


class InvolutionFPN(BaseModule):
    """Feature Pyramid Network with a 7x7 involution as each output conv (Li et al., CVPR 2021).

    Same arguments and behaviour as the FPN of mmdet and mmsegmentation; only ``fpn_convs[i]`` for the
    backbone levels become ``Involution(out_channels, 7)``. Extra levels (``add_extra_convs``) stay 3x3
    stride-2 convolutions, as in the paper. State-dict keys match the released involution-neck models.

    Args:
        in_channels (list[int]): Channels of each backbone level.
        out_channels (int): Channels of every output level.
        num_outs (int): Number of output levels.
        start_level (int): First backbone level used. Defaults to 0.
        end_level (int): Last backbone level used (inclusive); -1 means the last. Defaults to -1.
        add_extra_convs (bool | str): Make levels beyond the backbone with stride-2 convs instead of
            max-pooling; a string names their source: 'on_input', 'on_lateral' or 'on_output'. True means
            'on_input'. Defaults to False.
        relu_before_extra_convs (bool): Apply ReLU before all but the first extra conv. Defaults to False.
        no_norm_on_lateral (bool): Leave the norm out of the lateral convs. Defaults to False.
        conv_cfg (dict, optional): Conv config of lateral and extra convs. Defaults to None.
        norm_cfg (dict, optional): Norm config of lateral and extra convs. Defaults to None.
        act_cfg (dict, optional): Activation of lateral and extra convs. Defaults to None.
        upsample_cfg (dict): Arguments of ``F.interpolate`` in the top-down path.
            Defaults to ``dict(mode='nearest')``.
        involution_cfg (dict): Arguments of each output ``Involution`` (``kernel_size``, ``group_channels``,
            ``reduction_ratio``, ``norm_cfg``, ``backend``...). Defaults to ``dict(kernel_size=7)``.
        init_cfg (dict | list[dict]): Initialization config.
            Defaults to ``dict(type='Xavier', layer='Conv2d', distribution='uniform')``.
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 upsample_cfg: dict = dict(mode='nearest'),
                 involution_cfg: dict = dict(kernel_size=7),
                 init_cfg: Union[dict, List[dict]] = dict(type='Xavier', layer='Conv2d',
                                                         distribution='uniform')) -> None:
        super().__init__(init_cfg=init_cfg)
        _check_levels(in_channels, out_channels, num_outs, start_level, end_level)
        check_involution_cfg('InvolutionFPN', involution_cfg)
        check_involution_channels('InvolutionFPN', 'out_channels', out_channels,
                                  'its output involutions (fpn_convs)', involution_cfg=involution_cfg)
        check_norm_cfg('InvolutionFPN', norm_cfg, {'lateral_convs and extra convs': out_channels}, optional=True)
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.no_norm_on_lateral = no_norm_on_lateral
        self.upsample_cfg = upsample_cfg.copy()
        # end_level -1 (or the last level) allows extra levels; an earlier end_level gives exactly its levels
        self.backbone_end_level = self.num_ins if end_level in (-1, self.num_ins - 1) else end_level + 1
        self.start_level = start_level
        self.end_level = end_level
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, *EXTRA_CONV_SOURCES):
            raise ValueError(f'add_extra_convs must be a bool or one of {EXTRA_CONV_SOURCES}, got '
                             f'{add_extra_convs!r}')
        self.add_extra_convs = add_extra_convs

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(self.start_level, self.backbone_end_level):
            self.lateral_convs.append(
                ConvModule(in_channels[i], out_channels, 1, conv_cfg=conv_cfg,
                           norm_cfg=None if no_norm_on_lateral else norm_cfg, act_cfg=act_cfg, inplace=False))
            self.fpn_convs.append(Involution(out_channels, **involution_cfg))
        extra_levels = num_outs - self.backbone_end_level + self.start_level
        for i in range(extra_levels if self.add_extra_convs else 0):
            source_channels = (self.in_channels[self.backbone_end_level - 1]
                               if i == 0 and self.add_extra_convs == 'on_input' else out_channels)
            self.fpn_convs.append(
                ConvModule(source_channels, out_channels, 3, stride=2, padding=1, conv_cfg=conv_cfg,
                           norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False))

    def forward(self, inputs: Tuple[torch.Tensor]) -> tuple:
        if len(inputs) != self.num_ins:
            raise ValueError(f'{type(self).__name__} was built for {self.num_ins} input levels '
                             f'{self.in_channels}, got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                upsampled = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                upsampled = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + upsampled
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        used = len(laterals)
        if self.num_outs > used and not self.add_extra_convs:
            for _ in range(self.num_outs - used):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.num_outs > used:
            source = {'on_input': inputs[self.backbone_end_level - 1], 'on_lateral': laterals[-1],
                      'on_output': outs[-1]}[self.add_extra_convs]
            outs.append(self.fpn_convs[used](source))
            for i in range(used + 1, self.num_outs):
                outs.append(self.fpn_convs[i](F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        return tuple(outs)


def _check_levels(in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int,
                  end_level: int) -> None:
    """Refuse levels that would build a scrambled, empty or short pyramid, in one line each."""
    if not isinstance(in_channels, Sequence) or isinstance(in_channels, str) or not in_channels:
        raise TypeError(f'InvolutionFPN in_channels must be a list of ints (one per backbone level), got '
                        f'{in_channels!r}')
    for channels in in_channels:
        check_int('InvolutionFPN', 'in_channels', channels, low=1)
    for name, value in (('out_channels', out_channels), ('num_outs', num_outs)):
        check_int('InvolutionFPN', name, value, low=1)
    last = len(in_channels) - 1
    check_int('InvolutionFPN', 'start_level', start_level)
    if not 0 <= start_level <= last:
        raise ValueError(f'InvolutionFPN start_level must be from 0 to {last} (an index into the '
                         f'{len(in_channels)} levels of in_channels), got {start_level}')
    check_int('InvolutionFPN', 'end_level', end_level)
    if end_level != -1 and not start_level <= end_level <= last:
        raise ValueError(f'InvolutionFPN end_level must be -1 (the last level) or from start_level={start_level} '
                         f'to {last} (the last of the {len(in_channels)} levels of in_channels), got {end_level}')
    used = (last if end_level == -1 else end_level) - start_level + 1
    if end_level in (-1, last):
        if num_outs < used:
            raise ValueError(f'InvolutionFPN num_outs={num_outs} is fewer than the {used} backbone levels from '
                             f'start_level={start_level}; pass num_outs={used} or more')
    elif num_outs != used:
        raise ValueError(f'InvolutionFPN with end_level={end_level} outputs exactly levels {start_level} to '
                         f'{end_level}, so num_outs must be {used}, got {num_outs}; pass num_outs={used}, or '
                         'end_level=-1 to add extra levels')
