"""Digits weights: fine-tuned once on first use and cached when none are shipped; the finetune command."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ddbench.core import registry
from ddbench.core.progress import RecordingProgress
from ddbench.methods.hieramp import digits_weights as weights
from ddbench.methods.hieramp.commands import hieramp_group
from ddbench.methods.hieramp.finetune import FinetuneConfig
from tests.methods.hieramp.helpers import tiny_plain
from tests.methods.hieramp.test_method import TwoColours

TINY_RECIPE = FinetuneConfig(epochs=0.5, batch_size=8, checkpoint_every=1000)  # 3 steps over 48 images


@pytest.fixture
def tiny_digits_base(tmp_path, monkeypatch):
    """The generator's shipped digits weights replaced by a tiny 2-class model, the digits data by two
    colours (fast); nothing shipped in the hieramp package."""
    plain, vqvae = tiny_plain(num_classes=2)
    base_dir = tmp_path / "var-weights"
    base_dir.mkdir()
    torch.save(plain.state_dict(), base_dir / weights.SHIPPED_VAR)
    torch.save(vqvae.state_dict(), base_dir / weights.SHIPPED_VQVAE)
    monkeypatch.setattr(weights, "shipped_weights_dir", lambda: base_dir)
    monkeypatch.setattr(weights, "load_digits_models", lambda device="cpu": tiny_plain(num_classes=2))
    monkeypatch.setattr(registry, "create_dataset", lambda name, root=None: TwoColours())
    monkeypatch.setattr(weights, "weights_dir", lambda: tmp_path / "no-shipped-weights")
    monkeypatch.setattr(weights, "DIGITS_FINETUNE", TINY_RECIPE)
    return plain


def test_without_shipped_weights_digits_fine_tunes_once_and_caches(tiny_digits_base, monkeypatch):
    progress = RecordingProgress()
    model, _, info = weights.load_digits_class_token_models(progress=progress)
    assert info["weights"] == "cached" and any("fine-tuning once" in m for m in progress.messages)
    sidecar = json.loads((weights.cache_folder(weights.base_vqvae_sha256()) / weights.SIDECAR).read_text())
    assert sidecar["seed"] == 0 and sidecar["command"] == weights.REPRODUCE_COMMAND
    assert "class_head_val_accuracy" in sidecar["summary"]
    monkeypatch.setattr(weights, "finetune_digits", lambda *a, **k: pytest.fail("must come from the cache"))
    again, _, info = weights.load_digits_class_token_models()
    assert info["weights"] == "cached"
    assert torch.equal(again.state_dict()["cls_tokens.1"], model.state_dict()["cls_tokens.1"])


def test_finetune_command_needs_checkpoints_except_for_digits(tiny_digits_base, tmp_path):
    result = CliRunner().invoke(hieramp_group, ["finetune", "--dataset", "cifar10", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--from" in str(result.exception)
    result = CliRunner().invoke(hieramp_group, ["finetune", "--dataset", "digits", "--epochs", "0.5",
                                                "--batch-size", "8", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / weights.SHIPPED_FILE).is_file() and (tmp_path / "d" / weights.SIDECAR).is_file()
