"""Training: losses go down, an interrupted run resumes to the same weights, the CLI group works."""

from __future__ import annotations

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ddbench.core.errors import CheckpointError
from ddbench.generators.var.configs import TrainConfig, VARPreset
from ddbench.generators.var.training import train_var, train_vqvae
from ddbench.training import with_settings
from tests.generators.var_helpers import TINY_VAR, TINY_VQVAE

TINY_PRESET = VARPreset(
    name="tiny", dataset="synthetic", resolution=8, vqvae=TINY_VQVAE, var=TINY_VAR,
    vqvae_train=with_settings(TrainConfig(), steps=4, batch_size=8, lr=2e-3, warmup_steps=2, checkpoint_every=2,
                              weight_decay=0.0),
    var_train=with_settings(TrainConfig(), steps=4, batch_size=8, lr=2e-3, warmup_steps=2, checkpoint_every=2),
)


def _synthetic_set(count: int = 24) -> list:
    """Class c: a bright square at a class-dependent place, 8x8 RGB."""
    items = []
    for index in range(count):
        label = index % 5
        canvas = np.zeros((8, 8, 3), dtype=np.uint8)
        canvas[label:label + 3, 2:5] = 255
        items.append((Image.fromarray(canvas), label))
    return items


@pytest.fixture(scope="module")
def trained_vqvae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-vqvae")
    data = _synthetic_set()
    train_vqvae(TINY_PRESET, data, data, folder)
    return folder / "vqvae.pth"


def _weights(path) -> dict:
    return torch.load(path, weights_only=True)


def test_interrupted_vqvae_training_resumes_to_the_same_weights(tmp_path):
    data = _synthetic_set()
    whole = train_vqvae(TINY_PRESET, data, data, tmp_path / "whole")
    first = train_vqvae(TINY_PRESET, data, data, tmp_path / "split", stop_after=2)
    assert not first["finished"] and not (tmp_path / "split" / "vqvae.pth").exists()
    resumed = train_vqvae(TINY_PRESET, data, data, tmp_path / "split")
    assert resumed["resumed_from"] == 2 and resumed["finished"]
    a, b = _weights(tmp_path / "whole" / "vqvae.pth"), _weights(tmp_path / "split" / "vqvae.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(whole["val_psnr_db"])


def test_var_training_resumes_and_refuses_a_foreign_checkpoint(tmp_path, trained_vqvae):
    data = _synthetic_set()
    whole = train_var(TINY_PRESET, data, trained_vqvae, tmp_path / "whole")
    train_var(TINY_PRESET, data, trained_vqvae, tmp_path / "split", stop_after=2)
    resumed = train_var(TINY_PRESET, data, trained_vqvae, tmp_path / "split")
    assert resumed["resumed_from"] == 2 and whole["tokens_per_step"] == 8 * 30
    a, b = _weights(tmp_path / "whole" / "var.pth"), _weights(tmp_path / "split" / "var.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = TrainConfig(steps=7, batch_size=8, checkpoint_every=2)
    with pytest.raises(CheckpointError, match="another configuration"):
        train_var(TINY_PRESET, data, trained_vqvae, tmp_path / "split", train_config=other)


def test_token_loss_decreases_on_a_learnable_set(tmp_path, trained_vqvae):
    data = _synthetic_set()
    short = train_var(TINY_PRESET, data, trained_vqvae, tmp_path / "a",
                      train_config=TrainConfig(steps=1, batch_size=16, warmup_steps=1))
    longer = train_var(TINY_PRESET, data, trained_vqvae, tmp_path / "b",
                       train_config=with_settings(TrainConfig(), steps=25, batch_size=16, lr=3e-3, warmup_steps=5))
    assert longer["token_loss"] < 0.8 * short["token_loss"]


def test_cli_group_trains_digits_for_a_few_steps(tmp_path):
    from ddbench.generators.var.commands import var_group

    assert isinstance(var_group, click.Group) and var_group.name == "var"
    assert {"train-vqvae", "train"} <= set(var_group.commands)
    runner = CliRunner()
    out = str(tmp_path / "digits")
    result = runner.invoke(var_group, ["train", "--out", out, "--steps", "1", "--device", "cpu"])
    assert result.exit_code != 0 and "train-vqvae" in str(result.exception)
    result = runner.invoke(var_group, ["train-vqvae", "--out", out, "--steps", "2", "--batch-size", "4", "--device", "cpu"],
                           catch_exceptions=False)
    assert result.exit_code == 0 and '"val_psnr_db"' in result.output
    result = runner.invoke(var_group, ["train", "--out", out, "--steps", "2", "--batch-size", "4", "--device", "cpu"],
                           catch_exceptions=False)
    assert result.exit_code == 0 and '"token_loss"' in result.output
