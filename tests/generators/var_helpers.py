"""Tiny VAR models for tests: seeded, random, in the official layout."""

from __future__ import annotations

import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import VARConfig, VQVAEConfig
from ddbench.generators.var.loading import build_var, build_vqvae

TINY_PATCH_NUMS = (1, 2, 3, 4)
TINY_VQVAE = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                         patch_nums=TINY_PATCH_NUMS)
TINY_VAR = VARConfig(depth=2, embed_dim=64, num_heads=2, num_classes=5, patch_nums=TINY_PATCH_NUMS)


def randomise(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Every float parameter drawn from N(0, std) with a seeded generator (no zero gammas)."""
    generator = torch_generator(seed, "test-randomise")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def tiny_models(seed: int = 0):
    """(transformer, vqvae) in eval mode, on an 8x8 image -> 4x4 latent, scales 1,2,3,4."""
    vqvae = build_vqvae(TINY_VQVAE)
    randomise(vqvae, seed)
    transformer = build_var(TINY_VAR, TINY_VQVAE)
    transformer.init_weights(torch_generator(seed, "test-init"))
    randomise(transformer, seed + 1, std=0.1)
    with torch.no_grad():  # a peaked codebook distribution, so sampling is not uniform noise
        transformer.head.weight.mul_(20)
    return transformer.eval(), vqvae.eval()
