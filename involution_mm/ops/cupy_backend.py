"""CUDA backend through CuPy: runs ``involution_kernels.cu`` on CUDA tensors.

Kernels are compiled by CuPy's NVRTC once per (dtype, shape class, device) and kept, and each launch is
planned once per (class, shapes, strides): a repeated call costs a dictionary lookup and the launch. They
launch on PyTorch's current CUDA stream, read and write the tensors in place through their strides (any memory
layout, no copies) and take their outputs from PyTorch's caching allocator. CuPy is optional: without it
(or on other devices) the dispatcher keeps using the PyTorch backend.

The backend is usable on a device and dtype only after its self-check passed there (``CUPY``, a
``self_check.CheckedPath``: ``cupy_usable`` is its verdict), and the first call of each compiled variant (a
``KernelSpec`` and kernel) is checked on its first sample against the PyTorch backend; a variant that fails
runs the PyTorch backend's kernel from then on, after a warning. (The kernels do not know whether ``'cupy'``
was named or chosen by ``'auto'``, so a failed variant falls back even when it was named; a failed self-check
makes a named ``'cupy'`` raise.)
"""
import functools
from dataclasses import replace
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch

from .cuda_source import BLOCK_SIZE, KERNEL_NAMES, SCALAR_KINDS, KernelSpec, launch_spec
from .cuda_tiling import as_layout
from .geometry import Geometry, check_inputs, output_memory_format
from .pytorch_backend import involution_forward, involution_grad_input, involution_grad_weight
from .self_check import PENDING, CheckedPath, compare, precision_mode

INSTALL_HINT = 'pip install cupy-cuda12x or cupy-cuda13x, whichever matches your CUDA driver'


@functools.lru_cache(maxsize=None)
def import_cupy():
    """``(cupy module, None)``, or ``(None, why it cannot be imported)``; tried once per process."""
    try:
        import cupy
    except Exception as error:  # ImportError, or a CUDA library that fails to load
        return None, f'{type(error).__name__}: {error}'
    return cupy, None


_PROBE_SOURCE = 'extern "C" __global__ void involution_probe(float* out) { out[0] = 1.0f; }'


@functools.lru_cache(maxsize=None)
def device_problem(device_index: int) -> Optional[str]:
    """None when CuPy compiles and loads a kernel for this device, else what went wrong (a missing NVRTC
    library, a CuPy built for a newer CUDA than the driver...); tried once per device and process."""
    cupy = import_cupy()[0]
    try:
        with cupy.cuda.Device(device_index):
            cupy.RawModule(code=_PROBE_SOURCE).get_function('involution_probe')
    except Exception as error:
        return f'{type(error).__name__}: {error}'
    return None


def cupy_usable(x: torch.Tensor) -> Tuple[bool, str]:
    """Whether the CuPy backend runs on ``x``'s device and dtype, and why (for the dispatcher's log line and
    errors): CuPy compiles kernels there and their self-check passed (``CUPY.verdict``)."""
    mode = precision_mode(x.dtype)
    verdict = CUPY.verdict(x.device, x.dtype, mode)
    if verdict is PENDING:
        return False, (f'its self-check has not run on {x.device} ({mode}) yet, and cannot while a CUDA graph is '
                       "being captured: run one step before capturing, or use backend='pytorch'")
    if verdict.why.startswith('self-check failed'):
        failure = verdict.why[len('self-check failed: '):]
        return False, f"its self-check failed on {x.device} ({mode}): {failure}; use backend='pytorch' (or 'auto')"
    if not verdict.runs:
        return verdict
    return True, f'{CUPY.prerequisite(x.device, x.dtype)[1]}; {verdict.why}'


def _prerequisite(device: torch.device, dtype: torch.dtype) -> Tuple[bool, str]:
    """Whether CuPy can compile kernels for ``device`` and ``dtype`` at all (nothing launched)."""
    if device.type != 'cuda':
        return False, f'it runs on CUDA tensors only, and this one is on {device.type}'
    if dtype not in SCALAR_KINDS:
        return False, f'{dtype} is not supported; it takes {sorted(str(t) for t in SCALAR_KINDS)}'
    cupy, error = import_cupy()
    if cupy is None:
        return False, f'CuPy is not importable ({error}); {INSTALL_HINT}'
    index = device.index if device.index is not None else torch.cuda.current_device()
    problem = device_problem(index)
    if problem is not None:
        return False, f'CuPy {cupy.__version__} cannot compile kernels for cuda:{index} ({problem}); {INSTALL_HINT}'
    return True, f'CuPy {cupy.__version__} compiles kernels for cuda:{index}'


