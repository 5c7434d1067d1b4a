"""Export a config's model to ONNX in standard operators, and check it against PyTorch on ONNX Runtime.

What is exported, by framework (the parts that are plain tensor programs; post-processing such as NMS and
RoI heads is left to the deployment tool):

- mmpretrain classifiers: the whole model, images to class scores (``mode='tensor'``: logits before softmax);
- mmsegmentation segmentors: the whole model, images to the decode head's logits (``mode='tensor'``);
- mmdet detectors: the backbone, the neck and the dense head (the RPN head of two-stage detectors, the box
  head of single-stage ones), images to the feature maps and the head's raw score and box maps.

By default the graph takes images as a user has them: ``(N, 3, H, W)`` RGB images with values 0-255
(float32, or uint8 with ``input_dtype='uint8'``), and holds the model's ``data_preprocessor`` (channel order,
mean and std, padding to its size divisor). With ``preprocessing=False`` it takes what the preprocessor gives
the model, as mmdeploy's graphs do. The file's metadata states the input contract either way
(:func:`input_contract`).

The involution op is exported as standard ONNX operators (pad, slices, one-hot grouped convolutions, multiplies
and sums; see ``ops/composite.py``), so ONNX Runtime and TensorRT's parser take the model without a custom
domain. The batch dimension is dynamic unless asked otherwise. ``tools/deployment/export_onnx.py`` (or
``python -m involution_mm.export``) is the command line.
"""
import argparse
import importlib
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .output_files import check_output_path, written_atomically
from .user_errors import MissingDependencyError, UserError, run_tool

# default input (height, width) by framework: the shapes the published tables used
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1344), 'mmseg': (512, 1024)}
EXPORT_BATCH = 2  # example batch for tracing (torch.export would specialise a batch of 1)
INPUT_DTYPES = {'float32': torch.float32, 'uint8': torch.uint8}
# The lowest opset of our graphs: the involution op's composite form needs Pad with tensor pads (opset 11).
MIN_OPSET = 11


class ExportError(UserError, RuntimeError):
    """A model that cannot be exported as asked, or whose exported outputs differ from PyTorch's."""


@dataclass(frozen=True)
class Preprocessing:
    """What a model's ``data_preprocessor`` does at test time to images given in RGB order.

    Attributes:
        to_bgr (bool): Reverse the channels (the model was trained on images in the BGR order that mmcv
            loads, with no ``to_rgb``/``bgr_to_rgb`` in its preprocessor).
        mean (tuple[float], optional): Subtracted per channel (after the reordering), or None.
        std (tuple[float], optional): Divided by per channel, or None.
        size_divisor (int): Height and width are padded (bottom, right) to a multiple of it.
        pad_value (float): The value of the padding (after normalisation, as the preprocessors pad).
    """
    to_bgr: bool
    mean: Optional[Tuple[float, ...]]
    std: Optional[Tuple[float, ...]]
    size_divisor: int = 1
    pad_value: float = 0.0

    def describe(self) -> str:
        """The steps in words, e.g. ``'to float, (x - mean) / std with mean (123.675, ...) ...'``."""
        steps = ['to float32']
        if self.to_bgr:
            steps.append('channels reversed to BGR')
        if self.mean is not None:
            steps.append(f'(x - mean) / std with mean {_numbers(self.mean)} and std {_numbers(self.std)}')
        if self.size_divisor > 1:
            steps.append(f'padded bottom and right to a multiple of {self.size_divisor} with {self.pad_value:g}')
        return ', '.join(steps)


def _numbers(values: Sequence[float]) -> str:
    return '(' + ', '.join(f'{v:g}' for v in values) + ')'


def _preprocessor_classes(scope: str) -> Dict[str, type]:
    """The data preprocessors whose test-time behaviour :func:`preprocessing_of` knows, by name."""
    from mmengine.model import ImgDataPreprocessor
    known = {'ImgDataPreprocessor': ImgDataPreprocessor}  # mmdet's DetDataPreprocessor is one
    if scope == 'mmpretrain':
        from mmpretrain.models import ClsDataPreprocessor
        known['ClsDataPreprocessor'] = ClsDataPreprocessor
    elif scope == 'mmseg':
        from mmseg.models.data_preprocessor import SegDataPreProcessor
        known['SegDataPreProcessor'] = SegDataPreProcessor
    return known


