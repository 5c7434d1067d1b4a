"""ImageNet format for mmpretrain: ``{train,val}/<class>/*.JPEG`` and ``meta/{train,val}.txt``.

Each line of ``meta/<split>.txt`` is ``<class>/<file> <label>``, relative to the split folder, as
mmpretrain's ``ImageNet(data_root, split=...)`` reads it.

The classes are patterns (:data:`PATTERNS`: horizontal, vertical and diagonal stripes, a checkerboard), each
filling the image in two random colours, at a random scale (period) and position (phase), with pixel noise.
Only the pattern tells the classes apart, so a model that scores well on the held-out ``val`` split has
learned the patterns; RedNet-26 learns them in a few hundred iterations on a CPU (``tools/demo.sh``). A
horizontal flip, which the training pipeline applies, keeps the class of every image (it turns diagonal
stripes the other way).
"""
import os
import os.path as osp
from typing import Callable, Dict, Tuple

import numpy as np
from PIL import Image


# class name -> wave over pixel offsets (dx, dy) from a random origin, for a period; the wave's sign picks
# the colour. Labels follow this order.
PATTERNS: Dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = dict(
    horizontal_stripes=lambda dx, dy, period: np.sin(2 * np.pi * dy / period),
    vertical_stripes=lambda dx, dy, period: np.sin(2 * np.pi * dx / period),
    diagonal_stripes=lambda dx, dy, period: np.sin(2 * np.pi * (dx + dy) / (np.sqrt(2) * period)),
    checkerboard=lambda dx, dy, period: np.sin(2 * np.pi * dx / period) * np.sin(2 * np.pi * dy / period),
)


def random_colours(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Two colours that differ clearly (in at least one channel by 100)."""
    while True:
        first, second = rng.integers(0, 256, (2, 3))
        if np.abs(first - second).max() >= 100:
            return first, second


def pattern_image(rng: np.random.Generator, pattern: str, size: int) -> np.ndarray:
    """An RGB ``size`` x ``size`` image of one pattern, as a uint8 array."""
    origin = rng.uniform(0, size, 2)  # the position of the pattern
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = PATTERNS[pattern](x - origin[0], y - origin[1], rng.uniform(size / 6, size / 3))  # the scale
    first, second = random_colours(rng)
    image = np.where(wave[..., None] > 0, first, second) + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write(root: str, seed: int = 0, train_per_class: int = 8, val_per_class: int = 4, size: int = 48) -> None:
    """Write the dataset into the new folder ``root``.

    Args:
        root (str): The folder to create.
        seed (int): Seed of the random patterns. Defaults to 0.
        train_per_class (int): Training images of each class. Defaults to 8.
        val_per_class (int): Held-out images of each class. Defaults to 4.
        size (int): Width and height of the images. Defaults to 48.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'))
    for split, per_class in (('train', train_per_class), ('val', val_per_class)):
        lines = []
        for label, pattern in enumerate(PATTERNS):
            folder = f'n{label:08d}'
            os.makedirs(osp.join(root, split, folder))
            for k in range(per_class):
                name = f'{folder}/{split}_{pattern}_{k}.JPEG'
                Image.fromarray(pattern_image(rng, pattern, size)).save(osp.join(root, split, name), quality=95)
                lines.append(f'{name} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
