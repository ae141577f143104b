"""ddbench's own model checkpoints: the state dict plus the `ModelSpec` that rebuilds its shapes.

Storing the spec (arch, classes, input size, whether the small-input stem is used) is what lets
a 32 px ResNet-18 checkpoint reload as a 32 px ResNet-18 rather than fail on `conv1`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddbench.core.errors import CheckpointError
from ddbench.core.files import torch_save_atomic, unreadable_reason
from ddbench.models.factory import ModelSpec, create_from_spec, model_spec

FORMAT = "ddbench-model/1"


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write `{"format", "spec", "state_dict", "extra"}` atomically (a temporary file of this
    process, then rename; a full disk is a StorageError and leaves no partial file)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "spec": model_spec(model).to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},  # any layout: same bytes
        "extra": extra or {},
    }
    return torch_save_atomic(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU, with a CheckpointError naming the file when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated/pickled files
        raise CheckpointError(f"cannot read checkpoint {path}: {unreadable_reason(exc)}. Re-download or retrain it.") from exc


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(model with weights, extra) from a file written by `save_model`."""
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ddbench model checkpoint; load external weights with --teacher-ckpt")
    model = create_from_spec(ModelSpec.from_dict(payload["spec"]))
    model.load_state_dict(payload["state_dict"], strict=True)
    return model, dict(payload.get("extra", {}))
