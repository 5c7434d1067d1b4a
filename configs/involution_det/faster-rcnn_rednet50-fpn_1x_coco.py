# Faster R-CNN, RedNet-50 backbone, convolutional FPN and heads (paper: 31.6M parameters, 39.5 box AP).
# Recipe of the official config: mmdet's 1x schedule as is (lr 0.02, linear warm-up 500 iters from 0.001,
# steps 8 and 11), no gradient clipping.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime_mmdet.py',
]

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

# An ImageNet RedNet-50 (configs/rednet/rednet50_64xb32-warmup-coslr-130e_in1k.py); see docs/detection.md.
# Its stem involution has kernel 3, this one 7: those two tensors (stem.1.conv2.conv.weight/bias) are skipped
# with a size-mismatch warning and keep their initialisation.
model = dict(
    backbone=dict(
        _delete_=True,
        type='RedNet',
        depth=50,
        stem_involution_kernel=7,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/rednet50_in1k.pth', prefix='backbone.')))
