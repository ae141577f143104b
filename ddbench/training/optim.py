"""Optimisers over parameter groups: weight decay on weight tensors with ndim > 1 only (conv and
linear weights), none on biases and normalisation parameters (RDED, VAR, DiT all do this), with
optional name-based exceptions and per-group learning rates; and `OptimizerRecipe`, the one
optimiser recipe every trainer's config embeds."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Optional, Sequence, TypeVar

if TYPE_CHECKING:  # imported where used: configs embed OptimizerRecipe, and `--help` imports configs without torch
    import torch
    from torch import nn

from ddbench.core.errors import ConfigError

T = TypeVar("T")


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
    import torch

    from ddbench.core.device import execution

    groups = decay_param_groups(model, weight_decay, no_decay_names=no_decay_names, lr_by_name=lr_by_name)
    foreach = True if execution().foreach_optimizer else None  # None: PyTorch's choice (CUDA only)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), foreach=foreach)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=foreach)
    raise ConfigError(f"unknown optimizer {name!r}; use adamw or sgd")


@dataclass(frozen=True)
class OptimizerRecipe:
    """How every trainer of the base takes its steps; each trainer's config embeds one as `optim`
    (`TrainingRecipe`, the VAR stages' `TrainConfig`, `DiTTrainConfig`, the Minimax and HIERAMP
    fine-tunes), with that trainer's defaults.

    `lr` is the peak (schedules scale it); weight decay falls on matrices only (`decay_param_groups`);
    `betas` are AdamW's, `momentum` SGD's; `grad_clip` clips the global gradient norm (None: off);
    `precision` is `training.amp.Precision`'s mode (auto: bf16 on CUDA, fp32 on CPU)."""

    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    grad_clip: Optional[float] = None
    precision: str = "auto"

    def build(self, model: nn.Module, *, no_decay_names: Sequence[str] = (),
              lr_by_name: Sequence[tuple[str, float]] = ()) -> torch.optim.Optimizer:
        """The optimiser over `model`'s trainable parameters (`build_optimizer`)."""
        return build_optimizer(model, self.optimizer, self.lr, self.weight_decay, betas=self.betas,
                               momentum=self.momentum, no_decay_names=no_decay_names, lr_by_name=lr_by_name)


#: the keys `with_settings` routes into a config's embedded `OptimizerRecipe`
OPTIMIZER_KEYS = frozenset(item.name for item in fields(OptimizerRecipe))


def with_settings(config: T, **settings: Any) -> T:
    """A copy of a trainer config (a frozen dataclass embedding an `OptimizerRecipe` as `optim`)
    with `settings` replaced. The optimiser's keys (lr, weight_decay, betas, momentum, grad_clip,
    precision, optimizer) are given flat, as the command-line options and `--set` name them, unless
    the config has a field of that name itself. None values are ignored (an option not given)."""
    given = {key: value for key, value in settings.items() if value is not None}
    own = {item.name for item in fields(config)}
    optimizer_settings = {key: given.pop(key) for key in list(given) if key in OPTIMIZER_KEYS and key not in own}
    unknown = sorted(set(given) - own)
    if unknown:
        raise ConfigError(f"{type(config).__name__} has no setting {', '.join(unknown)}; it has "
                          f"{', '.join(sorted((own - {'optim'}) | OPTIMIZER_KEYS))}")
    if optimizer_settings:
        given["optim"] = replace(config.optim, **optimizer_settings)
    return replace(config, **given)
