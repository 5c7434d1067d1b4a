# Semantic FPN with a RedNet-50 backbone and mmseg's conv FPN neck on Cityscapes (18.5M parameters).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/cityscapes.py',
    '../_base_/default_runtime_mmseg.py', 'mmseg::_base_/schedules/schedule_80k.py'
]

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

# The ImageNet RedNet-50 (e.g. trained with configs/rednet/rednet50_64xb32-warmup-coslr-130e_in1k.py).
# Its stem involution has a 3x3 kernel and this backbone's a 7x7 one, so mmengine skips
# stem.1.conv2.conv.{weight,bias} with a size-mismatch warning and they keep their fresh init;
# every other backbone weight loads. See docs/segmentation.md.
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
