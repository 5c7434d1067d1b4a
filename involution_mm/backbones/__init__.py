"""Framework-neutral backbones on mmengine's BaseModule."""
from .rednet import RedNet, RedNetBottleneck
from .simam import SimAMResNetMixin, insert_simam_after, insert_simam_in_inverted_residuals

__all__ = [
    'RedNet', 'RedNetBottleneck', 'SimAMResNetMixin', 'insert_simam_after', 'insert_simam_in_inverted_residuals'
]
