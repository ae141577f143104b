"""Per-epoch learning-rate factors. The RDED protocol's is a quarter cosine: it starts at 1x and
ends near 0.5x (not 0), which is part of what makes its numbers comparable, so it is kept as is."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ddbench.core.errors import ConfigError


def quarter_cosine(epoch: int, epochs: int) -> float:
    """RDED: 0.5 * (1 + cos(pi * epoch / epochs / 2)); 1.0 at epoch 0, ~0.5 at the last epoch."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs / 2))


def cosine(epoch: int, epochs: int) -> float:
    """Half cosine from 1.0 at epoch 0 towards 0 at `epochs`."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def constant(epoch: int, epochs: int) -> float:
    return 1.0


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "quarter_cosine": quarter_cosine,
    "cosine": cosine,
    "constant": constant,
}


def build_epoch_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per epoch: epoch e trains at base_lr * SCHEDULES[name](e, epochs)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {name!r}; use one of {', '.join(SCHEDULES)}")
    factor = SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: factor(epoch, epochs))
