"""The classifier loop shared by every evaluator and by teacher training: an epoch view over `fit`.

Per epoch: a seeded permutation of the in-memory training set; per batch (one `fit` step): augment
on the device, mix, forward, objective; the lr schedule changes once per epoch; validation runs
after the epochs listed in `validate_after`. Evaluators differ only in the parts they pass in.

Resume, divergence, DDP and precision are `fit`'s: the resume state is `optional` (a state file that
cannot be used is moved aside with a warning and the training starts over; one that cannot be
saved costs only the ability to resume), and a loss that turns NaN or infinite or explodes stops
the training with a TrainingDivergedError naming the epoch, never a silent chance-level result.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ddbench.core import distributed
from ddbench.core.device import autocast, uses_channels_last, validation_batch_size
from ddbench.core.progress import NullProgress, Progress
from ddbench.models.inference import inference_model
from ddbench.training.amp import Precision
from ddbench.training.augment import CutMix, MixedBatch, normalize
from ddbench.training.checkpoint import ResumePoint
from ddbench.training.data import ImageSet, TensorImageSet
from ddbench.training.parallel import share_bounds, share_weight
from ddbench.training.schedule import EpochSchedule
from ddbench.training.steps import DivergenceKnobs, fit


@dataclass
class TrainingHistory:
    """What happened: per-epoch mean loss, validation top-1 (%) by 0-based epoch, and timing."""

    epoch_losses: list[float] = field(default_factory=list)
    val_top1: dict[int, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    validation_seconds: float = 0.0
    images_seen: int = 0

    @property
    def train_images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restored = TrainingHistory(**state)
        restored.val_top1 = {int(epoch): accuracy for epoch, accuracy in restored.val_top1.items()}
        self.__dict__.update(restored.__dict__)


#: how a diverged classifier training names its knobs (evaluators' `--set` keys)
CLASSIFIER_KNOBS = DivergenceKnobs(lr="--set lr=...", precision="--set amp=false")


def validation_epochs(epochs: int, last_fraction: float, every: int) -> list[int]:
    """0-based epochs to validate after: every `every` epochs counted back from the last one,
    within the last `last_fraction` of training. RDED (300 epochs, 0.2, 10): 249, 259, ..., 299."""
    first = epochs - max(1, round(epochs * last_fraction))
    return [e for e in range(first, epochs) if (epochs - 1 - e) % every == 0]


def prepare_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch in the memory format `models.to_device` gave the model (`core.device.uses_channels_last`)."""
    if uses_channels_last(device):
        return images.contiguous(memory_format=torch.channels_last)
    return images


@torch.inference_mode()
def evaluate_top1(
    model: nn.Module,
    val_set: ImageSet,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: torch.device,
    batch_size: int | None = None,
    amp: bool = True,
) -> float:
    """Top-1 accuracy in percent of `model` on a uint8 image set (already resized and cropped),
    held in memory or streamed from disk, `batch_size` (default `core.device.validation_batch_size`)
    at a time. Under data-parallel training each rank counts its share of the set and the counts
    are summed."""
    batch_size = batch_size or validation_batch_size(device)
    was_training = model.training
    model.eval()
    rank, world = distributed.data_parallel_world()
    first, last = share_bounds(len(val_set), rank, world)
    correct = torch.zeros((), dtype=torch.long)
    runner = None  # the model frozen for inference (`models.inference`), built on the first batch
    for images, labels in val_set.batches(batch_size, first, last):
        images = prepare_inputs(normalize(images.to(device, non_blocking=True).float().div_(255), mean, std), device)
        if runner is None:
            runner = inference_model(model, images)
        with autocast(device, amp):
            logits = runner(images)
        correct += (logits.argmax(1).cpu() == labels).sum()
    model.train(was_training)
    if world > 1:
        correct = distributed.all_reduce_sum(correct.to(device)).cpu()
    return 100.0 * int(correct) / len(val_set)


