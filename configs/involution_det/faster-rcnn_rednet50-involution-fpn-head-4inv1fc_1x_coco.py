# NOT IN THE PAPER: the involution FPN + RPN head model with its RoI box head replaced by four shared
# involution blocks (involution 7x7 + ReLU) and one fc, the involution analogue of mmdet's
# Shared4Conv1FCBBoxHead. Same recipe as faster-rcnn_rednet50-involution-fpn-head_1x_coco.py; no published
# result exists for it.
_base_ = './faster-rcnn_rednet50-involution-fpn-head_1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(roi_head=dict(bbox_head=dict(type='InvolutionShared4Conv1FCBBoxHead')))
