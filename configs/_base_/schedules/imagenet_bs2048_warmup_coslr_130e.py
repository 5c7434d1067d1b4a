# RedNet ImageNet recipe (Li et al., CVPR 2021): 64 GPUs x 32 images, SGD with Nesterov momentum, a linear
# warm-up over the first 3130 iterations from 0.25x, multiplied onto a cosine decay to 0 over 130 epochs.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.8, momentum=0.9, weight_decay=1e-4, nesterov=True))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=3130),
    dict(type='CosineAnnealingLR', T_max=130, eta_min=0, by_epoch=True, begin=0, end=130),
]

train_cfg = dict(by_epoch=True, max_epochs=130, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# The learning rate above is for a total batch of 2048; `--auto-scale-lr` rescales it to yours.
auto_scale_lr = dict(base_batch_size=2048)
