"""The involution layer: a per-position kernel generated from the input, then aggregated by the op."""
from typing import Optional, Union

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from ..ops import involution
from ..ops.backends import check_backend_name
from ..ops.cpu_backend import cpu_runs
from ..ops.fused_involution import fused_involution, fused_kernels_run
from ..ops.self_check import auto_device
from .arguments import check_norm_cfg


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
        fused (str | bool): Whether the second kernel-generation conv and the aggregation run as one fused
            kernel (``involution_mm.ops.fused_involution``), which never stores the generated kernels: the
            compiled CPU kernels on CPU tensors (where they are built and ``backend`` is ``'auto'`` or
            ``'cpu'``), Triton on CUDA tensors. ``'auto'``: where such a kernel runs (Triton where its
            self-check passed), with a plain ``Conv2d`` span conv (the default ``conv_cfg``); ``True``:
            always (an error where it cannot run); ``False``: never. The unfused path (``conv2``, then the op
            with ``backend``) serves as the reference. Both give the same outputs to the dtype's precision and
            use the same parameters. Defaults to 'auto'.
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
                 fused: Union[str, bool] = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        _check_arguments(channels=channels, kernel_size=kernel_size, stride=stride, dilation=dilation,
                         group_channels=group_channels, reduction_ratio=reduction_ratio)
        if channels % group_channels:
            raise ValueError(f'Involution needs channels divisible by group_channels, got channels='
                             f'{channels} and group_channels={group_channels}')
        if channels < reduction_ratio or channels % reduction_ratio:
            raise ValueError(f'Involution needs channels divisible by reduction_ratio, got channels='
                             f'{channels} and reduction_ratio={reduction_ratio}')
        if kernel_size % 2 == 0:
            raise ValueError(f'Involution needs an odd kernel_size, got {kernel_size}')
        _check_choices(backend, fused)
        check_norm_cfg('Involution', norm_cfg, {'conv1 (its kernel generation)': channels // reduction_ratio},
                       optional=True)
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.groups = channels // group_channels
        self.backend = backend
        self.fused = fused
        self.conv1 = ConvModule(channels, channels // reduction_ratio, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                act_cfg=act_cfg)
        self.conv2 = ConvModule(channels // reduction_ratio, kernel_size**2 * self.groups, 1, conv_cfg=conv_cfg,
                                norm_cfg=None, act_cfg=None)
        # ceil_mode matches the aggregation's ceil(H / stride) on odd sizes; on even sizes it changes nothing.
        self.avgpool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        if fused is True and not self.fusable():
            raise ValueError('Involution(fused=True) needs a plain Conv2d with bias as the span conv (conv_cfg=None); '
                             "use fused='auto', which runs such layers unfused")

    def fusable(self) -> bool:
        """Whether the span conv can run inside the fused kernel: a plain ``Conv2d`` with bias, alone in
        ``conv2`` (a custom ``conv_cfg`` computes something else)."""
        conv = self.conv2.conv
        return (type(conv) is nn.Conv2d and conv.bias is not None and not self.conv2.with_norm
                and not self.conv2.with_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f'Involution({self.channels}) expects input (B, {self.channels}, H, W), got '
                             f'{tuple(x.shape)}')
        reduced = self.conv1(self.avgpool(x))  # a module of its own in both paths: BN sees the same batches
        fused_backend = self._fused_backend(x)
        if fused_backend is not None:
            conv = self.conv2.conv
            return fused_involution(x, reduced, conv.weight, conv.bias, self.kernel_size, self.stride,
                                    self.padding, self.dilation, backend=fused_backend)
        weight = self.conv2(reduced)
        batch, _, height, width = weight.shape
        weight = weight.view(batch, self.groups, self.kernel_size, self.kernel_size, height, width)
        return involution(x, weight, self.stride, self.padding, self.dilation, backend=self.backend)

    def _fused_backend(self, x: torch.Tensor) -> Optional[str]:
        """The fused op's backend for this call, or None for the unfused path. Tracing for ONNX or TorchScript
        (the FLOP counter) sees the unfused layer, made of standard operations and the involution op."""
        if self.fused is False or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return None
        if not self.fusable():
            if self.fused is True:
                raise RuntimeError('Involution(fused=True): conv2 is no longer a plain Conv2d with bias, so it '
                                   "cannot run fused; use fused='auto' or False")
            return None
        if self.backend in ('auto', 'cpu') and cpu_runs(x):
            return 'cpu'
        if self.fused is True:
            return 'triton'
        if not auto_device(x.device):  # CUDA (where the fused kernels passed their self-check: fused_kernels_run)
            return None
        # Compiled code leaves the choice to the op (it falls back to PyTorch operations where Triton cannot
        # run); eager code takes the unfused layer then, whose op has the CuPy kernels.
        return 'auto' if torch.compiler.is_compiling() or fused_kernels_run(x) else None

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'dilation={self.dilation}, groups={self.groups}, backend={self.backend!r}, fused={self.fused!r}')


def _check_arguments(**values: int) -> None:
    """Refuse a size argument that is not a positive int, in one line that says what to pass."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            hint = f'; pass {name}={int(value)}' if isinstance(value, float) and value.is_integer() else ''
            raise TypeError(f'Involution {name} must be an int, got {type(value).__name__} {value!r}{hint}')
        if value < 1:
            raise ValueError(f'Involution needs {name} >= 1, got {value}')


def _check_choices(backend: str, fused: Union[str, bool]) -> None:
    check_backend_name(backend)
    if not isinstance(fused, (bool, str)):
        raise TypeError(f"Involution fused must be 'auto', True or False, got {type(fused).__name__} {fused!r}")
    if isinstance(fused, str) and fused != 'auto':
        raise ValueError(f"Involution fused must be 'auto', True or False, got {fused!r}")
