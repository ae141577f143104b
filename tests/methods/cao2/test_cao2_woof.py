"""`cao2 --dataset woof` on tiny models served under the release's file names by a loopback hub: the DiT
(dit_xl_2_256), the SD VAE (sd_vae_ft_mse) and the ImageNet ResNet-18 scorer (resnet18_tv_in1k) resolve
through the weights table, classes map to ImageNet-1K indices, the manifest and the run identity name
the scorer; offline without weights, the one-line error of `dit`."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from ddbench.datasets.imagenet import ImageWoof
from ddbench.generators.dit.config import DiTConfig
from tests.datasets.tiny_trees import make_wnid_tree
from tests.generators.dit.helpers import offline_error_lines, tiny_model
from tests.generators.hub_server import running_hub
from tests.methods.cao2 import tiny as T
from tests.methods.hieramp.test_imagenet_family import _bytes, _manifest  # the same served-release helpers

WOOF_INDICES = [155, 159, 162, 167, 182, 193, 207, 229, 258, 273]
#: a released width (384: 6 heads) so the release loader infers it, at a tiny depth and grid
TINY_RELEASE = DiTConfig(input_size=8, patch_size=4, in_channels=4, hidden_size=384, depth=1, num_heads=6,
                         num_classes=1000, gamma_blocks=0)
hub = pytest.fixture(running_hub)


def _serve(server, monkeypatch, name: str, payloads: dict[str, bytes], repo: str) -> None:
    """Serve `payloads` as row `name`'s files (on the hub or, for a url_base row, the same server)."""
    from ddbench.generators import weights
    from ddbench.generators.weights import WeightFile

    entry = weights.TABLE[name]
    for filename, payload in payloads.items():
        server.add(repo, filename, payload)
    files = tuple(WeightFile(f, len(p), hashlib.sha256(p).hexdigest()) for f, p in payloads.items())
    where = {"repo_id": repo} if entry.repo_id else {"url_base": f"{server.endpoint}/{repo}/resolve/main"}
    monkeypatch.setitem(weights.TABLE, name, dataclasses.replace(entry, files=files, **where))


@pytest.fixture
def released(hub, monkeypatch):
    import torchvision
    from safetensors.torch import save as save_safetensors

    dit = tiny_model(TINY_RELEASE, seed=3)
    with torch.no_grad():
        dit.final_layer.linear.weight.mul_(0.1)
    _serve(hub, monkeypatch, "dit_xl_2_256", {"DiT-XL-2-256x256.pt": _bytes(dit.state_dict())}, "facebook/DiT")
    vae = T.DATA / "tiny_vae"
    _serve(hub, monkeypatch, "sd_vae_ft_mse", {f.name: f.read_bytes() for f in sorted(vae.iterdir())},
           "stabilityai/sd-vae-ft-mse")
    torch.manual_seed(0)
    scorer = torchvision.models.resnet18(weights=None, num_classes=1000)
    _serve(hub, monkeypatch, "resnet18_tv_in1k", {"model.safetensors": save_safetensors(scorer.state_dict())},
           "timm/resnet18.tv_in1k")
    return hub


def test_woof_resolves_the_weights_maps_classes_and_records_the_scorer(released, cli, tmp_path):
    from ddbench.generators import weights

    root = make_wnid_tree(tmp_path / "imagewoof2", ImageWoof.wnids, train=2, val=1, size=(12, 10))
    result = cli("run", "--method", "cao2", "--dataset", "woof", "--ipc", "1", "--data-root", str(root),
                 "--resolution", "16", "--evaluator", "hard_label", "--set", "epochs=1", "--set", "method.steps=8",
                 "--set", "method.refine_steps=2", "--set", "method.scorer_size=32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = _manifest(result.output)
    extra = manifest["extra"]
    assert extra["generator_classes"]["label_space"] == "imagenet1k"
    assert extra["generator_classes"]["classes"] == dict(zip(sorted(ImageWoof.wnids), WOOF_INDICES))
    scorer_sha = weights.TABLE["resnet18_tv_in1k"].files[0].sha256
    assert extra["scorer"]["scorer"] == "resnet18_tv_in1k" and extra["scorer"]["sha256"] == scorer_sha
    assert extra["scorer"]["input"] == "raw" and extra["candidates_per_class"] == 4
    assert extra["refine_timesteps"] == [1]  # range(1, 8 // 4)
    identity = manifest["identity"]["weights"]
    assert identity["scorer"] == scorer_sha and "teacher" not in identity  # no teacher trained for woof
    assert identity["generator"] == weights.TABLE["dit_xl_2_256"].files[0].sha256
    for name in ("DiT-XL-2-256x256.pt", "diffusion_pytorch_model.safetensors", "model.safetensors"):
        assert released.downloads(name) == 1
    assert len(manifest["files"]) == 10


def test_without_weights_offline_the_same_one_line_error_as_dit(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = offline_error_lines(cli, tmp_path, ("dit", "cao2"), ipc=1)
    assert len(lines["cao2"]) == 1 and lines["cao2"] == lines["dit"]
    assert "dit_xl_2_256 is not in the cache" in lines["cao2"][0]


def test_the_scorer_alone_missing_offline_is_one_line_too(released, cli, tmp_path, monkeypatch):
    from ddbench.core.errors import FetchError
    from ddbench.core.interfaces import DistillTask
    from ddbench.core.pipeline import build_plugin
    from ddbench.methods.cao2 import CaO2

    woof = ImageWoof(resolution=16)
    method = build_plugin(CaO2, woof, {"steps": "8"})
    assert not method.needs_teacher and method.config.scorer == "resnet18_tv_in1k"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(type(method), "load_model", lambda self, task: (tiny_model(TINY_RELEASE, 3), None, {"weights": "x"}))
    with pytest.raises(FetchError, match="resnet18_tv_in1k is not in the cache and HF_HUB_OFFLINE=1") as error:
        method.prepare(DistillTask(woof, 1, 0, torch.device("cpu"), writer=None))
    assert "\n" not in str(error.value) and "--set scorer=FILE" in str(error.value)
