"""Student-training speed of the rded evaluator against a bare PyTorch loop, in the same run.

Both train the same student (same arch, same seeded init) with the same teacher and batch size
for the same number of steps: the bare loop on pre-normalised tensors with no augmentation, no
CutMix, no schedule, the evaluator with its whole protocol (batch augmentation, CutMix, data
transfer, lr schedule). Both include the teacher forward, so the ratio is the evaluator's own
overhead, which must stay within 10%. Validation is excluded (the evaluator reports its training
time separately). The teacher is an untrained stand-in with its accuracy declared, since speed
does not depend on its weights. Rounds alternate the two loops so machine load affects both.

Run: pytest benchmarks/bench_evaluator.py -s   (DDBENCH_BENCH_ARCH=convnet3 for a tiny model)
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from ddbench.core.config import resolve_config
from ddbench.core.device import autocast, resolve_device
from tests.evaluators.synthetic import write_distilled
from ddbench.core.interfaces import EvalTask, Teacher
from ddbench.core.registry import create_dataset
from ddbench.evaluators.rded import RdedEvaluator, rded_batch_size, rded_learning_rate
from ddbench.models import to_device
from ddbench.training import build_seeded_model, load_tensor_set, soft_label_kl, square_resize
from ddbench.training.augment import normalize
from ddbench.training.loop import prepare_inputs

ARCH = os.environ.get("DDBENCH_BENCH_ARCH", "resnet18")
IPC = 10
EPOCHS = 4
ROUNDS = 5
MAX_OVERHEAD = 0.10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    dataset = create_dataset("digits")
    distilled = write_distilled(dataset, tmp_path_factory.mktemp("bench") / "set", ipc=IPC)
    device = resolve_device("auto")
    teacher_model = build_seeded_model(ARCH, dataset.num_classes, dataset.resolution, 0, "bench-teacher")
    teacher = Teacher(to_device(teacher_model, device), ARCH, "digits", dataset.num_classes, accuracy=100.0, source="benchmark stand-in")
    return dataset, distilled, teacher, device


def evaluator_images_per_second(dataset, distilled, teacher, device) -> float:
    config = resolve_config(RdedEvaluator.Config, {"epochs": EPOCHS, "validate_last_fraction": 0.0})
    task = EvalTask(dataset=dataset, student=ARCH, seed=0, device=device, teacher=teacher)
    result = RdedEvaluator(config).evaluate(distilled, task)
    return result.details["train_images_per_second"]


def bare_images_per_second(dataset, distilled, teacher, device) -> float:
    """The floor: the same student, teacher, batch and step count, nothing else."""
    tensors = load_tensor_set(distilled.dataset(), square_resize(dataset.resolution))
    images = prepare_inputs(normalize(tensors.images.float().div(255), dataset.mean, dataset.std).to(device), device)
    student = to_device(build_seeded_model(ARCH, dataset.num_classes, dataset.resolution, 0, "rded/student-init"), device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=rded_learning_rate(ARCH), weight_decay=0.01)
    batch_size = rded_batch_size(IPC, dataset.num_classes)
    student.train()
    seen = 0
    started = time.perf_counter()
    for _ in range(EPOCHS):
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            with torch.no_grad(), autocast(device):
                teacher_logits = teacher.model(batch)
            with autocast(device):
                student_logits = student(batch)
            loss = soft_label_kl(student_logits, teacher_logits, 20.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(batch)
    float(loss.detach())  # wait for the device
    return seen / (time.perf_counter() - started)


def test_rded_evaluator_overhead_within_ten_percent(setup, benchmark):
    dataset, distilled, teacher, device = setup
    bare_runs, evaluator_runs = [], []

    def one_round():
        bare_runs.append(bare_images_per_second(dataset, distilled, teacher, device))
        evaluator_runs.append(evaluator_images_per_second(dataset, distilled, teacher, device))

    one_round()  # warm-up: allocator, kernels, val-set cache
    bare_runs.clear(), evaluator_runs.clear()
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    bare, evaluated = statistics.median(bare_runs), statistics.median(evaluator_runs)
    ratio = evaluated / bare
    benchmark.extra_info.update(
        {"arch": ARCH, "device": str(device), "bare_images_per_s": bare, "evaluator_images_per_s": evaluated, "ratio": ratio}
    )
    print(f"\n{ARCH} on {device}: bare {bare:.1f} img/s, rded evaluator {evaluated:.1f} img/s, ratio {ratio:.3f}")
    assert ratio >= 1.0 - MAX_OVERHEAD, f"evaluator overhead {1 - ratio:.1%} exceeds {MAX_OVERHEAD:.0%}"
