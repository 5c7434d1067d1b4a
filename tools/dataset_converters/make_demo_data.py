#!/usr/bin/env python
"""Write a tiny dataset in an upstream on-disk format, in seconds.

    mkdir -p data && python tools/dataset_converters/make_demo_data.py imagenet data/demo_imagenet

Formats are the modules of ``tools/dataset_converters/demo_data`` (each documents its layout). The folder is written beside
its destination and moved into place when complete, so it is never left half-written, also when the tool
is interrupted (Ctrl-C, SIGTERM). Each folder it writes holds a marker file; an existing folder is replaced
only if it holds that marker (or is empty), so a folder of yours is never touched. The folder around it
must exist.
"""
import argparse
import importlib
import importlib.util
import os
import os.path as osp
import pkgutil
import sys

TOOLS = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, TOOLS)
import demo_data  # noqa: E402


def _light_package() -> None:
    """Make ``involution_mm`` of this checkout importable without running its ``__init__`` (which imports
    torch and the frameworks), so that the tool starts in a fraction of a second: its standard-library
    modules (output_files, user_errors) are all it needs."""
    if 'involution_mm' in sys.modules:
        return
    folder = osp.join(osp.dirname(osp.dirname(TOOLS)), 'involution_mm')
    spec = importlib.util.spec_from_file_location('involution_mm', osp.join(folder, '__init__.py'),
                                                  submodule_search_locations=[folder])
    sys.modules['involution_mm'] = importlib.util.module_from_spec(spec)  # not executed


_light_package()
from involution_mm.output_files import OutputPathError, check_output_path, written_atomically  # noqa: E402
from involution_mm.user_errors import run_tool  # noqa: E402

FORMATS = sorted(m.name for m in pkgutil.iter_modules(demo_data.__path__))
# Written into every dataset folder; its presence means the folder is ours to replace.
MARKER = '.involution_mm_demo_data'


def check_replaceable(out_dir: str) -> None:
    """Refuse an existing folder that is neither empty nor one that this tool wrote.

    Raises:
        OutputPathError: ``out_dir`` holds files and no marker.
    """
    if osp.isdir(out_dir) and os.listdir(out_dir) and not osp.isfile(osp.join(out_dir, MARKER)):
        raise OutputPathError(f'{out_dir} is not empty and was not written by make_demo_data.py, so it is '
                              'left alone; give a new or empty folder')


def write_atomically(kind: str, out_dir: str, seed: int = 0, **options) -> str:
    """Write dataset ``kind`` to ``out_dir``, replacing a folder only if this tool wrote it.

    Args:
        kind (str): One of :data:`FORMATS`.
        out_dir (str): The dataset folder.
        seed (int): Seed of the generated content. Defaults to 0.
        **options: Passed to the format's ``write`` (for example ``train_per_class`` for imagenet).

    Returns:
        str: The absolute path of the folder.

    Raises:
        OutputPathError: ``out_dir`` cannot be written, or is a folder of someone else's.
    """
    writer = importlib.import_module(f'demo_data.{kind}').write
    out_dir = check_output_path(out_dir, 'folder')
    check_replaceable(out_dir)
    with written_atomically(out_dir) as staging:
        writer(staging, seed=seed, **options)
        with open(osp.join(staging, MARKER), 'w') as f:
            f.write(f'Written by tools/dataset_converters/make_demo_data.py ({kind}, seed {seed}); it may replace this folder.\n')
    return out_dir


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}')
    return value


def demo_data_main(argv=None) -> int:
    """The command line; raises user errors (see :func:`main`)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('kind', choices=FORMATS, help='dataset format')
    parser.add_argument('out_dir', help='folder to write (a folder this tool wrote before is replaced)')
    parser.add_argument('--seed', type=int, default=0, help='random seed of the generated content')
    parser.add_argument('--train-per-class', type=positive_int, help='imagenet: training images of each class')
    parser.add_argument('--val-per-class', type=positive_int, help='imagenet: held-out images of each class')
    args = parser.parse_args(argv)
    options = {key: value for key, value in vars(args).items() if key.endswith('_per_class') and value is not None}
    if options and args.kind != 'imagenet':
        parser.error('--train-per-class and --val-per-class apply to imagenet only')
    write_atomically(args.kind, args.out_dir, args.seed, **options)
    print(f'wrote a tiny {args.kind} dataset to {args.out_dir}')
    return 0



def main(argv=None) -> int:
    """The tool: an output-path problem gives one ``error:`` line and exit status 2, Ctrl-C exit status 130
    (nothing is left behind)."""
    return run_tool(demo_data_main, argv, interrupted='interrupted; nothing was written')


if __name__ == '__main__':
    sys.exit(main())
