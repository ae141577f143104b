"""Optimisers with RDED's parameter groups: weight decay on weight tensors with ndim > 1 only
(conv and linear weights), none on biases and normalisation parameters."""

from __future__ import annotations

import torch
from torch import nn

from ddbench.core.errors import ConfigError


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: tensors with ndim > 1 get `weight_decay`, the rest (biases, norms) get 0."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """`adamw` (RDED protocol) or `sgd` (with Nesterov-free momentum), over `decay_param_groups`."""
    groups = decay_param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"unknown optimizer {name!r}; use adamw or sgd")
