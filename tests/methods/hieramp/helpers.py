"""Tiny random VAR models (scales 1,2,3,4 on an 8 px image) with and without class tokens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.loading import build_var, build_vqvae
from ddbench.methods.hieramp.model import ClassTokenVAR, load_class_token_var
from tests.generators.var_helpers import TINY_VAR, TINY_VQVAE, randomise


def tiny_plain(num_classes: int = 5, seed: int = 0):
    """(VARTransformer, VQVAE) in eval mode, every weight random (no zero gammas)."""
    vqvae = build_vqvae(TINY_VQVAE)
    randomise(vqvae, seed)
    transformer = build_var(replace(TINY_VAR, num_classes=num_classes), TINY_VQVAE)
    randomise(transformer, seed + 1, std=0.1)
    with torch.no_grad():
        transformer.head.weight.mul_(20)  # a peaked codebook distribution
    return transformer.eval(), vqvae.eval()


def tiny_class_token(num_classes: int = 5, seed: int = 0) -> tuple[ClassTokenVAR, object]:
    """A ClassTokenVAR whose class tokens are large enough to matter."""
    transformer, vqvae = tiny_plain(num_classes, seed)
    model, vqvae, _ = load_class_token_var(transformer.state_dict(), vqvae, init_seed=seed)
    with torch.no_grad():
        generator = torch_generator(seed, "test-class-tokens")
        for token in model.cls_tokens:
            token.copy_(torch.randn(token.shape, generator=generator))
    return model, vqvae


def save_checkpoints(folder: Path, model, vqvae) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    var_path, vqvae_path = folder / "var.pth", folder / "vqvae.pth"
    torch.save(model.state_dict(), var_path)
    torch.save(vqvae.state_dict(), vqvae_path)
    return var_path, vqvae_path