def preprocessing_of(model: nn.Module, scope: str) -> Preprocessing:
    """The test-time preprocessing of a model's ``data_preprocessor``, for RGB input.

    mmcv loads images in BGR order; each framework's preprocessor reverses them to RGB when asked
    (``to_rgb`` in mmpretrain, ``bgr_to_rgb`` in mmdet and mmseg), then normalises and pads.

    Raises:
        ExportError: the preprocessor is of a class not known here (export with ``preprocessing=False``).
    """
    pre = getattr(model, 'data_preprocessor', None)
    known = _preprocessor_classes(scope)
    if not isinstance(pre, tuple(known.values())):
        raise ExportError(f'the model\'s data_preprocessor ({type(pre).__name__}) is not one of '
                          f'{sorted(known)}, whose preprocessing the exporter knows; export with '
                          '--no-preprocessing and preprocess the images yourself')
    if isinstance(pre, known.get('ClsDataPreprocessor', ())):
        reorders, divisor, pad_value = pre.to_rgb, pre.pad_size_divisor, pre.pad_value
    elif isinstance(pre, known.get('SegDataPreProcessor', ())):  # pads test images only as its test_cfg says
        test_cfg = pre.test_cfg or {}
        if test_cfg.get('size'):
            raise ExportError(f'the model\'s data_preprocessor pads test images to size {test_cfg["size"]}, '
                              'which the exporter does not do; export with --no-preprocessing and pad the '
                              'normalised images yourself')
        reorders, divisor, pad_value = pre.channel_conversion, test_cfg.get('size_divisor') or 1, pre.pad_val
    else:  # mmengine's ImgDataPreprocessor and subclasses (mmdet's DetDataPreprocessor)
        reorders, divisor, pad_value = pre._channel_conversion, pre.pad_size_divisor, pre.pad_value
    if getattr(pre, '_enable_normalize', False):
        mean, std = tuple(pre.mean.flatten().tolist()), tuple(pre.std.flatten().tolist())
    else:
        mean = std = None
    return Preprocessing(to_bgr=not reorders, mean=mean, std=std, size_divisor=int(divisor or 1),
                         pad_value=float(pad_value))


class Preprocess(nn.Module):
    """:class:`Preprocessing` as a module: RGB images (any dtype, values 0-255) to the model's input."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.preprocessing = preprocessing
        if preprocessing.mean is not None:
            self.register_buffer('mean', torch.tensor(preprocessing.mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer('std', torch.tensor(preprocessing.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.preprocessing.to_bgr:
            x = x.flip(1)
        if self.preprocessing.mean is not None:
            x = (x - self.mean) / self.std
        divisor = self.preprocessing.size_divisor
        if divisor > 1:
            height, width = x.shape[-2:]
            x = F.pad(x, (0, math.ceil(width / divisor) * divisor - width, 0,
                          math.ceil(height / divisor) * divisor - height), value=self.preprocessing.pad_value)
        return x


class TensorProgram(nn.Module):
    """The exported part of a model as a module from images to a tuple of tensors.

    In eval mode from the start.

    Args:
        model (nn.Module): A classifier, detector or segmentor built from a config.
        scope (str): The config's ``default_scope``: ``'mmpretrain'``, ``'mmdet'`` or ``'mmseg'``.
        preprocessing (Preprocessing, optional): Applied to the input first (RGB images, 0-255); None to
            take the preprocessor's output. Defaults to None.
    """

    def __init__(self, model: nn.Module, scope: str, preprocessing: Optional[Preprocessing] = None) -> None:
        super().__init__()
        self.model = model
        self.scope = scope
        self.preprocess = Preprocess(preprocessing) if preprocessing is not None else None
        self.eval()  # exported for inference (the TorchScript exporter restores the wrapper's mode afterwards)

    @property
    def preprocessing(self) -> Optional[Preprocessing]:
        return self.preprocess.preprocessing if self.preprocess is not None else None

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.preprocess is not None:
            inputs = self.preprocess(inputs)
        if self.scope != 'mmdet':
            out = self.model(inputs, mode='tensor')
            return tuple(out) if isinstance(out, (tuple, list)) else (out, )
        features = self.model.extract_feat(inputs)
        head = self.model.rpn_head if getattr(self.model, 'with_rpn', False) else self.model.bbox_head
        return tuple(features) + tuple(t for level_outputs in head(features) for t in level_outputs)


def input_name(program: TensorProgram) -> str:
    """``images`` for a graph that holds the preprocessing, ``inputs`` for one that does not."""
    return 'images' if program.preprocess is not None else 'inputs'


def output_names(program: TensorProgram, outputs: Sequence[torch.Tensor]) -> List[str]:
    """Names of the exported outputs: ``scores`` for classifiers, ``seg_logits`` for segmentors, and for
    detectors ``feat0``... followed by the head's maps (``cls0``..., ``reg0``...)."""
    if program.scope == 'mmdet':
        levels = len(outputs) // 3  # features, then one score map and one box map per level
        names = [f'{kind}{i}' for kind in ('feat', 'cls', 'reg') for i in range(levels)]
    else:
        names = ['scores' if program.scope == 'mmpretrain' else 'seg_logits']
    return names if len(names) == len(outputs) else [f'output{i}' for i in range(len(outputs))]


