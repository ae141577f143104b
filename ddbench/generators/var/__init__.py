"""VAR: a multi-scale VQ-VAE and a next-scale transformer, compatible with the official release.

Public API:
    load_vqvae(source, patch_nums=None, device="cpu") -> VQVAE
    load_var(source, vqvae, device="cpu") -> (VARTransformer, VQVAE)
    load_digits_models(device="cpu") -> (VARTransformer, VQVAE)   # weights shipped in the package
    sample_images(transformer, vqvae, labels, cfg=1.5, top_k=900, top_p=0.96, generator=None) -> (B,3,H,W) in [0,1]
`source` is a local path, a state dict, a weights-table name ("var_d16", see ddbench.generators.weights)
or a hub id such as "FoundationVision/var/var_d16.pth" (both resolved through the weights table).
Names import on first use, so the CLI can load the `var` command group without torch.
"""

from ddbench.core.lazy import lazy_exports

_EXPORTS = {
    "KVCache": "attention", "SelfAttention": "attention",
    "PRESETS": "configs", "VARConfig": "configs", "VARPreset": "configs", "VQVAEConfig": "configs", "get_preset": "configs",
    "build_var": "loading", "build_vqvae": "loading", "load_var": "loading", "load_vqvae": "loading",
    "release_manifest": "loading",
    "SamplingOptions": "sampling", "ScaleSampler": "sampling", "sample_images": "sampling",
    "load_digits_models": "shipped",
    "VARTransformer": "transformer",
    "VQVAE": "vqvae",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
