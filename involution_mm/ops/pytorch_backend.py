"""Memory-lean involution in plain PyTorch (CPU and GPU).

Shift and accumulate: for every kernel tap ``(i, j)`` the output gains ``weight[:, :, i, j] * x`` read at the
tap's offset, through strided views of ``x``. Nothing K*K times larger than the input is ever made, in the
forward pass or the backward pass, and no padded copy of the input either (``Geometry.taps`` clips each tap
to the in-bounds region). Half-precision inputs accumulate in float32.

The three kernels (forward, input gradient, weight gradient) are what the registered ops run for the
``'pytorch'`` backend; autograd lives in ``library.py``.
"""
import torch

from .geometry import Geometry, output_memory_format


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are kept in: float32 for half types, the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _grouped(t: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """View ``(B, C, H, W)`` as ``(B, groups, group_channels, H, W)``; always a view, whatever the strides."""
    return t.unflatten(1, (geo.groups, geo.group_channels))


def _zeros(size: tuple, like: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A zero accumulator for a result of ``like``'s dtype, in the accumulation dtype."""
    return torch.empty(size, dtype=accumulation_dtype(like.dtype), device=like.device,
                       memory_format=memory_format).zero_()


def involution_forward(x: torch.Tensor, weight: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """``out[b, c, h, w] = sum_ij weight[b, c // group_channels, i, j, h, w] * x[b, c, tap(h, i), tap(w, j)]``."""
    out = _zeros((geo.batch, geo.channels) + geo.out_size, x, output_memory_format(x))
    out_g, x_g = _grouped(out, geo), _grouped(x, geo)
    for i, j, out_rows, out_cols, in_rows, in_cols in geo.taps():
        out_g[..., out_rows, out_cols].addcmul_(x_g[..., in_rows, in_cols],
                                                weight[:, :, None, i, j, out_rows, out_cols])
    return out.to(x.dtype)


def involution_grad_input(grad_out: torch.Tensor, weight: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The gradient for ``x``: every output's gradient, weighted by each tap, added back where it read."""
    grad_x = _zeros((geo.batch, geo.channels) + geo.in_size, grad_out, output_memory_format(grad_out))
    grad_g, grad_x_g = _grouped(grad_out, geo), _grouped(grad_x, geo)
    for i, j, out_rows, out_cols, in_rows, in_cols in geo.taps():
        grad_x_g[..., in_rows, in_cols].addcmul_(grad_g[..., out_rows, out_cols],
                                                 weight[:, :, None, i, j, out_rows, out_cols])
    return grad_x.to(grad_out.dtype)


def involution_grad_weight(grad_out: torch.Tensor, x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The gradient for the kernels: per tap, the output gradient times the input it read, summed over the
    channels of each group (into one reused product buffer)."""
    grad_w = torch.zeros((geo.batch, geo.groups) + geo.kernel + geo.out_size, dtype=x.dtype, device=x.device)
    grad_g, x_g = _grouped(grad_out, geo), _grouped(x, geo)
    product = torch.empty_like(grad_g)  # reused for every tap
    for i, j, out_rows, out_cols, in_rows, in_cols in geo.taps():
        grad_tap = grad_g[..., out_rows, out_cols]
        tap_product = product[..., :grad_tap.shape[-2], :grad_tap.shape[-1]]
        torch.mul(grad_tap, x_g[..., in_rows, in_cols], out=tap_product)
        grad_w[:, :, i, j, out_rows, out_cols] = tap_product.sum(2, dtype=accumulation_dtype(x.dtype))
    return grad_w
