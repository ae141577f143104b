"""The rded evaluator against numbers recorded from RDED's own code (LINs-lab/RDED, see the
"about" field of data/rded_reference.json): the students' initial weights layer by layer, the
first training steps on a fixed batch and teacher, and the batch size and lr of every
(dataset, IPC, student, teacher) case of its argument.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision

from ddbench.core.config import resolve_config
from ddbench.core.interfaces import IMAGENET_MEAN, IMAGENET_STD, EvalTask, Teacher
from ddbench.evaluators.base import student_normalization
from ddbench.evaluators.rded import RdedEvalConfig, RdedEvaluator, rded_batch_size_and_lr
from ddbench.models import create_model
from ddbench.training import CutMix, TeacherSoftLabelObjective, build_optimizer
from ddbench.training.augment import normalize
from ddbench.training.schedule import EpochSchedule
from tests.evaluators.synthetic import ColourSquares, write_distilled

REFERENCE = json.loads((Path(__file__).parent / "data" / "rded_reference.json").read_text())
CPU = torch.device("cpu")

#: RDED's names -> ddbench's: students, and its subsets as (dataset name, preset family)
ARCHS = {
    "resnet18_modified": "resnet18",
    "resnet18": "resnet18",
    "resnet101_modified": "resnet101",
    "resnet101": "resnet101",
    "mobilenet_v2": "mobilenet_v2",
    "efficientnet_b0": "efficientnet_b0",
    **{f"conv{d}": f"convnet{d}" for d in (3, 4, 5, 6)},
}
SUBSETS = {
    "cifar10": ("cifar10", "cifar"),
    "cifar100": ("cifar100", "cifar"),
    "tinyimagenet": ("tinyimagenet", "default"),
    "imagenet-nette": ("nette", "imagenet"),
    "imagenet-woof": ("woof", "imagenet"),
    "imagenet-100": ("imagenet100", "imagenet"),
    "imagenet-1k": ("imagenet1k", "imagenet"),
}


def ddbench_name(rded_name: str) -> str:
    """RDED's ConvNet keeps convs and norms in separate lists and calls its head `classifier`;
    ddbench's interleaves them and calls it `fc`. torchvision models keep their names."""
    match = re.match(r"layers\.(conv|norm)\.(\d+)\.(.*)", rded_name)
    if match:
        return f"features.{4 * int(match.group(2)) + (match.group(1) == 'norm')}.{match.group(3)}"
    return {"classifier.weight": "fc.weight", "classifier.bias": "fc.bias"}.get(rded_name, rded_name)


def layer_stats(tensor: torch.Tensor) -> tuple[float, float]:
    values = tensor.detach().double()
    return values.mean().item(), values.std().item() if values.numel() > 1 else 0.0


SAME_LIBRARIES = (torch.__version__, torchvision.__version__) == (REFERENCE["torch"], REFERENCE["torchvision"])


def ddbench_student(case: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(case["torch_seed"])
    model = create_model(case["ddbench_arch"], case["num_classes"], case["input_size"], init=RdedEvalConfig.student_init)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) == len(case["layers"])
    return state


@pytest.mark.parametrize("case", REFERENCE["init"], ids=lambda case: f"{case['ddbench_arch']}-{case['input_size']}px")
def test_student_init_follows_rded_layer_by_layer(case):
    """The same distribution in every tensor: each layer's mean and std within 6 standard errors
    of RDED's (constants exactly), which holds whatever the random draws were."""
    state = ddbench_student(case)
    for rded_name, shape, mean, std in case["layers"]:
        tensor = state[ddbench_name(rded_name)]
        assert list(tensor.shape) == shape, rded_name
        got_mean, got_std = layer_stats(tensor)
        count = tensor.numel()
        assert abs(got_mean - mean) <= 6 * std / count**0.5 + 1e-12, rded_name
        assert abs(got_std - std) <= 6 * std / (2 * max(count - 1, 1)) ** 0.5 + 1e-12, rded_name


