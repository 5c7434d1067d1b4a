"""What each process of a multi-process launch runs: the upstream framework's train.py or test.py, unchanged.

``tools/dist_train.sh`` and ``tools/dist_test.sh`` start ``python -m involution_mm.dist_run SCRIPT CONFIG
[ARGS...] --launcher pytorch`` in every process through torchrun (``--launcher none`` in the one process of a
single-process run). With GPUs this runs SCRIPT as it is; a user error of ours raised inside it (see
``involution_mm.user_errors``) ends the process with one line and exit status 2 instead of a traceback.
Without one (no GPU visible, or ``DEVICE=cpu``), mmengine's own launcher would fail: it calls
``torch.cuda.set_device`` and gives the model wrapper ``device_ids=[LOCAL_RANK]``. So on CPUs this module

- initialises the process group itself, on the gloo backend, with the config's ``env_cfg.dist_cfg.timeout``
  (mmengine then finds it initialised and skips its own set-up);
- appends ``--cfg-options`` that set ``env_cfg.dist_cfg.backend=gloo`` and select
  :class:`~involution_mm.engine.CPUDistributedDataParallel` without ``device_ids`` (with mmengine's
  defaults for the rest: ``broadcast_buffers=False`` and the config's ``find_unused_parameters``), which
  turns SyncBN into BN with one logged line.
"""
import argparse
import datetime
import os
import runpy
import sys
from typing import List, Optional, Sequence

import torch

from .user_errors import run_tool

# Set in the environment of the processes that involution_mm.launch starts.
LAUNCHED_BY_US = 'INVOLUTION_MM_LAUNCHER'
# The process-group timeout when a config sets none: torch's default, stated.
DEFAULT_TIMEOUT_S = 1800


def cpu_processes() -> bool:
    """Whether this process is one of several started by torchrun, with no GPU to run on."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1 and not torch.cuda.is_available()


def refuse_cpu_launch_elsewhere(argv: Sequence[str]) -> None:
    """Stop, with one line, a process that ``mim train/test ... --launcher pytorch`` or torchrun started on
    the upstream script on a machine without a GPU (``argv``: its command line).

    mmengine's own set-up would fail later in it with a traceback (``torch.cuda.set_device``). Called when
    ``involution_mm`` is imported (a config's ``custom_imports``, before the Runner is built); a process that
    our launcher started (``involution_mm.launch`` marks its children with ``LAUNCHED_BY_US``) is left alone:
    :func:`main` sets it up.
    """
    if os.environ.get(LAUNCHED_BY_US):
        return
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument('--launcher')
    if parser.parse_known_args(list(argv[1:]))[0].launcher != 'pytorch':
        return
    if not cpu_processes():
        return
    if int(os.environ.get('RANK', '0')) == 0:
        print('error: several processes on a machine without a GPU need CPU process set-up that '
              '--launcher pytorch does not do; run tools/dist_train.sh CONFIG N (or tools/dist_test.sh CONFIG '
              'CHECKPOINT N) of involution-mm instead, which runs N CPU processes', file=sys.stderr)
    sys.exit(2)


def _load_config(config: str, args: Sequence[str]):
    """The config as the upstream script will see it: the file with the ``--cfg-options`` in ``args``."""
    from mmengine.config import Config, DictAction
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    options, _ = parser.parse_known_args(list(args))
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options.cfg_options)
    return cfg


def cpu_options(cfg) -> List[str]:
    """The ``--cfg-options`` that make mmengine's Runner run a config in CPU processes (gloo, DDP without
    ``device_ids``, SyncBN as BN)."""
    options = ['env_cfg.dist_cfg.backend=gloo', 'model_wrapper_cfg.type=CPUDistributedDataParallel',
               'model_wrapper_cfg.device_ids=None']
    if cfg.get('model_wrapper_cfg') is None:  # mmengine's defaults when it builds the wrapper itself
        options += ['model_wrapper_cfg.broadcast_buffers=False',
                    f'model_wrapper_cfg.find_unused_parameters={bool(cfg.get("find_unused_parameters", False))}']
    return options


def init_cpu_process_group(cfg) -> None:
    """Join the process group on the gloo backend (rank, size and address from torchrun's environment)."""
    dist_cfg = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
    timeout = datetime.timedelta(seconds=dist_cfg.get('timeout', DEFAULT_TIMEOUT_S))
    torch.distributed.init_process_group(backend='gloo', timeout=timeout)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run ``SCRIPT CONFIG [ARGS...]`` (``argv``, or the command line) as ``python SCRIPT CONFIG ARGS``
    would, prepared for CPU processes where there is no GPU."""
    script, *args = sys.argv[1:] if argv is None else argv
    if cpu_processes():
        cfg = _load_config(args[0], args[1:])
        init_cpu_process_group(cfg)
        args += ['--cfg-options', *cpu_options(cfg)]
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` puts it first
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    sys.exit(run_tool(main))
