"""One training run of one classifier, described by a `TrainingRecipe`: used by both evaluators
(students on a distilled set) and by teacher training (on the real train split), so the three
share a single loop and differ only in their recipe and objective."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ddbench.core.progress import Progress
from ddbench.core.seeding import derive_seed, numpy_generator, torch_generator
from ddbench.models import create_model, to_device
from ddbench.training.amp import Precision
from ddbench.training.augment import CutMix, TrainAugment
from ddbench.training.data import ImageSet, TensorImageSet
from ddbench.training.checkpoint import ResumePoint
from ddbench.training.loop import TrainingHistory, evaluate_top1, train_model
from ddbench.training.optim import OptimizerRecipe


@dataclass
class TrainingRecipe:
    """Everything that decides how a classifier is trained, besides its data and objective: its
    length and batch, the optimiser (`optim`), the per-epoch lr schedule and the augmentations."""

    epochs: int
    batch_size: int
    optim: OptimizerRecipe
    schedule: str = "quarter_cosine"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    shuffle_patch_factor: int = 1
    cutmix_prob: float = 0.0
    cutmix_alpha: float = 1.0

    def record(self) -> dict[str, Any]:
        """The recipe as result rows record it: JSON-ready, the optimiser's settings flat beside the rest."""
        flat = {**{key: value for key, value in asdict(self).items() if key != "optim"}, **asdict(self.optim)}
        return json.loads(json.dumps(flat))


def build_seeded_model(arch: str, num_classes: int, input_size: int, seed: int, purpose: str, **kwargs) -> nn.Module:
    """`create_model` with its random init drawn from (seed, purpose), leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, purpose))
        return create_model(arch, num_classes, input_size, **kwargs)


def train_classifier(
    model: nn.Module,
    recipe: TrainingRecipe,
    train_set: TensorImageSet,
    objective,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    resolution: int,
    seed: int,
    device: torch.device,
    val_set: ImageSet | None = None,
    validate_after: list[int] | tuple[int, ...] = (),
    amp: bool = True,
    progress: Progress | None = None,
    description: str = "training",
    purpose: str = "train",
    resume: ResumePoint | None = None,
) -> tuple[nn.Module, TrainingHistory]:
    """Train `model` (moved to `device`) with `recipe`; every random draw derives from (seed, purpose).
    `amp=False` trains (and validates) in float32 whatever `recipe.optim.precision` says."""
    model = to_device(model, device)
    optimizer = recipe.optim.build(model)
    augment = TrainAugment(
        output_size=resolution,
        mean=mean,
        std=std,
        crop_scale=tuple(recipe.crop_scale),
        flip=recipe.flip,
        shuffle_patch_factor=recipe.shuffle_patch_factor,
    )
    cutmix = CutMix(recipe.cutmix_prob, recipe.cutmix_alpha) if recipe.cutmix_prob > 0 else None

    def validate(trained: nn.Module) -> float:
        return evaluate_top1(trained, val_set, mean, std, device, amp=amp)

    history = train_model(
        model,
        train_set,
        augment=augment,
        objective=objective,
        optimizer=optimizer,
        schedule=recipe.schedule,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        device=device,
        generator=torch_generator(seed, f"{purpose}/order+augment"),
        mix_rng=numpy_generator(seed, f"{purpose}/cutmix"),
        cutmix=cutmix,
        validate_after=validate_after if val_set is not None else (),
        validate=validate if val_set is not None else None,
        precision=Precision(device, recipe.optim.precision if amp else "fp32"),
        progress=progress,
        description=description,
        resume=resume,
    )
    return model, history
