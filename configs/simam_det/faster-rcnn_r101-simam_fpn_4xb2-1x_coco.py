_base_ = './faster-rcnn_r50-simam_fpn_4xb2-1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        depth=101, init_cfg=dict(type='Pretrained', checkpoint='checkpoints/simam-resnet101_mmdet.pth')))
