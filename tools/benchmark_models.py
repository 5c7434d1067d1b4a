#!/usr/bin/env python
"""RedNet-50 against mmpretrain's ResNet-50 on one GPU: inference and training throughput, side by side.

    python tools/benchmark_models.py                          # batch 64 and 256, float32 and float16
    python tools/benchmark_models.py --batch 64 --dtype float16 --channels-last --profile

Both classifiers are built from their configs through mmpretrain's registry (backbone, global pooling,
linear head: what a user trains), in one process, on the same random 224x224 inputs. Inference runs in eval
mode under ``torch.no_grad``; a training step is forward, cross-entropy on random labels, backward and an SGD
step with momentum, in train mode. ``float16`` runs under ``torch.autocast``. ``--profile`` prints the CUDA
kernels that take RedNet-50's training step time.
"""
import argparse
import importlib.util
import os.path as osp
import sys
import time

import torch
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
REDNET_CONFIG = osp.join(REPO, 'configs', 'rednet', 'rednet50_64xb32-warmup-coslr-130e_in1k.py')
RESNET_CONFIG = osp.join('.mim', 'configs', 'resnet', 'resnet50_8xb32_in1k.py')  # inside mmpretrain


def build(config: str, device: torch.device, channels_last: bool) -> torch.nn.Module:
    from involution_mm.upstream import build_model_from_config
    model = build_model_from_config(config)[0].to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def images_per_second(step, batch: int, iterations: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    torch.cuda.synchronize()
    return batch * iterations / (time.perf_counter() - start)


def make_steps(model, inputs, labels, precision):
    autocast = dict(device_type='cuda', dtype=torch.float16, enabled=precision == 'float16')
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, nargs='+', default=[64, 256])
    parser.add_argument('--dtype', nargs='+', default=['float32', 'float16'], choices=['float32', 'float16'])
    parser.add_argument('--channels-last', action='store_true', help='both models and inputs in channels_last')
    parser.add_argument('--iterations', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--profile', action='store_true', help="print the top CUDA kernels of RedNet-50's step")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print('error: this benchmark needs a CUDA GPU', file=sys.stderr)
        return 2
    spec = importlib.util.find_spec('mmpretrain')
    if spec is None:
        print('error: mmpretrain is not installed (pip install -e ".[cls]")', file=sys.stderr)
        return 2
    import involution_mm  # noqa: F401  registers RedNet
    from involution_mm.ops import select_backend
    device = torch.device('cuda')
    layout = 'channels_last' if args.channels_last else 'contiguous'
    configs = {'ResNet-50': osp.join(spec.submodule_search_locations[0], RESNET_CONFIG), 'RedNet-50': REDNET_CONFIG}
    models = {name: build(config, device, args.channels_last) for name, config in configs.items()}
    probe = torch.empty(1, 1, 1, 1, device=device)
    print(f'# {torch.cuda.get_device_name(device)}; torch {torch.__version__}; involution backend '
          f'{select_backend(probe)!r}; {layout}; {args.iterations} timed iterations after {args.warmup}')
    print('| batch | precision | model | inference img/s | training img/s | training peak GiB |')
    print('|---|---|---|---|---|---|')
    for batch in args.batch:
        inputs = torch.randn(batch, 3, 224, 224, device=device)
        if args.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 1000, (batch, ), device=device)
        for precision in args.dtype:
            speeds = {}
            for name, model in models.items():
                infer, train = make_steps(model, inputs, labels, precision)
                inference = images_per_second(infer, batch, args.iterations, args.warmup)
                torch.cuda.reset_peak_memory_stats(device)
                training = images_per_second(train, batch, args.iterations, args.warmup)
                peak = torch.cuda.max_memory_allocated(device) / 2**30
                speeds[name] = (inference, training)
                print(f'| {batch} | {precision} | {name} | {inference:.0f} | {training:.0f} | {peak:.1f} |',
                      flush=True)
            ratios = [speeds['RedNet-50'][i] / speeds['ResNet-50'][i] for i in range(2)]
            print(f'| {batch} | {precision} | RedNet / ResNet | {ratios[0]:.2f}x | {ratios[1]:.2f}x | |', flush=True)
            if args.profile:
                profile_step(make_steps(models['RedNet-50'], inputs, labels, precision)[1])
    return 0


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
