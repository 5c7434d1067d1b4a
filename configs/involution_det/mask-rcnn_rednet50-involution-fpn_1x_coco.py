# Mask R-CNN, RedNet-50 backbone, involution FPN (paper: 32.2M parameters, 40.8 box / 36.4 mask AP).
# Recipe of the official config: 1x with a linear warm-up of 2000 iters from 0.001, no gradient clipping.
_base_ = './mask-rcnn_rednet50-fpn_1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(neck=dict(type='InvolutionFPN'))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=2000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
