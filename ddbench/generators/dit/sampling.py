"""Class-conditional DiT sampling as Minimax's `sample.py`: respaced DDPM ancestral steps (50) with the
learned variance, classifier-free guidance on the first 3 output channels only, null class = the
model's number of classes, no clipping of the predicted x0, then the codec's decoder.

Every image draws its starting noise and its per-step noise from its own generator, so a seed
gives the same image whatever the batch size. On CUDA the model runs under bf16 autocast; the
diffusion arithmetic stays float32 (CPU stays float32 throughout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import torch

from ddbench.core.device import autocast
from ddbench.generators.dit.diffusion import GaussianDiffusion
from ddbench.generators.dit.model import DiT

#: sample.py guides only channels [0, 3) "for exact reproducibility" with the released FID numbers
CFG_CHANNELS = 3


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 50  # respaced ancestral steps (`--num-sampling-steps`)
    cfg: float = 4.0  # `--cfg-scale`
    cfg_channels: int = CFG_CHANNELS
    clip_denoised: bool = False


class StepGuidance(Protocol):
    """A per-step hook (HIERAMP on DiT): attention scales to apply, and what each step revealed."""

    def attention_scales(self, step: int) -> Optional[dict[int, torch.Tensor]]:
        """{block index: (B, N, 1)} for this step's forward (applied to both CFG halves), or None."""

    def observe(self, step: int, conditional: torch.Tensor, unconditional: torch.Tensor) -> None:
        """The conditional and unconditional model outputs (B, 2C, H, W) of this step."""


def guided_output(model: DiT, x: torch.Tensor, model_t: torch.Tensor, labels: torch.Tensor, cfg: float,
                  cfg_channels: int = CFG_CHANNELS, attention_scales: Optional[dict[int, torch.Tensor]] = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(guided, conditional, unconditional) outputs for the images `x` (B, C, H, W).

    One forward on [x; x] with [labels; null]; channels [0, cfg_channels) of the guided output are
    uncond + cfg * (cond - uncond), the others (the rest of eps and the variance values) are the
    conditional ones, which is what the official `forward_with_cfg` returns for the first half.
    """
    batch = x.shape[0]
    null = torch.full_like(labels, model.num_classes)
    doubled_scales = {block: torch.cat([scale, scale]) for block, scale in attention_scales.items()} if attention_scales else None
    with autocast(x.device):
        output = model(torch.cat([x, x]), torch.cat([model_t, model_t]), torch.cat([labels, null]), doubled_scales)
    conditional, unconditional = output.float().split(batch)
    guided_part = unconditional[:, :cfg_channels] + cfg * (conditional[:, :cfg_channels] - unconditional[:, :cfg_channels])
    return torch.cat([guided_part, conditional[:, cfg_channels:]], dim=1), conditional, unconditional


def per_image_noise(generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """(len(generators), *shape): row i drawn from generators[i] alone."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=g.device) for g in generators]).to(device)


class DiTSampler:
    """Samples latents (and images through a codec) from a class-conditional DiT."""

    def __init__(self, model: DiT, options: SamplingOptions = SamplingOptions()):
        self.model = model.eval()
        self.options = options
        self.diffusion = GaussianDiffusion(sampling_steps=options.steps)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        config = self.model.config
        return (config.in_channels, config.input_size, config.input_size)

    @torch.no_grad()
    def sample_latents(self, labels: torch.Tensor, generators: Sequence[torch.Generator],
                       guidance: Optional[StepGuidance] = None,
                       noise_fn: Optional[Callable[[int], torch.Tensor]] = None,
                       on_step: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
        """(B, C, h, w) latents for `labels` (B,). `noise_fn(k)` replaces the generators' draws
        (k = 0: the start, k >= 1: the noise of the k-th step); `on_step(i, x)` sees each new x."""
        device = next(self.model.parameters()).device
        labels = labels.to(device)
        if len(generators) != len(labels) and noise_fn is None:
            raise ValueError(f"{len(labels)} labels but {len(generators)} generators: one generator per image")

        def noise(k: int) -> torch.Tensor:
            return noise_fn(k).to(device) if noise_fn else per_image_noise(generators, self.latent_shape, device)

        x = noise(0)
        diffusion, options = self.diffusion, self.options
        for k, index in enumerate(reversed(range(diffusion.num_steps)), start=1):
            t = torch.full((x.shape[0],), index, device=device, dtype=torch.long)
            scales = guidance.attention_scales(k - 1) if guidance else None
            output, conditional, unconditional = guided_output(self.model, x, diffusion.model_timesteps(t), labels,
                                                               options.cfg, options.cfg_channels, scales)
            if guidance:
                guidance.observe(k - 1, conditional, unconditional)
            x = diffusion.p_sample(output, x, t, noise(k), options.clip_denoised)["sample"]
            if on_step:
                on_step(index, x)
        return x


def sample_grid(model: DiT, codec, classes: Sequence[int], per_class: int, options: SamplingOptions, seed: int,
                device: torch.device):
    """A PIL image of `per_class` samples (columns) for each generator label in `classes` (rows), every
    image from its own generator (seed, "dit-sample-grid", label, column)."""
    from PIL import Image

    from ddbench.core.seeding import torch_generator
    from ddbench.generators.dit.codecs import to_uint8

    labels = torch.tensor([c for c in classes for _ in range(per_class)])
    generators = [torch_generator(seed, "dit-sample-grid", c, i, device=device) for c in classes for i in range(per_class)]
    latents = DiTSampler(model, options).sample_latents(labels, generators)
    with torch.no_grad():
        images = to_uint8(codec.decode(latents))  # (N, H, W, 3)
    side = images.shape[1]
    grid = images.view(len(classes), per_class, side, side, 3).permute(0, 2, 1, 3, 4)
    return Image.fromarray(grid.reshape(len(classes) * side, per_class * side, 3).numpy())
