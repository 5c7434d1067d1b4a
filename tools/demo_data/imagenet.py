"""ImageNet format for mmpretrain: ``{train,val}/<class>/*.JPEG`` and ``meta/{train,val}.txt``.

Each line of ``meta/<split>.txt`` is ``<class>/<file> <label>``, relative to the split folder, as
mmpretrain's ``ImageNet(data_root, split=...)`` reads it.
"""
import os
import os.path as osp

import numpy as np
from PIL import Image


def class_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """An RGB image whose stripes' colour and direction depend on the class, with noise."""
    base = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 160) % 256], np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    stripes = np.sin(ramp * (4 + 2 * label) * np.pi)[:, None] * np.ones(size, np.float32)[None, :]
    if label % 2:
        stripes = stripes.T
    image = base[None, None, :] * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write(root: str, seed: int = 0, num_classes: int = 4, train_per_class: int = 8, val_per_class: int = 4,
          size: int = 64) -> None:
    """Write the dataset into the new folder ``root``."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'))
    for split, per_class in (('train', train_per_class), ('val', val_per_class)):
        lines = []
        for label in range(num_classes):
            folder = f'n{label:08d}'
            os.makedirs(osp.join(root, split, folder))
            for k in range(per_class):
                name = f'{folder}/{split}_{label}_{k}.JPEG'
                Image.fromarray(class_image(rng, label, size)).save(osp.join(root, split, name), quality=95)
                lines.append(f'{name} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
