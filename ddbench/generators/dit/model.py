"""A compact DiT (Peebles & Xie) in the official key layout, with Minimax's DiffFit gammas.

Why our own module rather than diffusers' `DiTTransformer2DModel`: as shipped, that class computes
another function (timestep frequencies shifted by 1, block norm eps 1e-5, a copy of the timestep and
label embedders in every block, no gammas). This module computes the official function; the
diffusers-format weights load into it through `ddbench.generators.dit.loading`.

The state dict is exactly the official one (`x_embedder.proj`, `pos_embed`, `t_embedder.mlp.{0,2}`,
`y_embedder.embedding_table`, `blocks.{i}.{attn.qkv,attn.proj,mlp.fc1,mlp.fc2,adaLN_modulation.1}`,
`final_layer.{linear,adaLN_modulation.1}`) plus, on blocks [0, gamma_blocks), Minimax's
`blocks.{i}.gamma1/gamma2` (hidden) and `blocks.{i}.attn.gamma1` (3*hidden, on the qkv output) /
`attn.gamma2` (hidden, on the projection output), initialised to 1 (the identity).

`use_variant("diffusers")` makes the same weights compute diffusers' `DiTTransformer2DModel` as shipped
(timestep frequencies with downscale_freq_shift 1, the MLP LayerNorm's eps 1e-5), the function D3HR's
release ran; "official" (the default) is facebookresearch/DiT's.

`attention_scales` ({block index: (B, N, 1) tensor}) multiplies a block's attention output token by
token before the gate and residual: the hook of HIERAMP on DiT (`A' = A * (1 + alpha * M)`).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddbench.generators.dit.config import TIMESTEP_FREQUENCIES, DiTConfig


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#: variant -> (timestep frequency shift, eps of the block's MLP LayerNorm); diffusers' are
#: `Timesteps(downscale_freq_shift=1)` and `norm3 = LayerNorm(eps=norm_eps=1e-5)`
VARIANTS = {"official": (0, 1e-6), "diffusers": (1, 1e-5)}


def timestep_frequencies(t: torch.Tensor, dim: int = TIMESTEP_FREQUENCIES, max_period: int = 10000,
                         shift: int = 0) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) [cos, sin] features; frequencies exp(-log(max_period) * i / (half - shift))
    (the official: no shift; diffusers' DiT: shift 1)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - shift)).to(t.device)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """(grid_size**2, embed_dim) fixed 2-D sin-cos embedding (MAE/DiT): first half from the column index,
    second half from the row index, tokens in row-major order."""
    def one_axis(dim: int, positions: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        angles = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    grid_w, grid_h = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
    embedding = np.concatenate([one_axis(embed_dim // 2, grid_w), one_axis(embed_dim // 2, grid_h)], axis=1)
    return torch.from_numpy(embedding).float()


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, hidden) by a patch-size convolution (key `x_embedder.proj`)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQUENCIES, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        self.frequency_shift = 0

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_frequencies(t, shift=self.frequency_shift).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """The label table with one extra row, the null class (index num_classes), for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + (dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def drop(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Replace each label by the null class with probability `dropout_prob` (training only)."""
        drop = torch.rand(labels.shape[0], generator=generator, device=generator.device).to(labels.device) < self.dropout_prob
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class Mlp(nn.Module):
    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Attention(nn.Module):
    """Multi-head self-attention; `gamma1` scales the qkv output, `gamma2` the projection (Minimax)."""

    def __init__(self, hidden_size: int, num_heads: int, use_gamma: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, hidden_size * 3)
        self.proj = nn.Linear(hidden_size, hidden_size)
        if use_gamma:
            self.gamma1 = nn.Parameter(torch.ones(hidden_size * 3))
            self.gamma2 = nn.Parameter(torch.ones(hidden_size))
        else:
            self.gamma1 = self.gamma2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x)
        if self.gamma1 is not None:
            qkv = self.gamma1 * qkv
        q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, channels)
        out = self.proj(out)
        return out if self.gamma2 is None else self.gamma2 * out


class DiTBlock(nn.Module):
    """adaLN-Zero block: x += gamma1 * gate_msa * attn(mod(LN(x))); x += gamma2 * gate_mlp * mlp(mod(LN(x)))."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, use_gamma: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, use_gamma)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        if use_gamma:
            self.gamma1 = nn.Parameter(torch.ones(hidden_size))
            self.gamma2 = nn.Parameter(torch.ones(hidden_size))
        else:
            self.gamma1 = self.gamma2 = None

    def forward(self, x: torch.Tensor, c: torch.Tensor, attention_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        attended = self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (B, N, hidden)
        if attention_scale is not None:
            attended = attended * attention_scale.to(attended.dtype)
        update = gate_msa.unsqueeze(1) * attended
        x = x + (update if self.gamma1 is None else self.gamma1 * update)
        update = gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + (update if self.gamma2 is None else self.gamma2 * update)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer: (x_t (B, C, H, W), timesteps (B,), labels (B,)) -> (B, out_channels, H, W).

    With learned variance the output is [eps (C channels), variance interpolation values (C channels)].
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(config.num_classes, hidden, config.class_dropout_prob)
        grid = config.input_size // config.patch_size
        fixed = sincos_pos_embed(hidden, grid).unsqueeze(0).to(torch.get_default_device())  # meta-device builds too
        self.pos_embed = nn.Parameter(fixed, requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden, config.num_heads, config.mlp_ratio, i < config.gamma_blocks)
                                     for i in range(config.depth)])
        self.final_layer = FinalLayer(hidden, config.patch_size, config.out_channels)
        self.variant = "official"  # see use_variant

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def use_variant(self, variant: str) -> "DiT":
        """Compute the `variant` function (see VARIANTS) with the same weights, in place; returns self."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown DiT variant {variant!r}; use one of {', '.join(VARIANTS)}")
        shift, mlp_eps = VARIANTS[variant]
        self.t_embedder.frequency_shift = shift
        for block in self.blocks:
            block.norm2.eps = mlp_eps
        self.variant = variant
        return self

    def initialize_weights(self, generator: torch.Generator) -> None:
        """The official initialisation (xavier-uniform linears, zeroed adaLN and output), drawn from `generator`."""
        def xavier(weight: torch.Tensor) -> None:
            fan_out, fan_in = weight.shape[0], weight[0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            weight.copy_(torch.rand(weight.shape, generator=generator) * 2 * bound - bound)

        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    xavier(module.weight)
                    module.bias.zero_()
            xavier(self.x_embedder.proj.weight)
            self.x_embedder.proj.bias.zero_()
            self.y_embedder.embedding_table.weight.copy_(torch.randn(self.y_embedder.embedding_table.weight.shape,
                                                                     generator=generator) * 0.02)
            for linear in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.02)
            for module in [*(block.adaLN_modulation[-1] for block in self.blocks),
                           self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
                module.weight.zero_()
                module.bias.zero_()

    def drop_labels(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Classifier-free-guidance label dropout for training (the official does it inside forward)."""
        return self.y_embedder.drop(labels, generator) if self.config.class_dropout_prob > 0 else labels

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W)."""
        channels, patch = self.config.out_channels, self.config.patch_size
        side = math.isqrt(x.shape[1])
        x = x.reshape(x.shape[0], side, side, patch, patch, channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], channels, side * patch, side * patch)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                attention_scales: Optional[Mapping[int, torch.Tensor]] = None) -> torch.Tensor:
        tokens = self.x_embedder(x) + self.pos_embed  # (B, N, hidden)
        c = self.t_embedder(t) + self.y_embedder(y)  # (B, hidden)
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, c, attention_scales.get(index) if attention_scales else None)
        return self.unpatchify(self.final_layer(tokens, c))
