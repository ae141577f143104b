"""Device selection and mixed precision: CUDA when present and asked for, CPU stays float32."""

from __future__ import annotations

import contextlib
import os

import torch

from ddbench.core import distributed
from ddbench.core.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available; `cuda` without a GPU is an error, not a silent fallback.
    Under torchrun each process takes the GPU of its local rank (`distributed.device_for`)."""
    if distributed.world_size() > 1:
        return distributed.device_for(name)
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was asked for but no CUDA device is visible; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


#: a test switch ("1"): the bf16 autocast that only CUDA gets runs on the CPU too, through the same
#: code, so a dtype error of the CUDA path shows on a machine without a GPU (results then differ
#: from float32; nothing a user runs sets it)
FORCE_CPU_BF16 = "DDBENCH_FORCE_AUTOCAST_CPU_BF16"


def bf16_autocast_on(device: torch.device) -> bool:
    """Whether `device` runs bf16 autocast where mixed precision is asked for: CUDA, or the CPU
    under `FORCE_CPU_BF16`."""
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get(FORCE_CPU_BF16) == "1")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on CPU so CPU results stay float32 and reproducible."""
    if enabled and bf16_autocast_on(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
