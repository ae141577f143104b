"""The hard-label evaluator: cross-entropy on the distilled images' own labels, no teacher.

The protocol of Minimax's own paper family (IDC-style): SGD with momentum, cosine schedule,
RandomResizedCrop + flip (optionally CutMix with mixed labels), top-1 on the real val split.
It shares the student-training loop with `rded`; only the recipe and objective differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddbench.core.distilled import DistilledSet
from ddbench.core.interfaces import EvalTask
from ddbench.evaluators.base import StudentEvalConfig, StudentTrainingEvaluator
from ddbench.training import HardLabelObjective, OptimizerRecipe, TrainingRecipe


@dataclass
class HardLabelConfig(StudentEvalConfig):
    epochs: int = 300
    #: capped at the number of distilled images
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    crop_scale_min: float = 0.5
    cutmix_prob: float = 0.0
    label_smoothing: float = 0.0
    #: only the last epoch by default: one honest number, no selection on the val split
    validate_last_fraction: float = 0.0
    validate_every: int = 1


class HardLabelEvaluator(StudentTrainingEvaluator):
    """Cross-entropy training of the student on the distilled set; no teacher."""

    name = "hard_label"
    Config = HardLabelConfig
    presets = {
        # 100 images x 20 epochs of a 16 px ResNet-18: ~30 s on 2 CPU cores
        "digits": {"epochs": 20, "batch_size": 32, "lr": 0.05},
    }
    needs_teacher = False

    def recipe(self, distilled: DistilledSet, task: EvalTask) -> TrainingRecipe:
        config = self.config
        return TrainingRecipe(
            epochs=config.epochs,
            batch_size=max(1, min(config.batch_size, len(distilled.samples))),
            optim=OptimizerRecipe(lr=config.lr, optimizer=config.optimizer, weight_decay=config.weight_decay,
                                  momentum=config.momentum, precision="auto" if config.amp else "fp32"),
            schedule=config.schedule,
            crop_scale=(config.crop_scale_min, 1.0),
            flip=True,
            cutmix_prob=config.cutmix_prob,
        )

    def objective(self, task: EvalTask) -> HardLabelObjective:
        return HardLabelObjective(self.config.label_smoothing)
