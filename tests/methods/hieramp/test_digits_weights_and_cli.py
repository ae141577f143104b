"""Digits weights: fine-tuned once on first use and cached when none are shipped; the finetune command."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from ddbench.core import registry
from ddbench.core.progress import RecordingProgress
from ddbench.generators import weights as table
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
    for row, folder in ((weights.DIGITS_VAR_ROW, base_dir), (weights.DIGITS_VQVAE_ROW, base_dir),
                        (weights.DIGITS_CLASS_TOKEN_ROW, tmp_path / "no-shipped-weights")):
        monkeypatch.setitem(table.TABLE, row, dataclasses.replace(table.TABLE[row], shipped_in=str(folder)))
    monkeypatch.setattr(weights, "load_digits_models", lambda device="cpu": tiny_plain(num_classes=2))
    monkeypatch.setattr(registry, "create_dataset", lambda name, root=None: TwoColours())
    monkeypatch.setattr(weights, "DIGITS_FINETUNE", TINY_RECIPE)
    return plain


def test_without_shipped_weights_digits_fine_tunes_once_and_caches(tiny_digits_base, monkeypatch):
    progress = RecordingProgress()
    model, _, info = weights.load_digits_class_token_models(progress=progress)
    assert info["weights"] == "cached" and any("fine-tuning once" in m for m in progress.messages)
    sidecar = json.loads((weights.FIRST_USE.cache_folder() / weights.SIDECAR).read_text())
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


def test_identity_of_a_digits_class_token_var_still_to_be_made(isolated_home, monkeypatch):
    """Shipped file of another VQ-VAE: the identity names what it will be made from, with the value the
    code gave since the fine-tune recipe embeds the one OptimizerRecipe (it hashes the recipe's fields:
    220026690be65122 while the optimiser fields were flat; the recipe's values did not change)."""
    monkeypatch.setattr(weights, "FIRST_USE", dataclasses.replace(weights.FIRST_USE, recorded_base=lambda path: "other"))
    assert weights.DIGITS_CLASS_TOKEN_VAR.identity() == {
        "generator": "to-finetune:8e18ae736c17062e",
        "vqvae": "460133ef8d264a51047794beeee0132bce03c0b1019f53159152d46926dc5971"}
    assert weights.FIRST_USE.cache_folder() == isolated_home / "cache" / "hieramp" / "digits" / "460133ef8d264a51"
