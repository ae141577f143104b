"""Training a small DiT from scratch (the digits model), resumable, every draw seeded by (seed, step).

Why no VAE for digits: the images are 16x16; the SD VAE's 8x downsampling would leave a 2x2 latent,
and a small VAE trained here would be a second model with its own error and CPU time. The 16 px
digits are by construction bilinear 2x upsamplings of 8x8 scans, so the digits DiT denoises the 8x8
scans (`BilinearCodec`: exact least-squares inverse, decoded by the dataset's own upsampling). On the
16 px pixels directly the same budget gave grainy samples (16% recognised after 800 steps): the model
must first learn that the images are smooth. DiT's diffusion (1000 linear-beta steps, eps +
learned-range variance, MSE + VB) applies unchanged, and sampling is exactly the release's procedure.
The DiffFit gammas stay 1 and frozen here (they are Minimax's, trained only by its fine-tune), so the
saved weights are in the plain official DiT layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ddbench.core.progress import NullProgress, Progress
from ddbench.core.seeding import torch_generator
from ddbench.generators.dit.codecs import make_codec
from ddbench.generators.dit.config import DiTConfig
from ddbench.generators.dit.diffusion import GaussianDiffusion
from ddbench.generators.dit.model import DiT
from ddbench.training import (ExponentialMovingAverage, OptimizerRecipe, Precision, ResumePoint, WarmupCosine,
                              center_square_resize, fit, load_tensor_set)

DIT_WEIGHTS = "dit.pth"  # the EMA weights in the official layout


@dataclass(frozen=True)
class DiTTrainConfig:
    """AdamW (DiT: betas 0.9/0.999, no weight decay; here clipped at norm 1, bf16 autocast on CUDA
    and fp32 on CPU), warm-up + cosine to `final_lr_fraction`, EMA."""

    steps: int = 3000
    batch_size: int = 32
    optim: OptimizerRecipe = OptimizerRecipe(lr=1e-3, grad_clip=1.0)
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    seed: int = 0

    def schedule(self) -> WarmupCosine:
        return WarmupCosine(self.steps, self.warmup_steps, self.final_lr_fraction)


@dataclass(frozen=True)
class DiTPreset:
    """A small DiT on one dataset: resolution, model shape (pixel space) and training recipe."""

    name: str
    dataset: str
    resolution: int  # image side; the model's input_size is resolution / codec downsample
    model: DiTConfig
    train: DiTTrainConfig = field(default_factory=DiTTrainConfig)
    codec: str = "pixels"  # a fixed codec of ddbench.generators.dit.codecs.CODECS


DIGITS_PRESET = DiTPreset(
    name="digits", dataset="digits", resolution=16,
    model=DiTConfig(input_size=8, patch_size=1, in_channels=3, hidden_size=96, depth=6, num_heads=4, num_classes=10),
    # EMA 0.995, not DiT's 0.9999: an average that starts at the random initialisation still holds 0.999^3000 = 5%
    # of it after this short run (measured: 58% of samples recognised with 0.999 vs 90% without an average)
    train=DiTTrainConfig(ema_decay=0.995), codec="bilinear2x",
)


def build_dit(config: DiTConfig, seed: int) -> DiT:
    """A freshly initialised DiT (official initialisation) with its gammas frozen at 1."""
    model = DiT(config)
    model.initialize_weights(torch_generator(seed, "dit-init"))
    for name, parameter in model.named_parameters():
        if "gamma" in name:
            parameter.requires_grad_(False)
    model.pos_embed.requires_grad_(False)
    return model


def official_state_dict(model: DiT) -> dict[str, torch.Tensor]:
    """The model's state dict without Minimax's gammas (the plain official layout)."""
    return {key: value for key, value in model.state_dict().items() if "gamma" not in key}


def train_dit(preset: DiTPreset, train_set, out_dir: str | Path, *, device: str | torch.device = "cpu",
              progress: Progress = NullProgress(), train_config: Optional[DiTTrainConfig] = None,
              stop_after: Optional[int] = None) -> dict:
    """Train the preset's DiT on its codec's latents with the release's loss (MSE + VB, 10% label dropout) on
    the shared step loop; resumes from OUT/dit_last.ckpt; writes the EMA weights to OUT/dit.pth when finished."""
    out_dir, config = Path(out_dir), train_config or preset.train
    device = torch.device(device)
    images = load_tensor_set(train_set, center_square_resize(preset.resolution), f"{preset.dataset} training images", progress)
    codec = make_codec(preset.codec)
    latents = codec.encode(images.images.float().div(127.5).sub(1.0))  # uint8 -> [-1, 1] -> latents
    model = build_dit(preset.model, config.seed).to(device)
    ema = ExponentialMovingAverage(model, config.ema_decay)
    optimizer = config.optim.build(model)
    diffusion = GaussianDiffusion()
    identity = {"preset": preset.name, "model": asdict(preset.model), "train": asdict(config), "codec": preset.codec}

    def step_loss(step: int):
        generator = torch_generator(config.seed, "dit-train-batch", step)
        chosen = torch.randint(len(images.labels), (config.batch_size,), generator=generator)
        x0 = latents[chosen]
        t = torch.randint(0, diffusion.num_steps, (config.batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        labels = model.drop_labels(images.labels[chosen], generator)
        x0, t, noise, labels = (tensor.to(device) for tensor in (x0, t, noise, labels))
        terms = diffusion.training_losses(lambda x_t, model_t: model(x_t, model_t, labels), x0, t, noise)
        loss = terms["loss"].mean()
        return loss, {"loss": loss.detach(), "mse": terms["mse"].mean().detach(), "vb": terms["vb"].mean().detach()}

    result = fit(model, optimizer, step_loss, total_steps=config.steps,
                 schedule=config.schedule(),
                 grad_clip=config.optim.grad_clip, ema=ema, precision=Precision(device, config.optim.precision),
                 resume=ResumePoint(out_dir / "dit_last.ckpt", every=config.checkpoint_every, identity=identity),
                 stop_after=stop_after, progress=progress, description="training DiT")
    if result.finished:
        torch.save(official_state_dict(ema.module), out_dir / DIT_WEIGHTS)
    return {**result.summary(), "parameters": sum(v.numel() for v in official_state_dict(model).values())}
