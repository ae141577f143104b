"""DiT (facebookresearch/DiT) as released (and as Minimax diffusion samples it).

Public API:
    load_dit(source, num_heads=None, device="cpu") -> DiT   # official .pt, diffusers folder or hub id
    DiTSampler(model, SamplingOptions(steps=50, cfg=4.0)).sample_latents(labels, generators)
    GaussianDiffusion(sampling_steps=None|50)               # the respaced DDPM of the release
    load_digits_dit()                                        # the small digits model shipped in the package
Minimax's objective and fine-tune are Minimax's: `ddbench.methods.minimax`.
Names import on first use, so the CLI can load the command group without torch.
"""

from ddbench.core.lazy import lazy_exports

_EXPORTS = {
    "DIT_XL_2_256": "config", "DiTConfig": "config",
    "GaussianDiffusion": "diffusion",
    "infer_dit_config": "loading", "load_dit": "loading", "read_dit_weights": "loading",
    "DiT": "model",
    "DiTSampler": "sampling", "SamplingOptions": "sampling", "guided_output": "sampling",
    "load_digits_dit": "shipped",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
