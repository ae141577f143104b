"""VAR self-attention with an explicit KV cache and optional access to the attention logits.

q and k are L2-normalised per head and q is multiplied by exp(min(scale_mul, log 100)), so the
softmax scale is 1. Without a `logits_fn` the product runs through torch's
scaled_dot_product_attention; with one, the logits (B, H, L_q, L_k) are formed explicitly, passed
through `logits_fn` (to read them or add a bias on chosen key columns), then softmaxed.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddbench.generators.var.cpu_kernels import Linear

LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # (B, H, L_q, L_k) -> same shape


class LastRowKeyBias:
    """A logits function that reads only the last query row and adds one bias per (batch row, key) to
    every query row and head. Given one, attention forms that row's logits alone and runs the fused
    SDPA with the bias in its mask, instead of the explicit (B, H, L_q, L_k) logits."""

    def key_bias(self, last_row_logits: torch.Tensor) -> Optional[torch.Tensor]:
        """(B, H, L_k) logits of the last query row (mask included) -> (B, L_k) bias, or None."""
        raise NotImplementedError


MAX_SCALE_MUL = math.log(100.0)


class KVCache:
    """Keys and values (B, H, L, c) of the tokens seen so far by one attention layer.

    With a `capacity` (tokens), the entries live in one preallocated buffer written in place, so
    sampling does not re-copy the whole prefix at every scale; it grows if a call needs more room.
    """

    def __init__(self, capacity: Optional[int] = None) -> None:
        self.capacity = capacity
        self._keys: Optional[torch.Tensor] = None
        self._values: Optional[torch.Tensor] = None
        self.length = 0

    def __len__(self) -> int:
        return self.length

    @property
    def keys(self) -> Optional[torch.Tensor]:
        return None if self._keys is None else self._keys[:, :, : self.length]

    @property
    def values(self) -> Optional[torch.Tensor]:
        return None if self._values is None else self._values[:, :, : self.length]

    def reset(self) -> None:
        self._keys = self._values = None
        self.length = 0

    def _ensure_room(self, keys: torch.Tensor, needed: int) -> None:
        if self._keys is not None and self._keys.shape[2] >= needed:
            return
        size = max(needed, self.capacity or 0)
        batch, heads, _, channels = keys.shape
        grown_keys = keys.new_empty(batch, heads, size, channels)
        grown_values = keys.new_empty(batch, heads, size, channels)
        if self.length:
            grown_keys[:, :, : self.length] = self._keys[:, :, : self.length]
            grown_values[:, :, : self.length] = self._values[:, :, : self.length]
        self._keys, self._values = grown_keys, grown_values

    def attend_to(self, keys: torch.Tensor, values: torch.Tensor, keep: Optional[int] = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached entries followed by the given ones; only the first `keep` (default all) stay cached.

        The returned tensors are views valid until the next call.
        """
        new = keys.shape[2]
        end = self.length + new
        self._ensure_room(keys, end)
        self._keys[:, :, self.length:end] = keys
        self._values[:, :, self.length:end] = values
        all_keys, all_values = self._keys[:, :, :end], self._values[:, :, :end]
        self.length += new if keep is None else keep
        return all_keys, all_values


class SelfAttention(nn.Module):
    """Multi-head attention with the release's parameters: mat_qkv (no bias), q_bias, v_bias, proj."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.mat_qkv = Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = Linear(embed_dim, embed_dim)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, C) -> q, k, v each (B, H, L, c), with q and k normalised and q scaled."""
        batch, length, _ = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = self.mat_qkv.linear(x, bias).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scale = self.scale_mul_1H11.clamp(max=MAX_SCALE_MUL).exp()
        return F.normalize(query, dim=-1) * scale, F.normalize(key, dim=-1), value

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None, kv_cache: Optional[KVCache] = None,
                cache_tokens: Optional[int] = None, logits_fn: Optional[LogitsFn] = None) -> torch.Tensor:
        """Attend from x (B, L, C) to the cached keys followed by x's own keys.

        attn_bias: additive mask broadcastable to (B, H, L, L_cache + L) (0 / -inf for masking).
        cache_tokens: how many leading tokens of x are appended to `kv_cache` (default: all); the
            rest (e.g. per-scale class tokens) are attended to in this call but never cached.
        logits_fn: if given, called on the pre-softmax logits (B, H, L, L_k) including attn_bias;
            its return value is softmaxed instead. Forces the explicit (non-SDPA) path, except for a
            `LastRowKeyBias`, which sees the last row's logits and returns a key bias for SDPA.
        """
        batch, length, channels = x.shape
        query, key, value = self.project_qkv(x)
        if kv_cache is not None:
            key, value = kv_cache.attend_to(key, value, keep=cache_tokens)
        if logits_fn is None:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_bias, scale=1.0)
        elif isinstance(logits_fn, LastRowKeyBias):
            last_row = query[:, :, -1:] @ key.transpose(-2, -1)  # (B, H, 1, L_k)
            if attn_bias is not None:
                last_row = last_row + attn_bias[..., -1:, :]
            bias = logits_fn.key_bias(last_row.squeeze(2))
            if bias is not None:
                bias = bias[:, None, None, :].to(query.dtype)  # (B, 1, 1, L_k)
                attn_bias = bias if attn_bias is None else attn_bias + bias
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_bias, scale=1.0)
        else:
            logits = query @ key.transpose(-2, -1)  # (B, H, L_q, L_k)
            if attn_bias is not None:
                logits = logits + attn_bias
            out = logits_fn(logits).softmax(dim=-1) @ value
        return self.proj(out.transpose(1, 2).reshape(batch, length, channels))
