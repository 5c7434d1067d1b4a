#!/usr/bin/env python
"""Write a tiny dataset in an upstream on-disk format, in seconds.

    python tools/make_demo_data.py imagenet data/demo_imagenet

Formats are the modules of ``tools/demo_data`` (each documents its layout). The output folder is built
beside its destination and moved into place, so it is never left half-written; an existing one is replaced.
"""
import argparse
import importlib
import os
import os.path as osp
import pkgutil
import shutil
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import demo_data  # noqa: E402

FORMATS = sorted(m.name for m in pkgutil.iter_modules(demo_data.__path__))


def write_atomically(kind: str, out_dir: str, seed: int = 0) -> None:
    """Write dataset ``kind`` to ``out_dir`` through a staging folder in the same parent."""
    writer = importlib.import_module(f'demo_data.{kind}').write
    out_dir = osp.abspath(out_dir)
    os.makedirs(osp.dirname(out_dir), exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.demo-', dir=osp.dirname(out_dir))
    try:
        writer(osp.join(staging, 'data'), seed=seed)
        if osp.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(osp.join(staging, 'data'), out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('kind', choices=FORMATS, help='dataset format')
    parser.add_argument('out_dir', help='folder to write (replaced if it exists)')
    parser.add_argument('--seed', type=int, default=0, help='random seed of the generated content')
    args = parser.parse_args(argv)
    write_atomically(args.kind, args.out_dir, args.seed)
    print(f'wrote a tiny {args.kind} dataset to {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
