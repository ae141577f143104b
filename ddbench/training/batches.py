"""Which examples a training step sees, as a pure function of (seed, purpose, step).

Nothing is carried from step to step, so a run resumed at any step boundary draws exactly the
batches an uninterrupted run draws.
"""

from __future__ import annotations

import math

import torch

from ddbench.core.errors import ConfigError
from ddbench.core.seeding import torch_generator


def sampled_batch(seed: int, purpose: str, step: int, count: int, batch_size: int) -> torch.Tensor:
    """(batch_size,) indices into `count` examples drawn with replacement, from (seed, purpose, step)."""
    return torch.randint(count, (batch_size,), generator=torch_generator(seed, purpose, step))


class EpochBatches:
    """Epoch-based batching: each epoch a seeded permutation of the examples, cut into batches.

    `steps_per_epoch` batches per epoch (the last one smaller unless `drop_last`); the step's
    epoch is `step // steps_per_epoch`, its permutation drawn from (seed, purpose, epoch).
    """

    def __init__(self, count: int, batch_size: int, seed: int, purpose: str, drop_last: bool = False) -> None:
        if count < 1 or batch_size < 1 or (drop_last and count < batch_size):
            raise ConfigError(f"cannot cut {count} examples into batches of {batch_size} (drop_last={drop_last})")
        self.count, self.batch_size, self.seed, self.purpose = count, batch_size, seed, purpose
        self.steps_per_epoch = count // batch_size if drop_last else math.ceil(count / batch_size)
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        epoch = self.epoch_of(step)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = torch.randperm(self.count, generator=torch_generator(self.seed, self.purpose, epoch))
        start = (step % self.steps_per_epoch) * self.batch_size
        return self._order[start:start + self.batch_size]
