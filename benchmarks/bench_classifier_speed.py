"""The classifiers' execution settings (`core.device.Execution`) against the previous ones, in one run.

Previous: NCHW on the CPU, validation batches of 256, the optimisers' per-tensor step, the teacher
and the validated student run as they are. Current: channels_last on the CPU, validation batches of
64 on the CPU, the multi-tensor (foreach) step, the teacher and the validated student frozen for
inference (`models.inference`: BatchNorm folded, prepacked oneDNN convolutions, fused activations).
Rounds interleave the two, so load hits both alike; each keeps its fastest round.

1. The rded evaluator at CIFAR-10 size: 32 px, IPC 10 (100 images, 2 steps of 50 per epoch), a
   ResNet-18 student and a ResNet-18 teacher (an untrained stand-in: speed does not depend on its
   weights), the protocol's augmentation and CutMix. Training seconds per epoch, and validation
   seconds per image (a 2,000-image synthetic split; cost per image does not depend on the split's
   size). "Per epoch" is the protocol's: training plus its validations of CIFAR-10's 10,000 test
   images (the evaluator's default schedule: 6, at epochs 249, 259, ..., 299) spread over 300
   epochs.
2. One training step at the README main job's size (digits, 16 px, batch 50) for each student
   family, rded objective included: a ResNet-18 teacher labels the batch (frozen once, outside the
   timed steps, under the current settings), the student trains.

Run: OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_classifier_speed.py -s
(`DDBENCH_BENCH_ROUNDS`, default 3.)
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from ddbench.core.config import resolve_config
from ddbench.core.device import execution_settings
from ddbench.core.images import ArrayImageDataset
from ddbench.core.interfaces import DatasetSpec, EvalTask, Teacher
from ddbench.evaluators.rded import RdedEvaluator
from ddbench.models import to_device
from ddbench.models.inference import inference_model
from ddbench.training import build_seeded_model, soft_label_kl
from ddbench.training.loop import prepare_inputs, validation_epochs
from ddbench.training.optim import build_optimizer
from tests.evaluators.synthetic import write_distilled

ROUNDS = int(os.environ.get("DDBENCH_BENCH_ROUNDS", "3"))
PREVIOUS = {"channels_last_on_cpu": False, "cpu_validation_batch": 256, "foreach_optimizer": False,
            "frozen_cpu_inference": False}
CURRENT: dict = {}
SETTINGS = {"previous": PREVIOUS, "current": CURRENT}
#: RDED's protocol as the evaluator runs it by default: 300 epochs, validations on CIFAR-10's 10,000
#: test images at the epochs its defaults schedule (249, 259, ..., 299)
_DEFAULTS = RdedEvaluator.Config()
PROTOCOL_EPOCHS, CIFAR_VAL_IMAGES = _DEFAULTS.epochs, 10_000
PROTOCOL_VALIDATIONS = len(validation_epochs(_DEFAULTS.epochs, _DEFAULTS.validate_last_fraction, _DEFAULTS.validate_every))


class CifarShaped(DatasetSpec):
    """Random images of CIFAR-10's shape: 32 px, 10 classes, 10 train images per class, 2,000 val."""

    name = "cifar_shaped"
    resolution = 32
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    preset_family = "cifar"
    teacher_recipe = "cifar"
    counts = {"train": 100, "val": 2000}

    @property
    def class_names(self) -> list[str]:
        return [f"class{i}" for i in range(10)]

    def split(self, name, transform=None):
        rng = np.random.default_rng(0 if name == "train" else 1)
        count = self.counts[name]
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        return ArrayImageDataset(images, np.arange(count) % 10, transform)


def interleaved(run_once) -> dict[str, dict[str, float]]:
    """{setting: {measure: fastest value over ROUNDS}} with the two settings alternating."""
    best: dict[str, dict[str, float]] = {name: {} for name in SETTINGS}
    for _ in range(ROUNDS):
        for name, changes in SETTINGS.items():
            with execution_settings(**changes):
                for measure, seconds in run_once().items():
                    best[name][measure] = min(best[name].get(measure, float("inf")), seconds)
    return best


def test_rded_evaluator_per_epoch_at_cifar_size(tmp_path):
    dataset = CifarShaped()
    distilled = write_distilled(dataset, tmp_path / "set", ipc=10)
    teacher_model = build_seeded_model("resnet18", 10, 32, 0, "bench-teacher", init="torchvision")
    epochs = 2

    def run_once() -> dict[str, float]:
        teacher = Teacher(teacher_model, "resnet18", dataset.name, 10, accuracy=100.0, source="benchmark stand-in")
        config = resolve_config(RdedEvaluator.Config, {"epochs": epochs, "validate_last_fraction": 0.0, "resume_every": 0})
        task = EvalTask(dataset=dataset, student="resnet18", seed=0, device=torch.device("cpu"), teacher=teacher)
        details = RdedEvaluator(config).evaluate(distilled, task).details
        return {"train_s_per_epoch": details["train_seconds"] / epochs,
                "val_s_per_image": details["validation_seconds"] / details["val_images"]}

    run_once()  # warm-up: allocator, oneDNN primitives, the val-set cache
    best = interleaved(run_once)
    per_epoch = {name: values["train_s_per_epoch"] + values["val_s_per_image"] * CIFAR_VAL_IMAGES
                 * PROTOCOL_VALIDATIONS / PROTOCOL_EPOCHS for name, values in best.items()}
    old, new = best["previous"], best["current"]
    print(f"\nrded evaluator, CIFAR-10 size, ResNet-18, {torch.get_num_threads()} threads, {ROUNDS} rounds:")
    print(f"  training  {old['train_s_per_epoch']:.3f} -> {new['train_s_per_epoch']:.3f} s/epoch "
          f"({old['train_s_per_epoch'] / new['train_s_per_epoch']:.2f}x)")
    print(f"  validation {old['val_s_per_image'] * 1e3:.2f} -> {new['val_s_per_image'] * 1e3:.2f} ms/image "
          f"({old['val_s_per_image'] / new['val_s_per_image']:.2f}x)")
    print(f"  per protocol epoch {per_epoch['previous']:.3f} -> {per_epoch['current']:.3f} s "
          f"({per_epoch['previous'] / per_epoch['current']:.2f}x)")


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "efficientnet_b0", "convnet3"])
def test_training_step_at_digits_size(arch):
    torch.manual_seed(0)
    inputs = torch.rand(50, 3, 16, 16)
    teacher_model = build_seeded_model("resnet18", 10, 16, 0, "bench-teacher", init="torchvision").eval()
    init = "timm" if arch == "convnet3" else "torchvision"

    def run_once() -> dict[str, float]:
        device = torch.device("cpu")
        student = to_device(build_seeded_model(arch, 10, 16, 0, "bench-student", init=init), device)
        teacher = to_device(teacher_model, device)
        optimizer = build_optimizer(student, "adamw", 1e-3, 0.01)
        batch = prepare_inputs(inputs, device)
        labeller = inference_model(teacher, batch)  # frozen under the current settings, as the evaluator's
        seconds = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            with torch.no_grad():
                targets = labeller(batch)
            loss = soft_label_kl(student(batch), targets, 20.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds = min(seconds, time.perf_counter() - started)
        return {"step_s": seconds}

    best = interleaved(run_once)
    old, new = best["previous"]["step_s"], best["current"]["step_s"]
    print(f"\n{arch} student step (digits, 16 px, batch 50, rded objective): {old * 1e3:.0f} -> {new * 1e3:.0f} ms "
          f"({old / new:.2f}x)")
