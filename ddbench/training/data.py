"""Image sets held in memory as uint8 tensors: the distilled training set, the real validation
split and a generator's training images, decoded and resized once instead of once per epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import v2 as transforms
from torchvision.transforms.v2 import functional as TF

from ddbench.core.errors import DataError
from ddbench.core.progress import NullProgress, Progress


@dataclass
class TensorImageSet:
    """uint8 images (N, 3, H, W) on the CPU and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


def validation_transform(resolution: int) -> Callable[[Image.Image], Image.Image]:
    """The RDED protocol's Resize(res // 7 * 8) + CenterCrop(res) (identity-like at 16/32 px)."""
    return transforms.Compose([transforms.Resize(resolution // 7 * 8), transforms.CenterCrop(resolution)])


def square_resize(resolution: int) -> Callable[[Image.Image], Image.Image]:
    """Training images are stored at res x res, so random crops are only ever upscaled."""
    return transforms.Resize((resolution, resolution), antialias=True)


def center_square_resize(resolution: int) -> Callable[[Image.Image], Image.Image]:
    """Generators' training images: centre-crop to a square, then resize (PIL bicubic) to
    resolution x resolution; an image already that size is left as it is."""

    def transform(image: Image.Image) -> Image.Image:
        width, height = image.size
        if width != height:
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        return image if image.size == (resolution, resolution) else image.resize((resolution, resolution), Image.BICUBIC)

    return transform


def load_tensor_set(dataset: torch.utils.data.Dataset, pil_transform: Callable, description: str = "images",
                    progress: Progress | None = None) -> TensorImageSet:
    """Decode every (PIL image, label) of `dataset`, apply `pil_transform`, stack as uint8."""
    images, labels = [], []
    with (progress or NullProgress()).task(f"loading {description}", total=len(dataset)) as bar:
        for index in range(len(dataset)):
            image, label = dataset[index]
            image = pil_transform(image.convert("RGB"))
            images.append(TF.pil_to_tensor(image))
            labels.append(int(label))
            bar.advance()
    if not images:
        raise DataError(f"{description}: the dataset is empty")
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) != 1:
        raise DataError(f"{description}: images have different sizes after resizing ({sorted(shapes)[:3]})")
    return TensorImageSet(torch.stack(images), torch.tensor(labels, dtype=torch.long))


_VAL_CACHE: dict[tuple, TensorImageSet] = {}


def load_validation_set(dataset_spec, resolution: int | None = None) -> TensorImageSet:
    """The real val split after the validation transform, cached (one entry) across evaluations
    of the same dataset, since every (student, seed) validates on the same images."""
    resolution = resolution or dataset_spec.resolution
    key = (dataset_spec.name, str(getattr(dataset_spec, "root", None)), resolution, id(type(dataset_spec)))
    if key not in _VAL_CACHE:
        _VAL_CACHE.clear()
        _VAL_CACHE[key] = load_tensor_set(
            dataset_spec.split("val"), validation_transform(resolution), f"{dataset_spec.name} val split"
        )
    return _VAL_CACHE[key]
