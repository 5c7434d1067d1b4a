# UPerNet with a RedNet-50 backbone on Cityscapes (56.4M parameters, the auxiliary FCN head included).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/cityscapes.py',
    '../_base_/default_runtime_mmseg.py', 'mmseg::_base_/schedules/schedule_80k.py'
]

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

# The ImageNet RedNet-50; its 3x3 stem involution does not fit this backbone's 7x7 one, so mmengine
# skips stem.1.conv2.conv.{weight,bias} with a size-mismatch warning (see docs/segmentation.md).
checkpoint_file = 'checkpoints/rednet50_in1k.pth'

crop_size = (512, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='RedNet',
        depth=50,
        stem_involution_kernel=7,
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.')))