def input_contract(program: TensorProgram, shape: Tuple[int, int], dtype: str = 'float32') -> Dict[str, str]:
    """What the exported graph's input is, as the file's metadata (``metadata_props``) states it."""
    height, width = shape
    if program.preprocess is not None:
        return {
            'input': f'images: (N, 3, {height}, {width}) RGB images, values 0-255, {dtype}; the graph holds '
                     f'the model\'s preprocessing ({program.preprocessing.describe()})',
            'input_layout': 'NCHW', 'input_channel_order': 'RGB', 'input_range': '0-255', 'input_dtype': dtype,
            'input_size': f'{height}x{width}', 'preprocessing': 'in the graph: ' + program.preprocessing.describe(),
        }
    pre = preprocessing_or_none(program)
    order = 'the order the model was trained on'
    if pre is not None:
        order = 'BGR' if pre.to_bgr else 'RGB'
    steps = pre.describe() if pre is not None else 'unknown preprocessing'
    return {
        'input': f'inputs: (N, 3, {height}, {width}) float32, the output of the model\'s data_preprocessor '
                 f'({steps}; channels in {order}), as mmdeploy\'s graphs take',
        'input_layout': 'NCHW', 'input_channel_order': order, 'input_range': 'preprocessed', 'input_dtype': 'float32',
        'input_size': f'{height}x{width}', 'preprocessing': 'not in the graph: apply ' + steps,
    }


def preprocessing_or_none(program: TensorProgram) -> Optional[Preprocessing]:
    """The model's preprocessing when its preprocessor is a known one, else None."""
    try:
        return preprocessing_of(program.model, program.scope)
    except ExportError:
        return None


def load_weights(model: nn.Module, checkpoint: str, config: str) -> None:
    """Load ``checkpoint`` (weights-only) into ``model``: every weight, with the same keys and shapes.

    Raises:
        CheckpointError: the file cannot be loaded.
        ExportError: it holds no state dict, or does not fit the model (missing, unexpected or mis-shaped
            keys; the message counts and names them).
    """
    from .checkpoint import checkpoint_state_dict, load_checkpoint_file, state_dict_fit
    loaded = load_checkpoint_file(checkpoint, map_location='cpu')
    state_dict = checkpoint_state_dict(loaded)
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ExportError(f'{checkpoint} holds no state dict; give a checkpoint saved by mmengine or '
                          'torch.save(model.state_dict())')
    fit = state_dict_fit(model.state_dict(), state_dict)
    if fit.unloaded or fit.unexpected:
        problems = [fit.describe_unloaded()] if fit.unloaded else []
        if fit.unexpected:
            problems.append(f'{len(fit.unexpected)} keys the model does not have ('
                            f'{", ".join(fit.unexpected[:3])}{", ..." if len(fit.unexpected) > 3 else ""})')
        raise ExportError(f'{checkpoint} does not fit the model of {config}: {"; ".join(problems)}. Give the '
                          'config the checkpoint was trained with (and its --cfg-options, e.g. '
                          'model.head.num_classes); convert released checkpoints first with '
                          'tools/model_converters/convert_checkpoint.py')
    model.load_state_dict(state_dict, strict=False)  # every model key present (num_batches_tracked may not)


