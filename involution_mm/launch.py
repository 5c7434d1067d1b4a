"""Start the upstream framework's train.py or test.py for a config: ``tools/dist_train.sh`` and
``tools/dist_test.sh``.

``python -m involution_mm.launch train NPROC CONFIG [ARGS...]`` (or ``test NPROC CONFIG CHECKPOINT
[ARGS...]``) checks what the user gave, in seconds and before the framework's set-up, then replaces itself
with the run: one process, or NPROC processes on this machine (on each of NNODES machines) through torchrun.
The processes run on GPUs, one each, or, where there is no GPU or ``DEVICE=cpu``, on the CPU with the gloo
backend (see :mod:`involution_mm.dist_run`).

Environment, with the names of upstream's ``dist_train.sh`` and torchrun's:

- ``NNODES`` (default 1), ``NODE_RANK`` (default 0): the number of machines and this one's number. With
  ``NNODES > 1`` every machine runs the same command and the run always goes through torchrun.
- ``MASTER_ADDR``: the address of machine 0 (default 127.0.0.1 on one machine; required on several).
- ``PORT`` or ``MASTER_PORT``: the port on machine 0 where the processes meet. On one machine, with neither
  set, a free port is chosen and printed; on several, one must be set (the same on every machine).
- ``DEVICE``: ``auto`` (default: GPUs if there are any), ``cpu`` or ``cuda``.
"""
import argparse
import dataclasses
import os
import os.path as osp
import socket
import sys
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from .dist_run import LAUNCHED_BY_US
from .user_errors import MissingFileError, UserError, run_tool

DEVICES = ('auto', 'cpu', 'cuda')
# Model wrappers that the CPU processes can replace by CPUDistributedDataParallel.
_PLAIN_WRAPPERS = (None, 'MMDistributedDataParallel', 'CPUDistributedDataParallel')
CUSTOM_IMPORTS_LINE = "custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)"


class LaunchError(UserError, ValueError):
    """A launch that cannot run as asked (process counts, machines, port, device, the tool's arguments)."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """Where the processes of a launch run.

    Attributes:
        nproc (int): Processes on this machine.
        nnodes (int): Machines.
        node_rank (int): This machine's number, from 0.
        master_addr (str): Address of machine 0.
        master_port (int, optional): Port on machine 0; None to choose a free one (one machine only).
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda'``, as asked.
    """

    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = '127.0.0.1'
    master_port: Optional[int] = None
    device: str = 'auto'

    @property
    def distributed(self) -> bool:
        """Whether the run has more than one process in all (and so goes through torchrun)."""
        return self.nproc > 1 or self.nnodes > 1


def _positive_int(text: str, message: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise LaunchError(message.format(text))
    return int(text)


def read_topology(nproc: str, environ: Mapping[str, str]) -> Topology:
    """The :class:`Topology` of a launch of ``nproc`` processes per machine, from the environment.

    Raises:
        LaunchError: a count, rank, port or device that is not valid, or several machines without the
            address and port of machine 0.
    """
    count = _positive_int(nproc, "the number of processes (GPUs) must be a positive integer, got '{}'")
    nnodes = _positive_int(environ.get('NNODES') or '1',
                           "NNODES (the number of machines) must be a positive integer, got '{}'")
    rank_text = environ.get('NODE_RANK') or '0'
    if not rank_text.isdigit() or int(rank_text) >= nnodes:
        raise LaunchError(f"NODE_RANK (this machine's number) must be from 0 to NNODES - 1 = {nnodes - 1}, "
                          f"got '{rank_text}'")
    port, master_port = environ.get('PORT') or None, environ.get('MASTER_PORT') or None
    if port and master_port and port != master_port:
        raise LaunchError(f'PORT={port} and MASTER_PORT={master_port} differ; set one of them')
    port = port or master_port
    if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise LaunchError(f"PORT (or MASTER_PORT) must be a port number from 1 to 65535, got '{port}'")
    addr = environ.get('MASTER_ADDR') or None
    if nnodes > 1 and addr is None:
        raise LaunchError(f'NNODES={nnodes} needs MASTER_ADDR: the address of the machine with NODE_RANK=0, '
                          'which every machine can reach, the same on all of them')
    if nnodes > 1 and port is None:
        raise LaunchError(f'NNODES={nnodes} needs PORT (or MASTER_PORT): a free port on the machine with '
                          'NODE_RANK=0, the same on every machine, e.g. PORT=29500')
    device = environ.get('DEVICE') or 'auto'
    if device not in DEVICES:
        raise LaunchError(f"DEVICE must be one of {', '.join(DEVICES)}, got '{device}'")
    return Topology(count, nnodes, int(rank_text), addr or '127.0.0.1', port and int(port), device)


def choose_device(topology: Topology, gpus_here: int) -> str:
    """``'cuda'`` (one GPU per process) or ``'cpu'`` for a launch on a machine with ``gpus_here`` GPUs.

    Raises:
        LaunchError: GPUs are asked for or present, but fewer than the processes of this machine.
    """
    if topology.device == 'cpu' or (topology.device == 'auto' and gpus_here == 0):
        return 'cpu'
    if gpus_here < topology.nproc:
        raise LaunchError(f'{topology.nproc} processes need {topology.nproc} GPUs, this machine has '
                          f'{gpus_here}; run fewer, or set DEVICE=cpu to run them on the CPU')
    return 'cuda'


def free_port() -> int:
    """A TCP port that is free on this machine now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('', 0))
        return sock.getsockname()[1]


