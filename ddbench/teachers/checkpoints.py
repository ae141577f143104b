"""Loading teachers from checkpoints made elsewhere: timm and torchvision state dicts, RDED's
`{"model": state_dict}` files, DataParallel `module.` and torch.compile `_orig_mod.` prefixes,
and ddbench's own files. Shapes are checked before loading so a wrong class count or stem is an
error that says so, not a cryptic size mismatch or a silently random head."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from ddbench.core.errors import CheckpointError
from ddbench.models import ModelSpec, create_from_spec, create_model
from ddbench.models.checkpoint import FORMAT as DDBENCH_FORMAT
from ddbench.models.checkpoint import read_checkpoint
from ddbench.teachers.class_order import permute_classifier

#: wrapper keys under which training scripts nest the weights, tried in order
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")
PREFIXES = ("module.", "_orig_mod.", "model.")
#: the classifier weight of each family, to read the class count from a state dict
CLASSIFIER_KEYS = ("fc.weight", "classifier.weight", "head.fc.weight")


def extract_state_dict(payload: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint, with wrapper prefixes stripped."""
    if isinstance(payload, dict) and payload.get("format") == DDBENCH_FORMAT:
        return dict(payload["state_dict"])
    state = payload
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{source}: no state dict found (expected tensors at the top level or under one of "
            f"{', '.join(WRAPPER_KEYS)}); save it with torch.save(model.state_dict(), path)"
        )
    for prefix in PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def checkpoint_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    for key in CLASSIFIER_KEYS:
        if key in state:
            return int(state[key].shape[0])
    return None


def infer_small_input(state: dict[str, torch.Tensor], arch: str, input_size: int) -> bool:
    """ResNets show their stem in conv1's kernel (3x3 adapted, 7x7 ImageNet); stride-only
    adaptations leave no trace in the weights, so those follow the input size."""
    conv1 = state.get("conv1.weight")
    if arch.startswith("resnet") and conv1 is not None:
        return conv1.shape[-1] == 3
    return input_size <= 64


def match_layout(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Rename another library's keys to ddbench's when the two layouts hold the same tensors in
    the same order with the same shapes (torchvision's MobileNet-V2 and EfficientNet-B0 against
    timm's; ResNets already share names). Anything less than a full match is left alone, and
    the accuracy check on val guards the result."""
    target = model.state_dict()
    if set(state) == set(target) or len(state) != len(target):
        return state
    pairs = list(zip(state.items(), target.items()))
    if all(value.shape == expected.shape for (_, value), (_, expected) in pairs):
        return {name: value for (_, value), (name, _) in pairs}
    return state


def ddbench_checkpoint_extra(payload: Any) -> dict[str, Any] | None:
    """The `extra` record of a loaded checkpoint ddbench wrote (recipe, normalisation), None for others."""
    if isinstance(payload, dict) and payload.get("format") == DDBENCH_FORMAT:
        return dict(payload.get("extra") or {})
    return None


def load_teacher_checkpoint(path: str | os.PathLike, arch: str, num_classes: int, input_size: int,
                            class_rows: Sequence[int] | None = None, payload: Any = None) -> nn.Module:
    """A model of `arch` with the checkpoint's weights, for a dataset of `num_classes` at `input_size` px.

    `class_rows[i]` is the checkpoint's classifier row for dataset class i (see `class_order`);
    the rows are permuted into the dataset's order before loading. `payload`: the file's contents
    when the caller already read them (`read_checkpoint`), so a large file is loaded once."""
    if payload is None:
        payload = read_checkpoint(path)
    if isinstance(payload, dict) and payload.get("format") == DDBENCH_FORMAT:
        spec = ModelSpec.from_dict(payload["spec"])
        if spec.arch != arch:
            raise CheckpointError(f"{path} holds a {spec.arch}, not a {arch}; pass it for --teachers {spec.arch}")
        model = create_from_spec(spec)
        state = dict(payload["state_dict"])
    else:
        state = extract_state_dict(payload, str(path))
        model = create_model(arch, num_classes, input_size, small_input=infer_small_input(state, arch, input_size))
    found_classes = checkpoint_num_classes(state)
    if found_classes is not None and found_classes != num_classes:
        raise CheckpointError(
            f"{path} has a {found_classes}-class classifier but the dataset has {num_classes} classes; "
            "use a teacher trained on this dataset (or `ddbench teacher train`)"
        )
    if class_rows is not None:
        state = permute_classifier(state, class_rows)
    state = match_layout(state, model, str(path))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise CheckpointError(f"{path} does not fit ddbench's {arch} at {input_size} px: {str(exc)[:300]}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit ddbench's {arch}: missing {result.missing_keys[:4]}, unexpected "
            f"{result.unexpected_keys[:4]}; ddbench reads timm-layout weights, and torchvision ones whose "
            "tensors line up with timm's in order and shape (ResNets, MobileNet-V2, EfficientNet-B0)"
        )
    return model
