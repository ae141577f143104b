"""A tiny seeded `fit` run that uses every stateful piece of the training base: epoch batches, a
torch and a numpy random stream, the global RNG (dropout), an EMA, warm-up + cosine, clipping,
a caller's memory of past losses.

Run as a script (`python -m tests.training.tiny_fit OUT [KILL_AT_STEP]`) it can kill itself with
SIGKILL in the middle of a step, which is what the resume test does to it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from ddbench.core.seeding import numpy_generator, seed_everything, torch_generator
from ddbench.training import (
    EpochBatches,
    ExponentialMovingAverage,
    ResumePoint,
    WarmupCosine,
    build_optimizer,
    fit,
)

TOTAL_STEPS, CHECKPOINT_EVERY = 10, 3


class LossMemory:
    """A FIFO of the last 3 batch losses that feeds back into the loss: state a resume must keep."""

    def __init__(self) -> None:
        self.values = torch.zeros(0)

    def push(self, value: torch.Tensor) -> None:
        self.values = torch.cat([self.values, value.detach().reshape(1)])[-3:]

    def state_dict(self) -> dict:
        return {"values": self.values}

    def load_state_dict(self, state: dict) -> None:
        self.values = state["values"]


def tiny_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 3))


def run(out: Path, kill_at: int | None = None, stop_after: int | None = None, ctrl_c_at: tuple[int, ...] = (),
        save_on_interrupt: bool = False):
    """Returns (FitResult, model, ema). Data: 14 fixed examples, batches of 4 (4 steps per epoch).
    `ctrl_c_at`: SIGINT the process at the start of these steps (a step listed twice gets two)."""
    seed_everything(0)
    inputs = torch.randn(14, 6, generator=torch_generator(0, "tiny-fit-inputs"))
    targets = torch.arange(14) % 3
    model = tiny_model()
    optimizer = build_optimizer(model, "adamw", 1e-2, 0.05, lr_by_name=[("0.", 3e-2)])
    ema = ExponentialMovingAverage(model, decay=0.9)
    batches = EpochBatches(len(inputs), 4, seed=0, purpose="tiny-fit-batches")
    noise = torch_generator(0, "tiny-fit-noise")
    label_noise = numpy_generator(0, "tiny-fit-label-noise")
    epochs_ended, memory = [], LossMemory()

    def step_loss(step: int):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        for _ in range(ctrl_c_at.count(step)):
            os.kill(os.getpid(), signal.SIGINT)
        chosen = batches.indices(step)
        x = inputs[chosen] + 0.1 * torch.randn(len(chosen), 6, generator=noise)
        weight = float(label_noise.uniform(0.5, 1.5))
        loss = weight * nn.functional.cross_entropy(model(x), targets[chosen]) * (1 + memory.values.sum())
        memory.push(loss)
        return loss, {"loss": loss.detach()}

    result = fit(model, optimizer, step_loss, total_steps=TOTAL_STEPS,
                 schedule=WarmupCosine(TOTAL_STEPS, warmup_steps=3, final_fraction=0.1), grad_clip=0.5, ema=ema,
                 resume=ResumePoint(out / "tiny_last.ckpt", CHECKPOINT_EVERY, {"recipe": "tiny", "steps": TOTAL_STEPS}),
                 random_sources={"noise": noise, "label_noise": label_noise}, stateful={"memory": memory},
                 steps_per_epoch=batches.steps_per_epoch, on_epoch_end=epochs_ended.append, stop_after=stop_after,
                 save_on_interrupt=save_on_interrupt)
    result.epochs_ended = epochs_ended
    return result, model, ema


if __name__ == "__main__":
    run(Path(sys.argv[1]), kill_at=int(sys.argv[2]) if len(sys.argv) > 2 else None)