def _script_options(args: Sequence[str]) -> argparse.Namespace:
    """The options of the upstream train.py/test.py that are checked here (others are left to it).

    Raises:
        LaunchError: one of them is malformed (no value, or a ``--cfg-options`` item without ``=``).
    """
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument('--work-dir')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--resume', nargs='?', const='auto')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    try:
        return parser.parse_known_args(list(args))[0]
    except argparse.ArgumentError as err:
        raise LaunchError(str(err)) from None
    except ValueError:  # DictAction splits each item at '='
        items = list(args)[list(args).index('--cfg-options') + 1:] if '--cfg-options' in args else []
        bad = next((a for a in items if '=' not in a), items[0] if items else '')
        raise LaunchError(f"--cfg-options takes KEY=VALUE items, got '{bad}'") from None


def require_checkpoint(path: str, source: str = '') -> None:
    """A local checkpoint (not a URL) must be an existing file.

    Raises:
        MissingFileError: it does not exist. LaunchError: it is a folder.
    """
    if '://' in path:
        return  # left to mmengine
    if osp.isdir(path):
        raise LaunchError(f'the checkpoint {path}{source} is a folder; give the path of a .pth file')
    if not osp.isfile(path):
        raise MissingFileError(f'the checkpoint {path} does not exist{source}; give the path of an existing '
                               '.pth file (or a URL)')


def check_work_dir(work_dir: Optional[str]) -> None:
    """``--work-dir`` must be a folder, or a path where one can be created (as mmengine does, with parents).

    Raises:
        LaunchError: it, or the nearest existing path above it, is a file.
    """
    if work_dir is None:
        return
    if osp.exists(work_dir) and not osp.isdir(work_dir):
        raise LaunchError(f'--work-dir {work_dir} is a file; give a folder (it is created if it does not exist)')
    above = work_dir
    while above and not osp.exists(above):
        above = osp.dirname(above)
    if above and not osp.isdir(above):
        raise LaunchError(f'--work-dir {work_dir} cannot be created: {above} is a file, not a folder')


def _config_types(node) -> Iterator[str]:
    """Every ``type`` string in a config (nested dicts and lists), without its scope prefix."""
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield node['type'].rpartition('.')[2]
        for value in node.values():
            yield from _config_types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _config_types(value)


