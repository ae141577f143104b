"""`fit`: the step-based training loop every generator training and fine-tune runs on.

Per step: set each group's lr from the schedule, compute the caller's loss (under autocast),
backward, clip, step (through `Precision`), update the EMA. Every `resume.every` steps, and when
the run stops, the whole state (model, optimiser, EMA, grad scaler, random streams, loss history,
the caller's `stateful` extras) is saved atomically; the next call with the same `ResumePoint`
continues from there and ends bit for bit where an uninterrupted run ends (CPU, float32),
provided `step_loss` draws its randomness from the step index or from the generators it
registers in `random_sources`, and keeps any other state it changes in `stateful`.
Epochs are a view on steps: pass `steps_per_epoch` (e.g. `EpochBatches.steps_per_epoch`) and
`on_epoch_end`, and checkpoint at epoch boundaries with `every = steps_per_epoch`.
A loss that turns NaN or infinite, or explodes (`EXPLOSION_FACTOR` times its start, still finite),
stops the run with a TrainingDivergedError naming the step (and epoch), the lr and the knob to
change; it is checked before every checkpoint, so no diverged state is ever saved. With
`save_on_interrupt` (a step loss whose state is whole after every step, not only at checkpoints),
a Ctrl-C lets the running step finish, saves the state there and raises KeyboardInterrupt: the
rerun loses no finished step. This is the one resume, divergence check, DDP wrap and precision
policy of the base: the classifier loop (`training.loop.train_model`) is an epoch view over `fit`,
with an `optional` resume state.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Protocol

import torch
from torch import nn

from ddbench.core import distributed
from ddbench.core.errors import CheckpointError, ConfigError, StorageError, TrainingDivergedError
from ddbench.core.files import set_aside
from ddbench.core.progress import NullProgress, Progress
from ddbench.training.amp import Precision
from ddbench.training.checkpoint import (
    RandomSource,
    ResumePoint,
    checkpoint_payload,
    load_checkpoint,
    load_module_state,
    random_state,
    restore_random_state,
    save_atomic,
)
from ddbench.training.ema import ExponentialMovingAverage
from ddbench.training.parallel import check_same_start, synchronized_batchnorm, wrap_data_parallel
from ddbench.training.schedule import constant_lr

#: the losses are also checked for divergence every this many steps (besides checkpoints and epoch ends)
DIVERGENCE_CHECK_STEPS = 50
#: a finite loss this many times its start (the first step's |loss|, at least 1) has diverged as surely as a NaN
EXPLOSION_FACTOR = 1e4

#: step_loss(step) -> (loss to minimise, metrics to report: detached scalar tensors)
StepLoss = Callable[[int], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


class DivergenceKnobs(NamedTuple):
    """How a diverged run's message names the settings to change: the learning rate, and float32
    training (suggested only when the run was in mixed precision)."""

    lr: str = "lr"
    precision: str = "precision=fp32"


class Stateful(Protocol):
    """Anything else a step changes (a memory bank, a counter): saved and restored with the run.
    Its state_dict must hold tensors and primitives only (checkpoints load weights_only)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    """`steps`: steps done so far in total; `losses`: the loss of every one of them (float32)."""

    steps: int
    total_steps: int
    resumed_from: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    losses: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def finished(self) -> bool:
        return self.steps == self.total_steps

    def summary(self) -> dict:
        """Plain numbers for a JSON record: steps, resumed_from, seconds, finished, last metrics."""
        return {"steps": self.steps, "resumed_from": self.resumed_from, "seconds": self.seconds,
                "finished": self.finished, **self.metrics}


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_loss: StepLoss,
    *,
    total_steps: int,
    schedule: Callable[[float, int], float] = constant_lr,
    grad_clip: float | None = None,
    ema: ExponentialMovingAverage | None = None,
    precision: Precision | None = None,
    resume: ResumePoint | None = None,
    random_sources: Mapping[str, RandomSource] | None = None,
    stateful: Mapping[str, Stateful] | None = None,
    steps_per_epoch: int | None = None,
    on_epoch_end: Callable[[int], str | None] | None = None,
    stop_after: int | None = None,
    progress: Progress | None = None,
    description: str = "training",
    knobs: DivergenceKnobs = DivergenceKnobs(),
    progress_in_epochs: bool = False,
    save_on_interrupt: bool = False,
) -> FitResult:
    """Train `model` in place for steps [resumed step, min(total_steps, stop_after)); returns what
    happened. The model is left in eval mode. `schedule(peak_lr, step)` sets each group's lr from
    its peak (the lr the group was built with); `grad_clip` clips the global norm of all of
    `model`'s gradients. `stateful` objects (e.g. per-class memories) are checkpointed by name.
    `on_epoch_end(epoch)` runs after the last step of each epoch (before that step's checkpoint);
    a text it returns becomes the progress bar's description. `knobs` name the settings a
    divergence message suggests. The bar counts steps, or epochs with `progress_in_epochs`; it
    advances after each step's (or epoch's) checkpoint. `save_on_interrupt` (with `resume`, in one
    process): a Ctrl-C is held until the running step ends, then that step's state is saved and
    KeyboardInterrupt raised (a second Ctrl-C stops at once); only for a `step_loss` that resumes
    exactly from any step (its draws from the step index or `random_sources`, its state in `stateful`).

    Under torchrun (outside `distributed.local_only`) `step_loss` runs as the forward of a
    DistributedDataParallel module, so its gradients are averaged over the ranks: it must train on
    this rank's share of the global batch (`training.local_share`). Per-step losses and the final
    metrics are averaged over the ranks; only rank 0 writes checkpoints."""
    if total_steps < 1:
        raise ConfigError(f"total_steps must be at least 1, got {total_steps}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    if progress_in_epochs and steps_per_epoch is None:
        raise ConfigError("progress_in_epochs needs steps_per_epoch")
    progress = progress or NullProgress()
    precision = precision or Precision(next(model.parameters()).device, "fp32")
    random_sources = dict(random_sources or {})
    stateful = dict(stateful or {})
    for group in optimizer.param_groups:
        group.setdefault("peak_lr", group["lr"])
    device = next(model.parameters()).device
    losses = torch.zeros(total_steps, dtype=torch.float32, device=device)
    run = _Run(model, optimizer, ema, precision, random_sources, stateful, losses, resume, progress, description)

    start = run.restore() if resume is not None else 0
    rank, world = distributed.data_parallel_world()
    if world > 1:
        check_same_start(start, resume.path if resume is not None else None, "steps")
    averaged_upto = start  # losses before this step are already averaged over the ranks

    def average_losses(upto: int) -> None:
        nonlocal averaged_upto
        if world > 1 and upto > averaged_upto:
            window = distributed.all_reduce_sum(losses[averaged_upto:upto].clone()) / world
            losses[averaged_upto:upto] = window
        averaged_upto = upto

    checked = start

    def check_divergence(step_count: int) -> None:
        """Raise when a loss of steps [checked, step_count) is NaN, infinite or exploded
        (`EXPLOSION_FACTOR`); every rank sees the same averaged losses, so all stop together."""
        nonlocal checked
        average_losses(step_count)
        bad = diverged_steps(losses[:step_count], checked)
        if bad is not None:
            run.diverged(bad, total_steps, steps_per_epoch, knobs)
        checked = step_count

    end = total_steps if stop_after is None else min(total_steps, stop_after)
    model.train()
    started, metrics = time.perf_counter(), {}
    unit = steps_per_epoch if progress_in_epochs else 1
    hold = _CtrlCAtStepEnd(save_on_interrupt and resume is not None and world == 1)
    with synchronized_batchnorm(model, device), progress.task(description, total=-(-total_steps // unit)) as bar, hold:
        trainer = wrap_data_parallel(_StepModule(model, step_loss), device, broadcast_buffers=True) if world > 1 else None
        bar.advance(start // unit)
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = schedule(group["peak_lr"], step)
            with precision.autocast():
                loss, metrics = trainer(step) if trainer is not None else step_loss(step)
            optimizer.zero_grad(set_to_none=True)
            precision.backward_step(loss, optimizer, model.parameters(), grad_clip)
            if ema is not None:
                ema.update(model)
            losses[step] = loss.detach()
            epoch_ends = steps_per_epoch is not None and (step + 1) % steps_per_epoch == 0
            finishes_optional = resume is not None and resume.optional and step + 1 == total_steps  # deleted next
            saves = resume is not None and ((step + 1) % resume.every == 0 or step + 1 == end) and not finishes_optional
            if epoch_ends or saves or (step + 1) % DIVERGENCE_CHECK_STEPS == 0:
                check_divergence(step + 1)
            if epoch_ends and on_epoch_end is not None:
                text = on_epoch_end((step + 1) // steps_per_epoch - 1)
                if text:
                    bar.update(text)
            if saves:
                average_losses(step + 1)
                run.save(step + 1)
            if (step + 1) % unit == 0 or step + 1 == total_steps:
                bar.advance()
            if hold.pending:
                if not saves:
                    check_divergence(step + 1)
                    average_losses(step + 1)
                    run.save(step + 1)
                progress.log(f"interrupted: {description} saved its state after step {step + 1} of {total_steps} "
                             f"({resume.path}); the same command resumes from there")
                raise KeyboardInterrupt
    check_divergence(max(start, end))
    model.eval()
    if resume is not None and resume.optional and end == total_steps and distributed.is_writer():
        resume.path.unlink(missing_ok=True)  # finished: the result is what counts now
    if world > 1 and metrics:
        names = sorted(metrics)
        averaged = distributed.all_reduce_sum(torch.stack([metrics[name].detach().float() for name in names])) / world
        metrics = dict(zip(names, averaged))
    return FitResult(steps=max(start, end), total_steps=total_steps, resumed_from=start,
                     seconds=time.perf_counter() - started,
                     metrics={name: float(value) for name, value in metrics.items()},
                     losses=losses[:max(start, end)].cpu())


def diverged_steps(losses: torch.Tensor, first: int = 0) -> tuple[int, float, float] | None:
    """(step index, its loss, the start it is compared with) of the first of `losses[first:]` that is
    NaN, infinite, or over `EXPLOSION_FACTOR` times the start (the first step's |loss|, at least 1:
    a loss that starts near 0 is not held to a ratio of its noise); None when all are fine. One sync."""
    if len(losses) <= first:
        return None
    window = losses[first:]
    start = losses[0].abs().clamp_min(1.0)
    bad = ~torch.isfinite(window) | (window.abs() > EXPLOSION_FACTOR * start)
    if not bool(bad.any()):
        return None
    index = first + int(bad.nonzero()[0])
    return index, float(losses[index]), float(losses[0])


class _CtrlCAtStepEnd:
    """While active (`enabled`, in the main thread, with Python's own Ctrl-C handler installed): a
    first SIGINT only sets `pending`, for the loop to act on at the end of the running step (a
    state saved halfway through an optimiser step would be torn); a second one interrupts at once."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = (enabled and threading.current_thread() is threading.main_thread()
                        and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        self.pending = False

    def _hold(self, signum, frame) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True
        os.write(2, b"\nCtrl-C: saving the training state after this step (Ctrl-C again to stop at once)\n")

    def __enter__(self) -> "_CtrlCAtStepEnd":
        if self.enabled:
            signal.signal(signal.SIGINT, self._hold)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if self.pending and exc_type is None:  # came after the last step's check: still a Ctrl-C
                raise KeyboardInterrupt


class _Run:
    """The parts of `fit` that touch its checkpoint: restore, save, and what a divergence leaves."""

    def __init__(self, model, optimizer, ema, precision, random_sources, stateful, losses, resume, progress,
                 description) -> None:
        self.model, self.optimizer, self.ema, self.precision = model, optimizer, ema, precision
        self.random_sources, self.stateful, self.losses = random_sources, stateful, losses
        self.resume, self.progress, self.description = resume, progress, description

    def restore(self) -> int:
        """Load the saved state; returns the first step to run. An optional state that cannot be
        used is moved aside (named in a warning) with everything put back as it was: a fresh start."""
        if not self.resume.optional:
            return self._load()
        fresh = self._snapshot()
        try:
            return self._load()
        except (CheckpointError, ConfigError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            self._put_back(fresh)
            path = self.resume.path
            reason = str(exc).rsplit("; delete", 1)[0] if isinstance(exc, (CheckpointError, ConfigError)) else (
                f"training state {path} does not hold what this training saves ({type(exc).__name__}: {exc})")
            try:
                where = f"moved it to {set_aside(path).name}"
            except StorageError as move_error:
                where = f"could not move it aside ({move_error})"
            self.progress.log(f"warning: {reason}; {where} and started this training from scratch")
            return 0

    def _load(self) -> int:
        resume = self.resume
        state = load_checkpoint(resume)
        if state is None:
            return 0
        start = int(state["step"])
        load_module_state(self.model, state["model"], resume.path)
        self.optimizer.load_state_dict(state["optimizer"])
        if (self.ema is None) != (state["ema"] is None):
            raise ConfigError(f"training checkpoint {resume.path} was saved {'without' if self.ema else 'with'} an EMA; "
                              "delete it or train the same way")
        if self.ema is not None:
            load_module_state(self.ema.module, state["ema"], resume.path)
        self.precision.load_state_dict(state["grad_scaler"])
        restore_random_state(state["random"], self.random_sources)
        if set(state["stateful"]) != set(self.stateful):
            raise ConfigError(f"training checkpoint {resume.path} holds state {sorted(state['stateful'])}, this training "
                              f"keeps {sorted(self.stateful)}; delete it or train the same way")
        for name, holder in self.stateful.items():
            holder.load_state_dict(state["stateful"][name])
        self.losses[:start] = state["losses"][:start].to(self.losses.device)
        self.progress.log(f"resuming {self.description} from step {start} ({resume.path})")
        return start

    def _snapshot(self) -> tuple:
        return [copy.deepcopy(holder.state_dict()) for holder in self._holders()], random_state(self.random_sources)

    def _holders(self) -> list:
        return [self.model, self.optimizer, self.precision, *self.stateful.values()] + ([self.ema] if self.ema is not None else [])

    def _put_back(self, snapshot: tuple) -> None:
        states, randomness = snapshot
        for holder, state in zip(self._holders(), states):
            holder.load_state_dict(state)
        restore_random_state(randomness, self.random_sources)
        self.losses.zero_()

    def save(self, step_count: int) -> None:
        """Write the state after `step_count` steps (rank 0); an optional state that the disk
        refuses costs only the ability to resume."""
        if not distributed.is_writer():
            return
        try:
            save_atomic(checkpoint_payload(
                self.resume, step=step_count, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                ema=self.ema.state_dict() if self.ema is not None else None, grad_scaler=self.precision.state_dict(),
                random=random_state(self.random_sources), losses=self.losses[:step_count].cpu(),
                stateful={name: holder.state_dict() for name, holder in self.stateful.items()},
            ), self.resume.path)
        except (StorageError, OSError) as exc:
            if not self.resume.optional:
                raise
            self.progress.log(f"warning: the training state was not saved ({exc}); training goes on, "
                              "but an interruption now restarts it from its last saved state")

    def diverged(self, bad: tuple[int, float, float], total_steps: int, steps_per_epoch: int | None,
                 knobs: DivergenceKnobs) -> None:
        """Stop with a TrainingDivergedError naming the step (and epoch), the lr and the knobs. A
        kept checkpoint is the state before the divergence; an optional one goes, as resuming it
        would only lead to the same divergence."""
        index, value, start = bad
        where = f"at step {index + 1} of {total_steps}"
        if steps_per_epoch is not None:
            epochs = -(-total_steps // steps_per_epoch)
            where = f"in epoch {index // steps_per_epoch + 1} of {epochs} (step {index + 1} of {total_steps})"
        how = "" if not math.isfinite(value) else f", over {EXPLOSION_FACTOR:.0e} times its start ({start:.3g})".replace("e+0", "e")
        kept = ""
        if self.resume is not None and self.resume.optional:
            self.resume.path.unlink(missing_ok=True)
        elif self.resume is not None and self.resume.path.exists():
            kept = f"; the last good checkpoint {self.resume.path} is kept"
        fixes = f"lower the learning rate ({knobs.lr})" + (
            f" or train in float32 ({knobs.precision})" if self.precision.mode != "fp32" else "")
        raise TrainingDivergedError(
            f"{self.description}: the loss became {value:.4g} {where}{how} "
            f"(lr {self.optimizer.param_groups[0]['peak_lr']:.3g}); the training diverged: {fixes}{kept}")


class _StepModule(nn.Module):
    """The step's loss as a module's forward: DistributedDataParallel hooks a module's forward, and
    a step loss may call any method of the model (not only its forward)."""

    def __init__(self, model: nn.Module, step_loss: StepLoss) -> None:
        super().__init__()
        self.model = model
        self.step_loss = step_loss

    def forward(self, step: int):
        return self.step_loss(step)
