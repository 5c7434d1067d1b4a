#!/usr/bin/env python
"""Export a config's model to ONNX, in standard operators with a dynamic batch, and check it on ONNX Runtime.

Examples:
    python tools/deployment/export_onnx.py configs/rednet/rednet50_64xb32-warmup-coslr-130e_in1k.py rednet50.pth rednet50.onnx
    python tools/deployment/export_onnx.py configs/involution_det/mask-rcnn_rednet50-involution-fpn-head_1x_coco.py \
        mask_rcnn.pth mask_rcnn_features.onnx --shape 800 1344

Classifiers and segmentors are exported whole (images to logits); detectors as backbone, neck and dense head
(images to feature maps and the head's raw maps). The file is written whole or not at all; ONNX Runtime then
runs it on a batch of another size and compares it with PyTorch. Needs the deploy extra
(``pip install "involution-mm[deploy]"``: onnx, onnxscript, onnxruntime). See docs/deploy.md.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # run from a checkout without install

from involution_mm.export import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
