"""The one student-training loop shared by every evaluator and by teacher training.

Per epoch: a seeded permutation of the in-memory training set; per batch: augment on the device,
mix, forward, objective, step; the lr schedule steps once per epoch; validation runs after the
epochs listed in `validate_after`. Evaluators differ only in the parts they pass in.

The resume state is optional: a state file that cannot be used (truncated, from another version)
is moved aside with a warning and the training starts over; a state that cannot be saved (full
disk) costs only the ability to resume. A loss that turns NaN or infinite stops the training with
a TrainingDivergedError naming the epoch, never a silent chance-level result.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ddbench.core.device import autocast
from ddbench.core.errors import CheckpointError, StorageError, TrainingDivergedError
from ddbench.core.files import set_aside
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
from ddbench.training.data import ImageSet, TensorImageSet


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


#: also check the running loss every this many batches, so a long epoch stops soon after diverging
DIVERGENCE_CHECK_BATCHES = 50


def _save_state(resume: ResumePoint, epoch: int, model, optimizer, scheduler, generator, mix_rng, history,
                progress: Progress) -> None:
    """Save the optional resume state; a disk that refuses it costs only the ability to resume."""
    try:
        save_atomic(checkpoint_payload(
            resume, epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), random=random_state(dict(zip(_RANDOM_STREAMS, (generator, mix_rng)))),
            history=dataclasses.asdict(history),
        ), resume.path)
    except (StorageError, OSError) as exc:
        progress.log(f"warning: the training state was not saved ({exc}); training goes on, "
                     "but an interruption now restarts it from its last saved state")


def _load_state(resume: ResumePoint, model, optimizer, scheduler, generator, mix_rng,
                progress: Progress) -> tuple[int, TrainingHistory] | None:
    """Restore everything `_save_state` wrote; returns (first epoch to run, history so far).

    A state that cannot be used is moved aside (named in a warning) and everything is put back
    as it was before the attempt, so the training starts over exactly as a fresh one."""
    if not resume.path.is_file():
        return None
    sources = dict(zip(_RANDOM_STREAMS, (generator, mix_rng)))
    fresh = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), scheduler.state_dict(),
             random_state(sources))
    try:
        state = load_checkpoint(resume)
        load_module_state(model, state["model"], resume.path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_random_state(state["random"], sources)
        history = TrainingHistory(**state["history"])
        history.val_top1 = {int(k): v for k, v in history.val_top1.items()}
        return int(state["epoch"]) + 1, history
    except (CheckpointError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        model.load_state_dict(fresh[0])
        optimizer.load_state_dict(fresh[1])
        scheduler.load_state_dict(fresh[2])
        restore_random_state(fresh[3], sources)
        reason = str(exc).rsplit("; delete", 1)[0] if isinstance(exc, CheckpointError) else (
            f"training state {resume.path} does not hold what this training saves ({type(exc).__name__}: {exc})")
        try:
            where = f"moved it to {set_aside(resume.path).name}"
        except StorageError as move_error:
            where = f"could not move it aside ({move_error})"
        progress.log(f"warning: {reason}; {where} and started this training from scratch")
        return None


def _check_finite(loss: float, where: str, description: str, lr: float, mixed_precision: bool,
                  resume: ResumePoint | None) -> None:
    """Stop a diverged training; its saved state would only lead to the same divergence, so it goes."""
    if math.isfinite(loss):
        return
    if resume is not None:
        resume.path.unlink(missing_ok=True)
    knobs = "lower the learning rate (--set lr=...)" + (" or train in float32 (--set amp=false)" if mixed_precision else "")
    raise TrainingDivergedError(
        f"{description}: the training loss became {loss} in {where} (lr {lr:.3g}); the training diverged: {knobs}"
    )


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
    val_set: ImageSet,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: torch.device,
    batch_size: int = 256,
    amp: bool = True,
) -> float:
    """Top-1 accuracy in percent of `model` on a uint8 image set (already resized and cropped),
    held in memory or streamed from disk."""
    was_training = model.training
    model.eval()
    correct = 0
    for images, labels in val_set.batches(batch_size):
        images = prepare_inputs(normalize(images.to(device, non_blocking=True).float().div_(255), mean, std), device)
        with autocast(device, amp):
            logits = model(images)
        correct += int((logits.argmax(1).cpu() == labels).sum())
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
    restored = _load_state(resume, model, optimizer, scheduler, generator, mix_rng, progress) if resume is not None else None
    if restored is not None:
        first_epoch, history = restored
    validate_after = set(validate_after)
    precision = Precision.from_flag(device, amp)
    lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])  # as configured
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
                if batches % DIVERGENCE_CHECK_BATCHES == 0:
                    _check_finite(float(loss_sum), f"epoch {epoch + 1} of {epochs} (batch {batches})", description, lr,
                                  precision.mode != "fp32", resume)
            scheduler.step()
            history.epoch_losses.append(float(loss_sum) / max(batches, 1))  # one sync per epoch
            _check_finite(history.epoch_losses[-1], f"epoch {epoch + 1} of {epochs}", description, lr, precision.mode != "fp32",
                          resume)
            history.train_seconds += time.perf_counter() - started
            if validate is not None and epoch in validate_after:
                started = time.perf_counter()
                accuracy = validate(model)
                history.validation_seconds += time.perf_counter() - started
                history.val_top1[epoch] = accuracy
                bar.update(f"{description} (epoch {epoch + 1}: top-1 {accuracy:.1f}%)")
            if resume is not None and (epoch + 1) % resume.every == 0 and epoch + 1 < epochs:
                _save_state(resume, epoch, model, optimizer, scheduler, generator, mix_rng, history, progress)
            bar.advance()
    if resume is not None:
        resume.path.unlink(missing_ok=True)  # finished: the result is what counts now
    return history
