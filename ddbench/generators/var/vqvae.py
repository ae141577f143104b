"""The multi-scale VQ-VAE: image <-> per-scale token indices, with the release's key layout."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ddbench.generators.var.autoencoder import Decoder, Encoder
from ddbench.generators.var.configs import VQVAEConfig
from ddbench.generators.var.quantizer import MultiScaleQuantizer


class VQVAE(nn.Module):
    """Encoder -> quant_conv -> multi-scale quantiser -> post_quant_conv -> decoder.

    Images are (B, 3, H, W) in [-1, 1]; `decode_*` returns images clamped to [-1, 1].
    """

    def __init__(self, config: VQVAEConfig = VQVAEConfig()) -> None:
        super().__init__()
        self.config = config
        backbone = dict(ch=config.ch, ch_mult=tuple(config.ch_mult), num_res_blocks=config.num_res_blocks,
                        z_channels=config.z_channels, using_sa=config.using_sa, using_mid_sa=config.using_mid_sa,
                        norm_groups=config.norm_groups)
        self.encoder = Encoder(**backbone)
        self.decoder = Decoder(**backbone)
        self.quantize = MultiScaleQuantizer(config.vocab_size, config.z_channels, config.patch_nums, beta=config.beta,
                                            quant_resi=config.quant_resi, share_quant_resi=config.share_quant_resi)
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 3, padding=1)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.quantize.patch_nums

    def encode_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(image))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, VQ loss); gradients reach the encoder straight through."""
        f_hat, vq_loss, _ = self.quantize(self.encode_features(image))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss

    @torch.no_grad()
    def image_to_indices(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale token indices, a list of (B, pn*pn) long tensors, coarse to fine."""
        return self.quantize.features_to_indices(self.encode_features(image))

    def fhat_to_image(self, f_hat: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """`fast` (inference): channels-last activations, sub-pixel upsampling convs, in-place
        activations; the same function to float rounding."""
        if not fast:
            return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)
        latent = self.post_quant_conv(f_hat).contiguous(memory_format=torch.channels_last)
        return self.decoder(latent, fast=True).clamp(-1, 1).contiguous()

    @torch.no_grad()
    def indices_to_image(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode per-scale indices (all scales, or a coarse prefix of them) to an image in [-1, 1]."""
        return self.fhat_to_image(self.quantize.indices_to_fhat(indices))

    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor) -> torch.Tensor:
        return self.indices_to_image(self.image_to_indices(image))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The code-usage statistics depend on the pyramid, not the model; keep ours if the count differs.
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape != self.quantize.ema_vocab_hit_SV.shape:
            state_dict = dict(state_dict)
            state_dict[key] = self.quantize.ema_vocab_hit_SV.clone()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
