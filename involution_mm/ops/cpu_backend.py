"""CPU backend: one-pass C++ kernels (``csrc/cpu/``) for the forward pass and both gradients.

Each output's taps are accumulated in registers, vectorized along columns, with the accumulators of a block
of a group's channels (which share every kernel value) in registers; work is split over batch, groups and
row blocks on torch's intra-op threads. The kernels are compiled for AVX-512, AVX2+FMA and a generic target
in one binary that picks the widest this CPU runs. float32 and float64 run natively; float16 and bfloat16
are computed in float32 and rounded once. Inputs may have any strides; outputs take the layouts the
PyTorch backend gives.

The fused layer (``fused_involution``'s ``'cpu'`` backend) has a forward kernel of its own that generates
each row's kernels from the reduced features in cache (``cpu_fused_forward``); its gradients regenerate the
kernels with the span conv and run the op's two gradient kernels (``cpu_fused_grad_*``).

The extension is built by the package's install step (``pip install --no-deps --no-build-isolation -e .``,
which ``tools/setup_env.sh`` runs); without it CPU tensors use the PyTorch backend, and the first 'auto'
choice on a CPU tensor logs why, with that command.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .fused_reference import computable, fused_geometry
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


def cpu_runs(x: torch.Tensor) -> bool:
    """``cpu_usable(x)[0]`` without the reason: plain checks that ``torch.compile`` traces."""
    return x.device.type == 'cpu' and _MODULE is not None and x.dtype in SUPPORTED_DTYPES


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


# The fused layer: out = involution(x, conv1x1(r, weight, bias)), geometry (kernel_size, stride, padding,
# dilation); half types are computed in float32 (as ``fused_reference`` does) and rounded once. The span conv
# and its transpose run as F.conv2d, not as the reference's einsum (oneDNN: 2.1 against 7.6 ms for grad_r at
# RedNet-50's first stage, batch 8).


def _kernels(r: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """The span conv's output as the op's kernels ``(B, G, K, K, Ho, Wo)``."""
    kernels = F.conv2d(computable(r), computable(weight)[:, :, None, None], computable(bias))
    return kernels.view(geo.batch, geo.groups, *geo.kernel, *geo.out_size)


def cpu_fused_forward(x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      kernel_size: int, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """The fused layer's output in the layout of ``x``; ``weight`` is ``(G * K * K, R)``."""
    config = (stride, ) * 2 + (padding, ) * 2 + (dilation, ) * 2
    return _MODULE.fused_forward(x, r, weight, bias, kernel_size, config)


def cpu_fused_grad_input(grad_out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor, *geometry: int) -> torch.Tensor:
    """The gradient for ``x``, in ``grad_out``'s layout and ``x``'s dtype."""
    geo = fused_geometry(x, r, weight, *geometry)
    return cpu_grad_input(computable(grad_out), _kernels(r, weight, bias, geo), geo).to(x.dtype)


def cpu_fused_grad_kernels(grad_out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, weight: torch.Tensor,
                           *geometry: int) -> tuple:
    """The gradients for ``r`` (in ``r``'s layout), ``weight`` and ``bias``."""
    geo = fused_geometry(x, r, weight, *geometry)
    grad_kernels = cpu_grad_weight(computable(grad_out), computable(x), geo).view(geo.batch, -1, *geo.out_size)
    grad_r = F.conv2d(grad_kernels, computable(weight).t()[:, :, None, None])
    grad_weight = torch.einsum('bkhw,brhw->kr', grad_kernels, computable(r))
    return grad_r.to(r.dtype), grad_weight.to(weight.dtype), grad_kernels.sum((0, 2, 3)).to(weight.dtype)
