"""Codecs: the digits codec recovers the 8x8 scans behind the 16 px digits; the SD VAE wrapper scales as
the release; a missing diffusion extra is one clear error naming the command and the fix."""

from __future__ import annotations

import sys

import pytest
import torch

from ddbench.core.errors import CheckpointError
from ddbench.generators.dit.codecs import BilinearCodec, SDVAECodec, load_sd_vae, make_codec, to_uint8


def test_bilinear_codec_recovers_the_digit_scans():
    from sklearn.datasets import load_digits

    from ddbench.datasets.digits import _load_arrays

    images, _ = _load_arrays()  # (N, 16, 16, 3) uint8, bilinear 2x of the 8x8 scans
    signed = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    codec = BilinearCodec(2)
    latents = codec.encode(signed)
    scans = torch.tensor(load_digits().images).float() / 16 * 2 - 1
    assert latents.shape == (len(images), 3, 8, 8)
    assert (latents[:, 0] - scans).abs().max() < 0.02  # the uint8 rounding of the 16 px images
    roundtrip = to_uint8(codec.decode(latents)).int()
    assert (roundtrip - torch.from_numpy(images).int()).abs().max() <= 1


def test_fixed_codecs_by_name():
    assert make_codec("pixels").encode(torch.ones(1, 3, 4, 4)).shape == (1, 3, 4, 4)
    with pytest.raises(CheckpointError, match="unknown fixed codec"):
        make_codec("vq")


def test_sd_vae_codec_scales_latents_as_the_release():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(32,), layers_per_block=1, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    codec = SDVAECodec(vae)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    latents = codec.encode(images, generator=torch.Generator().manual_seed(3))
    again = codec.encode(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(latents, again)  # the posterior sample is seeded
    mean = vae.encode(images).latent_dist.mean * 0.18215
    assert not torch.equal(latents, mean)
    torch.testing.assert_close(codec.decode(latents), vae.decode(latents / 0.18215).sample)


def test_missing_diffusion_extra_names_the_command_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.setitem(sys.modules, "diffusers.models", None)
    with pytest.raises(CheckpointError, match=r"ddbench minimax finetune needs diffusers.*pip install 'ddbench\[diffusion\]'"):
        load_sd_vae("mse", needed_by="ddbench minimax finetune")
