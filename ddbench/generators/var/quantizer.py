"""Multi-scale residual quantiser: features <-> per-scale token indices, coarse to fine.

At scale si with side pn: area-downsample the residual to pn x pn (not at the last scale), pick the
nearest code by L2 distance, embed it, bicubic-upsample to the full grid (not at the last scale),
pass it through phi, add to f_hat and subtract from the residual.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddbench.core import distributed


class Phi(nn.Conv2d):
    """phi(h) = (1 - ratio) * h + ratio * conv3x3(h); the release uses ratio 0.5."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__(channels, channels, kernel_size=3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1.0 - self.ratio) + super().forward(h) * self.ratio


class SharedPhis(nn.Module):
    """K phi convolutions shared across the scales: scale si uses the one whose tick is nearest si/(S-1)."""

    def __init__(self, channels: int, ratio: float, count: int) -> None:
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(channels, ratio) for _ in range(count))
        margin = 1 / 3 / count if count == 4 else 1 / 2 / count
        self.ticks = np.linspace(margin, 1 - margin, count)

    def for_scale(self, scale_index: int, num_scales: int) -> Phi:
        position = scale_index / (num_scales - 1)
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - position)))]


class MultiScaleQuantizer(nn.Module):
    """Holds the codebook (`embedding`), the phi convs (`quant_resi`) and the code-usage buffer."""

    def __init__(self, vocab_size: int, z_channels: int, patch_nums: Sequence[int], beta: float = 0.25,
                 quant_resi: float = 0.5, share_quant_resi: int = 4) -> None:
        super().__init__()
        self.vocab_size, self.z_channels, self.beta = vocab_size, z_channels, beta
        self.patch_nums = tuple(patch_nums)
        self.quant_resi = SharedPhis(z_channels, quant_resi, share_quant_resi)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, z_channels)

    def phi(self, scale_index: int, h: torch.Tensor) -> torch.Tensor:
        return self.quant_resi.for_scale(scale_index, len(self.patch_nums))(h)

    def nearest_codes(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code by squared L2 distance, (N,)."""
        codes = self.embedding.weight.detach()
        distance = z_NC.square().sum(1, keepdim=True) + codes.square().sum(1) - 2.0 * z_NC @ codes.T
        return distance.argmin(dim=1)

    def upsampled_contribution(self, scale_index: int, h_BChw: torch.Tensor, size: int) -> torch.Tensor:
        """phi(bicubic_up(h)) on the full latent grid (no resampling at the last scale)."""
        if scale_index != len(self.patch_nums) - 1:
            h_BChw = F.interpolate(h_BChw, size=(size, size), mode="bicubic")
        return self.phi(scale_index, h_BChw)

    def embed_indices(self, indices_Bl: torch.Tensor, side: int) -> torch.Tensor:
        """(B, side*side) indices -> (B, z, side, side) code vectors."""
        batch = indices_Bl.shape[0]
        return self.embedding(indices_Bl).transpose(1, 2).reshape(batch, self.z_channels, side, side)

    def _residual_pass(self, f_BChw: torch.Tensor):
        """Yields (scale index, indices (B, pn*pn), contribution) while quantising the residual."""
        batch, channels, height, width = f_BChw.shape
        if self.patch_nums[-1] != height or height != width:
            raise ValueError(f"latent grid {height}x{width} does not match the last scale {self.patch_nums[-1]}")
        residual = f_BChw.detach().clone()
        last = len(self.patch_nums) - 1
        for scale_index, side in enumerate(self.patch_nums):
            rest = F.interpolate(residual, size=(side, side), mode="area") if scale_index != last else residual
            indices = self.nearest_codes(rest.permute(0, 2, 3, 1).reshape(-1, channels)).view(batch, side * side)
            contribution = self.upsampled_contribution(scale_index, self.embed_indices(indices, side), height)
            residual = residual - contribution
            yield scale_index, indices, contribution

    @torch.no_grad()
    def features_to_indices(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale token indices, a list of (B, pn*pn) long tensors."""
        return [indices for _, indices, _ in self._residual_pass(f_BChw)]

    def forward(self, f_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Training pass: (f_hat with straight-through gradient, VQ loss, per-scale indices).

        The loss averages over scales: beta * ||sg(f_hat) - f||^2 (commitment) + ||f_hat - sg(f)||^2
        (codebook and phi), where f_hat is the running sum after each scale.
        """
        f_no_grad = f_BChw.detach()
        f_hat = torch.zeros_like(f_no_grad)
        loss = f_BChw.new_zeros(())
        all_indices = []
        for scale_index, indices, contribution in self._residual_pass(f_BChw):
            f_hat = f_hat + contribution
            loss = loss + self.beta * F.mse_loss(f_hat.detach(), f_BChw) + F.mse_loss(f_hat, f_no_grad)
            all_indices.append(indices)
            if self.training:
                hits = indices.flatten().bincount(minlength=self.vocab_size).float()
                distributed.all_reduce_sum(hits)  # under DDP: the global batch's hits, as the official code
                self.ema_vocab_hit_SV[scale_index].mul_(0.99).add_(hits, alpha=0.01)
        loss = loss / len(self.patch_nums)
        f_hat_straight_through = (f_hat.detach() - f_no_grad) + f_BChw
        return f_hat_straight_through, loss, all_indices

    def indices_to_fhat(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum of phi(upsampled code maps) over the given scales (a prefix of the pyramid is fine)."""
        side = self.patch_nums[-1]
        f_hat = None
        for scale_index, indices_Bl in enumerate(indices):
            h = self.upsampled_contribution(scale_index, self.embed_indices(indices_Bl, self.patch_nums[scale_index]), side)
            f_hat = h if f_hat is None else f_hat + h
        return f_hat

    def teacher_forcing_input(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Transformer input for scales 1..S-1: f_hat after each scale, area-downsampled to the next scale.

        Returns (B, L - patch_nums[0]**2, z) in scale order.
        """
        side = self.patch_nums[-1]
        batch = indices[0].shape[0]
        f_hat = torch.zeros(batch, self.z_channels, side, side, device=indices[0].device)
        inputs = []
        for scale_index in range(len(self.patch_nums) - 1):
            f_hat = f_hat + self.upsampled_contribution(
                scale_index, self.embed_indices(indices[scale_index], self.patch_nums[scale_index]), side)
            inputs.append(self.next_scale_input(f_hat, scale_index + 1))
        return torch.cat(inputs, dim=1)

    def next_scale_input(self, f_hat: torch.Tensor, next_scale_index: int) -> torch.Tensor:
        """(B, z, H, W) -> (B, pn*pn, z): f_hat area-downsampled to the side of `next_scale_index`."""
        side = self.patch_nums[next_scale_index]
        return F.interpolate(f_hat, size=(side, side), mode="area").flatten(2).transpose(1, 2)
