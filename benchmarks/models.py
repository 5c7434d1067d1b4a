#!/usr/bin/env python
"""A model against mmpretrain's ResNet-50 on one GPU: inference and training throughput and training memory.

    python benchmarks/models.py                                   # RedNet-50, batch 64 and 256, fp32, fp16
    python benchmarks/models.py --model simam-resnet50 --layout contiguous channels_last \\
        --mode eager compiled
    python benchmarks/models.py --batch 64 --dtype float16 --channels-last --profile
    python benchmarks/models.py --device cpu --batch 2 --iterations 1 --warmup 0 --dtype float32  # smoke

Both classifiers are built from their configs through mmpretrain's registry (backbone, global pooling,
linear head: what a user trains), in one process, on the same random 224x224 inputs. Inference runs in eval
mode under ``torch.no_grad``; a training step is forward, cross-entropy on random labels, backward and an SGD
step with momentum, in train mode. ``float16`` runs under ``torch.autocast``. ``channels_last`` puts both
models and the inputs in that layout. ``compiled`` wraps each model in ``torch.compile`` (Inductor, default
mode; the batch dimension is marked dynamic, so each model compiles once per layout, precision and phase; the
compilation happens in the warm-up and is not timed); ``reduce-overhead`` is torch.compile's CUDA-graph mode,
which replays each step as one graph (what matters at batch 1). Every (mode, layout, batch, precision) row of the model
is followed by its ratios against ResNet-50 measured in the same run, and the run ends with the worst ratios.
``--profile`` prints the CUDA kernels that take the model's training step time.
"""
import argparse
import importlib.util
import math
import os.path as osp
import sys
import time
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from timing import machine_description, synchronize

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# --model name -> (label, config); a path to a config file is accepted too
MODELS = {
    'rednet50': ('RedNet-50', osp.join(REPO, 'configs', 'rednet', 'rednet50_64xb32-warmup-coslr-130e_in1k.py')),
    'simam-resnet50': ('SimAM-ResNet-50', osp.join(REPO, 'configs', 'simam', 'simam-resnet50_8xb32_in1k.py')),
}
BASELINE = 'ResNet-50'
RESNET_CONFIG = osp.join('.mim', 'configs', 'resnet', 'resnet50_8xb32_in1k.py')  # inside mmpretrain
LAYOUTS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}

Result = Tuple[float, float, float]  # inference img/s, training img/s, training peak GiB (nan off CUDA)


def build(config: str, device: torch.device, layout: str, simam_backend: str) -> torch.nn.Module:
    from involution_mm.layers import SimAM
    from involution_mm.upstream import build_model_from_config
    model = build_model_from_config(config)[0].to(device, memory_format=LAYOUTS[layout])
    for module in model.modules():
        if isinstance(module, SimAM):
            module.backend = simam_backend
    return model


def images_per_second(step: Callable[[], None], batch: int, iterations: int, warmup: int,
                      device: torch.device) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize(device)
    return batch * iterations / (time.perf_counter() - start)


def make_steps(model, inputs, labels, precision):
    """The inference and training steps of ``model`` (plain or compiled) on one batch."""
    autocast = dict(device_type=inputs.device.type, dtype=torch.float16, enabled=precision == 'float16')
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def infer():
        model.eval()
        with torch.no_grad(), torch.autocast(**autocast):
            model(inputs, mode='tensor')

    def train():
        model.train()
        with torch.autocast(**autocast):
            loss = F.cross_entropy(model(inputs, mode='tensor').float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return infer, train


def measure(model, inputs, labels, precision: str, iterations: int, warmup: int) -> Result:
    """Inference and training images/s, and the training step's peak memory in GiB."""
    infer, train = make_steps(model, inputs, labels, precision)
    device = inputs.device
    inference = images_per_second(infer, len(inputs), iterations, warmup, device)
    if device.type != 'cuda':
        return inference, images_per_second(train, len(inputs), iterations, warmup, device), float('nan')
    torch.cuda.reset_peak_memory_stats(device)
    training = images_per_second(train, len(inputs), iterations, warmup, device)
    return inference, training, torch.cuda.max_memory_allocated(device) / 2**30


def run_block(mode: str, layout: str, configs: Dict[str, str], device: torch.device, args) -> Dict:
    """Every model at every batch and precision in one mode and layout: ``{(batch, precision, label): Result}``."""
    results = {}
    for label, config in configs.items():
        model = runner = build(config, device, layout, args.simam_backend)
        warmup = args.warmup
        if mode != 'eager':
            torch._dynamo.reset()  # every model starts with its own compilation cache
            counters.clear()
            options = dict(mode='reduce-overhead') if mode == 'reduce-overhead' else {}
            runner = torch.compile(model, backend=args.compile_backend, **options)
            warmup += 2 if mode == 'reduce-overhead' else 1  # compilation; then CUDA-graph recording
        for batch in args.batch:
            inputs = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=LAYOUTS[layout])
            if mode != 'eager':
                torch._dynamo.maybe_mark_dynamic(inputs, 0)  # one compilation for every batch size
            labels = torch.randint(0, 1000, (batch, ), device=device)
            for precision in args.dtype:
                result = measure(runner, inputs, labels, precision, args.iterations, warmup)
                results[batch, precision, label] = result
                print(f'| {mode} | {layout} | {batch} | {precision} | {label} | {result[0]:.0f} | {result[1]:.0f} | '
                      f'{gib(result[2])} |', flush=True)
                if args.profile and label != BASELINE and device.type == 'cuda':
                    profile_step(make_steps(runner, inputs, labels, precision)[1])
        if mode != 'eager':
            breaks = sum(counters['graph_break'].values())
            print(f'# {label}, {layout}: {counters["stats"]["unique_graphs"]} graphs, {breaks} graph breaks',
                  flush=True)
        del model, runner
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return results


