"""Image sets held in memory as uint8 tensors: the distilled training set, the real validation
split and a generator's training images, decoded and resized once instead of once per epoch.

A validation split too large to hold (ImageNet-1K: 50,000 x 3 x 224 x 224 bytes = 7.5 GB) streams
from disk instead: `StreamingImageSet` decodes it in batches with a DataLoader over a few worker
processes, with the same transform and order, so accuracy is the same to the last image. The
limit is `DDBENCH_VAL_IN_MEMORY_MB` (default 2048 MB of decoded uint8 pixels: every ImageNet
subset at 224 px stays in memory, ImageNet-1K streams).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

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

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) in order, `batch_size` at a time."""
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]


class _Decoded(torch.utils.data.Dataset):
    """(uint8 (3, H, W) tensor, label) of `dataset[index]` after `pil_transform`: a worker's job."""

    def __init__(self, dataset: torch.utils.data.Dataset, pil_transform: Callable) -> None:
        self.dataset, self.pil_transform = dataset, pil_transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return TF.pil_to_tensor(self.pil_transform(image.convert("RGB"))), int(label)


class StreamingImageSet:
    """A labelled image set decoded from disk batch by batch (never held whole), in dataset order."""

    def __init__(self, dataset: torch.utils.data.Dataset, pil_transform: Callable, description: str = "images",
                 num_workers: int | None = None) -> None:
        if len(dataset) == 0:
            raise DataError(f"{description}: the dataset is empty")
        self.decoded = _Decoded(dataset, pil_transform)
        self.description = description
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers

    def __len__(self) -> int:
        return len(self.decoded)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(self.decoded, batch_size=batch_size, shuffle=False,
                                             num_workers=self.num_workers, collate_fn=self._stack)
        yield from loader

    def _stack(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = {tuple(image.shape) for image, _ in items}
        if len(shapes) != 1:
            raise DataError(f"{self.description}: images have different sizes after resizing ({sorted(shapes)[:3]})")
        return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items], dtype=torch.long)


#: either kind of set: both have len() and batches(batch_size)
ImageSet = TensorImageSet | StreamingImageSet


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


_VAL_CACHE: dict[tuple, ImageSet] = {}


def in_memory_limit_bytes() -> int:
    """Decoded validation splits larger than this stream from disk (`DDBENCH_VAL_IN_MEMORY_MB`)."""
    return int(float(os.environ.get("DDBENCH_VAL_IN_MEMORY_MB", "2048")) * 2**20)


def load_validation_set(dataset_spec, resolution: int | None = None) -> ImageSet:
    """The real val split after the validation transform: decoded once into memory and cached (one
    entry) across evaluations of the same dataset, or, above `in_memory_limit_bytes()`, a set that
    streams from disk at every validation."""
    resolution = resolution or dataset_spec.resolution
    key = (dataset_spec.name, str(getattr(dataset_spec, "root", None)), resolution, id(type(dataset_spec)))
    if key not in _VAL_CACHE:
        _VAL_CACHE.clear()
        split, description = dataset_spec.split("val"), f"{dataset_spec.name} val split"
        if len(split) * 3 * resolution * resolution > in_memory_limit_bytes():
            _VAL_CACHE[key] = StreamingImageSet(split, validation_transform(resolution), description)
        else:
            _VAL_CACHE[key] = load_tensor_set(split, validation_transform(resolution), description)
    return _VAL_CACHE[key]
