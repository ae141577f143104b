"""`random`: a seeded random subset of real training images, IPC per class.

The baseline every leaderboard needs: what a distilled set must beat to be worth making.
Images are saved at the dataset's working resolution (shorter side resized, then center-cropped,
Lanczos), so they enter the evaluators exactly like any method's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from ddbench.core.images import fit_to_resolution
from ddbench.core.interfaces import DistillTask, Method


@dataclass
class RandomConfig:
    """No knobs: the draw depends only on the run's seed and the class index."""


class RandomSubset(Method):
    name = "random"
    Config = RandomConfig

    def prepare(self, task: DistillTask) -> None:
        self._train = task.dataset.split("train")
        self._by_class = task.dataset.class_indices("train")

    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        members = self._by_class[class_index]
        order = torch.randperm(len(members), generator=task.generator("random-subset", class_index))
        chosen = [members[i] for i in order[: task.ipc].tolist()]
        return [fit_to_resolution(self._train[i][0], task.dataset.resolution) for i in chosen]
