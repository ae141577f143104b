"""THE training base: in-memory image sets, batch augmentations (RandomResizedCrop, flip,
ShufflePatches, CutMix), parameter groups and the one optimiser recipe every trainer's config
embeds (`OptimizerRecipe`), schedules (per epoch and warm-up + cosine per step), EMA, mixed
precision, atomic checkpoints with exact resume, and one step loop (`fit`: generators and their
fine-tunes) with an epoch view over it for classifiers (`train_model`: students and teachers),
running as DistributedDataParallel under torchrun (`training.parallel`)."""

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
from ddbench.training.optim import OptimizerRecipe, build_optimizer, decay_param_groups, with_settings
from ddbench.training.parallel import local_share, shard_key
from ddbench.training.recipe import TrainingRecipe, build_seeded_model, train_classifier
from ddbench.training.schedule import SCHEDULES, EpochSchedule, WarmupCosine, build_epoch_scheduler, constant_lr, quarter_cosine
from ddbench.training.steps import DivergenceKnobs, FitResult, fit

__all__ = [
    "SCHEDULES",
    "CutMix",
    "DivergenceKnobs",
    "EpochSchedule",
    "EpochBatches",
    "ExponentialMovingAverage",
    "FitResult",
    "HardLabelObjective",
    "MixedBatch",
    "OptimizerRecipe",
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
    "local_share",
    "quarter_cosine",
    "sampled_batch",
    "save_atomic",
    "shard_key",
    "shuffle_patches",
    "soft_label_kl",
    "square_resize",
    "train_classifier",
    "train_model",
    "validation_epochs",
    "with_settings",
]
