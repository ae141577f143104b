"""Gaussian diffusion as DiT trains and samples it: 1000 linear-beta steps, eps prediction, learned-range
variance, optional respacing (`timestep_respacing="50"`), loss = MSE + VB (the VB term sees the
mean prediction detached).

Our own compact code for the math of facebookresearch/DiT's `diffusion/` (itself from OpenAI's
improved-diffusion). Schedules are computed in float64 and cast to float32 when used, as upstream.
Why not a diffusers scheduler: `DDPMScheduler` by default spaces 50 steps as 980, 960, ..., 0
("leading"); with `timestep_spacing="linspace"` and `variance_type="learned_range"` it takes the
release's 50 steps, but it keeps the schedule in float32, so a step differs by up to 1e-5 (measured).
This port reproduces the release's trajectory bit for bit (tests/generators/dit), needs no
diffusers at sampling time, and also gives the training loss (VB term) the scheduler does not have.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

NUM_TRAIN_STEPS = 1000


def linear_betas(num_steps: int = NUM_TRAIN_STEPS) -> np.ndarray:
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def respaced_timesteps(num_steps: int, count: int) -> list[int]:
    """The `count` original steps kept by `space_timesteps(num_steps, str(count))` (one section),
    including its float accumulation of the stride, in increasing order."""
    if not 1 <= count <= num_steps:
        raise ValueError(f"cannot respace {num_steps} diffusion steps into {count}")
    stride = 1.0 if count <= 1 else (num_steps - 1) / (count - 1)
    taken, position = [], 0.0
    for _ in range(count):
        taken.append(round(position))
        position += stride
    return sorted(set(taken))


def mean_flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.mean(dim=list(range(1, tensor.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of 8-bit data in [-1, 1] (bins of width 2/255) under N(means, exp(log_scales)^2)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusion:
    """The (possibly respaced) process. Index i in [0, num_steps) is a step of this process; the model
    is called with `model_timesteps(i)`, the original step it stands for."""

    def __init__(self, sampling_steps: Optional[int] = None, train_steps: int = NUM_TRAIN_STEPS):
        base_betas = linear_betas(train_steps)
        kept = list(range(train_steps)) if sampling_steps is None else respaced_timesteps(train_steps, sampling_steps)
        base_cumprod = np.cumprod(1.0 - base_betas)
        betas, last = [], 1.0
        for step in kept:
            betas.append(1 - base_cumprod[step] / last)
            last = base_cumprod[step]
        self.timestep_map = torch.tensor(kept, dtype=torch.long)
        self.betas = np.array(betas, dtype=np.float64)
        self.num_steps = len(betas)
        cumprod = np.cumprod(1.0 - self.betas)
        cumprod_prev = np.append(1.0, cumprod[:-1])
        self.alphas_cumprod = cumprod
        self.sqrt_alphas_cumprod = np.sqrt(cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / cumprod - 1)
        posterior_variance = self.betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
        # the first posterior variance is 0; its log is clipped to the second's
        self.posterior_log_variance_clipped = (np.log(np.append(posterior_variance[1], posterior_variance[1:]))
                                               if self.num_steps > 1 else np.array([]))
        self.posterior_mean_coef1 = self.betas * np.sqrt(cumprod_prev) / (1.0 - cumprod)
        self.posterior_mean_coef2 = (1.0 - cumprod_prev) * np.sqrt(1.0 - self.betas) / (1.0 - cumprod)
        self.log_betas = np.log(self.betas)

    @staticmethod
    def _at(array: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """array[t] as float32, shaped (B, 1, ..., 1) to broadcast over a (B, ...) tensor of `ndim` dims."""
        values = torch.from_numpy(array).to(device=t.device)[t].float()
        return values.view(-1, *([1] * (ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        return self.timestep_map.to(t.device)[t]

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (self._at(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
                + self._at(self.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * noise)

    def predict_xstart(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps."""
        return (self._at(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
                - self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps)

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._at(self.posterior_mean_coef1, t, x_t.ndim) * x_start
                + self._at(self.posterior_mean_coef2, t, x_t.ndim) * x_t)
        return mean, self._at(self.posterior_log_variance_clipped, t, x_t.ndim)

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """From a learned-range model output [eps, v] (B, 2C, ...): mean, log-variance and x0 of p(x_{t-1}|x_t)."""
        eps, variance_values = torch.split(model_output, x_t.shape[1], dim=1)
        min_log = self._at(self.posterior_log_variance_clipped, t, x_t.ndim)
        max_log = self._at(self.log_betas, t, x_t.ndim)
        fraction = (variance_values + 1) / 2
        log_variance = fraction * max_log + (1 - fraction) * min_log
        pred_xstart = self.predict_xstart(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _ = self.q_posterior(pred_xstart, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def p_sample(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                 clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """One ancestral step x_t -> x_{t-1}; no noise at index 0."""
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        nonzero = (t != 0).float().view(-1, *([1] * (x_t.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def vb_terms_bpd(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """(B,) variational-bound term in bits per dim: KL(q || p) for t > 0, decoder NLL at t = 0."""
        true_mean, true_log_variance = self.q_posterior(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / np.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        decoder_nll = mean_flat(decoder_nll) / np.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def training_losses(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_start: torch.Tensor,
                        t: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """`model(x_t, model_timesteps)` -> [eps, v]. Returns per-sample `loss` = `mse` + `vb` and the
        (not detached) predicted x0 `pred_xstart` that Minimax's terms use."""
        x_t = self.q_sample(x_start, t, noise)
        output = model(x_t, self.model_timesteps(t))
        eps, variance_values = torch.split(output, x_start.shape[1], dim=1)
        frozen = torch.cat([eps.detach(), variance_values], dim=1)
        vb = self.vb_terms_bpd(frozen, x_start, x_t, t)
        mse = mean_flat((noise - eps) ** 2)
        return {"loss": mse + vb, "mse": mse, "vb": vb, "pred_xstart": self.predict_xstart(x_t, t, eps)}
