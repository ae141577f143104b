"""`digits`: the embedded default dataset, scikit-learn's bundled handwritten digits.

Real data (1,797 scans of handwritten digits by 43 writers, UCI "optdigits"), 10 classes in the
order 0..9, shipped with scikit-learn so every test and the README command run offline.

Working resolution 16x16 RGB: the source is 8x8 with 17 grey levels; a 2x bilinear upsampling is
the smallest size at which the small-input students (3x3 stride-1 stems, three stride-2 stages)
and a 6-scale VAR token pyramid (1,2,3,4,6,8 on an 8x8 latent) still apply, while keeping a
whole distill-and-evaluate cycle within minutes on a 2-core CPU. Grey is replicated to 3 channels
so every model and generator sees the same input format as on the natural-image datasets.

Split: fixed and stratified: within each class, in the original sample order, every 5th sample
(positions 4, 9, 14, ...) is validation, the rest training: 1,442 train / 355 val.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ddbench.core.errors import ConfigError
from ddbench.core.images import ArrayImageDataset
from ddbench.core.interfaces import DatasetSpec

RESOLUTION = 16
VAL_EVERY = 5


@lru_cache(maxsize=1)
def _load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 16, 16, 3) and their labels, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    upsampled = F.interpolate(grey, size=RESOLUTION, mode="bilinear", align_corners=False)
    uint8 = (upsampled.clamp(0, 1) * 255).round().to(torch.uint8)
    rgb = uint8.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()
    return rgb, np.asarray(digits.target, dtype=np.int64)


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Sample indices of `split`: every VAL_EVERY-th sample of each class is validation."""
    position_in_class = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        position_in_class[members] = np.arange(len(members))
    is_val = position_in_class % VAL_EVERY == VAL_EVERY - 1
    return np.flatnonzero(is_val if split == "val" else ~is_val)


class Digits(DatasetSpec):
    name = "digits"
    resolution = RESOLUTION
    mean = (0.3053, 0.3053, 0.3053)
    std = (0.3189, 0.3189, 0.3189)
    preset_family = "digits"
    teacher_recipe = "digits"
    source = "embedded: scikit-learn's load_digits() (no download needed)"

    @property
    def class_names(self) -> list[str]:
        return [str(digit) for digit in range(10)]

    def split(self, name: str, transform: Callable | None = None) -> ArrayImageDataset:
        if name not in ("train", "val"):
            raise ConfigError(f"digits has splits 'train' and 'val', not {name!r}")
        images, labels = _load_arrays()
        chosen = split_indices(labels, name)
        return ArrayImageDataset(images[chosen], labels[chosen], transform)
