#!/usr/bin/env python
"""The Involution layer fused against unfused at every involution shape of RedNet-50: time and memory.

    python benchmarks/op.py --layer --device cuda --batch 64 256 --dtype float16
    python benchmarks/op.py --layer --device cuda --batch 64 --dtype float16 --channels-last --sweep

For each layer shape (the 3x3 stem involution, each stage's stride-1 layers and the stride-2 transitions into
stages 2-4; 224x224 images) it builds one Involution layer, copies it with the fused path on (same
parameters), and times, side by side:

- forward: inference (eval mode, no autograd);
- forward+backward: a training step of the layer (train mode: BN uses batch statistics), gradients of the
  input and all parameters;
- peak memory of that step beyond its inputs, and the memory autograd keeps between forward and backward.

``float16``/``bfloat16`` run under ``torch.autocast`` with float32 parameters, as training with AMP does.
Times are medians of calls queued ``--inner`` at a time (so host and GPU overlap as in a model); ``GPU ms``
is the sum of the kernels' own times from the profiler, which shows when a layer is bound by host overhead.
The fused forward's share of the bandwidth bound counts the bytes it must move (``x`` and ``r`` read, the
output written) at the bandwidth of a large tensor copy measured in the same run. The last lines check the
issue's targets: fused/unfused at most 0.5 (forward) and 0.7 (forward+backward) at every stage, float16.

``--sweep`` then times each fused kernel alone with every candidate tile configuration
(``involution_tiles.candidate_configs``), and, for contiguous inputs, with and without the channels_last
staging copy: what a GPU session needs to re-tune ``default_config``.
"""
import argparse
import copy
import os
import sys
from typing import Callable, Dict, List, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from involution_mm.layers import Involution  # noqa: E402
from involution_mm.profiling import median_time, peak_memory_bytes  # noqa: E402
from timing import copy_bandwidth, machine_description  # noqa: E402

# (label, channels, input size, stride, kernel) of RedNet-50's involution layers at 224x224
LAYERS = [('stem', 32, 112, 1, 3), ('1', 64, 56, 1, 7), ('2 s2', 128, 56, 2, 7), ('2', 128, 28, 1, 7),
          ('3 s2', 256, 28, 2, 7), ('3', 256, 14, 1, 7), ('4 s2', 512, 14, 2, 7), ('4', 512, 7, 1, 7)]
TARGETS = {'forward': 0.5, 'forward+backward': 0.7}  # fused / unfused time at most, float16 (issue 14)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--batch', type=int, nargs='+', default=[64, 256])
    parser.add_argument('--dtype', default='float16', choices=['float16', 'bfloat16', 'float32'])
    parser.add_argument('--channels-last', action='store_true', help='inputs and layers in channels_last')
    parser.add_argument('--layers', nargs='+', default=[label for label, *_ in LAYERS],
                        help='labels of the layers to run (default: all): ' + ', '.join(l for l, *_ in LAYERS))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--inner', type=int, default=None, help='calls per timed sample (default 20 on CUDA)')
    parser.add_argument('--sweep', action='store_true', help='time every tile configuration of each kernel')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: --device cuda, but torch sees no CUDA device', file=sys.stderr)
        return 2
    if device.type == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1':
        print('error: on the CPU the fused layer runs only in Triton\'s interpreter: set TRITON_INTERPRET=1 (to '
              'test this script; times mean nothing there)', file=sys.stderr)
        return 2
    inner = args.inner or (20 if device.type == 'cuda' else 1)

    def timed(fn: Callable[[], object]) -> float:
        return median_time(lambda: [fn() for _ in range(inner)], device, args.repeats) / inner * 1e3

    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    bandwidth = copy_bandwidth(device, lambda fn: timed(fn) / 1e3) if device.type == 'cuda' else None
    print(f'# Involution layer, fused / unfused, RedNet-50 shapes, {args.dtype}, '
          f'{"channels_last" if args.channels_last else "contiguous"}; {machine_description(device)}; '
          f'torch {torch.__version__}' + (f'; copy bandwidth {bandwidth / 1e9:.0f} GB/s' if bandwidth else ''))
    header = ['layer', '(B, C, H, W) s K', 'fwd ms', 'fused', 'ratio', 'fused % bound', 'fwd+bwd ms', 'fused',
              'ratio', 'GPU ms fwd+bwd', 'fused', 'peak MiB', 'fused', 'ratio', 'kept MiB', 'fused']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    ratios: Dict[str, List[Tuple[float, str]]] = {name: [] for name in TARGETS}
    for batch in args.batch:
        for label, channels, size, stride, kernel in LAYERS:
            if label not in args.layers:
                continue
            row, found = measure_layer(batch, channels, size, stride, kernel, args.dtype, layout, device, timed,
                                       bandwidth)
            print(f'| {label} | ({batch}, {channels}, {size}, {size}) s{stride} K{kernel} | ' + ' | '.join(row) + ' |',
                  flush=True)
            for name, ratio in found.items():
                ratios[name].append((ratio, f'{label} at batch {batch}'))
    for name, limit in TARGETS.items():
        worst, where = max(ratios[name])
        verdict = 'met' if worst <= limit else 'NOT met'
        print(f'# target {name} fused/unfused <= {limit} at every stage ({args.dtype}): {verdict}; worst '
              f'{worst:.2f} ({where})')
    if args.sweep:
        for label, channels, size, stride, kernel in LAYERS:
            if label in args.layers:
                sweep(label, args.batch[0], channels, size, stride, kernel, args.dtype, layout, device, timed)
    return 0


