"""Checks of layer and model arguments where they enter, reported in the user's terms.

One helper per kind of argument: an int in a range (:func:`check_int`), the channel count an argument gives
an involution (:func:`check_involution_channels`), a norm layer config (:func:`check_norm_cfg`). Each names
the class and the argument the user passed and says what to pass instead, in one line, so that a bad value
is not reported later from deep inside a layer it was handed on to.
"""
import math
from typing import Dict, Optional

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS

# Norm layers mmcv registers, named when a norm_cfg names an unknown type.
KNOWN_NORMS = ('BN', 'SyncBN', 'GN', 'LN', 'IN')


def is_int(value) -> bool:
    """Whether ``value`` is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(owner: str, name: str, value, low: Optional[int] = None, high: Optional[int] = None) -> None:
    """Refuse ``value`` unless it is an int in ``[low, high]``.

    Raises:
        TypeError: not an int (``RedNet frozen_stages must be an int, got 1.0 (float)``).
        ValueError: out of range (``RedNet base_channels must be at least 1, got 0``).
    """
    if not is_int(value):
        raise TypeError(f'{owner} {name} must be an int, got {value!r} ({type(value).__name__})')
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f'at least {low}' if high is None else f'at most {high}' if low is None else \
            f'from {low} to {high}'
        raise ValueError(f'{owner} {name} must be {bounds}, got {value}')


def check_involution_cfg(owner: str, involution_cfg, name: str = 'involution_cfg') -> None:
    """Refuse an ``involution_cfg`` that is not a dict of ``Involution`` arguments."""
    if not isinstance(involution_cfg, dict):
        raise TypeError(f'{owner} {name} must be a dict of Involution arguments, e.g. dict(kernel_size=7), got '
                        f'{involution_cfg!r}')
    if 'channels' in involution_cfg:
        raise ValueError(f'{owner} {name} must not set channels: {owner} gives each involution its channels')


def check_involution_channels(owner: str, name: str, value: int, where: str, scale: int = 1,
                              involution_cfg: Optional[dict] = None) -> None:
    """Refuse an argument that gives an involution a channel count it cannot take.

    An involution needs channels divisible by its ``group_channels`` and its ``reduction_ratio``. The
    argument ``name=value`` of ``owner`` gives the involution at ``where`` ``value // scale`` channels
    (``scale`` is 2 for RedNet's ``stem_channels``, whose stem involution has half of them).

    Args:
        owner (str): The class the user configured, e.g. ``'InvolutionFPN'``.
        name (str): The argument's name, e.g. ``'out_channels'``.
        value (int): Its value (an int: check the type first).
        where (str): Which involutions get the channels, e.g. ``'its output involutions (fpn_convs)'``.
        scale (int): The argument's value per involution channel. Defaults to 1.
        involution_cfg (dict, optional): The involutions' other arguments; their ``group_channels`` and
            ``reduction_ratio`` (defaults 16 and 4) set the step. Values that are not positive ints are left
            to the ``Involution`` constructor to refuse.

    Raises:
        ValueError: e.g. ``InvolutionFPN out_channels=100 gives its output involutions (fpn_convs) 100
            channels, but an involution needs a multiple of 16 (group_channels=16, reduction_ratio=4); pass
            out_channels=96 or 112``.
    """
    cfg = involution_cfg or {}
    group_channels, reduction_ratio = cfg.get('group_channels', 16), cfg.get('reduction_ratio', 4)
    if not (is_int(group_channels) and is_int(reduction_ratio) and group_channels > 0 and reduction_ratio > 0):
        return
    step = group_channels * reduction_ratio // math.gcd(group_channels, reduction_ratio)
    channels = value // scale
    if channels >= step and channels % step == 0:
        return
    below, above = channels // step * step * scale, (channels // step + 1) * step * scale
    choices = f'{below} or {above}' if below else f'{above} (or another multiple of {step * scale})'
    raise ValueError(f'{owner} {name}={value} gives {where} {channels} channels, but an involution needs a '
                     f'multiple of {step} (group_channels={group_channels}, reduction_ratio={reduction_ratio}); '
                     f'pass {name}={choices}')


def check_norm_cfg(owner: str, norm_cfg, channels: Dict[str, int], name: str = 'norm_cfg',
                   optional: bool = False) -> None:
    """Refuse a norm layer config that cannot build every norm layer ``owner`` would build from it.

    Args:
        owner (str): The class the user configured, e.g. ``'RedNet'``.
        norm_cfg (dict | None): The config as given.
        channels (dict[str, int]): Where norms are built from it (a layer name the user can find in
            ``print(model)``, with a short description) and how many channels each normalises, in the
            order of the network.
        name (str): The argument's name. Defaults to 'norm_cfg'.
        optional (bool): Whether None (no norm layers) is allowed. Defaults to False.

    Raises:
        TypeError: ``norm_cfg`` is not a dict with a ``type``, or None where norms are needed.
        ValueError: an unknown type, GN without ``num_groups``, or a norm that cannot take the channels of a
            layer (``RedNet norm_cfg={'type': 'GN', 'num_groups': 32} cannot normalise the 8 channels of
            stem.1.conv1 (...): ...; pass num_groups=8 ...``).
    """
    if norm_cfg is None:
        if optional:
            return
        raise TypeError(f"{owner} needs norm layers: {name}=None is not supported; pass e.g. "
                        f"{name}=dict(type='BN') (or dict(type='GN', num_groups=8))")
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise TypeError(f"{owner} {name} must be a dict with a 'type', e.g. dict(type='BN'), got {norm_cfg!r}")
    kind = norm_cfg['type']
    if isinstance(kind, str):
        with MODELS.switch_scope_and_registry(None) as registry:  # where mmcv's build_norm_layer looks
            layer = registry.get(kind)
        if layer is None:
            raise ValueError(f'{owner} {name} type {kind!r} is not a registered norm layer; use one of '
                             f'{", ".join(map(repr, KNOWN_NORMS))} (GN with num_groups)')
    else:
        layer = kind
    if layer is nn.GroupNorm and 'num_groups' not in norm_cfg:
        raise ValueError(f"{owner} {name} GN needs num_groups: pass {name}=dict(type='GN', num_groups=N) with N "
                         f'dividing the channels of every normalised layer{_groups_hint(channels)}')
    built = set()
    for where, count in channels.items():
        if count in built:
            continue
        try:
            build_norm_layer(norm_cfg, count)
        except (ValueError, TypeError, AssertionError, KeyError, RuntimeError) as err:
            hint = _groups_hint(channels) if layer is nn.GroupNorm else ''
            raise ValueError(f'{owner} {name}={norm_cfg} cannot normalise the {count} channels of {where}: '
                             f'{_message(err)}{hint}') from None
        built.add(count)


def _groups_hint(channels: Dict[str, int]) -> str:
    common = math.gcd(*channels.values()) if channels else 0
    return f' (here N must divide {common}, e.g. num_groups={common})' if common else ''


def _message(err: BaseException) -> str:
    text = str(err.args[0] if isinstance(err, KeyError) and err.args else err).strip()
    return text.splitlines()[0] if text else type(err).__name__
