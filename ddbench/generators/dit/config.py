"""DiT shapes: the released DiT-XL/2 and the small digits model, plus how to read a shape off a checkpoint.

Key names and sizes follow facebookresearch/DiT (`DiT-XL-2-256x256.pt`: 292 keys, 675,129,632
parameters including the fixed sin-cos `pos_embed`). Minimax (vimar-gu/MinimaxDiffusion) adds DiffFit
scale parameters ("gammas") to the first 14 blocks; they are 1 in a checkpoint that lacks them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the official DiT's frequency embedding width of the timestep MLP input
TIMESTEP_FREQUENCIES = 256
#: Minimax puts gammas on blocks [0, 14) (`use_gamma = [True] * 14 + [False] * 14`)
MINIMAX_GAMMA_BLOCKS = 14
#: the SD VAE's latent scale used by DiT and Minimax (`x * 0.18215` after encoding)
SD_VAE_SCALE = 0.18215
#: head counts of the released model family, by width (heads are not visible in a state dict)
HEADS_BY_WIDTH = {1152: 16, 1024: 16, 768: 12, 384: 6}


@dataclass(frozen=True)
class DiTConfig:
    """One DiT: latent grid `input_size` (256 px / 8 = 32 for the release), patch, widths, classes."""

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    learn_sigma: bool = True
    class_dropout_prob: float = 0.1
    gamma_blocks: int = MINIMAX_GAMMA_BLOCKS  # blocks [0, gamma_blocks) carry DiffFit gammas

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @property
    def null_class(self) -> int:
        """The label of the unconditional branch: the number of classes (Minimax's sample.py)."""
        return self.num_classes


#: DiT-XL/2 at 256 px on the SD VAE's 32x32x4 latents, as released
DIT_XL_2_256 = DiTConfig()
