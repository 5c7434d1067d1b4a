_base_ = './simam-resnet18_8xb32_in1k.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

# SimAM after the grouped 3x3 conv2 (32 groups of 4 channels in the first stage), before bn2.
model = dict(
    backbone=dict(type='SimAMResNeXt', depth=50, groups=32, width_per_group=4),
    head=dict(in_channels=2048))
