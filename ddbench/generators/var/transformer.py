"""The VAR next-scale transformer: class-conditional AdaLN blocks over the token pyramid.

Key names and shapes follow the release (`blocks.{i}.attn.mat_qkv.weight`, `head_nm.ada_lin.1`,
`pos_1LC`, `lvl_1L`, `attn_bias_for_masking`, ...), so `var_d{16,20,24,30}.pth` load strictly.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ddbench.generators.var.attention import KVCache, LogitsFn, SelfAttention
from ddbench.generators.var.configs import VARConfig
from ddbench.generators.var.cpu_kernels import Linear


class FeedForward(nn.Module):
    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = Linear(embed_dim, hidden_dim)
        self.fc2 = Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1.linear(x, self.fc1.bias, gelu_tanh=True))


class AdaLNBlock(nn.Module):
    """x += attn(LN(x)(1+scale1)+shift1)*gamma1; x += ffn(LN(x)(1+scale2)+shift2)*gamma2.

    `ada_lin(cond)` chunks in the release's order: gamma1, gamma2, scale1, scale2, shift1, shift2.
    The attention output (after proj, before gamma) is what a forward hook on `attn` sees.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float, norm_eps: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.attn = SelfAttention(embed_dim, num_heads)
        self.ffn = FeedForward(embed_dim, round(embed_dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), Linear(embed_dim, 6 * embed_dim))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: Optional[torch.Tensor] = None,
                kv_cache: Optional[KVCache] = None, cache_tokens: Optional[int] = None,
                logits_fn: Optional[LogitsFn] = None, modulation: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`modulation`: `ada_lin(cond_BD)` (B, 6C) when the caller has it already (sampling reuses it per scale)."""
        modulation = self.ada_lin(cond_BD) if modulation is None else modulation
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation.view(-1, 1, 6, self.embed_dim).unbind(2)
        attended = self.attn(self.ln_wo_grad(x) * (scale1 + 1) + shift1, attn_bias=attn_bias, kv_cache=kv_cache,
                             cache_tokens=cache_tokens, logits_fn=logits_fn)
        x = x + attended * gamma1
        return x + self.ffn(self.ln_wo_grad(x) * (scale2 + 1) + shift2) * gamma2


class AdaLNHead(nn.Module):
    """LN(x)(1+scale)+shift before the vocabulary head, with `ada_lin(cond)` giving (scale, shift)."""

    def __init__(self, embed_dim: int, norm_eps: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), Linear(embed_dim, 2 * embed_dim))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.embed_dim).unbind(2)
        return self.ln_wo_grad(x) * (scale + 1) + shift


def scale_of_each_token(patch_nums: Sequence[int]) -> torch.Tensor:
    """(L,) long: the scale index of every token of the pyramid."""
    return torch.cat([torch.full((side * side,), index) for index, side in enumerate(patch_nums)])


def block_causal_bias(token_scales: torch.Tensor) -> torch.Tensor:
    """(1, 1, L, L) additive mask: 0 where the key's scale <= the query's scale, else -inf."""
    visible = token_scales.view(-1, 1) >= token_scales.view(1, -1)
    return torch.where(visible, 0.0, -torch.inf).view(1, 1, *visible.shape)


class VARTransformer(nn.Module):
    """Class-conditional next-scale prediction over a token pyramid `config.patch_nums`.

    The null (unconditional) class is index `num_classes`. `z_channels` and `vocab_size` come from the
    VQ-VAE the transformer reads and predicts.
    """

    def __init__(self, config: VARConfig, vocab_size: int, z_channels: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size, self.z_channels = vocab_size, z_channels
        width, self.num_classes = config.embed_dim, config.num_classes
        self.patch_nums = tuple(config.patch_nums)
        self.scale_ranges: list[tuple[int, int]] = []
        start = 0
        for side in self.patch_nums:
            self.scale_ranges.append((start, start + side * side))
            start += side * side
        self.total_tokens, self.first_tokens = start, self.patch_nums[0] ** 2

        self.word_embed = Linear(z_channels, width)
        self.class_emb = nn.Embedding(self.num_classes + 1, width)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_tokens, width))
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.total_tokens, width))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), width)
        self.blocks = nn.ModuleList(
            AdaLNBlock(width, config.num_heads, config.mlp_ratio, config.norm_eps) for _ in range(config.depth))
        token_scales = scale_of_each_token(self.patch_nums)
        self.register_buffer("lvl_1L", token_scales.view(1, -1))
        self.register_buffer("attn_bias_for_masking", block_causal_bias(token_scales))
        self.head_nm = AdaLNHead(width, config.norm_eps)
        self.head = Linear(width, vocab_size)

    # ----- initialisation (the release recipe: init_adaln 0.5, init_adaln_gamma 1e-5, head 0.02) -----
    def init_weights(self, generator: Optional[torch.Generator] = None) -> None:
        std = math.sqrt(1 / self.config.embed_dim / 3)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        for parameter in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(parameter, std=std, a=-2 * std, b=2 * std, generator=generator)
        with torch.no_grad():
            self.head.weight.mul_(0.02)
            self.head_nm.ada_lin[-1].weight.mul_(0.5)
            width = self.config.embed_dim
            for block in self.blocks:
                block.attn.proj.weight.div_(math.sqrt(2 * len(self.blocks)))
                block.ffn.fc2.weight.div_(math.sqrt(2 * len(self.blocks)))
                block.ada_lin[-1].weight[2 * width:].mul_(0.5)
                block.ada_lin[-1].weight[: 2 * width].mul_(1e-5)

    # ----- embeddings -----
    def level_position(self, start: int, end: int) -> torch.Tensor:
        """(1, end-start, C): level embedding plus absolute position embedding of tokens [start, end)."""
        return self.lvl_embed(self.lvl_1L[:, start:end]) + self.pos_1LC[:, start:end]

    def first_scale_tokens(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """(B, first_l, C): the start tokens, class embedding + pos_start + level/position."""
        batch = cond_BD.shape[0]
        return (cond_BD.unsqueeze(1).expand(batch, self.first_tokens, -1) + self.pos_start
                + self.level_position(0, self.first_tokens))

    def scale_tokens(self, scale_index: int, scale_input: torch.Tensor) -> torch.Tensor:
        """(B, pn*pn, z) teacher-forcing/next-scale input -> (B, pn*pn, C) token embeddings."""
        start, end = self.scale_ranges[scale_index]
        return self.word_embed(scale_input) + self.level_position(start, end)

    def embed_sequence(self, cond_BD: torch.Tensor, teacher_input: torch.Tensor) -> torch.Tensor:
        """Start tokens followed by word-embedded teacher-forcing input: (B, L, C)."""
        rest = self.word_embed(teacher_input) + self.level_position(self.first_tokens, self.total_tokens)
        return torch.cat((self.first_scale_tokens(cond_BD), rest), dim=1)

    def drop_labels(self, labels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Replace each label by the null class with probability cond_drop_rate (training only)."""
        draw = torch.rand(labels.shape, generator=generator, device=labels.device)
        return torch.where(draw < self.config.cond_drop_rate, torch.full_like(labels, self.num_classes), labels)

    # ----- running the blocks -----
    def run_blocks(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: Optional[torch.Tensor] = None,
                   kv_caches: Optional[Sequence[KVCache]] = None, cache_tokens: Optional[int] = None,
                   logits_fns: Optional[dict[int, LogitsFn]] = None,
                   modulations: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """All blocks in order; `logits_fns` maps a block index to a logits function for that block;
        `modulations` are the blocks' `ada_lin(cond_BD)` from `block_modulations`, if computed once."""
        for index, block in enumerate(self.blocks):
            x = block(x, cond_BD, attn_bias=attn_bias, kv_cache=None if kv_caches is None else kv_caches[index],
                      cache_tokens=cache_tokens, logits_fn=None if logits_fns is None else logits_fns.get(index),
                      modulation=None if modulations is None else modulations[index])
        return x

    def block_modulations(self, cond_BD: torch.Tensor) -> list[torch.Tensor]:
        """Each block's AdaLN parameters `ada_lin(cond_BD)` (B, 6C): the same at every scale of a sample."""
        return [block.ada_lin(cond_BD) for block in self.blocks]

    def logits(self, hidden: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """(B, l, C) -> (B, l, V) token logits."""
        return self.head(self.head_nm(hidden, cond_BD))

    def forward(self, labels: torch.Tensor, teacher_input: torch.Tensor,
                drop_generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Training forward with the block-causal mask: (B,) labels, (B, L-first_l, z) -> (B, L, V) logits.

        Labels are dropped to the null class at `cond_drop_rate` when the module is in training mode.
        """
        if self.training and self.config.cond_drop_rate > 0:
            labels = self.drop_labels(labels, drop_generator)
        cond_BD = self.class_emb(labels)
        x = self.embed_sequence(cond_BD, teacher_input)
        hidden = self.run_blocks(x, cond_BD, attn_bias=self.attn_bias_for_masking)
        return self.logits(hidden, cond_BD)

    def new_kv_caches(self, extra_tokens: int = 0) -> list[KVCache]:
        """One cache per block, preallocated for the pyramid plus `extra_tokens` per call (e.g. class tokens)."""
        return [KVCache(capacity=self.total_tokens + extra_tokens) for _ in self.blocks]
