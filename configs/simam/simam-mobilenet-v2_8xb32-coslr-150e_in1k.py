# SimAM-MobileNetV2 (Yang et al., ICML 2021) on ImageNet with the paper's recipe: 8 GPUs x 32 images (the
# paper's batch of 256), SGD lr 0.05, momentum 0.9, weight decay 4e-5, cosine decay to 0 over 150 epochs.
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v2_1x.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    '../_base_/default_runtime_mmpretrain.py',
]

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

# SimAM after the depthwise conv (before its BN) of every inverted residual block, lambda 0.1.
model = dict(backbone=dict(type='SimAMMobileNetV2', e_lambda=0.1))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=4e-5))
param_scheduler = dict(type='CosineAnnealingLR', T_max=150, eta_min=0, by_epoch=True, begin=0, end=150)

train_cfg = dict(by_epoch=True, max_epochs=150, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# The learning rate above is for a total batch of 256; `--auto-scale-lr` rescales it to yours.
auto_scale_lr = dict(base_batch_size=256)
