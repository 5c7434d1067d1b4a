"""SimAM as a ``torch.library`` operator: fused Triton kernels on CUDA, the PyTorch formula elsewhere.

    involution_mm::simam(x, e_lambda, backend) -> y
    involution_mm::simam_backward(grad, x, e_lambda, backend) -> grad_x

``y = x * sigmoid(d / (4 * (sum_hw(d) / n + e_lambda)) + 0.5)`` with ``d = (x - mean_hw(x)) ** 2`` and
``n = max(H * W - 1, 1)``, per ``(sample, channel)`` plane. Autograd saves only ``x``: the backward op
recomputes the plane statistics. Both ops have fake implementations whose outputs have the real sizes and
strides (``output_memory_format``: channels_last stays channels_last), so ``torch.compile`` traces them
without graph breaks.

Backends: ``'triton'`` runs ``ops/triton/simam.py`` (CUDA; CPU tensors too under ``TRITON_INTERPRET=1``, for
tests), ``'pytorch'`` the formula, ``'auto'`` the Triton kernels for float16/bfloat16/float32 CUDA tensors where
their self-check passed (``SIMAM``, a ``self_check.CheckedPath``: once per device and dtype, and on the first
call of each compiled variant), else the formula.
"""
import math
import numbers
from typing import Callable, Optional, Tuple

import torch

from .geometry import output_memory_format
from .self_check import CheckedPath, auto_device, compare, precision_mode
from .triton_status import TritonKernels

BACKENDS = ('auto', 'triton', 'pytorch')
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Half-precision inputs are upcast for the statistics: the squared deviations overflow float16 and the
# spatial sums lose precision in both half formats.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


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


# The smallest normal float32: a lambda below it is zero, or a subnormal that GPUs flush to zero, in the
# float32 arithmetic SimAM runs in (half-precision inputs are computed in float32 too).
SMALLEST_E_LAMBDA = float(torch.finfo(torch.float32).tiny)


def check_simam_arguments(e_lambda: float, backend: str) -> None:
    """Raise a one-line TypeError/ValueError for a lambda that is not a positive number or an unknown
    backend."""
    if isinstance(e_lambda, bool) or not isinstance(e_lambda, numbers.Real):
        raise TypeError(f'SimAM e_lambda must be a positive number such as 0.1, got {type(e_lambda).__name__} '
                        f'{e_lambda!r}')
    if not (e_lambda > 0 and math.isfinite(e_lambda)):
        raise ValueError(f'SimAM needs e_lambda > 0 and finite (it keeps the energy finite on constant maps), '
                         f'got {e_lambda}')
    if e_lambda < SMALLEST_E_LAMBDA:
        raise ValueError(f'SimAM e_lambda={e_lambda:g} vanishes in float32, in which SimAM computes (a '
                         f'constant map would give NaN); pass at least {SMALLEST_E_LAMBDA:.3g} (the paper '
                         'uses 1e-4, and 0.1 in its ImageNet and COCO models)')
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
    """Whether the fused kernels can start on ``device`` at all, and why not (``triton_prerequisite``: CUDA
    with compute capability 7.0 or newer, or CPU tensors under Triton's interpreter, ``TRITON_INTERPRET=1``,
    for tests). Whether they compute the right numbers there is ``SIMAM.verdict``."""
    return _TRITON.status(device)


_TRITON = TritonKernels(f'{__package__}.triton.simam', min_capability=(7, 0))

# The self-check's cases, (shape, layout): together the resident and the looped plans in both layouts,
# partial channel blocks, a constant plane (every input's first), and 1x1 maps (n = 0).
SELF_CHECK_CASES = (
    ((2, 3, 5, 7), torch.contiguous_format),
    ((2, 3, 5, 7), torch.channels_last),
    ((1, 2, 91, 91), torch.contiguous_format),  # 8281 positions a plane: beyond MAX_TILE, so looped
    ((1, 3, 91, 91), torch.channels_last),
    ((2, 4, 1, 1), torch.contiguous_format),
)


