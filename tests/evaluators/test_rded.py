"""The rded evaluator: the protocol's rules (batch size, lr, factor from the manifest), the
teacher labelling the very batch the student sees, and a seeded end-to-end run."""

from __future__ import annotations

import pytest
import torch

from ddbench.core.config import resolve_config
from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.interfaces import EvalTask, Teacher
from ddbench.evaluators.rded import RdedEvaluator, rded_batch_size, rded_learning_rate
from ddbench.teachers import TeacherStore
from ddbench.training import MixedBatch, TeacherSoftLabelObjective, soft_label_kl
from tests.evaluators.synthetic import ColourSquares, write_distilled

CPU = torch.device("cpu")
FAST = {"epochs": 5, "validate_every": 1, "validate_last_fraction": 0.4}


@pytest.mark.parametrize(
    "ipc, classes, expected",
    [(1, 10, 10), (10, 10, 50), (50, 10, 100), (10, 100, 100), (50, 1000, 200), (1, 1000, 20), (10, 3, 30), (20, 10, 50), (100, 10, 100)],
)
def test_batch_size_rule(ipc, classes, expected):
    assert rded_batch_size(ipc, classes) == expected


def test_learning_rates_per_arch():
    assert rded_learning_rate("resnet18") == rded_learning_rate("resnet101") == rded_learning_rate("convnet3") == 1e-3
    assert rded_learning_rate("efficientnet_b0") == 2e-3
    assert rded_learning_rate("mobilenet_v2") == 2.5e-3
    with pytest.raises(ConfigError, match="rded.lr"):
        rded_learning_rate("vit_tiny")


def test_teacher_labels_the_same_mixed_batch():
    seen = []

    class SpyTeacher(torch.nn.Module):
        def forward(self, images):
            seen.append(images)
            return torch.ones(images.shape[0], 3)

    mixed = MixedBatch(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), torch.tensor([1, 0]), 0.3)
    student_logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    loss = TeacherSoftLabelObjective(SpyTeacher(), 20.0, CPU)(student_logits, mixed)
    assert len(seen) == 1 and seen[0] is mixed.images
    assert loss.item() == pytest.approx(soft_label_kl(student_logits, torch.ones(2, 3), 20.0).item())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    store = TeacherStore(root=tmp_path_factory.mktemp("teachers"), recipe_overrides={"epochs": 3, "batch_size": 16, "lr": 5e-3})
    return store(ColourSquares(), "convnet3", CPU)


def evaluate(tmp_path, teacher, seed=0, extra=None, **overrides):
    dataset = ColourSquares()
    distilled = write_distilled(dataset, tmp_path / "set", extra=extra)
    config = resolve_config(RdedEvaluator.Config, RdedEvaluator.preset_for(dataset), {**FAST, **overrides})
    task = EvalTask(dataset=dataset, student="convnet3", seed=seed, device=CPU, teacher=teacher)
    return RdedEvaluator(config).evaluate(distilled, task)


def test_rded_reports_both_numbers_and_the_teacher(tmp_path, teacher):
    result = evaluate(tmp_path, teacher)
    assert result.primary == "top1_final"
    assert set(result.metrics) == {"top1_final", "top1_best", "teacher_top1"}
    assert result.details["top1_best_epochs"] == [4, 5]
    assert result.metrics["top1_best"] >= result.metrics["top1_final"]
    assert result.metrics["teacher_top1"] == teacher.accuracy
    assert result.details["teacher"]["arch"] == "convnet3"
    recipe = result.details["recipe"]
    assert recipe["batch_size"] == 10 and recipe["lr"] == 1e-3 and recipe["cutmix_prob"] == 1.0
    assert result.value > 40.0  # 4 classes, chance 25%


def test_rded_is_deterministic_per_seed(tmp_path, teacher):
    first = evaluate(tmp_path, teacher, seed=1)
    second = evaluate(tmp_path, teacher, seed=1)
    assert first.details["epoch_losses"] == second.details["epoch_losses"]
    assert first.metrics == second.metrics


def test_shuffle_patch_factor_comes_from_the_manifest(tmp_path, teacher):
    result = evaluate(tmp_path, teacher, extra={"shuffle_patch_factor": 2}, epochs=1, validate_last_fraction=0.0)
    assert result.details["recipe"]["shuffle_patch_factor"] == 2
    assert result.details["recipe"]["crop_scale"] == [0.5, 1.0]


def test_rded_needs_a_matching_teacher(tmp_path, teacher):
    with pytest.raises(ConfigError, match="needs a teacher"):
        evaluate(tmp_path, None)
    wrong = Teacher(torch.nn.Linear(1, 6), "convnet3", "other", 6, accuracy=90.0)
    with pytest.raises(CheckpointError, match="6 classes"):
        evaluate(tmp_path, wrong)
    poor = Teacher(teacher.model, "convnet3", "colour_squares", 4, accuracy=25.0, source="somewhere")
    with pytest.raises(CheckpointError, match="near chance"):
        evaluate(tmp_path, poor)


def test_presets_keep_the_protocol_structure():
    assert RdedEvaluator.presets["cifar"] == {} and RdedEvaluator.presets["imagenet"] == {}
    digits = resolve_config(RdedEvaluator.Config, RdedEvaluator.presets["digits"])
    paper = RdedEvaluator.Config()
    assert paper.epochs == 300 and paper.temperature == 20.0 and paper.validate_every == 10
    assert digits.temperature == paper.temperature and digits.schedule == "quarter_cosine"
    assert digits.validate_last_fraction == paper.validate_last_fraction


