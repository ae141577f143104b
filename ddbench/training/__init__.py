"""The shared student-training machinery: in-memory data, batch augmentations (RandomResizedCrop,
flip, ShufflePatches, CutMix), optimiser groups, per-epoch schedules, objectives and the loop."""

from ddbench.training.augment import CutMix, MixedBatch, TrainAugment, shuffle_patches
from ddbench.training.data import TensorImageSet, load_tensor_set, load_validation_set, square_resize, validation_transform
from ddbench.training.loop import ResumePoint, TrainingHistory, evaluate_top1, train_model, validation_epochs
from ddbench.training.objectives import HardLabelObjective, TeacherSoftLabelObjective, soft_label_kl
from ddbench.training.recipe import TrainingRecipe, build_seeded_model, train_classifier
from ddbench.training.optim import build_optimizer, decay_param_groups
from ddbench.training.schedule import SCHEDULES, build_epoch_scheduler, quarter_cosine

__all__ = [
    "SCHEDULES",
    "CutMix",
    "HardLabelObjective",
    "MixedBatch",
    "ResumePoint",
    "TeacherSoftLabelObjective",
    "TensorImageSet",
    "TrainAugment",
    "TrainingHistory",
    "TrainingRecipe",
    "build_seeded_model",
    "train_classifier",
    "build_epoch_scheduler",
    "build_optimizer",
    "decay_param_groups",
    "evaluate_top1",
    "load_tensor_set",
    "load_validation_set",
    "quarter_cosine",
    "shuffle_patches",
    "soft_label_kl",
    "square_resize",
    "train_model",
    "validation_epochs",
]
