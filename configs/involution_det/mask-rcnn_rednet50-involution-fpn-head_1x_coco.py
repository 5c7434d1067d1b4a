# Mask R-CNN, RedNet-50 backbone, involution FPN, involution RPN head and involution mask head (paper: 29.5M
# parameters). The RoI box head stays mmdet's Shared2FCBBoxHead, as in the paper.
# Recipe: 1x, warm-up 2000 iters from 0.001, gradient clipping at max_norm 5. (The official config's clipping
# line, `optimizer_config = dict(grad_clip(dict(...)))`, is not valid Python; max_norm 5 is what it meant.)
_base_ = './mask-rcnn_rednet50-involution-fpn_1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(
    rpn_head=dict(type='InvolutionRPNHead'),
    roi_head=dict(mask_head=dict(type='InvolutionFCNMaskHead')))

optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))
