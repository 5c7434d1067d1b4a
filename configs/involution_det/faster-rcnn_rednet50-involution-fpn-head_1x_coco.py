# Faster R-CNN, RedNet-50 backbone, involution FPN and involution RPN head (paper: 29.0M parameters).
# The RoI box head stays mmdet's Shared2FCBBoxHead, as in the paper.
# Recipe of the official config: 1x, warm-up 2000 iters from 0.001, gradient clipping at max_norm 5.
_base_ = './faster-rcnn_rednet50-involution-fpn_1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(rpn_head=dict(type='InvolutionRPNHead'))

optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))
