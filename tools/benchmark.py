#!/usr/bin/env python
"""Benchmark the involution op against the naive unfold formulation at the RedNet-50 stage shapes.

    python tools/benchmark.py                       # CPU, batch 8, float32
    python tools/benchmark.py --device cuda --batch 64 --dtype float16
    python tools/benchmark.py --device cuda --batch 64 --dtype float16 --tiling   # + CuPy tiling sweep
    python tools/benchmark.py --layer --device cuda --batch 64 256 --dtype float16  # the fused layer, per stage
    python tools/benchmark.py --latency --device cuda --dtype float16   # batch 1: per-call host time, latency

For each stage's involution (224x224 input, K=7, 16 channels per group) it times forward+backward and
measures the peak memory allocated beyond the inputs, for ``unfold`` (unfold every 7x7 neighbourhood,
multiply, sum: what the original implementation fell back to) and for each of our backends, and prints
the ratios ours/unfold (lower is better). Ratios come from one run, side by side.

On CUDA (or with ``--bandwidth``) a second table gives each backend's forward time and its share of the bandwidth bound: the bytes a
pass must move (forward reads x and the weight and writes the output, 2|x| + |w|; each of the two gradients
moves as much again) divided by the bandwidth of a large tensor copy measured in the same run. ``--tiling``
adds the CuPy kernels' times for every channels-per-thread choice, to tune ``choose_spec``.

``--latency`` measures what matters at batch 1: for each stage's involution, the host time of one call (many
calls queued without synchronising, divided by their number: Python, dispatch and launch, while the device
runs behind) and the latency of one call (synchronised), for inference (no_grad) and for a training forward
(inputs that require grad), next to ``F.conv2d`` with a 7x7 depthwise kernel on the same input (the same
window over the same map, one cuDNN launch).
"""
import argparse
import platform
import sys
import time

import torch
import torch.nn.functional as F

from involution_mm.ops import available_backends, involution, select_backend
from involution_mm.ops.geometry import check_inputs
from involution_mm.profiling import median_time, peak_memory_bytes

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


def machine_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                  if line.startswith('model name')), platform.processor() or 'unknown CPU')
    return f'{model}, {torch.get_num_threads()} threads'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16', 'float64'])
    parser.add_argument('--stages', type=int, nargs='+', default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--inner', type=int, default=None,
                        help='calls per timed sample (default 1 on CPU, 20 on CUDA, so launches queue up)')
    parser.add_argument('--bandwidth', action='store_true',
                        help='print the bandwidth-bound table on CPU too (always printed on CUDA)')
    parser.add_argument('--tiling', action='store_true', help='also time every CuPy tiling (CUDA only)')
    parser.add_argument('--latency', action='store_true',
                        help='batch 1: per-call host time and latency of the op against F.conv2d')
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: --device cuda, but torch sees no CUDA device', file=sys.stderr)
        return 2

    if args.latency:
        return latency(device, dtype, args.stages, args.repeats)
    print(f'# involution forward+backward, RedNet-50 stage shapes, batch {args.batch}, {args.dtype}, '
          f'K={KERNEL}')
    print(f'# {machine_description(device)}; torch {torch.__version__}')
    inner = args.inner or (20 if device.type == 'cuda' else 1)

    def timed(fn):
        return median_time(lambda: [fn() for _ in range(inner)], device, args.repeats) / inner

    backends = [name for name in available_backends() if _usable(name, device)]
    bandwidth_rows, tiling_lines = [], []
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
            if args.tiling and 'cupy' in backends:
                tiling_lines += _tiling_lines(stage, x, weight, grad, timed)
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
    print('\n'.join([''] + tiling_lines) if tiling_lines else '', end='')
    return 0


def host_microseconds(fn, device: torch.device, calls: int = 200) -> float:
    """Host time of one call: ``calls`` calls queued without synchronising, divided by their number."""
    fn()
    best = float('inf')
    for _ in range(3):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


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


def copy_bandwidth(device: torch.device, timed) -> float:
    """Bytes per second a large tensor copy moves, counting both the read and the write."""
    source = torch.empty(2**29, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return 2 * source.numel() / timed(lambda: target.copy_(source))


def _bandwidth_row(stage, x, weight, ops, results, timed):
    """Bytes one forward must move, and each op's forward and forward+backward milliseconds."""
    moved = (2 * x.numel() + weight.numel()) * x.element_size()
    with torch.no_grad():
        forward_ms = {name: timed(lambda op=op: op(x, weight)) * 1e3 for name, op in ops.items()}
    return stage, moved, forward_ms, {name: ms for name, (ms, _) in results.items()}


def _tiling_lines(stage, x, weight, grad, timed):
    """Milliseconds of each CuPy kernel for every channels-per-thread choice; * marks the automatic one."""
    from dataclasses import replace

    from involution_mm.ops import cupy_backend
    from involution_mm.ops.cuda_source import choose_spec
    geo = check_inputs(x, weight, 1, KERNEL // 2, 1)
    chosen = choose_spec(x.dtype, geo, cupy_backend.resident_threads(x.device.index))
    lines = [f'# stage {stage}, CuPy kernels by channels per thread: forward / input-grad / weight-grad ms']
    for channels in (1, 2, 4, 8, 16):
        spec = replace(chosen, channels_per_thread=channels)
        forward = timed(lambda: cupy_backend.cupy_forward(x, weight, geo, spec))
        grad_x = timed(lambda: cupy_backend.cupy_grad_input(grad, weight, geo, spec))
        grad_w = timed(lambda: cupy_backend.cupy_grad_weight(grad, x, geo, spec))
        mark = '*' if spec == chosen else ' '
        lines.append(f'# {mark}{channels:2d}: {forward * 1e3:.3f} / {grad_x * 1e3:.3f} / {grad_w * 1e3:.3f}')
    return lines


def _usable(backend: str, device: torch.device) -> bool:
    try:
        select_backend(torch.empty(1, 1, 1, 1, device=device), backend)
    except RuntimeError:
        return False
    return True


def layer_main(argv) -> int:
    """``--layer``: the Involution layer fused against unfused at every RedNet-50 involution shape (its options:
    ``python tools/benchmark_layer.py --help``)."""
    from benchmark_layer import main as layer_benchmark
    return layer_benchmark([arg for arg in argv if arg != '--layer'])


if __name__ == '__main__':
    sys.exit(layer_main(sys.argv[1:]) if '--layer' in sys.argv[1:] else main())
