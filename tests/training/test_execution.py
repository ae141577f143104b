"""The classifiers' execution settings (`core.device.Execution`): faster kernels, the same results.

Each setting changes float rounding at most. These tests hold the current settings to that against
the previous ones (NCHW on the CPU, validation batches of 256, the per-tensor optimiser step), and
check that each setting is actually in force, so a benchmark's "current" is what users run."""

from __future__ import annotations

import copy

import pytest
import torch

from ddbench.core.device import (
    execution,
    execution_settings,
    uses_channels_last,
    uses_frozen_inference,
    validation_batch_size,
)
from ddbench.models import to_device
from ddbench.training import build_seeded_model, soft_label_kl
from ddbench.training.data import TensorImageSet
from ddbench.training.loop import evaluate_top1, prepare_inputs
from ddbench.training.optim import build_optimizer

CPU = torch.device("cpu")
PREVIOUS = {"channels_last_on_cpu": False, "cpu_validation_batch": 256, "foreach_optimizer": False,
            "frozen_cpu_inference": False}


def test_the_current_settings_are_in_force_on_the_cpu():
    student = to_device(build_seeded_model("mobilenet_v2", 10, 16, 0, "s", init="torchvision"), CPU)
    assert uses_channels_last(CPU) and validation_batch_size(CPU) == 64 and execution().foreach_optimizer
    assert uses_frozen_inference(CPU) and not uses_frozen_inference(torch.device("cuda"))
    assert student.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert prepare_inputs(torch.rand(2, 3, 16, 16), CPU).is_contiguous(memory_format=torch.channels_last)
    assert build_optimizer(student, "adamw", 1e-3, 0.01).defaults["foreach"] is True
    with execution_settings(**PREVIOUS):
        again = to_device(student, CPU)  # a model converted before goes back to NCHW
        assert again.features[0][0].weight.is_contiguous() and not uses_channels_last(CPU)
        assert validation_batch_size(CPU) == 256 and build_optimizer(student, "sgd", 0.1, 0.0).defaults["foreach"] is None
        assert not uses_frozen_inference(CPU)
    assert uses_channels_last(torch.device("cuda")) and validation_batch_size(torch.device("cuda")) == 256


def _first_step(arch: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A seeded student's logits and the gradients of one rded-objective step, under the settings in force."""
    torch.manual_seed(0)
    inputs, teacher_inputs = torch.rand(16, 3, 16, 16), torch.rand(16, 3, 16, 16)
    teacher = to_device(build_seeded_model("convnet3", 10, 16, 0, "t"), CPU).eval()
    student = to_device(build_seeded_model(arch, 10, 16, 0, "s", init="torchvision"), CPU)
    with torch.no_grad():
        targets = teacher(prepare_inputs(teacher_inputs, CPU))
    logits = student(prepare_inputs(inputs, CPU))
    soft_label_kl(logits, targets * 20, 1.0).backward()  # a loss of order 1, not RDED's 1e-4 at T=20
    return logits.detach(), {name: p.grad.contiguous() for name, p in student.named_parameters()}


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_a_training_step_under_the_current_settings_is_the_previous_step(arch):
    """Same logits and gradients up to rounding. Networks at init amplify rounding in their
    gradients (float32 itself lands 0.3-1.3% from float64 for these two, and channels_last a few
    times that for MobileNet-V2 at batch 16), so the gradients are held to 10% of their norm: a
    layout bug moves them by their whole norm. Whole trainings then drift apart within the noise
    of a seed, as AdamW's first updates are gradient signs; the RDED first-steps test keeps the
    trajectory within its 1% tolerance."""
    with execution_settings(**PREVIOUS):
        previous_logits, previous_grads = _first_step(arch)
    logits, grads = _first_step(arch)
    torch.testing.assert_close(logits, previous_logits, rtol=1e-3, atol=3e-4)
    flat = torch.cat([grads[name].flatten() for name in previous_grads])
    previous_flat = torch.cat([grad.flatten() for grad in previous_grads.values()])
    assert float((flat - previous_flat).norm() / previous_flat.norm()) < 0.1


def test_foreach_optimiser_step_is_bit_for_bit_the_per_tensor_step():
    def trained() -> list[torch.Tensor]:
        model = build_seeded_model("convnet3", 10, 16, 0, "s")
        optimizer = build_optimizer(model, "adamw", 1e-2, 0.05)
        for step in range(3):
            optimizer.zero_grad()
            model(torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(step))).square().mean().backward()
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    with execution_settings(channels_last_on_cpu=False, foreach_optimizer=False):
        previous = trained()
    with execution_settings(channels_last_on_cpu=False):
        current = trained()
    assert all(torch.equal(a, b) for a, b in zip(previous, current))


def test_validation_counts_the_same_images_at_any_batch_and_layout():
    model = build_seeded_model("resnet18", 10, 16, 0, "s", init="torchvision")
    model.train()
    with torch.no_grad():  # BatchNorm statistics of its own, so eval mode is not the identity
        model(torch.rand(64, 3, 16, 16) * 2)
    generator = torch.Generator().manual_seed(1)
    val = TensorImageSet(torch.randint(0, 256, (300, 3, 16, 16), dtype=torch.uint8, generator=generator),
                         torch.randint(0, 10, (300,), generator=generator))
    mean, std = (0.5,) * 3, (0.25,) * 3
    with execution_settings(**PREVIOUS):
        previous = evaluate_top1(copy.deepcopy(model), val, mean, std, CPU)
    current = evaluate_top1(to_device(model, CPU), val, mean, std, CPU)
    assert current == previous and 0 < current < 100
