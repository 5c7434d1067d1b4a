"""How the CUDA kernels split the work among threads, per (dtype, layout, stage class): a default table for any
GPU, and tables measured on particular GPUs by ``benchmarks/op.py --tiling``, which prints one in this
module's format.

A stage class is the width of the map a launch writes, in the classes of RedNet's four stages (56, 28, 14 and
7 columns at 224x224): the columns per thread that fit a row without waste, and the number of threads a
stage starts, follow from it. Layouts are ``contiguous`` (the row kernels, also used for any other layout with
the clamps of ``KernelSpec.for_tensors`` for strided layouts) and ``channels_last`` (the channel-vector kernels).
bfloat16 uses float16's entries, which move the same bytes, unless it has its own.
"""
from typing import Dict, NamedTuple, Optional, Tuple

import torch

STAGE_CLASSES = ('large', 'medium', 'small', 'tiny')  # output width >= 40, >= 20, >= 10, below 10
LAYOUTS = ('contiguous', 'channels_last')


class Tiling(NamedTuple):
    """Work per thread. ``channels``: channels of one group per forward / input-gradient thread (in
    channels_last, adjacent channels moved in loads of up to 16 bytes, and the channels a weight-gradient
    thread sums per step); ``pixels``: neighbouring columns per
    forward / input-gradient thread; ``wgrad_pixels``: neighbouring columns per weight-gradient thread."""
    channels: int
    pixels: int
    wgrad_pixels: int


TilingTable = Dict[Tuple[str, str, str], Tiling]  # (dtype name, layout, stage class) -> Tiling

# Any GPU without a measured table. Chosen without a GPU, from the kernels' static figures (benchmarks/kernel_report.py,
# sm_90): at most about 128 registers, so that 256-thread blocks keep at least 16 warps per multiprocessor to
# hide memory latency, and few instructions per multiply-add (channels_last: a thread takes a whole group of
# 16 channels where that still starts enough threads); and from thread counts: narrow maps take fewer columns
# per thread, so that a RedNet-50 stage at batch 64 starts about as many threads as an H100 keeps resident
# (132 x 2048). float32 moves twice the bytes per multiply-add of float16, so it favours smaller tiles (more
# warps) over fewer instructions. Some tilings make ptxas spill a few bytes (float32 row kernels with 4
# weight-gradient columns, the strided 4 x 2 float32 forward): the table avoids them.
DEFAULT_TILINGS: TilingTable = {
    ('float16', 'contiguous', 'large'): Tiling(4, 4, 8),
    ('float16', 'contiguous', 'medium'): Tiling(4, 4, 8),
    ('float16', 'contiguous', 'small'): Tiling(4, 2, 2),
    ('float16', 'contiguous', 'tiny'): Tiling(2, 4, 4),
    ('float16', 'channels_last', 'large'): Tiling(16, 4, 4),
    ('float16', 'channels_last', 'medium'): Tiling(16, 2, 4),
    ('float16', 'channels_last', 'small'): Tiling(8, 2, 2),
    ('float16', 'channels_last', 'tiny'): Tiling(8, 1, 2),
    ('float32', 'contiguous', 'large'): Tiling(4, 4, 8),
    ('float32', 'contiguous', 'medium'): Tiling(4, 4, 2),
    ('float32', 'contiguous', 'small'): Tiling(4, 2, 2),
    ('float32', 'contiguous', 'tiny'): Tiling(2, 4, 2),
    ('float32', 'channels_last', 'large'): Tiling(8, 2, 2),
    ('float32', 'channels_last', 'medium'): Tiling(8, 2, 2),
    ('float32', 'channels_last', 'small'): Tiling(8, 2, 2),
    ('float32', 'channels_last', 'tiny'): Tiling(4, 1, 2),
    ('float64', 'contiguous', 'large'): Tiling(4, 2, 4),
    ('float64', 'contiguous', 'medium'): Tiling(4, 2, 4),
    ('float64', 'contiguous', 'small'): Tiling(4, 2, 2),
    ('float64', 'contiguous', 'tiny'): Tiling(2, 2, 4),
    ('float64', 'channels_last', 'large'): Tiling(4, 2, 2),
    ('float64', 'channels_last', 'medium'): Tiling(4, 2, 2),
    ('float64', 'channels_last', 'small'): Tiling(4, 2, 2),
    ('float64', 'channels_last', 'tiny'): Tiling(2, 1, 2),
}

# device name (torch.cuda.get_device_name) -> the table measured on it; entries it lacks come from the
# defaults. Paste the output of ``benchmarks/op.py --tiling`` here.
MEASURED_TILINGS: Dict[str, TilingTable] = {}


def as_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t``, a feature map or a weight, with the same values as a model in ``layout`` holds it (for tests and
    benchmarks): ``contiguous``; ``channels_last``, NHWC maps, and weights as the view of a channels_last
    span-conv output (taps innermost); ``strided``, no unit column stride (columns stored first), which the row
    kernels read with run-time strides."""
    if layout == 'channels_last':
        if t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        span = t.reshape(t.shape[0], -1, *t.shape[4:]).contiguous(memory_format=torch.channels_last)
        return span.view(t.shape)
    if layout == 'strided':
        return t.transpose(-2, -1).contiguous().transpose(-2, -1)
    return t.contiguous()


def stage_class(out_width: int) -> str:
    """The stage class of a launch whose map is ``out_width`` columns wide."""
    for name, least in zip(STAGE_CLASSES, (40, 20, 10)):
        if out_width >= least:
            return name
    return STAGE_CLASSES[-1]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace('torch.', '')


def tiling_for(dtype: torch.dtype, layout: str, out_width: int, device_name: Optional[str] = None) -> Tiling:
    """The tiling of one launch: the device's measured entry if it has one, else the default."""
    names = [dtype_name(dtype)] + (['float16'] if dtype == torch.bfloat16 else [])
    measured = MEASURED_TILINGS.get(device_name or '', {})
    for table in (measured, DEFAULT_TILINGS):
        for name in names:
            tiling = table.get((name, layout, stage_class(out_width)))
            if tiling is not None:
                return tiling
    raise KeyError(f'no tiling for {dtype} {layout}')


def table_source(device_name: str, table: TilingTable) -> str:
    """``table`` as the Python lines of a ``MEASURED_TILINGS`` entry."""
    lines = [f'    {device_name!r}: {{']
    for key in sorted(table):
        lines.append(f'        {key!r}: Tiling{tuple(table[key])!r},')
    return '\n'.join(lines + ['    },'])
