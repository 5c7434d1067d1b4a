"""Export a config's model to ONNX in standard operators, and check it against PyTorch on ONNX Runtime.

What is exported, by framework (the parts that are plain tensor programs; post-processing such as NMS and
RoI heads is left to the deployment tool):

- mmpretrain classifiers: the whole model, images to class scores (``mode='tensor'``: logits before softmax);
- mmsegmentation segmentors: the whole model, images to the decode head's logits (``mode='tensor'``);
- mmdet detectors: the backbone, the neck and the dense head (the RPN head of two-stage detectors, the box
  head of single-stage ones), images to the feature maps and the head's raw score and box maps.

The involution op is exported as standard ONNX operators (pad, slices, multiplies and adds; see
``ops/composite.py``), so ONNX Runtime and TensorRT's parser take the model without a custom domain. The batch
dimension is dynamic unless asked otherwise. ``tools/deployment/export_onnx.py`` (or ``python -m involution_mm.export``)
is the command line.
"""
import argparse
import sys
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .checkpoint import CheckpointError
from .output_files import OutputPathError, check_output_path, written_atomically

# default input (height, width) by framework: the shapes the published tables used
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1344), 'mmseg': (512, 1024)}
EXPORT_BATCH = 2  # example batch for tracing (torch.export would specialise a batch of 1)


class ExportError(RuntimeError):
    """A model that cannot be exported, or whose exported outputs differ from PyTorch's."""


class TensorProgram(nn.Module):
    """The exported part of a model as a module from images to a tuple of tensors.

    Args:
        model (nn.Module): A classifier, detector or segmentor built from a config.
        scope (str): The config's ``default_scope``: ``'mmpretrain'``, ``'mmdet'`` or ``'mmseg'``.
    """

    def __init__(self, model: nn.Module, scope: str) -> None:
        super().__init__()
        self.model = model
        self.scope = scope

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.scope != 'mmdet':
            out = self.model(inputs, mode='tensor')
            return tuple(out) if isinstance(out, (tuple, list)) else (out, )
        features = self.model.extract_feat(inputs)
        head = self.model.rpn_head if getattr(self.model, 'with_rpn', False) else self.model.bbox_head
        return tuple(features) + tuple(t for level_outputs in head(features) for t in level_outputs)


def output_names(program: TensorProgram, outputs: Sequence[torch.Tensor]) -> List[str]:
    """Names of the exported outputs: ``scores`` for classifiers, ``seg_logits`` for segmentors, and for
    detectors ``feat0``... followed by the head's maps (``cls0``..., ``reg0``...)."""
    if program.scope == 'mmdet':
        levels = len(outputs) // 3  # features, then one score map and one box map per level
        names = [f'{kind}{i}' for kind in ('feat', 'cls', 'reg') for i in range(levels)]
    else:
        names = ['scores' if program.scope == 'mmpretrain' else 'seg_logits']
    return names if len(names) == len(outputs) else [f'output{i}' for i in range(len(outputs))]


def build_program(config: str, checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None
                  ) -> TensorProgram:
    """Build a config's model in eval mode on the CPU, load ``checkpoint`` (weights-only, strict), and wrap
    the part that is exported.

    Raises:
        ConfigError: the config is missing, unreadable, or has no model or framework scope.
        CheckpointError, ExportError: the checkpoint cannot be loaded or does not fit the model.
    """
    from .checkpoint import load_checkpoint_file
    from .upstream import build_model_from_config
    model, scope = build_model_from_config(config, cfg_options)
    if checkpoint is not None:
        loaded = load_checkpoint_file(checkpoint, map_location='cpu')
        state_dict = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
        if not isinstance(state_dict, dict):
            raise ExportError(f'{checkpoint} holds no state dict; give a checkpoint saved by mmengine or '
                              'torch.save(model.state_dict())')
        state_dict = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ExportError(f'{checkpoint} does not fit the model of {config}: {len(missing)} missing keys '
                              f'(first: {missing[:3]}) and {len(unexpected)} unexpected (first: '
                              f'{unexpected[:3]}); convert released checkpoints first with '
                              'tools/model_converters/convert_checkpoint.py')
    return TensorProgram(model, scope).eval()


def export_onnx(program: TensorProgram, out_file: str, shape: Tuple[int, int], dynamic_batch: bool = True,
                opset: Optional[int] = None, exporter: str = 'dynamo', optimize: bool = True) -> List[str]:
    """Export ``program`` to ``out_file`` (written whole or not at all); returns the output names.

    Args:
        program (TensorProgram): What to export.
        out_file (str): The ONNX file to write.
        shape (tuple[int, int]): Input height and width.
        dynamic_batch (bool): Whether the batch dimension is left symbolic. Defaults to True.
        opset (int, optional): ONNX opset version; None for torch.onnx's default. Defaults to None.
        exporter (str): ``'dynamo'`` (``torch.export`` based, torch's default) or ``'torchscript'`` (the
            tracing exporter, much faster on large graphs, which mmdeploy uses). Defaults to 'dynamo'.
        optimize (bool): Whether the dynamo exporter optimises the graph. Defaults to True.
    """
    example = torch.rand(EXPORT_BATCH, 3, *shape)
    with torch.no_grad():
        names = output_names(program, program(example))
    if exporter == 'dynamo':
        options = dict(dynamo=True, optimize=optimize, external_data=False,
                       dynamic_shapes=({0: torch.export.Dim('batch', min=1)}, ) if dynamic_batch else None)
    else:
        axes = {name: {0: 'batch'} for name in ['inputs'] + names} if dynamic_batch else None
        options = dict(dynamo=False, dynamic_axes=axes)
    with written_atomically(out_file) as temporary, torch.no_grad():
        torch.onnx.export(program, (example, ), temporary, input_names=['inputs'], output_names=names,
                          opset_version=opset, **options)
    return names


