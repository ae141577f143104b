"""What the student-training evaluators share: load the distilled set and the real val split as
tensors, build the seeded student, run the shared loop, and name the numbers honestly.

How the student is built (`student_init`) and how its inputs are normalised
(`student_normalization`) are config keys, stored with every result: each protocol follows the
code it reproduces (the `rded` evaluator: torchvision's students and ImageNet constants).

`top1_final` is the accuracy after the last epoch: no choice made on the validation split.
`top1_best` is the best of the validations in the last `validate_last_fraction` of epochs, which
is what RDED-protocol papers report; it is only produced when more than one validation ran.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from ddbench.core.config import config_to_dict
from ddbench.core.distilled import DistilledSet
from ddbench.core.errors import ConfigError, DistilledSetError
from ddbench.core.identity import EvalIdentity
from ddbench.core.interfaces import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec, EvalResult, EvalTask, Evaluator
from ddbench.models.factory import INIT_STYLES, check_archs
from ddbench.training import (
    ResumePoint,
    TrainingHistory,
    TrainingRecipe,
    build_seeded_model,
    load_tensor_set,
    load_validation_set,
    square_resize,
    train_classifier,
    validation_epochs,
)

METRIC_NAMES = ("top1_final", "top1_best")
NORMALIZATIONS = ("dataset", "imagenet")


@dataclass
class StudentEvalConfig:
    """Fields every student-training evaluator has (subclasses add their protocol's)."""

    epochs: int = 300
    #: validate after every `validate_every` epochs within the last `validate_last_fraction`
    validate_last_fraction: float = 0.2
    validate_every: int = 10
    #: bf16 autocast for student (and teacher) on CUDA; CPU always runs float32
    amp: bool = True
    #: the leaderboard metric: top1_final (no selection on val) or top1_best (the protocol's)
    primary_metric: str = "top1_final"
    #: with EvalTask.workdir set, save the training state every this many epochs (0: never)
    resume_every: int = 10
    #: how the student is built and initialised: "timm" or "torchvision" (`ddbench.models.create_model`)
    student_init: str = "timm"
    #: the student's input mean/std (training and validation): "dataset" (its own) or "imagenet"
    student_normalization: str = "dataset"
    #: False: train on the images as they are (no ShufflePatches, crop, flip or CutMix), as
    #: DD-Ranking's "without augmentation" runs for its ARS do; part of the config, so such rows
    #: form tables of their own
    augment: bool = True


def student_normalization(config: StudentEvalConfig, dataset: DatasetSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the student's inputs are normalised with under `config`."""
    if config.student_normalization == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if config.student_normalization == "dataset":
        return tuple(dataset.mean), tuple(dataset.std)
    raise ConfigError(f"student_normalization {config.student_normalization!r} is not one of {', '.join(NORMALIZATIONS)}")


#: the code a trained student's accuracy depends on: the evaluators, the training loop and
#: objectives, and the models (architectures, init, frozen inference); a change to any of them
#: makes rows of other evaluator source, never pooled with the old ones
STUDENT_TRAINING_SOURCE = ("ddbench.evaluators", "ddbench.training", "ddbench.models")


class StudentTrainingEvaluator(Evaluator, abc.ABC):
    """Trains `task.student` on the distilled set with `recipe()` and `objective()`."""

    source_modules = STUDENT_TRAINING_SOURCE

    @abc.abstractmethod
    def recipe(self, distilled: DistilledSet, task: EvalTask) -> TrainingRecipe:
        """The resolved training recipe for this set, student and dataset."""

    @abc.abstractmethod
    def objective(self, task: EvalTask):
        """A callable (student_logits, MixedBatch) -> loss."""

    def extra_metrics(self, task: EvalTask) -> dict[str, float]:
        return {}

    def extra_details(self, task: EvalTask) -> dict[str, Any]:
        return {}

    def check_architectures(self, students: Sequence[str], teachers: Sequence[str]) -> None:
        if self.config.student_init not in INIT_STYLES:
            raise ConfigError(f"student_init {self.config.student_init!r} is not one of {', '.join(INIT_STYLES)}")
        check_archs(students, "student architecture (--students)")
        if self.needs_teacher:
            check_archs(teachers, "teacher architecture (--teachers)")

    def prepare_student(self, student: Any) -> None:
        """A protocol's change to the freshly built student before training (default: none)."""

    def evaluate(self, distilled: DistilledSet, task: EvalTask) -> EvalResult:
        config = self.config
        if config.primary_metric not in METRIC_NAMES:
            raise ConfigError(f"primary_metric {config.primary_metric!r} is not one of {', '.join(METRIC_NAMES)}")
        if config.epochs < 1:
            raise ConfigError(f"{self.name}: epochs must be at least 1, got {config.epochs}")
        self.check_architectures([task.student], [])  # the pipeline checked them all before distilling
        dataset = task.dataset
        mean, std = student_normalization(config, dataset)
        if len(distilled.class_names) != dataset.num_classes:
            raise DistilledSetError(
                f"{distilled.root}: {len(distilled.class_names)} classes, but {dataset.name} has {dataset.num_classes}"
            )
        recipe = self.recipe(distilled, task)
        if not config.augment:
            recipe = without_augmentation(recipe)
        objective = self.objective(task)  # before the heavy loading: a missing teacher fails fast
        resolution = dataset.resolution
        train_set = load_tensor_set(distilled.dataset(), square_resize(resolution), f"distilled set {distilled.root}")
        val_set = load_validation_set(dataset, resolution)
        validate_after = validation_epochs(config.epochs, config.validate_last_fraction, config.validate_every)
        resume = self.resume_point(distilled, task, recipe)
        student = build_seeded_model(
            task.student, dataset.num_classes, resolution, task.seed, "student-init", init=config.student_init
        )
        self.prepare_student(student)
        _, history = train_classifier(
            student,
            recipe,
            train_set,
            objective,
            mean=mean,
            std=std,
            resolution=resolution,
            seed=task.seed,
            device=task.device,
            val_set=val_set,
            validate_after=validate_after,
            amp=config.amp,
            progress=task.progress,
            description=f"{self.name}: {task.student} seed {task.seed}",
            purpose=f"{self.name}/student",
            resume=resume,
        )
        metrics = {**summarise_validations(history), **self.extra_metrics(task)}
        if config.primary_metric not in metrics:
            raise ConfigError(
                f"primary_metric {config.primary_metric!r} needs more than one validation; "
                "raise validate_last_fraction or lower validate_every"
            )
        details = {
            "recipe": recipe.record(),
            "config": config_to_dict(config),
            "student": {"arch": task.student, "init": config.student_init, "mean": list(mean), "std": list(std)},
            "val_top1_by_epoch": {str(epoch + 1): acc for epoch, acc in sorted(history.val_top1.items())},
            "top1_best_epochs": [epoch + 1 for epoch in sorted(history.val_top1)],
            "epoch_losses": history.epoch_losses,
            "train_seconds": history.train_seconds,
            "validation_seconds": history.validation_seconds,
            "train_images_per_second": history.train_images_per_second,
            "distilled_images": len(train_set),
            "val_images": len(val_set),
            **self.extra_details(task),
        }
        return EvalResult(metrics=metrics, primary=config.primary_metric, details=details)


    def resume_point(self, distilled: DistilledSet, task: EvalTask, recipe: TrainingRecipe) -> ResumePoint | None:
        """A state file unique to this evaluation (`EvalIdentity`: run, evaluator code and config,
        teacher, student, seed) and to what it trains (recipe, distilled images)."""
        if task.workdir is None or self.config.resume_every <= 0:
            return None
        identity = task.identity or EvalIdentity(
            run_key=distilled.content_hash, evaluator=self.name, code=self.code().to_dict(),
            config=config_to_dict(self.config), student=task.student, seed=task.seed,
            teacher_key=(task.teacher.checkpoint_sha256 or "") if task.teacher else "")
        name = identity.state_name({"recipe": config_to_dict(recipe), "distilled": distilled.content_hash})
        return ResumePoint(task.workdir / name, self.config.resume_every)


def without_augmentation(recipe: TrainingRecipe) -> TrainingRecipe:
    """`recipe` training on the images as they are: the crop box is always the whole image (scale
    (1, 1): the resize is the identity), no flip, no ShufflePatches, no CutMix."""
    return dataclasses.replace(recipe, crop_scale=(1.0, 1.0), flip=False, shuffle_patch_factor=1, cutmix_prob=0.0)


def summarise_validations(history: TrainingHistory) -> dict[str, float]:
    """top1_final from the last validation (always the last epoch); top1_best when there were several."""
    epochs = sorted(history.val_top1)
    metrics = {"top1_final": history.val_top1[epochs[-1]]}
    if len(epochs) > 1:
        metrics["top1_best"] = max(history.val_top1.values())
    return metrics


def resolved_fields(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
