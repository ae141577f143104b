"""What the DiT denoises: SD-VAE latents (the release) or pixels (the small digits model).

A codec maps images in [-1, 1] (B, 3, H, W) to the DiT's input space and back.
- `SDVAECodec`: diffusers' `AutoencoderKL` (exact: it is the model the release calls), latents scaled
  by 0.18215; `encode` samples the posterior with a seeded generator (`latent_dist.sample()` upstream).
  Minimax samples with `stabilityai/sd-vae-ft-mse` (sample.py's default); ft-ema is the other option.
- `PixelCodec`: the identity, for models trained on pixels.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from ddbench.core.errors import CheckpointError
from ddbench.generators.dit.config import SD_VAE_SCALE

SD_VAE_REPOS = {"mse": "stabilityai/sd-vae-ft-mse", "ema": "stabilityai/sd-vae-ft-ema"}


class Codec(Protocol):
    name: str
    downsample: int  # image side / latent side

    def encode(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class PixelCodec:
    """The DiT works on the images themselves, in [-1, 1]."""

    name, downsample = "pixels", 1

    def encode(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class SDVAECodec:
    """Stable Diffusion's KL autoencoder (8x down, 4 channels), latents * 0.18215 as DiT trains on them."""

    downsample = 8

    def __init__(self, vae, name: str = "sd-vae"):
        self.vae = vae.eval().requires_grad_(False)
        self.name = name

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.sample(generator=generator) * SD_VAE_SCALE

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / SD_VAE_SCALE).sample


def diffusion_extra_error(needed_by: str) -> CheckpointError:
    """The error for a missing `diffusion` extra, naming what needed it."""
    return CheckpointError(f"{needed_by} needs diffusers (the diffusion extra): pip install 'ddbench[diffusion]'")


def load_sd_vae(source: str = "mse", device: str | torch.device = "cpu",
                needed_by: str = "the SD VAE of a latent DiT (dit, minimax, hieramp-dit)") -> SDVAECodec:
    """`mse`, `ema` (the stabilityai repos), another hub id, or a local diffusers folder."""
    try:
        from diffusers.models import AutoencoderKL
    except ImportError as exc:
        raise diffusion_extra_error(needed_by) from exc
    repo = SD_VAE_REPOS.get(source, source)
    try:
        vae = AutoencoderKL.from_pretrained(repo)
    except Exception as exc:
        raise CheckpointError(f"could not load the SD VAE {repo!r} ({type(exc).__name__}); download it with "
                              f"`huggingface-cli download {repo}` or pass a local folder (--set vae=PATH)") from exc
    return SDVAECodec(vae.to(device), name=repo)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (B, 3, H, W) -> uint8 (B, H, W, 3), as torchvision's save_image(normalize, value_range=(-1, 1))."""
    unit = (images.float().clamp(-1, 1) + 1) / 2
    return unit.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
