"""Framework-neutral necks (mmcv + mmengine only), registered by the det and seg adapters."""
from .involution_fpn import InvolutionFPN

__all__ = ['InvolutionFPN']
