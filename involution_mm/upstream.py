"""Find the upstream framework a config belongs to, and that framework's own train/test scripts.

``python -m involution_mm.upstream test CONFIG`` prints the path of the installed framework's
``tools/test.py`` (mmpretrain, mmdet and mmsegmentation ship their tools inside the package, under
``.mim/tools``), so ``tools/dist_train.sh`` and ``tools/dist_test.sh`` need no upstream checkout.
"""
import argparse
import importlib.util
import os.path as osp
import sys

from .user_errors import MissingDependencyError, UserError, one_line, run_tool

# default_scope of a config -> the Python package of that framework
FRAMEWORK_PACKAGES = {'mmpretrain': 'mmpretrain', 'mmdet': 'mmdet', 'mmseg': 'mmseg'}


class ConfigError(UserError, ValueError):
    """A config that cannot be used (missing, unreadable, without a model or a framework scope, or whose
    model cannot be built from it); the message says so in one line."""


def _checked_scope(cfg, config: str) -> str:
    """The ``default_scope`` of a loaded config, which must name one of the frameworks."""
    scope = cfg.get('default_scope')
    if scope not in FRAMEWORK_PACKAGES:
        raise ConfigError(f'{config} has default_scope={scope!r}; expected one of '
                          f'{sorted(FRAMEWORK_PACKAGES)} (inherit an upstream default_runtime.py)')
    return scope


def load_model_config(config: str, cfg_options: dict = None):
    """Load a config, with ``cfg_options`` merged, that defines a model and a framework scope.

    Raises:
        ConfigError: the file is missing or cannot be read, or has no ``model`` or no framework's
            ``default_scope``.
    """
    from mmengine.config import Config
    if not osp.isfile(config):
        raise ConfigError(f'config {config} does not exist; give the path of a config file, e.g. '
                          'configs/rednet/rednet50_64xb32-warmup-coslr-130e_in1k.py')
    try:
        cfg = Config.fromfile(config)
    except Exception as err:  # a config that does not parse, or whose base configs or imports are missing
        raise ConfigError(f'cannot read config {config}: {str(err).strip().splitlines()[0]}') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if not isinstance(cfg.get('model'), dict):
        raise ConfigError(f'{config} defines no model; give a model config (one of configs/*/*.py, or one '
                          'that inherits it)')
    _checked_scope(cfg, config)
    return cfg


def config_framework(config: str) -> str:
    """The framework package a config runs in, read from its ``default_scope``.

    Raises:
        ConfigError: the config is missing, does not parse, or names no framework's scope.
    """
    from mmengine.config import Config
    if not osp.isfile(config):
        raise ConfigError(f'config {config} does not exist; give the path of a config file')
    try:
        cfg = Config.fromfile(config, import_custom_modules=False)
    except Exception as err:  # a config that does not parse, or whose base configs are missing
        raise ConfigError(f'cannot read config {config}: {one_line(err)}') from None
    return FRAMEWORK_PACKAGES[_checked_scope(cfg, config)]


def build_model_from_config(config: str, cfg_options: dict = None):
    """Build the model of a config through its framework's registry, in eval mode, on the CPU.

    SyncBN becomes BN (it cannot run outside a process group); no weights are initialised or loaded. A
    top-level ``data_preprocessor`` (mmpretrain's configs) becomes the model's, as mmengine's Runner does it.

    Returns:
        tuple: ``(model, scope)``, the model and the config's ``default_scope``.

    Raises:
        ConfigError: see :func:`load_model_config`; also an unknown model type or arguments that a
            constructor refuses (``KeyError``, ``TypeError``, ``ValueError`` or ``AssertionError`` raised
            while building from the config).
    """
    import importlib

    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    cfg = load_model_config(config, cfg_options)
    scope = cfg.default_scope
    init_default_scope(scope)
    model_cfg = cfg.model
    if cfg.get('data_preprocessor') is not None:  # a top-level one (mmpretrain's configs), as the Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    try:
        model = importlib.import_module(f'{scope}.registry').MODELS.build(model_cfg)
    except (KeyError, TypeError, ValueError, AssertionError) as err:
        # an unknown type (the registry's KeyError) or arguments a constructor refuses: the config's fault
        raise ConfigError(f'cannot build the model of {config}: {one_line(err)}') from None
    return revert_sync_batchnorm(model).eval(), scope


def tool_script(package: str, tool: str) -> str:
    """Path of the installed framework ``package``'s own ``tools/<tool>.py`` (``tool``: train or test).

    Raises:
        MissingDependencyError: the framework is not installed, or was installed without its tools.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f'{package} is not installed; see docs/get_started.md')
    root = spec.submodule_search_locations[0]
    for candidate in (osp.join(root, '.mim', 'tools', f'{tool}.py'), osp.join(root, 'tools', f'{tool}.py')):
        if osp.isfile(candidate):
            return candidate
    raise MissingDependencyError(f'{package} at {root} ships no tools/{tool}.py; reinstall it from PyPI')


def upstream_tool(config: str, tool: str) -> str:
    """Path of ``tools/<tool>.py`` of the framework that ``config`` belongs to.

    Raises:
        ConfigError: see :func:`config_framework`. MissingDependencyError: see :func:`tool_script`.
    """
    return tool_script(config_framework(config), tool)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('tool', choices=['train', 'test'])
    parser.add_argument('config')
    args = parser.parse_args(argv)
    print(upstream_tool(args.config, args.tool))


if __name__ == '__main__':
    sys.exit(run_tool(main))
