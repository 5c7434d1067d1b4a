"""Cityscapes format for mmsegmentation: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` images with
``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` labels (19 train ids, 255 = ignore).

mmseg's ``CityscapesDataset(data_root, data_prefix=dict(img_path='leftImg8bit/<split>',
seg_map_path='gtFine/<split>'))`` reads the images and the ``labelTrainIds`` maps. Each label map also gets
its ``_gtFine_labelIds.png`` twin in the official Cityscapes ids, which the ``cityscapesscripts`` evaluation
(mmseg's ``CityscapesMetric``) compares against. Scenes are synthetic street-like layouts (sky, buildings,
road, objects) whose colours depend on the class, so a model can learn something from a few iterations.
"""
import os
import os.path as osp
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

NUM_CLASSES = 19
IGNORE_INDEX = 255
# Cityscapes label id of each train id 0..18 (road, sidewalk, ..., bicycle); ignore maps to 0 (unlabeled).
TRAIN_ID_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY = 0, 1, 2, 8, 10
OBJECT_CLASSES = (3, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15, 16, 17, 18)  # drawn as boxes on the scene
SPLITS: Dict[str, Tuple[str, ...]] = {'train': ('aachen', 'bochum'), 'val': ('frankfurt', )}


def class_colours(rng: np.random.Generator) -> np.ndarray:
    """One distinct RGB colour per train id, shape (19, 3)."""
    return rng.integers(20, 236, (NUM_CLASSES, 3)).astype(np.float32)


def scene_labels(rng: np.random.Generator, height: int, width: int, objects: Sequence[int]) -> np.ndarray:
    """A street-like train-id map: sky, buildings and vegetation, sidewalk, road, boxes, ignored border."""
    labels = np.full((height, width), SKY, np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    labels[int(height * 0.15):horizon] = BUILDING
    labels[int(height * 0.15):horizon, :width // 4] = VEGETATION
    labels[horizon:] = ROAD
    labels[horizon:horizon + height // 8] = SIDEWALK
    ego_top = height - max(1, height // 16)
    slot = width // max(1, len(objects))  # one column per object, so none hides another
    for i, label in enumerate(objects):
        box_h, box_w = rng.integers(height // 8, height // 3), rng.integers(slot // 2, slot + 1)
        top = rng.integers(horizon - box_h // 2, ego_top - box_h)
        left = i * slot + rng.integers(0, slot - box_w + 1)
        labels[top:top + box_h, left:left + box_w] = label
    labels[ego_top:] = IGNORE_INDEX  # the ego-vehicle strip is not labelled
    return labels


def render(rng: np.random.Generator, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """An RGB image that paints each class in its colour, with noise."""
    image = np.zeros(labels.shape + (3, ), np.float32)
    known = labels != IGNORE_INDEX
    image[known] = colours[labels[known]]
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write(root: str, seed: int = 0, images_per_city: int = 2, height: int = 64, width: int = 128) -> None:
    """Write the dataset into the new folder ``root``; every train id appears in each split."""
    if height < 32 or width < 32:
        raise ValueError(f'images need at least 32x32 pixels for the scene layout, got {height}x{width}')
    rng = np.random.default_rng(seed)
    colours = class_colours(rng)
    os.makedirs(root)
    for split, cities in SPLITS.items():
        num_images = images_per_city * len(cities)
        # deal the object classes out round-robin so that each split covers all 19 train ids
        objects = [OBJECT_CLASSES[i::num_images] for i in range(num_images)]
        for index, (city, frame) in enumerate((c, f) for c in cities for f in range(images_per_city)):
            stem = f'{city}_{index:06d}_{frame:06d}'
            image_dir = osp.join(root, 'leftImg8bit', split, city)
            label_dir = osp.join(root, 'gtFine', split, city)
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(label_dir, exist_ok=True)
            labels = scene_labels(rng, height, width, objects[index])
            label_ids = np.zeros_like(labels)
            known = labels != IGNORE_INDEX
            label_ids[known] = np.asarray(TRAIN_ID_TO_LABEL_ID, np.uint8)[labels[known]]
            Image.fromarray(render(rng, labels, colours)).save(osp.join(image_dir, f'{stem}_leftImg8bit.png'))
            Image.fromarray(labels).save(osp.join(label_dir, f'{stem}_gtFine_labelTrainIds.png'))
            Image.fromarray(label_ids).save(osp.join(label_dir, f'{stem}_gtFine_labelIds.png'))
