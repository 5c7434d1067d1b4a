"""End to end on a tiny Cityscapes tree: tools/dist_train.sh (mmseg's tools/train.py) trains the
involution-neck config a few iterations on CPU with SyncBN switched to BN from the command line, then
tools/dist_test.sh tests the saved checkpoint with whole-image and with sliding-window inference."""
import re

import pytest
from mmengine.config import Config

from conftest import run_command
from involution_mm.checkpoint import load_checkpoint_file

CONFIG = 'configs/involution_seg/fpn_rednet50-involution-neck_4xb2-80k_cityscapes-512x1024.py'
MAX_ITERS = 4


def shrink_options(data_root: str) -> list:
    """The --cfg-options of docs/segmentation.md: tiny data, small crops, BN, no pretrained backbone."""
    options = []
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.dataset.data_root={data_root}', f'{split}_dataloader.num_workers=1']
    return options + [
        'train_dataloader.dataset.pipeline.2.scale=(128,64)',  # RandomResize around the 128x64 images
        'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',  # RandomCrop
        'val_dataloader.dataset.pipeline.1.scale=(128,64)',  # Resize
        'test_dataloader.dataset.pipeline.1.scale=(128,64)',
        'model.data_preprocessor.size=(64,64)',
        'model.backbone.init_cfg=None',
        'model.backbone.norm_cfg.type=BN',
        'model.neck.involution_cfg.norm_cfg.type=BN',
        'model.decode_head.norm_cfg.type=BN',
    ]


def miou(log: str, mode: str) -> float:
    match = re.search(rf'Iter\({mode}\) \[2/2\]\s+aAcc: ([\d.]+)\s+mIoU: ([\d.]+)\s+mAcc: ([\d.]+)', log)
    assert match, log[-3000:]
    a_acc, m_iou, m_acc = map(float, match.groups())
    assert 0 < a_acc <= 100 and 0 <= m_iou <= m_acc <= 100
    return m_iou


@pytest.mark.e2e
def test_train_then_test_whole_and_slide(tmp_path, official_layouts):
    data, work = str(tmp_path / 'cityscapes'), tmp_path / 'work'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'cityscapes', data])
    options = shrink_options(data)

    log = run_command(['tools/dist_train.sh', CONFIG, '1', '--work-dir', str(work), '--cfg-options', *options,
                       f'train_cfg.max_iters={MAX_ITERS}', f'train_cfg.val_interval={MAX_ITERS}',
                       f'default_hooks.checkpoint.interval={MAX_ITERS}', 'default_hooks.logger.interval=1'])
    assert re.search(rf'Iter\(train\) \[{MAX_ITERS}/{MAX_ITERS}\].*decode\.loss_ce: [\d.]+', log), log[-3000:]
    miou(log, 'val')
    checkpoint = (work / 'last_checkpoint').read_text().strip()
    assert checkpoint.endswith(f'iter_{MAX_ITERS}.pth')

    # the saved model has the released models' backbone and neck layouts (weights-only loading)
    state = load_checkpoint_file(checkpoint, map_location='cpu')['state_dict']
    for layout in ('rednet50_seg_backbone', 'seg_fpn_involution_neck_4outs'):
        assert {k: list(state[k].shape) for k in official_layouts[layout]} == official_layouts[layout]

    whole = run_command(['tools/dist_test.sh', CONFIG, checkpoint, '1', '--work-dir', str(work / 'whole'),
                         '--cfg-options', *options])
    slide = run_command(['tools/dist_test.sh', CONFIG, checkpoint, '1', '--work-dir', str(work / 'slide'),
                         '--cfg-options', *options, 'model.test_cfg.mode=slide',
                         'model.test_cfg.crop_size=(64,64)', 'model.test_cfg.stride=(64,32)'])
    miou(whole, 'test')
    miou(slide, 'test')
    for mode in ('whole', 'slide'):  # the configs the runs dumped: the command line took effect
        model = Config.fromfile(next((work / mode).glob('*/vis_data/config.py'))).model
        assert model.test_cfg.mode == mode
        norms = (model.backbone.norm_cfg, model.neck.involution_cfg.norm_cfg, model.decode_head.norm_cfg)
        assert [n.type for n in norms] == ['BN'] * 3
