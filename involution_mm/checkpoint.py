"""Safe checkpoint loading under torch's weights-only unpickler.

torch >= 2.6 loads checkpoints with ``weights_only=True``, and mmengine 0.10.7 calls ``torch.load`` without
the flag, so a checkpoint saved by mmengine's own Runner (it pickles a ``HistoryBuffer`` and numpy values in
its ``message_hub``) fails to load. Instead of switching weights-only loading off, which would let a
malicious ``.pth`` run code, we allow-list exactly the harmless types such checkpoints contain, and make
mmengine's local-file loader explain a refusal instead of advising to disable the protection.
"""
import functools
import importlib
import logging
import os.path as osp
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

import torch
from mmengine.hooks import Hook

from .user_errors import MissingFileError, UserError

# Types that mmengine-era checkpoints pickle besides tensors and builtins; none can run code on load.
_SAFE_GLOBAL_NAMES = (
    'mmengine.logging.history_buffer.HistoryBuffer',
    'numpy.ndarray',
    'numpy.dtype',
    'numpy.core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar',
    'numpy._core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar',
    'numpy.dtypes.Float64DType',
    'numpy.dtypes.Float32DType',
    'numpy.dtypes.Int64DType',
    'numpy.dtypes.Int32DType',
    'numpy.dtypes.BoolDType',
)


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stand-in for ``getattr`` while unpickling: resolves only HistoryBuffer's statistics methods.

    mmengine's ``HistoryBuffer`` pickles its statistics methods (``min``, ``max``, ``current``, ``mean`` and
    any registered ones) as ``getattr(HistoryBuffer, name)``. A general ``getattr`` would let a malicious
    pickle walk from an allowed object to anything, so every other use is refused.
    """
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'refusing getattr({owner!r}, {name!r}) in a checkpoint: only '
                                 'HistoryBuffer statistics methods are allowed')


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot or must not be loaded."""


def _resolve(name: str) -> Optional[Any]:
    module, _, attr = name.rpartition('.')
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None  # e.g. numpy.core vs numpy._core differ between numpy versions


def safe_globals() -> List[Any]:
    """The objects allow-listed for weights-only loading (those importable here)."""
    return [obj for obj in map(_resolve, _SAFE_GLOBAL_NAMES) if obj is not None]


def allow_checkpoint_globals() -> None:
    """Allow-list the types of mmengine-era checkpoints for ``torch.load(weights_only=True)``."""
    restricted_getattr = [(_history_buffer_method, f'{module}.getattr') for module in ('builtins', '__builtin__')]
    torch.serialization.add_safe_globals(safe_globals() + restricted_getattr)


# The first bytes of the two formats torch.save writes: a zip archive, and (before torch 1.6, or with
# _use_new_zipfile_serialization=False) a protocol-2 pickle of a magic number.
_ZIP_MAGIC = b'PK\x03\x04'
_LEGACY_MAGIC = b'\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.'
_TEXT_BYTES = frozenset(range(32, 127)) | frozenset(b'\t\n\r')


def _format_problem(filename: str) -> Optional[str]:
    """Why a file cannot be a torch.save checkpoint, judged from its first bytes; None if it may be one."""
    with open(filename, 'rb') as file:
        head = file.read(512)
    if not head:
        return 'it is empty'
    if head.startswith(_ZIP_MAGIC):
        return _zip_problem(filename)
    if head.startswith(_LEGACY_MAGIC):
        return None
    if head[0] == 0x80:  # the PROTO opcode that starts every binary pickle
        return 'it is a plain pickle (pickle.dump), not a torch.save file, and was not unpickled since ' \
               'unpickling can run code'
    if all(byte in _TEXT_BYTES for byte in head):
        return 'it is a text file'
    return 'it is in neither of the formats torch.save writes'


def _zip_problem(filename: str) -> Optional[str]:
    """Why a zip archive is not a torch.save file (which holds ``<folder>/data.pkl``); None if it may be one,
    or if it cannot be read as a zip (a truncated checkpoint: torch.load says so)."""
    try:
        with zipfile.ZipFile(filename) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(name == 'data.pkl' or name.endswith('/data.pkl') for name in names):
        return None
    return f'it is a zip archive of {len(names)} files without the data.pkl that torch.save writes'


