"""SimAM's fused forward and backward passes as Triton kernels, and how they are launched.

For each ``(sample, channel)`` plane of ``N = H * W`` values, with ``n = max(N - 1, 1)``:

    mean = sum(x) / N,  dev = x - mean,  r = 1 / (4 * (sum(dev^2) / n + lambda))
    s = sigmoid(dev^2 * r + 0.5),  y = x * s

and, for an output gradient ``g``, with ``a = g * x * s * (1 - s)``:

    dx = g * s + 2 * r * (a * dev - sum(a * dev) / N - 4 * r * dev * sum(a * dev^2) / n)

(``sum(dev) = 0`` removes the other terms of the chain rule). Statistics are float32 whatever the input dtype.

A program takes ``BLOCK_C`` channels of one sample as a ``[BLOCK_C, BLOCK_HW]`` tile: channel ``c`` and flat
position ``p = h * W + w`` sit at ``b * stride_b + c * stride_c + p * stride_hw``, which covers both layouts
(contiguous: ``stride_hw = 1``, a tile row is a plane; channels_last: ``stride_c = 1``, a tile column is a
run of adjacent channels). Triton specialises unit strides, so the loads are coalesced along whichever axis
is contiguous. Two plans:

- *resident*: the tile spans whole planes. Forward reads ``x`` once and writes ``y`` once; backward reads ``x``
  and ``g`` once and writes ``dx`` once.
- *looped*, for planes too large to keep on chip: chunks of ``BLOCK_HW`` positions. The statistics pass merges
  per-chunk means and squared deviations (Chan et al.'s pairwise update, exact two-pass moments per chunk, so
  no cancellation), then forward makes a second pass that writes ``y``; backward makes a second pass for
  ``sum(a * dev)`` and ``sum(a * dev^2)`` and a third that writes ``dx``.
"""
import contextlib
from typing import NamedTuple, Sequence

import torch
import triton
import triton.language as tl


class LaunchPlan(NamedTuple):
    """How a SimAM pass tiles its input.

    Args:
        block_c (int): Channels per program (a power of two).
        block_hw (int): Positions per tile: all of a plane's (padded to a power of two) when ``resident``,
            else the chunk length.
        resident (bool): Whether a tile holds whole planes, so each input is read once.
        num_warps (int): Warps per program.
    """
    block_c: int
    block_hw: int
    resident: bool
    num_warps: int


# Tile sizes, in elements. Untuned (no GPU measurement yet); chosen from static register counts (ptxas,
# sm_90a) to give 8 values per thread and at least 16 resident warps per SM.
MAX_TILE = 8192  # the largest plane-resident tile
LOOP_TILE = 4096  # a chunk of the looped plan
GROUP_TILE = 4096  # contiguous layout: small planes are grouped into tiles of about this size
# channels_last: channels per program. At least 8 (16 bytes in half precision) for whole planes, 16 when
# looping, at most 64 (a 128-byte row).
CL_MAX_C, CL_MIN_C, CL_LOOP_C = 64, 8, 16
ELEMENTS_PER_WARP = 256  # 8 values per thread
MAX_WARPS = 32


