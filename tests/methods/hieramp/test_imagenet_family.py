"""The ImageNet-family path end to end, on tiny models served under the release's file names by a
loopback hub: `ddbench hieramp finetune --dataset woof` starts from var_d16 (weights table), tunes
class tokens with ImageNet-1K labels, and caches the result where `ddbench run --method hieramp
--dataset woof` finds it; the distilled set's manifest names the ImageNet index of every class."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from ddbench.datasets.imagenet import ImageNette, ImageWoof
from tests.datasets.tiny_trees import make_wnid_tree
from tests.generators.hub_server import running_hub, serve_as
from tests.methods.hieramp.helpers import tiny_plain

WOOF_INDICES = [155, 159, 162, 167, 182, 193, 207, 229, 258, 273]
hub = pytest.fixture(running_hub)


def _bytes(state_dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


@pytest.fixture
def released(hub, monkeypatch):
    """Tiny 1,000-class VAR and its VQ-VAE, served as var_d16.pth and vae_ch160v4096z32.pth."""
    transformer, vqvae = tiny_plain(num_classes=1000)
    serve_as(hub, monkeypatch, "var_d16", _bytes(transformer.state_dict()))
    serve_as(hub, monkeypatch, "vae_ch160v4096z32", _bytes(vqvae.state_dict()))
    return hub


def _manifest(output: str) -> dict:
    folder = next(line.split("distilled set: ")[1].rsplit(" (", 1)[0] for line in output.splitlines()
                  if line.startswith("distilled set: "))
    return json.loads((Path(folder) / "manifest.json").read_text())


def test_woof_finetune_then_run_maps_classes_to_imagenet_indices(released, cli, tmp_path, isolated_home):
    root = make_wnid_tree(tmp_path / "imagewoof2", ImageWoof.wnids, train=4, val=2, size=(12, 10))
    tuned = cli("hieramp", "finetune", "--dataset", "woof", "--data-root", str(root), "--epochs", "0.5",
                "--batch-size", "8", "--lr", "2e-4", "--device", "cpu")
    assert tuned.exit_code == 0, tuned.output
    slot = isolated_home / "weights" / "ddbench/class-token-var" / "var_d16_cls_woof.pth"
    record = json.loads(slot.with_suffix(".json").read_text())
    assert list(record["generator_classes"]["classes"].values()) == WOOF_INDICES
    assert record["recipe"]["epochs"] == 0.5 and record["recipe"]["batch_size"] == 8  # explicit overrides win
    assert record["recipe"]["optim"]["lr"] == 2e-4 and record["recipe"]["optim"]["weight_decay"] == 0.05
    assert released.downloads("var_d16.pth") == 1 and released.downloads("vae_ch160v4096z32.pth") == 1

    result = cli("run", "--method", "hieramp", "--dataset", "woof", "--ipc", "1", "--data-root", str(root),
                 "--resolution", "16", "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = _manifest(result.output)
    classes = manifest["extra"]["generator_classes"]
    assert classes["label_space"] == "imagenet1k"
    assert classes["classes"] == dict(zip(sorted(ImageWoof.wnids), WOOF_INDICES))
    assert manifest["identity"]["weights"]["generator"] == record["sha256"]
    assert released.downloads("vae_ch160v4096z32.pth") == 1  # the cache served the second use


def test_plain_var_samples_the_released_model_with_imagenet_labels(released, cli, tmp_path):
    root = make_wnid_tree(tmp_path / "imagenette2", ImageNette.wnids, train=2, val=1, size=(12, 10))
    result = cli("run", "--method", "var", "--dataset", "nette", "--ipc", "2", "--data-root", str(root),
                 "--resolution", "16", "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    classes = _manifest(result.output)["extra"]["generator_classes"]["classes"]
    assert classes == dict(zip(sorted(ImageNette.wnids), ImageNette(resolution=16).imagenet1k_indices))


def test_without_a_finetune_the_run_says_which_command_makes_it_and_how_long(hub, cli, tmp_path):
    root = make_wnid_tree(tmp_path / "imagewoof2", ImageWoof.wnids, train=3, val=1)
    result = cli("run", "--method", "hieramp", "--dataset", "woof", "--ipc", "1", "--data-root", str(root),
                 "--evaluator", "hard_label", "--device", "cpu")
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert f"ddbench hieramp finetune --dataset woof --data-root {root}" in output
    assert "30 images x 10 epochs" in output and "on one A100" in output and "estimate from FLOPs" in output
    assert hub.requests == []  # nothing downloaded for a run that cannot start


def test_released_class_token_checkpoints_load_as_they_are(tmp_path, cli):
    from ddbench.methods.hieramp.model import load_class_token_var
    from tests.methods.hieramp.helpers import save_checkpoints, tiny_class_token

    model, vqvae = tiny_class_token(num_classes=1000)
    var_path, vqvae_path = save_checkpoints(tmp_path, model, vqvae)  # official layout: cls_tokens.{si}, class_head.*
    state = torch.load(var_path, weights_only=True)
    assert {f"cls_tokens.{si}" for si in range(4)} <= set(state) and "class_head.weight" in state
    loaded, _, had_tokens = load_class_token_var(var_path, vqvae_path, require_class_tokens=True)
    assert had_tokens and torch.equal(loaded.cls_tokens[2], model.cls_tokens[2])
    root = make_wnid_tree(tmp_path / "imagewoof2", ImageWoof.wnids, train=2, val=1, size=(12, 10))
    result = cli("run", "--method", "var-cls", "--dataset", "woof", "--ipc", "1", "--data-root", str(root),
                 "--resolution", "16", "--set", f"var_ckpt={var_path}", "--set", f"vqvae_ckpt={vqvae_path}",
                 "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert list(_manifest(result.output)["extra"]["generator_classes"]["classes"].values()) == WOOF_INDICES
