"""Framework-neutral backbones on mmengine's BaseModule."""
from .rednet import RedNet, RedNetBottleneck

__all__ = ['RedNet', 'RedNetBottleneck']