def build_program(config: str, checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
                  preprocessing: bool = True) -> TensorProgram:
    """Build a config's model in eval mode on the CPU, load ``checkpoint`` (weights-only, strict), and wrap
    the part that is exported, with the model's preprocessing first unless ``preprocessing`` is False.

    Raises:
        ConfigError: the config is missing or unreadable, has no model or framework scope, or its model
            cannot be built.
        CheckpointError, ExportError: the checkpoint cannot be loaded or does not fit the model; the
            model's data_preprocessor is not one whose preprocessing is known.
    """
    from .upstream import build_model_from_config
    model, scope = build_model_from_config(config, cfg_options)
    if checkpoint is not None:
        load_weights(model, checkpoint, config)
    return TensorProgram(model, scope, preprocessing_of(model, scope) if preprocessing else None)


def supported_opsets(exporter: str) -> range:
    """The ONNX opsets an exporter writes for our graphs (measured with torch 2.13, onnx 1.23, onnxscript 0.7).

    TorchScript: from 11 (the floor this project documents and tests; 10 exports classifiers too) to
    ``torch.onnx``'s newest (23; it refuses newer). Dynamo: from 18, the opset its function library is
    written in (asked for an older one it silently writes 18, as the version converter cannot take our
    graphs lower), to the newest the installed onnx knows (asked for a newer one it writes 18 after a
    traceback).
    """
    from torch.onnx import _constants
    if exporter == 'torchscript':
        return range(MIN_OPSET, _constants.ONNX_MAX_OPSET + 1)
    import onnx
    from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET
    return range(TORCHLIB_OPSET, onnx.defs.onnx_opset_version() + 1)


def check_opset(opset: Optional[int], exporter: str) -> None:
    """Refuse an opset the exporter cannot write, naming the ones it can.

    Raises:
        ExportError: ``opset`` is outside :func:`supported_opsets`.
    """
    opsets = supported_opsets(exporter)
    if opset is not None and opset not in opsets:
        other = 'torchscript' if exporter == 'dynamo' else 'dynamo'
        raise ExportError(f'the {exporter} exporter writes opsets {opsets.start} to {opsets.stop - 1}, not '
                          f'--opset {opset} (the {other} exporter: {supported_opsets(other).start} to '
                          f'{supported_opsets(other).stop - 1})')


def require_deploy_extra(exporter: str, verify: bool) -> None:
    """Import the packages an export needs, before the model is built.

    Raises:
        MissingDependencyError: one of them is not installed; the message says how to install them.
    """
    needed = ['onnx'] + (['onnxscript'] if exporter == 'dynamo' else []) + (['onnxruntime'] if verify else [])
    for package in needed:
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise MissingDependencyError(f'{err}; install the deploy extra: pip install "involution-mm[deploy]"'
                                         ) from None


