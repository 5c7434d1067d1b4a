"""mmengine pieces for multi-process runs, registered when ``involution_mm`` is imported.

- :class:`SyncBuffersEveryIterHook`: every process holds the same BN statistics whenever a checkpoint is
  saved or validation runs, so logged validation metrics equal a test of the saved checkpoint.
- :class:`CPUDistributedDataParallel`: the model wrapper of processes on CPUs (gloo), which
  ``tools/dist_train.sh`` and ``tools/dist_test.sh`` select when there is no GPU (see
  :mod:`involution_mm.dist_run`).
"""
from typing import Optional, Sequence

import torch.nn as nn
from mmengine.dist import all_reduce_params, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import HOOKS, MODEL_WRAPPERS


@HOOKS.register_module()
class SyncBuffersEveryIterHook(Hook):
    """Average the model's buffers (BN running statistics) over the processes after every training iteration.

    DDP keeps one copy of the model per process and mmengine's wrapper does not broadcast buffers, so each
    process's BN layers track the statistics of its own share of the data, and rank 0's are saved. mmengine's
    ``SyncBuffersHook`` averages them at the end of each epoch and before validation; in iteration-based
    training a checkpoint due at a validation iteration is saved before that, with rank 0's own statistics,
    while validation uses the averaged ones. Averaging after every iteration (before the checkpoint hook,
    whose priority is lower) removes that gap. BN updates its running statistics linearly, so averaging every
    iteration gives the same statistics as averaging once at the end; the buffers are a few hundred
    kilobytes, a small fraction of the gradients each iteration reduces anyway.

    Does nothing in a single process.
    """

    priority = 'NORMAL'  # above CheckpointHook (VERY_LOW) and LoggerHook (BELOW_NORMAL)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Average the buffers over the processes."""
        if is_distributed():
            all_reduce_params(runner.model.buffers(), op='mean')


def _count_sync_bn(module: nn.Module) -> int:
    """Number of SyncBN layers (torch's or mmcv's) in ``module``."""
    names = {'SyncBatchNorm'}
    return sum(type(m).__name__ in names for m in module.modules())


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for processes that run on CPUs (the gloo backend).

    DDP takes no ``device_ids`` for a CPU model, and SyncBN layers only run on GPUs, so they become BN, with
    one logged line: each process then normalises over its own batch, as with BN on GPUs.

    Args:
        module (nn.Module): The model.
        device_ids (Sequence[int], optional): Must be None (the model is on the CPU).
        **kwargs: Passed to ``MMDistributedDataParallel`` (``broadcast_buffers``,
            ``find_unused_parameters``, ...).
    """

    def __init__(self, module: nn.Module, device_ids: Optional[Sequence[int]] = None, **kwargs) -> None:
        if device_ids is not None:
            raise ValueError(f'CPUDistributedDataParallel runs on CPUs and takes no device_ids, got {device_ids}')
        sync_bn = _count_sync_bn(module)
        if sync_bn:
            module = revert_sync_batchnorm(module)
            MMLogger.get_current_instance().info(
                f'{sync_bn} SyncBN layers run as BN: SyncBN needs GPUs, so each CPU process normalises over its '
                'own batch')
        super().__init__(module=module, device_ids=None, **kwargs)
