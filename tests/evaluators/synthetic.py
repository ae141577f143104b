"""A tiny synthetic dataset and distilled set for fast evaluator/teacher tests.

Each class is a distinct colour with mild seeded noise, so even a few epochs of a small model
separate the classes, and a model's accuracy tells a correct class order from a permuted one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddbench.core.distilled import DistilledSet, DistilledSetWriter
from ddbench.core.identity import RunIdentity
from ddbench.core.images import ArrayImageDataset
from ddbench.core.interfaces import DatasetSpec

PALETTE = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [30, 230, 230], [230, 30, 230]])


class ColourSquares(DatasetSpec):
    """`num_classes` colours at 8 px: 24 train and 12 val images per class."""

    name = "colour_squares"
    resolution = 8
    mean = (0.5, 0.5, 0.5)
    std = (0.35, 0.35, 0.35)
    preset_family = "digits"
    teacher_recipe = "digits"
    num_colours = 4
    per_class = {"train": 24, "val": 12}

    @property
    def class_names(self) -> list[str]:
        return [f"c{i}" for i in range(self.num_colours)]

    def split(self, name, transform=None):
        rng = np.random.default_rng(0 if name == "train" else 1)
        count = self.per_class[name]
        labels = np.repeat(np.arange(self.num_colours), count)
        base = PALETTE[labels][:, None, None, :].astype(np.float64)
        noise = rng.normal(0, 25, size=(len(labels), self.resolution, self.resolution, 3))
        images = np.clip(base + noise, 0, 255).astype(np.uint8)
        return ArrayImageDataset(images, labels, transform)


def write_distilled(dataset: DatasetSpec, root: Path, ipc: int = 4, extra: dict | None = None) -> DistilledSet:
    """The first `ipc` train images of each class, written as a ddbench distilled set."""
    train = dataset.split("train")
    by_class = dataset.class_indices("train")
    identity = RunIdentity(method="first", config={}, dataset=dataset.fingerprint(), ipc=ipc, seed=0)
    writer = DistilledSetWriter(root, identity, dataset.class_names, extra=extra)
    for class_index in writer.pending_classes():
        writer.write_class(class_index, [train[i][0] for i in by_class[class_index][:ipc]])
    return writer.finalize()


def write_shifted(dataset: DatasetSpec, root: Path, shift: int) -> DistilledSet:
    """Every train image of `dataset`, `shift` grey levels brighter, as a distilled set (method "shifted")."""
    from PIL import Image

    train = dataset.split("train")
    members = dataset.class_indices("train")
    identity = RunIdentity(method="shifted", config={"shift": shift}, dataset=dataset.fingerprint(), ipc=len(members[0]), seed=0)
    writer = DistilledSetWriter(root, identity, dataset.class_names)
    for class_index in writer.pending_classes():
        images = [np.clip(np.asarray(train[i][0], dtype=np.int32) + shift, 0, 255).astype(np.uint8) for i in members[class_index]]
        writer.write_class(class_index, [Image.fromarray(image) for image in images])
    return writer.finalize()
