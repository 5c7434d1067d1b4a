"""The fused involution layer as ``torch.library`` operators: kernel generation (the span conv) and
aggregation in one Triton kernel on CUDA, so the ``(B, G * K * K, Ho, Wo)`` kernel tensor is never stored.

    involution_mm::fused_involution(x, r, weight, bias, kernel_size, stride, padding, dilation, backend) -> out
    involution_mm::fused_involution_backward_input(grad_out, x, r, weight, bias, ..., backend) -> grad_x
    involution_mm::fused_involution_backward_kernels(grad_out, x, r, weight, ..., backend)
        -> (grad_r, grad_weight, grad_bias)

``out = involution(x, conv1x1(r, weight, bias).view(B, G, K, K, Ho, Wo), stride, padding, dilation)``. Autograd
saves ``x``, ``r`` and the two parameters, nothing of the size of the kernel tensor: the backward ops generate
the kernels again. Every op has a fake implementation with the real outputs' sizes and strides (outputs keep
the layout of the tensor they are the value or gradient of), so ``torch.compile`` traces them without graph
breaks, and meta tensors work.

Backends: ``'triton'`` runs ``ops/triton/involution_fused.py`` (CUDA; CPU tensors too under
``TRITON_INTERPRET=1``, for tests), ``'cpu'`` the compiled CPU kernels (``cpu_backend.cpu_fused_*``: a fused
forward kernel; the gradients regenerate the kernels and run the op's CPU gradient kernels), ``'reference'``
the same maths in PyTorch operations (``fused_reference.py``), ``'auto'`` the CPU kernels for CPU tensors
where they are built, Triton on CUDA devices where its self-check passed (``FUSED``, a
``self_check.CheckedPath``: once per device, dtype and precision mode, and on the first call of each compiled
variant), else the reference. Second-order gradients (``create_graph=True``) go through the unfused layer
(span conv + ``involution``), whose ops are differentiable again.
"""
import contextlib
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from .cpu_backend import cpu_fused_forward, cpu_fused_grad_input, cpu_fused_grad_kernels, cpu_usable
from .fused_reference import reference_forward, reference_grad_input, reference_grad_kernels
from .geometry import output_memory_format, output_size
from .involution import autocast_dtype, involution
from .self_check import CheckedPath, auto_device, compare, device_key, float32_convs_use_tf32, precision_mode
from .triton_status import TritonKernels

BACKENDS = ('auto', 'triton', 'cpu', 'reference')
_INDEX_LIMIT = 2**31  # the kernels index within a sample with 32-bit integers


def fused_involution(x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                     kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     backend: str = 'auto') -> torch.Tensor:
    """Involution with its kernels generated on the fly from ``r`` by a 1x1 conv, without storing them.

    Equal to ``involution(x, conv2d(r, weight, bias).view(B, G, K, K, Ho, Wo), stride, padding, dilation)``
    with ``G = weight.shape[0] / K**2`` groups of ``C / G`` channels.

    Args:
        x (Tensor): Input ``(B, C, H, W)``, any memory layout.
        r (Tensor): Reduced features ``(B, R, Ho, Wo)`` at the output's size (in the Involution layer: conv1,
            norm and activation of the input, average-pooled first when strided).
        weight (Tensor): The span conv's weight, ``(G * K * K, R)`` or ``(G * K * K, R, 1, 1)``.
        bias (Tensor, optional): Its bias ``(G * K * K,)``; None for none.
        kernel_size (int): ``K``, the side of the generated kernels.
        stride (int): Stride of the aggregation. Defaults to 1.
        padding (int): Zero padding of ``x`` on each side. Defaults to 0.
        dilation (int): Spacing between kernel taps. Defaults to 1.
        backend (str): ``'auto'``, ``'triton'`` or ``'cpu'`` (fail if it cannot run) or ``'reference'``.
            Defaults to ``'auto'``.

    Returns:
        Tensor: ``(B, C, Ho, Wo)`` in the dtype of ``x``, channels_last when ``x`` is. Sums are float32 (float64
        for float64 inputs). Under ``torch.autocast`` all floating inputs are first cast to the autocast dtype
        (float64 is left alone), as the unfused layer's span conv and ``involution`` do.
    """
    check_fused_arguments(x, r, weight, bias, kernel_size, stride, padding, dilation, backend)
    if weight.dim() == 4:
        weight = weight.flatten(1)
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    cast_to = autocast_dtype(x)
    guard = contextlib.nullcontext()
    if cast_to is not None:
        x, r, weight, bias = (t.to(cast_to) if t.dtype != torch.float64 else t for t in (x, r, weight, bias))
        guard = torch.autocast(x.device.type, enabled=False)
    _check_same_kind(x, r, weight, bias)
    if torch.onnx.is_in_onnx_export():
        return unfused_involution(x, r, weight, bias, kernel_size, stride, padding, dilation)
    if not torch.compiler.is_compiling():  # errors now, not inside the op; 'auto' stays for the Triton checks
        path = fast_path(x, r, backend)
        backend = backend if path == 'triton' else path
    with guard:
        return fused_involution_op(x, r, weight, bias, kernel_size, stride, padding, dilation, backend)


