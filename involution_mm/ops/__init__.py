"""The involution operator: torch only, no OpenMMLab imports."""
from .backends import Backend, available_backends, register_backend, select_backend
from .involution import involution
from .simam import simam

__all__ = ['involution', 'available_backends', 'register_backend', 'select_backend', 'Backend', 'simam']
