#!/usr/bin/env python
"""Benchmark the involution op against the naive unfold formulation at the RedNet-50 stage shapes.

    python benchmarks/op.py                       # CPU, batch 8, float32
    python benchmarks/op.py --device cuda --batch 64 --dtype float16
    python benchmarks/op.py --device cuda --kernels --batch 64 256 --dtype float16 float32   # issue 13
    python benchmarks/op.py --device cuda --tiling --batch 64 256 --dtype float16 float32    # tuning table
    python benchmarks/op.py --layer --device cuda --batch 64 256 --dtype float16  # the fused layer, per stage
    python benchmarks/op.py --latency --device cuda --dtype float16   # batch 1: per-call host time, latency

For each stage's involution (224x224 input, K=7, 16 channels per group) it times forward+backward and
measures the peak memory allocated beyond the inputs, for ``unfold`` (unfold every 7x7 neighbourhood,
multiply, sum: what the original implementation fell back to) and for each of our backends, and prints
the ratios ours/unfold (lower is better). Ratios come from one run, side by side.

On CUDA (or with ``--bandwidth``) a second table gives each backend's forward time and its share of the bandwidth bound: the bytes a
pass must move (forward reads x and the weight and writes the output, 2|x| + |w|; each of the two gradients
moves as much again) divided by the bandwidth of a large tensor copy measured in the same run.

``--kernels`` (CUDA) takes the CuPy kernels alone, for every ``--batch`` and ``--dtype``: the device time of
the forward, input-gradient and weight-gradient kernels (CUDA-graph replay, so host time per call does not
count) as shares of the bandwidth bound, contiguous and channels_last (NHWC maps, weights as the view of a
channels_last span conv, as a channels_last RedNet holds them), and the channels_last / contiguous time
ratio; in float32 also forward+backward milliseconds (eager, as a model runs them) of the op against the
original CuPy kernel's formulation (benchmarks/reference_involution.py). ``--tiling`` times every tiling of the
CuPy kernels at each stage for each layout, batch and dtype, and prints the best per (dtype, layout, stage
class) as an entry of ``cuda_tiling.MEASURED_TILINGS``.

``--latency`` measures what matters at batch 1: for each stage's involution, the host time of one call (many
calls queued without synchronising, divided by their number: Python, dispatch and launch, while the device
runs behind) and the latency of one call (synchronised), for inference (no_grad) and for a training forward
(inputs that require grad), next to ``F.conv2d`` with a 7x7 depthwise kernel on the same input (the same
window over the same map, one cuDNN launch).
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from involution_mm.ops import available_backends, involution, select_backend
from involution_mm.ops.geometry import check_inputs
from involution_mm.profiling import median_time, peak_memory_bytes
from timing import copy_bandwidth, graph_copy_bandwidth, graph_ms, host_microseconds, machine_description

# (stage, channels, size) of the stride-1 involutions of RedNet-50 at 224x224 input
STAGES = [(1, 64, 56), (2, 128, 28), (3, 256, 14), (4, 512, 7)]
KERNEL, GROUP_CHANNELS = 7, 16


def unfold_involution(x, weight, padding):
    """The naive formulation: a (B, C*K*K, H*W) unfolded copy of x, weighted and summed."""
    batch, channels, height, width = x.shape
    groups, kernel = weight.shape[1], weight.shape[2]
    cols = F.unfold(x, kernel, padding=padding).view(batch, groups, channels // groups, kernel * kernel,
                                                      height, width)
    return (cols * weight.flatten(2, 3).unsqueeze(2)).sum(3).view(batch, channels, height, width)


def forward_backward(op, x, weight, grad):
    """One forward+backward pass; the gradients are allocated inside it (and dropped at its end)."""
    def run():
        op(x, weight).backward(grad)
        x.grad = weight.grad = None
    return run




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, nargs='+', default=[8],
                        help='batch size (several with --kernels and --tiling)')
    parser.add_argument('--dtype', nargs='+', default=['float32'],
                        choices=['float32', 'float16', 'bfloat16', 'float64'],
                        help='dtype (several with --kernels and --tiling)')
    parser.add_argument('--stages', type=int, nargs='+', default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--inner', type=int, default=None,
                        help='calls per timed sample (default 1 on CPU, 20 on CUDA, so launches queue up)')
    parser.add_argument('--bandwidth', action='store_true',
                        help='print the bandwidth-bound table on CPU too (always printed on CUDA)')
    parser.add_argument('--kernels', action='store_true',
                        help='CuPy kernels: shares of the bandwidth bound per kernel and layout, float32 against '
                             'the original formulation (CUDA only)')
    parser.add_argument('--tiling', action='store_true',
                        help='time every CuPy tiling and print the best as a tuning table (CUDA only)')
    parser.add_argument('--latency', action='store_true',
                        help='batch 1: per-call host time and latency of the op against F.conv2d')
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype[0])
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: --device cuda, but torch sees no CUDA device', file=sys.stderr)
        return 2
    if (args.kernels or args.tiling) and device.type != 'cuda':
        print('error: --kernels and --tiling time the CuPy kernels: use --device cuda', file=sys.stderr)
        return 2

    if args.latency:
        return latency(device, dtype, args.stages, args.repeats)
    if args.kernels or args.tiling:
        dtypes = [getattr(torch, name) for name in args.dtype]
        return (kernel_tables if args.kernels else tiling_tables)(device, args.batch, dtypes, args.stages,
                                                                  args.repeats)
    args.batch, args.dtype = args.batch[0], args.dtype[0]
    print(f'# involution forward+backward, RedNet-50 stage shapes, batch {args.batch}, {args.dtype}, '
          f'K={KERNEL}')
    print(f'# {machine_description(device)}; torch {torch.__version__}')
    inner = args.inner or (20 if device.type == 'cuda' else 1)

    def timed(fn):
        return median_time(lambda: [fn() for _ in range(inner)], device, args.repeats) / inner

    backends = [name for name in available_backends() if _usable(name, device)]
    bandwidth_rows = []
    header = ['stage', 'shape (B, C, H, W), G', 'unfold ms', 'unfold MiB']
    for name in backends:
        header += [f'{name} ms', f'{name} MiB', 'time ratio', 'memory ratio']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for stage, channels, size in STAGES:
        if stage not in args.stages:
            continue
        groups = channels // GROUP_CHANNELS
        x = torch.randn(args.batch, channels, size, size, device=device, dtype=dtype, requires_grad=True)
        weight = torch.randn(args.batch, groups, KERNEL, KERNEL, size, size, device=device, dtype=dtype,
                             requires_grad=True)
        grad = torch.randn_like(x)
        ops = {'unfold': lambda a, b: unfold_involution(a, b, KERNEL // 2)}
        for name in backends:
            ops[name] = lambda a, b, name=name: involution(a, b, 1, KERNEL // 2, backend=name)
        results = {}
        for name, op in ops.items():
            run = forward_backward(op, x, weight, grad)
            results[name] = (timed(run) * 1e3, peak_memory_bytes(run, device) / 2**20)
        if device.type == 'cuda' or args.bandwidth:
            bandwidth_rows.append(_bandwidth_row(stage, x, weight, ops, results, timed))
        row = [str(stage), f'({args.batch}, {channels}, {size}, {size}), {groups}',
               f'{results["unfold"][0]:.1f}', f'{results["unfold"][1]:.1f}']
        for name in backends:
            ms, mib = results[name]
            row += [f'{ms:.1f}', f'{mib:.1f}', f'{ms / results["unfold"][0]:.3f}',
                    f'{mib / results["unfold"][1]:.3f}']
        print('| ' + ' | '.join(row) + ' |', flush=True)
    if bandwidth_rows:
        copy = copy_bandwidth(device, timed)
        print(f'\n# share of the bandwidth bound; copy of one large tensor: {copy / 1e9:.0f} GB/s (read + write)')
        header = ['stage', 'MB per forward']
        for name in ['unfold'] + backends:
            header += [f'{name} fwd ms', f'{name} fwd % bound', f'{name} fwd+bwd % bound']
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for stage, moved, forward_ms, pass_ms in bandwidth_rows:
            row = [str(stage), f'{moved / 1e6:.1f}']
            for name in ['unfold'] + backends:
                bound_ms = moved / copy * 1e3
                row += [f'{forward_ms[name]:.3f}', f'{100 * bound_ms / forward_ms[name]:.0f}%',
                        f'{100 * 3 * bound_ms / pass_ms[name]:.0f}%']
            print('| ' + ' | '.join(row) + ' |', flush=True)
    return 0




def latency(device: torch.device, dtype: torch.dtype, stages, repeats: int) -> int:
    """The ``--latency`` table: batch 1, every stage, the op against a 7x7 depthwise F.conv2d."""
    print(f'# involution at batch 1, RedNet-50 stage shapes, {str(dtype)[6:]}, K={KERNEL}: host time of one call '
          f'(queued, not synchronised) and latency (synchronised), microseconds')
    print(f'# {machine_description(device)}; torch {torch.__version__}; involution backend '
          f'{select_backend(torch.empty(1, 1, 1, 1, device=device, dtype=dtype))!r}')
    header = ['stage', 'shape (C, H, W)', 'op host', 'conv host', 'op latency', 'conv latency',
              'op host, training', 'conv host, training']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for stage, channels, size in STAGES:
        if stage not in stages:
            continue
        x = torch.randn(1, channels, size, size, device=device, dtype=dtype)
        weight = torch.randn(1, channels // GROUP_CHANNELS, KERNEL, KERNEL, size, size, device=device, dtype=dtype)
        kernel = torch.randn(channels, 1, KERNEL, KERNEL, device=device, dtype=dtype)
        op = lambda a, b: involution(a, b, 1, KERNEL // 2)  # noqa: E731
        conv = lambda a, b: F.conv2d(a, b, padding=KERNEL // 2, groups=channels)  # noqa: E731
        row = [str(stage), f'({channels}, {size}, {size})']
        with torch.no_grad():
            row += [f'{host_microseconds(lambda: op(x, weight), device):.1f}',
                    f'{host_microseconds(lambda: conv(x, kernel), device):.1f}',
                    f'{median_time(lambda: op(x, weight), device, repeats, 3) * 1e6:.1f}',
                    f'{median_time(lambda: conv(x, kernel), device, repeats, 3) * 1e6:.1f}']
        x.requires_grad_(True)
        row += [f'{host_microseconds(lambda: op(x, weight), device):.1f}',
                f'{host_microseconds(lambda: conv(x, kernel), device):.1f}']
        print('| ' + ' | '.join(row) + ' |', flush=True)
    return 0




def _bandwidth_row(stage, x, weight, ops, results, timed):
    """Bytes one forward must move, and each op's forward and forward+backward milliseconds."""
    moved = (2 * x.numel() + weight.numel()) * x.element_size()
    with torch.no_grad():
        forward_ms = {name: timed(lambda op=op: op(x, weight)) * 1e3 for name, op in ops.items()}
    return stage, moved, forward_ms, {name: ms for name, (ms, _) in results.items()}


