"""SimAM placed inside upstream backbones as in the paper, without copying their code.

SimAM has no parameters, so it can be added to an upstream ResNet, ResNeXt or MobileNetV2 after it is built:
the state-dict keys stay exactly the upstream ones and only the forward pass changes. The paper puts SimAM
right after a convolution and before the norm that follows it; here a forward hook of that convolution
calls whatever module the block holds as ``simam`` at that moment, so the blocks' own ``forward`` is reused
unchanged and the module tree is what runs (replace or delete ``block.simam`` and the forward follows).
The framework-specific classes (which subclass mmpretrain's, mmdet's or mmseg's backbones) live in the
adapters ``cls/``, ``det/`` and ``seg/``.
"""
from typing import Any, List, Tuple

import torch
import torch.nn as nn

from ..layers import SimAM
from .pretrained import pretrained_loaded_last


def insert_simam_after(owner: nn.Module, conv_name: str, e_lambda: float) -> SimAM:
    """Apply SimAM to the output of ``owner.<conv_name>``, before whatever ``owner`` does with it next.

    The SimAM module becomes the child ``owner.simam``, listed right after the convolution. A forward hook
    of the convolution (:class:`SimAMSlot`) calls ``owner.simam`` as it is at each call: assigning another
    module to ``owner.simam`` runs that one, deleting it (or setting it to None) runs nothing. The hook
    sits on the convolution rather than on the following norm, so it survives the norms being replaced
    (e.g. by SyncBN conversion); a forward pre-hook of ``owner`` moves it onto a convolution assigned to
    ``owner.<conv_name>`` later.

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
    if not _has_slot(owner, conv_name):  # a block whose simam was deleted keeps its slot
        slot = SimAMSlot(owner, conv_name)
        owner.register_forward_pre_hook(slot.follow_conv)
        slot.follow_conv(owner, ())
    return simam


def _has_slot(owner: nn.Module, conv_name: str) -> bool:
    slots = (getattr(hook, '__self__', None) for hook in owner._forward_pre_hooks.values())
    return any(isinstance(slot, SimAMSlot) and slot.conv_name == conv_name for slot in slots)


class SimAMSlot:
    """The forward hook that runs ``owner.simam`` on the output of ``owner.<conv_name>``.

    It looks the module up at every call instead of holding it, so the module tree is what runs. It is a
    plain object (not a closure), so ``copy.deepcopy`` and pickling of the model carry it along, pointing
    at the copied block.

    Args:
        owner (nn.Module): The block holding the convolution and ``simam``.
        conv_name (str): Attribute name of the convolution in ``owner``.
    """

    def __init__(self, owner: nn.Module, conv_name: str) -> None:
        self.owner = owner
        self.conv_name = conv_name

    def __call__(self, conv: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if conv is not getattr(self.owner, self.conv_name):  # a convolution the block no longer uses
            return output
        simam = self.owner._modules.get('simam')
        return output if simam is None else simam(output)

    def follow_conv(self, owner: nn.Module, args: Tuple[Any, ...]) -> None:
        """Forward pre-hook of ``owner``: make sure its current convolution carries this hook, and only this
        one (a convolution copied from a block brings that block's slot along)."""
        conv = getattr(owner, self.conv_name)
        hooks = conv._forward_hooks
        if not any(hook is self for hook in hooks.values()):
            for key in [key for key, hook in hooks.items() if isinstance(hook, SimAMSlot)]:
                del hooks[key]
            conv.register_forward_hook(self)


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

    def init_weights(self) -> None:
        """The upstream initialisation, then the ``Pretrained`` entries of ``init_cfg`` in dict or list form
        (upstream mmpretrain skips ``zero_init_residual`` for the dict form only)."""
        with pretrained_loaded_last(self):
            super().init_weights()


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
