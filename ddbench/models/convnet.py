"""RDED's ConvNet-D: D blocks of (3x3 conv, width 128, BatchNorm, ReLU, 2x2 average pool), then a
linear classifier on the flattened features.

The classic dataset-distillation student. The feature map shrinks by 2 per block, so the
classifier's input size depends on the input resolution, which the factory records in the
model's metadata (a checkpoint only reloads into the same resolution).
"""

from __future__ import annotations

import torch
from torch import nn

from ddbench.core.errors import ConfigError


class ConvNet(nn.Module):
    """ConvNet-D as used by RDED (depth 3 for CIFAR, 5 for Woof/Nette, 6 for ImageNet-100)."""

    def __init__(self, depth: int, num_classes: int, input_size: int, width: int = 128, in_channels: int = 3):
        super().__init__()
        if input_size % (2**depth) != 0:
            raise ConfigError(
                f"ConvNet-{depth} halves the input {depth} times; input size {input_size} is not divisible by "
                f"{2**depth}; pick a shallower convnet for this resolution"
            )
        blocks: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            blocks += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        final_size = input_size // (2**depth)
        self.num_features = width * final_size * final_size
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)  # (B, width, input/2^D, input/2^D)
        return self.fc(features.flatten(1))