@pytest.mark.skipif(not SAME_LIBRARIES, reason="recorded with other torch/torchvision versions: re-record to compare draws")
@pytest.mark.parametrize("case", REFERENCE["init"], ids=lambda case: f"{case['ddbench_arch']}-{case['input_size']}px")
def test_student_init_is_rdeds_draw_for_draw(case):
    """Under one torch seed the student's weights are RDED's: the same draws in the same order."""
    state = ddbench_student(case)
    for rded_name, _, mean, std in case["layers"]:
        assert layer_stats(state[ddbench_name(rded_name)]) == pytest.approx((mean, std), rel=1e-9, abs=1e-12), rded_name


def test_timm_init_differs_from_rded_where_the_issue_found_it():
    """Version 1's students: every block's last BN weight at zero, a kaiming fan_out stem."""
    rded = {row[0]: row for row in REFERENCE["init"][0]["layers"]}  # resnet18 at 32 px
    torch.manual_seed(0)
    timm_state = create_model("resnet18", 10, 32, init="timm").state_dict()
    for name in ("layer1.0.bn2.weight", "layer4.1.bn2.weight"):
        assert rded[name][2] == 1.0 and timm_state[name].abs().max() == 0
    assert rded["conv1.weight"][3] == pytest.approx(1 / 27**0.5 / 3**0.5, rel=0.05)  # U(+-1/sqrt(fan_in))
    assert layer_stats(timm_state["conv1.weight"])[1] == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)


class ReplayDraws:
    """Hands ddbench's CutMix the draws RDED's CutMix made (its numpy calls, in ddbench's order)."""

    def __init__(self, draw: dict):
        self.draw = draw
        self.centres = list(draw["centre"])

    def random(self) -> float:
        return 0.0  # below cutmix_prob = 1

    def beta(self, a: float, b: float) -> float:
        return self.draw["lam"]

    def permutation(self, n: int) -> np.ndarray:
        return np.array(self.draw["rand_index"])

    def integers(self, n: int) -> int:
        return self.centres.pop(0)


