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
A loss that turns NaN or infinite stops the run with a TrainingDivergedError naming the step;
it is checked before every checkpoint, so no diverged state is ever saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from ddbench.core.errors import ConfigError, TrainingDivergedError
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
from ddbench.training.schedule import constant_lr

#: the losses are also checked for NaN / inf every this many steps (besides checkpoints and epoch ends)
DIVERGENCE_CHECK_STEPS = 50

#: step_loss(step) -> (loss to minimise, metrics to report: detached scalar tensors)
StepLoss = Callable[[int], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


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
    on_epoch_end: Callable[[int], None] | None = None,
    stop_after: int | None = None,
    progress: Progress | None = None,
    description: str = "training",
) -> FitResult:
    """Train `model` in place for steps [resumed step, min(total_steps, stop_after)); returns what
    happened. The model is left in eval mode. `schedule(peak_lr, step)` sets each group's lr from
    its peak (the lr the group was built with); `grad_clip` clips the global norm of all of
    `model`'s gradients. `stateful` objects (e.g. per-class memories) are checkpointed by name.
    `on_epoch_end(epoch)` runs after the last step of each epoch."""
    if total_steps < 1:
        raise ConfigError(f"total_steps must be at least 1, got {total_steps}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    progress = progress or NullProgress()
    precision = precision or Precision(next(model.parameters()).device, "fp32")
    random_sources = dict(random_sources or {})
    stateful = dict(stateful or {})
    for group in optimizer.param_groups:
        group.setdefault("peak_lr", group["lr"])
    device = next(model.parameters()).device
    losses = torch.zeros(total_steps, dtype=torch.float32, device=device)

    start = 0
    state = load_checkpoint(resume) if resume is not None else None
    if state is not None:
        start = int(state["step"])
        load_module_state(model, state["model"], resume.path)
        optimizer.load_state_dict(state["optimizer"])
        if (ema is None) != (state["ema"] is None):
            raise ConfigError(f"training checkpoint {resume.path} was saved {'without' if ema else 'with'} an EMA; "
                              "delete it or train the same way")
        if ema is not None:
            load_module_state(ema.module, state["ema"], resume.path)
        precision.load_state_dict(state["grad_scaler"])
        restore_random_state(state["random"], random_sources)
        if set(state["stateful"]) != set(stateful):
            raise ConfigError(f"training checkpoint {resume.path} holds state {sorted(state['stateful'])}, this training "
                              f"keeps {sorted(stateful)}; delete it or train the same way")
        for name, holder in stateful.items():
            holder.load_state_dict(state["stateful"][name])
        losses[:start] = state["losses"][:start].to(device)
        progress.log(f"resuming {description} from step {start} ({resume.path})")

    def save(step_count: int) -> None:
        save_atomic(checkpoint_payload(
            resume, step=step_count, model=model.state_dict(), optimizer=optimizer.state_dict(),
            ema=ema.state_dict() if ema is not None else None, grad_scaler=precision.state_dict(),
            random=random_state(random_sources), losses=losses[:step_count].cpu(),
            stateful={name: holder.state_dict() for name, holder in stateful.items()},
        ), resume.path)

    checked = start

    def check_finite(step_count: int) -> None:
        """Raise when a loss of steps [checked, step_count) is NaN or infinite (one device sync)."""
        nonlocal checked
        finite = torch.isfinite(losses[checked:step_count])
        if not bool(finite.all()):
            first = checked + int((~finite).nonzero()[0])
            kept = f"; the last good checkpoint {resume.path} is kept" if resume is not None and resume.path.exists() else ""
            knobs = "lower the learning rate (lr)" + (" or train in float32 (precision=fp32)" if precision.mode != "fp32" else "")
            raise TrainingDivergedError(
                f"{description}: the loss became {float(losses[first])} at step {first + 1} of {total_steps} "
                f"(peak lr {optimizer.param_groups[0]['peak_lr']:.3g}); the training diverged: {knobs}{kept}")
        checked = step_count

    end = total_steps if stop_after is None else min(total_steps, stop_after)
    model.train()
    started, metrics = time.perf_counter(), {}
    with progress.task(description, total=total_steps) as bar:
        bar.advance(start)
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = schedule(group["peak_lr"], step)
            with precision.autocast():
                loss, metrics = step_loss(step)
            optimizer.zero_grad(set_to_none=True)
            precision.backward_step(loss, optimizer, model.parameters(), grad_clip)
            if ema is not None:
                ema.update(model)
            losses[step] = loss.detach()
            bar.advance()
            epoch_ends = steps_per_epoch is not None and (step + 1) % steps_per_epoch == 0
            saves = resume is not None and ((step + 1) % resume.every == 0 or step + 1 == end)
            if epoch_ends or saves or (step + 1) % DIVERGENCE_CHECK_STEPS == 0:
                check_finite(step + 1)
            if epoch_ends and on_epoch_end is not None:
                on_epoch_end((step + 1) // steps_per_epoch - 1)
            if saves:
                save(step + 1)
    check_finite(max(start, end))
    model.eval()
    return FitResult(steps=max(start, end), total_steps=total_steps, resumed_from=start,
                     seconds=time.perf_counter() - started,
                     metrics={name: float(value) for name, value in metrics.items()},
                     losses=losses[:max(start, end)].cpu())
