"""Frozen CPU inference (`models.inference`): the same logits as the model, BatchNorm folded and
activations fused where the graph allows, the model itself where it cannot be frozen."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddbench.core.device import execution_settings
from ddbench.models import to_device
from ddbench.models.inference import (
    PackedConv2d,
    frozen_for_inference,
    inference_model,
    onednn_convolution_available,
)
from ddbench.training import build_seeded_model, loop, soft_label_kl
from ddbench.training.augment import MixedBatch
from ddbench.training.data import TensorImageSet
from ddbench.training.objectives import TeacherSoftLabelObjective

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not onednn_convolution_available(), reason="this torch build has no oneDNN convolution")


def _trained_looking(arch: str, init: str) -> nn.Module:
    """A seeded eval-mode model whose BatchNorm layers are not the identity (init leaves them near
    it): running statistics of its own activations, then random scales and shifts. Scales near 1
    keep the deep networks from amplifying rounding (scales up to 1.4 make EfficientNet-B0's float32
    logits land 1e-3 from float64's, and run-to-run noise then swamps any bound)."""
    model = to_device(build_seeded_model(arch, 10, 32, 0, "frozen", init=init), CPU)
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average over the batches below
    with torch.no_grad():
        for batch in range(3):
            model(_inputs(16 + batch))
    generator = torch.Generator().manual_seed(3)
    for module in norms:
        module.weight.data.copy_(torch.rand(module.num_features, generator=generator) * 0.2 + 0.8)
        module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


def _inputs(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)).contiguous(
        memory_format=torch.channels_last)


#: (arch, init style, fused activations, fused residual adds) of the rewritten graph
CASES = [("resnet18", "torchvision", 17, 8), ("resnet18", "timm", 17, 8), ("mobilenet_v2", "torchvision", 35, 10),
         ("mobilenet_v2", "timm", 35, 10), ("efficientnet_b0", "torchvision", 49, 0), ("efficientnet_b0", "timm", 49, 9),
         ("convnet3", "timm", 3, 0)]  # timm's MobileNet/EfficientNet: BatchNormAct2d, its activation fused too


@pytest.mark.parametrize(("arch", "init", "activations", "residuals"), CASES)
def test_a_frozen_model_gives_the_models_logits(arch, init, activations, residuals):
    model = _trained_looking(arch, init)
    frozen = frozen_for_inference(model, _inputs(8))
    packed = [module for module in frozen.modules() if isinstance(module, PackedConv2d)]
    assert len(packed) == sum(isinstance(module, nn.Conv2d) for module in model.modules())
    assert not any(isinstance(module, nn.BatchNorm2d) for module in frozen.modules())
    assert sum(module.unary != "none" for module in packed) == activations
    assert sum(module.residual for module in packed) == residuals
    with torch.inference_mode():
        for inputs in (_inputs(8), _inputs(3), _inputs(5).contiguous()):  # other batch sizes and layouts too
            expected = model(inputs)
            # these networks keep rounding small (float32 lands 1e-6 of the largest logit from float64)
            assert float((frozen(inputs) - expected).abs().max()) < 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.ReLU6(), nn.SiLU()])
def test_each_fused_activation_is_the_layers_own(activation):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), activation).eval()
    nn.init.uniform_(model[1].weight, 2.0, 4.0)  # outputs reach past ReLU6's bound of 6
    nn.init.normal_(model[1].bias, 0.0, 2.0)
    inputs = _inputs(4) * 4 - 2
    frozen = frozen_for_inference(model, inputs)
    assert [module.unary for module in frozen.modules() if isinstance(module, PackedConv2d)] != ["none"]
    with torch.inference_mode():
        expected = model(inputs)
        assert float(model[:2](inputs).max()) > 6  # ReLU6 clips some outputs
        torch.testing.assert_close(frozen(inputs), expected, rtol=1e-5, atol=1e-5)


class _SharedConv(nn.Module):
    """One convolution called twice: once before a ReLU, once alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(self.conv(x)))


def test_a_convolution_called_twice_keeps_each_calls_fusion():
    model = _SharedConv().eval()
    nn.init.normal_(model.conv.bias, -1.0, 1.0)  # the ReLU clips, the second call must not
    frozen = frozen_for_inference(model, _inputs(2))
    assert sorted(module.unary for module in frozen.modules() if isinstance(module, PackedConv2d)) == ["none", "relu"]
    with torch.inference_mode():
        expected = model(_inputs(2))
        assert float(expected.min()) < 0
        torch.testing.assert_close(frozen(_inputs(2)), expected, rtol=1e-5, atol=1e-5)


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.sum() > 0 else -self.conv(x)


def test_what_cannot_be_frozen_runs_as_it_is():
    model = _trained_looking("resnet18", "torchvision")
    assert frozen_for_inference(model.train(), _inputs(2)) is model  # training-mode BatchNorm uses the batch
    model.eval()
    model.layer1.train()
    assert frozen_for_inference(model, _inputs(2)) is model
    model.eval()
    assert frozen_for_inference(model, _inputs(2).double()) is model
    untraceable = _DataDependent().eval()
    assert frozen_for_inference(untraceable, _inputs(2)) is untraceable
    with execution_settings(frozen_cpu_inference=False):
        assert inference_model(model, _inputs(2)) is model
    assert inference_model(model, _inputs(2)) is not model


def test_the_teacher_labels_through_its_frozen_copy_with_the_same_loss():
    teacher = _trained_looking("resnet18", "timm")
    student_logits = torch.randn(6, 10)
    images = _inputs(6)
    batch = MixedBatch(images, torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long), 1.0)
    with execution_settings(frozen_cpu_inference=False):
        plain = TeacherSoftLabelObjective(teacher, 4.0, CPU, student_normalization=((0.5,) * 3, (0.2,) * 3),
                                          teacher_normalization=((0.4,) * 3, (0.3,) * 3))
        expected = plain(student_logits, batch)
        assert plain.frozen_teacher is teacher
    objective = TeacherSoftLabelObjective(teacher, 4.0, CPU, student_normalization=((0.5,) * 3, (0.2,) * 3),
                                          teacher_normalization=((0.4,) * 3, (0.3,) * 3))
    loss = objective(student_logits, batch)
    assert isinstance(objective.frozen_teacher, torch.fx.GraphModule)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        direct = soft_label_kl(student_logits, teacher(objective.teacher_inputs(images)), 4.0)
    torch.testing.assert_close(loss, direct, rtol=1e-4, atol=1e-7)


def test_validation_freezes_the_model_once_and_counts_what_the_model_counts(monkeypatch):
    model = _trained_looking("resnet18", "torchvision")
    generator = torch.Generator().manual_seed(5)
    val = TensorImageSet(torch.randint(0, 256, (150, 3, 32, 32), dtype=torch.uint8, generator=generator),
                         torch.randint(0, 10, (150,), generator=generator))
    built = []

    def spy(module: nn.Module, example: torch.Tensor) -> nn.Module:
        built.append(inference_model(module, example))
        return built[-1]

    monkeypatch.setattr(loop, "inference_model", spy)
    accuracy = loop.evaluate_top1(model, val, (0.5,) * 3, (0.25,) * 3, CPU, batch_size=64)
    assert len(built) == 1 and isinstance(built[0], torch.fx.GraphModule)
    with execution_settings(frozen_cpu_inference=False):
        assert loop.evaluate_top1(model, val, (0.5,) * 3, (0.25,) * 3, CPU, batch_size=64) == accuracy
    assert built[1] is model
