"""Building blocks on torch and mmcv.cnn; no task framework imports."""
from .involution import Involution

__all__ = ['Involution']
