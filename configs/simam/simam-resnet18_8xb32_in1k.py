# SimAM-ResNet-18 (Yang et al., ICML 2021) on ImageNet with the paper's recipe: 8 GPUs x 32 images (the
# paper's batch of 256), SGD lr 0.1, momentum 0.9, weight decay 1e-4, 100 epochs with the learning rate
# x0.1 every 30 epochs (mmpretrain's imagenet_bs256 schedule), torchvision-style (pillow) augmentation.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    '../_base_/default_runtime_mmpretrain.py',
]

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

# SimAM after conv2 and before bn2 in every block, lambda 0.1. The official models start from torchvision's
# initialisation, which does not zero the last BN of each block.
model = dict(backbone=dict(type='SimAMResNet', e_lambda=0.1, zero_init_residual=False))
