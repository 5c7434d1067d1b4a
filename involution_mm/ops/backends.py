"""The involution backends, and the choice among them.

A backend is three kernels (forward, input gradient, weight gradient) and a check of whether it can run on a
tensor. The registered ops (``library.py``) run the backend they are given by name; ``'auto'`` becomes the
first usable backend in ``_AUTO_ORDER``. Choices are worked out once per device and dtype and kept in a plain
dictionary.
"""
import logging
from typing import Callable, Dict, List, NamedTuple, Tuple

import torch

from .cpu_backend import cpu_forward, cpu_grad_input, cpu_grad_weight, cpu_usable
from .cupy_backend import cupy_forward, cupy_grad_input, cupy_grad_weight, cupy_usable
from .geometry import Geometry
from .pytorch_backend import involution_forward, involution_grad_input, involution_grad_weight
from .self_check import capturing

Kernel = Callable[[torch.Tensor, torch.Tensor, Geometry], torch.Tensor]
UsableCheck = Callable[[torch.Tensor], Tuple[bool, str]]


class Backend(NamedTuple):
    """One backend's kernels: ``forward(x, weight, geo)``, ``grad_input(grad_out, weight, geo)`` and
    ``grad_weight(grad_out, x, geo)``, and ``is_usable(x) -> (usable, why)``."""
    forward: Kernel
    grad_input: Kernel
    grad_weight: Kernel
    is_usable: UsableCheck


_BACKENDS: Dict[str, Backend] = {
    'cpu': Backend(cpu_forward, cpu_grad_input, cpu_grad_weight, cpu_usable),
    'cupy': Backend(cupy_forward, cupy_grad_input, cupy_grad_weight, cupy_usable),
    'pytorch': Backend(involution_forward, involution_grad_input, involution_grad_weight,
                       lambda x: (True, 'it runs on every device')),
}
# 'auto' takes the first usable backend in this order.
_AUTO_ORDER: List[str] = ['cpu', 'cupy', 'pytorch']
# Backends that serve one device type only: where 'auto' passes one over for a tensor on another device,
# its log line does not mention it.
_DEVICE_ONLY: Dict[str, str] = {'cpu': 'cpu', 'cupy': 'cuda'}
# (backend asked for, device type, device index, dtype) -> the backend that runs
_RESOLVED: Dict[tuple, str] = {}
# Device types whose 'auto' choice has been logged (once per process); meta tensors (shape inference) take
# the PyTorch backend as expected, so that is not announced, and CPU tensors announce only a fallback (the
# compiled CPU kernels not built).
_ANNOUNCED = {'meta'}
_QUIET = {'cpu'}


def available_backends() -> List[str]:
    """Names accepted by ``involution(..., backend=...)`` besides ``'auto'``."""
    return sorted(_BACKENDS)


def register_backend(name: str, backend: Backend, prefer: bool = True) -> None:
    """Add a backend; with ``prefer`` it is tried before the others by ``backend='auto'``."""
    if not isinstance(name, str) or name in _BACKENDS or name == 'auto':
        raise KeyError(f'involution backend {name!r} is already registered or not a valid name')
    _BACKENDS[name] = Backend(*backend)
    _AUTO_ORDER.insert(0 if prefer else len(_AUTO_ORDER), name)
    _RESOLVED.clear()


def check_backend_name(backend: object) -> None:
    """Refuse anything but ``'auto'`` or a registered name, with a one-line error that lists the choices."""
    if not isinstance(backend, str):
        raise TypeError(f"involution backend must be a string ('auto' or one of {available_backends()}), "
                        f'got {type(backend).__name__} {backend!r}')
    if backend != 'auto' and backend not in _BACKENDS:
        raise ValueError(f"unknown involution backend {backend!r}; choose 'auto' or one of "
                         f'{available_backends()}')


def select_backend(x: torch.Tensor, backend: str = 'auto') -> str:
    """Resolve ``backend`` for input ``x``; raise a TypeError/ValueError/RuntimeError that says what to do.

    The answer depends only on the name and ``x``'s device and dtype, so it is worked out once for each and
    kept in a plain dictionary: later calls cost one lookup (and nothing that ``torch.compile`` cannot see).
    """
    if not isinstance(backend, str):
        check_backend_name(backend)
    key = (backend, x.device.type, x.device.index, x.dtype)
    name = _RESOLVED.get(key)
    if name is None:
        name = _resolve(x, backend)
        if not capturing(x.device):  # a choice made during a CUDA-graph capture is not kept (self_check.py)
            _RESOLVED[key] = name
    return name


def kernels_for(x: torch.Tensor, backend: str) -> Backend:
    """The kernels the registered ops run for ``backend`` (a name, or ``'auto'``) on ``x``."""
    return _BACKENDS[select_backend(x, backend)]


def _resolve(x: torch.Tensor, backend: str) -> str:
    check_backend_name(backend)
    if backend == 'auto':
        return _first_usable(x)
    usable, reason = _BACKENDS[backend].is_usable(x)
    if not usable:
        raise RuntimeError(f'involution backend {backend!r} cannot run on this input: {reason}')
    return backend


def _first_usable(x: torch.Tensor) -> str:
    """The first usable backend in ``_AUTO_ORDER``; the first choice per device type is logged with why."""
    passed_over = []
    for name in _AUTO_ORDER:
        usable, reason = _BACKENDS[name].is_usable(x)
        if usable:
            break
        if _DEVICE_ONLY.get(name, x.device.type) == x.device.type:
            passed_over.append(f'{name!r} cannot run ({reason})')
    if x.device.type not in _ANNOUNCED and (passed_over or x.device.type not in _QUIET):
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
