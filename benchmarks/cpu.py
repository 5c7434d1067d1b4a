#!/usr/bin/env python
"""The CPU figures of issue 22 in one run: the involution op's kernels as shares of their bound, and RedNet /
SimAM-ResNet against ResNet-50 in images per second (eager in both layouts, training step, torch.compile,
ONNX Runtime), with 2 threads unless told otherwise.

    python benchmarks/cpu.py                                  # op, models and onnx parts, batch 1 and 8
    python benchmarks/cpu.py --part op --repeats 5            # the op's kernels only (about a minute)
    python benchmarks/cpu.py --part models --models rednet50 --modes eager --batch 1   # a quick ratio
    python benchmarks/cpu.py --part onnx --models rednet50
    python benchmarks/cpu.py --part openvino --models rednet50   # needs pip install openvino
    python benchmarks/cpu.py --part demo                      # the wall time of tools/demo.sh

``op``: the forward, input gradient and weight gradient at every RedNet-50 stage (C, H) = (64, 56), (128,
28), (256, 14), (512, 7), K=7, 16 channels per group, stride 1, for each backend (the compiled ``cpu`` and
the ``pytorch`` reference) and layout. Each kernel's bound is the larger of its multiply-adds (49 per output
element of the op) at the rate of a 2048x2048 float32 matmul and its bytes (each tensor it reads or writes,
once) at the copy bandwidth of a 256 MB tensor; both are measured in the same run, interleaved with the
kernels. Printed: median and best time, and the share of the bound at each. Then the fused layer's forward
(``fused_involution``: the span conv, R = C / 4 -> G * K * K channels, and the aggregation in one kernel)
and, for comparison, the unfused layer's (``F.conv2d``, then the op's forward), whose bound counts both
products' multiply-adds and the bytes of x, r and the output.

``models``: every model against ResNet-50 (mmpretrain's resnet50 config), built from its config as in
``models.py``, on random 224x224 images; each repeat times every model once in turn (interleaved), and a
row gives the median images per second and the median, lowest and highest of the per-repeat ratios.
``compile`` is Inductor in its default mode (compilation in the warm-up, not timed; graph breaks counted).

``onnx``: each model exported in standard operators (``involution_mm.export``, TorchScript exporter, no
preprocessing in the graph) and run by ONNX Runtime's CPU provider with as many intra-op threads.

``openvino``: the same exported files on OpenVINO's CPU device (``pip install openvino``; without it the
tool stops with one line and exit status 2), with as many inference threads and the latency hint.

``demo``: the wall time of ``tools/demo.sh`` (the main job: data, training, test) with these threads.
"""
import argparse
import importlib.util
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from timing import copy_bandwidth, machine_description

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]  # RedNet-50's involution (channels, map size) per stage
KERNEL_SIZE, GROUP_CHANNELS = 7, 16
MODELS = {
    'rednet26': ('RedNet-26', 'configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py'),
    'rednet50': ('RedNet-50', 'configs/rednet/rednet50_64xb32-warmup-coslr-130e_in1k.py'),
    'rednet101': ('RedNet-101', 'configs/rednet/rednet101_64xb32-warmup-coslr-130e_in1k.py'),
    'simam-resnet50': ('SimAM-ResNet-50', 'configs/simam/simam-resnet50_8xb32_in1k.py'),
}
BASELINE = 'ResNet-50'
MODES = ['eager', 'channels_last', 'train', 'compile']
LAYOUTS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def timed_calls(fn: Callable[[], object], min_seconds: float = 0.005) -> float:
    """Seconds per call of ``fn``, calling it often enough to take at least ``min_seconds``."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The shortest of ``repeats`` single timed calls (seconds)."""
    fn()
    return min(timed_calls(fn, 0.0) for _ in range(repeats))


def summary(times: Sequence[float]) -> Tuple[float, float]:
    return statistics.median(times), min(times)


# ------------------------------------------------------------------------------------------------- op part

