"""The CUDA source of the involution kernels for one (dtype, shape class), and the tiling that picks the class.

Pure Python: nothing here needs CuPy or a GPU, so the sources can be built (and compiled by nvcc or a host C++
compiler) anywhere.
"""
import functools
from dataclasses import dataclass
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

    def source(self) -> str:
        """The kernel source with this variant's constants defined in front."""
        header = ''.join(f'#define {name} {value}\n' for name, value in self.defines().items())
        return header + _kernel_file_text()


@functools.lru_cache(maxsize=None)
def _kernel_file_text() -> str:
    return KERNEL_FILE.read_text()


def forward_threads(geo: Geometry, channels_per_thread: int, pixels_per_thread: int) -> int:
    """Threads the forward kernel starts: one per (sample, channel chunk, output row, strip of columns)."""
    strips = -(-geo.out_size[1] // pixels_per_thread)
    return geo.batch * (geo.channels // channels_per_thread) * geo.out_size[0] * strips


def grad_input_threads(geo: Geometry, channels_per_thread: int, pixels_per_thread: int) -> int:
    """Threads of the input-gradient kernel: one per (sample, channel chunk, input row, strip of columns)."""
    strips = -(-geo.in_size[1] // pixels_per_thread)
    return geo.batch * (geo.channels // channels_per_thread) * geo.in_size[0] * strips


def grad_weight_threads(geo: Geometry, pixels_per_thread: int) -> int:
    """Threads of the weight-gradient kernel: one per (sample, group, output row, strip of columns)."""
    strips = -(-geo.out_size[1] // pixels_per_thread)
    return geo.batch * geo.groups * geo.out_size[0] * strips


def choose_spec(dtype: torch.dtype, geo: Geometry, resident_threads: int) -> KernelSpec:
    """Pick the tiling for a call.

    A forward thread takes the most channels of its group (up to 16, 4 in float64) that still start at least
    half of ``resident_threads`` (what the GPU keeps in flight at once; each thread has many independent
    loads, so half is enough to hide latency): large maps read each kernel weight once, small maps still fill
    the device. Strips are 4 columns (2 in float64), rounded up to a
    multiple of the horizontal stride, which the input-gradient kernel needs. The weight-gradient strip keeps
    its ``K_h * K_w * strip`` accumulators within about 100 registers.
    """
    channels = 1
    while (channels * 2 <= _FORWARD_CHANNELS.get(dtype, 16) and geo.group_channels % (channels * 2) == 0):
        channels *= 2
    stride_w = geo.stride[1]
    pixels = stride_w * -(-_FORWARD_PIXELS.get(dtype, 4) // stride_w)
    while channels > 1 and 2 * forward_threads(geo, channels, pixels) < resident_threads:
        channels //= 2
    taps = geo.kernel[0] * geo.kernel[1]
    wgrad_pixels = max(1, min(4, _WGRAD_ACCUMULATORS.get(dtype, 100) // taps))
    return KernelSpec(dtype, geo.kernel, geo.stride, geo.padding, geo.dilation, channels, pixels, wgrad_pixels)
