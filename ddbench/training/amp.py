"""Mixed precision for training: bf16 autocast, or fp16 autocast with a GradScaler, on CUDA only.

CPU training stays float32, so CPU results are reproducible bit for bit. `backward_step` is the
one place where a loss becomes an optimiser step (scaling, unscaling before clipping, skipping
steps with inf/nan gradients under fp16), shared by the classifier loop and `fit`.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from ddbench.core.device import autocast, bf16_autocast_on
from ddbench.core.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class Precision:
    """`mode`: auto (bf16 on CUDA, fp32 elsewhere), bf16, fp16 (CUDA only) or fp32."""

    def __init__(self, device: torch.device | str, mode: str = "auto") -> None:
        device = torch.device(device)
        if mode not in PRECISIONS:
            raise ConfigError(f"unknown precision {mode!r}; use one of {', '.join(PRECISIONS)}")
        if mode in ("bf16", "fp16") and device.type != "cuda":
            raise ConfigError(f"precision {mode} needs a CUDA device (got {device}); CPU trains in fp32, use auto or fp32")
        self.device = device
        self.mode = ("bf16" if bf16_autocast_on(device) else "fp32") if mode == "auto" else mode
        self.scaler = torch.amp.GradScaler("cuda") if self.mode == "fp16" else None

    @classmethod
    def from_flag(cls, device: torch.device, amp: bool) -> "Precision":
        """The classifier loop's `amp` switch: bf16 on CUDA when on, fp32 otherwise."""
        return cls(device, "auto" if amp else "fp32")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mode == "bf16":
            return autocast(self.device, True)
        if self.mode == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      clip_parameters: Iterable[torch.nn.Parameter] | None = None,
                      max_grad_norm: float | None = None) -> torch.Tensor | None:
        """backward, optional gradient-norm clipping, optimiser step; returns the pre-clip norm
        (None without clipping). The caller zeroes the gradients before the forward pass."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        grad_norm = None
        if max_grad_norm is not None and max_grad_norm > 0:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(clip_parameters, max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return grad_norm

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
