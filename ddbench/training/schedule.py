"""Learning-rate schedules for `fit`: per-epoch factors (the classifier epoch view), per-step
warm-up + cosine (generators).

The RDED protocol's per-epoch schedule is a quarter cosine: it starts at 1x and ends near 0.5x
(not 0), which is part of what makes its numbers comparable, so it is kept as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ddbench.core.errors import ConfigError

if TYPE_CHECKING:  # imported where used (see optim.py)
    import torch


def quarter_cosine(epoch: int, epochs: int) -> float:
    """RDED: 0.5 * (1 + cos(pi * epoch / epochs / 2)); 1.0 at epoch 0, ~0.5 at the last epoch."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs / 2))


def cosine(epoch: int, epochs: int) -> float:
    """Half cosine from 1.0 at epoch 0 towards 0 at `epochs`."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def constant(epoch: int, epochs: int) -> float:
    return 1.0


def warmup5_cosine(epoch: int, epochs: int) -> float:
    """torchvision's reference `--lr-warmup-epochs 5 --lr-warmup-method linear --lr-warmup-decay 0.01
    --lr-scheduler cosineannealinglr` (as SRe2L trains its teachers): 0.01x rising linearly over 5
    epochs (LinearLR), then a half cosine over the remaining epochs towards 0."""
    warmup = min(5, max(0, epochs - 1))
    if epoch < warmup:
        return 0.01 + (1.0 - 0.01) * epoch / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "quarter_cosine": quarter_cosine,
    "cosine": cosine,
    "constant": constant,
    "warmup5_cosine": warmup5_cosine,
}


@dataclass(frozen=True)
class EpochSchedule:
    """A per-epoch factor of SCHEDULES as a step schedule for `fit`: every step of epoch e trains at
    peak * SCHEDULES[name](e, epochs), the very product `build_epoch_scheduler`'s LambdaLR sets."""

    name: str
    epochs: int
    steps_per_epoch: int

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.name!r}; use one of {', '.join(SCHEDULES)}")

    def __call__(self, peak_lr: float, step: int) -> float:
        return peak_lr * SCHEDULES[self.name](step // self.steps_per_epoch, self.epochs)


def build_epoch_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per epoch: epoch e trains at base_lr * SCHEDULES[name](e, epochs)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {name!r}; use one of {', '.join(SCHEDULES)}")
    factor = SCHEDULES[name]
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: factor(epoch, epochs))


@dataclass(frozen=True)
class WarmupCosine:
    """Per-step lr from a group's peak: linear warm-up over `warmup_steps` (step s trains at
    peak * (s + 1) / warmup_steps), then a half cosine from the peak down to
    `final_fraction * peak` at `total_steps` (a warm-up longer than the run just never ends).
    warmup_steps 0 and final_fraction 1 give a constant."""

    total_steps: int
    warmup_steps: int = 0
    final_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.warmup_steps < 0:
            raise ConfigError(f"schedule needs total_steps >= 1 (got {self.total_steps}) and warmup_steps >= 0 "
                              f"(got {self.warmup_steps})")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ConfigError(f"final_fraction must be in [0, 1], got {self.final_fraction}")

    def __call__(self, peak_lr: float, step: int) -> float:
        if step < self.warmup_steps:
            return peak_lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        floor = self.final_fraction
        return peak_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def constant_lr(peak_lr: float, step: int) -> float:
    """The step schedule that keeps every group at its peak lr."""
    return peak_lr
