"""End to end on a tiny COCO-format dataset: mmdet's own tools/train.py (through tools/dist_train.sh) trains the
Mask R-CNN involution neck + heads config for a few iterations on CPU, then tools/dist_test.sh tests the
checkpoint it saved and prints COCO bbox and segm metrics. The commands are those of docs/detection.md."""
import re

import pytest

from conftest import run_command

CONFIG = 'configs/involution_det/mask-rcnn_rednet50-involution-fpn-head_1x_coco.py'


def cpu_run_options(data: str) -> list:
    """--cfg-options that point the COCO config at the tiny dataset and shrink it to a CPU-sized run."""
    ann = f'{data}/annotations/instances_val2017.json'
    return [
        *(f'{split}_dataloader.dataset.data_root={data}' for split in ('train', 'val', 'test')),
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        # the 160x128 images at their own size instead of 1333x800
        'train_dataloader.dataset.pipeline.2.scale=(160,128)', 'val_dataloader.dataset.pipeline.1.scale=(160,128)',
        'test_dataloader.dataset.pipeline.1.scale=(160,128)',
        'train_dataloader.batch_size=2',
        *(f'{split}_dataloader.num_workers=1' for split in ('train', 'val', 'test')),
        'model.backbone.init_cfg=None',  # no ImageNet checkpoint here
        # fewer RoIs; keep low-scoring detections, since a model trained 3 iterations scores all below 0.05
        'model.train_cfg.rcnn.sampler.num=64', 'model.test_cfg.rpn.max_per_img=100',
        'model.test_cfg.rcnn.max_per_img=20', 'model.test_cfg.rcnn.score_thr=0.0',
    ]


@pytest.mark.e2e
def test_train_then_test_mask_rcnn_involution_neck_and_heads(tmp_path):
    data, work_dir = str(tmp_path / 'coco'), tmp_path / 'work'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'coco', data])
    options = cpu_run_options(data)

    out = run_command(['tools/dist_train.sh', CONFIG, '1', '--work-dir', str(work_dir), '--cfg-options', *options,
                       'train_cfg.max_epochs=1', 'train_cfg.val_begin=2', 'default_hooks.logger.interval=1'])
    assert 'Epoch(train) [1][3/3]' in out  # 6 images at batch 2
    losses = re.findall(r'Epoch\(train\) \[1\]\[\d/3\].*?loss: ([\d.]+).*?loss_mask: ([\d.]+)', out)
    assert len(losses) == 3 and all(float(value) > 0 for pair in losses for value in pair), out[-3000:]
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()

    out = run_command(['tools/dist_test.sh', CONFIG, str(checkpoint), '1', '--work-dir', str(work_dir),
                       '--cfg-options', *options])
    assert not re.search(r'missing keys|unexpected key|size mismatch', out)  # every weight came back
    test_line = re.search(r'Epoch\(test\) \[3/3\].*coco/bbox_mAP: ([-\d.]+).*coco/segm_mAP: ([-\d.]+)', out)
    assert test_line, out[-3000:]
    assert all(0.0 <= float(value) <= 1.0 for value in test_line.groups())
