"""The CUDA source of the involution kernels for one (dtype, shape class), and the tiling that picks the class.

Pure Python: nothing here needs CuPy or a GPU, so the sources can be built (and compiled by nvcc or a host C++
compiler) anywhere.
"""
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Tuple

import torch

from .geometry import Geometry

KERNEL_FILE = Path(__file__).with_name('involution_kernels.cu')
KERNEL_NAMES = ('involution_forward', 'involution_grad_input', 'involution_grad_weight')
BLOCK_SIZE = 256  # threads per block: accepted by every CUDA device, with __launch_bounds__ in the source
SCALAR_KINDS = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}

# Per-thread tiling limits, which keep the kernels within 255 registers without spilling (checked by nvcc in
# tests/test_cuda_kernels.py): channels per forward / input-gradient thread, at stride 1 and strided; columns
# per forward thread (rounded up to the stride); columns per weight-gradient thread.
_CHANNELS = {torch.float64: (4, 4)}  # (16, 8) for the others
_PIXELS = {torch.float64: 2}  # 4 for the others
_WGRAD_PIXELS = {torch.float64: 4}  # 8 for the others
_WGRAD_ACCUMULATORS = 64  # K_w * weight-gradient columns at most


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
            'BLOCK_SIZE': BLOCK_SIZE,
        }

    def threads(self, kernel_name: str, geo: Geometry) -> int:
        """Threads a kernel starts: one per (sample, unit, row, strip of columns) of the map it writes (or, for
        the input gradient, reads back to), where a unit is a chunk of channels, or for the weight gradient a
        (group, kernel row) pair, whose thread sums over the group's channels. The kernels decode the same order."""
        chunks = geo.channels // self.channels_per_thread
        units, (height, width), pixels = {
            'involution_forward': (chunks, geo.out_size, self.pixels_per_thread),
            'involution_grad_input': (chunks, geo.in_size, self.pixels_per_thread),
            'involution_grad_weight': (geo.groups * self.kernel[0], geo.out_size, self.wgrad_pixels_per_thread),
        }[kernel_name]
        return geo.batch * units * height * -(-width // pixels)

    def for_tensors(self, *tensors: torch.Tensor) -> 'KernelSpec':
        """The variant that launches on ``tensors``: compiled for unit column strides when every tensor has
        one (its last axis), and, for strided classes on other layouts, at most 4 channels per thread, which
        keeps the half-precision forward from spilling registers."""
        contiguous_rows = all(t.stride(-1) == 1 for t in tensors)
        channels = self.channels_per_thread
        if not contiguous_rows and max(self.stride) > 1:
            channels = min(channels, 4)
        return replace(self, contiguous_rows=contiguous_rows, channels_per_thread=channels)

    def source(self) -> str:
        """The kernel source with this variant's constants defined in front."""
        header = ''.join(f'#define {name} {value}\n' for name, value in self.defines().items())
        return header + _kernel_file_text()


@functools.lru_cache(maxsize=None)
def _kernel_file_text() -> str:
    return KERNEL_FILE.read_text()


def choose_spec(dtype: torch.dtype, geo: Geometry, resident_threads: int) -> KernelSpec:
    """Pick the tiling for a call.

    A forward or input-gradient thread takes the most channels of its group (up to 16, 8 when strided, 4 in
    float64) that still start at least half of ``resident_threads`` (what the GPU keeps in flight at once;
    each thread has many independent loads, so half is enough to hide latency): large maps read each kernel
    weight once, small maps still fill the device. Its strip is 4 columns (2 in float64), rounded up to a
    multiple of the horizontal stride, which the input-gradient kernel needs. A weight-gradient thread sums
    one kernel row for a strip of 8 columns (4 in float64), with at most 64 accumulators.
    """
    strided = max(geo.stride) > 1
    most_channels = _CHANNELS.get(dtype, (16, 8))[strided]
    channels = 1
    while channels * 2 <= most_channels and geo.group_channels % (channels * 2) == 0:
        channels *= 2
    stride_w = geo.stride[1]
    pixels = stride_w * -(-_PIXELS.get(dtype, 4) // stride_w)
    wgrad_pixels = max(1, min(_WGRAD_PIXELS.get(dtype, 8), _WGRAD_ACCUMULATORS // geo.kernel[1]))
    spec = KernelSpec(dtype, geo.kernel, geo.stride, geo.padding, geo.dilation, channels, pixels, wgrad_pixels)
    while spec.channels_per_thread > 1 and 2 * spec.threads('involution_forward', geo) < resident_threads:
        spec = replace(spec, channels_per_thread=spec.channels_per_thread // 2)
    return spec
