"""The `rded` method end to end: ranks land in the documented grid cells, the factor reaches the
manifest, draws are seeded, small classes use all their images, and errors name the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ddbench.core.errors import ConfigError
from ddbench.core.images import ArrayImageDataset
from ddbench.core.interfaces import DatasetSpec, Teacher
from ddbench.core.pipeline import build_plugin, distill
from ddbench.core.progress import NullProgress
from ddbench.methods.rded import Rded
from ddbench.methods.rded.method import default_factor
from tests.evaluators.synthetic import ColourSquares

#: 12 flat grey images of distinct brightness per class; both classes hold the same images
LEVELS = [250, 240, 230, 220, 210, 200, 60, 50, 40, 30, 20, 10]


class Greys(DatasetSpec):
    name = "greys"
    resolution = 8
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    @property
    def class_names(self) -> list[str]:
        return ["bright", "dark"]

    def split(self, name, transform=None):
        levels = np.array(LEVELS * 2, dtype=np.uint8)
        images = np.broadcast_to(levels[:, None, None, None], (len(levels), 10, 12, 3)).copy()  # 10x12: not square
        return ArrayImageDataset(images, [0] * len(LEVELS) + [1] * len(LEVELS), transform)


def brightness_teacher(num_classes: int = 2) -> Teacher:
    """Logits (+1, -1) x mean normalised value: class 0 prefers bright crops, class 1 dark ones
    (small enough that float32 softmax does not saturate into ties)."""
    model = nn.Sequential(nn.Conv2d(3, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]).repeat(1, 3).view(2, 3, 1, 1)[:num_classes])
        model[0].bias.zero_()
    return Teacher(model, "brightness", "greys", num_classes, accuracy=100.0, checkpoint_sha256="abc", source="test")


def run(dataset, out_dir, ipc, overrides=None, seed=0, teacher=None):
    method = build_plugin(Rded, dataset, overrides or {})
    teacher = teacher if teacher is not None else brightness_teacher(dataset.num_classes)
    return distill(method, dataset, ipc, seed, out_dir, torch.device("cpu"), teacher, NullProgress())


def quadrant_levels(path) -> list[int]:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    quadrants = [pixels[:4, :4], pixels[:4, 4:], pixels[4:, :4], pixels[4:, 4:]]
    assert all((q == q[0, 0, 0]).all() for q in quadrants)  # each cell is one flat patch
    return [int(q[0, 0, 0]) for q in quadrants]


def test_image_i_stitches_ranks_i_plus_k_ipc_row_major(tmp_path):
    distilled = run(Greys(), tmp_path / "run", ipc=2, overrides={"factor": "2"})
    images = tmp_path / "run" / "images"
    # bright: ranks 250, 240, 230, 220, 210, 200, 60, 50; image 0 holds ranks 0, 2, 4, 6, image 1 ranks 1, 3, 5, 7
    assert quadrant_levels(images / "bright" / "0.png") == [250, 230, 210, 60]
    assert quadrant_levels(images / "bright" / "1.png") == [240, 220, 200, 50]
    assert quadrant_levels(images / "dark" / "0.png") == [10, 30, 50, 200]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert distilled.shuffle_patch_factor == 2 and manifest["extra"]["shuffle_patch_factor"] == 2
    assert manifest["extra"]["scoring_teacher"]["arch"] == "brightness"
    assert manifest["config"]["mipc"] == 300  # more than the class has: all 12 images are scored


def test_factor_one_keeps_the_best_crops_whole(tmp_path):
    run(Greys(), tmp_path / "run", ipc=3)  # 8 px: the default factor is 1
    for index, level in enumerate([250, 240, 230]):
        pixels = np.asarray(Image.open(tmp_path / "run" / "images" / "bright" / f"{index}.png"))
        assert pixels.shape == (8, 8, 3) and (pixels == level).all()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["extra"]["shuffle_patch_factor"] == 1


def test_default_factor_follows_the_official_scripts_by_resolution():
    assert [default_factor(r) for r in (16, 32, 64, 128, 224)] == [1, 1, 1, 2, 2]


def test_draws_are_seeded(tmp_path):
    dataset = ColourSquares()
    teacher = brightness_teacher(2)
    teacher.model[0] = nn.Conv2d(3, dataset.num_classes, 1)  # any fixed teacher of the right width
    with torch.no_grad():
        teacher.model[0].weight.copy_(torch.linspace(-1, 1, 3 * dataset.num_classes).view(dataset.num_classes, 3, 1, 1))
        teacher.model[0].bias.zero_()
    teacher.num_classes = dataset.num_classes
    overrides = {"mipc": "10", "num_crop": "3", "factor": "2"}
    first = run(dataset, tmp_path / "a", ipc=2, overrides=overrides, teacher=teacher)
    again = run(dataset, tmp_path / "b", ipc=2, overrides=overrides, teacher=teacher)
    other = run(dataset, tmp_path / "c", ipc=2, overrides=overrides, seed=1, teacher=teacher)
    assert first.content_hash == again.content_hash != other.content_hash


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="lower --ipc"):  # 4 x 2^2 = 16 patches from 12 images
        run(Greys(), tmp_path / "a", ipc=4, overrides={"factor": "2"})
    with pytest.raises(ConfigError, match="--teachers"):
        distill(build_plugin(Rded, Greys(), {}), Greys(), 1, 0, tmp_path / "b", torch.device("cpu"), None, NullProgress())
    with pytest.raises(ConfigError, match="3 classes"):
        teacher = brightness_teacher(2)
        teacher.num_classes = 3
        run(Greys(), tmp_path / "c", ipc=1, teacher=teacher)