def registered_by_us() -> Dict[str, str]:
    """``{name: registry}`` of everything ``involution_mm`` registers into mmengine's and the installed
    frameworks' registries."""
    import importlib
    import importlib.util

    from mmengine.registry import Registry

    from .upstream import FRAMEWORK_PACKAGES
    modules = ['mmengine.registry'] + [f'{package}.registry' for package in FRAMEWORK_PACKAGES.values()
                                       if importlib.util.find_spec(package) is not None]
    names = {}
    for module in map(importlib.import_module, modules):
        for registry in vars(module).values():
            if isinstance(registry, Registry):
                for name, obj in registry.module_dict.items():
                    if getattr(obj, '__module__', '').startswith('involution_mm.'):
                        names[name] = registry.name
    return names


def check_custom_imports(cfg, config: str) -> None:
    """A config that uses a type of ours must import ``involution_mm`` (the upstream tools import nothing
    else).

    Raises:
        ConfigError: it uses one without importing it.
    """
    from .upstream import ConfigError
    imports = (cfg.get('custom_imports') or {}).get('imports') or []
    if any(str(name).split('.')[0] == 'involution_mm' for name in ([imports] if isinstance(imports, str)
                                                                   else imports)):
        return
    ours = registered_by_us()
    used = [name for name in _config_types(cfg.to_dict()) if name in ours]
    if used:
        raise ConfigError(f'{config} uses {used[0]} of involution_mm without importing it; add the line '
                          f'{CUSTOM_IMPORTS_LINE} to it')


def check_for_device(cfg, config: str, options: argparse.Namespace, tool: str, device: str) -> None:
    """What a run on ``device`` cannot do: mixed precision and GPU-only model wrappers on the CPU.

    Raises:
        LaunchError: ``--amp`` or an ``AmpOptimWrapper``, or a model wrapper other than mmengine's DDP, in a
            run on the CPU.
    """
    if device != 'cpu':
        return
    if tool == 'train' and options.amp:
        raise LaunchError('--amp (mixed precision) needs a GPU and this run is on the CPU (no GPU here, or '
                          'DEVICE=cpu); drop --amp')
    if tool == 'train' and (cfg.get('optim_wrapper') or {}).get('type') == 'AmpOptimWrapper':
        raise LaunchError(f'{config} trains with AmpOptimWrapper (mixed precision), which needs a GPU, and this '
                          'run is on the CPU; pass --cfg-options optim_wrapper.type=OptimWrapper')
    wrapper = (cfg.get('model_wrapper_cfg') or {}).get('type')
    if wrapper not in _PLAIN_WRAPPERS:
        raise LaunchError(f'{config} wraps the model in {wrapper}, which needs GPUs, and this run is on the CPU; '
                          'run it on GPUs, or drop model_wrapper_cfg')


def check_inputs(tool: str, config: str, args: Sequence[str], device: str = 'cuda'):
    """Check a launch's config and the upstream tool's arguments, before anything starts.

    Args:
        tool (str): ``'train'`` or ``'test'``.
        config (str): The config file.
        args (Sequence[str]): The tool's arguments after the config (for ``test``, the checkpoint first).
        device (str): Where the run will be, ``'cuda'`` or ``'cpu'``. Defaults to ``'cuda'``.

    Returns:
        The loaded config (``--cfg-options`` merged).

    Raises:
        UserError: one line that says what is wrong.
    """
    from .upstream import load_model_config
    if not osp.isfile(config):
        raise MissingFileError(f'the config {config} does not exist; give the path of a config file')
    options = _script_options(args)
    if tool == 'test':
        if not args or args[0].startswith('-'):
            raise LaunchError('test needs a checkpoint after the config: CONFIG CHECKPOINT NPROC')
        require_checkpoint(args[0])
    elif options.resume not in (None, 'auto'):
        require_checkpoint(options.resume, ' (--resume)')
    check_work_dir(options.work_dir)
    cfg = load_model_config(config, options.cfg_options)
    check_custom_imports(cfg, config)
    load_from = cfg.get('load_from')
    if tool == 'train' and isinstance(load_from, str) and load_from:
        require_checkpoint(load_from, f' (load_from of {config})')
    check_for_device(cfg, config, options, tool, device)
    if tool == 'test' and '://' not in args[0]:
        from .checkpoint import load_checkpoint_file
        load_checkpoint_file(args[0], map_location='cpu')  # truncated, corrupt or refused: one line now
    return cfg


