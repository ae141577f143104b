"""Labelled image datasets backed by files or arrays, with errors that name the bad file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ddbench.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".bmp", ".webp")


def open_rgb(path: str | Path) -> Image.Image:
    """Read an image as RGB, fully decoded, or raise DataError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}. Remove or replace the file and rerun.") from exc


def fit_to_resolution(image: Image.Image, resolution: int) -> Image.Image:
    """Resize the shorter side to `resolution` (Lanczos) and center-crop to a square."""
    width, height = image.size
    if (width, height) == (resolution, resolution):
        return image
    scale = resolution / min(width, height)
    resized = image.resize((max(resolution, round(width * scale)), max(resolution, round(height * scale))), Image.LANCZOS)
    left = (resized.width - resolution) // 2
    top = (resized.height - resolution) // 2
    return resized.crop((left, top, left + resolution, top + resolution))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name so the order never depends on the filesystem."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES)


class ImageFileDataset(Dataset):
    """(image, label) pairs from a list of files; images decode lazily, one at a time."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable | None = None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = open_rgb(path)
        return (self.transform(image) if self.transform else image), label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


class ArrayImageDataset(Dataset):
    """(image, label) pairs from an in-memory uint8 array of shape (N, H, W, 3)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: Callable | None = None):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
        self.images = images
        self.labels = [int(label) for label in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), self.labels[index]

    @property
    def targets(self) -> list[int]:
        return self.labels
