"""The RDED evaluation protocol (soft labels from a frozen teacher on every augmented batch),
the protocol under which the HIERAMP paper compares all methods. Constants: reference.md s3.

Per batch: ShufflePatches(factor) -> RandomResizedCrop(res, scale (1/factor, 1)) -> flip ->
CutMix (p=1, lambda ~ Beta(1,1), seeded) -> the teacher labels that same mixed batch -> loss
KL(batchmean) of log_softmax(student/T) against softmax(teacher/T), T=20, no T^2, no hard-label
term. AdamW (0.9, 0.999), weight decay 0.01 on ndim>1 tensors only, per-arch lr, per-epoch
quarter-cosine schedule, IPC-dependent batch size. Validation Resize(res//7*8)+CenterCrop(res).

Two numbers: `top1_best`, the best validation in the last 20% of epochs (every 10 epochs: 249,
259, ..., 299 for 300), comparable with published RDED-protocol tables, and `top1_final`, the
last epoch, which involves no choice on the validation split and is the leaderboard's primary.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddbench.core.distilled import DistilledSet
from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.interfaces import EvalTask
from ddbench.evaluators.base import StudentEvalConfig, StudentTrainingEvaluator
from ddbench.models import to_device
from ddbench.teachers import accuracy_floor, measure_accuracy
from ddbench.training import TeacherSoftLabelObjective, TrainingRecipe

#: RDED's learning rates by student family (prefix of the arch name)
LEARNING_RATES: dict[str, float] = {
    "resnet": 1e-3,
    "convnet": 1e-3,
    "efficientnet_b0": 2e-3,
    "mobilenet_v2": 2.5e-3,
}

#: RDED's batch sizes by IPC (for < 100 classes; doubled for 100 or more classes)
BATCH_SIZE_BY_IPC: dict[int, int] = {1: 10, 10: 50, 50: 100}


def rded_learning_rate(arch: str) -> float:
    """The protocol's lr for a student arch; unknown archs must set `lr` explicitly."""
    for prefix, lr in LEARNING_RATES.items():
        if arch.startswith(prefix):
            return lr
    raise ConfigError(f"the RDED protocol sets no learning rate for {arch!r}; pass --set rded.lr=<value>")


def rded_batch_size(ipc: int, num_classes: int) -> int:
    """IPC 50 -> 100, 10 -> 50, 1 -> 10, doubled for 100+ classes, capped at ipc * classes.

    IPCs between the published ones take the entry of the largest published IPC below them
    (IPC 20 -> 50, IPC 100 -> 100), so the rule is monotone and covers every IPC."""
    base = BATCH_SIZE_BY_IPC[max(k for k in BATCH_SIZE_BY_IPC if k <= max(ipc, 1))]
    if num_classes >= 100:
        base *= 2
    return max(1, min(base, ipc * num_classes))


@dataclass
class RdedConfig(StudentEvalConfig):
    epochs: int = 300
    #: None: the IPC rule (`rded_batch_size`)
    batch_size: int | None = None
    #: None: the per-arch rate (`LEARNING_RATES`)
    lr: float | None = None
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "quarter_cosine"
    temperature: float = 20.0
    cutmix_prob: float = 1.0
    cutmix_alpha: float = 1.0
    #: None: read from the distilled set's manifest (`shuffle_patch_factor`, default 1)
    shuffle_patch_factor: int | None = None
    validate_last_fraction: float = 0.2
    validate_every: int = 10


class RdedEvaluator(StudentTrainingEvaluator):
    """Soft-label distillation from a frozen teacher, RDED's protocol."""

    name = "rded"
    Config = RdedConfig
    needs_teacher = True
    presets = {
        # the paper's datasets: the published constants (the Config defaults, 300 epochs)
        "cifar": {},
        "imagenet": {},
        # 2-core CPU budget, same structure: 30 epochs, validations at 26, 28, 30 (last 20%)
        "digits": {"epochs": 30, "validate_every": 2},
    }

    def recipe(self, distilled: DistilledSet, task: EvalTask) -> TrainingRecipe:
        config = self.config
        factor = config.shuffle_patch_factor or distilled.shuffle_patch_factor
        return TrainingRecipe(
            epochs=config.epochs,
            batch_size=config.batch_size or rded_batch_size(distilled.ipc, task.dataset.num_classes),
            lr=config.lr if config.lr is not None else rded_learning_rate(task.student),
            optimizer="adamw",
            weight_decay=config.weight_decay,
            betas=tuple(config.betas),
            schedule=config.schedule,
            crop_scale=(1.0 / factor, 1.0),
            flip=True,
            shuffle_patch_factor=factor,
            cutmix_prob=config.cutmix_prob,
            cutmix_alpha=config.cutmix_alpha,
        )

    def objective(self, task: EvalTask) -> TeacherSoftLabelObjective:
        teacher = task.teacher
        if teacher is None:
            raise ConfigError("the rded evaluator needs a teacher; pass --teachers ARCH (and --teacher-ckpt PATH)")
        if teacher.num_classes != task.dataset.num_classes:
            raise CheckpointError(
                f"teacher {teacher.arch} has {teacher.num_classes} classes, {task.dataset.name} has {task.dataset.num_classes}"
            )
        teacher.model = to_device(teacher.model, task.device)
        if teacher.accuracy is None:  # a teacher from elsewhere: measure before it labels anything
            teacher.accuracy = measure_accuracy(teacher.model, task.dataset, task.device)
        if teacher.accuracy < accuracy_floor(task.dataset.num_classes):
            raise CheckpointError(
                f"teacher {teacher.arch} ({teacher.source}) has {teacher.accuracy:.1f}% top-1 on {task.dataset.name} val, "
                "near chance: its class order or dataset does not match; fix the mapping or retrain it"
            )
        return TeacherSoftLabelObjective(teacher.model, self.config.temperature, task.device, self.config.amp)

    def extra_metrics(self, task: EvalTask) -> dict[str, float]:
        return {"teacher_top1": float(task.teacher.accuracy)} if task.teacher and task.teacher.accuracy is not None else {}

    def extra_details(self, task: EvalTask) -> dict[str, object]:
        return {"teacher": task.teacher.info() if task.teacher else None}