def self_check_inputs(shape: tuple, memory_format: torch.memory_format, device: torch.device,
                      dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """The input (its first plane constant) and an output gradient (in the other layout) of a case."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator) * 3 + 1
    x[0, 0] = 2.5
    grad = torch.randn(shape, generator=generator)
    other = torch.contiguous_format if memory_format == torch.channels_last else torch.channels_last
    return (x.to(device, dtype).contiguous(memory_format=memory_format),
            grad.to(device, dtype).contiguous(memory_format=other))


def _self_check(device: torch.device, dtype: torch.dtype, mode: str) -> Optional[str]:
    """Forward and backward kernels on ``SELF_CHECK_CASES`` against the formula in float64; None, or what
    failed."""
    kernels = _TRITON.module
    for shape, memory_format in SELF_CHECK_CASES:
        x, grad = self_check_inputs(shape, memory_format, device, dtype)
        got = dict(y=kernels.simam_forward(x, 0.1, _new_output(x)),
                   grad_x=kernels.simam_backward(grad, x, 0.1, _new_output(x)))
        want = dict(y=simam_formula(x.double(), 0.1), grad_x=simam_formula_backward(grad.double(), x.double(), 0.1))
        failure = compare(got, want, mode)
        if failure is not None:
            layout = 'channels_last' if memory_format == torch.channels_last else 'contiguous'
            return f'{failure}, case {shape} {layout}'
    return None


def _prerequisite(device: torch.device, dtype: torch.dtype) -> Tuple[bool, str]:
    runs, why = _TRITON.status(device)
    if runs and dtype not in TRITON_DTYPES:
        return False, f'it takes float16, bfloat16 or float32, got {dtype}'
    return runs, why


SIMAM = CheckedPath('SimAM (Triton)', _prerequisite, _self_check, instead="backend='auto' or backend='pytorch'",
                    fallback='the PyTorch formula')


def _runs_triton(x: torch.Tensor, backend: str) -> bool:
    """Whether this call runs the fused kernels; ``'triton'`` raises when they cannot run on ``x``."""
    if backend == 'pytorch' or (backend == 'auto' and (not auto_device(x.device) or x.dtype not in TRITON_DTYPES)):
        return False
    if not SIMAM.runs(x.device, x.dtype, precision_mode(x.dtype), explicit=backend == 'triton'):
        return False
    problem = _unsupported(x)
    if problem is not None and backend == 'triton':
        raise RuntimeError(f"SimAM backend 'triton' {problem}; use backend='pytorch'")
    return problem is None


def _checked(kernel: str, x: torch.Tensor, backend: str, fast: Callable[[], torch.Tensor],
             reference: Callable[[], torch.Tensor], first_sample: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fast()`` through ``SIMAM.run_variant``: the first call of each compiled variant is checked on its
    first sample against ``first_sample()`` (the formula in float64), a failed variant runs ``reference()``."""
    from .triton.simam import launch_plan  # imports Triton, which runs the kernels anyway
    channels_last = x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
    key = (kernel, x.device, x.dtype, launch_plan(x.shape[1], x.shape[2] * x.shape[3], channels_last),
           channels_last, x.shape[2] * x.shape[3] == 1, x.data_ptr() % 16 == 0)
    mode = precision_mode(x.dtype)
    return SIMAM.run_variant(key, x.device, mode, backend == 'triton', fast,
                             lambda result: compare({kernel: result[:1]}, {kernel: first_sample()}, mode),
                             reference)


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
    if not _runs_triton(x, backend):
        return _as_output(simam_formula(x, e_lambda), out)
    return _checked('forward', x, backend, lambda: _TRITON.module.simam_forward(x, e_lambda, out),
                    lambda: _as_output(simam_formula(x, e_lambda), out),
                    lambda: simam_formula(x[:1].double(), e_lambda))


@torch.library.custom_op('involution_mm::simam_backward', mutates_args=())
def simam_backward_op(grad: torch.Tensor, x: torch.Tensor, e_lambda: float, backend: str) -> torch.Tensor:
    """The gradient of ``simam_op`` for ``x``, in the layout of ``x``."""
    out = _new_output(x)
    if not _runs_triton(x, backend):
        return _as_output(simam_formula_backward(grad, x, e_lambda), out)
    return _checked('backward', x, backend, lambda: _TRITON.module.simam_backward(grad, x, e_lambda, out),
                    lambda: _as_output(simam_formula_backward(grad, x, e_lambda), out),
                    lambda: simam_formula_backward(grad[:1].double(), x[:1].double(), e_lambda))


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
