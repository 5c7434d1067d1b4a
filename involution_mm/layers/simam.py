"""SimAM: parameter-free 3-D attention from a closed-form neuron energy (Yang et al., ICML 2021)."""
from numbers import Integral
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

from ..ops.simam import SMALLEST_E_LAMBDA, check_simam_arguments, simam


class SimAM(nn.Module):
    """SimAM attention: weighs every activation by the inverse of its minimal energy.

    For each channel of a ``(B, C, H, W)`` input, with ``n = H * W - 1`` and ``d = (x - mean_hw(x)) ** 2``,

        ``y = x * sigmoid(d / (4 * (sum_hw(d) / n + e_lambda)) + 0.5)``

    It has no parameters, so adding it to a network leaves the state dict unchanged. It can be used on its
    own, or as an mmcv plugin layer (``build_plugin_layer`` passes ``in_channels`` and names it ``simam``),
    e.g. ``plugins=[dict(cfg=dict(type='SimAM', e_lambda=0.1), stages=(True, True, True, True),
    position='after_conv2')]`` in the mmdet and mmseg ResNets.

    A 1x1 map has ``n = 0`` and ``d = 0``; the variance term is then taken as 0 (not 0 / 0), so the output
    is ``x * sigmoid(0.5)``, the same weight a constant map of any size gets. Half-precision inputs are
    processed in float32 and returned in their own dtype.

    It runs the ``involution_mm::simam`` operator (``involution_mm.ops.simam``): on CUDA the fused Triton
    kernels (one read and one write of the activation in the forward pass; autograd saves only the input),
    elsewhere the PyTorch formula above.

    Args:
        in_channels (int, optional): Channels of the input, only checked when given (SimAM works on any
            number of channels). Defaults to None.
        e_lambda (float): The regulariser lambda of the energy function; must be finite and at least
            ``SMALLEST_E_LAMBDA`` (1.18e-38, the smallest normal float32). The paper's module uses 1e-4; its
            ImageNet and COCO models use 0.1. Defaults to 1e-4.
        backend (str): ``'auto'`` (the fused kernels on CUDA where Triton runs, else the formula),
            ``'triton'`` or ``'pytorch'`` to force one. Defaults to ``'auto'``.
    """
    _abbr_ = 'simam'  # plugin layer name in mmcv's build_plugin_layer

    def __init__(self, in_channels: Optional[int] = None, e_lambda: float = 1e-4, backend: str = 'auto') -> None:
        super().__init__()
        if in_channels is not None and (isinstance(in_channels, bool) or not isinstance(in_channels, Integral)):
            raise TypeError(f'SimAM in_channels must be an int or None, got {type(in_channels).__name__} '
                            f'{in_channels!r}')
        if in_channels is not None and in_channels < 1:
            raise ValueError(f'SimAM in_channels must be at least 1 (or None to accept any), got {in_channels}')
        check_simam_arguments(e_lambda, backend)
        self.in_channels = None if in_channels is None else int(in_channels)
        self.e_lambda = float(e_lambda)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or (self.in_channels is not None and x.shape[1] != self.in_channels):
            channels = 'C' if self.in_channels is None else self.in_channels
            raise ValueError(f'SimAM expects input (B, {channels}, H, W), got {tuple(x.shape)}')
        return simam(x, self.e_lambda, self.backend)

    def forward_hook(self, module: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """A forward hook that applies SimAM to ``module``'s output (``module.register_forward_hook``)."""
        return self(output)

    def extra_repr(self) -> str:
        channels = '' if self.in_channels is None else f'in_channels={self.in_channels}, '
        backend = '' if self.backend == 'auto' else f', backend={self.backend!r}'
        return f'{channels}e_lambda={self.e_lambda:g}{backend}'
