"""The CUDA source of the involution kernels for one (dtype, shape class, layout), and the choice of the class.

Pure Python: nothing here needs CuPy or a GPU, so the sources can be built (and compiled by nvcc or a host C++
compiler) anywhere.
"""
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .cuda_tiling import tiling_for
from .geometry import Geometry

KERNEL_FILE = Path(__file__).with_name('involution_kernels.cu')
KERNEL_NAMES = ('involution_forward', 'involution_grad_input', 'involution_grad_weight')
BLOCK_SIZE = 256  # threads per block: accepted by every CUDA device, with __launch_bounds__ in the source
SCALAR_KINDS = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}

# Limits on a thread's work, whatever a tiling table says: channels per forward / input-gradient thread (16,
# 8 when strided, 4 in float64: more spills registers), and weight-gradient accumulators (K_w * columns).
# tests/test_cuda_kernels.py checks with nvcc that the default table's tilings do not spill.
_MOST_CHANNELS = {torch.float64: (4, 4)}  # (16, 8) for the others
_CHUNK_BYTES = 16  # the widest load and store of a channel vector
_WGRAD_ACCUMULATORS = 64
# A launch starting fewer than 1 / _FILL of the threads the GPU keeps resident takes smaller tiles.
_FILL = 4


@dataclass(frozen=True)
class KernelSpec:
    """One compiled variant: a dtype, a geometry without its sizes, and the per-thread tiling."""
    dtype: torch.dtype
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    channels_per_thread: int
    pixels_per_thread: int
    wgrad_pixels_per_thread: int
    contiguous_rows: bool = False  # every tensor of the launch has unit stride along its last (column) axis
    channels_last: bool = False  # the channel-vector kernels: feature maps with unit channel stride

    def defines(self) -> Dict[str, int]:
        """The compile-time constants ``involution_kernels.cu`` expects."""
        return {
            'SCALAR_KIND': SCALAR_KINDS[self.dtype],
            'KERNEL_H': self.kernel[0], 'KERNEL_W': self.kernel[1],
            'STRIDE_H': self.stride[0], 'STRIDE_W': self.stride[1],
            'PAD_H': self.padding[0], 'PAD_W': self.padding[1],
            'DILATION_H': self.dilation[0], 'DILATION_W': self.dilation[1],
            'CHANNELS_PER_THREAD': self.channels_per_thread,
            'PIXELS_PER_THREAD': self.pixels_per_thread,
            'WGRAD_PIXELS_PER_THREAD': self.wgrad_pixels_per_thread,
            'CONTIGUOUS_ROWS': int(self.contiguous_rows),
            'CHANNELS_LAST': int(self.channels_last),
            'BLOCK_SIZE': BLOCK_SIZE,
        }

    def threads(self, kernel_name: str, geo: Geometry) -> int:
        """Threads a kernel starts: one per (sample, unit, row, strip of columns) of the map it writes (or, for
        the input gradient, reads back to), where a unit is a chunk of channels, or for the weight gradient a
        (group, kernel row) pair, whose thread sums over the group's channels. The kernels decode these (the
        channel-vector forward and input gradient with the chunk varying fastest)."""
        chunks = geo.channels // self.channels_per_thread
        units, (height, width), pixels = {
            'involution_forward': (chunks, geo.out_size, self.pixels_per_thread),
            'involution_grad_input': (chunks, geo.in_size, self.pixels_per_thread),
            'involution_grad_weight': (geo.groups * self.kernel[0], geo.out_size, self.wgrad_pixels_per_thread),
        }[kernel_name]
        return geo.batch * units * height * -(-width // pixels)

    def for_tensors(self, name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor) -> 'KernelSpec':
        """The variant that launches kernel ``name`` on ``a, b -> result``. The channel-vector kernels, when
        this spec asks for them and the feature maps they load as vectors have unit channel stride and other
        strides that keep every vector aligned (the vector shrinks until they do); else the row kernels,
        compiled for unit column strides when every tensor has one, and, for strided classes on other
        layouts, with at most 4 channels per thread, which keeps the half-precision forward from spilling."""
        if self.channels_last:
            maps, channels = vector_maps(name, a, b, result), self.channels_per_thread
            while channels > 1 and not all(_chunks_aligned(t, _chunk(channels, t.element_size())) for t in maps):
                channels //= 2
            if all(t.stride(1) == 1 for t in maps):
                return replace(self, channels_per_thread=channels, contiguous_rows=False)
        contiguous_rows = all(t.stride(-1) == 1 for t in (a, b, result))
        channels = self.channels_per_thread
        if not contiguous_rows and max(self.stride) > 1:
            channels = min(channels, 4)
        return replace(self, contiguous_rows=contiguous_rows, channels_per_thread=channels, channels_last=False)

    def vector_bytes(self, element_size: int) -> int:
        """Alignment in bytes the channel-vector kernels need of the maps they move in chunks (0: none)."""
        return _chunk(self.channels_per_thread, element_size) * element_size if self.channels_last else 0

    def source(self) -> str:
        """The kernel source with this variant's constants defined in front."""
        header = ''.join(f'#define {name} {value}\n' for name, value in self.defines().items())
        return header + _kernel_file_text()


@functools.lru_cache(maxsize=None)
def _kernel_file_text() -> str:
    return KERNEL_FILE.read_text()


def vector_maps(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The feature maps kernel ``name`` reads or writes as channel vectors (the weights are read element-wise)."""
    return (a, b) if name == 'involution_grad_weight' else (a, result)


def _chunk(channels: int, element_size: int) -> int:
    """Channels per load or store of a channel vector of ``channels``: as many as fit 16 bytes."""
    return min(channels, _CHUNK_BYTES // element_size)


def _chunks_aligned(t: torch.Tensor, chunk: int) -> bool:
    """Whether every ``chunk`` channels of ``t`` that start at a multiple of ``chunk`` lie at a multiple of
    ``chunk`` elements from its first element."""
    return all(s % chunk == 0 for i, s in enumerate(t.stride()) if i != 1)


def launch_layout(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor) -> str:
    """``contiguous`` when every tensor has unit column stride, ``channels_last`` when the feature maps the
    kernel moves as vectors have unit channel stride, else ``strided`` (the row kernels, strides at run time)."""
    if all(t.stride(-1) == 1 for t in (a, b, result)):
        return 'contiguous'
    if all(t.stride(1) == 1 for t in vector_maps(name, a, b, result)):
        return 'channels_last'
    return 'strided'


def launch_spec(name: str, a: torch.Tensor, b: torch.Tensor, result: torch.Tensor, geo: Geometry,
                resident_threads: int, device_name: Optional[str] = None) -> KernelSpec:
    """The variant and tiling kernel ``name`` launches with on ``a, b -> result``."""
    spec = choose_spec(result.dtype, geo, resident_threads, launch_layout(name, a, b, result), device_name)
    return spec.for_tensors(name, a, b, result)


def choose_spec(dtype: torch.dtype, geo: Geometry, resident_threads: int, layout: str = 'contiguous',
                device_name: Optional[str] = None) -> KernelSpec:
    """Pick the tiling for a call.

    The tiling table (``cuda_tiling.py``: the one measured on ``device_name``, else the defaults) gives the
    work per thread for the dtype, layout (``strided`` uses the ``contiguous`` entries) and the class of the
    output width. It is then fitted to the call: channels divide the group's, columns are a multiple of the
    horizontal stride (the input-gradient kernel needs it), a weight-gradient thread keeps at most 64
    accumulators. A launch that would start fewer than a quarter of
    ``resident_threads`` (what the GPU keeps in flight: small batches) takes fewer columns, then fewer
    channels, per thread until it does.
    """
    channels_last = layout == 'channels_last'
    tiling = tiling_for(dtype, 'channels_last' if channels_last else 'contiguous', geo.out_size[1], device_name)
    most = _MOST_CHANNELS.get(dtype, (16, 8))[max(geo.stride) > 1]
    channels = _power_of_two_divisor(geo.group_channels, min(tiling.channels, most))
    stride_w = geo.stride[1]
    pixels = stride_w * -(-tiling.pixels // stride_w)
    wgrad_pixels = max(1, min(tiling.wgrad_pixels, _WGRAD_ACCUMULATORS // geo.kernel[1]))
    spec = KernelSpec(dtype, geo.kernel, geo.stride, geo.padding, geo.dilation, channels, pixels, wgrad_pixels,
                      channels_last=channels_last)
    return _filled(spec, geo, resident_threads)


def _power_of_two_divisor(group_channels: int, most: int) -> int:
    """The largest power of two that divides ``group_channels`` and is at most ``most``."""
    channels = 1
    while channels * 2 <= most and group_channels % (channels * 2) == 0:
        channels *= 2
    return channels


def _filled(spec: KernelSpec, geo: Geometry, resident_threads: int) -> KernelSpec:
    """``spec`` with smaller tiles where a launch would leave most of the GPU idle."""
    def starved(name: str, spec: KernelSpec) -> bool:
        return _FILL * spec.threads(name, geo) < resident_threads

    stride_w = geo.stride[1]
    while starved('involution_forward', spec) and spec.pixels_per_thread > stride_w:
        spec = replace(spec, pixels_per_thread=stride_w * -(-spec.pixels_per_thread // (2 * stride_w)))
    while starved('involution_forward', spec) and spec.channels_per_thread > 1:
        spec = replace(spec, channels_per_thread=spec.channels_per_thread // 2)
    while starved('involution_grad_weight', spec) and spec.wgrad_pixels_per_thread > 1:
        spec = replace(spec, wgrad_pixels_per_thread=spec.wgrad_pixels_per_thread // 2)
    return spec
