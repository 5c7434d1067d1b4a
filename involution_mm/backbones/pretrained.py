"""Backbone initialisation with a ``Pretrained`` ``init_cfg`` that always initialises and says what it loaded.

mmengine's ``BaseModule.init_weights`` treats a ``Pretrained`` entry as replacing the default initialisation:
weights the checkpoint does not hold keep PyTorch's construction-time values, and a checkpoint that fits
nothing (the wrong file, or a detector checkpoint without ``prefix='backbone.'``) only leaves a long
"missing keys" log. Upstream ResNets also skip ``zero_init_residual`` only when ``init_cfg`` is a dict, so
the list form zeroes the pretrained last norm of every block. Here, for our backbones:

1. the default initialisation (the other ``init_cfg`` entries, or Kaiming convs and unit norms when there are
   none) always runs first, ``zero_init_residual`` included;
2. each ``Pretrained`` entry then loads on top of it, whatever the form of ``init_cfg``;
3. a checkpoint that fits none of the backbone's weights is refused (``CheckpointError``, naming the prefix
   to pass when one would fit), and one that fits only some is reported in one warning with the counts.
"""
import copy
import logging
import re
from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..checkpoint import CheckpointError

# The initialisation of RedNet and of the upstream ResNets and MobileNetV2 when init_cfg gives none.
DEFAULT_INIT = [
    dict(type='Kaiming', layer=['Conv2d']),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm']),
]
_SHOWN_KEYS = 3  # how many unloaded keys a partial-load warning names


def split_init_cfg(init_cfg: Union[None, dict, List[dict]]) -> Tuple[List[dict], List[dict]]:
    """``init_cfg`` (None, a dict or a list of dicts) as (the other entries, the ``Pretrained`` entries)."""
    cfgs = [] if init_cfg is None else [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    pretrained = [cfg for cfg in cfgs if _is_pretrained(cfg)]
    return [cfg for cfg in cfgs if not _is_pretrained(cfg)], pretrained


def _is_pretrained(cfg) -> bool:
    if not isinstance(cfg, dict):
        return False
    kind = cfg.get('type')
    return kind == 'Pretrained' or getattr(kind, '__name__', None) == 'PretrainedInit'


@contextmanager
def pretrained_loaded_last(module: nn.Module) -> Iterator[None]:
    """Run the body (the module's default ``init_weights``) without the ``Pretrained`` entries of its
    ``init_cfg``, then load them on top with :func:`load_pretrained`.

    Example:
        >>> def init_weights(self):
        ...     with pretrained_loaded_last(self):
        ...         super().init_weights()  # and zero_init_residual, unconditionally
    """
    others, pretrained = split_init_cfg(module.init_cfg)
    if not pretrained or getattr(module, '_is_init', False):  # mmengine initialises a module only once
        yield
        return
    given = module.init_cfg
    module.init_cfg = others or copy.deepcopy(DEFAULT_INIT)
    try:
        yield
    finally:
        module.init_cfg = given
    for cfg in pretrained:
        load_pretrained(module, cfg)


def load_pretrained(module: nn.Module, cfg: dict) -> None:
    """Load one ``Pretrained`` init_cfg entry (``checkpoint``, optional ``prefix`` and ``map_location``)
    into ``module``, as mmengine's ``PretrainedInit`` does (the state dict under ``state_dict``, ``module.``
    prefixes dropped, only keys under ``prefix`` with it stripped), counting what fits.

    Raises:
        CheckpointError: the checkpoint holds nothing under ``prefix``, or none of its tensors fits one of
            the module's weights (the message names the prefix that would fit, if one does).
    """
    from mmengine.model.weight_init import update_init_info
    from mmengine.runner.checkpoint import _load_checkpoint
    name, filename, prefix = type(module).__name__, cfg.get('checkpoint'), cfg.get('prefix')
    print_log(f'load {prefix or "model"} in {name} from: {filename}', logger='current')
    checkpoint = _load_checkpoint(filename, map_location=cfg.get('map_location', 'cpu'))
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise CheckpointError(f'{name} init_cfg Pretrained: {filename} holds no state dict')
    state_dict = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    everything = module.state_dict()
    # num_batches_tracked counters are no weights, and have the same name and shape in any BN of any network
    own = {k: v for k, v in everything.items() if not k.endswith('num_batches_tracked')}
    if prefix:
        start = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = {k[len(start):]: v for k, v in state_dict.items() if k.startswith(start)}
        if not state_dict:
            raise CheckpointError(f'{name} init_cfg Pretrained: {filename} holds no weights under '
                                  f'prefix={prefix!r}{_prefix_hint(own, checkpoint)}')
    fitting = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    if not fitting:
        tensors = len([k for k in state_dict if not k.endswith('num_batches_tracked')])
        raise CheckpointError(f'{name} init_cfg Pretrained loads nothing from {filename}: none of its '
                              f'{tensors} tensors fits one of the {len(own)} weights of {name}'
                              f'{_prefix_hint(own, state_dict)}')
    missing = [k for k in own if k not in state_dict]
    reshaped = [k for k in own if k in state_dict and k not in fitting]
    if missing or reshaped:
        unloaded = ([f'{len(missing)} are missing from it{_examples(missing)}'] if missing else []) + \
            ([f'{len(reshaped)} have another shape there{_examples(reshaped)}'] if reshaped else [])
        print_log(f'{name} init_cfg Pretrained: {filename} fits {len(fitting)} of the {len(own)} weights of '
                  f'{name}; {" and ".join(unloaded)}: these keep their default initialisation',
                  logger='current', level=logging.WARNING)
    counters = {k: v for k, v in state_dict.items() if k in everything and k not in own and v.shape == ()}
    module.load_state_dict({**fitting, **counters}, strict=False)
    if hasattr(module, '_params_init_info'):
        update_init_info(module, init_info=f'Pretrained: {len(fitting)} tensors loaded from {filename}')


def _examples(keys: List[str]) -> str:
    more = ', ...' if len(keys) > _SHOWN_KEYS else ''
    return f' ({", ".join(keys[:_SHOWN_KEYS])}{more})' if keys else ''


def _prefix_hint(own: Dict[str, torch.Tensor], state_dict: Dict) -> str:
    """'; pass prefix=...' for the prefix under which ``state_dict`` fits ``own`` best, if any does."""
    if not isinstance(state_dict, dict):
        return ''
    state_dict = state_dict.get('state_dict', state_dict)
    counts = {}
    for key in state_dict:
        head, _, rest = re.sub(r'^module\.', '', key).partition('.')
        if rest in own:
            counts[head] = counts.get(head, 0) + 1
    if not counts:
        return ''
    best = max(counts, key=counts.get)
    return f"; its keys under '{best}.' fit {counts[best]} of them: pass prefix='{best}.'"
