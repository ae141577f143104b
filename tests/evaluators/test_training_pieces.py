"""The protocol's building blocks against hand computations: the loss, CutMix, the schedule,
the parameter groups, the validation epochs and the augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddbench.core.seeding import numpy_generator
from ddbench.models import create_model
from ddbench.training import CutMix, decay_param_groups, quarter_cosine, shuffle_patches, soft_label_kl, validation_epochs
from ddbench.training.augment import resized_crop_flip, sample_resized_crop_boxes
from ddbench.training.schedule import build_epoch_scheduler


def test_soft_label_kl_matches_hand_computation_without_t_squared():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temperature = 20.0
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        s_exp = [math.exp(v / temperature) for v in s_row]
        t_exp = [math.exp(v / temperature) for v in t_row]
        q = [v / sum(s_exp) for v in s_exp]
        p = [v / sum(t_exp) for v in t_exp]
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    expected = total / 2  # batchmean: sum over classes, mean over the batch; no T^2
    assert soft_label_kl(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-4)  # float32; T^2 would be 400x


def test_cutmix_is_reproducible_under_a_seed_and_lambda_matches_the_box():
    images = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    cutmix = CutMix(prob=1.0, alpha=1.0)
    first = [cutmix(images, labels, rng) for rng in [numpy_generator(7, "cutmix")] for _ in range(3)]
    second = [cutmix(images, labels, rng) for rng in [numpy_generator(7, "cutmix")] for _ in range(3)]
    for a, b in zip(first, second):
        assert a.lam == b.lam
        torch.testing.assert_close(a.images, b.images)
        assert torch.equal(a.partner_labels, b.partner_labels)
    for mixed in first:
        changed = (mixed.images != images).any(1)  # (B, H, W): pixels pasted from a partner
        pasted_fraction = changed.float().mean().item()
        assert pasted_fraction <= 1 - mixed.lam + 1e-6  # a partner equal to itself leaves pixels unchanged
    other = CutMix(1.0)(images, labels, numpy_generator(8, "cutmix"))
    assert other.lam != first[0].lam


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 1.0), (150, 0.5 * (1 + math.cos(math.pi / 4))), (299, 0.5 * (1 + math.cos(math.pi * 299 / 600)))],
)
def test_quarter_cosine_values(epoch, expected):
    assert quarter_cosine(epoch, 300) == pytest.approx(expected)


def test_scheduler_applies_quarter_cosine_per_epoch():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = build_epoch_scheduler(optimizer, "quarter_cosine", 300)
    seen = []
    for _ in range(300):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(1e-3)
    assert seen[150] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert seen[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 299 / 600)))
    assert 0.5e-3 < seen[-1] < 0.51e-3  # ends near half, not zero


def test_weight_decay_only_on_tensors_with_ndim_above_one():
    model = create_model("convnet3", 4, 8)
    decay, no_decay = decay_param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_validation_epochs_match_rded():
    assert validation_epochs(300, 0.2, 10) == [249, 259, 269, 279, 289, 299]
    assert validation_epochs(20, 0.0, 1) == [19]


def test_shuffle_patches_rearranges_strips_and_factor_one_is_identity():
    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(shuffle_patches(image, 1, generator), image)
    quadrants = {tuple(image[0, 0, r : r + 2, c : c + 2].flatten().tolist()) for r in (0, 2) for c in (0, 2)}
    for _ in range(10):
        shuffled = shuffle_patches(image, 2, generator)[0, 0]
        got = {tuple(shuffled[r : r + 2, c : c + 2].flatten().tolist()) for r in (0, 2) for c in (0, 2)}
        assert got == quadrants  # the 2x2 patches survive whole, only their places change


def test_full_box_crop_is_identity_and_flip_mirrors():
    images = torch.rand(2, 3, 6, 6)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0]] * 2)
    out = resized_crop_flip(images, boxes, torch.tensor([False, True]), 6)
    torch.testing.assert_close(out[0], images[0])
    torch.testing.assert_close(out[1], images[1].flip(-1))


def test_crop_boxes_stay_inside_and_respect_scale():
    generator = torch.Generator().manual_seed(0)
    boxes = sample_resized_crop_boxes(500, 32, 32, (0.25, 1.0), (3 / 4, 4 / 3), generator)
    top, left, height, width = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 32).all() and (left + width <= 32).all()
    area = height * width / 1024
    assert area.min() > 0.2 and area.max() <= 1.0