def launch_plan(channels: int, positions: int, channels_last: bool) -> LaunchPlan:
    """The tiling of a ``(B, channels, H, W)`` input with ``H * W = positions``, for either pass."""
    plane = triton.next_power_of_2(positions)
    all_channels = triton.next_power_of_2(channels)
    if not channels_last:
        if plane <= MAX_TILE:
            return _plan(min(all_channels, max(1, GROUP_TILE // plane)), plane, True)
        return _plan(1, LOOP_TILE, False)
    block_c = min(all_channels, CL_MAX_C, max(CL_MIN_C, GROUP_TILE // plane))
    if block_c * plane <= MAX_TILE:
        return _plan(block_c, plane, True)
    block_c = min(all_channels, CL_LOOP_C)
    return _plan(block_c, LOOP_TILE // block_c, False)


def _plan(block_c: int, block_hw: int, resident: bool) -> LaunchPlan:
    warps = max(1, min(MAX_WARPS, block_c * block_hw // ELEMENTS_PER_WARP))
    return LaunchPlan(block_c, block_hw, resident, warps)


def simam_forward(x: torch.Tensor, e_lambda: float, out: torch.Tensor) -> torch.Tensor:
    """SimAM of ``x`` (float16, bfloat16 or float32, 4-D) written into ``out``.

    Args:
        x (Tensor): The input ``(B, C, H, W)``, any strides (copied if not dense in ``out``'s layout).
        e_lambda (float): The energy regulariser lambda.
        out (Tensor): The output: ``x``'s shape and dtype, dense contiguous or channels_last.

    Returns:
        Tensor: ``out``.
    """
    if out.numel():
        _launch(_forward_kernel, [_strided_like(x, out)], out, e_lambda)
    return out


def simam_backward(grad: torch.Tensor, x: torch.Tensor, e_lambda: float, out: torch.Tensor) -> torch.Tensor:
    """The gradient of SimAM for its input, recomputing the statistics from ``x``, written into ``out``.

    Args:
        grad (Tensor): The gradient of the output, of the shape of ``x``, any strides.
        x (Tensor): The forward pass's input.
        e_lambda (float): The energy regulariser lambda.
        out (Tensor): The input gradient: ``x``'s shape and dtype, dense contiguous or channels_last.

    Returns:
        Tensor: ``out``.
    """
    if out.numel():
        _launch(_backward_kernel, [_strided_like(grad, out), _strided_like(x, out)], out, e_lambda)
    return out


def _channels_innermost(t: torch.Tensor) -> bool:
    """Whether adjacent channels are nearer in memory than adjacent positions (channels_last)."""
    return t.shape[1] > 1 and t.stride(1) < _position_stride(t)


def _position_stride(t: torch.Tensor) -> int:
    """The stride of the flat position ``p = h * W + w``, valid in both dense layouts."""
    return t.stride(3) if t.shape[3] > 1 else t.stride(2)


def _strided_like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (a copy only if it is not dense in ``like``'s layout) with exactly ``like``'s strides, so that one
    set of strides addresses both. Tensors dense in one layout differ at most in the strides of unit
    dimensions, which address nothing, so re-striding them is free."""
    t = t.contiguous(memory_format=torch.channels_last if _channels_innermost(like) else torch.contiguous_format)
    return t if t.stride() == like.stride() else t.as_strided(like.shape, like.stride())


def _launch(kernel, inputs: Sequence[torch.Tensor], out: torch.Tensor, e_lambda: float) -> None:
    batch, channels, height, width = out.shape
    positions = height * width
    plan = launch_plan(channels, positions, _channels_innermost(out))
    grid = (batch * triton.cdiv(channels, plan.block_c), )
    with torch.cuda.device(out.device) if out.is_cuda else contextlib.nullcontext():
        kernel[grid](*inputs, out, channels, positions, out.stride(0), out.stride(1), _position_stride(out),
                     float(positions), 1.0 / max(positions - 1, 1), float(e_lambda), BLOCK_C=plan.block_c,
                     BLOCK_HW=plan.block_hw, RESIDENT=plan.resident, num_warps=plan.num_warps)


@triton.jit
def _tile_rows(C, stride_b, stride_c, BLOCK_C: tl.constexpr):
    """This program's sample offset (64-bit), the offsets of its channels' position 0 within the sample
    (32-bit, which keeps per-value addressing cheap) and which of those channels exist."""
    blocks_per_sample = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0)
    channels = (pid % blocks_per_sample) * BLOCK_C + tl.arange(0, BLOCK_C)
    return (pid // blocks_per_sample).to(tl.int64) * stride_b, channels * stride_c, channels < C


@triton.jit
def _load_tile(ptr, rows, row_mask, start, HW, stride_hw, BLOCK_HW: tl.constexpr):
    """Positions ``start .. start + BLOCK_HW`` of the rows, as float32 (0 outside), with offsets and mask."""
    cols = start + tl.arange(0, BLOCK_HW)
    mask = row_mask[:, None] & (cols < HW)[None, :]
    offsets = rows[:, None] + cols[None, :] * stride_hw
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32), offsets, mask


@triton.jit
def _tile_moments(x, mask, count):
    """Per row: the mean of the ``count`` valid values and the sum of their squared deviations from it."""
    mean = tl.sum(x, axis=1) / count
    dev = tl.where(mask, x - mean[:, None], 0.0)
    return mean, tl.sum(dev * dev, axis=1)


@triton.jit
def _plane_moments(x_ptr, rows, row_mask, HW, stride_hw, hw_count, BLOCK_C: tl.constexpr,
                   BLOCK_HW: tl.constexpr):
    """Mean and sum of squared deviations of whole planes, merging chunk moments (Chan et al.)."""
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for start in range(0, HW, BLOCK_HW):
        x, _, mask = _load_tile(x_ptr, rows, row_mask, start, HW, stride_hw, BLOCK_HW)
        seen = start * 1.0  # every earlier chunk was full
        total = tl.minimum(seen + BLOCK_HW, hw_count)
        count = total - seen
        chunk_mean, chunk_m2 = _tile_moments(x, mask, count)
        delta = chunk_mean - mean
        mean += delta * (count / total)
        m2 += chunk_m2 + delta * delta * (seen * count / total)
    return mean, m2


@triton.jit
def _energy_scale(m2, inv_n, e_lambda):
    """``r = 1 / (4 * (variance + lambda))``, the factor of ``dev^2`` in the inverse energy."""
    return 1.0 / (4.0 * (m2 * inv_n + e_lambda))


@triton.jit
def _attention(x, mask, mean, scale):
    """Deviations (0 outside the mask), their squares and the attention weights ``s``."""
    dev = tl.where(mask, x - mean[:, None], 0.0)
    d = dev * dev
    return dev, d, tl.sigmoid(d * scale[:, None] + 0.5)


@triton.jit
def _forward_kernel(x_ptr, y_ptr, C, HW, stride_b, stride_c, stride_hw, hw_count, inv_n, e_lambda,
                    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, RESIDENT: tl.constexpr):
    sample, rows, row_mask = _tile_rows(C, stride_b, stride_c, BLOCK_C)
    x_ptr += sample
    y_ptr += sample
    if RESIDENT:
        x, offsets, mask = _load_tile(x_ptr, rows, row_mask, 0, HW, stride_hw, BLOCK_HW)
        mean, m2 = _tile_moments(x, mask, hw_count)
        _, _, s = _attention(x, mask, mean, _energy_scale(m2, inv_n, e_lambda))
        tl.store(y_ptr + offsets, (x * s).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        mean, m2 = _plane_moments(x_ptr, rows, row_mask, HW, stride_hw, hw_count, BLOCK_C, BLOCK_HW)
        scale = _energy_scale(m2, inv_n, e_lambda)
        for start in range(0, HW, BLOCK_HW):
            x, offsets, mask = _load_tile(x_ptr, rows, row_mask, start, HW, stride_hw, BLOCK_HW)
            _, _, s = _attention(x, mask, mean, scale)
            tl.store(y_ptr + offsets, (x * s).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _input_gradient(g, s, a, dev, scale, sum_a_dev, sum_a_d, inv_count, inv_n):
    """``dx`` from the per-position terms and the two per-plane sums (see the module docstring)."""
    plane_terms = (sum_a_dev * inv_count)[:, None] + dev * (4.0 * scale * sum_a_d * inv_n)[:, None]
    return g * s + 2.0 * scale[:, None] * (a * dev - plane_terms)


@triton.jit
def _backward_kernel(g_ptr, x_ptr, dx_ptr, C, HW, stride_b, stride_c, stride_hw, hw_count, inv_n, e_lambda,
                     BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, RESIDENT: tl.constexpr):
    sample, rows, row_mask = _tile_rows(C, stride_b, stride_c, BLOCK_C)
    g_ptr += sample
    x_ptr += sample
    dx_ptr += sample
    inv_count = 1.0 / hw_count
    if RESIDENT:
        x, offsets, mask = _load_tile(x_ptr, rows, row_mask, 0, HW, stride_hw, BLOCK_HW)
        g, _, _ = _load_tile(g_ptr, rows, row_mask, 0, HW, stride_hw, BLOCK_HW)
        mean, m2 = _tile_moments(x, mask, hw_count)
        scale = _energy_scale(m2, inv_n, e_lambda)
        dev, d, s = _attention(x, mask, mean, scale)
        a = g * x * s * (1.0 - s)
        dx = _input_gradient(g, s, a, dev, scale, tl.sum(a * dev, axis=1), tl.sum(a * d, axis=1), inv_count,
                             inv_n)
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        mean, m2 = _plane_moments(x_ptr, rows, row_mask, HW, stride_hw, hw_count, BLOCK_C, BLOCK_HW)
        scale = _energy_scale(m2, inv_n, e_lambda)
        sum_a_dev = tl.zeros([BLOCK_C], dtype=tl.float32)
        sum_a_d = tl.zeros([BLOCK_C], dtype=tl.float32)
        for start in range(0, HW, BLOCK_HW):
            x, _, mask = _load_tile(x_ptr, rows, row_mask, start, HW, stride_hw, BLOCK_HW)
            g, _, _ = _load_tile(g_ptr, rows, row_mask, start, HW, stride_hw, BLOCK_HW)
            dev, d, s = _attention(x, mask, mean, scale)
            a = g * x * s * (1.0 - s)
            sum_a_dev += tl.sum(a * dev, axis=1)
            sum_a_d += tl.sum(a * d, axis=1)
        for start in range(0, HW, BLOCK_HW):
            x, offsets, mask = _load_tile(x_ptr, rows, row_mask, start, HW, stride_hw, BLOCK_HW)
            g, _, _ = _load_tile(g_ptr, rows, row_mask, start, HW, stride_hw, BLOCK_HW)
            dev, d, s = _attention(x, mask, mean, scale)
            a = g * x * s * (1.0 - s)
            dx = _input_gradient(g, s, a, dev, scale, sum_a_dev, sum_a_d, inv_count, inv_n)
            tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
