"""Launching the fused involution kernels (``involution_kernels.py``): outputs, layouts, grids, and the two
matrix products of the backward pass.

Forward: one kernel. Backward: ``grad_kernels_kernel`` writes the gradient of the generated kernels,
``gk (G * K * K, B * Ho * Wo)``, which exists only during the backward call; the gradients of ``r``, of the span
weight and of its bias are then two matrix products with it (``torch.mm``: cuBLAS, tensor cores; the bias
gradient is the weight gradient's product with a column of ones appended to ``r``). ``grad_input_kernel``
gives the input gradient, generating the kernels again from ``r``.

Inputs whose channels are not adjacent in memory (contiguous NCHW) are copied to channels_last first when
``stage`` is set (the default) for the tensors a kernel reads once per tap (``x``; ``grad_out`` and ``r`` for
the input gradient): a channels_last tile loads 16-byte vectors of a group's channels, an NCHW one one value
at a time. Outputs keep the layout of the tensor they are the gradient of (``output_memory_format``).
"""
import contextlib
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ..geometry import output_memory_format
from ..self_check import float32_convs_use_tf32
from .involution_kernels import fused_forward_kernel, grad_input_kernel, grad_kernels_kernel
from .involution_tiles import TileConfig, default_config, next_power_of_2


def fused_forward(x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel_size: int,
                  stride: int, padding: int, dilation: int, config: Optional[TileConfig] = None,
                  stage: bool = True) -> torch.Tensor:
    """The involution of ``x`` with the kernels generated from ``r`` by the 1x1 conv ``(weight, bias)``.

    Args:
        x (Tensor): ``(B, C, H, W)``.
        r (Tensor): ``(B, R, Ho, Wo)``, at the output's size.
        weight (Tensor): ``(G * K * K, R)``.
        bias (Tensor): ``(G * K * K,)``.
        kernel_size, stride, padding, dilation (int): The aggregation's geometry.
        config (TileConfig, optional): Tiles; ``default_config`` of the shape when None.
        stage (bool): Copy a non-channels_last ``x`` to channels_last first. Defaults to True.

    Returns:
        Tensor: ``(B, C, Ho, Wo)`` in the layout of ``x``.
    """
    batch, channels, height, width = x.shape
    out_h, out_w = r.shape[2:]
    groups = weight.shape[0] // kernel_size**2
    config = config or default_config(groups, channels // groups, (out_h, out_w))
    bias = bias.contiguous()  # the kernels read the bias with unit stride
    out = _empty_like_layout((batch, channels, out_h, out_w), x)
    xs = _staged(x, stage)
    grid = (batch * triton.cdiv(out_h, config.block_h) * triton.cdiv(out_w, config.block_w),
            triton.cdiv(groups, config.block_g))
    with _on(x.device):
        fused_forward_kernel[grid](xs, r, weight, bias, out, height, width, out_h, out_w, groups, *xs.stride(),
                                   *r.stride(), *out.stride(), *weight.stride(),
                                   **_constants(x, weight, kernel_size, stride, padding, dilation, config),
                                   **_span_constants(x, weight))
    return out


def fused_grad_input(grad_out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor, kernel_size: int, stride: int, padding: int, dilation: int,
                     config: Optional[TileConfig] = None, stage: bool = True) -> torch.Tensor:
    """The gradient of ``fused_forward`` for ``x`` (whose values are not read: only its shape and layout).

    Args: as ``fused_forward``, with ``grad_out`` of the output's shape.

    Returns:
        Tensor: ``grad_x`` in the layout of ``x``.
    """
    batch, channels, height, width = x.shape
    out_h, out_w = r.shape[2:]
    groups = weight.shape[0] // kernel_size**2
    config = config or default_config(groups, channels // groups, (out_h, out_w))
    bias = bias.contiguous()  # the kernels read the bias with unit stride
    grad_x = _empty_like_layout(x.shape, x)
    gos, rs = _staged(grad_out, stage), _staged(r, stage)
    # one tile grid per residue class of input positions modulo the stride, per sample
    tiles = (triton.cdiv(triton.cdiv(height, stride), config.block_h) *
             triton.cdiv(triton.cdiv(width, stride), config.block_w))
    grid = (batch * stride * stride * tiles, triton.cdiv(groups, config.block_g))
    with _on(x.device):
        grad_input_kernel[grid](gos, rs, weight, bias, grad_x, height, width, out_h, out_w, groups, *gos.stride(),
                                *rs.stride(), *grad_x.stride(), *weight.stride(),
                                **_constants(x, weight, kernel_size, stride, padding, dilation, config),
                                **_span_constants(x, weight))
    return grad_x


def fused_grad_kernels(grad_out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor,
                       kernel_size: int, stride: int, padding: int, dilation: int,
                       config: Optional[TileConfig] = None,
                       stage: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of ``fused_forward`` for ``r``, ``weight`` and ``bias``.

    Args: as ``fused_forward``, with ``grad_out`` of the output's shape.

    Returns:
        tuple[Tensor]: ``grad_r`` (in the layout of ``r``), ``grad_weight`` ``(G * K * K, R)`` and
        ``grad_bias`` ``(G * K * K,)``, in the dtype of ``x``.
    """
    batch, channels, height, width = x.shape
    reduced, out_h, out_w = r.shape[1:]
    groups = weight.shape[0] // kernel_size**2
    config = config or default_config(groups, channels // groups, (out_h, out_w))
    positions = batch * out_h * out_w
    grad_kernels = torch.empty((weight.shape[0], positions), dtype=x.dtype, device=x.device)
    tiles = batch * triton.cdiv(out_h, config.block_h) * triton.cdiv(out_w, config.block_w)
    xs = _staged(x, stage)
    with _on(x.device):
        grad_kernels_kernel[(tiles, triton.cdiv(groups, config.block_g))](
            grad_out, xs, grad_kernels, height, width, out_h, out_w, groups, positions, *grad_out.stride(),
            *xs.stride(), **_constants(x, weight, kernel_size, stride, padding, dilation, config))
    # [r | 1 | 0...] as a (positions, R + 1 + padding) matrix, in the position order of grad_kernels' columns;
    # the padding keeps rows a multiple of 8 values long (aligned for tensor cores)
    r_ones = torch.empty((positions, -(-(reduced + 1) // 8) * 8), dtype=x.dtype, device=x.device)
    r_ones[:, :reduced].view(batch, out_h, out_w, reduced).copy_(r.permute(0, 2, 3, 1))
    r_ones[:, reduced] = 1
    r_ones[:, reduced + 1:] = 0
    weight_and_bias = torch.mm(grad_kernels, r_ones)
    grad_r = _empty_like_layout(r.shape, r)
    rows = grad_r.permute(0, 2, 3, 1)  # (B, Ho, Wo, R): one matrix row per position when r is channels_last
    if rows.is_contiguous():
        torch.mm(grad_kernels.t(), weight, out=rows.view(positions, reduced))
    else:
        rows.copy_(torch.mm(grad_kernels.t(), weight).view(batch, out_h, out_w, reduced))
    return grad_r, weight_and_bias[:, :reduced].contiguous(), weight_and_bias[:, reduced].contiguous()


def _constants(x, weight, kernel_size, stride, padding, dilation, config: TileConfig) -> dict:
    """The compile-time arguments every kernel takes, and the launch options."""
    groups = weight.shape[0] // kernel_size**2
    group_channels = x.shape[1] // groups
    return dict(K=kernel_size, STRIDE=stride, PAD=padding, DIL=dilation, GC=group_channels,
                BLOCK_C=next_power_of_2(group_channels), BLOCK_H=config.block_h, BLOCK_W=config.block_w,
                BLOCK_G=config.block_g, EVEN_G=groups % config.block_g == 0,
                ACC=tl.float64 if x.dtype == torch.float64 else tl.float32, num_warps=config.num_warps,
                num_stages=config.num_stages)


def _span_constants(x, weight) -> dict:
    """The compile-time arguments of the kernels that generate kernels (a ``tl.dot`` over R)."""
    reduced = weight.shape[1]
    return dict(R=reduced, BLOCK_R=max(16, next_power_of_2(reduced)), PRECISION=_dot_precision(x.dtype),
                DOT_FP32=x.device.type == 'cpu' and x.dtype == torch.bfloat16)  # CPU: the interpreter


def _dot_precision(dtype: torch.dtype) -> str:
    """float32 products in TF32 when cuDNN may use it for convolutions (the unfused layer's span conv does,
    by default), else exact."""
    return 'tf32' if dtype == torch.float32 and float32_convs_use_tf32() else 'ieee'


def variant(kernel: str, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, kernel_size: int, stride: int,
            padding: int, dilation: int, grad_out: Optional[torch.Tensor] = None) -> tuple:
    """What tells apart the compiled variants a call of ``kernel`` (``'forward'``, ``'grad_input'``,
    ``'grad_kernels'``) with these inputs launches: device, dtype, product precision, compile-time constants,
    tiles, the layouts and 16-byte alignment of the tensors the kernels read, and the sizes Triton specialises
    when they are 1. (Triton also specialises integers divisible by 16; those are not told apart here.)"""
    batch, channels, height, width = x.shape
    out_h, out_w = r.shape[2:]
    groups = weight.shape[0] // kernel_size**2
    config = default_config(groups, channels // groups, (out_h, out_w))
    return (kernel, x.device, x.dtype, _dot_precision(x.dtype), kernel_size, stride, padding, dilation,
            channels // groups, weight.shape[1], config, groups % config.block_g == 0,
            height == 1, width == 1, out_h == 1, out_w == 1, groups == 1, channels // groups == 1,
            _layout(x), _layout(r), _layout(weight), None if grad_out is None else _layout(grad_out))


def _layout(t: torch.Tensor) -> tuple:
    """Whether ``t``'s channels are adjacent in memory, and whether its first element is 16-byte aligned."""
    return t.stride(1) == 1, t.data_ptr() % 16 == 0


def _staged(t: torch.Tensor, stage: bool) -> torch.Tensor:
    """``t`` in channels_last when staging is asked for and its channels are not adjacent yet."""
    if stage and t.stride(1) != 1 and t.shape[1] > 1:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _empty_like_layout(size, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(size, dtype=like.dtype, device=like.device, memory_format=output_memory_format(like))


def _on(device: torch.device):
    """Launch on ``device`` (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()
