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

# Registers one thread may spend on accumulators, in accumulator-sized words (float32, or float64 for float64).
_FORWARD_CHANNELS = {torch.float64: 4}  # channels per forward thread at most; 16 for the others
_FORWARD_PIXELS = {torch.float64: 2}  # columns per forward thread before rounding to the stride; 4 otherwise
_WGRAD_ACCUMULATORS = {torch.float64: 50}  # 100 otherwise


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
            'BLOCK_SIZE': BLOCK_SIZE,
        }

    def threads(self, kernel_name: str, geo: Geometry) -> int:
        """Threads a kernel starts: one per (sample, unit, row, strip of columns) of the map it writes (or, for
        the input gradient, reads back to), where a unit is a chunk of channels, or a group for the weight
        gradient, which sums over the group's channels in one thread. The kernels decode the same order."""
        chunks = geo.channels // self.channels_per_thread
        units, (height, width), pixels = {
            'involution_forward': (chunks, geo.out_size, self.pixels_per_thread),
            'involution_grad_input': (chunks, geo.in_size, self.pixels_per_thread),
            'involution_grad_weight': (geo.groups, geo.out_size, self.wgrad_pixels_per_thread),
        }[kernel_name]
        return geo.batch * units * height * -(-width // pixels)

    def source(self) -> str:
        """The kernel source with this variant's constants defined in front."""
        header = ''.join(f'#define {name} {value}\n' for name, value in self.defines().items())
        return header + _kernel_file_text()


@functools.lru_cache(maxsize=None)
def _kernel_file_text() -> str:
    return KERNEL_FILE.read_text()


def choose_spec(dtype: torch.dtype, geo: Geometry, resident_threads: int) -> KernelSpec:
    """Pick the tiling for a call.

    A forward thread takes the most channels of its group (up to 16, 4 in float64) that still start at least
    half of ``resident_threads`` (what the GPU keeps in flight at once; each thread has many independent
    loads, so half is enough to hide latency): large maps read each kernel weight once, small maps still fill
    the device. Strips are 4 columns (2 in float64), rounded up to a multiple of the horizontal stride, which
    the input-gradient kernel needs. The weight-gradient strip keeps
    its ``K_h * K_w * strip`` accumulators within about 100 registers.
    """
    channels = 1
    while (channels * 2 <= _FORWARD_CHANNELS.get(dtype, 16) and geo.group_channels % (channels * 2) == 0):
        channels *= 2
    stride_w = geo.stride[1]
    pixels = stride_w * -(-_FORWARD_PIXELS.get(dtype, 4) // stride_w)
    taps = geo.kernel[0] * geo.kernel[1]
    wgrad_pixels = max(1, min(4, _WGRAD_ACCUMULATORS.get(dtype, 100) // taps))
    spec = KernelSpec(dtype, geo.kernel, geo.stride, geo.padding, geo.dilation, channels, pixels, wgrad_pixels)
    while spec.channels_per_thread > 1 and 2 * spec.threads('involution_forward', geo) < resident_threads:
        spec = replace(spec, channels_per_thread=spec.channels_per_thread // 2)
    return spec
