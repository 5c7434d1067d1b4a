"""involution-mm: the involution operator, RedNet and SimAM as OpenMMLab 2.x plugins.

``import involution_mm`` (or ``custom_imports = dict(imports=['involution_mm'])`` in a config) makes
checkpoint loading safe under torch's weights-only unpickler, makes Runners refuse a checkpoint that leaves
model weights unloaded, and registers our models into the registries
of each installed framework among mmpretrain, mmdet and mmsegmentation.

The operator (``involution_mm.ops``) needs torch alone; with mmengine and mmcv missing, only it is loaded.
"""
import importlib
import importlib.util
import sys

from . import ops  # noqa: F401
from .version import __version__

# framework package -> our adapter module that registers into it
_ADAPTERS = {'mmpretrain': 'cls', 'mmdet': 'det', 'mmseg': 'seg'}


def _has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _set_up_openmmlab() -> None:
    from .checkpoint import allow_checkpoint_globals, install_checkpoint_coverage_check, install_safe_local_loader
    allow_checkpoint_globals()
    install_safe_local_loader()
    install_checkpoint_coverage_check()
    from . import engine  # noqa: F401  (registers the buffer-sync hook and the CPU model wrapper)
    from .dist_run import refuse_cpu_launch_elsewhere
    refuse_cpu_launch_elsewhere(sys.argv)
    for framework, adapter in _ADAPTERS.items():
        if _has(framework):  # only a framework that is not installed is skipped
            importlib.import_module(f'{__name__}.{adapter}')


if _has('mmengine') and _has('mmcv'):
    _set_up_openmmlab()

__all__ = ['__version__', 'ops']
