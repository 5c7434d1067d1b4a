"""tools/dataset_converters/demo_data/cityscapes.py writes a tree that mmseg's CityscapesDataset and pipelines read."""
import glob
import os.path as osp
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
from demo_data import cityscapes  # noqa: E402

pytest.importorskip('mmseg')
from mmseg.registry import DATASETS  # noqa: E402

CONFIG = osp.join(REPO, 'configs', 'involution_seg', 'fpn_rednet50-involution-neck_4xb2-80k_cityscapes-512x1024.py')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('demo') / 'cityscapes')
    cityscapes.write(root)
    return root


@pytest.mark.parametrize('split', ['train', 'val'])
def test_the_config_dataset_reads_every_image_with_its_labels(split, data_root):
    init_default_scope('mmseg')
    dataset_cfg = Config.fromfile(CONFIG)[f'{split}_dataloader'].dataset
    dataset_cfg.data_root = data_root
    dataset_cfg.pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    dataset = DATASETS.build(dataset_cfg)
    cities = cityscapes.SPLITS[split]
    assert len(dataset) == 2 * len(cities)
    seen = set()
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample['img_path'].endswith('_leftImg8bit.png')
        assert osp.basename(osp.dirname(sample['img_path'])) in cities
        assert sample['img'].shape == (64, 128, 3)
        assert sample['gt_seg_map'].shape == (64, 128)
        seen |= set(np.unique(sample['gt_seg_map']).tolist())
    assert seen == set(range(19)) | {255}  # every train id, and the ignore index


def test_label_ids_match_train_ids(data_root):
    train_id_files = sorted(glob.glob(osp.join(data_root, 'gtFine', '*', '*', '*_gtFine_labelTrainIds.png')))
    assert len(train_id_files) == 6
    lut = np.zeros(256, np.uint8)  # train id -> Cityscapes label id; 255 (ignore) -> 0 (unlabeled)
    lut[:19] = cityscapes.TRAIN_ID_TO_LABEL_ID
    for path in train_id_files:
        train_ids = np.array(Image.open(path))
        label_ids = np.array(Image.open(path.replace('labelTrainIds', 'labelIds')))
        assert np.array_equal(lut[train_ids], label_ids)


def test_same_seed_same_data(tmp_path):
    for name in ('a', 'b', 'c'):
        cityscapes.write(str(tmp_path / name), seed=1 if name == 'c' else 0)
    image = 'leftImg8bit/val/frankfurt/frankfurt_000000_000000_leftImg8bit.png'
    a, b, c = (np.array(Image.open(tmp_path / name / image)) for name in ('a', 'b', 'c'))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_too_small_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match='at least 32x32'):
        cityscapes.write(str(tmp_path / 'tiny'), height=16)
