"""Shape checks and index arithmetic shared by the involution backends."""
from dataclasses import dataclass
from typing import Iterator, Tuple, Union

import torch

IntPair = Union[int, Tuple[int, int]]


def to_pair(value: IntPair, name: str) -> Tuple[int, int]:
    """Turn an int or a pair of ints into a pair, refusing anything else."""
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}')
    return pair


@dataclass(frozen=True)
class Geometry:
    """Everything a backend needs to know about one involution call.

    ``x`` is ``(batch, channels, in_h, in_w)``; the weight is ``(batch, groups, kernel_h, kernel_w, out_h,
    out_w)`` and every group of ``channels // groups`` consecutive channels shares one kernel per position.
    """
    batch: int
    channels: int
    groups: int
    in_size: Tuple[int, int]
    out_size: Tuple[int, int]
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]

    @property
    def group_channels(self) -> int:
        return self.channels // self.groups

    def taps(self) -> Iterator[Tuple[int, int, slice, slice, slice, slice]]:
        """Yield ``(i, j, out_rows, out_cols, in_rows, in_cols)`` for every kernel tap.

        ``out[..., out_rows, out_cols]`` is the part of the output whose tap ``(i, j)`` lands inside the
        input, at ``x[..., in_rows, in_cols]``; the rest of the output reads zero padding for that tap and is
        left out, so no padded copy of the input is ever made. Taps that miss the input entirely are skipped.
        """
        for i in range(self.kernel[0]):
            rows = _tap_span(i, 0, self)
            if rows is None:
                continue
            for j in range(self.kernel[1]):
                cols = _tap_span(j, 1, self)
                if cols is not None:
                    yield (i, j) + (rows[0], cols[0], rows[1], cols[1])


def _tap_span(tap: int, axis: int, geo: Geometry):
    """Output and input slices along one axis for one kernel tap, or None where it only reads padding."""
    stride, size_in, size_out = geo.stride[axis], geo.in_size[axis], geo.out_size[axis]
    offset = tap * geo.dilation[axis] - geo.padding[axis]
    # Output index o reads input index o * stride + offset; keep 0 <= that < size_in.
    first = max(0, (stride - 1 - offset) // stride)  # ceil(-offset / stride), at least 0
    last = min(size_out - 1, (size_in - 1 - offset) // stride)
    if last < first:
        return None
    start = first * stride + offset
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


def output_memory_format(t: torch.Tensor) -> torch.memory_format:
    """The layout an op output takes after tensor ``t``: channels_last when ``t`` is channels_last (and not
    also contiguous, as tensors with unit dimensions can be), else contiguous. The real and the fake (meta)
    implementations of the ops both use it, so their outputs have the same strides."""
    if t.is_contiguous() or not t.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution-like sliding window along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_inputs(x: torch.Tensor, weight: torch.Tensor, stride: IntPair, padding: IntPair,
                 dilation: IntPair) -> Geometry:
    """Validate an involution call and describe it; raise ValueError naming expected and actual shapes."""
    stride, padding, dilation = (to_pair(stride, 'stride'), to_pair(padding, 'padding'),
                                 to_pair(dilation, 'dilation'))
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f'stride and dilation must be >= 1 and padding >= 0, got stride={stride}, '
                         f'padding={padding}, dilation={dilation}')
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)):
        raise ValueError(f'x and weight must be tensors, got {type(x).__name__} and '
                         f'{type(weight).__name__}')
    if x.dim() != 4:
        raise ValueError(f'x must be (batch, channels, height, width), got a {x.dim()}-d tensor of shape '
                         f'{tuple(x.shape)}')
    if weight.dim() != 6:
        raise ValueError('weight must be (batch, groups, kernel_h, kernel_w, out_h, out_w), got a '
                         f'{weight.dim()}-d tensor of shape {tuple(weight.shape)}')
    if x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(f'x and weight must share dtype and device, got x {x.dtype} on {x.device} and '
                         f'weight {weight.dtype} on {weight.device}')
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):  # not float8 either
        raise ValueError(f'involution needs floating-point tensors (float16, bfloat16, float32, float64), got '
                         f'{x.dtype}')
    batch, channels, in_h, in_w = x.shape
    groups, k_h, k_w = weight.shape[1:4]
    if groups < 1 or channels % groups:
        raise ValueError(f'channels ({channels}) of x {tuple(x.shape)} must be divisible by groups '
                         f'({groups}) of weight {tuple(weight.shape)}')
    out_h = output_size(in_h, k_h, stride[0], padding[0], dilation[0])
    out_w = output_size(in_w, k_w, stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f'input {in_h}x{in_w} is too small for kernel {k_h}x{k_w} with stride {stride}, '
                         f'padding {padding}, dilation {dilation}')
    expected = (batch, groups, k_h, k_w, out_h, out_w)
    if tuple(weight.shape) != expected:
        raise ValueError(f'weight must have shape {expected} (batch, groups, kernel_h, kernel_w, out_h, out_w) '
                         f'for x {tuple(x.shape)} with stride {stride}, padding {padding}, dilation '
                         f'{dilation}, got {tuple(weight.shape)}')
    return Geometry(batch, channels, groups, (in_h, in_w), (out_h, out_w), (k_h, k_w), stride, padding,
                    dilation)
