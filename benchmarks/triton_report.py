#!/usr/bin/env python
"""Static report on the fused involution layer's Triton kernels, made without a GPU: registers, local memory
(spills), shared memory and the instructions per fused multiply-add of each kernel's hottest loop, for the
launches RedNet-50's involution layers make, compiled for one GPU architecture.

    python benchmarks/triton_report.py [--arch 90] [--dtype float16 float32] [--stages 1 4] [--layout channels_last]
    python benchmarks/triton_report.py --layout contiguous --no-staging      # the kernels on NCHW tensors directly

Triton ships ptxas, cuobjdump and nvdisasm, so nothing else is needed. The launcher
(``involution_mm/ops/triton/involution_fused.py``) runs on meta tensors with its kernels replaced by recorders,
so each kernel is compiled with exactly the arguments, tiles and specialisations (unit strides, 16-divisible
integers) of a real launch. These are instruction counts, not timings: benchmarks/op.py --layer measures.
"""
import argparse
import collections
import contextlib
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, List, NamedTuple, Tuple

os.environ.pop('TRITON_INTERPRET', None)  # before Triton is imported: compile for the GPU, not the interpreter

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
from involution_mm.ops.triton import involution_fused  # noqa: E402
from involution_mm.ops.triton.involution_tiles import default_config  # noqa: E402

from kernel_report import hottest_loop  # noqa: E402

TRITON_BIN = osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
KERNELS = ('fused_forward_kernel', 'grad_input_kernel', 'grad_kernels_kernel')
# RedNet-50's involution layers: (label, channels, input size, stride); 16 channels a group, K = 7
LAYERS = [('stage 1', 64, 56, 1), ('stage 2 s2', 128, 56, 2), ('stage 2', 128, 28, 1), ('stage 3 s2', 256, 28, 2),
          ('stage 3', 256, 14, 1), ('stage 4 s2', 512, 14, 2), ('stage 4', 512, 7, 1)]
TRITON_TYPES = {torch.float16: 'fp16', torch.bfloat16: 'bf16', torch.float32: 'fp32', torch.float64: 'fp64'}
LAUNCH_OPTIONS = ('num_warps', 'num_stages')


class Launch(NamedTuple):
    """One recorded kernel launch: the kernel, its positional and keyword arguments."""
    kernel: object
    args: tuple
    kwargs: dict


class _Recorder:
    """Stands in for a Triton kernel: ``kernel[grid](...)`` appends the launch instead of running it."""

    def __init__(self, kernel, launches: List[Launch]):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(Launch(self.kernel, args, kwargs))


@contextlib.contextmanager
def recording(launches: List[Launch]):
    """Replace the launcher's kernels by recorders for the duration."""
    saved = {name: getattr(involution_fused, name) for name in KERNELS}
    try:
        for name, kernel in saved.items():
            setattr(involution_fused, name, _Recorder(kernel, launches))
        yield
    finally:
        for name, kernel in saved.items():
            setattr(involution_fused, name, kernel)


