"""Conversion of released checkpoints into checkpoints of our models.

A conversion pairs a released layout with one of our models: the model, once built, gives the exact
state-dict keys and shapes to produce, and a function names, for each of those keys, the tensor of
the released file that fills it. A file is converted only when it matches exactly (deliberately dropped
keys aside); otherwise it is refused with the lists of missing, unexpected and mis-shaped keys. So every
converted file loads with strict matching.

Two kinds of conversion:

- ``--config CONFIG``: the released RedNet classifiers, detectors and segmentors (mmcls 0.x, mmdet 2.x,
  mmseg 0.x files) have exactly the keys of our models, so the file is checked key by key and shape by
  shape against the model of one of our configs, with no renaming (:func:`config_conversion`);
- ``--model NAME``: released layouts that do need renaming, such as the SimAM ImageNet models with
  torchvision names (:data:`CONVERSIONS`).

Either way the optimizer state is dropped, ``meta`` keeps only plain data (``CLASSES`` becomes mmengine's
``dataset_meta``), and the output is an mmengine-era checkpoint ``{'meta': ..., 'state_dict': ...}``.

``tools/model_converters/convert_checkpoint.py`` (or ``python -m involution_mm.convert``) is the command line.
"""
import argparse
import io
import os
import os.path as osp
import re
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .checkpoint import load_checkpoint_file
from .output_files import check_output_path, written_atomically
from .user_errors import ToolWarning, UserError, run_tool

StateDict = Dict[str, torch.Tensor]


class ConversionError(UserError, ValueError):
    """A checkpoint that does not match the layout it is converted from, or a conversion that was not
    asked for properly."""


class UnknownConversionError(UserError, KeyError):
    """No conversion of that model to that framework (see ``--list``)."""


class ConversionWarning(ToolWarning):
    """Something converted only because the user asked for it (``--allow-nonfinite``)."""


@dataclass(frozen=True)
class Conversion:
    """One released layout turned into one of our models.

    Attributes:
        source (str): The released layout, in words ("the layout of ...").
        target (str): What the converted file is for, in words.
        build (Callable[[], nn.Module]): Builds our model; its state dict is the contract.
        source_key (Callable[[str], str]): Maps each key of our state dict to the released file's key.
        dropped (tuple[str]): Regular expressions of released keys deliberately left out (for example the
            classifier, when only the backbone is wanted).
    """
    source: str
    target: str
    build: Callable[[], nn.Module]
    source_key: Callable[[str], str]
    dropped: Tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------------
# The official SimAM ImageNet models (github.com/ZjjConan/SimAM, networks/imagenet): torchvision's names,
# with SimAM wrapped into conv2 of every ResNet block (`layer1.0.conv2.0.weight`) and into the depthwise
# conv-BN-ReLU6 of every MobileNetV2 inverted residual (conv, SimAM, BN, ReLU6: the BN is at index 2).

_SIMAM_RESNET_SOURCE = ('the layout of the official SimAM ResNet/ResNeXt (torchvision names, conv2 = Sequential(conv, SimAM), '
                        'fc classifier)')
_SIMAM_MOBILENET_V2_SOURCE = ('the layout of the official SimAM MobileNetV2 (torchvision names, depthwise block = Sequential('
                              'conv, SimAM, BN, ReLU6), classifier = Sequential(Linear))')
_MMPRETRAIN_TARGET = 'mmpretrain ImageClassifier checkpoint (tools/test.py, load_from)'
_MMDET_TARGET = "mmdet backbone checkpoint (backbone init_cfg=dict(type='Pretrained', checkpoint=...))"


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def simam_resnet_source_key(key: str) -> str:
    """Our key (mmpretrain classifier or mmdet backbone) -> the official SimAM ResNet/ResNeXt key."""
    key = _strip(key, 'backbone.')
    if key.startswith('head.fc.'):
        return _strip(key, 'head.')
    return re.sub(r'^(layer\d+\.\d+\.conv2)\.', r'\1.0.', key)


