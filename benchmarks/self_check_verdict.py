#!/usr/bin/env python
"""What decides the GPU defaults: each default fast path's self-check result, and its time against the path it
replaces, in one short run.

    python benchmarks/self_check_verdict.py --device cuda            (benchmarks/cuda_checks.sh OUT verdict)

First table, per path and dtype: the self-check's verdict (``involution_mm/ops/self_check.py``), its reason
and how long the check took on this device (cold: it includes the kernels' compiles). Second table, per path,
dtype and shape, a training step (forward and backward, median ms) of the fast path and of the path it
replaces:

- fused involution: ``Involution(fused=True)`` against ``fused=False`` (span conv + the involution op, CuPy
  kernels where CuPy is installed) at RedNet-50's involution layers (``layer.py``), AMP for the half types;
- SimAM: the Triton kernels against the upstream-style formula (``simam_formula`` under autograd) at
  SimAM-ResNet-50's SimAM layers (after each bottleneck's 3x3 conv);
- CuPy op: ``involution(backend='cupy')`` against ``backend='pytorch'`` at RedNet-50's 7x7 aggregations.

A path whose check failed is not timed ("-"). On the CPU (under ``TRITON_INTERPRET=1``, to test this script)
the times mean nothing.
"""
import argparse
import importlib
import os
import sys
from typing import Callable, List, Optional, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from involution_mm.ops import cupy_backend, involution  # noqa: E402
from involution_mm.ops.self_check import device_key, precision_mode  # noqa: E402
from involution_mm.profiling import median_time  # noqa: E402
from layer import LAYERS, build_pair  # noqa: E402
from timing import machine_description  # noqa: E402

fused_module = importlib.import_module('involution_mm.ops.fused_involution')  # the modules (ops exports the
simam_module = importlib.import_module('involution_mm.ops.simam')  # functions of the same names)
DTYPES = ('float16', 'bfloat16', 'float32')
# (channels, size) of SimAM-ResNet-50's SimAM layers (the 3x3 conv's output of each stage's bottlenecks)
SIMAM_LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]
# (channels, size) of RedNet-50's 7x7 stride-1 aggregations, 16 channels a group
OP_STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--dtype', nargs='+', default=list(DTYPES), choices=DTYPES)
    parser.add_argument('--repeats', type=int, default=5)
    return parser.parse_args(argv)


def verdicts(device: torch.device, dtypes: List[torch.dtype]) -> List[Tuple[str, torch.dtype, bool]]:
    """Run every path's self-check for each dtype; print a table; return (path, dtype, runs)."""
    print('| path | dtype (mode) | runs | why | check s |')
    print('|---|---|---|---|---|')
    found = []
    for dtype in dtypes:
        for label, path, mode in (('fused involution', fused_module.FUSED, fused_module.precision(dtype)),
                                  ('SimAM', simam_module.SIMAM, precision_mode(dtype)),
                                  ('CuPy op', cupy_backend.CUPY, precision_mode(dtype))):
            verdict = path.verdict(device, dtype, mode)
            seconds = path.seconds.get((device_key(device), dtype, mode))
            print(f'| {label} | {mode} | {"yes" if verdict.runs else "no"} | {verdict.why} | '
                  f'{"-" if seconds is None else f"{seconds:.2f}"} |', flush=True)
            found.append((label, dtype, verdict.runs))
    return found


def step_ms(step: Callable[[], object], device: torch.device, repeats: int) -> float:
    step()  # compile, plan and check outside the timing
    return median_time(step, device, repeats) * 1e3


def involution_layer_steps(batch, channels, size, stride, kernel, dtype, device):
    """Training steps of the unfused layer and of its fused copy."""
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step(layer):
        def run():
            with torch.autocast(**autocast):
                out = layer(x)
            out.float().square().mean().backward()
        return run

    unfused, fused = build_pair(channels, stride, kernel, device, torch.contiguous_format)
    return step(fused), step(unfused)


def simam_steps(batch, channels, size, dtype, device):
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype, requires_grad=True)

    def fast():
        simam_module.simam(x, 0.1, backend='triton').float().square().mean().backward()

    def formula():
        simam_module.simam_formula(x, 0.1).float().square().mean().backward()

    return fast, formula


def op_steps(batch, channels, size, dtype, device):
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype, requires_grad=True)
    weight = torch.randn(batch, channels // 16, 7, 7, size, size, device=device, dtype=dtype, requires_grad=True)

    def step(backend):
        def run():
            involution(x, weight, 1, 3, backend=backend).float().square().mean().backward()
        return run

    return step('cupy'), step('pytorch')


def timings(device, batch, dtypes, runs, repeats) -> None:
    print('| path | dtype | shape (B, C, H, W) | fast ms | replaced ms | fast / replaced |')
    print('|---|---|---|---|---|---|')
    for dtype in dtypes:
        name = str(dtype).replace('torch.', '')
        rows = [('fused involution', f'{label} s{stride} K{kernel}', (batch, channels, size, size),
                 lambda c=channels, s=size, st=stride, k=kernel: involution_layer_steps(batch, c, s, st, k, dtype,
                                                                                          device))
                for label, channels, size, stride, kernel in LAYERS]
        rows += [('SimAM', '', (batch, channels, size, size),
                  lambda c=channels, s=size: simam_steps(batch, c, s, dtype, device))
                 for channels, size in SIMAM_LAYERS]
        rows += [('CuPy op', 'K7', (batch, channels, size, size),
                  lambda c=channels, s=size: op_steps(batch, c, s, dtype, device)) for channels, size in OP_STAGES]
        for label, note, shape, make in rows:
            if not runs[label, dtype]:
                print(f'| {label} | {name} | {shape} {note} | - | - | - |')
                continue
            fast, replaced = make()
            fast_ms, replaced_ms = step_ms(fast, device, repeats), step_ms(replaced, device, repeats)
            print(f'| {label} | {name} | {shape} {note} | {fast_ms:.3f} | {replaced_ms:.3f} | '
                  f'{fast_ms / replaced_ms:.2f} |', flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: --device cuda, but torch sees no CUDA device', file=sys.stderr)
        return 2
    dtypes = [getattr(torch, name) for name in args.dtype]
    print(f'# Self-check verdicts and the default paths against those they replace; {machine_description(device)}; '
          f'torch {torch.__version__}; batch {args.batch}')
    runs = {(label, dtype): ok for label, dtype, ok in verdicts(device, dtypes)}
    timings(device, args.batch, dtypes, runs, args.repeats)
    return 0


if __name__ == '__main__':
    sys.exit(main())
