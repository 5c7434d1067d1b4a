"""CPU backend: one-pass C++ kernels (``csrc/cpu/``) for the forward pass and both gradients.

Each output's taps are accumulated in registers, vectorized along columns, with the accumulators of a block
of a group's channels (which share every kernel value) in registers; work is split over batch, groups and
row blocks on torch's intra-op threads. The kernels are compiled for AVX-512, AVX2+FMA and a generic target
in one binary that picks the widest this CPU runs. float32 and float64 run natively; float16 and bfloat16
are computed in float32 and rounded once. Inputs may have any strides; outputs take the layouts the
PyTorch backend gives.

The extension is built by the package's install step (``pip install --no-deps --no-build-isolation -e .``,
which ``tools/setup_env.sh`` runs); without it CPU tensors use the PyTorch backend, and the first 'auto'
choice on a CPU tensor logs why, with that command.
"""
from typing import Optional, Tuple

import torch

from .geometry import Geometry

BUILD_COMMAND = 'pip install --no-deps --no-build-isolation -e . (in the repository; tools/setup_env.sh runs it)'
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _load() -> Tuple[Optional[object], Optional[str]]:
    """``(module, None)``, or ``(None, why it does not load)``."""
    try:
        from . import _involution_cpu
    except ImportError as error:  # not built, or built against another torch (undefined symbols)
        return None, f'{type(error).__name__}: {error}'
    return _involution_cpu, None


_MODULE, LOAD_ERROR = _load()


def kernels_module():
    """The compiled module (``forward``, ``grad_input``, ``grad_weight``, ``isa``, ``isas``, ``set_isa``), or
    None when it is not built."""
    return _MODULE


def cpu_usable(x: torch.Tensor) -> Tuple[bool, str]:
    """Whether the CPU kernels can run on ``x``, and why (for the dispatcher's log line and errors)."""
    if x.device.type != 'cpu':
        return False, f'it runs on CPU tensors only, and this one is on {x.device.type}'
    if _MODULE is None:
        return False, f'the compiled CPU kernels are not built or do not load ({LOAD_ERROR}); build them with {BUILD_COMMAND}'
    if x.dtype not in SUPPORTED_DTYPES:
        return False, f'{x.dtype} is not supported; it takes {[str(t) for t in SUPPORTED_DTYPES]}'
    return True, f'the compiled CPU kernels run ({_MODULE.isa()} instructions)'


def _config(geo: Geometry) -> tuple:
    return geo.stride + geo.padding + geo.dilation


def cpu_forward(x: torch.Tensor, weight: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The involution of ``x`` with ``weight`` (see ``pytorch_backend.involution_forward``)."""
    return _MODULE.forward(x, weight, _config(geo))


def cpu_grad_input(grad_out: torch.Tensor, weight: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The gradient for ``x``, in ``grad_out``'s layout."""
    return _MODULE.grad_input(grad_out, weight, geo.in_size[0], geo.in_size[1], _config(geo))


def cpu_grad_weight(grad_out: torch.Tensor, x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The gradient for the kernels (contiguous, in ``x``'s dtype)."""
    return _MODULE.grad_weight(grad_out, x, geo.groups, geo.kernel[0], geo.kernel[1], _config(geo))
