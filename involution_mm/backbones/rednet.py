"""RedNet: ResNet with every bottleneck 3x3 conv replaced by a 7x7 involution (Li et al., CVPR 2021)."""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import Involution
from ..layers.arguments import check_int, check_involution_channels, check_norm_cfg, is_int
from .pretrained import pretrained_loaded_last


def _norm_channels(stem_channels: int, base_channels: int, num_stages: int) -> Dict[str, int]:
    """Where RedNet builds norm layers from ``norm_cfg``, and the channels of each, in network order."""
    half = stem_channels // 2
    channels = {
        'stem.0 (the first stem conv)': half,
        "stem.1.conv1 (the stem involution's kernel generation)": half // 4,
        'stem.4 (the last stem conv)': stem_channels,
    }
    for i in range(num_stages):
        mid = base_channels * 2**i
        channels[f'layer{i + 1}.0 (norm1)'] = mid
        channels[f"layer{i + 1}.0.conv2.conv1 (the involution's kernel generation)"] = mid // 4
        channels[f'layer{i + 1}.0 (norm3)'] = mid * RedNetBottleneck.expansion
    return channels


class RedNetBottleneck(BaseModule):
    """conv1x1 - involution - conv1x1 bottleneck with expansion 4; the involution carries the stride.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels (4x the middle channels).
        stride (int): Stride of the involution. Defaults to 1.
        dilation (int): Dilation of the involution. Defaults to 1.
        downsample (nn.Module, optional): Projection of the identity branch. Defaults to None.
        involution_kernel (int): Kernel size of the involution. Defaults to 7.
        involution_backend (str): Backend of the involution op. Defaults to 'auto'.
        with_cp (bool): Trade compute for memory with gradient checkpointing. Defaults to False.
        conv_cfg (dict, optional): Conv layer config. Defaults to None.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Initialization config. Defaults to None.
    """
    expansion = 4

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 involution_kernel: int = 7,
                 involution_backend: str = 'auto',
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        mid_channels = out_channels // self.expansion
        self.in_channels, self.out_channels = in_channels, out_channels
        self.with_cp = with_cp
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, mid_channels, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, mid_channels, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(norm_cfg, out_channels, postfix=3)
        self.conv1 = build_conv_layer(conv_cfg, in_channels, mid_channels, 1, bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = Involution(mid_channels, involution_kernel, stride, dilation, conv_cfg=conv_cfg,
                                norm_cfg=norm_cfg, backend=involution_backend)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = build_conv_layer(conv_cfg, mid_channels, out_channels, 1, bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    @property
    def norm3(self) -> nn.Module:
        return getattr(self, self.norm3_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def residual(x):
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.relu(self.norm2(self.conv2(out)))
            out = self.norm3(self.conv3(out))
            out += x if self.downsample is None else self.downsample(x)  # in place: no fresh tensor a block
            return out

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(residual, x, use_reentrant=False)
        else:
            out = residual(x)
        return self.relu(out)


class RedNet(BaseModule):
    """RedNet backbone (Li et al., "Involution: Inverting the Inherence of Convolution for Visual
    Recognition", CVPR 2021).

    Stem: 3x3 conv (stride 2) to ``stem_channels // 2``, an involution, BN, ReLU, 3x3 conv to
    ``stem_channels``, then a 3x3 max-pool (stride 2). Four stages of involution bottlenecks follow.
    State-dict keys and shapes match the released checkpoints.

    Args:
        depth (int): One of 26, 38, 50, 101, 152.
        in_channels (int): Input image channels. Defaults to 3.
        stem_channels (int): Output channels of the stem. Defaults to 64.
        base_channels (int): Middle channels of the first stage. Defaults to 64.
        num_stages (int): Stages of the network, 1 to 4. Defaults to 4.
        strides (Sequence[int]): Stride of the first block of each stage. Defaults to ``(1, 2, 2, 2)``.
        dilations (Sequence[int]): Dilation of each stage. Defaults to ``(1, 1, 1, 1)``.
        out_indices (Sequence[int]): Stages whose outputs are returned. Defaults to ``(3, )``.
        stem_involution_kernel (int): Kernel size of the stem involution: 3 in the ImageNet models, 7 in the
            detection and segmentation backbones. Defaults to 3.
        involution_kernel (int): Kernel size of the bottleneck involutions. Defaults to 7.
        involution_backend (str): Backend of the involution op. Defaults to 'auto'.
        frozen_stages (int): Stages to freeze (no gradients, eval mode), -1 to ``num_stages``; 0 freezes the
            stem only, -1 nothing. Defaults to -1.
        conv_cfg (dict, optional): Conv layer config. Defaults to None.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN', requires_grad=True)``.
        norm_eval (bool): Keep norm layers in eval mode while training (frozen running stats).
            Defaults to False.
        with_cp (bool): Use gradient checkpointing in the bottlenecks. Defaults to False.
        zero_init_residual (bool): Zero-initialise the last norm of each bottleneck (weights a pretrained
            checkpoint holds are loaded over it). Defaults to True.
        init_cfg (dict | list[dict], optional): Initialization config. ``Pretrained`` entries load after the
            other entries (or, without any, after the default Kaiming/constant initialisation); a checkpoint
            that fits no weight is refused, one that fits some is reported with the counts.

    Raises:
        TypeError: an argument is not of its type (for example ``depth='50'``, ``norm_cfg=None``).
        ValueError: an argument is out of range (an unknown depth, ``frozen_stages`` beyond the stages), gives
            an involution channels it cannot take (``stem_channels=2``), or names a norm that cannot be built
            for every layer (``norm_cfg=dict(type='GN', num_groups=32)``: the stem involution normalises 8).

    Example:
        >>> import torch
        >>> from involution_mm.backbones import RedNet
        >>> model = RedNet(depth=26, out_indices=(0, 1, 2, 3)).eval()
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 256, 16, 16)
        (1, 512, 8, 8)
        (1, 1024, 4, 4)
        (1, 2048, 2, 2)
    """

    arch_settings = {
        26: (1, 2, 4, 1),
        38: (2, 3, 5, 2),
        50: (3, 4, 6, 3),
        101: (3, 4, 23, 3),
        152: (3, 8, 36, 3),
    }

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (3, ),
                 stem_involution_kernel: int = 3,
                 involution_kernel: int = 7,
                 involution_backend: str = 'auto',
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d']),
                     dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
                 ]) -> None:
        super().__init__(init_cfg)
        if not is_int(depth):
            raise TypeError(f'RedNet depth must be an int, one of {sorted(self.arch_settings)}, got {depth!r} '
                            f'({type(depth).__name__})')
        if depth not in self.arch_settings:
            raise ValueError(f'invalid depth {depth} for RedNet; choose one of {sorted(self.arch_settings)}')
        for name, value in (('in_channels', in_channels), ('stem_channels', stem_channels),
                            ('base_channels', base_channels), ('num_stages', num_stages)):
            check_int('RedNet', name, value, low=1)
        for name, values in (('strides', strides), ('dilations', dilations), ('out_indices', out_indices)):
            if not isinstance(values, Sequence) or not all(is_int(v) for v in values):
                raise TypeError(f'RedNet {name} must be a sequence of ints, got {values!r}')
        if not 1 <= num_stages <= 4 or len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(f'RedNet needs 1 to 4 stages with one stride and one dilation each, got '
                             f'num_stages={num_stages}, strides={strides}, dilations={dilations}')
        if not all(v >= 1 for v in (*strides, *dilations)):
            raise ValueError(f'RedNet strides and dilations must be positive, got strides={strides}, '
                             f'dilations={dilations}')
        if not out_indices or not all(0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices {out_indices} must name stages in [0, {num_stages})')
        check_int('RedNet', 'frozen_stages', frozen_stages, low=-1, high=num_stages)
        check_involution_channels('RedNet', 'stem_channels', stem_channels, 'its stem involution (stem.1)', scale=2)
        check_involution_channels('RedNet', 'base_channels', base_channels,
                                  'the involutions of its first stage (layer1.*.conv2)')
        check_norm_cfg('RedNet', norm_cfg, _norm_channels(stem_channels, base_channels, num_stages))
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self.stage_blocks = self.arch_settings[depth][:num_stages]

        half = stem_channels // 2
        self.stem = nn.Sequential(
            ConvModule(in_channels, half, 3, stride=2, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg),
            Involution(half, stem_involution_kernel, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                       backend=involution_backend),
            build_norm_layer(norm_cfg, half)[1],
            nn.ReLU(inplace=True),
            ConvModule(half, stem_channels, 3, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.res_layers = []
        channels, out_channels = stem_channels, base_channels * RedNetBottleneck.expansion
        for i, num_blocks in enumerate(self.stage_blocks):
            blocks = []
            for b in range(num_blocks):
                stride = strides[i] if b == 0 else 1
                downsample = None
                if stride != 1 or channels != out_channels:
                    downsample = nn.Sequential(
                        build_conv_layer(conv_cfg, channels, out_channels, 1, stride=stride, bias=False),
                        build_norm_layer(norm_cfg, out_channels)[1])
                blocks.append(
                    RedNetBottleneck(channels, out_channels, stride, dilations[i], downsample,
                                     involution_kernel=involution_kernel, involution_backend=involution_backend,
                                     with_cp=with_cp, conv_cfg=conv_cfg, norm_cfg=norm_cfg))
                channels = out_channels
            layer_name = f'layer{i + 1}'
            self.add_module(layer_name, nn.Sequential(*blocks))
            self.res_layers.append(layer_name)
            out_channels *= 2
        self.feat_dim = channels
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        frozen = ([self.stem] if self.frozen_stages >= 0 else []) + [
            getattr(self, f'layer{i}') for i in range(1, min(self.frozen_stages, len(self.res_layers)) + 1)
        ]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def init_weights(self) -> None:
        """Initialise (zero_init_residual included), then load the ``Pretrained`` entries of ``init_cfg`` on
        top, in dict or list form; see ``backbones/pretrained.py``."""
        with pretrained_loaded_last(self):
            super().init_weights()
            if self.zero_init_residual:
                for m in self.modules():
                    if isinstance(m, RedNetBottleneck):
                        constant_init(m.norm3, 0)

    def forward(self, x: torch.Tensor) -> tuple:
        x = self.maxpool(self.stem(x))
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'RedNet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