def layer_launches(channels: int, size: int, stride: int, dtype: torch.dtype, channels_last: bool,
                   stage: bool = True, batch: int = 64) -> List[Launch]:
    """The three kernel launches of one layer's forward and backward pass, run on meta tensors (``stage``:
    the launcher's channels_last copy of contiguous inputs)."""
    kernel, groups, reduced = 7, channels // 16, channels // 4
    out = -(-size // stride)
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def meta(*shape):
        return torch.empty(shape, dtype=dtype, device='meta', memory_format=layout)

    x, r, grad = meta(batch, channels, size, size), meta(batch, reduced, out, out), meta(batch, channels, out, out)
    weight = torch.empty(groups * kernel**2, reduced, dtype=dtype, device='meta')
    bias = torch.empty(groups * kernel**2, dtype=dtype, device='meta')
    geometry = (kernel, stride, kernel // 2, 1)
    launches = []
    with recording(launches):
        involution_fused.fused_forward(x, r, weight, bias, *geometry, stage=stage)
        involution_fused.fused_grad_input(grad, x, r, weight, bias, *geometry, stage=stage)
        involution_fused.fused_grad_kernels(grad, x, r, weight, *geometry, stage=stage)
    return launches


def compile_launch(launch: Launch, capability: int):
    """Compile a recorded launch for ``sm_<capability>`` as Triton would at launch time: tensors become typed
    pointers (16-byte aligned), integers equal to 1 constants, integers divisible by 16 are marked so."""
    kernel = launch.kernel
    values = dict(zip(kernel.arg_names, launch.args))
    constants = {k: v for k, v in launch.kwargs.items() if k not in LAUNCH_OPTIONS}
    signature, attrs = {}, {}
    for index, name in enumerate(kernel.arg_names):
        value = values.get(name)
        if name in constants:
            signature[name] = 'constexpr'
        elif isinstance(value, torch.Tensor):
            signature[name] = '*' + TRITON_TYPES[value.dtype]
            attrs[(index, )] = [['tt.divisibility', 16]]
        elif value == 1:
            signature[name], constants[name] = 'constexpr', 1
        else:
            signature[name] = 'i32' if abs(value) < 2**31 else 'i64'
            if value % 16 == 0:
                attrs[(index, )] = [['tt.divisibility', 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    options = {k: launch.kwargs[k] for k in LAUNCH_OPTIONS}
    return triton.compile(source, target=GPUTarget('cuda', capability, 32), options=options)


def resources(compiled, directory: str) -> Dict[str, object]:
    """Registers, local memory bytes, shared memory bytes, and (instructions, multiply-adds) of the hottest
    loop of a compiled kernel."""
    cubin = osp.join(directory, f'{compiled.metadata.name}.cubin')
    with open(cubin, 'wb') as f:
        f.write(compiled.asm['cubin'])
    usage = subprocess.run([osp.join(TRITON_BIN, 'cuobjdump'), '--dump-resource-usage', cubin],
                           capture_output=True, text=True, check=True).stdout
    env = dict(os.environ, PATH=TRITON_BIN + os.pathsep + os.environ.get('PATH', ''))
    return dict(registers=int(re.search(r'REG:(\d+)', usage).group(1)),
                local=int(re.search(r'STACK:(\d+)', usage).group(1)), shared=compiled.metadata.shared,
                loop=hottest_loop(cubin, compiled.metadata.name, osp.join(TRITON_BIN, 'cuobjdump'), env))


def report_rows(capability: int, dtypes, layers, layouts, stage: bool) -> Iterator[Tuple[str, List[str]]]:
    """(row label, one cell per kernel) for every layer, dtype and layout."""
    with tempfile.TemporaryDirectory() as directory:
        for label, channels, size, stride in layers:
            for dtype in dtypes:
                for channels_last in layouts:
                    cells = {}
                    for launch in layer_launches(channels, size, stride, dtype, channels_last, stage):
                        found = resources(compile_launch(launch, capability), directory)
                        instructions, fmas = found['loop']
                        cells[launch.kernel.__name__] = (
                            f"{found['registers']} regs, {found['local']} B local, "
                            f"{instructions / max(fmas, 1):.2f}")
                    layout = 'channels_last' if channels_last else 'contiguous' + ('' if stage else ' unstaged')
                    groups, out = channels // 16, -(-size // stride)
                    tiles = default_config(groups, 16, (out, out))
                    yield (f'{label} {str(dtype)[6:]} {layout}, tiles {tiles}', [cells[name] for name in KERNELS])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', type=int, default=90, help='compute capability x 10 (default: 90, Hopper)')
    parser.add_argument('--dtype', nargs='+', default=['float16', 'float32'],
                        choices=['float16', 'bfloat16', 'float32', 'float64'])
    parser.add_argument('--stages', nargs='+', type=int, default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument('--layout', nargs='+', default=['channels_last', 'contiguous'],
                        choices=['channels_last', 'contiguous'])
    parser.add_argument('--no-staging', action='store_true',
                        help='contiguous inputs go to the kernels as they are, not copied to channels_last first')
    args = parser.parse_args(argv)
    layers = [layer for layer in LAYERS if int(layer[0].split()[1]) in args.stages]
    dtypes = [getattr(torch, name) for name in args.dtype]
    layouts = [name == 'channels_last' for name in args.layout]
    print(f'# Triton {triton.__version__}, sm_{args.arch}, batch 64. Per kernel: registers per thread, local '
          f'memory (spills), and in its hottest loop instructions per fused multiply-add.\n')
    print('| layer | forward | grad input | grad kernels |')
    print('|---|---|---|---|')
    counts = collections.Counter()
    for label, cells in report_rows(args.arch, dtypes, layers, layouts, not args.no_staging):
        counts['rows'] += 1
        print(f'| {label} | ' + ' | '.join(cells) + ' |', flush=True)
    return 0 if counts['rows'] else 1


if __name__ == '__main__':
    sys.exit(main())
