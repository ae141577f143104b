"""Scenarios run as one rank of a multi-process job (`python -m tests.distributed.worker SCENARIO[,SCENARIO] OUT`),
under torchrun or started by `ranks.launch` with the variables torchrun sets, or in-process with
`run(SCENARIO, OUT)` as the single-process reference.

- `train`: the classifier loop (ConvNet-3, so batch norm; CutMix; a batch size of 7 on 20 images,
  so shares are uneven: 4 + 3; validation; state saved every epoch). Rank 0 writes `result.pt`.
- `train-fail`: the same, but rank 1 raises a DataError in the middle of epoch 2.
- `fit`: the step loop with EMA, clipping, warm-up + cosine, BatchNorm1d, per-example noise drawn
  for the global batch, `local_share`, checkpoints every 2 steps. Rank 0 writes `result.pt`.
- `hang-then-die`: rank 1 SIGKILLs itself while rank 0 waits for it in a barrier.
Exit status and the one error line follow the CLI (2 for a ddbench error).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from ddbench.core import distributed
from ddbench.core.errors import DataError, DDBenchError
from ddbench.core.seeding import torch_generator
from ddbench.training import (
    EpochBatches,
    ExponentialMovingAverage,
    HardLabelObjective,
    OptimizerRecipe,
    ResumePoint,
    TensorImageSet,
    TrainingRecipe,
    WarmupCosine,
    build_optimizer,
    build_seeded_model,
    fit,
    local_share,
    train_classifier,
)

RESOLUTION, CLASSES = 16, 4
# SGD: Adam would turn the float noise in the zero gradients of the biases before batch norm into
# full-size steps, which differ between any two summation orders
RECIPE = TrainingRecipe(epochs=3, batch_size=7, optim=OptimizerRecipe(lr=0.05, optimizer="sgd", weight_decay=5e-4),
                        schedule="cosine", crop_scale=(0.5, 1.0), cutmix_prob=1.0)


def image_set(count: int, purpose: str) -> TensorImageSet:
    images = torch.randint(0, 256, (count, 3, RESOLUTION, RESOLUTION), generator=torch_generator(0, purpose),
                           dtype=torch.uint8)
    return TensorImageSet(images, torch.arange(count) % CLASSES)


class FailingObjective(HardLabelObjective):
    """Raises on rank 1 at its `fail_at`-th call: a fault in the middle of DDP training."""

    def __init__(self, fail_at: int | None):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, logits, batch):
        self.calls += 1
        if self.fail_at is not None and distributed.rank() == 1 and self.calls == self.fail_at:
            raise DataError("injected fault in rank 1's training step")
        return super().__call__(logits, batch)


def train(out: Path, fail_at: int | None = None) -> None:
    model = build_seeded_model("convnet3", CLASSES, RESOLUTION, 0, "worker-init")
    model, history = train_classifier(
        model, RECIPE, image_set(20, "worker-train"), FailingObjective(fail_at), mean=(0.5,) * 3, std=(0.25,) * 3,
        resolution=RESOLUTION, seed=0, device=torch.device("cpu"), val_set=image_set(13, "worker-val"),
        validate_after=[1, 2], resume=ResumePoint(out / "state.pt", every=1),
    )
    if distributed.is_main():
        torch.save({"state": model.state_dict(), "losses": history.epoch_losses, "val": history.val_top1},
                   out / "result.pt")


def fit_tiny(out: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    inputs = torch.randn(16, 6, generator=torch_generator(0, "worker-fit-inputs"))
    targets = torch.arange(16) % 3
    batches = EpochBatches(len(inputs), 8, seed=0, purpose="worker-fit-batches")
    optimizer = build_optimizer(model, "sgd", 0.1, 5e-4)
    ema = ExponentialMovingAverage(model, decay=0.9)

    def step_loss(step: int):
        chosen = batches.indices(step)
        noise = torch.randn(len(chosen), 6, generator=torch_generator(0, "worker-fit-noise", step))
        x, y = local_share(inputs[chosen] + 0.1 * noise, targets[chosen])
        loss = nn.functional.cross_entropy(model(x), y)
        return loss, {"loss": loss.detach()}

    result = fit(model, optimizer, step_loss, total_steps=6, schedule=WarmupCosine(6, 2, 0.1), grad_clip=1.0, ema=ema,
                 resume=ResumePoint(out / "fit_last.ckpt", 2, {"tiny": 1}))
    if distributed.is_main():
        torch.save({"state": model.state_dict(), "ema": ema.state_dict(), "losses": result.losses,
                    "metrics": result.metrics}, out / "result.pt")


def hang_then_die(out: Path) -> None:
    if distributed.rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    distributed.barrier("never-complete")


SCENARIOS = {"train": train, "train-fail": lambda out: train(out, fail_at=5), "fit": fit_tiny,
             "hang-then-die": hang_then_die}


def run(scenarios: str, out: Path) -> None:
    """Each scenario of the comma-separated list in OUT/<scenario>/ (`train-fail` in OUT/train/,
    which `train` then resumes)."""
    for scenario in scenarios.split(","):
        folder = out / scenario.removesuffix("-fail")
        folder.mkdir(parents=True, exist_ok=True)
        SCENARIOS[scenario](folder)


if __name__ == "__main__":
    try:
        with distributed.session():
            run(sys.argv[1], Path(sys.argv[2]))
    except DDBenchError as exc:
        sys.stderr.write(f"error: {distributed.process_label()}{exc}\n")
        sys.exit(2)