def unfused_involution(x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       kernel_size: int, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """The same result from the span conv and the ``involution`` op (differentiable to any order)."""
    kernels = F.conv2d(r, weight.reshape(*weight.shape[:2], 1, 1), bias)
    batch, _, out_h, out_w = kernels.shape
    groups = weight.shape[0] // kernel_size**2
    return involution(x, kernels.view(batch, groups, kernel_size, kernel_size, out_h, out_w), stride, padding,
                      dilation)


def check_fused_arguments(x, r, weight, bias, kernel_size, stride, padding, dilation, backend) -> None:
    """Raise a one-line TypeError/ValueError naming what is wrong with a ``fused_involution`` call."""
    if not isinstance(backend, str):
        raise TypeError(f'fused_involution backend must be one of {BACKENDS} as a string, got '
                        f'{type(backend).__name__}')
    if backend not in BACKENDS:
        raise ValueError(f'unknown fused_involution backend {backend!r}: choose one of {BACKENDS}')
    for name, value, least in (('kernel_size', kernel_size, 1), ('stride', stride, 1), ('padding', padding, 0),
                               ('dilation', dilation, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f'fused_involution {name} must be an int, got {type(value).__name__} {value!r}')
        if value < least:
            raise ValueError(f'fused_involution needs {name} >= {least}, got {value}')
    tensors = {'x': x, 'r': r, 'weight': weight} if bias is None else {'x': x, 'r': r, 'weight': weight,
                                                                         'bias': bias}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f'fused_involution {name} must be a tensor, got {type(t).__name__}')
        if not t.is_floating_point():
            raise ValueError(f'fused_involution needs floating-point tensors, got {name} of {t.dtype}')
    if x.dim() != 4 or r.dim() != 4:
        raise ValueError(f'fused_involution expects x (B, C, H, W) and r (B, R, Ho, Wo), got shapes '
                         f'{tuple(x.shape)} and {tuple(r.shape)}')
    taps = kernel_size**2
    rows = weight.shape[0] if weight.dim() else 0
    if weight.dim() not in (2, 4) or weight.shape[2:] not in ((), (1, 1)) or rows == 0 or rows % taps:
        raise ValueError(f'fused_involution weight must be (G * {taps}, R) or (G * {taps}, R, 1, 1) for '
                         f'kernel_size {kernel_size}, got {tuple(weight.shape)}')
    groups = rows // taps
    if x.shape[1] % groups:
        raise ValueError(f'channels ({x.shape[1]}) of x {tuple(x.shape)} must be divisible by the {groups} groups '
                         f'of weight {tuple(weight.shape)}')
    if bias is not None and tuple(bias.shape) != (rows, ):
        raise ValueError(f'fused_involution bias must be ({rows},) for weight {tuple(weight.shape)}, got '
                         f'{tuple(bias.shape)}')
    out_size = tuple(output_size(n, kernel_size, stride, padding, dilation) for n in x.shape[2:])
    if min(out_size) < 1:
        raise ValueError(f'input {tuple(x.shape[2:])} is too small for kernel_size {kernel_size}, stride '
                         f'{stride}, padding {padding}, dilation {dilation}')
    expected = (x.shape[0], weight.shape[1]) + out_size
    if tuple(r.shape) != expected:
        raise ValueError(f'fused_involution r must be {expected} (batch, weight.shape[1], output size) for x '
                         f'{tuple(x.shape)} and weight {tuple(weight.shape)}, got {tuple(r.shape)}')


def _check_same_kind(*tensors: torch.Tensor) -> None:
    first = tensors[0]
    if any(t.dtype != first.dtype or t.device != first.device for t in tensors):
        kinds = ', '.join(f'{t.dtype} on {t.device}' for t in tensors)
        raise ValueError(f'fused_involution needs x, r, weight and bias of one dtype and device, got {kinds}')


def triton_status(device: torch.device) -> Tuple[bool, str]:
    """Whether the fused kernels can start on ``device`` at all, and why not (``triton_prerequisite``: CUDA
    with compute capability 7.5 or newer, or CPU tensors under ``TRITON_INTERPRET=1``). Whether they compute
    the right numbers there is ``FUSED.verdict``."""
    return _TRITON.status(device)


_TRITON = TritonKernels(f'{__package__}.triton.involution_fused')  # ops/triton/involution_fused.py


def _prerequisite(device: torch.device, dtype: torch.dtype) -> Tuple[bool, str]:
    runs, why = _TRITON.status(device)
    if runs and dtype == torch.bfloat16 and device.type == 'cuda' and torch.cuda.get_device_capability(device) < (8, 0):
        return False, 'bfloat16 needs compute capability 8.0 or newer'
    return runs, why


# The self-check's cases, (batch, channels, group channels, (H, W), kernel, stride, dilation, layout of x),
# which together take every branch of the three kernels: partial tiles, several samples, three groups in a
# chunk of four and a single group, R padded for the dot (12, 6) and not (16), a partial channel block (12 of
# 16), strides 1 to 3, dilation 2, an output width of 1, NCHW inputs (copied to channels_last), channels_last
# ones, and a channels_last view one element off the 16-byte alignment (read in place).
SELF_CHECK_CASES = (
    (2, 48, 16, (7, 5), 3, 1, 2, 'contiguous'),
    (1, 64, 64, (6, 2), 3, 2, 1, 'channels_last'),
    (1, 24, 12, (7, 8), 3, 3, 1, 'shifted'),
)


def self_check_inputs(case: tuple, device: torch.device, dtype: torch.dtype):
    """``(x, r, weight, bias), grad_out, (kernel_size, stride, padding, dilation)`` of a self-check case."""
    batch, channels, group_channels, size, kernel, stride, dilation, layout = case
    generator = torch.Generator().manual_seed(0)
    padding = dilation * (kernel - 1) // 2
    out_size = [output_size(n, kernel, stride, padding, dilation) for n in size]
    groups, reduced = channels // group_channels, channels // 4
    x = torch.randn(batch, channels, *size, generator=generator)
    r = torch.rand(batch, reduced, *out_size, generator=generator)  # like the ReLU output it is in the layer
    weight = torch.randn(groups * kernel**2, reduced, generator=generator) / reduced**0.5
    bias = torch.randn(groups * kernel**2, generator=generator) * 0.1
    grad = torch.randn(batch, channels, *out_size, generator=generator)
    x, r, weight, bias, grad = (t.to(device, dtype) for t in (x, r, weight, bias, grad))
    if layout == 'channels_last':
        x, r = (t.contiguous(memory_format=torch.channels_last) for t in (x, r))
    else:
        grad = grad.contiguous(memory_format=torch.channels_last)
    if layout == 'shifted':
        storage = torch.empty(x.numel() + 1, dtype=dtype, device=device)
        shifted = storage[1:].view(batch, *size, channels).permute(0, 3, 1, 2)
        x = shifted.copy_(x)
    return (x, r, weight, bias), grad, (kernel, stride, padding, dilation)


def _self_check(device: torch.device, dtype: torch.dtype, mode: str) -> Optional[str]:
    """Forward and all four gradients of the Triton kernels on ``SELF_CHECK_CASES``, against the reference in
    float64; None, or what failed."""
    kernels = _TRITON.module
    for case in SELF_CHECK_CASES:
        (x, r, weight, bias), grad, geometry = self_check_inputs(case, device, dtype)
        got = dict(out=kernels.fused_forward(x, r, weight, bias, *geometry),
                   grad_x=kernels.fused_grad_input(grad, x, r, weight, bias, *geometry))
        got['grad_r'], got['grad_weight'], got['grad_bias'] = kernels.fused_grad_kernels(grad, x, r, weight,
                                                                                         *geometry)
        x, r, weight, bias, grad = (t.double() for t in (x, r, weight, bias, grad))
        want = dict(out=reference_forward(x, r, weight, bias, *geometry),
                    grad_x=reference_grad_input(grad, x, r, weight, bias, *geometry))
        want['grad_r'], want['grad_weight'], want['grad_bias'] = reference_grad_kernels(grad, x, r, weight,
                                                                                        *geometry)
        failure = compare(got, want, mode)
        if failure is not None:
            return f'{failure}, case {case[:-1]} {case[-1]}'
    return None


FUSED = CheckedPath('fused involution (Triton)', _prerequisite, _self_check,
                    instead="backend='auto' or backend='reference' (Involution: fused='auto' or fused=False)",
                    fallback='PyTorch operations')


def precision(dtype: torch.dtype) -> str:
    """The precision mode the kernels run ``dtype`` in now (``'tf32'`` for float32 when cuDNN convolutions
    may use TF32), under which their self-check is kept."""
    return precision_mode(dtype, tf32=dtype == torch.float32 and float32_convs_use_tf32())


def fused_kernels_run(x: torch.Tensor) -> bool:
    """Whether ``backend='auto'`` runs the Triton kernels for input ``x`` (on CUDA, where they passed their
    self-check); the first time they do not on a device, a warning says why."""
    return _runs_triton(x, x, 'auto')


def fast_path(x: torch.Tensor, r: torch.Tensor, backend: str) -> str:
    """The kernels a call on ``x`` runs, ``'triton'``, ``'cpu'`` or ``'reference'``; a backend asked for by
    name raises where it cannot run."""
    if backend == 'cpu' or (backend == 'auto' and x.device.type == 'cpu'):
        usable, why = cpu_usable(x)
        if not usable and backend == 'cpu':
            raise RuntimeError(f"fused_involution backend 'cpu' cannot run on this input: {why}; use "
                               "backend='auto' or backend='reference'")
        if usable:
            return 'cpu'
    return 'triton' if _runs_triton(x, r, backend) else 'reference'


def _runs_triton(x: torch.Tensor, r: torch.Tensor, backend: str) -> bool:
    """Whether a call on ``x`` runs the Triton kernels; ``'triton'`` raises where they cannot."""
    if backend in ('reference', 'cpu') or (backend == 'auto' and not auto_device(x.device)) or x.numel() == 0:
        return False
    takes, why = _kernels_take(x, r)
    if not takes:
        if backend == 'triton':
            raise RuntimeError(f"{FUSED.name} cannot take these inputs: {why}; use {FUSED.instead}")
        FUSED.warn_once(('take', device_key(x.device)), f'{FUSED.name} cannot take some inputs on {x.device} '
                        f'({why}); they run on {FUSED.fallback}')
        return False
    return FUSED.runs(x.device, x.dtype, precision(x.dtype), explicit=backend == 'triton')


def _kernels_take(x: torch.Tensor, r: torch.Tensor) -> Tuple[bool, str]:
    """Whether the kernels take these tensors: 32-bit offsets within a sample of ``x``, ``r`` and the output
    (``C * Ho * Wo`` values)."""
    out_values = x.shape[1] * r.shape[2] * r.shape[3]
    if out_values < _INDEX_LIMIT and all(t.untyped_storage().nbytes() < _INDEX_LIMIT * t.element_size()
                                         for t in (x, r)):
        return True, ''  # no offset reaches 2**31 in storages this small (the common case, checked cheaply)
    largest = max([out_values - 1] + [sum((n - 1) * abs(s) for n, s in zip(t.shape[1:], t.stride()[1:]))
                                      for t in (x, r)])
    if largest >= _INDEX_LIMIT:
        return False, f'offsets within a sample reach {largest}, beyond 32-bit indices'
    return True, ''


def _checked(kernel: str, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, geometry: tuple, backend: str,
             fast: Callable[[], object], reference: Callable[[], object],
             first_sample: Callable[[object], Tuple[dict, dict]], grad_out: Optional[torch.Tensor] = None):
    """``fast()`` through ``FUSED.run_variant``: the first call of each compiled variant is checked on its
    first sample (``first_sample(result) -> (got, want)``), a failed variant runs ``reference()``."""
    mode = precision(x.dtype)
    return FUSED.run_variant(_TRITON.module.variant(kernel, x, r, weight, *geometry, grad_out=grad_out), x.device,
                             mode, backend == 'triton', fast, lambda result: compare(*first_sample(result), mode),
                             reference)


def _first(*tensors: torch.Tensor):
    """The first sample of each batched tensor, in float64 (the reference of a first-call check)."""
    return tuple(t[:1].double() for t in tensors)


def _in_layout(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``t`` with the strides of a fresh tensor in ``memory_format`` (those the fake implementations give)."""
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=memory_format)
    return t if t.stride() == out.stride() else out.copy_(t)


@torch.library.custom_op('involution_mm::fused_involution', mutates_args=())
def fused_involution_op(x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        kernel_size: int, stride: int, padding: int, dilation: int, backend: str) -> torch.Tensor:
    """``fused_involution`` of checked inputs (2-d ``weight``, a ``bias``), in the layout of ``x``."""
    geometry = (kernel_size, stride, padding, dilation)

    def reference():
        return _in_layout(reference_forward(x, r, weight, bias, *geometry), output_memory_format(x))

    def first_sample(out):
        return {'out': out[:1]}, {'out': reference_forward(*_first(x, r), weight.double(), bias.double(), *geometry)}

    path = fast_path(x, r, backend)
    if path == 'cpu':
        return cpu_fused_forward(x, r, weight, bias, *geometry)
    if path == 'reference':
        return reference()
    return _checked('forward', x, r, weight, geometry, backend,
                    lambda: _TRITON.module.fused_forward(x, r, weight, bias, *geometry), reference, first_sample)


@torch.library.custom_op('involution_mm::fused_involution_backward_input', mutates_args=())
def fused_backward_input_op(grad_out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor, kernel_size: int, stride: int, padding: int, dilation: int,
                            backend: str) -> torch.Tensor:
    """The gradient of ``fused_involution_op`` for ``x`` (only the shape and layout of ``x`` are used)."""
    geometry = (kernel_size, stride, padding, dilation)

    def reference():
        return _in_layout(reference_grad_input(grad_out, x, r, weight, bias, *geometry), output_memory_format(x))

    def first_sample(grad_x):
        want = reference_grad_input(*_first(grad_out, x, r), weight.double(), bias.double(), *geometry)
        return {'grad_x': grad_x[:1]}, {'grad_x': want}

    path = fast_path(x, r, backend)
    if path == 'cpu':
        return _in_layout(cpu_fused_grad_input(grad_out, x, r, weight, bias, *geometry), output_memory_format(x))
    if path == 'reference':
        return reference()
    return _checked('grad_input', x, r, weight, geometry, backend,
                    lambda: _TRITON.module.fused_grad_input(grad_out, x, r, weight, bias, *geometry), reference,
                    first_sample, grad_out)


@torch.library.custom_op('involution_mm::fused_involution_backward_kernels', mutates_args=())
def fused_backward_kernels_op(grad_out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor,
                              kernel_size: int, stride: int, padding: int, dilation: int,
                              backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of ``fused_involution_op`` for ``r`` (in its layout), ``weight`` and ``bias``."""
    geometry = (kernel_size, stride, padding, dilation)

    def reference():
        grad_r, grad_weight, grad_bias = reference_grad_kernels(grad_out, x, r, weight, *geometry)
        return _in_layout(grad_r, output_memory_format(r)), grad_weight.contiguous(), grad_bias

    def first_sample(grads):  # grad_r per sample; the parameters' gradients sum over the batch
        want = reference_grad_kernels(*_first(grad_out, x, r), weight.double(), *geometry)
        names = ('grad_r', 'grad_weight', 'grad_bias')[:1 if x.shape[0] > 1 else 3]
        return ({name: g[:1] if name == 'grad_r' else g for name, g in zip(names, grads)},
                {name: w for name, w in zip(names, want)})

    path = fast_path(x, r, backend)
    if path == 'cpu':
        grad_r, grad_weight, grad_bias = cpu_fused_grad_kernels(grad_out, x, r, weight, *geometry)
        return _in_layout(grad_r, output_memory_format(r)), grad_weight, grad_bias
    if path == 'reference':
        return reference()
    return _checked('grad_kernels', x, r, weight, geometry, backend,
                    lambda: _TRITON.module.fused_grad_kernels(grad_out, x, r, weight, *geometry), reference,
                    first_sample, grad_out)


def _empty(shape, like: torch.Tensor, memory_format=torch.contiguous_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


@fused_involution_op.register_fake
def _forward_fake(x, r, weight, bias, kernel_size, stride, padding, dilation, backend):
    return _empty((x.shape[0], x.shape[1], r.shape[2], r.shape[3]), x, output_memory_format(x))


@fused_backward_input_op.register_fake
def _backward_input_fake(grad_out, x, r, weight, bias, kernel_size, stride, padding, dilation, backend):
    return _empty(x.shape, x, output_memory_format(x))


@fused_backward_kernels_op.register_fake
def _backward_kernels_fake(grad_out, x, r, weight, kernel_size, stride, padding, dilation, backend):
    return (_empty(r.shape, r, output_memory_format(r)), _empty(weight.shape, weight),
            _empty(weight.shape[:1], weight))


def _setup_context(ctx, inputs, output) -> None:
    x, r, weight, bias, *geometry, ctx.backend = inputs
    ctx.geometry = tuple(geometry)
    ctx.save_for_backward(x, r, weight, bias)


def _backward(ctx, grad_out: torch.Tensor):
    x, r, weight, bias = ctx.saved_tensors
    needs = ctx.needs_input_grad[:4]
    if torch.is_grad_enabled():  # create_graph=True: through ops that are differentiable again
        return _differentiable_grads(grad_out, (x, r, weight, bias), needs, ctx.geometry) + (None, ) * 5
    grad_x = grad_r = grad_weight = grad_bias = None
    if needs[0]:
        grad_x = fused_backward_input_op(grad_out, x, r, weight, bias, *ctx.geometry, ctx.backend)
    if any(needs[1:]):
        grad_r, grad_weight, grad_bias = fused_backward_kernels_op(grad_out, x, r, weight, *ctx.geometry,
                                                                   ctx.backend)
    grads = (grad_x, grad_r, grad_weight, grad_bias)
    return tuple(g if need else None for g, need in zip(grads, needs)) + (None, ) * 5


def _differentiable_grads(grad_out, inputs, needs, geometry) -> tuple:
    """Gradients for ``inputs`` (where ``needs``), computed through the unfused layer with a graph."""
    wanted = [t for t, need in zip(inputs, needs) if need]
    with torch.enable_grad():
        out = unfused_involution(*inputs, *geometry)
    grads = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=True))
    return tuple(next(grads) if need else None for need in needs)


fused_involution_op.register_autograd(_backward, setup_context=_setup_context)
