"""DiT (facebookresearch/DiT) and Minimax diffusion (vimar-gu/MinimaxDiffusion) as released.

Public API:
    load_dit(source, num_heads=None, device="cpu") -> DiT   # official .pt, diffusers folder or hub id
    DiTSampler(model, SamplingOptions(steps=50, cfg=4.0)).sample_latents(labels, generators)
    GaussianDiffusion(sampling_steps=None|50)               # the respaced DDPM of the release
    MinimaxObjective, minimax_trainable                      # Minimax fine-tuning
"""

from ddbench.generators.dit.config import DIT_XL_2_256, DiTConfig
from ddbench.generators.dit.diffusion import GaussianDiffusion
from ddbench.generators.dit.loading import infer_dit_config, load_dit, read_dit_weights
from ddbench.generators.dit.minimax import MinimaxObjective, MinimaxWeights, minimax_trainable
from ddbench.generators.dit.model import DiT
from ddbench.generators.dit.sampling import DiTSampler, SamplingOptions, guided_output

__all__ = ["DIT_XL_2_256", "DiTConfig", "GaussianDiffusion", "infer_dit_config", "load_dit", "read_dit_weights",
           "MinimaxObjective", "MinimaxWeights", "minimax_trainable", "DiT", "DiTSampler", "SamplingOptions",
           "guided_output"]
