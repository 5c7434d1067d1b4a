"""COCO instance format for mmdet: ``{train,val}2017/*.jpg`` and ``annotations/instances_{train,val}2017.json``.

The layout of mmdet's ``coco_detection.py`` / ``coco_instance.py`` dataset configs, so pointing ``data_root``
(and the evaluator's ``ann_file``) at the folder is enough. The annotation files list all 80 COCO categories
with their COCO ids (so models built for COCO predict categories that exist in the file), and each image holds
one to three filled polygons of person, bicycle or car on a noisy background, one per quadrant so that they
never overlap; every annotation has its polygon, box (``[x, y, w, h]``) and polygon area.
"""
import json
import os
import os.path as osp
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

COCO_NAMES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
    'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')
UNUSED_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # COCO numbers its 80 categories 1..90 with gaps
CATEGORIES = [dict(id=cat_id, name=name) for cat_id, name in
              zip((i for i in range(1, 91) if i not in UNUSED_COCO_IDS), COCO_NAMES)]
COLOURS = {1: (220, 60, 60), 2: (60, 200, 80), 3: (70, 90, 230)}  # the annotated ones: person, bicycle, car


def random_polygon(rng: np.random.Generator, cell: Tuple[int, int, int, int]) -> List[float]:
    """A simple polygon of 5 to 8 vertices around a point near the centre of ``cell`` = (x0, y0, x1, y1).

    Vertices at sorted angles never cross. Returned as a flat ``[x1, y1, x2, y2, ...]`` list, as COCO stores it.
    """
    x0, y0, x1, y1 = cell
    cell_w, cell_h = x1 - x0, y1 - y0
    cx, cy = x0 + rng.uniform(0.4, 0.6) * cell_w, y0 + rng.uniform(0.4, 0.6) * cell_h
    max_radius = 0.45 * min(cell_w, cell_h)
    angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 9)))
    radii = rng.uniform(0.6, 1.0, len(angles)) * max_radius
    xs = np.clip(cx + radii * np.cos(angles), x0, x1 - 1)
    ys = np.clip(cy + radii * np.sin(angles), y0, y1 - 1)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def polygon_area(flat: List[float]) -> float:
    """Shoelace area of a flat xy polygon."""
    xs, ys = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def write_split(root: str, split: str, rng: np.random.Generator, num_images: int, width: int,
                height: int) -> None:
    """Write the images of one split and its annotation file."""
    folder = f'{split}2017'
    os.makedirs(osp.join(root, folder))
    cells = [(x, y, x + width // 2, y + height // 2) for y in (0, height // 2) for x in (0, width // 2)]
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        noise = rng.normal(128, 20, (height, width, 3))
        image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for cell_index in rng.choice(len(cells), rng.integers(1, 4), replace=False):
            category = int(rng.choice(list(COLOURS)))
            polygon = random_polygon(rng, cells[cell_index])
            draw.polygon(polygon, fill=COLOURS[category])
            xs, ys = polygon[0::2], polygon[1::2]
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=category, segmentation=[polygon],
                     area=round(polygon_area(polygon), 2),
                     bbox=[min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)],
                     iscrowd=0))
        file_name = f'{image_id:012d}.jpg'
        image.save(osp.join(root, folder, file_name), quality=95)
        images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
    content = dict(info=dict(description=f'tiny generated COCO-format {split} set'), licenses=[],
                   images=images, annotations=annotations, categories=CATEGORIES)
    with open(osp.join(root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
        json.dump(content, f)


def write(root: str, seed: int = 0, num_train: int = 6, num_val: int = 3, width: int = 160,
          height: int = 128) -> None:
    """Write the dataset into the new folder ``root``."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'annotations'))
    write_split(root, 'train', rng, num_train, width, height)
    write_split(root, 'val', rng, num_val, width, height)
