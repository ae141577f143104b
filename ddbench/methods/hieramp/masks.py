"""Attention masks for per-scale class tokens (HIERAMP, paper section 3.3; reference.md section 2).

Training layout: every scale's image tokens are followed by that scale's class token,
`[r_0, c_0, r_1, c_1, ..., r_{N-1}, c_{N-1}]`. Who may attend to whom:
- an image token of scale n sees the image tokens of scales <= n and the class token of scale n;
- a class token of scale n sees only scale n: its image tokens and itself.
At sampling time the KV cache holds only image tokens (class-token keys and values are never
cached), so a step's keys are `[earlier image tokens, this scale's image tokens, c_n]`.
"""

from __future__ import annotations

from typing import Sequence

import torch


def interleaved_layout(patch_nums: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale of every position, is-class-token flag) of the training sequence, each (L + N,)."""
    scales, is_class = [], []
    for scale_index, side in enumerate(patch_nums):
        scales += [scale_index] * (side * side + 1)
        is_class += [False] * (side * side) + [True]
    return torch.tensor(scales), torch.tensor(is_class)


def class_token_positions(patch_nums: Sequence[int]) -> torch.Tensor:
    """(N,) positions of the class tokens in the training sequence."""
    return interleaved_layout(patch_nums)[1].nonzero().flatten()


def image_token_positions(patch_nums: Sequence[int]) -> torch.Tensor:
    """(L,) positions of the image tokens in the training sequence, in pyramid order."""
    return (~interleaved_layout(patch_nums)[1]).nonzero().flatten()


def allowed_keys(patch_nums: Sequence[int]) -> torch.Tensor:
    """(L + N, L + N) bool: entry [q, k] is True when position q may attend to position k."""
    scale, is_class = interleaved_layout(patch_nums)
    q_scale, k_scale = scale.view(-1, 1), scale.view(1, -1)
    q_class, k_class = is_class.view(-1, 1), is_class.view(1, -1)
    image_to_image = ~q_class & ~k_class & (k_scale <= q_scale)
    image_to_own_class = ~q_class & k_class & (k_scale == q_scale)
    class_to_own_scale = q_class & (k_scale == q_scale)
    return image_to_image | image_to_own_class | class_to_own_scale


def to_additive(allowed: torch.Tensor) -> torch.Tensor:
    """bool (Lq, Lk) -> (1, 1, Lq, Lk) float mask with 0 where allowed and -inf elsewhere."""
    return torch.where(allowed, 0.0, -torch.inf).view(1, 1, *allowed.shape)


def training_attention_bias(patch_nums: Sequence[int]) -> torch.Tensor:
    """(1, 1, L + N, L + N) additive mask for teacher forcing with class tokens."""
    return to_additive(allowed_keys(patch_nums))


def sampling_step_bias(patch_nums: Sequence[int], scale_index: int) -> torch.Tensor:
    """(1, 1, l + 1, P + l + 1) additive mask of one cached sampling step.

    Queries: the scale's l image tokens, then its class token. Keys: the P cached image tokens of the
    earlier scales, the scale's own image tokens, then its class token. Only the class-token row
    is restricted (to the last l + 1 keys); image tokens see everything present.
    """
    earlier = sum(side * side for side in patch_nums[:scale_index])
    length = patch_nums[scale_index] ** 2
    allowed = torch.ones(length + 1, earlier + length + 1, dtype=torch.bool)
    allowed[-1, :earlier] = False
    return to_additive(allowed)
