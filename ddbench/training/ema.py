"""An exponential moving average of a model's weights, the copy diffusion models sample from.

After each optimiser step: ema = decay * ema + (1 - decay) * weight, for every parameter (frozen ones
included, as in DiT's `update_ema`); buffers are copied. The average starts as an exact copy of
the model. Its state is saved with training checkpoints, so a resumed run averages exactly as an
uninterrupted one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ddbench.core.errors import ConfigError


class ExponentialMovingAverage:
    """`module` is a frozen copy of the model in eval mode, holding the averaged weights."""

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        averaged = list(self.module.parameters())
        current = [parameter.detach() for parameter in model.parameters()]
        if len(averaged) != len(current):
            raise ConfigError("EMA: the model's parameters no longer match the averaged copy")
        torch._foreach_mul_(averaged, self.decay)
        torch._foreach_add_(averaged, current, alpha=1.0 - self.decay)
        for averaged_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            averaged_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state_dict, strict=True)
