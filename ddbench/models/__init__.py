"""Classifier architectures for students and teachers (timm factory + RDED's ConvNet-D)."""

from ddbench.models.checkpoint import load_model, save_model
from ddbench.models.factory import (
    INIT_STYLES,
    SMALL_INPUT_MAX,
    ModelSpec,
    create_from_spec,
    create_model,
    list_archs,
    model_spec,
    register_arch,
    to_device,
)

__all__ = [
    "INIT_STYLES",
    "SMALL_INPUT_MAX",
    "ModelSpec",
    "create_from_spec",
    "create_model",
    "list_archs",
    "load_model",
    "model_spec",
    "register_arch",
    "save_model",
    "to_device",
]