def load_checkpoint_file(filename: str, map_location: Any = None) -> Any:
    """Load a local checkpoint with weights-only unpickling, with errors that say what to do.

    Raises:
        MissingFileError: ``filename`` does not exist (a ``FileNotFoundError``).
        CheckpointError: ``filename`` is a folder, is not a file written by ``torch.save``, is truncated or
            corrupt, or its pickle names a type outside the allow-list (it is refused: unpickling it could
            run code).
    """
    filename = osp.expanduser(filename)
    if osp.isdir(filename):
        raise CheckpointError(f'{filename} is a folder; give the path of a checkpoint file (.pth)')
    if not osp.isfile(filename):
        raise MissingFileError(f'{filename} can not be found.')
    problem = _format_problem(filename)
    if problem:
        raise CheckpointError(f'{filename} is not a PyTorch checkpoint: {problem}; give a file written by '
                              'torch.save (.pth)')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _refusal_reason(str(err))
        if reason is None:
            raise CheckpointError(f'{filename} is not a loadable checkpoint ({_first_line(err)}); '
                                  'it may be truncated or corrupt.') from None
        raise CheckpointError(
            f'refused to load {filename}: {reason}, so unpickling it could run arbitrary code. '
            'involution_mm keeps weights-only loading on. If you trust this file and the type is harmless, '
            'allow it with torch.serialization.add_safe_globals([...]) before loading.') from None
    except (RuntimeError, EOFError, ValueError, KeyError) as err:
        raise CheckpointError(f'{filename} is not a readable PyTorch checkpoint ({_first_line(err)}); '
                              'it may be truncated or corrupt.') from None


def _refusal_reason(message: str) -> Optional[str]:
    """Why the weights-only unpickler refused a file, or None when it failed for another reason."""
    # 'Unsupported global: GLOBAL x.y ...' or, for blocked modules, 'unsupported GLOBAL x.y whose module ...'
    found = re.search(r'unsupported (?:global: )?GLOBAL ([\w.]+)', message, re.IGNORECASE)
    if found:
        return f'its pickle names {found.group(1)}, which is not an allowed type'
    found = re.search(r'refusing (getattr\(.*?\))', message)
    return f'its pickle calls {found.group(1)}, which is not allowed' if found else None


def _first_line(err: Exception) -> str:
    """The gist of a loading error: the unpickler's own words when torch wraps them in advice (which
    includes turning weights-only loading off, the one thing not to do), else the first line."""
    text = str(err).strip()
    found = re.search(r'WeightsUnpickler error:\s*(.+)', text)
    if found:
        return found.group(1).strip()
    if not text or 'weights_only' in text:
        return type(err).__name__
    line = re.sub(r'^\[enforce fail at [^\]]*\]\s*\.?\s*', '', text.splitlines()[0])  # c10's source location
    return line.split('. ')[0]  # the first sentence; torch goes on with advice


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    """mmengine's loader for local paths: :func:`load_checkpoint_file`.

    mmengine logs ``Loads checkpoint by <loader name minus 'load_from_'> backend``, so this name makes it
    read ``Loads checkpoint by local_weights_only backend from path: X``.
    """
    return load_checkpoint_file(filename, map_location)


def install_safe_local_loader() -> None:
    """Route mmengine's local-file checkpoint loading through :func:`load_checkpoint_file`.

    mmengine keeps one loader per path prefix; the local one (prefix ``''``) only calls ``torch.load``.
    Ours does the same with weights-only loading stated explicitly and clearer errors, so the upstream
    ``tools/test.py``, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` all load safely.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)


# ----------------------------------------------------------------------------------------------------------
# Which weights of a model a checkpoint leaves unloaded.

# Buffers that a checkpoint may lack without harm: BN's batch counter (files from torch < 0.4.1 have none).
_OPTIONAL_KEY = re.compile(r'(^|\.)num_batches_tracked$')


@dataclass
class StateDictFit:
    """How a state dict fits a model: the model's keys it lacks, its keys the model lacks, and the keys
    whose tensors have another shape (``(key, shape in the file, shape in the model)``)."""
    total: int
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mis_shaped: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    @property
    def unloaded(self) -> List[str]:
        """The model's keys that loading leaves as they were: missing or of another shape."""
        return self.missing + [key for key, _, _ in self.mis_shaped]

    def describe_unloaded(self, shown: int = 3) -> str:
        """``'137 of the model's 318 tensors unloaded: 130 missing (a, b, c, ...), 7 of another shape (k: (4,
        2048) in the file, (1000, 2048) in the model, ...)'`` on one line."""

        def listing(items: List[str]) -> str:
            return ', '.join(items[:shown]) + (', ...' if len(items) > shown else '')

        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing ({listing(self.missing)})')
        if self.mis_shaped:
            parts.append(f'{len(self.mis_shaped)} of another shape (' + listing(
                [f'{key}: {tuple(got)} in the file, {tuple(want)} in the model' for key, got, want in self.mis_shaped])
                + ')')
        return f'{len(self.unloaded)} of the model\'s {self.total} tensors unloaded: ' + ', '.join(parts)


