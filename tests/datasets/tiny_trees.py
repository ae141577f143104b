"""Tiny ImageNet-layout trees (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`) for tests.

Each class is a distinct colour with seeded noise, so a small model learns the classes in a few
epochs and a wrong class order shows as low accuracy. Images are not square (the validation
transform's resize and centre crop have something to do).
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def class_colour(index: int, count: int) -> np.ndarray:
    red, green, blue = colorsys.hsv_to_rgb(index / count, 0.9, 0.9)
    return np.array([red, green, blue]) * 255


def make_wnid_tree(root: Path, wnids: Sequence[str], train: int = 6, val: int = 3, size: tuple[int, int] = (20, 16),
                   seed: int = 0) -> Path:
    """Write `train` and `val` JPEGs per WNID under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for index, wnid in enumerate(sorted(wnids)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for image_index in range(count):
                pixels = class_colour(index, len(wnids)) + rng.normal(0, 20, size=(size[1], size[0], 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    folder / f"{wnid}_{image_index}.JPEG", quality=95)
    return root
