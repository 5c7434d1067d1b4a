"""The involution operator: torch only, no OpenMMLab imports."""
from .involution import available_backends, involution, register_backend, select_backend

__all__ = ['involution', 'available_backends', 'register_backend', 'select_backend']
