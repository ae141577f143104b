"""The pieces of the training base: EMA math, warm-up + cosine values, parameter groups, gradient
clipping, epoch batches and the precision switch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddbench.core.errors import ConfigError, TrainingDivergedError
from ddbench.training import (
    EpochBatches,
    EpochSchedule,
    ExponentialMovingAverage,
    Precision,
    WarmupCosine,
    build_epoch_scheduler,
    build_optimizer,
    decay_param_groups,
    fit,
    sampled_batch,
)
from ddbench.training.steps import diverged_steps


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net.pos_embed = nn.Parameter(torch.zeros(1, 4))
    return net


# ----- EMA -----
def test_ema_starts_as_a_copy_and_follows_decay_times_average_plus_the_rest():
    net = _net()
    ema = ExponentialMovingAverage(net, decay=0.75)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), net.parameters()))
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    start = [p.detach().clone() for p in net.parameters()]
    expected = [p.clone() for p in start]
    for shift in (1.0, -3.0, 0.5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(shift)
            net[1].running_mean.fill_(shift)
        ema.update(net)
        expected = [0.75 * e + 0.25 * p.detach() for e, p in zip(expected, net.parameters())]
    for averaged, value in zip(ema.module.parameters(), expected):
        torch.testing.assert_close(averaged, value, rtol=0, atol=1e-6)
    assert torch.equal(ema.module[1].running_mean, torch.full((4,), 0.5))  # buffers are copied, not averaged
    # the first parameter moved by +1.5 in total; the EMA by 0.25*(1 + 0.75*...) -- spelled out:
    first = start[0] + 0.25 * 1.0 * 0.75**2 + 0.25 * (1.0 - 3.0) * 0.75 + 0.25 * (1.0 - 3.0 + 0.5)
    torch.testing.assert_close(next(ema.module.parameters()), first, rtol=0, atol=1e-6)
    other = ExponentialMovingAverage(_net(), decay=0.75)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.module.parameters(), ema.module.parameters()))
    with pytest.raises(ConfigError):
        ExponentialMovingAverage(net, decay=1.0)


def test_ema_keeps_tied_parameters_tied():
    net = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    net[1].weight = net[0].weight
    ema = ExponentialMovingAverage(net, decay=0.9)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    assert ema.module[1].weight is ema.module[0].weight
    torch.testing.assert_close(ema.module[0].weight, net[0].weight - 0.9, rtol=0, atol=1e-6)


# ----- schedule -----
def test_warmup_cosine_values():
    schedule = WarmupCosine(total_steps=110, warmup_steps=10, final_fraction=0.1)
    assert [schedule(2.0, s) for s in (0, 4, 9)] == [0.2, 1.0, 2.0]  # linear, reaching the peak at the last warm-up step
    assert schedule(2.0, 10) == 2.0  # cosine starts at the peak
    assert schedule(2.0, 60) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half way down
    assert schedule(2.0, 35) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))
    assert schedule(2.0, 110) == pytest.approx(0.2) and schedule(2.0, 500) == pytest.approx(0.2)  # floor after the end
    plain = WarmupCosine(total_steps=100)
    assert plain(1.0, 0) == 1.0 and plain(1.0, 100) == pytest.approx(0.0, abs=1e-12)
    assert [WarmupCosine(5, 0, 1.0)(3e-4, s) for s in range(5)] == [3e-4] * 5
    with pytest.raises(ConfigError):
        WarmupCosine(total_steps=0)


@pytest.mark.parametrize("name", ["quarter_cosine", "cosine", "warmup5_cosine"])
def test_the_epoch_view_sets_exactly_the_lr_the_per_epoch_scheduler_set(name):
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler = build_epoch_scheduler(optimizer, name, 12)
    by_epoch = []
    for _ in range(12):
        by_epoch.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    schedule = EpochSchedule(name, epochs=12, steps_per_epoch=3)
    assert [schedule(0.1, step) for step in range(36)] == [lr for lr in by_epoch for _ in range(3)]  # bit for bit
    with pytest.raises(ConfigError, match="unknown lr schedule 'cosin'"):
        EpochSchedule("cosin", 12, 3)


def test_fit_sets_every_groups_lr_from_its_own_peak():
    net = _net()
    optimizer = build_optimizer(net, "sgd", 0.1, 0.0, lr_by_name=[("2.", 1.0)])
    seen = []

    def step_loss(step):
        seen.append([group["lr"] for group in optimizer.param_groups])
        return net(torch.ones(2, 3)).sum(), {}

    fit(net, optimizer, step_loss, total_steps=4, schedule=WarmupCosine(4, warmup_steps=2))
    assert [lrs[-1] for lrs in seen] == pytest.approx([0.5, 1.0, 1.0, 0.5])  # the lr_by_name group
    assert [lrs[0] for lrs in seen] == pytest.approx([0.05, 0.1, 0.1, 0.05])


# ----- parameter groups -----
def test_parameter_groups_decay_matrices_only_with_name_exceptions_and_per_group_lr():
    net = _net()
    net[0].bias.requires_grad_(False)
    decay, no_decay = decay_param_groups(net, 0.05)
    assert [p.shape for p in decay["params"]] == [(1, 4), (4, 3), (2, 4)] and decay["weight_decay"] == 0.05
    assert [p.shape for p in no_decay["params"]] == [(4,), (4,), (2,)] and no_decay["weight_decay"] == 0.0  # frozen bias left out
    groups = decay_param_groups(net, 0.05, no_decay_names=("pos_",), lr_by_name=[("2.", 1e-2)])
    assert [(len(g["params"]), g["weight_decay"], g.get("lr")) for g in groups] == [
        (1, 0.05, None), (3, 0.0, None), (1, 0.05, 1e-2), (1, 0.0, 1e-2)]
    assert groups[1]["params"][0] is net.pos_embed
    optimizer = build_optimizer(net, "adamw", 1e-3, 0.05, lr_by_name=[("2.", 1e-2)])
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3, 1e-2, 1e-2]


# ----- clipping -----
def test_gradient_clipping_scales_the_global_norm_and_reports_the_unclipped_one():
    weight = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    loss = (weight * torch.tensor([3.0, 4.0])).sum()  # gradient (3, 4), norm 5
    norm = Precision("cpu").backward_step(loss, optimizer, [weight], max_grad_norm=1.0)
    assert float(norm) == pytest.approx(5.0)
    torch.testing.assert_close(weight.detach(), torch.tensor([-0.6, -0.8]))  # the step used the clipped (0.6, 0.8)

    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(model, optimizer, lambda step: (100.0 * model(torch.ones(1, 1)).sum(), {}), total_steps=1, grad_clip=2.0)
    assert float(model.weight.detach()) == pytest.approx(-2.0)  # gradient 100 clipped to norm 2
    assert Precision("cpu").backward_step(model(torch.ones(1, 1)).sum(), optimizer, model.parameters(), 0.0) is None


# ----- batches and precision -----
def test_epoch_batches_cover_each_epoch_once_and_depend_only_on_the_step():
    batches = EpochBatches(10, 4, seed=3, purpose="test")
    assert batches.steps_per_epoch == 3
    epoch0 = torch.cat([batches.indices(s) for s in range(3)])
    assert sorted(epoch0.tolist()) == list(range(10)) and [len(batches.indices(s)) for s in range(3)] == [4, 4, 2]
    epoch1 = torch.cat([batches.indices(s) for s in range(3, 6)])
    assert sorted(epoch1.tolist()) == list(range(10)) and not torch.equal(epoch0, epoch1)
    assert torch.equal(EpochBatches(10, 4, seed=3, purpose="test").indices(4), batches.indices(4))
    assert EpochBatches(10, 4, 3, "test", drop_last=True).steps_per_epoch == 2
    assert torch.equal(sampled_batch(0, "p", 5, 100, 8), sampled_batch(0, "p", 5, 100, 8))
    assert not torch.equal(sampled_batch(0, "p", 5, 100, 8), sampled_batch(0, "p", 6, 100, 8))


def test_precision_is_float32_on_cpu_and_half_precisions_need_cuda():
    assert Precision("cpu").mode == "fp32" and Precision("cpu", "auto").scaler is None
    for mode in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="CUDA"):
            Precision("cpu", mode)
    with pytest.raises(ConfigError, match="unknown precision"):
        Precision("cpu", "int8")
    if torch.cuda.is_available():
        assert Precision("cuda", "auto").mode == "bf16" and Precision("cuda", "fp16").scaler is not None


# ----- divergence -----
def test_divergence_is_a_non_finite_loss_or_a_finite_one_over_1e4_times_its_start():
    assert diverged_steps(torch.tensor([2.3, 5.0, 1.0, 2.29e4])) is None
    assert diverged_steps(torch.tensor([2.3, 1.0, 2.31e4, float("nan")])) == (2, pytest.approx(2.31e4), pytest.approx(2.3))
    assert [diverged_steps(torch.tensor([2.3, bad]))[0] for bad in (float("nan"), float("inf"), -float("inf"))] == [1] * 3
    assert diverged_steps(torch.tensor([-3.0, -3.1e4]))[0] == 1  # by magnitude: losses may be negative
    # a loss that starts near 0 is held to 1e4, not to 1e4 x its start: a fine-tune's noise is no divergence
    assert diverged_steps(torch.tensor([1e-6, 0.5, 9e3])) is None
    assert diverged_steps(torch.tensor([1e-6, 0.5, 2e4]))[0] == 2
    assert diverged_steps(torch.tensor([2.0, 3e4, 1.0]), first=2) is None  # steps before `first` were checked already


def test_fit_stops_a_finite_explosion_as_it_stops_a_nan():
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    def step_loss(step):
        return model(torch.ones(1, 1)).sum() * (1e5 if step == 3 else 1.0), {}

    with pytest.raises(TrainingDivergedError, match=r"^training: the loss became 1e\+05 at step 4 of 6, over 1e4 times "
                                                     r"its start \(1\) \(lr 0\); the training diverged: lower the "
                                                     r"learning rate \(lr\)$"):
        fit(model, optimizer, step_loss, total_steps=6)


# ----- the one optimiser recipe -----
def test_every_trainer_config_embeds_the_optimizer_recipe_and_takes_its_keys_flat():
    from dataclasses import fields

    from ddbench.methods.minimax.finetune import MinimaxFinetuneConfig
    from ddbench.generators.dit.training import DiTTrainConfig
    from ddbench.generators.var.configs import TrainConfig
    from ddbench.methods.hieramp.finetune import FinetuneConfig
    from ddbench.training import OptimizerRecipe, TrainingRecipe, with_settings

    optimizer_keys = {item.name for item in fields(OptimizerRecipe)}
    for config in (TrainConfig, DiTTrainConfig, MinimaxFinetuneConfig, FinetuneConfig, TrainingRecipe):
        names = {item.name: item.type for item in fields(config)}
        assert names["optim"] in (OptimizerRecipe, "OptimizerRecipe") and not optimizer_keys & set(names), config
    # what the command-line options pass (None: an option not given) lands in the embedded recipe
    tuned = with_settings(FinetuneConfig(), epochs=0.5, lr=2e-4, precision="auto", batch_size=None)
    assert (tuned.epochs, tuned.batch_size, tuned.optim) == (0.5, 32, OptimizerRecipe(
        lr=2e-4, weight_decay=0.05, betas=(0.9, 0.95), grad_clip=2.0, precision="auto"))  # VAR's optimiser otherwise
    assert with_settings(MinimaxFinetuneConfig(), lr=1e-4, ema_decay=0.99).optim == OptimizerRecipe(lr=1e-4)
    assert with_settings(TrainConfig(), weight_decay=0.0).optim.weight_decay == 0.0
    with pytest.raises(ConfigError, match=r"MinimaxFinetuneConfig has no setting lrr; it has .*\blr\b"):
        with_settings(MinimaxFinetuneConfig(), lrr=1e-4)
    recorded = TrainingRecipe(epochs=2, batch_size=8, optim=OptimizerRecipe(lr=0.05, optimizer="sgd")).record()
    assert recorded["lr"] == 0.05 and recorded["optimizer"] == "sgd" and "optim" not in recorded  # rows keep flat keys
