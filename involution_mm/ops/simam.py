"""SimAM as a ``torch.library`` operator: fused Triton kernels on CUDA, the PyTorch formula elsewhere.

    involution_mm::simam(x, e_lambda, backend) -> y
    involution_mm::simam_backward(grad, x, e_lambda, backend) -> grad_x

``y = x * sigmoid(d / (4 * (sum_hw(d) / n + e_lambda)) + 0.5)`` with ``d = (x - mean_hw(x)) ** 2`` and
``n = max(H * W - 1, 1)``, per ``(sample, channel)`` plane. Autograd saves only ``x``: the backward op
recomputes the plane statistics. Both ops have fake implementations whose outputs have the real sizes and
strides (``output_memory_format``: channels_last stays channels_last), so ``torch.compile`` traces them
without graph breaks.

Backends: ``'triton'`` runs ``ops/triton/simam.py`` (CUDA; CPU tensors too under ``TRITON_INTERPRET=1``, for
tests), ``'pytorch'`` the formula, ``'auto'`` the Triton kernels for float16/bfloat16/float32 CUDA tensors when
Triton works on that device (checked once per device, remembered in ``_TRITON.statuses``), else the formula.
"""
import math
import numbers
import warnings
from typing import Optional, Tuple

import torch

from .geometry import output_memory_format
from .triton_status import TritonKernels

BACKENDS = ('auto', 'triton', 'pytorch')
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Half-precision inputs are upcast for the statistics: the squared deviations overflow float16 and the
# spatial sums lose precision in both half formats.
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_WARNED = set()  # devices whose fallback to the formula has been reported


def simam(x: torch.Tensor, e_lambda: float = 1e-4, backend: str = 'auto') -> torch.Tensor:
    """SimAM attention: weigh every activation by the inverse of its minimal energy.

    Args:
        x (Tensor): Input ``(B, C, H, W)``, float16, bfloat16, float32 or float64, any memory layout.
        e_lambda (float): The energy regulariser lambda, positive. Defaults to 1e-4.
        backend (str): ``'auto'`` (the fused Triton kernels on CUDA where they run, else the formula),
            ``'triton'`` (fail if they cannot run) or ``'pytorch'`` (the formula). Defaults to ``'auto'``.

    Returns:
        Tensor: ``x * sigmoid(d / (4 * (sum_hw(d) / n + e_lambda)) + 0.5)``, in the dtype of ``x``, the
        statistics computed in float32 (float64 for float64 inputs). channels_last inputs give
        channels_last outputs, all others contiguous ones. A 1x1 map gets the weight ``sigmoid(0.5)`` of a
        constant map (its variance term is taken as 0). Under ``torch.autocast`` the input's dtype is kept.
    """
    check_simam_arguments(e_lambda, backend)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'simam expects a floating-point tensor (B, C, H, W), got {shape}')
    return simam_op(x, float(e_lambda), backend)


def check_simam_arguments(e_lambda: float, backend: str) -> None:
    """Raise a one-line TypeError/ValueError for a lambda that is not a positive number or an unknown
    backend."""
    if isinstance(e_lambda, bool) or not isinstance(e_lambda, numbers.Real):
        raise TypeError(f'SimAM e_lambda must be a positive number such as 0.1, got {type(e_lambda).__name__} '
                        f'{e_lambda!r}')
    if not (e_lambda > 0 and math.isfinite(e_lambda)):
        raise ValueError(f'SimAM needs e_lambda > 0 and finite (it keeps the energy finite on constant maps), '
                         f'got {e_lambda}')
    if not isinstance(backend, str):
        raise TypeError(f'SimAM backend must be one of {BACKENDS} as a string, got {type(backend).__name__}')
    if backend not in BACKENDS:
        raise ValueError(f'unknown SimAM backend {backend!r}: choose one of {BACKENDS}')


def simam_formula(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """The PyTorch implementation and reference: SimAM with PyTorch operations, differentiable."""
    work = x.float() if x.dtype in _LOW_PRECISION else x
    n = max(x.shape[2] * x.shape[3] - 1, 1)  # d is all zeros when n == 0, so any n > 0 gives 0
    d = (work - work.mean(dim=(2, 3), keepdim=True)).pow(2)
    variance = d.sum(dim=(2, 3), keepdim=True) / n
    inverse_energy = d / (4 * (variance + e_lambda)) + 0.5
    return (work * torch.sigmoid(inverse_energy)).to(x.dtype)


def simam_formula_backward(grad: torch.Tensor, x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """The gradient of ``simam_formula`` for ``x``, in closed form with PyTorch operations (differentiable,
    so gradients of it exist too); the fused kernel computes the same expression (see ops/triton/simam.py)."""
    work = x.float() if x.dtype in _LOW_PRECISION else x
    grad = grad.to(work.dtype)
    count = x.shape[2] * x.shape[3]
    n = max(count - 1, 1)
    dev = work - work.mean(dim=(2, 3), keepdim=True)
    d = dev.pow(2)
    scale = 1 / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + e_lambda))
    s = torch.sigmoid(d * scale + 0.5)
    a = grad * work * s * (1 - s)
    plane_terms = ((a * dev).sum(dim=(2, 3), keepdim=True) / count
                   + dev * (4 * scale * (a * d).sum(dim=(2, 3), keepdim=True) / n))
    return (grad * s + 2 * scale * (a * dev - plane_terms)).to(x.dtype)


