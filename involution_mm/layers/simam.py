"""SimAM: parameter-free 3-D attention from a closed-form neuron energy (Yang et al., ICML 2021)."""
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

# Half-precision inputs are upcast for the statistics: the squared deviations overflow float16 and the
# spatial sums lose precision in both half formats.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


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

    Args:
        in_channels (int, optional): Channels of the input, only checked when given (SimAM works on any
            number of channels). Defaults to None.
        e_lambda (float): The regulariser lambda of the energy function; must be positive. The paper's
            module uses 1e-4; its ImageNet and COCO models use 0.1. Defaults to 1e-4.
    """
    _abbr_ = 'simam'  # plugin layer name in mmcv's build_plugin_layer

    def __init__(self, in_channels: Optional[int] = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        if not e_lambda > 0:
            raise ValueError(f'SimAM needs e_lambda > 0 (it keeps the energy finite on constant maps), '
                             f'got {e_lambda}')
        self.in_channels = in_channels
        self.e_lambda = float(e_lambda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or (self.in_channels is not None and x.shape[1] != self.in_channels):
            channels = 'C' if self.in_channels is None else self.in_channels
            raise ValueError(f'SimAM expects input (B, {channels}, H, W), got {tuple(x.shape)}')
        work = x.float() if x.dtype in _LOW_PRECISION else x
        n = max(x.shape[2] * x.shape[3] - 1, 1)  # d is all zeros when n == 0, so any n > 0 gives 0
        d = (work - work.mean(dim=(2, 3), keepdim=True)).pow(2)
        variance = d.sum(dim=(2, 3), keepdim=True) / n
        inverse_energy = d / (4 * (variance + self.e_lambda)) + 0.5
        return (work * torch.sigmoid(inverse_energy)).to(x.dtype)

    def forward_hook(self, module: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """A forward hook that applies SimAM to ``module``'s output (``module.register_forward_hook``)."""
        return self(output)

    def extra_repr(self) -> str:
        channels = '' if self.in_channels is None else f'in_channels={self.in_channels}, '
        return f'{channels}e_lambda={self.e_lambda:g}'
