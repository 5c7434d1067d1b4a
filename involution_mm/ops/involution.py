"""The public involution operator and its backend dispatcher."""
import contextlib
import logging
from typing import Callable, Dict, Tuple

import torch

from .cupy_backend import cupy_usable, involution_cupy
from .geometry import Geometry, IntPair, check_inputs
from .pytorch_backend import involution_pytorch

Backend = Callable[[torch.Tensor, torch.Tensor, Geometry], torch.Tensor]
# name -> (function, availability check returning (usable, reason) for an input tensor)
_BACKENDS: Dict[str, Tuple[Backend, Callable[[torch.Tensor], Tuple[bool, str]]]] = {
    'cupy': (involution_cupy, cupy_usable),
    'pytorch': (involution_pytorch, lambda x: (True, 'it runs on every device')),
}
# 'auto' takes the first usable backend in this order.
_AUTO_ORDER = ['cupy', 'pytorch']
# Device types whose 'auto' choice has been logged (once per process; CPU has only one backend to choose).
_ANNOUNCED = {'cpu'}


def available_backends() -> list:
    """Names accepted by ``involution(..., backend=...)`` besides ``'auto'``."""
    return sorted(_BACKENDS)


def register_backend(name: str, function: Backend, is_usable: Callable[[torch.Tensor], Tuple[bool, str]],
                     prefer: bool = True) -> None:
    """Add a backend; with ``prefer`` it is tried before the others by ``backend='auto'``."""
    if name in _BACKENDS or name == 'auto':
        raise KeyError(f'involution backend {name!r} is already registered')
    _BACKENDS[name] = (function, is_usable)
    _AUTO_ORDER.insert(0 if prefer else len(_AUTO_ORDER), name)


def select_backend(x: torch.Tensor, backend: str = 'auto') -> str:
    """Resolve ``backend`` for input ``x``; raise a ValueError/RuntimeError that says what to do."""
    if backend == 'auto':
        return _choose_automatically(x)
    if backend not in _BACKENDS:
        raise ValueError(f"unknown involution backend {backend!r}; choose 'auto' or one of "
                         f'{available_backends()}')
    usable, reason = _BACKENDS[backend][1](x)
    if not usable:
        raise RuntimeError(f'involution backend {backend!r} cannot run on this input: {reason}')
    return backend


def _choose_automatically(x: torch.Tensor) -> str:
    """The first usable backend in ``_AUTO_ORDER``; the first choice per device type is logged with why."""
    passed_over = []
    for name in _AUTO_ORDER:
        usable, reason = _BACKENDS[name][1](x)
        if usable:
            break
        passed_over.append(f'{name!r} cannot run ({reason})')
    if x.device.type not in _ANNOUNCED:
        _ANNOUNCED.add(x.device.type)
        because = '; '.join(passed_over) if passed_over else reason
        _log(f'involution: {x.device.type} tensors use the {name!r} backend: {because}',
             logging.WARNING if passed_over else logging.INFO)
    return name


def _log(message: str, level: int) -> None:
    """Log through mmengine's current logger when mmengine is installed, else the standard logging."""
    try:
        from mmengine.logging import print_log
    except ImportError:
        logging.getLogger('involution_mm').log(level, message)
    else:
        print_log(message, logger='current', level=level)


def _autocast_dtype(x: torch.Tensor):
    """The dtype autocast asks for on x's device, or None when autocast is off there."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def involution(x: torch.Tensor, weight: torch.Tensor, stride: IntPair = 1, padding: IntPair = 0,
               dilation: IntPair = 1, backend: str = 'auto') -> torch.Tensor:
    """Involution: aggregate each position's neighbourhood with a kernel generated for that position.

    ``out[b, c, h, w] = sum_{i, j} weight[b, c // (C // G), i, j, h, w] *
    x[b, c, h * stride - padding + i * dilation, w * stride - padding + j * dilation]``, reading zeros
    outside ``x``.

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
        Tensor: ``(B, C, H_out, W_out)`` in the dtype of ``x``. Under ``torch.autocast`` both inputs are
        first cast to the autocast dtype (float64 inputs are left as they are, as autocast does).
    """
    cast_to = _autocast_dtype(x) if isinstance(x, torch.Tensor) else None
    guard = contextlib.nullcontext()
    if cast_to is not None:
        x, weight = (t.to(cast_to) if t.is_floating_point() and t.dtype != torch.float64 else t
                     for t in (x, weight))
        guard = torch.autocast(x.device.type, enabled=False)
    geo = check_inputs(x, weight, stride, padding, dilation)
    function = _BACKENDS[select_backend(x, backend)][0]
    with guard:
        return function(x, weight, geo)
