#!/usr/bin/env python
"""Convert a released checkpoint into a checkpoint of an involution_mm model.

Examples:
    python tools/model_converters/convert_checkpoint.py --list
    python tools/model_converters/convert_checkpoint.py rednet50.pth rednet50_mmpretrain.pth \
        --config configs/rednet/rednet50_64xb32-warmup-coslr-130e_in1k.py
    python tools/model_converters/convert_checkpoint.py resnet50.pth.tar simam-resnet50_in1k.pth --model simam-resnet50
    python tools/model_converters/convert_checkpoint.py resnet50.pth.tar simam-resnet50_mmdet.pth --model simam-resnet50 --to mmdet

The input is loaded weights-only and converted only when its keys and shapes match the model exactly (the
error lists what is missing, unexpected or mis-shaped); the output is written whole or not at all, and an
existing output is kept unless --force is given. See docs/released_checkpoints.md and docs/simam.md.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # run from a checkout without install

from involution_mm.convert import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
