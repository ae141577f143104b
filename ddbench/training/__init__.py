"""THE training base: in-memory image sets, batch augmentations (RandomResizedCrop, flip,
ShufflePatches, CutMix), parameter groups, schedules (per epoch and warm-up + cosine per step),
EMA, mixed precision, atomic checkpoints with exact resume, the epoch loop for classifiers
(`train_model`, students and teachers) and the step loop for generators (`fit`)."""

from ddbench.training.amp import Precision
from ddbench.training.augment import CutMix, MixedBatch, TrainAugment, shuffle_patches
from ddbench.training.batches import EpochBatches, sampled_batch
from ddbench.training.checkpoint import ResumePoint, load_checkpoint, save_atomic
from ddbench.training.data import (
    ImageSet,
    StreamingImageSet,
    TensorImageSet,
    center_square_resize,
    load_tensor_set,
    load_validation_set,
    square_resize,
    validation_transform,
)
from ddbench.training.ema import ExponentialMovingAverage
from ddbench.training.loop import TrainingHistory, evaluate_top1, train_model, validation_epochs
from ddbench.training.objectives import HardLabelObjective, TeacherSoftLabelObjective, soft_label_kl
from ddbench.training.optim import build_optimizer, decay_param_groups
from ddbench.training.recipe import TrainingRecipe, build_seeded_model, train_classifier
from ddbench.training.schedule import SCHEDULES, WarmupCosine, build_epoch_scheduler, constant_lr, quarter_cosine
from ddbench.training.steps import FitResult, fit

__all__ = [
    "SCHEDULES",
    "CutMix",
    "EpochBatches",
    "ExponentialMovingAverage",
    "FitResult",
    "HardLabelObjective",
    "MixedBatch",
    "Precision",
    "ResumePoint",
    "TeacherSoftLabelObjective",
    "ImageSet",
    "StreamingImageSet",
    "TensorImageSet",
    "TrainAugment",
    "TrainingHistory",
    "TrainingRecipe",
    "WarmupCosine",
    "build_epoch_scheduler",
    "build_optimizer",
    "build_seeded_model",
    "center_square_resize",
    "constant_lr",
    "decay_param_groups",
    "evaluate_top1",
    "fit",
    "load_checkpoint",
    "load_tensor_set",
    "load_validation_set",
    "quarter_cosine",
    "sampled_batch",
    "save_atomic",
    "shuffle_patches",
    "soft_label_kl",
    "square_resize",
    "train_classifier",
    "train_model",
    "validation_epochs",
]
