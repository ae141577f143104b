"""What the DiT denoises: SD-VAE latents (the release) or pixels (the small digits model).

A codec maps images in [-1, 1] (B, 3, H, W) to the DiT's input space and back.
- `SDVAECodec`: diffusers' `AutoencoderKL` (exact: it is the model the release calls), latents scaled
  by 0.18215; `encode` samples the posterior with a seeded generator (`latent_dist.sample()` upstream).
  Minimax samples with `stabilityai/sd-vae-ft-mse` (sample.py's default); ft-ema is the other option.
- `PixelCodec`: the identity, for models trained on pixels.
- `BilinearCodec`: half-size latents decoded by bilinear upsampling (the small digits model).
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
import torch.nn.functional as F

from ddbench.core.errors import CheckpointError
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators.dit.config import SD_VAE_SCALE

#: the SD VAEs by their sample.py names -> weights-table entries (stabilityai/sd-vae-ft-mse, -ema)
SD_VAE_ENTRIES = {"mse": "sd_vae_ft_mse", "ema": "sd_vae_ft_ema"}


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


class BilinearCodec:
    """Latents at 1/`factor` of the image side, decoded by bilinear upsampling (align_corners=False) and
    encoded by its least-squares inverse. Exact for images that are bilinear upsamplings, as the 16 px
    digits are of their 8x8 scans: the DiT then denoises the scans themselves."""

    def __init__(self, factor: int = 2):
        self.factor = self.downsample = factor
        self.name = f"bilinear{factor}x"
        self._inverse: dict[int, torch.Tensor] = {}

    def _pinv(self, side: int) -> torch.Tensor:
        """(side / factor, side) left inverse of the 1-D upsampling matrix (the 2-D map is separable)."""
        if side not in self._inverse:
            basis = torch.eye(side // self.factor, dtype=torch.float64)[:, None, None, :]
            upsample = F.interpolate(basis, size=(1, side), mode="bilinear", align_corners=False)[:, 0, 0, :].T
            self._inverse[side] = torch.linalg.pinv(upsample).float()
        return self._inverse[side]

    def encode(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        inverse = self._pinv(images.shape[-1]).to(images.device)
        return inverse @ images @ inverse.T

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.interpolate(latents, scale_factor=self.factor, mode="bilinear", align_corners=False)


CODECS = {"pixels": PixelCodec, "bilinear2x": lambda: BilinearCodec(2)}


def make_codec(name: str) -> Codec:
    """A fixed (weight-free) codec by name; the SD VAE comes from `load_sd_vae`."""
    if name not in CODECS:
        raise CheckpointError(f"unknown fixed codec {name!r}; use one of {', '.join(CODECS)}, or an SD VAE")
    return CODECS[name]()


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
                needed_by: str = "the SD VAE of a latent DiT (dit, minimax, hieramp-dit)",
                progress: Progress = NullProgress()) -> SDVAECodec:
    """`mse` / `ema` (the stabilityai repos, through the weights table: verified cache, else download),
    another hub id, or a local diffusers folder."""
    try:
        from diffusers.models import AutoencoderKL
    except ImportError as exc:
        raise diffusion_extra_error(needed_by) from exc
    if source in SD_VAE_ENTRIES:
        from ddbench.generators import weights

        location = str(weights.resolve_weights(SD_VAE_ENTRIES[source], progress=progress, option="--set vae=FOLDER"))
    else:
        location = source
    try:
        vae = AutoencoderKL.from_pretrained(location)
    except Exception as exc:
        raise CheckpointError(f"could not load the SD VAE {location!r} ({type(exc).__name__}); pass a local diffusers "
                              "folder (--set vae=FOLDER)") from exc
    return SDVAECodec(vae.to(device), name=source)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (B, 3, H, W) -> uint8 (B, H, W, 3), as torchvision's save_image(normalize, value_range=(-1, 1))."""
    unit = (images.float().clamp(-1, 1) + 1) / 2
    return unit.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
