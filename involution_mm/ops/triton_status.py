"""Whether Triton kernels can run on a device, decided once per device by a first tiny launch.

Used by the fused ops: each holds its kernels' module in a :class:`TritonKernels`, with its own probe launch.
Nothing here imports Triton; the kernels' module does, when it is first used.
"""
import importlib
import os
from typing import Callable, Dict, Tuple

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


class TritonKernels:
    """A module of Triton kernels, imported on first use (importing it imports Triton), and whether they run
    on each device: decided by ``probe(device)``, a tiny launch, once per device (:func:`probe_triton`).

    Args:
        module (str): The kernels' module, e.g. ``'involution_mm.ops.triton.simam'``.
        probe (Callable[[torch.device], object]): A tiny launch of the kernels on a device.
        min_capability (tuple[int, int]): The oldest CUDA compute capability they run on. Defaults to (7, 5).
    """

    def __init__(self, module: str, probe: Callable[[torch.device], object],
                 min_capability: Tuple[int, int] = (7, 5)) -> None:
        self.module_name = module
        self.probe = probe
        self.min_capability = min_capability
        self.statuses: Dict[Tuple[str, int], Tuple[bool, str]] = {}  # device_key -> (runs, why not)
        self._module = None

    @property
    def module(self):
        """The kernels' module."""
        if self._module is None:
            self._module = importlib.import_module(self.module_name)
        return self._module

    def status(self, device: torch.device) -> Tuple[bool, str]:
        """Whether the kernels run on ``device``, and why not."""
        key = device_key(device)
        if key not in self.statuses:
            self.statuses[key] = probe_triton(device, self.probe, self.min_capability)
        return self.statuses[key]