def build_pair(channels: int, stride: int, kernel: int, device: torch.device, layout) -> Tuple[Involution,
                                                                                               Involution]:
    """An unfused Involution layer and a fused copy of it (same parameters and buffers)."""
    torch.manual_seed(0)
    unfused = Involution(channels, kernel, stride, fused=False).to(device).to(memory_format=layout)
    fused = copy.deepcopy(unfused)
    fused.fused = True
    return unfused, fused


def measure_layer(batch, channels, size, stride, kernel, dtype_name, layout, device, timed, bandwidth):
    """One table row (the cells after the shape) and the forward and forward+backward ratios."""
    dtype = getattr(torch, dtype_name)
    autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype).contiguous(memory_format=layout)
    x.requires_grad_()
    out_size = -(-size // stride)
    grad = torch.randn(batch, channels, out_size, out_size, device=device, dtype=dtype)
    results = {}
    for name, layer in zip(('unfused', 'fused'), build_pair(channels, stride, kernel, device, layout)):

        def forward(layer=layer):
            layer.eval()
            with torch.no_grad(), torch.autocast(**autocast):
                layer(x)

        def step(layer=layer):
            layer.train()
            with torch.autocast(**autocast):
                out = layer(x)
            out.backward(grad)
            x.grad = None
            for p in layer.parameters():
                p.grad = None

        def kept(layer=layer) -> int:
            """Bytes autograd keeps from the forward to the backward pass (the output excluded)."""
            layer.train()
            before = _allocated(device)
            with torch.autocast(**autocast):
                out = layer(x)
            held = _allocated(device) - before - out.numel() * out.element_size()
            del out
            return held

        forward(), step()  # compile and warm up
        results[name] = dict(fwd=timed(forward), step=timed(step), gpu=_kernel_ms(step, device),
                             peak=peak_memory_bytes(step, device) / 2**20, kept=kept() / 2**20)
    u, f = results['unfused'], results['fused']
    moved = (x.numel() + grad.numel() + batch * channels // 4 * out_size**2) * x.element_size()
    bound = f"{100 * moved / bandwidth * 1e3 / f['fwd']:.0f}%" if bandwidth else '-'
    row = [f"{u['fwd']:.3f}", f"{f['fwd']:.3f}", f"{f['fwd'] / u['fwd']:.2f}", bound,
           f"{u['step']:.3f}", f"{f['step']:.3f}", f"{f['step'] / u['step']:.2f}", _fmt(u['gpu']), _fmt(f['gpu']),
           f"{u['peak']:.0f}", f"{f['peak']:.0f}", f"{f['peak'] / max(u['peak'], 1e-9):.2f}", f"{u['kept']:.0f}",
           f"{f['kept']:.0f}"]
    return row, {'forward': f['fwd'] / u['fwd'], 'forward+backward': f['step'] / u['step']}


def sweep(label, batch, channels, size, stride, kernel, dtype_name, layout, device, timed) -> None:
    """Milliseconds of each fused kernel with every candidate tile configuration (* the default), and with
    and without staging contiguous inputs to channels_last."""
    from involution_mm.ops.triton import involution_fused as launcher
    from involution_mm.ops.triton.involution_tiles import candidate_configs
    dtype = getattr(torch, dtype_name)
    groups, reduced, out_size = channels // 16, channels // 4, -(-size // stride)
    geometry = (kernel, stride, (kernel - 1) // 2, 1)
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype).contiguous(memory_format=layout)
    r = torch.rand(batch, reduced, out_size, out_size, device=device, dtype=dtype).contiguous(memory_format=layout)
    grad = torch.randn(batch, channels, out_size, out_size, device=device, dtype=dtype)
    grad = grad.contiguous(memory_format=layout)
    weight = torch.randn(groups * kernel**2, reduced, device=device, dtype=dtype) / reduced**0.5
    bias = torch.zeros(groups * kernel**2, device=device, dtype=dtype)
    kernels = {
        'forward': lambda config, stage: launcher.fused_forward(x, r, weight, bias, *geometry, config, stage),
        'grad_input': lambda config, stage: launcher.fused_grad_input(grad, x, r, weight, bias, *geometry, config,
                                                                      stage),
        'grad_kernels': lambda config, stage: launcher.fused_grad_kernels(grad, x, r, weight, *geometry, config,
                                                                          stage),
    }
    configs = candidate_configs(groups, 16, (out_size, out_size))
    print(f'\n# sweep, layer {label}, batch {batch}: ms of each kernel by tiles (block_h x block_w x groups / '
          f'warps / stages); * the default')
    stagings = (True, False) if layout == torch.contiguous_format else (True, )
    for name, run in kernels.items():
        for stage in stagings:
            times = []
            for config in configs:
                try:
                    run(config, stage)
                    times.append((timed(lambda: run(config, stage)), config))
                except Exception as error:  # a configuration that does not compile (shared memory, ...)
                    print(f'#   {name} {config}: {type(error).__name__}: {str(error).splitlines()[0][:100]}')
            cells = ', '.join(f"{'*' if config == configs[0] else ''}{config} {ms:.3f}" for ms, config in times)
            best = min(times)
            print(f'# {name}{"" if stage else " (no staging)"}: {cells}; best {best[1]} {best[0]:.3f} ms, '
                  f'{best[0] / times[0][0]:.2f}x the default')


def _allocated(device: torch.device) -> int:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)
    return 0


def _kernel_ms(fn: Callable[[], object], device: torch.device, calls: int = 3) -> float:
    """Milliseconds the device spends in kernels for one call of ``fn`` (None off CUDA)."""
    if device.type != 'cuda':
        return None
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
    return sum(event.self_device_time_total for event in prof.key_averages()) / calls / 1e3


def _fmt(ms) -> str:
    return '-' if ms is None else f'{ms:.3f}'


if __name__ == '__main__':
    sys.exit(main())
