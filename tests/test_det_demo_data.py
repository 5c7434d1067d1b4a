"""tools/dataset_converters/demo_data/coco.py writes a COCO instance dataset that pycocotools and mmdet's CocoDataset read."""
import os.path as osp
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from pycocotools.coco import COCO

import involution_mm  # noqa: F401
from mmdet.registry import DATASETS
from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
from demo_data import coco  # noqa: E402

CONFIG = osp.join(REPO, 'configs', 'involution_det', 'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('demo') / 'coco')
    coco.write(root)
    return root


@pytest.mark.parametrize('split, num_images', [('train', 6), ('val', 3)])
def test_annotations_are_consistent(split, num_images, data_root):
    api = COCO(osp.join(data_root, 'annotations', f'instances_{split}2017.json'))
    assert len(api.getImgIds()) == num_images and len(api.getCatIds()) == 80
    assert api.loadCats(api.getCatIds(catNms=['car']))[0]['id'] == 3
    for image_id in api.getImgIds():
        anns = api.loadAnns(api.getAnnIds(imgIds=[image_id]))
        assert 1 <= len(anns) <= 3
        for ann in anns:
            mask = api.annToMask(ann)
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            # the rasterised polygon fills its box and has about its area (pixel rounding aside)
            assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2
            assert abs(xs.max() + 1 - (x + w)) <= 2 and abs(ys.max() + 1 - (y + h)) <= 2
            assert mask.sum() == pytest.approx(ann['area'], rel=0.15)
            assert ann['category_id'] in (1, 2, 3) and ann['iscrowd'] == 0


@pytest.mark.parametrize('split', ['train', 'val'])
def test_the_config_dataset_reads_images_boxes_and_masks(split, data_root):
    init_default_scope('mmdet')
    dataset_cfg = Config.fromfile(CONFIG)[f'{split}_dataloader'].dataset
    dataset_cfg.data_root = data_root
    dataset_cfg.pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_mask=True)]
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == (6 if split == 'train' else 3)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample['img'].shape == (128, 160, 3)
        assert len(sample['gt_bboxes']) == len(sample['gt_masks']) >= 1
        assert set(sample['gt_bboxes_labels'].tolist()) <= {0, 1, 2}  # person, bicycle, car
        masks = sample['gt_masks'].to_ndarray()
        assert masks.shape[1:] == (128, 160) and all(m.any() for m in masks)
