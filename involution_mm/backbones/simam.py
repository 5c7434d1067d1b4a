"""SimAM placed inside upstream backbones as in the paper, without copying their code.

SimAM has no parameters, so it can be added to an upstream ResNet, ResNeXt or MobileNetV2 after it is built:
the state-dict keys stay exactly the upstream ones and only the forward pass changes. The paper puts SimAM
right after a convolution and before the norm that follows it; here it runs as a forward hook of that
convolution, so the blocks' own ``forward`` is reused unchanged. The framework-specific classes (which
subclass mmpretrain's, mmdet's or mmseg's backbones) live in the adapters ``cls/``, ``det/`` and ``seg/``.
"""
from typing import Any, List

import torch.nn as nn

from ..layers import SimAM


def insert_simam_after(owner: nn.Module, conv_name: str, e_lambda: float) -> SimAM:
    """Apply SimAM to the output of ``owner.<conv_name>``, before whatever ``owner`` does with it next.

    The SimAM module becomes the child ``owner.simam``, listed right after the convolution, and runs as a
    forward hook of the convolution. The hook sits on the convolution rather than on the following norm,
    so it survives the norms being replaced (e.g. by SyncBN conversion).

    Note:
        A convolution followed by SimAM can no longer be fused with the norm after it
        (``mmcv.cnn.fuse_conv_bn``): SimAM is nonlinear and sits between them.

    Args:
        owner (nn.Module): The block holding the convolution.
        conv_name (str): Attribute name of the convolution in ``owner``.
        e_lambda (float): The lambda of SimAM.

    Returns:
        SimAM: The inserted module.
    """
    if 'simam' in owner._modules:
        raise ValueError(f'{type(owner).__name__} already has a `simam` module: SimAM would run twice. The '
                         f'SimAM backbones place it after {conv_name} themselves; drop the SimAM plugin.')
    conv = getattr(owner, conv_name)
    simam = SimAM(in_channels=getattr(conv, 'out_channels', None), e_lambda=e_lambda)
    # Rebuild the children in place so that `simam` is listed where it runs, right after the conv.
    children = list(owner._modules.items())
    owner._modules.clear()
    for name, child in children:
        owner._modules[name] = child
        if name == conv_name:
            owner._modules['simam'] = simam
    conv.register_forward_hook(simam.forward_hook)
    return simam


class SimAMResNetMixin:
    """Mixin that puts SimAM after conv2 (before norm2) of every block of an upstream ResNet or ResNeXt.

    Use it first in the bases of a subclass of an mmpretrain, mmdet or mmseg ``ResNet``/``ResNeXt``
    (``class SimAMResNet(SimAMResNetMixin, ResNet)``); it relies on their ``res_layers`` (names of the
    stages) and on every block calling its 3x3 convolution ``conv2``. That is the paper's placement for
    both BasicBlock and Bottleneck: ``conv2 -> SimAM -> norm2``.

    Args:
        depth (int): Depth of the ResNet, passed on with all other keyword arguments.
        e_lambda (float): The lambda of SimAM. Defaults to 0.1, the value of the paper's ImageNet and
            COCO models.
    """

    def __init__(self, depth: int, e_lambda: float = 0.1, **kwargs: Any) -> None:
        super().__init__(depth=depth, **kwargs)
        self.e_lambda = e_lambda
        for layer_name in self.res_layers:
            for block in getattr(self, layer_name):
                insert_simam_after(block, 'conv2', e_lambda)


def insert_simam_in_inverted_residuals(layers: List[nn.Module], e_lambda: float) -> int:
    """Put SimAM after the depthwise convolution (before its norm) of every MobileNetV2 inverted residual.

    This follows the official SimAM MobileNetV2: only the depthwise conv-BN-ReLU6 of each inverted residual
    block gets SimAM; the stem, the 1x1 expansion and projection convolutions and the last 1x1 conv do not.

    Args:
        layers (list[nn.Module]): The stages. Every block of a stage that is an ``nn.Sequential`` must hold
            exactly one depthwise ConvModule in its ``conv``; other stages (the last 1x1 conv) are skipped.
        e_lambda (float): The lambda of SimAM.

    Returns:
        int: The number of SimAM modules inserted.
    """
    inserted = 0
    for layer in layers:
        if not isinstance(layer, nn.Sequential):  # e.g. MobileNetV2's last 1x1 conv
            continue
        for block in layer:
            depthwise = [m for m in getattr(block, 'conv', ()) if _is_depthwise_conv_module(m)]
            if len(depthwise) != 1:
                raise ValueError(f'expected one depthwise ConvModule in the inverted residual {block}, '
                                 f'found {len(depthwise)}')
            insert_simam_after(depthwise[0], 'conv', e_lambda)
            inserted += 1
    return inserted


def _is_depthwise_conv_module(module: nn.Module) -> bool:
    conv = getattr(module, 'conv', None)
    return isinstance(conv, nn.Conv2d) and conv.groups > 1 and conv.groups == conv.in_channels == \
        conv.out_channels
