"""RDED's selection, step by step, as in the official `synthesize/utils.py` (LINs-lab/RDED):
square random crops of the real images, scored by the teacher's cross-entropy on the true class
with each crop zero-padded (after normalisation, so the padding is the mean colour) to the full
resolution and centred; the best crop of each image, the best images across the class; the chosen
patches stitched factor x factor.

Pure functions on tensors, so each step is tested on its own against the official numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ddbench.core.device import uses_channels_last
from ddbench.core.errors import ConfigError
from ddbench.training.augment import normalize, sample_resized_crop_boxes


def square_crop_boxes(height: int, width: int, num_crop: int, scale: tuple[float, float],
                      generator: torch.Generator) -> list[tuple[int, int, int, int]]:
    """`num_crop` (top, left, height, width) boxes drawn like torchvision's RandomResizedCrop with
    ratio (1, 1) (the official MultiRandomCrop), from `generator` instead of the global RNG."""
    boxes = sample_resized_crop_boxes(num_crop, height, width, scale, (1.0, 1.0), generator)
    return [tuple(int(v) for v in box) for box in boxes.tolist()]


def resized_crops(image: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: int) -> torch.Tensor:
    """(num_crop, 3, size, size) float crops of a float (3, H, W) image in [0, 1]: bilinear with
    antialiasing, what RandomResizedCrop does to the tensor the official code gives it."""
    return torch.stack([TF.resized_crop(image, top, left, height, width, [size, size], antialias=True)
                        for top, left, height, width in boxes])


def pad_centred(crops: torch.Tensor, resolution: int) -> torch.Tensor:
    """Zero-pad (B, C, h, w) to resolution x resolution, the crop centred (the extra row or column
    of an odd margin goes to the bottom and right), as the official `pad`."""
    vertical, horizontal = resolution - crops.shape[-2], resolution - crops.shape[-1]
    return F.pad(crops, (horizontal // 2, horizontal - horizontal // 2, vertical // 2, vertical - vertical // 2))


@torch.no_grad()
def crop_losses(teacher: nn.Module, crops: torch.Tensor, label: int, resolution: int,
                mean: tuple[float, float, float], std: tuple[float, float, float], batch_size: int = 256) -> torch.Tensor:
    """The teacher's cross-entropy on `label` for each crop, any leading shape (..., 3, h, w) -> (...).

    Crops are normalised, then padded, then scored in float32; the loss is -log(softmax)[label]
    computed as the official `cross_entropy` does (softmax, then log)."""
    device = next(teacher.parameters()).device
    flat = crops.reshape(-1, *crops.shape[-3:])
    losses = []
    for start in range(0, len(flat), batch_size):
        batch = pad_centred(normalize(flat[start:start + batch_size].to(device), mean, std), resolution)
        if uses_channels_last(device):  # the teacher's layout (`models.to_device`)
            batch = batch.contiguous(memory_format=torch.channels_last)
        probabilities = F.softmax(teacher(batch).float(), dim=1)
        losses.append(-torch.log(probabilities[:, label]).cpu())
    return torch.cat(losses).reshape(crops.shape[:-3])


def select_patches(losses: torch.Tensor, count: int) -> list[tuple[int, int]]:
    """From (num_images, num_crop) losses: each image's lowest-loss crop (the first on ties), then
    the `count` images whose best crop has the lowest loss, as (image, crop) pairs in rank order
    (ties keep image order: a stable sort, where the official argsort is unstable)."""
    if count > losses.shape[0]:
        raise ConfigError(f"RDED needs {count} real images to choose {count} patches from, but only "
                          f"{losses.shape[0]} were scored; lower --ipc or the factor, or raise mipc")
    best_crop = torch.argmin(losses, dim=1)
    best_loss = losses[torch.arange(losses.shape[0]), best_crop]
    ranked = torch.argsort(best_loss, stable=True)[:count]
    return [(int(image), int(best_crop[image])) for image in ranked]


def stitch(patches: torch.Tensor, resolution: int, factor: int, ipc: int) -> torch.Tensor:
    """(ipc * factor^2, 3, h, w) patches in rank order -> (ipc, 3, resolution, resolution).

    Grid cell k (row-major) of image i holds patch k * ipc + i, resized (nearest) to the cell: cells
    are resolution // factor wide, the first resolution % factor rows and columns one pixel more,
    as the official `mix_images`."""
    if patches.shape[0] != ipc * factor**2:
        raise ConfigError(f"stitching {factor}x{factor} images needs {ipc * factor**2} patches, got {patches.shape[0]}")
    side, remainder = resolution // factor, resolution % factor
    cells = [side + 1 if k < remainder else side for k in range(factor)]
    images = torch.zeros(ipc, patches.shape[1], resolution, resolution, dtype=patches.dtype)
    k, top = 0, 0
    for cell_height in cells:
        left = 0
        for cell_width in cells:
            block = patches[k * ipc:(k + 1) * ipc]
            images[:, :, top:top + cell_height, left:left + cell_width] = F.interpolate(block, size=(cell_height, cell_width))
            left += cell_width
            k += 1
        top += cell_height
    return images
