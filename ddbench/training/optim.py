"""Optimisers over parameter groups: weight decay on weight tensors with ndim > 1 only (conv and
linear weights), none on biases and normalisation parameters (RDED, VAR, DiT all do this), with
optional name-based exceptions and per-group learning rates."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ddbench.core.errors import ConfigError


def decay_param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay_names: Sequence[str] = (),
    lr_by_name: Sequence[tuple[str, float]] = (),
) -> list[dict]:
    """Groups of the trainable parameters, in `named_parameters` order within each group.

    Tensors with ndim > 1 get `weight_decay` unless their name contains one of `no_decay_names`
    (VAR: "pos_"); the rest (biases, norms) get 0. `lr_by_name` gives the parameters whose name
    contains a substring their own lr (first match wins) in groups of their own, after the
    default pair [decay, no decay], which is always there (possibly empty).
    """
    groups: dict[tuple[bool, float | None], list[nn.Parameter]] = {(True, None): [], (False, None): []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decays = parameter.ndim > 1 and not any(part in name for part in no_decay_names)
        lr = next((value for part, value in lr_by_name if part in name), None)
        groups.setdefault((decays, lr), []).append(parameter)
    result = []
    for (decays, lr), parameters in groups.items():
        group = {"params": parameters, "weight_decay": weight_decay if decays else 0.0}
        if lr is not None:
            group["lr"] = lr
        result.append(group)
    return result


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
    no_decay_names: Sequence[str] = (),
    lr_by_name: Sequence[tuple[str, float]] = (),
) -> torch.optim.Optimizer:
    """`adamw` (RDED protocol, VAR, DiT) or `sgd` (with Nesterov-free momentum), over `decay_param_groups`."""
    groups = decay_param_groups(model, weight_decay, no_decay_names=no_decay_names, lr_by_name=lr_by_name)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"unknown optimizer {name!r}; use adamw or sgd")
