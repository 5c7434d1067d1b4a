"""Whether Triton kernels can start on a device at all: Triton installed, a GPU new enough, or CPU tensors
under Triton's interpreter. Nothing is launched here: whether the kernels compute the right numbers is the
self-check's business (``self_check.py``), which runs only where this says they can start.

Used by the fused ops: each holds its kernels' module in a :class:`TritonKernels`. Nothing here imports
Triton; the kernels' module does, when it is first used.
"""
import importlib
import importlib.util
import os
from typing import Dict, Tuple

import torch

from .self_check import device_key


def triton_prerequisite(device: torch.device, min_capability: Tuple[int, int] = (7, 5)) -> Tuple[bool, str]:
    """``(True, ...)`` when Triton kernels can start on ``device``, else ``(False, why)``.

    CUDA devices need Triton and compute capability ``min_capability`` or newer; CPU tensors run Triton kernels
    only under its interpreter (``TRITON_INTERPRET=1``, for tests).
    """
    if device.type == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1':
        return False, 'CPU tensors run the Triton kernels only under TRITON_INTERPRET=1 (for tests)'
    if device.type not in ('cpu', 'cuda'):
        return False, f'no Triton kernels for {device.type} tensors'
    if importlib.util.find_spec('triton') is None:
        return False, 'Triton is not installed (it comes with the CUDA builds of torch)'
    if device.type == 'cpu' and not _interpreter_defined_triton_language():
        return False, ('Triton was imported before TRITON_INTERPRET=1 was set, so its standard library cannot run '
                       'in the interpreter; set it before anything imports Triton')
    if device.type == 'cuda' and torch.cuda.get_device_capability(device) < min_capability:
        return False, (f'{torch.cuda.get_device_name(device)} is older than compute capability '
                       f'{min_capability[0]}.{min_capability[1]}')
    return True, 'Triton can start on this device'


def _interpreter_defined_triton_language() -> bool:
    """Whether Triton's standard library (``tl.sum``, ``tl.cdiv``, ...) was defined for its interpreter, which
    happens only when ``TRITON_INTERPRET=1`` is set before Triton's first import."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(tl.standard.sum, InterpretedFunction)


class TritonKernels:
    """A module of Triton kernels, imported on first use (importing it imports Triton), and whether they can
    start on each device (:func:`triton_prerequisite`, once per device).

    Args:
        module (str): The kernels' module, e.g. ``'involution_mm.ops.triton.simam'``.
        min_capability (tuple[int, int]): The oldest CUDA compute capability they run on. Defaults to (7, 5).
    """

    def __init__(self, module: str, min_capability: Tuple[int, int] = (7, 5)) -> None:
        self.module_name = module
        self.min_capability = min_capability
        self.statuses: Dict[Tuple[str, int], Tuple[bool, str]] = {}  # device_key -> (can start, why not)
        self._module = None

    @property
    def module(self):
        """The kernels' module."""
        if self._module is None:
            self._module = importlib.import_module(self.module_name)
        return self._module

    def status(self, device: torch.device) -> Tuple[bool, str]:
        """Whether the kernels can start on ``device``, and why not."""
        key = device_key(device)
        if key not in self.statuses:
            self.statuses[key] = triton_prerequisite(device, self.min_capability)
        return self.statuses[key]
