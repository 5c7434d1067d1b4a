"""Involution written with standard tensor operations only, for exporters (ONNX) and as a readable reference.

The input is zero-padded along its height once; for each kernel row, one strided slice of it is unfolded
along the width by a grouped convolution with a fixed one-hot kernel (each channel gives ``K_w`` channels,
one per column tap), multiplied by that row's kernel values and summed over the ``K_w`` taps. Per kernel
row: a Slice, a Conv, a Mul and a ReduceSum; every one is a standard ONNX operator (opset 11), so ONNX
Runtime, OpenVINO and TensorRT take the exported graph as it is, and the batch (and, with the TorchScript
exporter, the spatial size) can stay dynamic. The largest tensor made is ``K_w`` times the output's size.

Measured on ONNX Runtime's CPU provider (docs/benchmarks.md, issue 22) against the other standard-operator
forms: one Mul and one Add per tap (the previous form, about three times as many operators), the ``K * K``
taps unfolded at once (one-hot Conv, or Slices and Concat) then a Mul and a ReduceSum, and MatMul or Einsum
per output position; in the whole RedNet-50 this one was the fastest at batch 1 and level or faster at
batch 8.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def involution_composite(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int],
                         padding: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """The involution op (see ``involution_mm.ops.involution``) on checked inputs, in standard operations.

    Args:
        x (Tensor): ``(B, C, H, W)``.
        weight (Tensor): ``(B, G, K_h, K_w, H_out, W_out)``.
        stride (tuple[int, int]): Stride of the sliding window.
        padding (tuple[int, int]): Zero padding on each side.
        dilation (tuple[int, int]): Spacing between kernel taps.

    Returns:
        Tensor: ``(B, C, H_out, W_out)``.
    """
    groups, k_h, k_w, out_h, out_w = weight.shape[1:]
    channels = int(x.shape[1])  # static, so the one-hot kernel below is a constant of the graph
    padded = F.pad(x, (0, 0, padding[0], padding[0]))
    one_hot = torch.eye(k_w, dtype=x.dtype, device=x.device).reshape(k_w, 1, 1, k_w).repeat(channels, 1, 1, 1)
    out = None
    for i in range(k_h):
        top = i * dilation[0]
        rows = padded[:, :, top:top + (out_h - 1) * stride[0] + 1:stride[0]]
        # (B, C * K_w, H_out, W_out): channel c's K_w column taps, side by side
        taps = F.conv2d(rows, one_hot, stride=(1, stride[1]), padding=(0, padding[1]), dilation=(1, dilation[1]),
                        groups=channels)
        taps = taps.reshape(-1, groups, channels // groups, k_w, out_h, out_w)
        term = (taps * weight[:, :, i].unsqueeze(2)).sum(3)
        out = term if out is None else out + term
    return out.reshape(-1, channels, out_h, out_w)
