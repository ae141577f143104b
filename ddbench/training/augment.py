"""Batch augmentations on the training device, every draw from an explicit seeded generator.

Why on batches and not per PIL image: a distilled set is small and fits in memory as uint8, so
augmenting whole batches (one `grid_sample` for crop + flip) keeps the student's device busy and
makes every random draw come from the evaluation's own generator rather than the global RNG of
DataLoader workers. Same distributions as torchvision's RandomResizedCrop / RandomHorizontalFlip
and RDED's ShufflePatches; interpolation is bilinear without antialiasing, which only matters
when downscaling, and training images are stored at the target resolution so crops are upscaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def shuffle_patches(images: torch.Tensor, factor: int, generator: torch.Generator) -> torch.Tensor:
    """RDED's ShufflePatches: permute the `factor` column strips, then the `factor` row strips,
    independently for each image. A stitched factor x factor image thus gets its patches
    rearranged; factor 1 returns the batch unchanged."""
    if factor <= 1:
        return images
    batch, channels, height, width = images.shape
    column_index = _strip_permutation_index(batch, width, factor, generator)  # (B, W)
    row_index = _strip_permutation_index(batch, height, factor, generator)  # (B, H)
    column_index = column_index.to(images.device)[:, None, None, :].expand(batch, channels, height, width)
    images = images.gather(3, column_index)
    row_index = row_index.to(images.device)[:, None, :, None].expand(batch, channels, height, width)
    return images.gather(2, row_index)


def _strip_permutation_index(batch: int, length: int, factor: int, generator: torch.Generator) -> torch.Tensor:
    """For each image, pixel indices along one axis after shuffling its `factor` strips.
    Strips are `length // factor` wide; the last one takes any remainder (RDED's ShufflePatches
    drops those pixels; ddbench keeps every pixel, the same whenever the size divides)."""
    strip = length // factor
    bounds = [(k * strip, (k + 1) * strip if k < factor - 1 else length) for k in range(factor)]
    permutations = torch.argsort(torch.rand(batch, factor, generator=generator), dim=1)  # (B, factor)
    rows = []
    for permutation in permutations.tolist():
        rows.append(torch.cat([torch.arange(*bounds[k]) for k in permutation]))
    return torch.stack(rows)


def sample_resized_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """(B, 4) boxes (top, left, box_height, box_width) in pixels, drawn like torchvision's
    RandomResizedCrop: up to `attempts` tries of (area, aspect) per image, else the whole image."""
    area = height * width
    target_area = area * torch.empty(batch, attempts).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(batch, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    box_width = torch.sqrt(target_area * aspect).round()
    box_height = torch.sqrt(target_area / aspect).round()
    fits = (box_width > 0) & (box_height > 0) & (box_width <= width) & (box_height <= height)
    first_fit = torch.where(fits.any(1), fits.float().argmax(1), torch.full((batch,), -1))
    chosen_width = torch.where(first_fit >= 0, box_width.gather(1, first_fit.clamp(min=0)[:, None])[:, 0], float(width))
    chosen_height = torch.where(first_fit >= 0, box_height.gather(1, first_fit.clamp(min=0)[:, None])[:, 0], float(height))
    top = torch.floor(torch.rand(batch, generator=generator) * (height - chosen_height + 1))
    left = torch.floor(torch.rand(batch, generator=generator) * (width - chosen_width + 1))
    return torch.stack([top, left, chosen_height, chosen_width], dim=1)


def resized_crop_flip(
    images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, output_size: int
) -> torch.Tensor:
    """Crop each image to its box, resize to `output_size` (bilinear) and mirror where `flip`.

    One `affine_grid` + `grid_sample` for the whole batch; `images` is float (B, C, H, W)."""
    batch, _, height, width = images.shape
    boxes = boxes.to(images.device, images.dtype)
    top, left, box_height, box_width = boxes.unbind(1)
    # box centre and half-extent in grid_sample's normalised [-1, 1] coordinates (align_corners=False)
    centre_x = (2 * left + box_width) / width - 1
    centre_y = (2 * top + box_height) / height - 1
    scale_x = box_width / width * torch.where(flip.to(images.device), -1.0, 1.0).to(images.dtype)
    scale_y = box_height / height
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, centre_y
    grid = F.affine_grid(theta, [batch, images.shape[1], output_size, output_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class TrainAugment:
    """ShufflePatches(factor) -> RandomResizedCrop(size, scale) -> horizontal flip -> normalise.

    Takes a uint8 batch (B, 3, H, W) on any device and returns the normalised float batch."""

    output_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    shuffle_patch_factor: int = 1

    def __call__(self, images_uint8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = images_uint8.float().div_(255)
        images = shuffle_patches(images, self.shuffle_patch_factor, generator)
        batch, _, height, width = images.shape
        boxes = sample_resized_crop_boxes(batch, height, width, self.crop_scale, self.crop_ratio, generator)
        flips = (torch.rand(batch, generator=generator) < 0.5) if self.flip else torch.zeros(batch, dtype=torch.bool)
        images = resized_crop_flip(images, boxes, flips, self.output_size)
        return normalize(images, self.mean, self.std)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(images - mean) / std per channel; `images` float in [0, 1], (B, 3, H, W)."""
    mean_tensor = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_tensor) / std_tensor


@dataclass
class MixedBatch:
    """A batch after (optional) CutMix: `lam` of each image is its own label, `1 - lam` the partner's."""

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    lam: float


class CutMix:
    """CutMix with probability `prob` and lambda ~ Beta(alpha, alpha), as in RDED's protocol:
    one box per batch, pasted from a permutation of the batch; lambda is corrected to the box's
    true area. All draws come from a numpy generator owned by the caller (seeded per evaluation).
    """

    def __init__(self, prob: float = 1.0, alpha: float = 1.0):
        self.prob = prob
        self.alpha = alpha

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> MixedBatch:
        if self.prob <= 0 or rng.random() >= self.prob:
            return MixedBatch(images, labels, labels, 1.0)
        batch, _, height, width = images.shape
        lam = float(rng.beta(self.alpha, self.alpha))
        partner = torch.from_numpy(rng.permutation(batch)).to(images.device)
        cut_ratio = math.sqrt(1.0 - lam)
        cut_height, cut_width = int(height * cut_ratio), int(width * cut_ratio)
        centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = np.clip([centre_y - cut_height // 2, centre_y + cut_height // 2], 0, height)
        x0, x1 = np.clip([centre_x - cut_width // 2, centre_x + cut_width // 2], 0, width)
        mixed = images.clone()
        mixed[:, :, y0:y1, x0:x1] = images[partner, :, y0:y1, x0:x1]
        lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (height * width)
        return MixedBatch(mixed, labels, labels[partner], lam)