def run_first_steps(**overrides) -> tuple[list[float], torch.nn.Module]:
    steps = REFERENCE["first_steps"]
    config = resolve_config(RdedEvalConfig, RdedEvaluator.presets["cifar"], overrides)
    cifar10 = SimpleNamespace(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    mean, std = student_normalization(config, cifar10)
    pixels = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = normalize(pixels, mean, std)
    labels = torch.tensor(steps["labels"])
    torch.manual_seed(steps["teacher"]["torch_seed"])
    teacher = create_model("convnet3", 10, 32, init="torchvision").eval()
    torch.manual_seed(steps["student"]["torch_seed"])
    student = create_model("resnet18", 10, 32, init=config.student_init).train()
    RdedEvaluator(config).prepare_student(student)
    _, lr = rded_batch_size_and_lr(config, 10, 10, "resnet18", "convnet3")
    optimizer = build_optimizer(student, "adamw", lr, config.weight_decay, betas=config.betas)
    objective = TeacherSoftLabelObjective(
        teacher, config.temperature, CPU, amp=False, student_normalization=(mean, std),
        teacher_normalization=(IMAGENET_MEAN, IMAGENET_STD),  # RDED's teachers: ImageNet constants
    )
    losses = []
    for draw in steps["cutmix_draws"]:
        batch = CutMix(config.cutmix_prob, config.cutmix_alpha)(images, labels, ReplayDraws(draw))
        rows, columns = slice(draw["bbox"][0], draw["bbox"][2]), slice(draw["bbox"][1], draw["bbox"][3])
        torch.testing.assert_close(batch.images[:, :, rows, columns], images[draw["rand_index"]][:, :, rows, columns])
        loss = objective(student(batch.images), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, student


def test_first_steps_match_rded_loss_for_loss():
    """Same init, CutMix box, normalisation, teacher, loss and AdamW: the same losses, and (the
    default since protocol version 3) the same BN running statistics, which RDED's second,
    train-mode forward per step (only to log train accuracy) moves twice."""
    steps = REFERENCE["first_steps"]
    config = resolve_config(RdedEvalConfig, RdedEvaluator.presets["cifar"])
    assert rded_batch_size_and_lr(config, 10, 10, "resnet18", "convnet3")[1] == steps["lr"]
    assert (config.temperature, config.weight_decay) == (steps["temperature"], steps["weight_decay"])
    assert RdedEvaluator.protocol_version == 3 and RdedEvalConfig.bn_stat_updates_per_step == 2
    losses, student = run_first_steps()
    # The loss never sees running stats. It is a KL of two near-uniform distributions (T = 20), so
    # the float noise of another CPU's conv kernels shows at 1e-4 relative, and AdamW, which
    # divides by tiny gradients, grows it step by step (seen: 7e-5, 5e-4, 2e-3). A 1 % change of
    # the temperature moves every step by 2 %.
    assert losses[0] == pytest.approx(steps["losses"][0], rel=1e-3)
    assert losses[1:] == pytest.approx(steps["losses"][1:], rel=1e-2)
    # The same float noise reaches the statistics through AdamW's first updates (seen: 2e-4 at
    # most); one update per step instead of two is off by 0.08.
    torch.testing.assert_close(student.bn1.running_mean, torch.tensor(steps["student_bn1_running_mean_after"]), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(student.bn1.running_var, torch.tensor(steps["student_bn1_running_var_after"]), rtol=1e-3, atol=1e-3)


def test_one_bn_update_per_step_is_version_2_and_not_rded_code():
    """`bn_stat_updates_per_step=1` (protocol version 2) trains the very same student (same
    losses) but leaves running statistics RDED's code does not reach."""
    steps = REFERENCE["first_steps"]
    losses_two, student_two = run_first_steps()
    losses_one, student_one = run_first_steps(bn_stat_updates_per_step=1)
    assert losses_one == losses_two
    rded_mean = torch.tensor(steps["student_bn1_running_mean_after"])
    assert (student_one.bn1.running_mean - rded_mean).abs().max() > 0.02
    assert (student_two.bn1.running_mean - rded_mean).abs().max() < 1e-3


def test_batch_size_and_lr_match_rded_argument_py():
    checked = 0
    for row in REFERENCE["batch_and_lr"]:
        name, family = SUBSETS[row["subset"]]
        config = resolve_config(RdedEvalConfig, RdedEvaluator.preset_for(SimpleNamespace(name=name, preset_family=family)))
        student, teacher = ARCHS[row["student"]], ARCHS[row["teacher"]]
        batch_size, lr = rded_batch_size_and_lr(config, row["ipc"], row["nclass"], student, teacher)
        case = f"{row['subset']} IPC {row['ipc']} {row['teacher']} -> {row['student']}"
        assert lr == pytest.approx(row["lr"]), case
        assert (config.temperature, config.epochs) == (row["temperature"], row["epochs"]), case
        if row["batch_size"] == 0:  # argument.py has no batch size outside IPC 1/10/50: ddbench's extension
            assert batch_size == rded_batch_size_and_lr(config, 50, row["nclass"], student, teacher)[0], case
            continue
        assert batch_size == row["batch_size"], case
        checked += 1
    assert checked == 82


#: RDED's optimiser as validation/main.py builds it (what a loss on a few steps cannot tell apart):
#: torch.optim.AdamW(get_parameters(model), lr=args.adamw_lr, betas=[0.9, 0.999],
#: weight_decay=args.adamw_weight_decay), so eps and amsgrad are torch's defaults.
RDED_ADAMW = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "maximize": False}


def rded_decays(name: str, parameter: torch.Tensor) -> bool:
    """validation/utils.py get_parameters: weight decay on names containing "weight" with ndim > 1;
    every other parameter in a second group with weight_decay 0."""
    return "weight" in name and parameter.ndim > 1


def rded_epoch_factor(epoch: int, epochs: int) -> float:
    """validation/main.py (args.cos, the default): LambdaLR, stepped once after every epoch."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs / 2)) if epoch <= epochs else 0.0


class CifarSquares(ColourSquares):
    """The synthetic squares under the paper's "cifar" preset (RDED's constants, 300 epochs)."""

    name = "cifar_squares"
    preset_family = "cifar"
    resolution = 32


class OptimiserBuilt(Exception):
    """Stops the evaluation once the training loop is handed its optimiser and schedule."""


def evaluator_optimiser(monkeypatch, tmp_path, student: str, **overrides):
    """What `RdedEvaluator.evaluate` hands the training loop (through the code a real run takes)."""
    import ddbench.training.recipe as recipe_module

    seen = {}

    def capture(model, train_set, **kwargs):
        seen.update(kwargs, model=model)
        raise OptimiserBuilt

    monkeypatch.setattr(recipe_module, "train_model", capture)
    dataset = CifarSquares()
    torch.manual_seed(0)
    teacher = Teacher(create_model("convnet3", dataset.num_classes, dataset.resolution), "convnet3", dataset.name,
                      dataset.num_classes, accuracy=100.0)
    config = resolve_config(RdedEvalConfig, RdedEvaluator.preset_for(dataset), overrides)
    task = EvalTask(dataset=dataset, student=student, seed=0, device=CPU, teacher=teacher)
    with pytest.raises(OptimiserBuilt):
        RdedEvaluator(config).evaluate(write_distilled(dataset, tmp_path / student), task)
    return seen


def recorded_lr(student: str) -> float:
    """RDED's argument.py lr for `student` (ddbench's name) on CIFAR-10, as recorded."""
    rows = {ARCHS[row["student"]]: row["lr"] for row in REFERENCE["batch_and_lr"] if row["subset"] == "cifar10"}
    return rows[student]


@pytest.mark.parametrize("student", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_optimiser_and_schedule_are_rdeds(monkeypatch, tmp_path, student):
    """The first-steps losses cannot see weight decay 0 or beta2 0.99 (tried): the optimiser the
    evaluator builds is checked against RDED's code directly, group by group."""
    seen = evaluator_optimiser(monkeypatch, tmp_path, student)
    optimizer, model = seen["optimizer"], seen["model"]
    assert type(optimizer) is torch.optim.AdamW
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decayed = {id(p) for name, p in named if rded_decays(name, p)}
    groups = [group for group in optimizer.param_groups if group["params"]]
    assert len(groups) == 2
    assert sum(len(group["params"]) for group in groups) == len(named)
    weight_decay = REFERENCE["first_steps"]["weight_decay"]
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert ids == decayed or not ids & decayed
        assert group["weight_decay"] == (weight_decay if ids == decayed else 0.0)
        assert group["lr"] == recorded_lr(student)
        assert {key: group[key] for key in RDED_ADAMW} == RDED_ADAMW
    epochs = seen["epochs"]
    assert epochs == REFERENCE["batch_and_lr"][0]["epochs"] == 300
    schedule = EpochSchedule(seen["schedule"], epochs, steps_per_epoch=1)  # how the loop applies it
    assert [schedule(1.0, epoch) for epoch in range(epochs)] == pytest.approx(
        [rded_epoch_factor(epoch, epochs) for epoch in range(epochs)], rel=1e-12)


def test_schedule_steps_once_per_epoch(monkeypatch, tmp_path):
    """Every step of epoch e trains at lr * RDED's factor(e): the schedule moves between epochs."""
    lrs: list[float] = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    dataset = CifarSquares()
    teacher = Teacher(create_model("convnet3", dataset.num_classes, dataset.resolution), "convnet3", dataset.name,
                      dataset.num_classes, accuracy=100.0)
    epochs = 3
    config = resolve_config(RdedEvalConfig, RdedEvaluator.preset_for(dataset), {"epochs": epochs, "validate_last_fraction": 0.0})
    task = EvalTask(dataset=dataset, student="convnet3", seed=0, device=CPU, teacher=teacher)
    result = RdedEvaluator(config).evaluate(write_distilled(dataset, tmp_path / "set", ipc=4), task)
    steps_per_epoch = math.ceil(4 * dataset.num_classes / result.details["recipe"]["batch_size"])
    assert steps_per_epoch > 1
    expected = [recorded_lr("convnet3") * rded_epoch_factor(epoch, epochs) for epoch in range(epochs) for _ in range(steps_per_epoch)]
    assert lrs == pytest.approx(expected, rel=1e-12)