# The self-check's cases, (batch, channels, groups, (H, W), kernel, stride, padding, dilation, layout): the
# row kernels with unit column strides (RedNet's 7x7 kernels, two samples), the channel-vector kernels (stride
# and dilation 2) and the row kernels with run-time strides (stride 3, 4 channels a group, uneven sizes).
SELF_CHECK_CASES = (
    (2, 32, 2, (9, 10), 7, 1, 3, 1, 'contiguous'),
    (1, 16, 2, (7, 6), 3, 2, 2, 2, 'channels_last'),
    (1, 12, 3, (5, 7), 3, 3, 1, 1, 'strided'),
)


def self_check_inputs(case: tuple, device: torch.device, dtype: torch.dtype):
    """``(x, weight, grad_out, geometry)`` of a self-check case, in its layout."""
    batch, channels, groups, size, kernel, stride, padding, dilation, layout = case
    generator = torch.Generator().manual_seed(0)
    out_size = [(n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for n in size]
    x = torch.randn(batch, channels, *size, generator=generator)
    weight = torch.randn(batch, groups, kernel, kernel, *out_size, generator=generator)
    grad = torch.randn(batch, channels, *out_size, generator=generator)
    x, weight, grad = (as_layout(t.to(device, dtype), layout) for t in (x, weight, grad))
    return x, weight, grad, check_inputs(x, weight, stride, padding, dilation)


def _self_check(device: torch.device, dtype: torch.dtype, mode: str) -> Optional[str]:
    """The three kernels on ``SELF_CHECK_CASES`` against the PyTorch backend in float64; None, or what failed."""
    for case in SELF_CHECK_CASES:
        x, weight, grad, geo = self_check_inputs(case, device, dtype)
        got = dict(out=_run('involution_forward', x, weight, geo),
                   grad_x=_run('involution_grad_input', grad, weight, geo),
                   grad_weight=_run('involution_grad_weight', grad, x, geo))
        x, weight, grad = (t.double() for t in (x, weight, grad))
        want = dict(out=involution_forward(x, weight, geo), grad_x=involution_grad_input(grad, weight, geo),
                    grad_weight=involution_grad_weight(grad, x, geo))
        failure = compare(got, want, mode)
        if failure is not None:
            return f'{failure}, case {case[:-1]} {case[-1]}'
    return None


CUPY = CheckedPath('involution (CuPy kernels)', _prerequisite, _self_check,
                   instead="backend='auto' or backend='pytorch'", fallback="the 'pytorch' backend")


@functools.lru_cache(maxsize=None)
def compiled_kernels(spec: KernelSpec, device_index: int) -> Dict[str, object]:
    """The three kernels of ``spec`` compiled for one device (cached: each variant compiles once)."""
    cupy = import_cupy()[0]
    try:
        with cupy.cuda.Device(device_index):
            module = cupy.RawModule(code=spec.source())
            return {name: module.get_function(name) for name in KERNEL_NAMES}
    except Exception as error:
        raise RuntimeError(f'CuPy could not compile the involution kernels for {spec}: {error}. Use '
                           f"backend='pytorch', or {INSTALL_HINT}") from error


@functools.lru_cache(maxsize=None)
def resident_threads(device_index: int) -> int:
    """Threads the device keeps in flight at once (all multiprocessors full)."""
    props = torch.cuda.get_device_properties(device_index)
    return props.multi_processor_count * getattr(props, 'max_threads_per_multi_processor', 2048)


@functools.lru_cache(maxsize=None)
def device_name(device_index: int) -> str:
    """The device's name, which selects its measured tiling table (``cuda_tiling.MEASURED_TILINGS``)."""
    return torch.cuda.get_device_name(device_index)


def _strides(t: torch.Tensor) -> list:
    """Six element strides, zero-padded (the kernels' parameter list)."""
    return [np.int64(s) for s in t.stride()] + [np.int64(0)] * (6 - t.dim())


def _column_offsets_fit(t: torch.Tensor, geo: Geometry) -> bool:
    """Whether the kernels' 32-bit offsets along a row reach every column ``t`` is read at (``t``'s column
    stride times its width plus the padding and kernel reach); a tensor beyond that is copied contiguous."""
    reach = t.shape[-1] + 2 * geo.padding[1] + geo.dilation[1] * geo.kernel[1] + 64
    return t.stride(-1) * reach < 2**31


class LaunchPlan(NamedTuple):
    """Everything about one launch that depends only on the call's class, shapes and strides, so that a
    repeated call costs a dictionary lookup and the launch itself."""
    spec: KernelSpec  # the variant launched
    name: str
    kernel: object  # the compiled kernel (a CuPy function)
    grid: Tuple[int]
    scalars: tuple  # the kernel's arguments after the three pointers
    copy_a: bool  # inputs whose 32-bit column offsets would overflow are copied contiguous first
    copy_b: bool
    misaligned: int  # pointers with any of these bits set cannot take the channel-vector kernels (0: any can)


# (kernel name, geometry, dtype, strides of a, b and result, device, tiling override) -> LaunchPlan, and with
# 'misaligned' appended, the plan of the same call on pointers that are not aligned to its channel vectors
_PLANS: Dict[tuple, LaunchPlan] = {}


def _launch_spec(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
                 spec: Optional[KernelSpec]) -> Tuple[KernelSpec, bool, bool]:
    """The variant that fits the tensors' layouts (of ``spec``, or of the tiling ``choose_spec`` picks for the
    layout and device), and whether ``a`` and ``b`` are copied contiguous first; nothing is compiled."""
    copy_a, copy_b = (not _column_offsets_fit(t, geo) for t in (a, b))
    a, b = (torch.empty(t.shape, dtype=t.dtype, device='meta') if copy else t  # the copy's strides
            for t, copy in ((a, copy_a), (b, copy_b)))
    device = result.device.index
    spec = (spec.for_tensors(name, a, b, result) if spec else
            launch_spec(name, a, b, result, geo, resident_threads(device), device_name(device)))
    return spec, copy_a, copy_b


def _plan(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
          spec: Optional[KernelSpec]) -> LaunchPlan:
    """Work out a launch: the variant (``_launch_spec``), its thread count and arguments, and the kernel
    compiled."""
    spec, copy_a, copy_b = _launch_spec(name, a, b, result, geo, spec)
    a, b = (t.contiguous() if copy else t for t, copy in ((a, copy_a), (b, copy_b)))
    device = result.device.index
    threads = spec.threads(name, geo)
    sizes = (geo.channels, geo.group_channels) + geo.in_size + geo.out_size
    scalars = tuple([np.int64(threads)] + [np.int32(v) for v in sizes] + _strides(a) + _strides(b)
                    + _strides(result))
    kernel = compiled_kernels(spec, device)[name] if threads else None
    return LaunchPlan(spec, name, kernel, (-(-threads // BLOCK_SIZE), ), scalars, copy_a, copy_b,
                      max(spec.vector_bytes(result.element_size()) - 1, 0))


def _plan_key(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
              spec: Optional[KernelSpec]) -> tuple:
    return name, geo, result.dtype, a.stride(), b.stride(), result.stride(), result.device.index, spec


def _variant(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
             spec: Optional[KernelSpec]) -> tuple:
    """The compiled variant a launch runs: kernel, ``KernelSpec``, whether its pointers are off the channel
    vectors' alignment (then the row kernels run), and the device."""
    plan = _PLANS.get(_plan_key(name, a, b, result, geo, spec))
    launched = plan.spec if plan is not None else _launch_spec(name, a, b, result, geo, spec)[0]
    misaligned = max(launched.vector_bytes(result.element_size()) - 1, 0)
    return name, launched, bool((a.data_ptr() | b.data_ptr() | result.data_ptr()) & misaligned), result.device


def _launch(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
            spec: Optional[KernelSpec] = None) -> None:
    """Run kernel ``name`` (of the tiling ``spec``, or the default one) on these tensors."""
    key = _plan_key(name, a, b, result, geo, spec)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _plan(name, a, b, result, geo, spec)
    if plan.kernel is None:
        return  # nothing to compute (an empty batch)
    a = a.contiguous() if plan.copy_a else a
    b = b.contiguous() if plan.copy_b else b
    a_ptr, b_ptr, result_ptr = a.data_ptr(), b.data_ptr(), result.data_ptr()
    if (a_ptr | b_ptr | result_ptr) & plan.misaligned:  # a view that starts off the vectors' alignment
        plan = _misaligned_plan(key, plan, a, b, result, geo)
    _run_kernel(plan, (np.int64(a_ptr), np.int64(b_ptr), np.int64(result_ptr)), result.device.index)


def _misaligned_plan(key: tuple, plan: LaunchPlan, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor,
                     geo: Geometry) -> LaunchPlan:
    """The plan of a channel-vector launch for pointers off the vectors' alignment: the row kernels."""
    key = key + ('misaligned', )
    if key not in _PLANS:
        _PLANS[key] = _plan(plan.name, a, b, result, geo, replace(plan.spec, channels_last=False))
    return _PLANS[key]


# CUDA stream handle -> the CuPy object wrapping it (made once per stream)
_STREAMS: Dict[int, object] = {}


def _run_kernel(plan: LaunchPlan, pointers: tuple, device: int) -> None:
    """Launch a planned kernel on PyTorch's current stream of ``device``; nothing here synchronises or
    allocates, so the launch can be captured in a CUDA graph."""
    cupy = import_cupy()[0]
    handle = torch.cuda.current_stream(device).cuda_stream
    stream = _STREAMS.get(handle)
    if stream is None:
        stream = _STREAMS[handle] = cupy.cuda.ExternalStream(handle, device)
    with cupy.cuda.Device(device), stream:
        plan.kernel(plan.grid, (BLOCK_SIZE, ), pointers + plan.scalars)


def _new_result(name: str, a: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The uninitialised result of kernel ``name``: the forward pass's output in ``x``'s memory format, the
    input gradient in ``grad_out``'s, the kernels' gradient contiguous."""
    size, memory_format = {
        'involution_forward': ((geo.batch, geo.channels) + geo.out_size, output_memory_format(a)),
        'involution_grad_input': ((geo.batch, geo.channels) + geo.in_size, output_memory_format(a)),
        'involution_grad_weight': ((geo.batch, geo.groups) + geo.kernel + geo.out_size, torch.contiguous_format),
    }[name]
    return torch.empty(size, dtype=a.dtype, device=a.device, memory_format=memory_format)


def _run(name: str, a: torch.Tensor, b: torch.Tensor, geo: Geometry,
         spec: Optional[KernelSpec] = None) -> torch.Tensor:
    """Kernel ``name`` on ``a, b`` into a new result, unchecked."""
    result = _new_result(name, a, geo)
    _launch(name, a, b, result, geo, spec)
    return result


_REFERENCES: Dict[str, Callable[[torch.Tensor, torch.Tensor, Geometry], torch.Tensor]] = {
    'involution_forward': involution_forward, 'involution_grad_input': involution_grad_input,
    'involution_grad_weight': involution_grad_weight}


def _checked(name: str, a: torch.Tensor, b: torch.Tensor, geo: Geometry,
             spec: Optional[KernelSpec] = None) -> torch.Tensor:
    """Kernel ``name`` on ``a, b``, the first call of each compiled variant checked on its first sample
    against the PyTorch backend (every result is per sample); a variant that failed runs the PyTorch
    backend's kernel."""
    result = _new_result(name, a, geo)
    if geo.batch == 0:
        _launch(name, a, b, result, geo, spec)
        return result
    reference = _REFERENCES[name]
    mode = precision_mode(a.dtype)
    first = replace(geo, batch=1)

    def fast() -> torch.Tensor:
        _launch(name, a, b, result, geo, spec)
        return result

    return CUPY.run_variant(
        _variant(name, a, b, result, geo, spec), a.device, mode, False, fast,
        lambda out: compare({name: out[:1]}, {name: reference(a[:1].double(), b[:1].double(), first)}, mode),
        lambda: reference(a, b, geo))


def cupy_forward(x: torch.Tensor, weight: torch.Tensor, geo: Geometry, spec: Optional[KernelSpec] = None
                 ) -> torch.Tensor:
    """The forward kernel; the output keeps ``x``'s memory format (contiguous or channels_last).

    ``spec`` overrides the tiling ``choose_spec`` picks (for tuning, see ``benchmarks/op.py --tiling``).
    """
    return _checked('involution_forward', x, weight, geo, spec)


def cupy_grad_input(grad_out: torch.Tensor, weight: torch.Tensor, geo: Geometry,
                    spec: Optional[KernelSpec] = None) -> torch.Tensor:
    """The input gradient, in ``grad_out``'s memory format; each element written once, no atomics."""
    return _checked('involution_grad_input', grad_out, weight, geo, spec)


def cupy_grad_weight(grad_out: torch.Tensor, x: torch.Tensor, geo: Geometry,
                     spec: Optional[KernelSpec] = None) -> torch.Tensor:
    """The kernels' gradient (contiguous); each element written once, no atomics."""
    return _checked('involution_grad_weight', grad_out, x, geo, spec)
