#!/usr/bin/env python
"""Parameters and FLOPs of a config's model, counting the involution aggregation.

    python tools/analysis_tools/get_flops.py configs/rednet/rednet50_64xb32-warmup-coslr-130e_in1k.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 800 1333

Works for mmpretrain, mmdet and mmsegmentation configs (the framework comes from the config's
``default_scope``). The model runs once in ``mode='tensor'`` on a synthetic image of ``--shape`` (height,
width), by default the shapes the published tables used: 224x224 for classifiers, 1280x800 for detectors
(mmdet 2.x's default) and 2048x1024 for segmentors (mmseg 0.x's). For detectors that is the backbone, neck
and heads without post-processing. FLOPs are multiply-accumulates of convs, linear layers, norms,
upsampling and the involution aggregation (see docs/model_zoo.md for the convention).
"""
import argparse
import importlib
import os.path as osp
import sys
from typing import Optional, Sequence, Tuple

import torch
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # run from a checkout without install
from involution_mm.user_errors import UserError, run_tool  # noqa: E402

DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (1280, 800), 'mmseg': (2048, 1024)}


class TensorForward(torch.nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a one-argument module, for tracing."""

    def __init__(self, model: torch.nn.Module, data_samples) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


def data_samples_for(scope: str, shape):
    """Data samples carrying the image metainfo that detectors and segmentors read."""
    if scope == 'mmpretrain':
        return None
    module = importlib.import_module('mmdet.structures' if scope == 'mmdet' else 'mmseg.structures')
    sample = module.DetDataSample() if scope == 'mmdet' else module.SegDataSample()
    sample.set_metainfo(dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                             scale_factor=(1.0, 1.0)))
    return [sample]


class ShapeError(UserError, ValueError):
    """A ``--shape`` that is not one or two positive sizes."""


def checked_shape(values: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """``--shape`` as (height, width): one value means a square.

    Raises:
        ShapeError: not one or two values, or a value that is not positive (a ``ValueError``).
    """
    if values is None:
        return None
    if len(values) not in (1, 2) or any(v <= 0 for v in values):
        raise ShapeError(f'--shape takes one or two positive sizes (height [width]), got '
                         f'{" ".join(map(str, values))}')
    return tuple(values * 2)[:2]


def complexity_of_config(config: str, shape=None, cfg_options=None) -> dict:
    """Build the config's model and measure it; returns the dict of ``model_complexity`` plus ``shape``.

    Raises:
        ConfigError: the config is missing or unreadable, has no model or framework scope, or its model
            cannot be built.
    """
    from involution_mm.complexity import model_complexity
    from involution_mm.upstream import build_model_from_config
    model, scope = build_model_from_config(config, cfg_options)
    shape = tuple(shape or DEFAULT_SHAPES[scope])
    result = model_complexity(TensorForward(model, data_samples_for(scope, shape)),
                              (torch.rand(1, 3, *shape), ))
    result['shape'] = shape
    return result


def flops_main(argv=None) -> int:
    """The command line; raises user errors (see :func:`main`)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs='+', help='input height and width (one value: square)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = parser.parse_args(argv)
    result = complexity_of_config(args.config, checked_shape(args.shape), args.cfg_options)
    print(f'Input shape: (3, {result["shape"][0]}, {result["shape"][1]})')
    print(f'Params: {result["params"] / 1e6:.2f} M (trainable: {result["trainable_params"] / 1e6:.2f} M)')
    print(f'FLOPs: {result["flops"] / 1e9:.2f} G (multiply-accumulates)')
    for op, flops in sorted(result['by_operator'].items(), key=lambda kv: -kv[1]):
        print(f'  {op}: {flops / 1e9:.3f} G')
    if result['uncounted']:
        print('Not counted (no FLOP handle; elementwise or index ops): ' +
              ', '.join(f'{op} x{n}' for op, n in sorted(result['uncounted'].items())))
    return 0



def main(argv=None) -> int:
    """The tool: user errors (config, model building, ``--shape``) give one ``error:`` line and exit status
    2; Ctrl-C exit status 130."""
    return run_tool(flops_main, argv)


if __name__ == '__main__':
    sys.exit(main())
