"""CUDA backend through CuPy: runs ``involution_kernels.cu`` on CUDA tensors.

Kernels are compiled by CuPy's NVRTC once per (dtype, shape class, device) and kept, and each launch is
planned once per (class, shapes, strides): a repeated call costs a dictionary lookup and the launch. They
launch on PyTorch's current CUDA stream, read and write the tensors in place through their strides (any memory
layout, no copies) and take their outputs from PyTorch's caching allocator. CuPy is optional: without it
(or on other devices) the dispatcher keeps using the PyTorch backend.
"""
import functools
from dataclasses import replace
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch

from .cuda_source import BLOCK_SIZE, KERNEL_NAMES, SCALAR_KINDS, KernelSpec, launch_spec
from .geometry import Geometry, output_memory_format

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
    """Whether the CuPy backend can run on ``x``, and why (for the dispatcher's log line and errors)."""
    if x.device.type != 'cuda':
        return False, f'it runs on CUDA tensors only, and this one is on {x.device.type}'
    if x.dtype not in SCALAR_KINDS:
        return False, f'{x.dtype} is not supported; it takes {sorted(str(t) for t in SCALAR_KINDS)}'
    cupy, error = import_cupy()
    if cupy is None:
        return False, f'CuPy is not importable ({error}); {INSTALL_HINT}'
    device = x.device.index if x.device.index is not None else torch.cuda.current_device()
    problem = device_problem(device)
    if problem is not None:
        return False, f'CuPy {cupy.__version__} cannot compile kernels for cuda:{device} ({problem}); {INSTALL_HINT}'
    return True, f'CuPy {cupy.__version__} compiles kernels for cuda:{device}'


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


def _plan(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
          spec: Optional[KernelSpec]) -> LaunchPlan:
    """Work out a launch: the variant that fits the tensors' layouts (of ``spec``, or of the tiling
    ``choose_spec`` picks for the layout and device), its thread count and arguments."""
    copy_a, copy_b = (not _column_offsets_fit(t, geo) for t in (a, b))
    a, b = (t.contiguous() if copy else t for t, copy in ((a, copy_a), (b, copy_b)))
    device = result.device.index
    spec = (spec.for_tensors(name, a, b, result) if spec else
            launch_spec(name, a, b, result, geo, resident_threads(device), device_name(device)))
    threads = spec.threads(name, geo)
    sizes = (geo.channels, geo.group_channels) + geo.in_size + geo.out_size
    scalars = tuple([np.int64(threads)] + [np.int32(v) for v in sizes] + _strides(a) + _strides(b)
                    + _strides(result))
    kernel = compiled_kernels(spec, device)[name] if threads else None
    return LaunchPlan(spec, name, kernel, (-(-threads // BLOCK_SIZE), ), scalars, copy_a, copy_b,
                      max(spec.vector_bytes(result.element_size()) - 1, 0))


def _launch(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
            spec: Optional[KernelSpec] = None) -> None:
    """Run kernel ``name`` (of the tiling ``spec``, or the default one) on these tensors."""
    key = (name, geo, result.dtype, a.stride(), b.stride(), result.stride(), result.device.index, spec)
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


def cupy_forward(x: torch.Tensor, weight: torch.Tensor, geo: Geometry, spec: Optional[KernelSpec] = None
                 ) -> torch.Tensor:
    """The forward kernel; the output keeps ``x``'s memory format (contiguous or channels_last).

    ``spec`` overrides the tiling ``choose_spec`` picks (for tuning, see ``benchmarks/op.py --tiling``).
    """
    out = torch.empty((geo.batch, geo.channels) + geo.out_size, dtype=x.dtype, device=x.device,
                      memory_format=output_memory_format(x))
    _launch('involution_forward', x, weight, out, geo, spec)
    return out


def cupy_grad_input(grad_out: torch.Tensor, weight: torch.Tensor, geo: Geometry,
                    spec: Optional[KernelSpec] = None) -> torch.Tensor:
    """The input gradient, in ``grad_out``'s memory format; each element written once, no atomics."""
    grad_x = torch.empty((geo.batch, geo.channels) + geo.in_size, dtype=grad_out.dtype, device=grad_out.device,
                         memory_format=output_memory_format(grad_out))
    _launch('involution_grad_input', grad_out, weight, grad_x, geo, spec)
    return grad_x


def cupy_grad_weight(grad_out: torch.Tensor, x: torch.Tensor, geo: Geometry,
                     spec: Optional[KernelSpec] = None) -> torch.Tensor:
    """The kernels' gradient (contiguous); each element written once, no atomics."""
    grad_w = torch.empty((geo.batch, geo.groups) + geo.kernel + geo.out_size, dtype=x.dtype, device=x.device)
    _launch('involution_grad_weight', grad_out, x, grad_w, geo, spec)
    return grad_w
