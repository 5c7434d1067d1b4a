"""Memory-lean involution in plain PyTorch (CPU and GPU).

Shift and accumulate: for every kernel tap ``(i, j)`` the output gains ``weight[:, :, i, j] * x`` read at the
tap's offset, through strided views of ``x``. Nothing K*K times larger than the input is ever made, in the
forward pass or the backward pass, and no padded copy of the input either (``Geometry.taps`` clips each tap
to the in-bounds region). Half-precision inputs accumulate in float32.
"""
import torch

from .function import involution_function
from .geometry import Geometry


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are kept in: float32 for half types, the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _grouped(t: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """View ``(B, C, H, W)`` as ``(B, groups, group_channels, H, W)``; always a view, whatever the strides."""
    return t.unflatten(1, (geo.groups, geo.group_channels))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


def involution_forward(x: torch.Tensor, weight: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """``out[b, c, h, w] = sum_ij weight[b, c // group_channels, i, j, h, w] * x[b, c, tap(h, i), tap(w, j)]``."""
    out = torch.empty((geo.batch, geo.channels) + geo.out_size, dtype=accumulation_dtype(x.dtype),
                      device=x.device, memory_format=_memory_format(x)).zero_()
    out_g, x_g = _grouped(out, geo), _grouped(x, geo)
    for i, j, out_rows, out_cols, in_rows, in_cols in geo.taps():
        out_g[..., out_rows, out_cols].addcmul_(x_g[..., in_rows, in_cols],
                                                weight[:, :, None, i, j, out_rows, out_cols])
    return out.to(x.dtype)


def involution_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, geo: Geometry,
                        need_x_grad: bool = True, need_weight_grad: bool = True):
    """Gradients of ``involution_forward`` for ``x`` and ``weight`` (None where not needed)."""
    grad_g, x_g = _grouped(grad_out, geo), _grouped(x, geo)
    grad_x = grad_w = None
    if need_x_grad:
        grad_x = torch.zeros_like(x, dtype=accumulation_dtype(x.dtype))
        grad_x_g = _grouped(grad_x, geo)
    if need_weight_grad:
        grad_w = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        product = torch.empty_like(grad_g)  # reused for every tap
    for i, j, out_rows, out_cols, in_rows, in_cols in geo.taps():
        grad_tap = grad_g[..., out_rows, out_cols]
        if need_x_grad:
            grad_x_g[..., in_rows, in_cols].addcmul_(grad_tap, weight[:, :, None, i, j, out_rows, out_cols])
        if need_weight_grad:
            tap_product = product[..., :grad_tap.shape[-2], :grad_tap.shape[-1]]
            torch.mul(grad_tap, x_g[..., in_rows, in_cols], out=tap_product)
            grad_w[:, :, i, j, out_rows, out_cols] = tap_product.sum(2, dtype=accumulation_dtype(x.dtype))
    return (None if grad_x is None else grad_x.to(x.dtype)), grad_w


# Named so for traces and the FLOP counter (involution_mm.complexity).
InvolutionFunction = involution_function('InvolutionFunction', involution_forward, involution_backward)
involution_pytorch = InvolutionFunction.run  # run the PyTorch backend on checked inputs