def triton_status(device: torch.device) -> Tuple[bool, str]:
    """Whether the fused kernels can run on ``device``, and why not; decided once per device by a first tiny
    launch (``triton_status.probe_triton``: CUDA with compute capability 7.0 or newer, or CPU tensors under
    the Triton interpreter, ``TRITON_INTERPRET=1``, for tests)."""
    return _TRITON.status(device)


def _probe_launch(device: torch.device) -> None:
    probe = torch.ones(1, 1, 2, 2, device=device)
    _TRITON.module.simam_forward(probe, 0.1, torch.empty_like(probe))


_TRITON = TritonKernels(f'{__package__}.triton.simam', _probe_launch, min_capability=(7, 0))


def _runs_triton(x: torch.Tensor, backend: str) -> bool:
    """Whether this call runs the fused kernels; ``'triton'`` raises when they cannot run on ``x``."""
    if backend == 'pytorch' or (backend == 'auto' and x.device.type != 'cuda'):
        return False
    usable, reason = triton_status(x.device)
    if backend == 'auto':
        if not usable and x.device not in _WARNED:
            _WARNED.add(x.device)
            warnings.warn(f'SimAM: the fused Triton kernels cannot run on {x.device} ({reason}); using the '
                          f'PyTorch formula')
        return usable and _unsupported(x) is None
    if not usable:
        raise RuntimeError(f"SimAM backend 'triton' cannot run on {x.device}: {reason}; use backend='auto' "
                           "(SimAM: backend='auto')")
    if _unsupported(x) is not None:
        raise RuntimeError(f"SimAM backend 'triton' {_unsupported(x)}; use backend='pytorch'")
    return True


def _unsupported(x: torch.Tensor) -> Optional[str]:
    """Why the kernels cannot take ``x`` (whatever the device), or None."""
    if x.dtype not in TRITON_DTYPES:
        return f'takes float16, bfloat16 or float32, got {x.dtype}'
    if x.shape[1] * x.shape[2] * x.shape[3] >= 2**31:  # the kernels address within a sample in 32 bits
        return f'takes fewer than 2**31 values per sample, got {tuple(x.shape)}'
    return None


def _new_output(x: torch.Tensor) -> torch.Tensor:
    """The uninitialised output of both ops for input ``x``, shared by the real and the fake implementations so
    that their sizes and strides agree: ``x``'s shape and dtype, channels_last if ``x`` is, else contiguous."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))


def _as_output(result: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The formula's ``result`` with the strides of ``out``; a copy only where they differ."""
    return result if result.stride() == out.stride() else out.copy_(result)


@torch.library.custom_op('involution_mm::simam', mutates_args=())
def simam_op(x: torch.Tensor, e_lambda: float, backend: str) -> torch.Tensor:
    """SimAM of checked inputs (``simam`` checks them)."""
    out = _new_output(x)
    if _runs_triton(x, backend):
        return _TRITON.module.simam_forward(x, e_lambda, out)
    return _as_output(simam_formula(x, e_lambda), out)


@torch.library.custom_op('involution_mm::simam_backward', mutates_args=())
def simam_backward_op(grad: torch.Tensor, x: torch.Tensor, e_lambda: float, backend: str) -> torch.Tensor:
    """The gradient of ``simam_op`` for ``x``, in the layout of ``x``."""
    out = _new_output(x)
    if _runs_triton(x, backend):
        return _TRITON.module.simam_backward(grad, x, e_lambda, out)
    return _as_output(simam_formula_backward(grad, x, e_lambda), out)


@simam_op.register_fake
def _simam_fake(x, e_lambda, backend):
    return _new_output(x)


@simam_backward_op.register_fake
def _simam_backward_fake(grad, x, e_lambda, backend):
    return _new_output(x)


def _setup_context(ctx, inputs, output) -> None:
    x, ctx.e_lambda, ctx.backend = inputs
    ctx.save_for_backward(x)


def _backward(ctx, grad):
    x, = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the differentiable formula, so gradients of it exist
        return simam_formula_backward(grad, x, ctx.e_lambda), None, None
    return simam_backward_op(grad, x, ctx.e_lambda, ctx.backend), None, None


simam_op.register_autograd(_backward, setup_context=_setup_context)
