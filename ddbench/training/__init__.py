"""THE training base: in-memory image sets, batch augmentations (RandomResizedCrop, flip,
ShufflePatches, CutMix), parameter groups and the one optimiser recipe every trainer's config
embeds (`OptimizerRecipe`), schedules (per epoch and warm-up + cosine per step), EMA, mixed
precision, atomic checkpoints with exact resume, and one step loop (`fit`: generators and their
fine-tunes) with an epoch view over it for classifiers (`train_model`: students and teachers),
running as DistributedDataParallel under torchrun (`training.parallel`).

Members are imported on first use (`ddbench.core.lazy`): trainer configs embed `OptimizerRecipe`, and
the CLI reads them for `--help` without importing torch."""

from ddbench.core.lazy import lazy_exports

_EXPORTS = {
    "CutMix": "augment",
    "DivergenceKnobs": "steps",
    "EpochBatches": "batches",
    "EpochSchedule": "schedule",
    "ExponentialMovingAverage": "ema",
    "FitResult": "steps",
    "HardLabelObjective": "objectives",
    "ImageSet": "data",
    "MixedBatch": "augment",
    "OptimizerRecipe": "optim",
    "Precision": "amp",
    "ResumePoint": "checkpoint",
    "SCHEDULES": "schedule",
    "StreamingImageSet": "data",
    "TeacherSoftLabelObjective": "objectives",
    "TensorImageSet": "data",
    "TrainAugment": "augment",
    "TrainingHistory": "loop",
    "TrainingRecipe": "recipe",
    "WarmupCosine": "schedule",
    "build_epoch_scheduler": "schedule",
    "build_optimizer": "optim",
    "build_seeded_model": "recipe",
    "center_square_resize": "data",
    "constant_lr": "schedule",
    "decay_param_groups": "optim",
    "evaluate_top1": "loop",
    "fit": "steps",
    "load_checkpoint": "checkpoint",
    "load_tensor_set": "data",
    "load_validation_set": "data",
    "local_share": "parallel",
    "quarter_cosine": "schedule",
    "sampled_batch": "batches",
    "save_atomic": "checkpoint",
    "shard_key": "parallel",
    "shuffle_patches": "augment",
    "soft_label_kl": "objectives",
    "square_resize": "data",
    "train_classifier": "recipe",
    "train_model": "loop",
    "validation_epochs": "loop",
    "validation_transform": "data",
    "with_settings": "optim",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
