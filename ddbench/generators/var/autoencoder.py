"""Convolutional encoder and decoder of the VQ-VAE, in the module layout of the release checkpoint.

Attribute names (`down.{i}.block.{j}.norm1`, `mid.attn_1.qkv`, `up.{i}.upsample.conv`, ...) are the
checkpoint's key names, so a release state dict loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddbench.generators.var.cpu_kernels import subpixel_upsample_conv


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(groups, channels), num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a 1x1 shortcut only when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        inplace = fast and not torch.is_grad_enabled()  # inference: no fresh buffers (the same numbers)
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        return h.add_(self.nin_shortcut(x)) if inplace else self.nin_shortcut(x) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, residual, 1x1 convs for qkv and output."""

    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, channels, height * width).transpose(-1, -2)
        query, key, value = qkv.unbind(1)  # each (B, HW, C); softmax scale C^-0.5 is SDPA's default
        out = F.scaled_dot_product_attention(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(out.transpose(-1, -2).reshape(batch, channels, height, width))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero-padding one row and column at the bottom/right (asymmetric)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv (`subpixel`: the same as four 2x2 convs, 16/36 of the work)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, subpixel: bool = False) -> torch.Tensor:
        if subpixel:
            return subpixel_upsample_conv(self.conv, x)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _attention_or_identity(enabled: bool, channels: int, norm_groups: int) -> nn.Module:
    return SpatialSelfAttention(channels, norm_groups) if enabled else nn.Identity()


class _MiddleBlock(nn.Module):
    def __init__(self, channels: int, using_mid_sa: bool, norm_groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, norm_groups)
        self.attn_1 = _attention_or_identity(using_mid_sa, channels, norm_groups)
        self.block_2 = ResnetBlock(channels, channels, norm_groups)

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x, fast)), fast)


class _Level(nn.Module):
    """One resolution level: res blocks, optional attention after each, optional resampler."""

    def __init__(self, channels_in: int, channels_out: int, num_blocks: int, with_attention: bool,
                 resampler: str | None, norm_groups: int) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(num_blocks):
            self.block.append(ResnetBlock(channels_in, channels_out, norm_groups))
            channels_in = channels_out
            if with_attention:
                self.attn.append(SpatialSelfAttention(channels_out, norm_groups))
        if resampler == "down":
            self.downsample = Downsample(channels_out)
        elif resampler == "up":
            self.upsample = Upsample(channels_out)

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x, fast)
            if len(self.attn):
                x = self.attn[index](x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x, subpixel=fast)
        return x


class Encoder(nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> features (B, z, H/2^(levels-1), W/2^(levels-1))."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int,
                 using_sa: bool, using_mid_sa: bool, norm_groups: int, in_channels: int = 3) -> None:
        super().__init__()
        levels = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        widths = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList(
            _Level(ch * widths[i], ch * ch_mult[i], num_res_blocks, using_sa and i == levels - 1,
                   "down" if i != levels - 1 else None, norm_groups)
            for i in range(levels)
        )
        top = ch * ch_mult[-1]
        self.mid = _MiddleBlock(top, using_mid_sa, norm_groups)
        self.norm_out = group_norm(top, norm_groups)
        self.conv_out = nn.Conv2d(top, z_channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(image)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z, h, w) -> image (B, 3, h*2^(levels-1), w*2^(levels-1)), not clamped."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int,
                 using_sa: bool, using_mid_sa: bool, norm_groups: int, out_channels: int = 3) -> None:
        super().__init__()
        levels = len(ch_mult)
        top = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = _MiddleBlock(top, using_mid_sa, norm_groups)
        # `up` is indexed by level (0 = finest) but runs from the coarsest level down.
        channels_in = [ch * ch_mult[i + 1] for i in range(levels - 1)] + [top]
        self.up = nn.ModuleList(
            _Level(channels_in[i], ch * ch_mult[i], num_res_blocks + 1, using_sa and i == levels - 1,
                   "up" if i != 0 else None, norm_groups)
            for i in range(levels)
        )
        self.norm_out = group_norm(ch * ch_mult[0], norm_groups)
        self.conv_out = nn.Conv2d(ch * ch_mult[0], out_channels, 3, padding=1)

    def forward(self, latent: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """`fast` (inference): upsampling convs as sub-pixel 2x2 convs and, without autograd, in-place
        activations and residual sums; the same function, float rounding apart."""
        h = self.mid(self.conv_in(latent), fast)
        for level in reversed(self.up):
            h = level(h, fast)
        return self.conv_out(F.silu(self.norm_out(h), inplace=fast and not torch.is_grad_enabled()))
