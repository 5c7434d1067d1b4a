"""The operators: involution (CuPy kernels or PyTorch), the fused involution layer and SimAM (Triton kernels
on CUDA, PyTorch elsewhere), all registered with ``torch.library``. Torch only, no OpenMMLab imports."""
from .backends import Backend, available_backends, register_backend, select_backend
from .fused_involution import fused_involution
from .involution import involution
from .simam import simam

__all__ = ['involution', 'fused_involution', 'simam', 'available_backends', 'register_backend', 'select_backend',
           'Backend']
