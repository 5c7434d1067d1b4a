"""SimAM networks for mmpretrain, whose backbones have no plugin hook: the upstream ResNet, ResNeXt and
MobileNetV2 with SimAM where the paper puts it. State-dict keys and parameter counts are the upstream ones."""
from typing import Any

from mmpretrain.models.backbones import MobileNetV2, ResNet, ResNeXt

from ..backbones import SimAMResNetMixin, insert_simam_in_inverted_residuals
from ..backbones.pretrained import pretrained_loaded_last


class SimAMResNet(SimAMResNetMixin, ResNet):
    """mmpretrain's ResNet with SimAM after conv2 and before norm2 in every BasicBlock and Bottleneck.

    Args:
        depth (int): Network depth, from {18, 34, 50, 101, 152}.
        e_lambda (float): The lambda of SimAM. Defaults to 0.1 (the paper's ImageNet models).
        **kwargs: The other arguments of ``mmpretrain.models.ResNet``, ``init_cfg`` included.
    """


class SimAMResNeXt(SimAMResNetMixin, ResNeXt):
    """mmpretrain's ResNeXt with SimAM after the grouped conv2 and before norm2 in every Bottleneck.

    Args:
        depth (int): Network depth, from {50, 101, 152}.
        e_lambda (float): The lambda of SimAM. Defaults to 0.1 (the paper's ImageNet models).
        **kwargs: The other arguments of ``mmpretrain.models.ResNeXt`` (``groups``, ``width_per_group``,
            ..., ``init_cfg``).
    """


class SimAMMobileNetV2(MobileNetV2):
    """mmpretrain's MobileNetV2 with SimAM after the depthwise conv (before its BN) of every inverted residual.

    This is the placement of the official SimAM MobileNetV2, the one its released weights were trained
    with: the stem, the 1x1 expansion and projection convs and the last 1x1 conv have no SimAM.

    Args:
        e_lambda (float): The lambda of SimAM. Defaults to 0.1 (the paper's ImageNet models).
        **kwargs: The arguments of ``mmpretrain.models.MobileNetV2`` (``widen_factor``, ``out_indices``,
            ..., ``init_cfg``).
    """

    def __init__(self, e_lambda: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.e_lambda = e_lambda
        insert_simam_in_inverted_residuals([getattr(self, name) for name in self.layers], e_lambda)

    def init_weights(self) -> None:
        """The upstream initialisation, then the ``Pretrained`` entries of ``init_cfg``, checked."""
        with pretrained_loaded_last(self):
            super().init_weights()