def train_model(
    model: nn.Module,
    train_set: TensorImageSet,
    *,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    objective: Callable[[torch.Tensor, MixedBatch], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    schedule: str,
    epochs: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    mix_rng: np.random.Generator,
    cutmix: CutMix | None = None,
    validate_after: list[int] | tuple[int, ...] = (),
    validate: Callable[[nn.Module], float] | None = None,
    precision: Precision | None = None,
    progress: Progress | None = None,
    description: str = "training",
    resume: ResumePoint | None = None,
) -> TrainingHistory:
    """Train `model` in place for `epochs` passes over `train_set`; returns the history. `generator`
    drives batch order and augmentation, `mix_rng` drives CutMix, so a seed fixes every draw; the lr
    follows the per-epoch `schedule` (a name in `training.schedule.SCHEDULES`). With `resume`, the
    state is saved every `resume.every` epochs (`fit`'s checkpoint, optional) and a saved state is
    picked up where it stopped. The objective runs outside autocast, on the logits as they come.

    Under torchrun (outside `distributed.local_only`) this is `fit`'s DistributedDataParallel
    training of the same global batch: every rank draws the global batch's order, augmentation and
    CutMix from the same streams and trains on its share (`_rank_share`); rank 0 alone saves."""
    progress = progress or NullProgress()
    precision = precision or Precision(device, "fp32")
    history = TrainingHistory()
    if epochs < 1:
        return history
    num_images = len(train_set)
    steps_per_epoch = math.ceil(num_images / batch_size)
    validate_after = set(validate_after) if validate is not None else set()
    rank, world = distributed.data_parallel_world()
    epoch_state = {"order": None, "started": 0.0, "loss_sum": torch.zeros((), device=device)}

    def step_loss(step: int):
        index = step % steps_per_epoch  # the batch's place in its epoch
        if index == 0:
            epoch_state["order"], epoch_state["started"] = torch.randperm(num_images, generator=generator), time.perf_counter()
            epoch_state["loss_sum"] = torch.zeros((), device=device)
        indices = epoch_state["order"][index * batch_size:(index + 1) * batch_size]
        with torch.autocast(device.type, enabled=False):  # only the student's forward runs under autocast
            images = train_set.images[indices].to(device, non_blocking=True)
            labels = train_set.labels[indices].to(device, non_blocking=True)
            images = prepare_inputs(augment(images, generator), device)
            batch = cutmix(images, labels, mix_rng) if cutmix is not None else MixedBatch(images, labels, labels, 1.0)
            weight = 1.0
            if world > 1:
                batch, weight = _rank_share(batch, rank, world)
        logits = model(batch.images)
        with torch.autocast(device.type, enabled=False):
            loss = objective(logits, batch) * weight if world > 1 else objective(logits, batch)
        epoch_state["loss_sum"] += loss.detach()
        history.images_seen += len(indices)
        return loss, {}

    def end_of_epoch(epoch: int) -> str | None:
        loss_sum = epoch_state["loss_sum"]
        if world > 1:  # the global batches' mean losses, as one process would have logged them
            loss_sum = distributed.all_reduce_sum(loss_sum) / world
        history.epoch_losses.append(float(loss_sum) / steps_per_epoch)  # one sync per epoch
        history.train_seconds += time.perf_counter() - epoch_state["started"]
        if epoch not in validate_after:
            return None
        started = time.perf_counter()
        history.val_top1[epoch] = accuracy = validate(model)
        history.validation_seconds += time.perf_counter() - started
        return f"{description} (epoch {epoch + 1}: top-1 {accuracy:.1f}%)"

    steps_resume = None
    if resume is not None:
        steps_resume = dataclasses.replace(resume, every=resume.every * steps_per_epoch, optional=True)
    fit(model, optimizer, step_loss, total_steps=epochs * steps_per_epoch,
        schedule=EpochSchedule(schedule, epochs, steps_per_epoch), precision=precision, resume=steps_resume,
        random_sources={"order+augment": generator, "cutmix": mix_rng}, stateful={"history": history},
        steps_per_epoch=steps_per_epoch, on_epoch_end=end_of_epoch, progress=progress, description=description,
        knobs=CLASSIFIER_KNOBS, progress_in_epochs=True)
    model.train()
    return history


def _rank_share(batch: MixedBatch, rank: int, world: int) -> tuple[MixedBatch, float]:
    """This rank's contiguous share of a global batch and its loss weight (`training.parallel`).
    A rank left without an example (a last batch smaller than the world) trains on one with weight 0."""
    count = len(batch.labels)
    start, end = share_bounds(count, rank, world)
    weight = share_weight(count, rank, world)
    if start == end:
        start, end, weight = 0, 1, 0.0
    share = MixedBatch(batch.images[start:end], batch.labels[start:end], batch.partner_labels[start:end], batch.lam)
    return share, weight