def test_protocol_follows_rded_code_and_keeps_version_1_reachable(tmp_path, teacher):
    from ddbench.core.interfaces import IMAGENET_MEAN, Evaluator

    assert RdedEvaluator.protocol_version == 3 and Evaluator.protocol_version == 1
    current = evaluate(tmp_path, teacher, epochs=1, validate_last_fraction=0.0)
    assert current.details["student"] == {"arch": "convnet3", "init": "torchvision", "mean": list(IMAGENET_MEAN), "std": [0.229, 0.224, 0.225]}
    assert current.details["teacher"]["mean"] == list(ColourSquares.mean)  # what it was trained with
    version_1 = evaluate(tmp_path, teacher, epochs=1, validate_last_fraction=0.0, student_init="timm", student_normalization="dataset")
    assert version_1.details["student"]["init"] == "timm" and version_1.details["student"]["mean"] == list(ColourSquares.mean)
    with pytest.raises(ConfigError, match="student_normalization"):
        evaluate(tmp_path, teacher, student_normalization="cifar")
    with pytest.raises(ConfigError, match="student_init"):
        evaluate(tmp_path, teacher, student_init="keras")


def test_bn_statistics_move_twice_per_step_by_default_as_in_rded_code():
    """RDED's train() runs the student in training mode on the mixed batch once to log train
    accuracy and once to learn: two running-statistics updates per step (protocol version 3).
    `bn_stat_updates_per_step=1` is version 2: one update, as a plain PyTorch loop."""
    import copy

    from ddbench.models import create_model

    torch.manual_seed(0)
    student = create_model("resnet18", 4, 8, init="torchvision")
    rded_code, version_2 = copy.deepcopy(student), copy.deepcopy(student)
    RdedEvaluator(RdedEvaluator.Config()).prepare_student(student)
    RdedEvaluator(resolve_config(RdedEvaluator.Config, {}, {"bn_stat_updates_per_step": 1})).prepare_student(version_2)
    images = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for model in (student, rded_code, version_2):
            model.train()(images)
        rded_code(images)  # RDED's second forward of the same batch
    twice, once = dict(rded_code.named_buffers()), dict(version_2.named_buffers())
    running = [name for name, _ in student.named_buffers() if "running_" in name]
    assert len(running) == 2 * 20  # ResNet-18: 20 BatchNorm layers
    for name, buffer in student.named_buffers():
        if "running_" in name:
            torch.testing.assert_close(buffer, twice[name], rtol=1e-5, atol=1e-6)
    assert max(float((dict(student.named_buffers())[name] - once[name]).abs().max()) for name in running) > 1e-2
    with pytest.raises(ConfigError, match="at least 1"):
        RdedEvaluator(resolve_config(RdedEvaluator.Config, {}, {"bn_stat_updates_per_step": 0})).prepare_student(version_2)


def test_bn_update_count_changes_only_the_statistics_not_the_training(tmp_path, teacher):
    default = evaluate(tmp_path, teacher, epochs=2, validate_last_fraction=0.0)
    version_2 = evaluate(tmp_path, teacher, epochs=2, validate_last_fraction=0.0, bn_stat_updates_per_step=1)
    assert default.details["config"]["bn_stat_updates_per_step"] == 2
    assert version_2.details["config"]["bn_stat_updates_per_step"] == 1
    assert default.details["epoch_losses"] == version_2.details["epoch_losses"]


def test_teacher_sees_its_own_normalisation_of_the_same_pixels(teacher):
    """Student inputs in ImageNet constants, teacher trained with the dataset's: the evaluator's
    objective hands the teacher the same augmented pixels normalised the teacher's way."""
    from ddbench.training.augment import normalize

    dataset = ColourSquares()
    config = resolve_config(RdedEvaluator.Config, RdedEvaluator.preset_for(dataset))
    task = EvalTask(dataset=dataset, student="convnet3", seed=0, device=CPU, teacher=teacher)
    objective = RdedEvaluator(config).objective(task)
    pixels = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    student_inputs = normalize(pixels, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.testing.assert_close(objective.teacher_inputs(student_inputs), normalize(pixels, dataset.mean, dataset.std))
    same = TeacherSoftLabelObjective(teacher.model, 20.0, CPU, student_normalization=((0.5,) * 3, (0.35,) * 3),
                                     teacher_normalization=((0.5,) * 3, (0.35,) * 3))
    assert same.teacher_inputs(student_inputs) is student_inputs


def test_rded_special_cases_and_what_wins():
    from types import SimpleNamespace

    from ddbench.evaluators.rded import rded_batch_size_and_lr

    def resolved(name, family, **overrides):
        dataset = SimpleNamespace(name=name, preset_family=family)
        return resolve_config(RdedEvaluator.Config, RdedEvaluator.preset_for(dataset), overrides)

    cifar100 = resolved("cifar100", "cifar")
    assert rded_batch_size_and_lr(cifar100, 10, 100, "convnet3", "convnet3") == (25, 2e-3)
    assert rded_batch_size_and_lr(cifar100, 10, 100, "convnet3", "resnet18") == (100, 1e-3)
    assert rded_batch_size_and_lr(resolved("cifar10", "cifar"), 10, 10, "convnet3", "convnet3") == (50, 1e-3)
    assert rded_batch_size_and_lr(resolved("tinyimagenet", "default"), 1, 200, "resnet18", "resnet18") == (100, 1e-3)
    explicit = resolved("cifar100", "cifar", batch_size=64, lr=5e-4)
    assert rded_batch_size_and_lr(explicit, 10, 100, "convnet3", "convnet3") == (64, 5e-4)
    typo = resolved("cifar100", "cifar", pair_overrides='{"convnet3->convnet3": {"batchsize": 5}}')
    with pytest.raises(ConfigError, match="batchsize"):
        rded_batch_size_and_lr(typo, 10, 100, "convnet3", "convnet3")
