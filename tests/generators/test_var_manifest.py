"""The full-size constructors match the key names and shapes of the official release files."""

from __future__ import annotations

import pytest
import torch

from ddbench.generators.var.configs import VARConfig, VQVAEConfig
from ddbench.generators.var.loading import build_var, build_vqvae, infer_var_config, infer_vqvae_config, release_manifest

MANIFEST = release_manifest()["models"]


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in module.state_dict().items()}


def _assert_same_layout(ours: dict, release: dict) -> None:
    assert sorted(set(release) - set(ours)) == [], "keys of the release our model lacks"
    assert sorted(set(ours) - set(release)) == [], "keys our model has that the release lacks"
    assert {k: v for k, v in ours.items() if release[k] != v} == {}


def test_vqvae_matches_release_manifest():
    model = build_vqvae(VQVAEConfig(), device="meta")
    entry = MANIFEST["vae_ch160v4096z32"]
    _assert_same_layout(_shapes(model), entry["state_dict"])
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_var_matches_release_manifest(depth):
    model = build_var(VARConfig.release(depth), VQVAEConfig(), device="meta")
    entry = MANIFEST[f"var_d{depth}"]
    _assert_same_layout(_shapes(model), entry["state_dict"])
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    if depth == 16:
        assert entry["parameters"] == 310_283_520


@pytest.mark.parametrize("depth", [16, 30])
def test_configs_are_inferred_from_release_shapes(depth):
    fake = {key: torch.empty(shape, device="meta") for key, shape in MANIFEST[f"var_d{depth}"]["state_dict"].items()}
    fake["lvl_1L"] = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(VARConfig().patch_nums)]).view(1, -1)
    config = infer_var_config(fake)
    assert (config.depth, config.embed_dim, config.num_heads, config.num_classes) == (depth, 64 * depth, depth, 1000)
    assert config.patch_nums == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    vae = {key: torch.empty(shape, device="meta") for key, shape in MANIFEST["vae_ch160v4096z32"]["state_dict"].items()}
    assert infer_vqvae_config(vae) == VQVAEConfig()


@pytest.mark.parametrize("name", ["digits", "cifar10", "woof"])
def test_small_presets_have_coarse_to_fine_pyramids_on_their_latent_grid(name):
    from ddbench.generators.var.configs import get_preset

    preset = get_preset(name)
    pyramid = preset.var.patch_nums
    assert len(pyramid) >= 6 and list(pyramid) == sorted(set(pyramid)) and pyramid[0] == 1
    assert pyramid[-1] * preset.vqvae.downsample == preset.resolution
    model = build_var(preset.var, preset.vqvae, device="meta")
    assert model.total_tokens == sum(side * side for side in pyramid)
