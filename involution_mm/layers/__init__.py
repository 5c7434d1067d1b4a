"""Building blocks on torch and mmcv.cnn; no task framework imports."""
from .involution import Involution
from .simam import SimAM

__all__ = ['Involution', 'SimAM']
