"""End to end through the upstream tools on tiny generated data: a SimAM config trains a few iterations with
tools/dist_train.sh, then tools/dist_test.sh tests the checkpoint it saved and prints the metrics."""
import os.path as osp
import re
from typing import List

import pytest

from conftest import parse_test_accuracies, run_command


def train_then_test(config: str, work_dir, options: List[str]) -> str:
    """Train one epoch, test the last checkpoint; returns both logs."""
    train = run_command(['tools/dist_train.sh', config, '1', '--work-dir', str(work_dir), '--cfg-options',
                         *options, 'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1'])
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    assert osp.isfile(checkpoint) and checkpoint.endswith('epoch_1.pth')
    test = run_command(['tools/dist_test.sh', config, checkpoint, '1', '--work-dir', str(work_dir),
                        '--cfg-options', *options])
    return train + test


def data_options(data: str, loaders=('train', 'val', 'test')) -> List[str]:
    return [f'{loader}_dataloader.{key}' for loader in loaders
            for key in (f'dataset.data_root={data}', 'num_workers=1')]


@pytest.mark.e2e
def test_simam_resnet18_trains_and_tests_on_tiny_imagenet(tmp_path):
    data = tmp_path / 'imagenet'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'imagenet', str(data)])
    options = data_options(str(data)) + [f'{split}_dataloader.batch_size=8' for split in ('train', 'val', 'test')]
    out = train_then_test('configs/simam/simam-resnet18_8xb32_in1k.py', tmp_path / 'work', options)
    assert 'SimAMResNet' in out and 'Epoch(train) [1][4/4]' in out  # 32 images at batch 8
    top1, top5 = parse_test_accuracies(out)
    assert 0 <= top1 <= top5 <= 100  # a 1000-way head after 4 iterations: no more can be expected


@pytest.mark.e2e
def test_faster_rcnn_simam_r50_trains_and_tests_on_tiny_coco(tmp_path):
    """The plugin config, its backbone initialised from a released-layout file converted by our tool."""
    from involution_mm.convert import convert_checkpoint
    from test_convert_checkpoint import official_simam_resnet, save_official
    released = save_official(official_simam_resnet('resnet50'), tmp_path / 'resnet50.pth.tar')
    backbone = tmp_path / 'simam-resnet50_mmdet.pth'
    convert_checkpoint(released, str(backbone), 'simam-resnet50', 'mmdet')

    data = tmp_path / 'coco'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'coco', str(data)])
    annotations = data / 'annotations' / 'instances_val2017.json'
    options = data_options(str(data)) + [
        f'val_evaluator.ann_file={annotations}', f'test_evaluator.ann_file={annotations}',
        # 160x128 images: a small scale instead of (1333, 800) keeps it CPU-sized
        'train_dataloader.dataset.pipeline.2.scale=(320,256)',
        'val_dataloader.dataset.pipeline.1.scale=(320,256)',
        'test_dataloader.dataset.pipeline.1.scale=(320,256)',
        f'model.backbone.init_cfg.checkpoint={backbone}']
    config = 'configs/simam_det/faster-rcnn_r50-simam_fpn_4xb2-1x_coco.py'
    out = train_then_test(config, tmp_path / 'work', options)
    assert f'load model from: {backbone}' in out and 'do not match' not in out  # strict-clean backbone load
    assert "'SimAM'" in out and 'Epoch(train) [1][3/3]' in out  # 6 images at batch 2
    assert re.search(r'Epoch\(test\) \[3/3\]\s+coco/bbox_mAP: [-\d.]+', out), out[-3000:]