def op_cases(batches: Sequence[int], backends: Sequence[str], layouts: Sequence[str]) -> List[dict]:
    """Every (stage, batch, layout, backend, kernel) to time, with its arguments, multiply-adds and bytes."""
    from involution_mm.ops.backends import _BACKENDS
    from involution_mm.ops.geometry import check_inputs
    fused_forwards = _fused_forwards()
    cases = []
    for channels, size in STAGES:
        for batch in batches:
            for layout in layouts:
                groups = channels // GROUP_CHANNELS
                x = torch.randn(batch, channels, size, size).contiguous(memory_format=LAYOUTS[layout])
                weight = torch.randn(batch, groups, KERNEL_SIZE, KERNEL_SIZE, size, size)
                grad = torch.randn_like(x)
                geo = check_inputs(x, weight, 1, KERNEL_SIZE // 2, 1)
                macs = KERNEL_SIZE**2 * x.numel()
                # the fused layer: r (C / 4 channels) and the span conv's (G * K * K, C / 4) weight and bias
                reduced = torch.rand(batch, channels // 4, size, size).contiguous(memory_format=LAYOUTS[layout])
                span_weight = torch.randn(groups * KERNEL_SIZE**2, channels // 4) / (channels // 4)**0.5
                span_bias = torch.randn(groups * KERNEL_SIZE**2) * 0.1
                fused_args = (x, reduced, span_weight, span_bias, KERNEL_SIZE, 1, KERNEL_SIZE // 2, 1)
                fused_macs = macs + span_weight.numel() * batch * size * size
                op_cost = (macs, 4 * (2 * x.numel() + weight.numel()))  # multiply-adds, bytes moved once
                fused_cost = (fused_macs, 4 * (2 * x.numel() + reduced.numel()))
                for backend in backends:
                    kernels = _BACKENDS[backend]
                    calls = {'forward': (kernels.forward, (x, weight, geo), op_cost),
                             'grad_input': (kernels.grad_input, (grad, weight, geo), op_cost),
                             'grad_weight': (kernels.grad_weight, (grad, x, geo), op_cost),
                             'fused forward': (fused_forwards[backend], fused_args, fused_cost),
                             'span conv + forward': (unfused_forward(kernels.forward, geo), fused_args, fused_cost)}
                    for kernel, (fn, args, (kernel_macs, moved)) in calls.items():
                        cases.append(dict(stage=(channels, size), batch=batch, layout=layout, backend=backend,
                                          kernel=kernel, fn=fn, args=args, macs=kernel_macs, bytes=moved))
    return cases


def unfused_forward(forward: Callable, geo) -> Callable:
    """The unfused layer's forward on the fused arguments: the span conv, then the op's ``forward``."""
    import torch.nn.functional as F

    def run(x, r, weight, bias, kernel_size, stride, padding, dilation):
        kernels = F.conv2d(r, weight.view(*weight.shape, 1, 1), bias)
        return forward(x, kernels.view(geo.batch, geo.groups, kernel_size, kernel_size, *geo.out_size), geo)

    return run


def _fused_forwards() -> Dict[str, Callable]:
    """The fused layer's forward for each op backend: its CPU kernel, and its PyTorch reference."""
    from involution_mm.ops.cpu_backend import cpu_fused_forward
    from involution_mm.ops.fused_reference import reference_forward
    return {'cpu': cpu_fused_forward, 'pytorch': reference_forward}


def matmul_rate() -> float:
    """Multiply-adds per second of a 2048x2048 float32 matmul."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2048**3 / best_of(lambda: torch.mm(a, b))


def run_op(args) -> None:
    from involution_mm.ops import available_backends, cpu_backend
    backends = [b for b in ('cpu', 'pytorch') if b in available_backends() and b in args.backends]
    if 'cpu' in backends and cpu_backend.kernels_module() is None:
        print(f'# the cpu backend is not built ({cpu_backend.LOAD_ERROR}); timing the pytorch backend only')
        backends.remove('cpu')
    elif 'cpu' in backends:
        print(f'# cpu backend: {cpu_backend.kernels_module().isa()} kernels')
    cases = op_cases(args.batch, backends, args.layouts)
    for case in cases:  # warm up (first-touch allocations, lazy initialisation)
        case['fn'](*case['args'])
    times = {id(case): [] for case in cases}
    rates, bandwidths = [], []
    for _ in range(args.repeats):  # interleaved: every case, and the two rates, once per repeat
        rates.append(matmul_rate())
        bandwidths.append(copy_bandwidth(torch.device('cpu'), best_of))
        for case in cases:
            fn, call_args = case['fn'], case['args']
            times[id(case)].append(timed_calls(lambda: fn(*call_args)))
    rate, bandwidth = statistics.median(rates), statistics.median(bandwidths)
    print(f'# matmul {rate / 1e9:.0f} GFMA/s (median; {min(rates) / 1e9:.0f}-{max(rates) / 1e9:.0f}), copy '
          f'{bandwidth / 1e9:.0f} GB/s (median; {min(bandwidths) / 1e9:.0f}-{max(bandwidths) / 1e9:.0f}); '
          f'{args.repeats} interleaved repeats')
    print('| stage (C, H) | batch | layout | kernel | backend | median ms | best ms | bound ms | share of bound '
          '(median / best) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for case in cases:
        median, best = summary(times[id(case)])
        bound = max(case['macs'] / rate, case['bytes'] / bandwidth)
        print(f"| {case['stage']} | {case['batch']} | {case['layout']} | {case['kernel']} | {case['backend']} | "
              f'{median * 1e3:.3f} | {best * 1e3:.3f} | {bound * 1e3:.3f} | {bound / median:.0%} / {bound / best:.0%} |',
              flush=True)


# --------------------------------------------------------------------------------------------- models part

def resnet50_config() -> str:
    import importlib.util
    spec = importlib.util.find_spec('mmpretrain')
    return osp.join(spec.submodule_search_locations[0], '.mim', 'configs', 'resnet', 'resnet50_8xb32_in1k.py')


def model_configs(names: Sequence[str]) -> Dict[str, str]:
    """``{label: config}``: ResNet-50 first, then the chosen models."""
    configs = {BASELINE: resnet50_config()}
    configs.update({MODELS[name][0]: osp.join(REPO, MODELS[name][1]) for name in names})
    return configs


def ratio_rows(mode: str, batch: int, results: Dict[str, List[float]]) -> None:
    """Images/s per model (median) and each model's per-repeat ratio against ResNet-50."""
    base = results[BASELINE]
    for label, speeds in results.items():
        text = f'| {mode} | {batch} | {label} | {statistics.median(speeds):.1f} |'
        if label != BASELINE:
            ratios = [a / b for a, b in zip(speeds, base)]
            text += f' **{statistics.median(ratios):.2f}x** ({min(ratios):.2f}-{max(ratios):.2f}) |'
        else:
            text += ' |'
        print(text, flush=True)


def interleave(steps: Dict[str, Callable[[], None]], batch: int, repeats: int, iterations: int) -> Dict[str, List[float]]:
    """Images per second of each step, ``repeats`` times, the models taking turns."""
    results = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            start = time.perf_counter()
            for _ in range(iterations):
                step()
            results[label].append(batch * iterations / (time.perf_counter() - start))
    return results


def run_models(args) -> None:
    from torch._dynamo.utils import counters

    import involution_mm  # noqa: F401  registers RedNet and the SimAM backbones
    from models import build, make_steps
    configs = model_configs(args.models)
    print('| mode | batch | model | img/s (median) | / ResNet-50: median (lowest-highest) |')
    print('|---|---|---|---|---|')
    for mode in args.modes:
        layout = 'channels_last' if mode == 'channels_last' else 'contiguous'
        models = {label: build(config, torch.device('cpu'), layout, 'auto') for label, config in configs.items()}
        if mode == 'compile':
            torch._dynamo.reset()
            counters.clear()
            models = {label: torch.compile(model) for label, model in models.items()}
        for batch in args.batch:
            inputs = torch.randn(batch, 3, 224, 224).contiguous(memory_format=LAYOUTS[layout])
            labels = torch.randint(0, 1000, (batch, ))
            steps = {label: make_steps(model, inputs, labels, 'float32')[1 if mode == 'train' else 0]
                     for label, model in models.items()}
            for step in steps.values():  # warm-up (and compilation)
                for _ in range(2):
                    step()
            ratio_rows(mode, batch, interleave(steps, batch, args.repeats, args.iterations))
        if mode == 'compile':
            print(f"# torch.compile: {sum(counters['graph_break'].values())} graph breaks", flush=True)


def export_files(configs: Dict[str, str], folder: str) -> Dict[str, str]:
    """``{label: path}``: each model exported in standard operators as the onnx part runs it."""
    from involution_mm.export import build_program, export_onnx
    paths = {}
    for label, config in configs.items():
        path = osp.join(folder, f'{len(paths)}.onnx')
        with warnings.catch_warnings():  # the exporter's tracer warnings, expected for these graphs
            warnings.simplefilter('ignore')
            export_onnx(build_program(config, preprocessing=False), path, (224, 224), exporter='torchscript')
        paths[label] = path
    return paths


def run_runtime(mode: str, args, load: Callable[[str], Callable[[object], object]]) -> None:
    """Images per second of the exported models in a runtime, interleaved; ``load(path)`` gives ``run(images)``."""
    import involution_mm  # noqa: F401
    configs = model_configs(args.models)
    print('| mode | batch | model | img/s (median) | / ResNet-50: median (lowest-highest) |')
    print('|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as folder:
        runs = {label: load(path) for label, path in export_files(configs, folder).items()}
        for batch in args.batch:
            images = torch.randn(batch, 3, 224, 224).numpy()
            steps = {label: (lambda r=run: r(images)) for label, run in runs.items()}
            for step in steps.values():
                step()
            ratio_rows(mode, batch, interleave(steps, batch, args.repeats, args.iterations))


def run_onnx(args) -> None:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    print(f'# ONNX Runtime {onnxruntime.__version__}, CPU provider, {args.threads} intra-op threads')

    def load(path: str) -> Callable[[object], object]:
        session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        return lambda images: session.run(None, {session.get_inputs()[0].name: images})

    run_runtime('onnxruntime', args, load)


def run_openvino(args) -> None:
    import openvino
    core = openvino.Core()
    config = {'INFERENCE_NUM_THREADS': args.threads, 'PERFORMANCE_HINT': 'LATENCY'}
    print(f'# OpenVINO {openvino.__version__}, CPU device, {args.threads} inference threads, latency hint')

    def load(path: str) -> Callable[[object], object]:
        request = core.compile_model(core.read_model(path), 'CPU', config).create_infer_request()
        return lambda images: request.infer([images])

    run_runtime('openvino', args, load)


def run_demo(args) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as folder:
        env.update(DEMO_DATA=osp.join(folder, 'data'), DEMO_WORK_DIR=osp.join(folder, 'work'))
        start = time.perf_counter()
        done = subprocess.run(['tools/demo.sh'], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        seconds = time.perf_counter() - start
    accuracy = [line for line in done.stdout.splitlines() if 'accuracy/top1' in line][-1:]
    print(f'# tools/demo.sh: exit {done.returncode}, {seconds:.0f} s wall; {accuracy[0].strip() if accuracy else ""}')
    if done.returncode:
        print(done.stdout[-3000:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--part', nargs='+', default=['op', 'models', 'onnx'],
                        choices=['op', 'models', 'onnx', 'openvino', 'demo'])
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=5, help='interleaved repeats of every measurement')
    parser.add_argument('--iterations', type=int, default=3, help='model steps per repeat')
    parser.add_argument('--threads', type=int, default=2, help='torch (and ONNX Runtime) intra-op threads')
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--modes', nargs='+', default=MODES, choices=MODES)
    parser.add_argument('--backends', nargs='+', default=['cpu', 'pytorch'], choices=['cpu', 'pytorch'],
                        help='the op backends the op part times')
    parser.add_argument('--layouts', nargs='+', default=list(LAYOUTS), choices=list(LAYOUTS),
                        help='the memory layouts the op part times')
    args = parser.parse_args(argv)
    if min(args.batch + [args.repeats, args.iterations, args.threads]) < 1:
        print('error: --batch, --repeats, --iterations and --threads must be at least 1', file=sys.stderr)
        return 2
    if 'openvino' in args.part and importlib.util.find_spec('openvino') is None:
        print('error: --part openvino needs the openvino package (pip install openvino)', file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f'# {machine_description(torch.device("cpu"))}; torch {torch.__version__}')
    parts = {'op': run_op, 'models': run_models, 'onnx': run_onnx, 'openvino': run_openvino, 'demo': run_demo}
    for part in args.part:
        parts[part](args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
