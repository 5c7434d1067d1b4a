# Semantic FPN with a RedNet-50 backbone and the involution FPN neck on Cityscapes (16.4M parameters).
_base_ = './fpn_rednet50_4xb2-80k_cityscapes-512x1024.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
# 7x7 involutions replace the 3x3 output convs; their kernel-generation BN is synchronised like the rest.
model = dict(neck=dict(type='InvolutionFPN', involution_cfg=dict(kernel_size=7, norm_cfg=norm_cfg)))
