"""The public loaders: official-layout files of any size, clear errors for bad files, offline hub ids."""

from __future__ import annotations

import pytest
import torch

from ddbench.core.errors import CheckpointError, FetchError
from ddbench.generators.var import load_var, load_vqvae
from tests.generators.var_helpers import TINY_PATCH_NUMS, TINY_VAR, TINY_VQVAE, tiny_models


@pytest.fixture
def saved_tiny(tmp_path):
    transformer, vqvae = tiny_models()
    var_path, vqvae_path = tmp_path / "var_tiny.pth", tmp_path / "vae_tiny.pth"
    torch.save(transformer.state_dict(), var_path)
    torch.save(vqvae.state_dict(), vqvae_path)
    return transformer, vqvae, var_path, vqvae_path


def test_small_official_layout_files_load_with_inferred_shapes(saved_tiny):
    transformer, vqvae, var_path, vqvae_path = saved_tiny
    loaded, loaded_vqvae = load_var(var_path, vqvae=vqvae_path)
    assert loaded.config == TINY_VAR and loaded_vqvae.config == TINY_VQVAE
    assert loaded_vqvae.patch_nums == TINY_PATCH_NUMS
    for key, value in transformer.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(vqvae.image_to_indices(images), loaded_vqvae.image_to_indices(images)))


def test_state_dicts_and_loaded_models_are_accepted(saved_tiny):
    transformer, vqvae, _, _ = saved_tiny
    loaded_vqvae = load_vqvae(vqvae.state_dict(), patch_nums=TINY_PATCH_NUMS)
    loaded, same_vqvae = load_var(transformer.state_dict(), vqvae=loaded_vqvae)
    assert same_vqvae is loaded_vqvae and loaded.config.depth == 2


def test_missing_keys_are_named(saved_tiny, tmp_path):
    transformer, _, _, vqvae_path = saved_tiny
    state = transformer.state_dict()
    del state["blocks.1.ffn.fc2.weight"]
    state["blocks.1.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.1\.ffn\.fc2\.weight.*unexpected keys: blocks\.1\.extra"):
        load_var(state, vqvae=vqvae_path)


def test_wrong_shapes_are_named(saved_tiny):
    transformer, _, _, vqvae_path = saved_tiny
    state = transformer.state_dict()
    state["blocks.0.attn.proj.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"wrong shapes: blocks\.0\.attn\.proj\.bias"):
        load_var(state, vqvae=vqvae_path)


def test_truncated_file_fails_with_the_path(saved_tiny, tmp_path):
    _, _, var_path, vqvae_path = saved_tiny
    truncated = tmp_path / "var_truncated.pth"
    truncated.write_bytes(var_path.read_bytes()[: var_path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="var_truncated.pth.*truncated"):
        load_var(truncated, vqvae=vqvae_path)


def test_a_vqvae_file_passed_as_var_says_what_is_wrong(saved_tiny):
    _, _, _, vqvae_path = saved_tiny
    with pytest.raises(CheckpointError, match="not a VAR checkpoint.*missing keys: class_emb.weight"):
        load_var(vqvae_path, vqvae=vqvae_path)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vqvae(tmp_path / "nothing.pth")


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FetchError, match="var_d16 is not in the cache and HF_HUB_OFFLINE=1.*put var_d16.pth"):
        load_vqvae("FoundationVision/var/var_d16.pth")
