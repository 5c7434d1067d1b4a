# RetinaNet, RedNet-50 backbone, convolutional FPN (paper: 27.8M parameters, 38.2 box AP).
# Recipe of the official config: 1x, lr 0.01, linear warm-up 2000 iters from 0.001, no gradient clipping.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
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

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=2000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
