# RetinaNet, RedNet-50 backbone, involution FPN (paper: 26.3M parameters, 38.2 box AP). The extra levels P6
# and P7 stay 3x3 stride-2 convolutions on C5, as in the paper.
# Recipe of the official config: 1x, lr 0.01, warm-up 2000 iters from 0.001, gradient clipping at max_norm 40.
_base_ = './retinanet_rednet50-fpn_1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(neck=dict(type='InvolutionFPN'))

optim_wrapper = dict(clip_grad=dict(max_norm=40, norm_type=2))
