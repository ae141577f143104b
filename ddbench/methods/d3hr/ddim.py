"""D3HR's DDIM inversion and DDIM generation (generation/dit_inversion_save_statistic.py: `invert`, `sample`).

The release runs diffusers' `DiTPipeline` with a `DDIMScheduler` from its config: linear betas 1e-4..0.02
in float32 (as diffusers computes them), 50 steps with "leading" spacing (980, 960, ..., 0); it uses the
scheduler only for the grid and `alphas_cumprod` and writes the DDIM updates itself. Guidance (cfg 4)
mixes ALL eps channels (diffusers' DiTPipeline does; the official DiT guides 3); the learned-variance
half of the output is dropped. Upstream quirks, each the default and switchable by the method's config:
- inversion evaluates the model at the TARGET timestep t on the latent at t - 20 (`at_target`);
- generation from start_step 18 starts at t = 620 while the statistics are those of t = 600 (the
  method's `start_step`: 19 samples from the timestep the statistics were taken at);
- each generation step goes to abar[max(1, t - 20)], so the last two steps end at abar[1], not at 1
  (`last_to_abar1`; off: the scheduler's own rule, abar[t - 20], and 1 below t = 0).
"""

from __future__ import annotations

from typing import Optional

import torch

from ddbench.generators.dit.model import DiT
from ddbench.generators.dit.sampling import guided_output

TRAIN_STEPS = 1000
#: the release's grid: `num_inference_steps = 50`; the loops below are written for it
GRID_STEPS = 50
STRIDE = TRAIN_STEPS // GRID_STEPS
#: `invert` runs i = 1 .. 38 ("if i >= num_inference_steps - 1 - 10: continue") and keeps i = 24 .. 38
INVERSION_STEPS = range(1, GRID_STEPS - 1 - 10)
KEPT_STEPS = range(24, 39)


def alphas_cumprod() -> torch.Tensor:
    """(1000,) float32 abar_t exactly as diffusers' DDIMScheduler(beta_schedule="linear") computes it."""
    betas = torch.linspace(0.0001, 0.02, TRAIN_STEPS, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def leading_timesteps() -> list[int]:
    """The scheduler's 50 timesteps, "leading" spacing, steps_offset 0: 980, 960, ..., 0."""
    return [STRIDE * i for i in reversed(range(GRID_STEPS))]


def kept_timesteps() -> list[int]:
    """The timestep of each kept inversion row (480, 500, ..., 760)."""
    return [STRIDE * i for i in KEPT_STEPS]


def guided_eps(model: DiT, x: torch.Tensor, t: int, labels: torch.Tensor, cfg: float,
               cfg_channels: Optional[int] = None) -> torch.Tensor:
    """The guided eps (B, C, H, W) at timestep `t`: uncond + cfg (cond - uncond) on the first `cfg_channels`
    eps channels (None: all of them, as the release), the conditional eps on the others."""
    channels = model.config.in_channels
    times = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    output, _, _ = guided_output(model, x, times, labels, cfg, channels if cfg_channels is None else cfg_channels)
    return output[:, :channels]


@torch.no_grad()
def invert(model: DiT, latents: torch.Tensor, labels: torch.Tensor, *, cfg: float = 4.0,
           cfg_channels: Optional[int] = None, at_target: bool = True,
           last_row: Optional[int] = None) -> torch.Tensor:
    """(15, B, C, H, W): the inverted latents at the kept steps (t = 480 .. 760) of clean `latents` (B, C, H, W).

    Step i maps the latent at t - 20 to t: x <- (x - sqrt(1 - a0) eps) sqrt(a1) / sqrt(a0) + sqrt(1 - a1) eps,
    a0 = abar[t - 20], a1 = abar[t], eps evaluated at t (`at_target`, the release) or at t - 20.
    `last_row`: stop once that kept row is reached and return rows 0 .. last_row only. Each step reads
    only the one before it, so those rows are the same numbers; the release inverts up to t = 760
    although its statistics use one row (row 6, t = 600: 30 of its 38 steps).
    """
    abar = alphas_cumprod().to(latents.device)
    steps = INVERSION_STEPS if last_row is None else range(INVERSION_STEPS.start, KEPT_STEPS[last_row] + 1)
    x, kept = latents.float(), []
    for i in steps:
        t = STRIDE * i
        current = max(0, t - STRIDE)
        eps = guided_eps(model, x, t if at_target else current, labels, cfg, cfg_channels)
        alpha_t, alpha_next = abar[current], abar[t]
        x = (x - (1 - alpha_t).sqrt() * eps) * (alpha_next.sqrt() / alpha_t.sqrt()) + (1 - alpha_next).sqrt() * eps
        if i in KEPT_STEPS:
            kept.append(x)
    return torch.stack(kept)


@torch.no_grad()
def generate(model: DiT, latents: torch.Tensor, labels: torch.Tensor, *, start_step: int = 18, cfg: float = 4.0,
             cfg_channels: Optional[int] = None, last_to_abar1: bool = True) -> torch.Tensor:
    """Deterministic DDIM (eta 0, no clipping) from `latents` (B, C, H, W) taken to be at grid step
    `start_step` (timestep 980 - 20 start_step) down to t = 0; returns the final latents."""
    abar = alphas_cumprod().to(latents.device)
    one = torch.ones((), dtype=abar.dtype, device=abar.device)  # the scheduler's final_alpha_cumprod
    x = latents.float()
    for t in leading_timesteps()[start_step:]:
        eps = guided_eps(model, x, t, labels, cfg, cfg_channels)
        if last_to_abar1:
            alpha_prev = abar[max(1, t - STRIDE)]
        else:
            alpha_prev = abar[t - STRIDE] if t - STRIDE >= 0 else one
        alpha_t = abar[t]
        predicted_x0 = (x - (1 - alpha_t).sqrt() * eps) / alpha_t.sqrt()
        x = alpha_prev.sqrt() * predicted_x0 + (1 - alpha_prev).sqrt() * eps
    return x
