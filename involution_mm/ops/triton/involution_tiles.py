"""Tile sizes of the fused involution kernels: the default for a layer's shape, and the candidates a GPU sweep
times (``benchmarks/op.py --layer --sweep``). Pure Python: nothing here needs Triton.

The defaults were chosen without a GPU, from the kernels compiled for sm_90 on a CPU machine: registers stay
below 255 without spills, and the instructions per multiply-add of the hot loop are lowest for a tile whose
accumulator holds about 8192 values (64 float32 registers a thread at 4 warps). They are the first thing to
re-tune on a GPU (docs/ops.md, "Tuning").
"""
import functools
from typing import List, NamedTuple, Tuple

ACCUMULATOR_VALUES = 8192  # accumulator elements a 4-warp program holds (64 float32 registers a thread)
TILE_WIDTHS = (4, 8, 16, 32)


class TileConfig(NamedTuple):
    """How a fused involution kernel tiles its work.

    Args:
        block_h (int): Rows of positions a program takes (a power of two).
        block_w (int): Columns of positions a program takes (a power of two).
        block_g (int): Groups a program takes (a power of two); each group's channels come along.
        num_warps (int): Warps per program.
        num_stages (int): Software-pipelining stages of the tap loop.
    """
    block_h: int
    block_w: int
    block_g: int
    num_warps: int = 4
    num_stages: int = 2

    def __str__(self) -> str:
        return f'{self.block_h}x{self.block_w}x{self.block_g}g/{self.num_warps}w/{self.num_stages}s'


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(n - 1, 0).bit_length()


def tile_shape(positions: int, height: int, width: int) -> Tuple[int, int]:
    """``(block_h, block_w)`` with ``block_h * block_w == positions`` that pads a ``height x width`` map least
    (ties: the squarer tile, whose halo is smallest, then the wider one, whose rows are longer)."""
    best = None
    for block_w in TILE_WIDTHS:
        if block_w > positions:
            continue
        block_h = positions // block_w
        padded = -(-height // block_h) * block_h * (-(-width // block_w) * block_w)
        key = (padded, abs(block_h - block_w), -block_w)
        if best is None or key < best[0]:
            best = (key, (block_h, block_w))
    return best[1]


@functools.lru_cache(maxsize=None)  # called at every launch (inside the ops, never traced)
def default_config(groups: int, group_channels: int, out_size: Tuple[int, int]) -> TileConfig:
    """The tiles every fused kernel uses for a layer of ``groups`` groups of ``group_channels`` channels with
    outputs of ``out_size``: all groups in one program where the accumulator budget allows 16 positions (up
    to 32 groups of 16), and as many positions as the budget then allows (16 to 128), in the tile shape that
    pads the map least.

    Many groups a program pay off most where ``R = C / 4`` is large (RedNet-50's stage 4: R = 128): the
    kernels' matrix product then fills the tensor cores, and the input gradient, which loads ``r`` at every
    tap, shares each load among more channels. Compiled for sm_90, the stage-4 forward issues 3.7
    instructions a multiply-add with 32 groups and 16 positions against 4.2 with 8 groups and 64 positions.
    """
    block_c = next_power_of_2(group_channels)
    block_g = min(next_power_of_2(groups), max(1, ACCUMULATOR_VALUES // (16 * block_c)))
    positions = min(128, max(16, ACCUMULATOR_VALUES // (block_g * block_c)))
    positions = min(positions, max(16, next_power_of_2(out_size[0] * out_size[1])))
    return TileConfig(*tile_shape(positions, *out_size), block_g)


def candidate_configs(groups: int, group_channels: int, out_size: Tuple[int, int]) -> List[TileConfig]:
    """Configurations worth timing for one layer shape, the default first: every groups-per-program and
    positions-per-program choice within twice the accumulator budget (4 warps, 2 stages), then the default
    tiles with other warp and stage counts."""
    default = default_config(groups, group_channels, out_size)
    block_c = next_power_of_2(group_channels)
    found = [default]
    for block_g in (1, 2, 4, 8, 16, 32):
        for positions in (32, 64, 128):
            if block_g <= next_power_of_2(groups) and block_g * positions * block_c <= 2 * ACCUMULATOR_VALUES:
                found.append(TileConfig(*tile_shape(positions, *out_size), block_g))
    found += [default._replace(num_warps=warps, num_stages=stages) for warps, stages in ((8, 2), (4, 1), (4, 3))]
    return list(dict.fromkeys(found))
