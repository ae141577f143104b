"""The one student-training loop shared by every evaluator and by teacher training.

Per epoch: a seeded permutation of the in-memory training set; per batch: augment on the device,
mix, forward, objective, step; the lr schedule steps once per epoch; validation runs after the
epochs listed in `validate_after`. Evaluators differ only in the parts they pass in.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ddbench.core.device import autocast
from ddbench.core.progress import NullProgress, Progress
from ddbench.training.amp import Precision
from ddbench.training.augment import CutMix, MixedBatch, normalize
from ddbench.training.checkpoint import (
    ResumePoint,
    checkpoint_payload,
    load_checkpoint,
    load_module_state,
    random_state,
    restore_random_state,
    save_atomic,
)
from ddbench.training.data import TensorImageSet


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


_RANDOM_STREAMS = ("order+augment", "cutmix")


def _save_state(resume: ResumePoint, epoch: int, model, optimizer, scheduler, generator, mix_rng, history) -> None:
    save_atomic(checkpoint_payload(
        resume, epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(), random=random_state(dict(zip(_RANDOM_STREAMS, (generator, mix_rng)))),
        history=dataclasses.asdict(history),
    ), resume.path)


def _load_state(resume: ResumePoint, model, optimizer, scheduler, generator, mix_rng) -> tuple[int, TrainingHistory] | None:
    """Restore everything `_save_state` wrote; returns (first epoch to run, history so far)."""
    state = load_checkpoint(resume)
    if state is None:
        return None
    load_module_state(model, state["model"], resume.path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_random_state(state["random"], dict(zip(_RANDOM_STREAMS, (generator, mix_rng))))
    history = TrainingHistory(**state["history"])
    history.val_top1 = {int(k): v for k, v in history.val_top1.items()}
    return state["epoch"] + 1, history


def validation_epochs(epochs: int, last_fraction: float, every: int) -> list[int]:
    """0-based epochs to validate after: every `every` epochs counted back from the last one,
    within the last `last_fraction` of training. RDED (300 epochs, 0.2, 10): 249, 259, ..., 299."""
    first = epochs - max(1, round(epochs * last_fraction))
    return [e for e in range(first, epochs) if (epochs - 1 - e) % every == 0]


def prepare_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """channels_last on CUDA (what the model was converted to), unchanged on CPU."""
    if device.type == "cuda":
        return images.contiguous(memory_format=torch.channels_last)
    return images


@torch.no_grad()
def evaluate_top1(
    model: nn.Module,
    val_set: TensorImageSet,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: torch.device,
    batch_size: int = 256,
    amp: bool = True,
) -> float:
    """Top-1 accuracy in percent of `model` on a uint8 tensor set (already resized and cropped)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(val_set), batch_size):
        images = val_set.images[start : start + batch_size].to(device, non_blocking=True)
        images = prepare_inputs(normalize(images.float().div_(255), mean, std), device)
        with autocast(device, amp):
            logits = model(images)
        correct += int((logits.argmax(1).cpu() == val_set.labels[start : start + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / len(val_set)


def train_model(
    model: nn.Module,
    train_set: TensorImageSet,
    *,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    objective: Callable[[torch.Tensor, MixedBatch], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    mix_rng: np.random.Generator,
    cutmix: CutMix | None = None,
    validate_after: list[int] | tuple[int, ...] = (),
    validate: Callable[[nn.Module], float] | None = None,
    amp: bool = True,
    progress: Progress | None = None,
    description: str = "training",
    resume: ResumePoint | None = None,
) -> TrainingHistory:
    """Train `model` in place; returns the history. `generator` drives batch order and
    augmentation, `mix_rng` drives CutMix, so a seed fixes every draw. With `resume`, state is
    saved every `resume.every` epochs (atomically, see `training.checkpoint`) and a saved state is
    picked up where it stopped."""
    progress = progress or NullProgress()
    history = TrainingHistory()
    first_epoch = 0
    restored = _load_state(resume, model, optimizer, scheduler, generator, mix_rng) if resume is not None else None
    if restored is not None:
        first_epoch, history = restored
    validate_after = set(validate_after)
    precision = Precision.from_flag(device, amp)
    num_images = len(train_set)
    model.train()
    with progress.task(description, total=epochs) as bar:
        bar.advance(first_epoch)
        for epoch in range(first_epoch, epochs):
            started = time.perf_counter()
            order = torch.randperm(num_images, generator=generator)
            loss_sum, batches = torch.zeros((), device=device), 0
            for start in range(0, num_images, batch_size):
                indices = order[start : start + batch_size]
                images = train_set.images[indices].to(device, non_blocking=True)
                labels = train_set.labels[indices].to(device, non_blocking=True)
                images = prepare_inputs(augment(images, generator), device)
                batch = cutmix(images, labels, mix_rng) if cutmix is not None else MixedBatch(images, labels, labels, 1.0)
                with precision.autocast():
                    logits = model(batch.images)
                loss = objective(logits, batch)
                optimizer.zero_grad(set_to_none=True)
                precision.backward_step(loss, optimizer)
                loss_sum += loss.detach()
                batches += 1
                history.images_seen += len(indices)
            scheduler.step()
            history.epoch_losses.append(float(loss_sum) / max(batches, 1))  # one sync per epoch
            history.train_seconds += time.perf_counter() - started
            if validate is not None and epoch in validate_after:
                started = time.perf_counter()
                accuracy = validate(model)
                history.validation_seconds += time.perf_counter() - started
                history.val_top1[epoch] = accuracy
                bar.update(f"{description} (epoch {epoch + 1}: top-1 {accuracy:.1f}%)")
            if resume is not None and (epoch + 1) % resume.every == 0 and epoch + 1 < epochs:
                _save_state(resume, epoch, model, optimizer, scheduler, generator, mix_rng, history)
            bar.advance()
    if resume is not None and resume.path.exists():
        resume.path.unlink()  # finished: the result is what counts now
    return history