def simam_mobilenet_v2_source_key(key: str) -> str:
    """Our SimAMMobileNetV2 classifier key -> the official SimAM MobileNetV2 key.

    torchvision numbers the stem ``features.0``, the inverted residuals ``features.1`` to ``features.17`` in
    order, and the last 1x1 conv ``features.18``; within a block, ``conv`` holds ConvBNReLU6 modules (the
    1x1 expansion, absent when the expand ratio is 1, then the depthwise one), the 1x1 projection conv and
    its BN as separate items.
    """
    from mmpretrain.models.backbones import MobileNetV2
    stages = MobileNetV2.arch_settings  # [expand_ratio, channels, blocks, stride] per stage
    if key.startswith('head.fc.'):
        return 'classifier.0.' + _strip(key, 'head.fc.')
    stem = re.match(r'^backbone\.conv([12])\.(conv|bn)\.(.+)$', key)
    if stem:
        index = 0 if stem.group(1) == '1' else 1 + sum(stage[2] for stage in stages)
        return f'features.{index}.{0 if stem.group(2) == "conv" else 1}.{stem.group(3)}'
    block = re.match(r'^backbone\.layer(\d+)\.(\d+)\.conv\.(\d+)\.(conv|bn)\.(.+)$', key)
    if not block:
        return key  # no counterpart: reported as missing under its own name
    stage, number, item, kind, rest = int(block[1]), int(block[2]), int(block[3]), block[4], block[5]
    feature = 1 + sum(s[2] for s in stages[:stage - 1]) + number
    depthwise = 1 if stages[stage - 1][0] != 1 else 0
    if item > depthwise:  # the projection: conv and BN are separate items of the block's Sequential
        return f'features.{feature}.conv.{item if kind == "conv" else item + 1}.{rest}'
    norm_index = 2 if item == depthwise else 1  # SimAM sits between the depthwise conv and its BN
    return f'features.{feature}.conv.{item}.{0 if kind == "conv" else norm_index}.{rest}'