# ---- CuPy kernels alone (--kernels, --tiling) ------------------------------------------------------------

KERNEL_LAYOUTS = ('contiguous', 'channels_last')




def stage_tensors(stage: int, batch: int, dtype: torch.dtype, layout: str, device: torch.device):
    """x, weight and an output gradient of a RedNet-50 stage, as a model in ``layout`` holds them."""
    from involution_mm.ops.cuda_tiling import as_layout
    channels, size = next((c, s) for st, c, s in STAGES if st == stage)
    gen = torch.Generator(device).manual_seed(stage)
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype, generator=gen)
    weight = torch.randn(batch, channels // GROUP_CHANNELS, KERNEL, KERNEL, size, size, device=device, dtype=dtype,
                         generator=gen)
    return as_layout(x, layout), as_layout(weight, layout), as_layout(torch.randn_like(x), layout)


def kernel_calls(x, weight, grad, spec=None):
    """name -> a call of that CuPy kernel on the stage's tensors (``spec``: a tiling override)."""
    from involution_mm.ops import cupy_backend
    geo = check_inputs(x, weight, 1, KERNEL // 2, 1)
    return {'forward': lambda: cupy_backend.cupy_forward(x, weight, geo, spec),
            'grad_input': lambda: cupy_backend.cupy_grad_input(grad, weight, geo, spec),
            'grad_weight': lambda: cupy_backend.cupy_grad_weight(grad, x, geo, spec)}




def kernel_tables(device, batches, dtypes, stages, repeats) -> int:
    """``--kernels``: per dtype, each kernel's share of the bandwidth bound at every stage and batch in both
    layouts; in float32 also forward+backward against the original kernel's formulation."""
    copy = graph_copy_bandwidth(device)
    print(f'# CuPy kernels at the RedNet-50 stage shapes, K={KERNEL}; {machine_description(device)}; torch '
          f'{torch.__version__}; copy bandwidth {copy / 1e9:.0f} GB/s (read + write, device time)')
    for dtype in dtypes:
        print(f'\n# {str(dtype)[6:]}: share of the bandwidth bound (2|x| + |w| bytes per kernel over the copy '
              f'bandwidth), device time of CUDA-graph replays; cl/contig: channels_last time over contiguous, '
              f'three kernels together')
        header = ['stage', 'batch', 'MB per kernel'] + [f'{layout} {name}' for layout in KERNEL_LAYOUTS
                                                        for name in ('fwd', 'grad_input', 'grad_weight')]
        print('| ' + ' | '.join(header + ['cl/contig']) + ' |')
        print('|' + '---|' * (len(header) + 1))
        for stage in stages:
            for batch in batches:
                print('| ' + ' | '.join(_share_row(device, stage, batch, dtype, copy)) + ' |', flush=True)
        if dtype == torch.float32:
            _reference_table(device, batches, stages, repeats)
    return 0


def _share_row(device, stage, batch, dtype, copy):
    cells, totals = [], {}
    for layout in KERNEL_LAYOUTS:
        x, weight, grad = stage_tensors(stage, batch, dtype, layout, device)
        moved = (2 * x.numel() + weight.numel()) * x.element_size()
        times = {name: graph_ms(call) for name, call in kernel_calls(x, weight, grad).items()}
        cells += [f'{100 * moved / copy * 1e3 / ms:.0f}% ({ms:.3f} ms)' for ms in times.values()]
        totals[layout] = sum(times.values())
        del x, weight, grad
    return [str(stage), str(batch), f'{moved / 1e6:.0f}'] + cells + [
        f'{totals["channels_last"] / totals["contiguous"]:.2f}']


def _reference_table(device, batches, stages, repeats):
    """float32 forward+backward of the op (eager, both layouts) against benchmarks/reference_involution.py."""
    from reference_involution import reference_involution
    print('\n# float32 forward+backward ms (eager, host time included, as a model runs it): the op against the '
          "original CuPy kernel's formulation (benchmarks/reference_involution.py, contiguous copies as it takes)")
    header = ['stage', 'batch', 'ours contiguous', 'ours channels_last', 'original formulation',
              'ours contiguous / original', 'ours channels_last / original']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    ops = {'ours': lambda a, b: involution(a, b, 1, KERNEL // 2, backend='cupy'),
           'original': lambda a, b: reference_involution(a, b)}
    for stage in stages:
        for batch in batches:
            ms = {}
            for name, layout in (('ours', 'contiguous'), ('ours', 'channels_last'), ('original', 'contiguous')):
                x, weight, grad = stage_tensors(stage, batch, torch.float32, layout, device)
                x.requires_grad_(True)
                weight.requires_grad_(True)
                run = forward_backward(ops[name], x, weight, grad)
                ms[name, layout] = median_time(lambda: [run() for _ in range(10)], device, repeats) * 100
            original = ms['original', 'contiguous']
            row = [str(stage), str(batch), f"{ms['ours', 'contiguous']:.3f}", f"{ms['ours', 'channels_last']:.3f}",
                   f'{original:.3f}', f"{ms['ours', 'contiguous'] / original:.2f}",
                   f"{ms['ours', 'channels_last'] / original:.2f}"]
            print('| ' + ' | '.join(row) + ' |', flush=True)


def tiling_candidates(dtype: torch.dtype):
    """Every (channels, columns) a thread can take: forward and input-gradient threads take both, weight-gradient
    threads the same columns (and, in channels_last, sum the same channels per step)."""
    most_channels = 4 if dtype == torch.float64 else 16
    return [(c, p) for c in (1, 2, 4, 8, 16) if c <= most_channels for p in (1, 2, 4, 8) if c * p <= 64]


def sweep_stage(x, weight, grad, layout: str, timer):
    """Milliseconds of every tiling on one stage's tensors: {(channels, pixels): forward + input gradient} and
    {(channels, pixels): weight gradient}; one compiled variant per pair."""
    from dataclasses import replace

    from involution_mm.ops.cuda_source import choose_spec
    geo = check_inputs(x, weight, 1, KERNEL // 2, 1)
    base = choose_spec(x.dtype, geo, 0, layout)
    forward, wgrad = {}, {}
    for channels, pixels in tiling_candidates(x.dtype):
        spec = replace(base, channels_per_thread=channels, pixels_per_thread=pixels, wgrad_pixels_per_thread=pixels)
        calls = kernel_calls(x, weight, grad, spec)
        forward[channels, pixels] = timer(calls['forward']) + timer(calls['grad_input'])
        wgrad[channels, pixels] = timer(calls['grad_weight'])
    return forward, wgrad


def best_tiling(forward_runs, wgrad_runs, layout: str):
    """The Tiling with the least time summed over runs (one per batch), each time relative to that run's best:
    channels and columns by forward + input gradient, then weight-gradient columns, among the runs at those
    channels in channels_last (where its threads step through a group by them), among all otherwise."""
    from involution_mm.ops.cuda_tiling import Tiling

    def least(runs, keys):
        return min(keys, key=lambda k: sum(run[k] / min(run.values()) for run in runs))

    channels, pixels = least(forward_runs, forward_runs[0])
    wgrad_keys = [k for k in wgrad_runs[0] if k[0] == channels or layout != 'channels_last']
    return Tiling(channels, pixels, least(wgrad_runs, wgrad_keys)[1])


def tiling_tables(device, batches, dtypes, stages, repeats) -> int:
    """``--tiling``: the best tiling per (dtype, layout, stage class), printed as a MEASURED_TILINGS entry."""
    from involution_mm.ops.cuda_tiling import stage_class, table_source
    name = torch.cuda.get_device_name(device)
    print(f'# CuPy kernel tilings at the RedNet-50 stage shapes, batches {batches}; {name}; device time')
    table = {}
    for dtype in dtypes:
        for layout in KERNEL_LAYOUTS:
            for stage in stages:
                runs = []
                for batch in batches:
                    runs.append(sweep_stage(*stage_tensors(stage, batch, dtype, layout, device), layout,
                                            lambda fn: graph_ms(fn, calls=5, repeats=3)))
                best = best_tiling([f for f, _ in runs], [w for _, w in runs], layout)
                size = next(s for st, _, s in STAGES if st == stage)
                table[str(dtype)[6:], layout, stage_class(size)] = best
                times = ' / '.join(f'{f[best[:2]]:.3f} + {min(t for k, t in w.items() if k[1] == best[2]):.3f}'
                                   for f, w in runs)
                print(f'# {str(dtype)[6:]} {layout} stage {stage}: {best}, fwd+grad_input + grad_weight ms by '
                      f'batch: {times}', flush=True)
    print('\n# paste into MEASURED_TILINGS in involution_mm/ops/cuda_tiling.py:')
    print(table_source(name, table))
    return 0



def _usable(backend: str, device: torch.device) -> bool:
    try:
        select_backend(torch.empty(1, 1, 1, 1, device=device), backend)
    except RuntimeError:
        return False
    return True


def layer_main(argv) -> int:
    """``--layer``: the Involution layer fused against unfused at every RedNet-50 involution shape (its options:
    ``python benchmarks/layer.py --help``)."""
    from layer import main as layer_benchmark
    return layer_benchmark([arg for arg in argv if arg != '--layer'])


if __name__ == '__main__':
    sys.exit(layer_main(sys.argv[1:]) if '--layer' in sys.argv[1:] else main())
