"""The ImageNet-family path of `d3hr` on tiny models served under the release's file names by a loopback
hub: `ddbench run --method d3hr --dataset woof` downloads dit_xl_2_256 and sd_vae_ft_ema through the
weights table, maps the woof classes to their ImageNet-1K labels and writes them into the manifest;
offline without weights it stops with the same one-line error as `dit`."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pytest
import torch

from ddbench.datasets.imagenet import ImageWoof
from ddbench.generators import weights
from ddbench.generators.dit import config as dit_config
from ddbench.generators.dit.loading import load_dit
from ddbench.generators.weights import WeightFile
from tests.datasets.tiny_trees import make_wnid_tree
from tests.generators.dit.helpers import offline_error_lines
from tests.generators.hub_server import running_hub
from tests.methods.d3hr import helpers as H

pytest.importorskip("diffusers")
WOOF_INDICES = [155, 159, 162, 167, 182, 193, 207, 229, 258, 273]
hub = pytest.fixture(running_hub)


@pytest.fixture
def released(hub, monkeypatch):
    """The tiny 1,000-class DiT (official layout) as DiT-XL-2-256x256.pt, the tiny VAE as sd-vae-ft-ema."""
    buffer = io.BytesIO()
    torch.save({k: v for k, v in load_dit(H.DATA / "dit").state_dict().items() if "gamma" not in k}, buffer)
    payload = buffer.getvalue()
    entry = weights.TABLE["dit_xl_2_256"]
    filename = entry.files[0].filename
    hub.add("facebook/DiT", filename, payload)
    monkeypatch.setitem(weights.TABLE, "dit_xl_2_256", dataclasses.replace(
        entry, url_base=f"{hub.endpoint}/facebook/DiT/resolve/main", files=(WeightFile(filename, len(payload)),)))
    monkeypatch.setitem(dit_config.HEADS_BY_WIDTH, 32, 2)  # the tiny width's heads (the release's are known)
    vae = weights.TABLE["sd_vae_ft_ema"]
    files = []
    for weight_file in vae.files:
        data = (H.DATA / "vae" / weight_file.filename).read_bytes()
        hub.add(vae.repo_id, weight_file.filename, data)
        files.append(WeightFile(weight_file.filename, len(data), hashlib.sha256(data).hexdigest()))
    monkeypatch.setitem(weights.TABLE, "sd_vae_ft_ema", dataclasses.replace(vae, files=tuple(files)))
    return hub, files[-1].sha256


def _manifest(output: str) -> dict:
    folder = next(line.split("distilled set: ")[1].rsplit(" (", 1)[0] for line in output.splitlines()
                  if line.startswith("distilled set: "))
    return json.loads((Path(folder) / "manifest.json").read_text())


def test_woof_run_resolves_the_release_and_maps_classes(released, cli, tmp_path):
    server, vae_sha = released
    root = make_wnid_tree(tmp_path / "imagewoof2", ImageWoof.wnids, train=3, val=1, size=(12, 10))
    result = cli("run", "--method", "d3hr", "--dataset", "woof", "--ipc", "2", "--data-root", str(root),
                 "--resolution", "16", "--set", "groups=20", "--set", "groups_per_batch=10", "--evaluator", "hard_label",
                 "--set", "epochs=1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = _manifest(result.output)
    classes = manifest["extra"]["generator_classes"]
    assert classes["label_space"] == "imagenet1k"
    assert classes["classes"] == dict(zip(sorted(ImageWoof.wnids), WOOF_INDICES))
    assert manifest["extra"]["group_sampling"]["groups_per_class"] == 20 and manifest["config"]["vae"] == "ema"
    assert manifest["identity"]["weights"]["vae"] == vae_sha
    assert server.downloads("DiT-XL-2-256x256.pt") == 1 and server.downloads("diffusion_pytorch_model.safetensors") == 1
    assert manifest["complete"]


def test_offline_without_weights_stops_with_the_same_line_as_dit(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = offline_error_lines(cli, tmp_path, ("dit", "d3hr"), ipc=2, marker="HF_HUB_OFFLINE=1")
    assert len(lines["d3hr"]) == 1 and "dit_xl_2_256 is not in the cache" in lines["d3hr"][0]
    assert lines["d3hr"] == lines["dit"]