def ratio_rows(mode: str, layout: str, label: str, results: Dict, args) -> list:
    """``label / ResNet-50`` for each batch and precision: inference, training and memory ratios."""
    rows = []
    for batch in args.batch:
        for precision in args.dtype:
            ours, base = results[batch, precision, label], results[batch, precision, BASELINE]
            ratios = tuple(a / b for a, b in zip(ours, base))
            rows.append(ratios)
            print(f'| {mode} | {layout} | {batch} | {precision} | **{label} / {BASELINE}** | {ratios[0]:.2f}x | '
                  f'{ratios[1]:.2f}x | {gib(ratios[2], "x")} |', flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='rednet50',
                        help=f'the model to compare with ResNet-50: {" or ".join(MODELS)}, or a config path')
    parser.add_argument('--batch', type=int, nargs='+', default=[64, 256])
    parser.add_argument('--dtype', nargs='+', default=['float32', 'float16'], choices=['float32', 'float16'])
    parser.add_argument('--layout', nargs='+', default=['contiguous'], choices=list(LAYOUTS))
    parser.add_argument('--channels-last', action='store_true', help='same as --layout channels_last')
    parser.add_argument('--mode', nargs='+', default=['eager'], choices=['eager', 'compiled', 'reduce-overhead'],
                        help="torch.compile's default mode (compiled) or its CUDA-graph mode (reduce-overhead)")
    parser.add_argument('--iterations', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--compile-backend', default='inductor', help='the torch.compile backend of --mode compiled')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help='cpu: a smoke test only')
    parser.add_argument('--simam-backend', default='auto', choices=['auto', 'triton', 'pytorch'],
                        help="the backend of the models' SimAM layers (if any)")
    parser.add_argument('--profile', action='store_true', help="print the top CUDA kernels of the model's step")
    args = parser.parse_args(argv)
    layouts = ['channels_last'] if args.channels_last else args.layout
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('error: this benchmark needs a CUDA GPU (--device cpu runs a smoke test)', file=sys.stderr)
        return 2
    if args.model not in MODELS and not osp.isfile(args.model):
        print(f'error: --model {args.model!r} is neither one of {list(MODELS)} nor a config file', file=sys.stderr)
        return 2
    spec = importlib.util.find_spec('mmpretrain')
    if spec is None:
        print('error: mmpretrain is not installed (pip install -e ".[cls]")', file=sys.stderr)
        return 2
    import involution_mm  # noqa: F401  registers RedNet and the SimAM backbones
    label, config = MODELS.get(args.model, (osp.splitext(osp.basename(args.model))[0], args.model))
    configs = {BASELINE: osp.join(spec.submodule_search_locations[0], RESNET_CONFIG), label: config}
    device = torch.device(args.device)
    smoke = '' if device.type == 'cuda' else ' (smoke test: not a benchmark)'
    print(f'# {machine_description(device)}{smoke}; torch {torch.__version__}; {label} against {BASELINE}; '
          f'{backends(device)}; {args.iterations} timed iterations after {args.warmup}')
    print('| mode | layout | batch | precision | model | inference img/s | training img/s | training peak GiB |')
    print('|---|---|---|---|---|---|---|---|')
    worst = []
    for mode in args.mode:
        for layout in layouts:
            worst += ratio_rows(mode, layout, label, run_block(mode, layout, configs, device, args), args)
    print(f'# worst {label} / {BASELINE} over all rows: inference {min(r[0] for r in worst):.2f}x, training '
          f'{min(r[1] for r in worst):.2f}x, training peak memory {gib(max(r[2] for r in worst), "x")}')
    return 0


def gib(value: float, unit: str = '') -> str:
    """A memory figure or ratio, ``n/a`` where none was measured (off CUDA)."""
    return 'n/a' if math.isnan(value) else f'{value:.2f}{unit}'


def backends(device: torch.device) -> str:
    """The involution backend and the SimAM path that ``auto`` takes on ``device``."""
    from involution_mm.ops import select_backend
    from involution_mm.ops.simam import triton_status
    probe = torch.empty(1, 1, 1, 1, device=device)
    fused, why = triton_status(device) if device.type == 'cuda' else (False, 'not on CUDA')
    simam_path = 'fused Triton kernels' if fused else f'PyTorch formula ({why})'
    return f'involution backend {select_backend(probe)!r}; SimAM auto: {simam_path}'


def profile_step(step, rows: int = 12) -> None:
    """The CUDA kernels that take most of a few steps' time."""
    from torch.profiler import ProfilerActivity, profile
    step()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by='cuda_time_total', row_limit=rows))


if __name__ == '__main__':
    sys.exit(main())
