"""VAR: a multi-scale VQ-VAE and a next-scale transformer, compatible with the official release.

Public API:
    load_vqvae(source, patch_nums=None, device="cpu") -> VQVAE
    load_var(source, vqvae, device="cpu") -> (VARTransformer, VQVAE)
    load_digits_models(device="cpu") -> (VARTransformer, VQVAE)   # weights shipped in the package
    sample_images(transformer, vqvae, labels, cfg=1.5, top_k=900, top_p=0.96, generator=None) -> (B,3,H,W) in [0,1]
`source` is a local path, a state dict, a weights-table name ("var_d16", see ddbench.generators.weights)
or a hub id such as "FoundationVision/var/var_d16.pth" (both resolved through the weights table).
"""

from ddbench.generators.var.attention import KVCache, SelfAttention
from ddbench.generators.var.configs import PRESETS, VARConfig, VARPreset, VQVAEConfig, get_preset
from ddbench.generators.var.loading import build_var, build_vqvae, load_var, load_vqvae, release_manifest
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler, sample_images
from ddbench.generators.var.shipped import load_digits_models
from ddbench.generators.var.transformer import VARTransformer
from ddbench.generators.var.vqvae import VQVAE

__all__ = [
    "KVCache", "SelfAttention", "PRESETS", "VARConfig", "VARPreset", "VQVAEConfig", "get_preset", "build_var",
    "build_vqvae", "load_var", "load_vqvae", "release_manifest", "SamplingOptions", "ScaleSampler", "sample_images",
    "load_digits_models", "VARTransformer", "VQVAE",
]
