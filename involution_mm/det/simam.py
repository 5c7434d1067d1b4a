"""The paper's SimAM-ResNet as an mmdet backbone: SimAM after conv2 and before norm2.

mmdet's own ResNet can take SimAM through ``plugins`` at ``after_conv2``, but its Bottleneck runs those
plugins after conv2 -> norm2 -> ReLU and its BasicBlock takes no plugins; see docs/simam.md.
"""
from mmdet.models.backbones import ResNet

from ..backbones import SimAMResNetMixin


class SimAMResNet(SimAMResNetMixin, ResNet):
    """mmdet's ResNet with SimAM after conv2 and before norm2 in every BasicBlock and Bottleneck.

    This is the placement of the official SimAM detectors, whose backbones start from the released ImageNet
    SimAM-ResNets. State-dict keys are those of mmdet's ResNet.

    Args:
        depth (int): Network depth, from {18, 34, 50, 101, 152}.
        e_lambda (float): The lambda of SimAM. Defaults to 0.1 (the paper's COCO models).
        **kwargs: The other arguments of ``mmdet.models.ResNet``, ``init_cfg`` included; ``plugins`` must
            not add another SimAM.
    """
