"""Device selection and mixed precision: CUDA when present and asked for, CPU stays float32."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Iterator

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


@dataclass(frozen=True)
class Execution:
    """How classifiers (students, teachers) run their kernels. None of this is part of a result's
    identity: each choice changes float rounding at most, never what is computed.

    - `channels_last_on_cpu`: NHWC activations and weights on the CPU too (CUDA always uses them).
      oneDNN's convolutions then skip a layout reorder per call: training steps 1.04-1.1x faster
      for ResNet-18, 1.25x for ConvNet-3, 1.5-2.3x for MobileNet-V2 / EfficientNet-B0 (depthwise
      convolutions); logits move by about 1e-6.
    - `cpu_validation_batch`: validation batch on the CPU, where 256 images of activations fall
      out of the caches (ResNet-18 at 32 px: 1.3x slower per image than at 64); CUDA keeps 256.
      Per-image results do not depend on it.
    - `foreach_optimizer`: the optimisers' multi-tensor step on the CPU too (PyTorch takes it on
      CUDA only); bit for bit the same update.
    - `frozen_cpu_inference`: a float32 CPU model whose weights stay put while it runs (the teacher
      labelling batches, a student being validated) runs as `models.inference.frozen_for_inference`
      makes it: BatchNorm folded into the convolutions, prepacked oneDNN weights, activations and
      residual adds fused; logits move by about 1e-6 relative.
    `benchmarks/bench_classifier_speed.py` times the previous settings, `Execution(False, 256, False,
    False)`, against these in one process (`execution_settings`)."""

    channels_last_on_cpu: bool = True
    cpu_validation_batch: int = 64
    foreach_optimizer: bool = True
    frozen_cpu_inference: bool = True


_EXECUTION = [Execution()]


def execution() -> Execution:
    """The settings classifiers run with now."""
    return _EXECUTION[-1]


@contextlib.contextmanager
def execution_settings(**changes: object) -> Iterator[Execution]:
    """Run a block under other `Execution` settings (benchmarks time the previous path with this)."""
    _EXECUTION.append(replace(execution(), **changes))
    try:
        yield execution()
    finally:
        _EXECUTION.pop()


def uses_channels_last(device: torch.device) -> bool:
    """Whether classifiers on `device` take channels_last weights and inputs."""
    return device.type == "cuda" or (device.type == "cpu" and execution().channels_last_on_cpu)


def validation_batch_size(device: torch.device) -> int:
    """Images per validation forward on `device` (`Execution.cpu_validation_batch` on the CPU)."""
    return execution().cpu_validation_batch if device.type == "cpu" else 256


def uses_frozen_inference(device: torch.device) -> bool:
    """Whether a classifier whose weights stay put runs frozen on `device` (float32 CPU only:
    not under the bf16 test switch)."""
    return device.type == "cpu" and execution().frozen_cpu_inference and not bf16_autocast_on(device)


def onednn_ops_available(*names: str) -> bool:
    """Whether this torch build has oneDNN (x86 builds with mkldnn) and its private ops `names`
    under `torch.ops.mkldnn` (the prepacked kernels of the fast CPU paths fall back without them)."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, name) for name in names)
