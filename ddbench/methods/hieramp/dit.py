"""`hieramp-dit`: HIERAMP on a diffusion transformer (the paper's appendix B).

The appendix: "let A denote the attention output at a given transformer block. We apply spatially
guided scaling A' = A * (1 + alpha M), where M is the object region projected to the token space".
It does not say how M is found; DiT has no class token, so ddbench defines it as follows.

- Object evidence: where the class label changes the denoiser's prediction. At each step the sampler
  already computes the conditional and unconditional outputs for classifier-free guidance; their eps
  difference, eps_c - eps_u (all latent channels), is the class evidence of every latent pixel.
- Projection to token space: the L2 norm of that difference over each token's patch (p x p pixels,
  all channels), in the token order of the patch embedding: one saliency value per token.
- Region: as released HIERAMP selects keys, the top-k tokens by saliency, k = max(1, round(rho N)),
  give M = 1, the others M = 0 (rho 0.5 as released). One M per image, used by both CFG halves.
- When: M of step s comes from the outputs of step s-1 (no extra forward pass, so the overhead is a
  norm and a top-k per step); the first step is not amplified.
- Where: A is the block's attention output (after the projection and Minimax's gamma2, before the
  adaLN gate and the residual), in `amp_blocks` (default the second-to-last block, where released
  HIERAMP amplifies).
alpha is not given by the paper; 0 gives exactly `dit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ddbench.core.errors import ConfigError
from ddbench.core.interfaces import DistillTask
from ddbench.generators.dit.sampling_method import DiTSamplingConfig, DiTSamplingMethod
from ddbench.generators.dit.shipped import DIGITS_DIT_WEIGHTS


@dataclass
class HierAmpDiTConfig(DiTSamplingConfig):
    alpha: float = 1.0  # amplification strength: A' = A * (1 + alpha * M)
    rho: float = 0.5  # share of the tokens in the object region
    amp_blocks: tuple[int, ...] = (-2,)  # block indices, negative from the end


def token_saliency(difference: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) class evidence -> (B, N) per-token L2 norm, tokens in row-major patch order."""
    batch, channels, height, width = difference.shape
    patches = difference.reshape(batch, channels, height // patch_size, patch_size, width // patch_size, patch_size)
    return patches.permute(0, 2, 4, 1, 3, 5).flatten(3).norm(dim=-1).flatten(1)


def top_share_mask(saliency: torch.Tensor, rho: float) -> torch.Tensor:
    """(B, N) -> (B, N) float indicator of the k = max(1, round(rho N)) most salient tokens."""
    k = max(1, round(rho * saliency.shape[1]))
    mask = torch.zeros_like(saliency)
    return mask.scatter_(1, saliency.topk(k, dim=1).indices, 1.0)


class ObjectRegionAmplifier:
    """The sampler's step hook: observes each step's guidance difference, scales the next step's attention."""

    def __init__(self, alpha: float, rho: float, blocks: tuple[int, ...], patch_size: int, channels: int):
        self.alpha, self.rho, self.blocks = alpha, rho, blocks
        self.patch_size, self.channels = patch_size, channels
        self.mask: Optional[torch.Tensor] = None  # (B, N) of the last observed step
        self.masks: list[torch.Tensor] = []  # every step's M, for inspection

    def attention_scales(self, step: int) -> Optional[dict[int, torch.Tensor]]:
        if self.mask is None or self.alpha == 0:
            return None
        scale = (1 + self.alpha * self.mask).unsqueeze(-1)  # (B, N, 1)
        return {block: scale for block in self.blocks}

    def observe(self, step: int, conditional: torch.Tensor, unconditional: torch.Tensor) -> None:
        evidence = conditional[:, :self.channels] - unconditional[:, :self.channels]
        self.mask = top_share_mask(token_saliency(evidence, self.patch_size), self.rho)
        self.masks.append(self.mask)


class HierAmpDiT(DiTSamplingMethod):
    """`hieramp-dit`: plain DiT sampling with the attention output of `amp_blocks` scaled on the object region."""

    name = "hieramp-dit"
    source_modules = ("ddbench.methods.hieramp", "ddbench.generators.dit")  # the DiT sampler decides the images too
    Config = HierAmpDiTConfig
    default_weights = {"digits": DIGITS_DIT_WEIGHTS}  # the `dit` weights: the paper compares DiT with DiT + HIERAMP

    def prepare(self, task: DistillTask) -> None:
        config = self.config
        if not 0 < config.rho <= 1 or config.alpha < 0:
            raise ConfigError(f"hieramp-dit: need 0 < rho <= 1 and alpha >= 0, got rho={config.rho}, alpha={config.alpha}")
        super().prepare(task)
        depth = self.model.config.depth
        if not config.amp_blocks or any(not -depth <= block < depth for block in config.amp_blocks):
            raise ConfigError(f"hieramp-dit: amp_blocks {config.amp_blocks} out of range for a DiT of depth {depth}")
        self.blocks = tuple(sorted({block % depth for block in config.amp_blocks}))

    def guidance(self, batch_size: int) -> ObjectRegionAmplifier:
        config = self.model.config
        return ObjectRegionAmplifier(self.config.alpha, self.config.rho, self.blocks, config.patch_size, config.in_channels)