def export_onnx(program: TensorProgram, out_file: str, shape: Tuple[int, int], dynamic_batch: bool = True,
                opset: Optional[int] = None, exporter: str = 'dynamo', optimize: bool = True,
                input_dtype: str = 'float32') -> List[str]:
    """Export ``program`` to ``out_file``, with the input contract in the file's metadata; returns the
    output names. The file is written in place: write into a temporary (``written_atomically``).

    Args:
        program (TensorProgram): What to export.
        out_file (str): The ONNX file to write.
        shape (tuple[int, int]): Input height and width.
        dynamic_batch (bool): Whether the batch dimension is left symbolic. Defaults to True.
        opset (int, optional): ONNX opset version (see :func:`supported_opsets`); None for the exporter's
            default. Defaults to None.
        exporter (str): ``'dynamo'`` (``torch.export`` based, torch's default) or ``'torchscript'`` (the
            tracing exporter, much faster on large graphs, which mmdeploy uses). Defaults to 'dynamo'.
        optimize (bool): Whether the dynamo exporter optimises the graph. Defaults to True.
        input_dtype (str): ``'float32'`` or ``'uint8'``: the dtype of the images the graph takes (with the
            preprocessing in the graph only). Defaults to 'float32'.

    Raises:
        ExportError: the file's opset is not the one asked for.
    """
    import onnx
    check_opset(opset, exporter)
    example = example_inputs(program, EXPORT_BATCH, shape, input_dtype)
    name = input_name(program)
    with torch.no_grad():
        names = output_names(program, program(example))
    if exporter == 'dynamo':
        options = dict(dynamo=True, optimize=optimize, external_data=False, verbose=False,
                       dynamic_shapes=({0: torch.export.Dim('batch', min=1)}, ) if dynamic_batch else None)
    else:
        axes = {n: {0: 'batch'} for n in [name] + names} if dynamic_batch else None
        options = dict(dynamo=False, dynamic_axes=axes, verbose=False)
    with torch.no_grad():
        torch.onnx.export(program, (example, ), out_file, input_names=[name], output_names=names,
                          opset_version=opset, **options)
    model = onnx.load(out_file)
    written = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)
    if opset is not None and written != opset:
        raise ExportError(f'the {exporter} exporter wrote opset {written} instead of --opset {opset}; '
                          'nothing was written')
    contract = input_contract(program, shape, input_dtype if program.preprocess is not None else 'float32')
    onnx.helper.set_model_props(model, contract)
    model.graph.input[0].doc_string = contract['input']
    onnx.save(model, out_file)
    return names


