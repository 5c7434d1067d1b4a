"""Safe checkpoint loading under torch's weights-only unpickler.

torch >= 2.6 loads checkpoints with ``weights_only=True``, and mmengine 0.10.7 calls ``torch.load`` without
the flag, so a checkpoint saved by mmengine's own Runner (it pickles a ``HistoryBuffer`` and numpy values in
its ``message_hub``) fails to load. Instead of switching weights-only loading off, which would let a
malicious ``.pth`` run code, we allow-list exactly the harmless types such checkpoints contain, and make
mmengine's local-file loader explain a refusal instead of advising to disable the protection.
"""
import importlib
import os.path as osp
import pickle
import re
from typing import Any, List, Optional

import torch

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
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_MAGIC):
        return None
    if head[0] == 0x80:  # the PROTO opcode that starts every binary pickle
        return 'it is a plain pickle (pickle.dump), not a torch.save file, and was not unpickled since ' \
               'unpickling can run code'
    if all(byte in _TEXT_BYTES for byte in head):
        return 'it is a text file'
    return 'it is in neither of the formats torch.save writes'


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


def install_safe_local_loader() -> None:
    """Route mmengine's local-file checkpoint loading through :func:`load_checkpoint_file`.

    mmengine keeps one loader per path prefix; the local one (prefix ``''``) only calls ``torch.load``.
    Ours does the same with weights-only loading stated explicitly and clearer errors, so the upstream
    ``tools/test.py``, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` all load safely.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)