def state_dict_fit(model_state: Mapping[str, torch.Tensor], loaded: Mapping[str, Any]) -> StateDictFit:
    """Compare a loaded state dict with a model's (``model.state_dict()``), keys and shapes.

    A missing ``num_batches_tracked`` is not counted (loading keeps the model's counter, which only BN's
    momentum-free mode reads).
    """
    fit = StateDictFit(total=sum(1 for key in model_state if not _OPTIONAL_KEY.search(key)))
    for key, value in model_state.items():
        if key not in loaded:
            if not _OPTIONAL_KEY.search(key):
                fit.missing.append(key)
        elif isinstance(loaded[key], torch.Tensor) and loaded[key].shape != value.shape:
            fit.mis_shaped.append((key, tuple(loaded[key].shape), tuple(value.shape)))
    fit.unexpected = [key for key in loaded if key not in model_state]
    return fit


# The config key that lets a run load a checkpoint that leaves model weights unloaded.
PARTIAL_LOAD_KEY = 'allow_partial_checkpoint'


def checkpoint_state_dict(checkpoint: Any, revise_keys=((r'^module\.', ''), )) -> dict:
    """The state dict of a loaded checkpoint as mmengine's Runner applies it (``state_dict`` entry or the
    whole dict, with ``revise_keys`` applied: by default the ``module.`` prefix of DataParallel removed)."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    state = state if isinstance(state, dict) else {}
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, key): value for key, value in state.items()}
    return state


class CheckpointCoverageHook(Hook):
    """Refuses a checkpoint that leaves model weights unloaded in a Runner's ``load_checkpoint``.

    mmengine's Runner loads ``load_from``, the checkpoint of ``tools/test.py`` and ``--resume`` with
    ``strict=False``: keys the file lacks, and tensors of another shape, are skipped with a warning in the
    log, so testing with another model's checkpoint reports a plausible score of a half-random network.
    This hook runs at ``after_load_checkpoint`` (before the weights are copied into the model) and raises
    :class:`CheckpointError` naming how many and which weights would stay unloaded, unless the config sets
    ``allow_partial_checkpoint = True`` (fine-tuning with a new head), when it logs what is skipped.
    :func:`install_checkpoint_coverage_check` adds it to every Runner.
    """
    priority = 'LOWEST'  # after other hooks (e.g. EMAHook) changed the checkpoint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.logging import print_log
        from mmengine.model import is_model_wrapper
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        fit = state_dict_fit(model.state_dict(), checkpoint_state_dict(checkpoint))
        if not fit.unloaded:
            return
        source = getattr(runner, '_involution_mm_loading', 'the checkpoint')
        if runner.cfg.get(PARTIAL_LOAD_KEY, False):
            print_log(f'{source} is loaded partially ({PARTIAL_LOAD_KEY}=True): it leaves '
                      f'{fit.describe_unloaded()}', logger='current', level=logging.WARNING)
            return
        raise CheckpointError(
            f'{source} leaves {fit.describe_unloaded()}; it is probably the checkpoint of another model or '
            f'config. To load it anyway (fine-tuning with a new head), set {PARTIAL_LOAD_KEY}=True in the '
            f'config or pass --cfg-options {PARTIAL_LOAD_KEY}=True')


def install_checkpoint_coverage_check() -> None:
    """Make mmengine's ``Runner.load_checkpoint`` (test runs, ``load_from``, resume) run
    :class:`CheckpointCoverageHook`, registering it into each Runner the first time that loads a file."""
    from mmengine.runner import Runner
    original = Runner.load_checkpoint
    if getattr(original, '_involution_mm_checks_coverage', False):
        return

    @functools.wraps(original)
    def load_checkpoint(self, filename, *args, **kwargs):
        if not any(isinstance(hook, CheckpointCoverageHook) for hook in self._hooks):
            self.register_hook(CheckpointCoverageHook(), priority=CheckpointCoverageHook.priority)
        self._involution_mm_loading = filename
        try:
            return original(self, filename, *args, **kwargs)
        finally:
            del self._involution_mm_loading

    load_checkpoint._involution_mm_checks_coverage = True
    Runner.load_checkpoint = load_checkpoint
