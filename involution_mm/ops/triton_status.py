"""Whether Triton kernels can run on a device, decided once per device by a first tiny launch.

Used by the fused ops: each passes its own probe launch, and keeps the answer in its own dictionary. Nothing
here imports Triton; the probe does, when it runs.
"""
import os
from typing import Callable, Tuple

import torch


def device_key(device: torch.device) -> Tuple[str, int]:
    """A hashable name of ``device`` (index -1 where it has none)."""
    return device.type, -1 if device.index is None else device.index


def probe_triton(device: torch.device, launch: Callable[[torch.device], object],
                 min_capability: Tuple[int, int] = (7, 5)) -> Tuple[bool, str]:
    """``(True, ...)`` when ``launch(device)`` (a tiny kernel launch) works there, else ``(False, why)``.

    CUDA devices need compute capability ``min_capability`` or newer; CPU tensors run Triton kernels only under
    its interpreter (``TRITON_INTERPRET=1``, for tests). While a CUDA graph is being captured nothing is
    launched, and a device that passes the other checks counts as usable.
    """
    if device.type == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1':
        return False, 'CPU tensors run the Triton kernels only under TRITON_INTERPRET=1 (for tests)'
    if device.type == 'cpu' and not _interpreter_defined_triton_language():
        return False, ('Triton was imported before TRITON_INTERPRET=1 was set, so its standard library cannot run '
                       'in the interpreter; set it before anything imports Triton')
    if device.type not in ('cpu', 'cuda'):
        return False, f'no Triton kernels for {device.type} tensors'
    if device.type == 'cuda' and torch.cuda.get_device_capability(device) < min_capability:
        return False, (f'{torch.cuda.get_device_name(device)} is older than compute capability '
                       f'{min_capability[0]}.{min_capability[1]}')
    try:
        if not (device.type == 'cuda' and torch.cuda.is_current_stream_capturing()):
            launch(device)
    except Exception as error:  # Triton missing, or it cannot compile or launch here
        return False, f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'.strip()
    return True, 'Triton works on this device'


def _interpreter_defined_triton_language() -> bool:
    """Whether Triton's standard library (``tl.sum``, ``tl.cdiv``, ...) was defined for its interpreter, which
    happens only when ``TRITON_INTERPRET=1`` is set before Triton's first import (True where Triton is missing:
    the launch then says so)."""
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return True
    return isinstance(tl.standard.sum, InterpretedFunction)
