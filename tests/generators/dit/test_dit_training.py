"""Plain DiT training on the shared step loop: an interrupted run resumes exactly and writes the official layout."""

from __future__ import annotations

import torch

from ddbench.generators.dit.training import DiTPreset, DiTTrainConfig, train_dit
from tests.generators.dit.helpers import TRAIN_TINY as TINY
from tests.generators.dit.helpers import tiny_image_set as tiny_dataset


def test_small_dit_training_resumes_exactly(tmp_path):
    preset = DiTPreset("tiny", "tiny", 8, TINY, DiTTrainConfig(steps=6, batch_size=4, warmup_steps=2, checkpoint_every=2))
    full = train_dit(preset, tiny_dataset(), tmp_path / "full")
    train_dit(preset, tiny_dataset(), tmp_path / "cut", stop_after=3)
    resumed = train_dit(preset, tiny_dataset(), tmp_path / "cut")
    assert full["finished"] and resumed["resumed_from"] == 3
    a = torch.load(tmp_path / "full" / "dit.pth", weights_only=True)
    b = torch.load(tmp_path / "cut" / "dit.pth", weights_only=True)
    assert not any("gamma" in key for key in a)  # the plain official layout
    assert all(torch.equal(a[k], b[k]) for k in a)