def verify_onnx(program: TensorProgram, onnx_file: str, shape: Tuple[int, int], batch: int,
                tolerance: float = 1e-4) -> float:
    """Run the ONNX model on ONNX Runtime (CPU) and PyTorch on the same random batch; return the largest
    difference of an output relative to that output's largest magnitude, and raise ExportError when it
    exceeds ``tolerance``."""
    import onnxruntime
    session = onnxruntime.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    inputs = torch.rand(batch, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = program(inputs)
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    if len(got) != len(expected):
        raise ExportError(f'{onnx_file} gives {len(got)} outputs, PyTorch {len(expected)}')
    worst = 0.0
    for name, want, have in zip([o.name for o in session.get_outputs()], expected, got):
        if tuple(have.shape) != tuple(want.shape):
            raise ExportError(f'output {name} of {onnx_file} has shape {tuple(have.shape)} for a batch of '
                              f'{batch}, PyTorch {tuple(want.shape)}')
        scale = max(want.abs().max().item(), 1e-12)
        worst = max(worst, (torch.from_numpy(have) - want).abs().max().item() / scale)
    if not worst <= tolerance:
        raise ExportError(f'{onnx_file} differs from PyTorch by {worst:.2e} (relative), above {tolerance:g}')
    return worst


def main(argv: Optional[Sequence[str]] = None) -> int:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Export a config\'s model to ONNX (standard operators, dynamic batch) and check it '
        'against PyTorch on ONNX Runtime.',
        usage='%(prog)s CONFIG [CHECKPOINT] OUT.onnx [options]')
    parser.add_argument('config', help='the model\'s config (mmpretrain, mmdet or mmsegmentation)')
    parser.add_argument('files', nargs='+', metavar='[CHECKPOINT] OUT.onnx',
                        help='an optional checkpoint to load (strict, weights-only), then the ONNX file to write')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input height and width (one value: square); default 224 for classifiers, '
                        '800x1344 for detectors, 512x1024 for segmentors')
    parser.add_argument('--static-batch', action='store_true', help='fix the batch size (default: dynamic)')
    parser.add_argument('--opset', type=int, help='ONNX opset version (default: torch.onnx\'s)')
    parser.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo',
                        help='torch.onnx exporter: dynamo (torch.export based, the default) or torchscript '
                        '(tracing; much faster on large models)')
    parser.add_argument('--no-optimize', action='store_true',
                        help='skip the dynamo exporter\'s graph optimisation (faster export)')
    parser.add_argument('--no-verify', action='store_true', help='skip the ONNX Runtime check')
    parser.add_argument('--force', action='store_true', help='overwrite OUT.onnx if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = parser.parse_args(argv)
    if len(args.files) > 2:
        parser.error('give at most a checkpoint and the output file after CONFIG')
    checkpoint, out_file = args.files if len(args.files) == 2 else (None, args.files[0])
    if args.shape is not None and (len(args.shape) > 2 or min(args.shape) < 1):
        parser.error(f'--shape takes one or two positive sizes, got {args.shape}')
    try:
        out_file = check_output_path(out_file, overwrite=args.force)
        program = build_program(args.config, checkpoint, args.cfg_options)
        shape = tuple((args.shape * 2)[:2]) if args.shape else DEFAULT_SHAPES[program.scope]
        print(f'exporting {args.config} ({program.scope}, input {EXPORT_BATCH}x3x{shape[0]}x{shape[1]}, '
              f'{"static" if args.static_batch else "dynamic"} batch, {args.exporter} exporter) to {out_file}',
              flush=True)
        names = export_onnx(program, out_file, shape, not args.static_batch, args.opset, args.exporter,
                            not args.no_optimize)
        print(f'wrote {out_file}: outputs {", ".join(names)}')
        if not args.no_verify:
            batch = EXPORT_BATCH if args.static_batch else EXPORT_BATCH + 1
            worst = verify_onnx(program, out_file, shape, batch)
            print(f'ONNX Runtime matches PyTorch on a batch of {batch}: largest difference {worst:.1e} '
                  '(relative to the largest magnitude of its output)')
    except (OutputPathError, FileExistsError, FileNotFoundError, ExportError, CheckpointError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    except ImportError as err:
        print(f'error: {err}; install the deploy extra: pip install "involution-mm[deploy]"', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted; nothing was written', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