def example_inputs(program: TensorProgram, batch: int, shape: Tuple[int, int], input_dtype: str = 'float32',
                   seed: Optional[int] = None) -> torch.Tensor:
    """A random input batch of what the graph takes: images with values 0-255 (integers, in
    ``input_dtype``) when it holds the preprocessing, else standard-normal float32 tensors."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if program.preprocess is None:
        return torch.randn(batch, 3, *shape, generator=generator)
    images = torch.randint(0, 256, (batch, 3, *shape), generator=generator, dtype=torch.uint8)
    return images.to(INPUT_DTYPES[input_dtype])


def verify_onnx(program: TensorProgram, onnx_file: str, shape: Tuple[int, int], batch: int,
                tolerance: float = 1e-4, input_dtype: str = 'float32') -> Tuple[float, int]:
    """Run the ONNX model on ONNX Runtime (CPU) and PyTorch on the same random batch; return the largest
    difference of an output relative to that output's largest magnitude, and raise ExportError when it
    exceeds ``tolerance``.

    Where PyTorch's output is NaN or infinite (an untrained model can overflow on images), ONNX Runtime's
    must be the same there; the difference is taken over the finite values.

    Returns:
        tuple[float, int]: The largest relative difference, and the number of output values that are NaN
        or infinite (in both).
    """
    import onnxruntime
    session = onnxruntime.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    inputs = example_inputs(program, batch, shape, input_dtype, seed=0)
    with torch.no_grad():
        expected = program(inputs)
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    if len(got) != len(expected):
        raise ExportError(f'{onnx_file} gives {len(got)} outputs, PyTorch {len(expected)}')
    worst, nonfinite = 0.0, 0
    for name, want, have in zip([o.name for o in session.get_outputs()], expected, got):
        if tuple(have.shape) != tuple(want.shape):
            raise ExportError(f'output {name} of {onnx_file} has shape {tuple(have.shape)} for a batch of '
                              f'{batch}, PyTorch {tuple(want.shape)}')
        have = torch.from_numpy(have)
        finite = torch.isfinite(want)
        if not torch.equal(finite, torch.isfinite(have)) or not torch.equal(want[~finite].nan_to_num(),
                                                                            have[~finite].nan_to_num()):
            raise ExportError(f'output {name} of {onnx_file} is NaN or infinite at other places than '
                              'PyTorch\'s')
        nonfinite += int((~finite).sum())
        if finite.any():
            scale = max(want[finite].abs().max().item(), 1e-12)
            worst = max(worst, (have[finite] - want[finite]).abs().max().item() / scale)
    if not worst <= tolerance:
        raise ExportError(f'{onnx_file} differs from PyTorch by {worst:.2e} (relative), above {tolerance:g}')
    return worst, nonfinite


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Export a config\'s model to ONNX (standard operators, dynamic batch) and check it '
        'against PyTorch on ONNX Runtime. By default the graph takes (N, 3, H, W) RGB images with values '
        '0-255 and holds the model\'s preprocessing (see docs/deploy.md).',
        usage='%(prog)s CONFIG [CHECKPOINT] OUT.onnx [options]')
    parser.add_argument('config', help='the model\'s config (mmpretrain, mmdet or mmsegmentation)')
    parser.add_argument('files', nargs='+', metavar='[CHECKPOINT] OUT.onnx',
                        help='an optional checkpoint to load (strict, weights-only), then the ONNX file to write')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input height and width (one value: square); default 224 for classifiers, '
                        '800x1344 for detectors, 512x1024 for segmentors')
    parser.add_argument('--input-dtype', choices=sorted(INPUT_DTYPES), default='float32',
                        help='dtype of the images the graph takes (values 0-255 either way; default float32)')
    parser.add_argument('--no-preprocessing', action='store_true',
                        help='leave the model\'s data_preprocessor (channel order, mean/std, padding) out of the '
                        'graph, as mmdeploy does: the graph then takes its output')
    parser.add_argument('--static-batch', action='store_true', help='fix the batch size (default: dynamic)')
    parser.add_argument('--opset', type=int, help='ONNX opset version (default: the exporter\'s; dynamo writes '
                        '18 and newer, torchscript 11 to 23)')
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
    if args.shape is not None and (len(args.shape) > 2 or min(args.shape) < 1):
        parser.error(f'--shape takes one or two positive sizes, got {args.shape}')
    if args.no_preprocessing and args.input_dtype != 'float32':
        parser.error('--input-dtype applies to graphs with the preprocessing; --no-preprocessing takes float32')
    return args


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; raises user errors (see :func:`main`)."""
    args = parse_args(argv)
    checkpoint, out_file = args.files if len(args.files) == 2 else (None, args.files[0])
    out_file = check_output_path(out_file, overwrite=args.force)
    require_deploy_extra(args.exporter, not args.no_verify)
    check_opset(args.opset, args.exporter)
    program = build_program(args.config, checkpoint, args.cfg_options, not args.no_preprocessing)
    shape = tuple((args.shape * 2)[:2]) if args.shape else DEFAULT_SHAPES[program.scope]
    dtype = args.input_dtype if program.preprocess is not None else 'float32'
    print(f'exporting {args.config} ({program.scope}, {input_name(program)} {EXPORT_BATCH}x3x{shape[0]}x{shape[1]} '
          f'{dtype}, {"static" if args.static_batch else "dynamic"} batch, {args.exporter} exporter) to '
          f'{out_file}', flush=True)
    with written_atomically(out_file, overwrite=args.force) as temporary:  # in place once exported and checked
        names = export_onnx(program, temporary, shape, not args.static_batch, args.opset, args.exporter,
                            not args.no_optimize, dtype)
        if not args.no_verify:
            batch = EXPORT_BATCH if args.static_batch else EXPORT_BATCH + 1
            worst, nonfinite = verify_onnx(program, temporary, shape, batch, input_dtype=dtype)
            print(f'ONNX Runtime matches PyTorch on a batch of {batch} random images: largest difference '
                  f'{worst:.1e} (relative to the largest magnitude of its output)')
            if nonfinite:
                print(f'note: {nonfinite} output values are NaN or infinite in PyTorch and ONNX Runtime alike '
                      '(untrained weights overflow on images?); the difference is over the finite ones')
    print(f'wrote {out_file}: input {input_contract(program, shape, dtype)["input"]}; outputs {", ".join(names)}')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/deployment/export_onnx.py``: user errors give one ``error:`` line and exit status 2, Ctrl-C
    exit status 130 (the output is written only once exported and checked, so nothing is left)."""
    return run_tool(export_main, argv, interrupted='interrupted; nothing was written')


if __name__ == '__main__':
    import sys
    sys.exit(main())
