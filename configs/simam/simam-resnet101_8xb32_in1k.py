_base_ = './simam-resnet18_8xb32_in1k.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(backbone=dict(depth=101), head=dict(in_channels=2048))
