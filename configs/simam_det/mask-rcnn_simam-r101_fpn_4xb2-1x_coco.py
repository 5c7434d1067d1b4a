# The paper's placement: SimAM between conv2 and bn2 of every block (our SimAMResNet for mmdet), as in the
# official SimAM detectors. Same weights, schedule and data as the plugin config it inherits.
_base_ = './mask-rcnn_r101-simam_fpn_4xb2-1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='SimAMResNet', e_lambda=0.1, plugins=None))
