"""The public involution operator: checks its inputs once and calls the registered op."""
import contextlib

import torch

from .backends import check_backend_name, select_backend
from .composite import involution_composite
from .geometry import IntPair, check_inputs
from .library import involution_op


def autocast_dtype(x: torch.Tensor):
    """The dtype autocast asks for on x's device, or None when autocast is off there."""
    device_type = x.device.type
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return None  # meta tensors, for one, have no autocast
    return torch.get_autocast_dtype(device_type)


def involution(x: torch.Tensor, weight: torch.Tensor, stride: IntPair = 1, padding: IntPair = 0,
               dilation: IntPair = 1, backend: str = 'auto') -> torch.Tensor:
    """Involution: aggregate each position's neighbourhood with a kernel generated for that position.

    ``out[b, c, h, w] = sum_{i, j} weight[b, c // (C // G), i, j, h, w] *
    x[b, c, h * stride - padding + i * dilation, w * stride - padding + j * dilation]``, reading zeros
    outside ``x``.

    It runs the registered op ``torch.ops.involution_mm.involution``, so it works under ``torch.compile``
    (no graph breaks), ``torch.export``, ``torch.jit.trace``, CUDA graphs and on meta tensors, and its
    gradients are differentiable again (double backward). During ONNX export it is written in standard
    operations instead (``composite.py``), so the exported model needs no custom domain.

    Args:
        x (Tensor): Input of shape ``(B, C, H, W)``; any memory layout.
        weight (Tensor): Kernels of shape ``(B, G, K_h, K_w, H_out, W_out)``; ``C`` must be divisible by ``G``
            and ``H_out, W_out`` must be the output size. Same dtype and device as ``x``.
        stride (int | tuple[int, int]): Stride of the sliding window. Defaults to 1.
        padding (int | tuple[int, int]): Zero padding on each side. Defaults to 0.
        dilation (int | tuple[int, int]): Spacing between kernel taps. Defaults to 1.
        backend (str): ``'auto'`` (fastest usable) or a name from ``available_backends()``.
            Defaults to ``'auto'``.

    Returns:
        Tensor: ``(B, C, H_out, W_out)`` in the dtype of ``x``, channels_last when ``x`` is. Under
        ``torch.autocast`` both inputs are first cast to the autocast dtype (float64 inputs are left as they
        are, as autocast does).
    """
    check_backend_name(backend)
    cast_to = autocast_dtype(x) if isinstance(x, torch.Tensor) else None
    guard = contextlib.nullcontext()
    if cast_to is not None:
        x, weight = (t.to(cast_to) if t.is_floating_point() and t.dtype != torch.float64 else t
                     for t in (x, weight))
        guard = torch.autocast(x.device.type, enabled=False)
    geo = check_inputs(x, weight, stride, padding, dilation)
    if torch.onnx.is_in_onnx_export():
        return involution_composite(x, weight, geo.stride, geo.padding, geo.dilation)
    if not torch.compiler.is_compiling():
        backend = select_backend(x, backend)  # errors now rather than inside the op; compiled code resolves there
    with guard:
        return involution_op(x, weight, geo.stride, geo.padding, geo.dilation, backend)