def command(topology: Topology, device: str, script: str, config: str, args: Sequence[str],
            environ: Mapping[str, str], python: str = sys.executable) -> Tuple[List[str], Dict[str, str]]:
    """The command line and environment of a launch.

    Returns:
        tuple: ``(argv, env)``: :mod:`involution_mm.dist_run` running ``SCRIPT CONFIG ARGS --launcher none``
        in this process for one process, else torchrun starting it in each of ``topology.nproc`` processes.
        Either way a user error raised inside the run (a checkpoint that leaves weights unloaded, for one)
        ends it with one line.
    """
    env = dict(environ, **{LAUNCHED_BY_US: '1'})
    if device == 'cpu' and topology.device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = '-1'  # hide the GPUs, as mmengine asks for CPU runs
    if not topology.distributed:
        return [python, '-m', 'involution_mm.dist_run', script, config, *args, '--launcher', 'none'], env
    if device == 'cpu' and 'OMP_NUM_THREADS' not in env:  # share the cores (torchrun would give each one)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
        env['OMP_NUM_THREADS'] = str(max(1, cores // topology.nproc))
    argv = [python, '-m', 'torch.distributed.run', f'--nnodes={topology.nnodes}',
            f'--node_rank={topology.node_rank}', f'--master_addr={topology.master_addr}',
            f'--master_port={topology.master_port}', f'--nproc_per_node={topology.nproc}',
            '-m', 'involution_mm.dist_run', script, config, *args, '--launcher', 'pytorch']
    return argv, env


def plan(argv: Sequence[str], environ: Mapping[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """Check a launch (``argv``: ``train|test NPROC CONFIG [ARGS...]``) and return its command and
    environment (see :func:`command`); prints the port it chose, if it chose one."""
    from .upstream import FRAMEWORK_PACKAGES, tool_script
    if len(argv) < 3 or argv[0] not in ('train', 'test'):
        raise LaunchError('usage: python -m involution_mm.launch {train|test} NPROC CONFIG [CHECKPOINT] [ARGS...]')
    tool, nproc, config, *args = argv
    topology = read_topology(nproc, environ)
    device = choose_device(topology, 0 if topology.device == 'cpu' else torch.cuda.device_count())
    cfg = check_inputs(tool, config, args, device)
    script = tool_script(FRAMEWORK_PACKAGES[cfg.default_scope], tool)
    if topology.distributed and topology.master_port is None:
        topology = dataclasses.replace(topology, master_port=free_port())
        print(f'note: neither PORT nor MASTER_PORT is set; the processes meet on the free port '
              f'{topology.master_port} (set PORT to choose one)', file=sys.stderr)
    if topology.distributed and device == 'cpu':
        count = f'{topology.nproc} processes' if topology.nproc > 1 else '1 process'
        print(f'note: {count} on the CPU of this machine (gloo backend)', file=sys.stderr)
    return command(topology, device, script, config, args, environ)


def checked_script(argv: Sequence[str]) -> str:
    """Check ``train|test CONFIG [ARGS...]`` for a run on GPUs started by someone else (SLURM's srun: see
    ``tools/slurm_train.sh``) and return the path of the upstream script to run."""
    from .upstream import FRAMEWORK_PACKAGES, tool_script
    if len(argv) < 2 or argv[0] not in ('train', 'test'):
        raise LaunchError('usage: python -m involution_mm.launch script {train|test} CONFIG [CHECKPOINT] [ARGS...]')
    tool, config, *args = argv
    cfg = check_inputs(tool, config, args, 'cuda')
    return tool_script(FRAMEWORK_PACKAGES[cfg.default_scope], tool)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Check a launch, then replace this process with it (see :func:`plan`); or, with ``script`` first,
    print the upstream script of a checked run (see :func:`checked_script`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['script']:
        print(checked_script(argv[1:]))
        return 0
    args, env = plan(argv, os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(args[0], args, env)
    return 0  # not reached


if __name__ == '__main__':
    sys.exit(run_tool(main))
