"""Involution written with standard tensor operations only, for exporters (ONNX) and as a readable reference.

The input is zero-padded once, and each kernel tap adds ``x`` read through one strided slice, weighted by that
tap's kernel values: a pad, one slice per kernel row and one per tap, a split of the kernels into taps, one
multiply and one add per tap, and reshapes. Every one of them
is a standard ONNX operator, so ONNX Runtime and TensorRT take the exported graph as it is, and the batch
(and the spatial size) can stay dynamic. No tensor ``K * K`` times the input's size is made.

Alternatives measured on ONNX Runtime's CPU provider (docs/benchmarks.md, issue 22) were no faster: unfolding
the taps (one-hot grouped Conv, or Slices and Concat) then one Mul and a ReduceSum, the same per kernel row,
and MatMul or Einsum per output position.
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
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    # (B, G, C / G, H + 2 p_h, W + 2 p_w); a reshape rather than unflatten, which ONNX opsets below 13 lack
    grouped = padded.reshape(padded.shape[0], groups, -1, padded.shape[2], padded.shape[3])
    tap_weights = weight.flatten(2, 3).split(1, dim=2)  # K_h * K_w of (B, G, 1, H_out, W_out)
    out = None
    for i in range(k_h):
        top = i * dilation[0]
        rows = grouped[..., top:top + (out_h - 1) * stride[0] + 1:stride[0], :]
        for j in range(k_w):
            left = j * dilation[1]
            term = rows[..., left:left + (out_w - 1) * stride[1] + 1:stride[1]] * tap_weights[i * k_w + j]
            out = term if out is None else out + term
    return out.flatten(1, 2)
