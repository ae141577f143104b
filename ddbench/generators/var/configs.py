"""Model and training configurations: the official release shapes and the small presets we run here."""

from __future__ import annotations

from dataclasses import dataclass, field

from ddbench.training.optim import OptimizerRecipe, with_settings
from ddbench.training.schedule import WarmupCosine

RELEASE_PATCH_NUMS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
#: the stages of a scale pyramid, as the HIERAMP paper names them (its amplification and token diagnostics)
STAGES = ("coarse", "mid", "fine")


def stage_of_scale(scale_index: int, num_scales: int) -> int:
    """0 coarse, 1 mid, 2 fine: scales 1..N-1 split in three (N=10: 1-3, 4-6, 7-9); scale 0 -> coarse."""
    if scale_index <= 0:
        return 0
    return min(2, (scale_index - 1) * 3 // max(1, num_scales - 1))


@dataclass(frozen=True)
class VQVAEConfig:
    """Multi-scale VQ-VAE. The defaults are the release `vae_ch160v4096z32.pth`."""

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    using_sa: bool = True  # self-attention at the lowest resolution level
    using_mid_sa: bool = True  # self-attention in the middle block
    norm_groups: int = 32  # GroupNorm groups (not stored in checkpoints; the release uses 32)
    beta: float = 0.25  # commitment loss weight
    quant_resi: float = 0.5  # phi(h) = (1 - quant_resi) * h + quant_resi * conv(h)
    share_quant_resi: int = 4  # number of phi convolutions shared across the scales
    patch_nums: tuple[int, ...] = RELEASE_PATCH_NUMS

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class VARConfig:
    """Next-scale transformer. The defaults are the release `var_d16.pth` (width = 64 * depth)."""

    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    norm_eps: float = 1e-6
    cond_drop_rate: float = 0.1
    patch_nums: tuple[int, ...] = RELEASE_PATCH_NUMS

    @classmethod
    def release(cls, depth: int) -> "VARConfig":
        """The official shape for depth 16, 20, 24 or 30: width 64*depth, one head per 64 channels."""
        return cls(depth=depth, embed_dim=64 * depth, num_heads=depth)


#: VAR's optimiser (AdamW, betas 0.9/0.95, weight decay 0.05, grad-norm clip 2), in fp32 unless asked:
#: on CUDA bf16 (autocast) / fp16 (autocast + GradScaler) / auto (bf16 on CUDA, fp32 on CPU)
VAR_OPTIMIZER = OptimizerRecipe(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), grad_clip=2.0, precision="fp32")


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (VQ-VAE or VAR): its length, batch and optimiser, warm-up then cosine."""

    steps: int = 2000
    batch_size: int = 64
    optim: OptimizerRecipe = VAR_OPTIMIZER
    warmup_steps: int = 100
    checkpoint_every: int = 200
    seed: int = 0

    def schedule(self) -> WarmupCosine:
        """Linear warm-up, then a half cosine to a tenth of the peak lr."""
        return WarmupCosine(self.steps, self.warmup_steps, final_fraction=0.1)


@dataclass(frozen=True)
class VARPreset:
    """A small configuration for one dataset: image resolution, both models and their recipes."""

    name: str
    dataset: str
    resolution: int
    vqvae: VQVAEConfig
    var: VARConfig
    vqvae_train: TrainConfig = field(default_factory=TrainConfig)
    var_train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        latent = self.resolution // self.vqvae.downsample
        if self.vqvae.patch_nums[-1] != latent or self.var.patch_nums != self.vqvae.patch_nums:
            raise ValueError(f"preset {self.name}: the last scale must equal the latent size {latent}")


def _small(name: str, dataset: str, resolution: int, patch_nums: tuple[int, ...], vqvae: dict, var: dict,
           vqvae_train: dict, var_train: dict) -> VARPreset:
    return VARPreset(
        name=name,
        dataset=dataset,
        resolution=resolution,
        vqvae=VQVAEConfig(patch_nums=patch_nums, **vqvae),
        var=VARConfig(patch_nums=patch_nums, **var),
        vqvae_train=with_settings(TrainConfig(), **vqvae_train),
        var_train=with_settings(TrainConfig(), **var_train),
    )


PRESETS: dict[str, VARPreset] = {
    # 16 px digits -> 8x8 latent (downsample 2), 6 scales, 130 tokens per image.
    "digits": _small(
        "digits", "digits", 16, (1, 2, 3, 4, 6, 8),
        vqvae=dict(vocab_size=256, z_channels=16, ch=32, ch_mult=(1, 2), num_res_blocks=1),
        var=dict(depth=4, embed_dim=64, num_heads=4, num_classes=10),
        vqvae_train=dict(steps=1000, batch_size=32, lr=2e-3, weight_decay=0.0, warmup_steps=50),
        var_train=dict(steps=1500, batch_size=32, lr=2e-3, warmup_steps=100),
    ),
    # 32 px CIFAR-10 -> 8x8 latent (downsample 4), 7 scales.
    "cifar10": _small(
        "cifar10", "cifar10", 32, (1, 2, 3, 4, 5, 6, 8),
        vqvae=dict(vocab_size=1024, z_channels=32, ch=64, ch_mult=(1, 1, 2), num_res_blocks=2),
        var=dict(depth=8, embed_dim=384, num_heads=6, num_classes=10),
        vqvae_train=dict(steps=20000, batch_size=64, lr=2e-4, weight_decay=0.0, warmup_steps=500),
        var_train=dict(steps=30000, batch_size=64, lr=4e-4, warmup_steps=1000),
    ),
    # 64 px ImageWoof -> 16x16 latent (downsample 4), the release's 10 scales.
    "woof": _small(
        "woof", "woof", 64, RELEASE_PATCH_NUMS,
        vqvae=dict(vocab_size=4096, z_channels=32, ch=64, ch_mult=(1, 1, 2), num_res_blocks=2),
        var=dict(depth=8, embed_dim=512, num_heads=8, num_classes=10),
        vqvae_train=dict(steps=40000, batch_size=32, lr=2e-4, weight_decay=0.0, warmup_steps=500),
        var_train=dict(steps=60000, batch_size=32, lr=2e-4, warmup_steps=1000),
    ),
}

# A narrow model on the release's 10-scale pyramid, for CPU speed benchmarks (untrained).
BENCHMARK_VQVAE = VQVAEConfig(vocab_size=4096, z_channels=32, ch=32, ch_mult=(1, 2), num_res_blocks=1)
BENCHMARK_VAR = VARConfig(depth=8, embed_dim=128, num_heads=2, num_classes=10)


def get_preset(name: str) -> VARPreset:
    from ddbench.core.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown VAR preset {name!r}; use one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]

