"""The paper's SimAM-ResNet as an mmseg backbone: SimAM after conv2 and before norm2.

mmseg's own ResNet can take SimAM through ``plugins`` at ``after_conv2``, but its Bottleneck runs those
plugins after conv2 -> norm2 -> ReLU and its BasicBlock takes no plugins; see docs/simam.md.
"""
from mmseg.models.backbones import ResNet

from ..backbones import SimAMResNetMixin


class SimAMResNet(SimAMResNetMixin, ResNet):
    """mmseg's ResNet with SimAM after conv2 and before norm2 in every BasicBlock and Bottleneck.

    State-dict keys are those of mmseg's ResNet (with ``deep_stem=True`` that is ResNetV1c's stem).

    Args:
        depth (int): Network depth, from {18, 34, 50, 101, 152}.
        e_lambda (float): The lambda of SimAM. Defaults to 0.1 (the paper's ImageNet and COCO models).
        **kwargs: The other arguments of ``mmseg.models.ResNet``, ``init_cfg`` included; ``plugins`` must
            not add another SimAM.
    """
