"""`rded`: Realistic, Diverse and Efficient Dataset Distillation (Sun et al., CVPR 2024), the
selection of the official code (LINs-lab/RDED, `synthesize/`), with every draw seeded.

Per class: draw `mipc` real training images (all of them when the class has fewer); take
`num_crop` square RandomResizedCrop(res // factor, scale (0.08, 1)) crops of each, from the image
as the dataset gives it; score each crop by the teacher's cross-entropy on the class (crop
normalised, zero-padded to res x res, centred); keep each image's best crop, then the
ipc * factor^2 best across the class; image i stitches ranks i, i + ipc, ..., in a factor x
factor grid (row-major). The factor goes into the manifest as `shuffle_patch_factor`, which the
`rded` evaluator's ShufflePatches reads.

Default factor (`factor: None`): 2 at 128 px and above, 1 below. That is the official scripts'
choice for every dataset they cover (ImageNet-1K, -100, Woof, Nette at 224 and, for ConvNets, 128:
2; CIFAR at 32 and Tiny-ImageNet at 64: 1), written as a rule on the resolution. The embedded
`digits` set (16 px) gets 1: a 2x2 grid would leave 8 px patches, under a stroke of a digit.

Differences from the release, on purpose: draws are seeded per class (images
(seed, "rded-images", class), crops (seed, "rded-crops", class)) instead of Python's and torch's
global RNGs; a class with fewer than `mipc` images uses them all (the release indexes past the end
and crashes); ranking ties keep image order (the release's argsort is unstable); the teacher is
the run's, fed crops normalised with the constants it was trained with (`Teacher.normalization`:
a ddbench teacher's are recorded with it; RDED's released teachers, like the release itself,
use ImageNet's for every dataset); scoring runs in float32; images are written as PNG rounded to uint8 (the release
writes JPEG, truncating after a normalise/denormalise round trip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ddbench.core.errors import ConfigError
from ddbench.core.interfaces import DistillTask, Method
from ddbench.methods.rded.selection import crop_losses, resized_crops, select_patches, square_crop_boxes, stitch
from ddbench.models import to_device

IMAGES_PURPOSE, CROPS_PURPOSE = "rded-images", "rded-crops"
#: the official scripts: factor 2 for their 224/128 px sets, 1 for their 32/64 px sets
STITCH_FROM_RESOLUTION = 128


@dataclass
class RdedSynthesisConfig:
    """The official scripts' values (mipc 300, num_crop 5); factor None: by resolution (see above)."""

    mipc: int = 300
    num_crop: int = 5
    factor: Optional[int] = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    #: crops per teacher forward pass (only speed and memory depend on it)
    batch_size: int = 256


def default_factor(resolution: int) -> int:
    return 2 if resolution >= STITCH_FROM_RESOLUTION else 1


class Rded(Method):
    name = "rded"
    Config = RdedSynthesisConfig
    needs_teacher = True
    source_modules = ("ddbench.methods.rded", "ddbench.training.augment")  # the crops come from its box sampler

    def factor(self, task: DistillTask) -> int:
        factor = self.config.factor if self.config.factor is not None else default_factor(task.dataset.resolution)
        if factor < 1 or task.dataset.resolution // factor < 1:
            raise ConfigError(f"rded: factor {factor} does not fit resolution {task.dataset.resolution}; use 1 or 2")
        return factor

    def manifest_extra(self, task: DistillTask) -> dict[str, Any]:
        teacher = task.teacher
        return {
            "shuffle_patch_factor": self.factor(task),
            "scoring_teacher": {"arch": teacher.arch, "checkpoint_sha256": teacher.checkpoint_sha256,
                                "accuracy": teacher.accuracy, "source": teacher.source} if teacher else None,
            "seeding": f"images (seed, {IMAGES_PURPOSE!r}, class), crops (seed, {CROPS_PURPOSE!r}, class)",
        }

    def prepare(self, task: DistillTask) -> None:
        config = self.config
        if task.teacher is None:
            raise ConfigError("rded scores crops with a teacher; pass --teachers ARCH (and --teacher-ckpt PATH if needed)")
        if task.teacher.num_classes != task.dataset.num_classes:
            raise ConfigError(f"rded: teacher {task.teacher.arch} has {task.teacher.num_classes} classes, "
                              f"{task.dataset.name} has {task.dataset.num_classes}")
        if config.mipc < 1 or config.num_crop < 1:
            raise ConfigError(f"rded: mipc ({config.mipc}) and num_crop ({config.num_crop}) must be at least 1")
        low, high = config.crop_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"rded: crop_scale must satisfy 0 < low <= high <= 1, got {config.crop_scale}")
        self._teacher = to_device(task.teacher.model, task.device).eval()
        self._train = task.dataset.split("train")
        self._by_class = task.dataset.class_indices("train")

    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        config, dataset = self.config, task.dataset
        factor = self.factor(task)
        members = self._by_class[class_index]
        order = torch.randperm(len(members), generator=task.generator(IMAGES_PURPOSE, class_index))
        drawn = [members[i] for i in order[:config.mipc].tolist()]
        crop_generator = task.generator(CROPS_PURPOSE, class_index)
        crops = []
        for index in drawn:
            image = TF.pil_to_tensor(self._train[index][0].convert("RGB")).float().div(255)  # as ToTensor
            boxes = square_crop_boxes(image.shape[1], image.shape[2], config.num_crop, tuple(config.crop_scale), crop_generator)
            crops.append(resized_crops(image, boxes, dataset.resolution // factor))
        crops = torch.stack(crops)  # (images, num_crop, 3, res // factor, res // factor)
        mean, std = task.teacher.normalization(dataset)  # the constants the teacher was trained with
        losses = crop_losses(self._teacher, crops, class_index, dataset.resolution, mean, std, config.batch_size)
        chosen = select_patches(losses, task.ipc * factor**2)
        patches = torch.stack([crops[image, crop] for image, crop in chosen])
        stitched = stitch(patches, dataset.resolution, factor, task.ipc)
        arrays = stitched.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(array) for array in arrays]
