"""The teacher recipe: how ddbench trains a teacher when none is cached or given.

RDED's teachers for CIFAR, Tiny-ImageNet and the ImageNet subsets were trained by its authors
from scratch "with torchvision's reference code, following SRe2L", with settings never published
(RDED issue #5); ddbench writes its own down here, hashes it, and caches teachers by (dataset,
arch, recipe hash, resolution) so that changing a number retrains instead of silently reusing a
teacher made another way. A dataset declares its default recipe (`DatasetSpec.teacher_recipe`);
another one is chosen by name (`--teacher-recipe NAME`, `ddbench teacher train --recipe NAME`).

- digits: from scratch, AdamW lr 2e-3 wd 0.05 (ndim>1 only), batch 64, 10 epochs, cosine to 0,
  RandomResizedCrop(scale 0.5-1) + flip (the evaluator flips too), label smoothing 0.1.
- cifar: from scratch, SGD lr 0.1 momentum 0.9 wd 5e-4, batch 128, 200 epochs, cosine,
  RandomResizedCrop(scale 0.35-1) + flip, label smoothing 0.1.
- imagenet-scratch (default for Woof, Nette, ImageNet-100; RDED's kind of teacher): from scratch
  with the arguments SRe2L passes to torchvision's reference `train.py` (SGD lr 0.2 momentum 0.9
  wd 1e-4, batch 256, 5 linear warm-up epochs from 0.01x then cosine, RandomResizedCrop(0.08-1) +
  flip, no label smoothing), 200 epochs (SRe2L's Tiny-ImageNet run is 50 epochs over 100k
  images; the subsets have 9-13k, so ddbench takes 4x the epochs; RDED's count is unknown).
- imagenet-finetune (explicit only): fine-tune timm's ImageNet-1K weights, SGD lr 0.01, batch 64,
  30 epochs, cosine, RandomResizedCrop(0.08-1) + flip, label smoothing 0.1. Its starting point
  was trained on all of ImageNet-1K, these classes and (for the subsets) their images included.
- imagenet1k: timm's ImageNet weights as they are (ResNet-18: torchvision's, tag `tv_in1k`,
  the teacher RDED uses), no training.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from typing import Any

from ddbench.core.errors import ConfigError
from ddbench.core.hashing import stable_hash
from ddbench.core.interfaces import DatasetSpec
from ddbench.models.fingerprint import definition_fingerprint
from ddbench.training import OptimizerRecipe, TrainingRecipe

#: bump when the training code changes what a recipe produces
RECIPE_VERSION = 1


@dataclass(frozen=True)
class TeacherRecipe:
    """A teacher's training recipe; `epochs == 0` means pretrained weights used as they are."""

    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    schedule: str = "cosine"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip: bool = True
    label_smoothing: float = 0.1
    #: start from timm's ImageNet weights (found in the local cache; offline without them: error)
    pretrained: bool = False
    #: timm pretrained tag per arch, e.g. {"resnet18": "tv_in1k"}; default: timm's default tag
    pretrained_tags: tuple[tuple[str, str], ...] = ()
    seed: int = 0
    #: the recipe's name in RECIPES (set by `recipe_for`); a label, left out of the hash
    name: str = ""

    def training_recipe(self) -> TrainingRecipe:
        return TrainingRecipe(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optim=OptimizerRecipe(lr=self.lr, optimizer=self.optimizer, weight_decay=self.weight_decay),
            schedule=self.schedule,
            crop_scale=self.crop_scale,
            flip=self.flip,
        )

    def pretrained_tag(self, arch: str) -> str | None:
        return dict(self.pretrained_tags).get(arch)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


RECIPES: dict[str, TeacherRecipe] = {
    "digits": TeacherRecipe(epochs=10, batch_size=64, lr=2e-3),
    "cifar": TeacherRecipe(
        epochs=200, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4, crop_scale=(0.35, 1.0)
    ),
    "imagenet-scratch": TeacherRecipe(
        epochs=200, batch_size=256, lr=0.2, optimizer="sgd", weight_decay=1e-4, schedule="warmup5_cosine",
        crop_scale=(0.08, 1.0), label_smoothing=0.0,
    ),
    "imagenet-finetune": TeacherRecipe(
        epochs=30, batch_size=64, lr=0.01, optimizer="sgd", weight_decay=1e-4, crop_scale=(0.08, 1.0), pretrained=True
    ),
    "imagenet1k": TeacherRecipe(epochs=0, pretrained=True, pretrained_tags=(("resnet18", "tv_in1k"),)),
}


def recipe_for(dataset: DatasetSpec, name: str | None = None, **overrides: Any) -> TeacherRecipe:
    """The recipe called `name`, or else the one the dataset declares (`DatasetSpec.teacher_recipe`),
    with overrides; an unknown name, or a dataset that declares none, is an error, never another
    dataset's recipe."""
    chosen = name or dataset.teacher_recipe
    recipe = RECIPES.get(chosen)
    if recipe is None:
        if name:
            close = difflib.get_close_matches(name, list(RECIPES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown teacher recipe {name!r}{hint}; known recipes: {', '.join(RECIPES)}")
        declared = f"declares teacher recipe {dataset.teacher_recipe!r}" if dataset.teacher_recipe else "declares no teacher recipe"
        raise ConfigError(
            f"dataset {dataset.name!r} {declared}; known recipes: {', '.join(RECIPES)}. Pass a trained teacher "
            "with --teacher-ckpt PATH, or set `teacher_recipe` on the dataset class"
        )
    return dataclasses.replace(recipe, name=chosen, **overrides)


def recipe_hash(recipe: TeacherRecipe, dataset: DatasetSpec, arch: str) -> str:
    """12 hex digits over everything that decides the teacher's weights."""
    identity = {
        "recipe": {key: value for key, value in recipe.to_dict().items() if key != "name"},  # contents, not the label
        "version": RECIPE_VERSION,
        "dataset": dataset.name,
        "resolution": dataset.resolution,
        "classes": list(dataset.class_names),
        "arch": arch,
        "model_definition": definition_fingerprint(arch, dataset.num_classes, dataset.resolution),
    }
    return stable_hash(identity, 12)
