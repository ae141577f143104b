"""The seeded tiny models the CaO2 reference numbers were recorded on (files in data/, < 1 MB):
a 1,000-class DiT in the official key layout (latents 4x8x8), a diffusers AutoencoderKL without
downsampling (8 px images) and a 1,000-way scorer on pooled colours, tuned so that some candidates
are predicted correctly and some not (both selection branches run)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ddbench.generators.dit.config import DiTConfig

DATA = Path(__file__).parent / "data"
#: the official DiT at a tiny size: 1,000 classes + null (upstream hard-codes the null label 1000)
TINY_DIT = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                     num_classes=1000, gamma_blocks=0)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,), layers_per_block=1,
                latent_channels=4, norm_num_groups=4, sample_size=8)


class TinyScorer(nn.Module):
    """logits = W [mean colour, colour std] + b over 1,000 classes (stands in for the ImageNet ResNet-18)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return self.head(torch.cat([flat.mean(-1), flat.std(-1)], dim=1))


def load_tiny_dit():
    from ddbench.generators.dit.loading import load_dit

    return load_dit(DATA / "tiny_dit.pt", num_heads=TINY_DIT.num_heads)


def load_tiny_vae():
    from diffusers.models import AutoencoderKL

    return AutoencoderKL.from_pretrained(DATA / "tiny_vae").eval()


def load_tiny_scorer(script: str) -> TinyScorer:
    """The scorer of one recorded script (sample_woof, sample_imagenet100): tuned on its candidates."""
    scorer = TinyScorer()
    scorer.load_state_dict(torch.load(DATA / f"tiny_scorer_{script}.pt", weights_only=True))
    return scorer.eval()
