# Mask R-CNN with a SimAM-ResNet-50 backbone (Yang et al., ICML 2021), through mmdet's own ResNet and its
# `plugins`. Note: mmdet's Bottleneck runs `after_conv2` plugins after conv2 -> bn2 -> ReLU, whereas the
# paper puts SimAM between conv2 and bn2; the mask-rcnn_simam-r50_* config has the paper's placement.
# See docs/simam.md.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        plugins=[
            dict(cfg=dict(type='SimAM', e_lambda=0.1), stages=(True, True, True, True), position='after_conv2')
        ],
        # The released ImageNet SimAM-ResNet-50, converted with
        # tools/model_converters/convert_checkpoint.py resnet50.pth.tar checkpoints/simam-resnet50_mmdet.pth \
        #     --model simam-resnet50 --to mmdet
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/simam-resnet50_mmdet.pth')))

# The paper's 1x schedule: 4 GPUs x 2 images, SGD lr 0.01, linear warm-up over 500 iterations from 0.001x,
# x0.1 after epochs 8 and 11.
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(base_batch_size=8)

# Multi-process runs, as configs/_base_/default_runtime_mmdet.py adds to mmdet's runtime (this config
# inherits a whole mmdet config, so it sets them itself): the same BN statistics in every process whenever
# a checkpoint is saved or validation runs, and a 30-minute timeout for collective operations.
custom_hooks = [dict(type='SyncBuffersEveryIterHook')]
env_cfg = dict(dist_cfg=dict(timeout=1800))