def _mmpretrain_classifier(backbone: dict, channels: int) -> Callable[[], nn.Module]:

    def build() -> nn.Module:
        from mmpretrain.registry import MODELS
        return MODELS.build(
            dict(type='ImageClassifier', _scope_='mmpretrain', backbone=backbone,
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead', num_classes=1000, in_channels=channels)))

    return build


def _mmdet_backbone(backbone: dict) -> Callable[[], nn.Module]:

    def build() -> nn.Module:
        from mmdet.registry import MODELS
        return MODELS.build(dict(backbone, _scope_='mmdet'))

    return build


def _simam_conversions() -> Dict[Tuple[str, str], Conversion]:
    table = {}
    resnets = {f'simam-resnet{depth}': dict(type='ResNet', depth=depth) for depth in (18, 34, 50, 101)}
    resnets['simam-resnext50'] = dict(type='ResNeXt', depth=50, groups=32, width_per_group=4)
    for name, arch in resnets.items():
        channels = 512 if arch['depth'] < 50 else 2048
        table[name, 'mmpretrain'] = Conversion(
            _SIMAM_RESNET_SOURCE, _MMPRETRAIN_TARGET,
            _mmpretrain_classifier(dict(arch, type='SimAM' + arch['type']), channels), simam_resnet_source_key)
        # SimAM adds no parameters: the backbone keys are those of mmdet's plain ResNet/ResNeXt, which is
        # what the SimAM plugin route and our mmdet SimAMResNet both use.
        det_arch = dict(arch)
        if 'width_per_group' in det_arch:  # mmdet's ResNeXt calls it base_width
            det_arch['base_width'] = det_arch.pop('width_per_group')
        table[name, 'mmdet'] = Conversion(_SIMAM_RESNET_SOURCE, _MMDET_TARGET, _mmdet_backbone(det_arch),
                                          simam_resnet_source_key, dropped=(r'^fc\.',))
    table['simam-mobilenetv2', 'mmpretrain'] = Conversion(
        _SIMAM_MOBILENET_V2_SOURCE, _MMPRETRAIN_TARGET,
        _mmpretrain_classifier(dict(type='SimAMMobileNetV2'), 1280), simam_mobilenet_v2_source_key)
    return table


# (model, target framework) -> conversion
CONVERSIONS: Dict[Tuple[str, str], Conversion] = _simam_conversions()


def config_conversion(config: str) -> Conversion:
    """The released layout of a config's model: the same keys and shapes, no renaming."""
    from .upstream import build_model_from_config
    return Conversion(f'the layout of the model of {osp.basename(config)} (the official one)',
                      f'checkpoint for {config} (tools/test.py, load_from)',
                      lambda: build_model_from_config(config)[0], lambda key: key)


# ----------------------------------------------------------------------------------------------------------
# Reading, checking and writing.

def read_checkpoint(path: str) -> Tuple[StateDict, dict]:
    """The weights and the ``meta`` of a checkpoint file, loaded weights-only, without a ``module.`` prefix.

    Accepts a bare state dict or a dict holding it under ``state_dict`` or ``model`` (other entries, such
    as an optimizer state, are ignored). The ``module.`` prefix of (Distributed)DataParallel is removed
    when every key has it. ``meta`` is ``{}`` when the file has none.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: the file is truncated, corrupt, or refused by the weights-only loader.
        ConversionError: the file holds no state dict.
    """
    content = load_checkpoint_file(path, map_location='cpu')
    meta = content.get('meta') if isinstance(content, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    if isinstance(content, dict):
        for key in ('state_dict', 'model'):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()):
        raise ConversionError(f'{path} holds no state dict (a dict of tensors, at the top level or under '
                              '"state_dict" or "model"); is it a model checkpoint?')
    if all(key.startswith('module.') for key in content):
        content = {key[len('module.'):]: value for key, value in content.items()}
    return content, meta


def plain_meta(meta: dict) -> dict:
    """The plain-data entries of a released ``meta`` (strings, numbers, and lists, tuples and dicts of them),
    in mmengine's terms: mmcv 1.x's ``CLASSES`` and ``PALETTE`` become ``dataset_meta['classes']`` and
    ``dataset_meta['palette']``. Anything else is dropped."""

    def plain(value) -> bool:
        if value is None or isinstance(value, (str, int, float, bool)):
            return True
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return isinstance(value, dict) and all(isinstance(k, str) and plain(v) for k, v in value.items())

    kept = {key: value for key, value in meta.items() if isinstance(key, str) and plain(value)}
    for old, new in (('CLASSES', 'classes'), ('PALETTE', 'palette')):
        if old in kept:
            kept.setdefault('dataset_meta', {})[new] = tuple(kept.pop(old))
    return kept


def expected_layout(conversion: Conversion) -> Dict[str, torch.Size]:
    """``{key: shape}`` of the state dict of the conversion's model (built on the CPU, since upstream
    constructors call ``Tensor.item()``, which the meta device does not allow)."""
    model = conversion.build()
    return OrderedDict((key, value.shape) for key, value in model.state_dict().items())


def convert_state_dict(state: StateDict, conversion: Conversion, name: str = 'the checkpoint') -> StateDict:
    """Rename and check a released state dict; returns our model's state dict in its own key order.

    A missing ``num_batches_tracked`` BN counter (files from torch < 0.4.1 have none) is filled with 0.

    Raises:
        ConversionError: keys are missing, unexpected or of the wrong shape; the message lists them.
    """
    layout = expected_layout(conversion)
    sources = OrderedDict((key, conversion.source_key(key)) for key in layout)
    wanted = set(sources.values())
    missing, wrong_shape, converted = [], [], OrderedDict()
    for key, source in sources.items():
        if source not in state:
            if key.endswith('num_batches_tracked'):
                converted[key] = torch.tensor(0, dtype=torch.long)
            else:
                missing.append(source)
        elif state[source].shape != layout[key]:
            wrong_shape.append(f'{source} is {tuple(state[source].shape)}, expected {tuple(layout[key])}')
        else:
            converted[key] = state[source]
    unexpected = [key for key in state
                  if key not in wanted and not any(re.search(p, key) for p in conversion.dropped)]
    if missing or unexpected or wrong_shape:
        raise ConversionError(
            f'{name} does not match {conversion.source}:\n' +
            _listing('missing', missing) + _listing('unexpected', unexpected) +
            _listing('with the wrong shape', wrong_shape))
    return converted


def _listing(what: str, keys: List[str], shown: int = 8) -> str:
    if not keys:
        return ''
    more = f', ... and {len(keys) - shown} more' if len(keys) > shown else ''
    return f'  {len(keys)} {what}: {", ".join(keys[:shown])}{more}\n'


def _matching_models(state: StateDict, target: str) -> List[str]:
    """Models of ``target`` whose released layout ``state`` matches exactly (to suggest one)."""
    found = []
    for (model, to), conversion in CONVERSIONS.items():
        if to == target:
            try:
                convert_state_dict(state, conversion)
            except ConversionError:
                continue
            found.append(model)
    return found


def save_atomically(obj: Any, path: str, force: bool = False) -> None:
    """``torch.save`` to ``path`` through a temporary file beside it, so no partial file is ever left, also
    on Ctrl-C or SIGTERM (see :func:`~involution_mm.output_files.written_atomically`).

    The checkpoint is serialised in memory first and then written with plain file writes, so that a full
    disk or the file size limit is reported as such (torch's own writer reports ``unexpected pos``).

    Raises:
        OutputPathError: ``path`` cannot be written (a folder, a missing, read-only or non-folder parent, a
            full disk, ``ulimit -f``).
        OutputExistsError: ``path`` exists and ``force`` is False, checked first and again, atomically,
            when the file is put in place (a ``FileExistsError``).
    """
    path = check_output_path(path, 'file', overwrite=force)
    with written_atomically(path, overwrite=force) as temporary:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        with open(temporary, 'wb') as file:
            file.write(buffer.getbuffer())
            file.flush()
            os.fsync(file.fileno())


def nonfinite_keys(state: StateDict) -> List[str]:
    """The keys of the floating-point tensors of ``state`` that hold NaN or inf."""
    return [key for key, value in state.items()
            if value.is_floating_point() and not torch.isfinite(value).all()]


def convert_checkpoint(src: str,
                       dst: str,
                       model: Optional[str] = None,
                       target: str = 'mmpretrain',
                       force: bool = False,
                       config: Optional[str] = None,
                       allow_nonfinite: bool = False) -> str:
    """Convert the released checkpoint ``src`` into a checkpoint of our model at ``dst``.

    Args:
        src (str): The released file.
        dst (str): Where to write the converted checkpoint (``{'meta': ..., 'state_dict': ...}``).
        model (str, optional): For a layout that needs renaming, the model the file holds, e.g.
            ``simam-resnet50`` (see :data:`CONVERSIONS`). Give this or ``config``.
        target (str): With ``model``: 'mmpretrain' (a classifier checkpoint) or 'mmdet' (a backbone
            checkpoint). Defaults to 'mmpretrain'.
        force (bool): Overwrite ``dst`` if it exists. Defaults to False.
        config (str, optional): For a file in the official layout of one of our configs (RedNet classifiers,
            detectors, segmentors): the config whose model it must match exactly.
        allow_nonfinite (bool): Convert a file whose tensors hold NaN or inf (with a warning that names
            them) instead of refusing it. Defaults to False.

    Returns:
        str: A one-line summary.

    Raises:
        UnknownConversionError: no conversion for ``(model, target)`` (a ``KeyError``).
        ConversionError: neither or both of ``model`` and ``config`` given.
        OutputPathError: ``dst`` cannot be written (checked before reading ``src``).
        OutputExistsError: ``dst`` exists and ``force`` is False (checked before reading ``src``).
        ConfigError: ``config`` cannot be read or its model cannot be built.
        MissingFileError, CheckpointError, ConversionError: ``src`` is missing, unreadable or does not
            match, or holds NaN or inf and ``allow_nonfinite`` is False; nothing is written.
    """
    if (model is None) == (config is None):
        raise ConversionError('give either a model (--model, a layout that needs renaming) or a config '
                         '(--config, a file in the official layout of that config\'s model)')
    if model is not None and (model, target) not in CONVERSIONS:
        raise UnknownConversionError(f'no conversion of {model!r} to {target!r}; available: '
                       + ', '.join(f'{m} --to {t}' for m, t in CONVERSIONS))
    check_output_path(dst, 'file', overwrite=force)
    conversion = config_conversion(config) if config is not None else CONVERSIONS[model, target]
    state, released_meta = read_checkpoint(src)
    try:
        converted = convert_state_dict(state, conversion, name=src)
    except ConversionError as err:
        others = [m for m in _matching_models(state, target) if m != model] if model is not None else []
        hint = f'It matches {" and ".join(others)}: pass --model {others[0]}.\n' if others else ''
        raise ConversionError(f'{err}{hint}Nothing was written.') from None
    nonfinite = [conversion.source_key(key) for key in nonfinite_keys(converted)]  # as named in src
    if nonfinite:
        listing = _listing('tensors hold NaN or inf', nonfinite).strip()
        if not allow_nonfinite:
            raise ConversionError(f'{src} is damaged: {listing}. A model loaded from it outputs NaN; pass '
                                  '--allow-nonfinite to convert it anyway. Nothing was written.')
        warnings.warn(f'{src}: {listing}; converting it since --allow-nonfinite was given', ConversionWarning)
    meta = dict(plain_meta(released_meta), converted_from=osp.basename(src), source_layout=conversion.source,
                target=conversion.target)
    if model is not None:
        meta['model'] = model
    save_atomically(dict(meta=meta, state_dict=converted), dst, force=force)
    return f'{src} -> {dst}: {len(converted)} tensors, {conversion.target}'


def convert_main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; raises user errors (see :func:`main`)."""
    parser = argparse.ArgumentParser(
        description='Convert a released checkpoint into a checkpoint of an involution_mm model. The input is '
        'loaded weights-only; it is converted only if its keys and shapes match the model exactly, and the '
        'output is written whole or not at all.')
    parser.add_argument('src', nargs='?', help='the released checkpoint')
    parser.add_argument('dst', nargs='?', help='the converted checkpoint to write')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--config', help='SRC is in the official layout of this config\'s model (RedNet '
                        'classifiers, detectors, segmentors): check it against that model, no renaming')
    source.add_argument('--model', help='SRC is a released layout that needs renaming, e.g. simam-resnet50 '
                        '(see --list)')
    parser.add_argument('--to', default='mmpretrain', choices=sorted({t for _, t in CONVERSIONS}),
                        help='with --model: mmpretrain (a classifier checkpoint) or mmdet (a backbone '
                        'checkpoint)')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    parser.add_argument('--allow-nonfinite', action='store_true',
                        help='convert a file whose tensors hold NaN or inf (they are named in a warning)')
    parser.add_argument('--list', action='store_true', help='list the conversions and exit')
    args = parser.parse_args(argv)
    if args.list:
        print('--config CONFIG\n    from: the official layout of the config\'s model (RedNet classifiers, '
              'detectors, segmentors)\n    to:   a checkpoint for that config')
        for (model, target), conversion in CONVERSIONS.items():
            print(f'--model {model} --to {target}\n    from: {conversion.source}\n    to:   {conversion.target}')
        return 0
    if not (args.src and args.dst and (args.model or args.config)):
        parser.error('SRC, DST and --config or --model are required (see --list for the models)')
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', ConversionWarning)
            summary = convert_checkpoint(args.src, args.dst, args.model, args.to, args.force, args.config,
                                         args.allow_nonfinite)
    finally:
        for warning in caught:  # ours as the tool's own lines; other libraries' as Python shows them
            if issubclass(warning.category, ConversionWarning):
                print(f'warning: {warning.message}', file=sys.stderr)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    print(summary)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/model_converters/convert_checkpoint.py``: user errors give one ``error:`` line (a listing
    for keys that do not match) and exit status 2, Ctrl-C exit status 130."""
    return run_tool(convert_main, argv, interrupted='interrupted; nothing was written')


if __name__ == '__main__':
    sys.exit(main())
