"""CUDA backend through CuPy: runs ``involution_kernels.cu`` on CUDA tensors.

Kernels are compiled by CuPy's NVRTC once per (dtype, shape class, device) and kept; they launch on
PyTorch's current CUDA stream, read and write the tensors in place through their strides (any memory
layout, no copies) and take their outputs from PyTorch's caching allocator. CuPy is optional: without it
(or on other devices) the dispatcher keeps using the PyTorch backend.
"""
import functools
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .cuda_source import BLOCK_SIZE, KERNEL_NAMES, SCALAR_KINDS, KernelSpec, choose_spec
from .function import involution_function
from .geometry import Geometry

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


def _strides(t: torch.Tensor) -> list:
    """Six element strides, zero-padded (the kernels' parameter list)."""
    return [np.int64(s) for s in t.stride()] + [np.int64(0)] * (6 - t.dim())


def _column_offsets_fit(t: torch.Tensor, geo: Geometry) -> bool:
    """Whether the kernels' 32-bit offsets along a row reach every column ``t`` is read at (``t``'s column
    stride times its width plus the padding and kernel reach); a tensor beyond that is copied contiguous."""
    reach = t.shape[-1] + 2 * geo.padding[1] + geo.dilation[1] * geo.kernel[1] + 64
    return t.stride(-1) * reach < 2**31


def _launch(spec: KernelSpec, name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor,
            geo: Geometry) -> None:
    """Run kernel ``name`` of the variant of ``spec`` that fits these tensors' layouts."""
    a, b = (t if _column_offsets_fit(t, geo) else t.contiguous() for t in (a, b))
    spec = spec.for_tensors(a, b, result)
    threads = spec.threads(name, geo)
    if threads:
        _run_kernel(spec, name, threads, a, b, result, geo)


def _run_kernel(spec: KernelSpec, name: str, threads: int, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor,
                geo: Geometry) -> None:
    """Launch ``threads`` threads of one kernel on PyTorch's current stream."""
    cupy = import_cupy()[0]
    device = result.device.index
    kernel = compiled_kernels(spec, device)[name]
    sizes = (geo.channels, geo.group_channels) + geo.in_size + geo.out_size
    args = ([np.int64(t.data_ptr()) for t in (a, b, result)] + [np.int64(threads)] + [np.int32(v) for v in sizes]
            + _strides(a) + _strides(b) + _strides(result))
    with cupy.cuda.Device(device), cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
        kernel((-(-threads // BLOCK_SIZE), ), (BLOCK_SIZE, ), tuple(args))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def default_spec(x: torch.Tensor, geo: Geometry) -> KernelSpec:
    """The tiling ``choose_spec`` picks for ``x`` on its device."""
    return choose_spec(x.dtype, geo, resident_threads(x.device.index))


def cupy_forward(x: torch.Tensor, weight: torch.Tensor, geo: Geometry, spec: Optional[KernelSpec] = None
                 ) -> torch.Tensor:
    """The forward kernel; the output keeps ``x``'s memory format (contiguous or channels_last).

    ``spec`` overrides the tiling ``choose_spec`` picks (for tuning, see ``tools/benchmark.py --tiling``).
    """
    spec = spec or default_spec(x, geo)
    out = torch.empty((geo.batch, geo.channels) + geo.out_size, dtype=x.dtype, device=x.device,
                      memory_format=_memory_format(x))
    _launch(spec, 'involution_forward', x, weight, out, geo)
    return out


def cupy_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, geo: Geometry,
                  need_x_grad: bool = True, need_weight_grad: bool = True, spec: Optional[KernelSpec] = None):
    """Gradients for ``x`` and ``weight`` (None where not needed); each written once, no atomics."""
    spec = spec or default_spec(x, geo)
    grad_x = grad_w = None
    if need_x_grad:
        grad_x = torch.empty_like(x, memory_format=_memory_format(x))
        _launch(spec, 'involution_grad_input', grad_out, weight, grad_x, geo)
    if need_weight_grad:
        grad_w = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        _launch(spec, 'involution_grad_weight', grad_out, x, grad_w, geo)
    return grad_x, grad_w


# Named so for traces and the FLOP counter (involution_mm.complexity).
CupyInvolutionFunction = involution_function('CupyInvolutionFunction', cupy_forward, cupy_backward)
involution_cupy = CupyInvolutionFunction.run  # run the CuPy backend on checked inputs
