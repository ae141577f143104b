"""`GeneratorWeights`: where a generator method's model comes from for one dataset when the user
gives no checkpoint. Methods declare one per dataset they support (`default_weights`); each knows
its class count, label space and the sha256 of its files before anything is loaded, so the run
identity and the manifest's class map exist before any heavy work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class GeneratorWeights:
    """A generator for one dataset when no checkpoint is given."""

    description: str
    load: Callable[[torch.device, Any], tuple[Any, Any, dict]]  # (device, progress) -> (model, decoder/codec, info)
    identity: Callable[[], dict[str, str]]  # {role: sha256}, without loading anything
    num_classes: int
    label_space: str  # class_map.DATASET (the dataset's own labels) or class_map.IMAGENET1K
