"""Coarse-to-fine amplification (paper section 3.4, Algorithm 1; reference.md section 2).

At scale n, inside one chosen block, the attention logits (2B, H, l + 1, P + l + 1) are read:
the class-token query (last row) gives the saliency, the softmax of its logits over the scale's
l image keys averaged over heads, separately for every batch row (so each CFG half has its own).
The top rho share of those keys (k = max(1, round(rho * l))) gets +beta on its logit column for
every query row of the scale (`logit_bias`, the released code), or has its post-softmax weight
multiplied by beta and renormalised (`post_softmax`, the appendix wording; identical to adding
log(beta) to the logits, which is how it is computed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ddbench.core.errors import ConfigError
from ddbench.generators.var.attention import LastRowKeyBias
from ddbench.generators.var.configs import STAGES, stage_of_scale

MODES = ("logit_bias", "post_softmax")


# ----- the three operations of Algorithm 1 -----
def class_token_saliency(logits: torch.Tensor, num_earlier: int, length: int) -> torch.Tensor:
    """(B, H, Lq, Lk) logits -> (B, l): the class-token row's softmax over this scale's image keys,
    averaged over heads. Keys are laid out [P earlier image tokens, l current, class token]."""
    class_row = logits[:, :, -1, num_earlier:num_earlier + length]  # (B, H, l)
    return class_row.softmax(dim=-1).mean(dim=1)


def top_k_count(rho: float, length: int) -> int:
    """k = max(1, round(rho * l)), with Python's round (half to even), capped at l."""
    return min(length, max(1, round(rho * length)))


def top_rho_indicator(saliency: torch.Tensor, rho: float) -> torch.Tensor:
    """(B, l) saliency -> (B, l) bool marking the k most salient keys of each row."""
    k = top_k_count(rho, saliency.shape[-1])
    chosen = saliency.topk(k, dim=-1).indices
    return torch.zeros_like(saliency, dtype=torch.bool).scatter_(-1, chosen, True)


def amplify_logits(logits: torch.Tensor, indicator: torch.Tensor, num_earlier: int, beta: float,
                   mode: str = "logit_bias") -> torch.Tensor:
    """Add the amplification to the key columns of this scale's image tokens, for every query row.

    logits (B, H, Lq, Lk); indicator (B, l) bool. Returns a new tensor.
    """
    if mode == "logit_bias":
        bias = beta
    elif mode == "post_softmax":
        if beta <= 0:
            raise ConfigError(f"post_softmax amplification multiplies weights by beta; beta must be > 0, got {beta}")
        bias = math.log(beta)  # softmax(L + log b * a) == renormalised (softmax(L) * b^a)
    else:
        raise ConfigError(f"unknown amplification mode {mode!r}; use one of {', '.join(MODES)}")
    length = indicator.shape[-1]
    column_bias = indicator.to(logits.dtype) * bias  # (B, l)
    out = logits.clone()
    out[..., num_earlier:num_earlier + length] += column_bias[:, None, None, :]
    return out


def is_neutral(beta: float, mode: str) -> bool:
    """True when amplifying with beta changes nothing (0 for logit_bias, 1 for post_softmax)."""
    return beta == (0.0 if mode == "logit_bias" else 1.0)


# ----- schedules: one value, one per stage, or one per scale -----
def per_scale(values: Sequence[float], num_scales: int, name: str) -> list[float]:
    """Expand 1 value (all scales), 3 (coarse, mid, fine) or N (one per scale) to N values."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return values * num_scales
    if len(values) == 3:
        return [values[stage_of_scale(si, num_scales)] for si in range(num_scales)]
    if len(values) == num_scales:
        return values
    raise ConfigError(f"{name} takes 1 value, 3 (coarse, mid, fine) or {num_scales} (one per scale); got {values}")


def scales_of_stages(stages: str, num_scales: int) -> list[int]:
    """'full' -> 1..N-1; 'coarse', 'mid', 'fine' or a '+'-joined combination -> those stages' scales."""
    names = [part.strip() for part in stages.lower().split("+") if part.strip()]
    if names == ["full"]:
        return list(range(1, num_scales))
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise ConfigError(f"amp_stages {stages!r}: use full, or coarse/mid/fine joined with '+'")
    wanted = {STAGES.index(n) for n in names}
    return [si for si in range(1, num_scales) if stage_of_scale(si, num_scales) in wanted]


@dataclass
class AmplificationPlan:
    """Resolved per-scale settings: which scales, which blocks, beta and rho per scale, the mode."""

    scales: frozenset[int]
    blocks: tuple[int, ...]
    betas: list[float]
    rhos: list[float]
    mode: str = "logit_bias"

    @classmethod
    def resolve(cls, *, num_scales: int, depth: int, beta: Sequence[float], rho: Sequence[float],
                blocks: Sequence[int], stages: str = "full", scales: Sequence[int] = (),
                mode: str = "logit_bias") -> "AmplificationPlan":
        if mode not in MODES:
            raise ConfigError(f"amp_mode {mode!r}: use one of {', '.join(MODES)}")
        chosen = list(scales) if scales else scales_of_stages(stages, num_scales)
        bad = [s for s in chosen if not 0 <= s < num_scales]
        if bad:
            raise ConfigError(f"amp_scales {bad} out of range 0..{num_scales - 1}")
        resolved_blocks = tuple(sorted({b % depth for b in blocks if -depth <= b < depth}))
        if len(resolved_blocks) != len(set(blocks)):
            raise ConfigError(f"amp_blocks {tuple(blocks)} out of range for depth {depth} (use 0..{depth - 1} or "
                              "negative indices from the end, -2 = second to last)")
        rhos = per_scale(rho, num_scales, "rho")
        if any(not 0 <= r <= 1 for r in rhos):
            raise ConfigError(f"rho is a share of the keys, between 0 and 1; got {rho}")
        plan = cls(frozenset(chosen), resolved_blocks, per_scale(beta, num_scales, "beta"), rhos, mode)
        if mode == "post_softmax" and any(plan.betas[s] <= 0 for s in plan.scales):
            raise ConfigError(f"post_softmax multiplies the selected weights by beta; beta must be > 0, got {beta}")
        return plan

    def amplifies(self, scale_index: int) -> bool:
        return scale_index in self.scales and not is_neutral(self.betas[scale_index], self.mode)


@dataclass
class SaliencyRecord:
    """Saliency maps (B, l) per scale from the first amplification block, as seen before the bias."""

    maps: dict[int, torch.Tensor] = field(default_factory=dict)
    selected: dict[int, torch.Tensor] = field(default_factory=dict)


class ScaleAmplifier:
    """The logits function of one (scale, block): reads saliency, optionally adds the bias."""

    def __init__(self, plan: Optional[AmplificationPlan], scale_index: int, num_earlier: int, length: int,
                 record: Optional[SaliencyRecord] = None) -> None:
        self.plan, self.scale_index = plan, scale_index
        self.num_earlier, self.length, self.record = num_earlier, length, record

    def selected_keys(self, logits: torch.Tensor) -> Optional[torch.Tensor]:
        """Reads (and records) the saliency from the last query row of logits (B, H, Lq, Lk); returns the
        (B, l) indicator of the keys to amplify, or None when this scale is not amplified."""
        saliency = class_token_saliency(logits, self.num_earlier, self.length)
        amplify = self.plan is not None and self.plan.amplifies(self.scale_index)
        indicator = top_rho_indicator(saliency, self.plan.rhos[self.scale_index]) if amplify else None
        if self.record is not None and self.scale_index not in self.record.maps:
            self.record.maps[self.scale_index] = saliency.detach().clone()
            if indicator is not None:
                self.record.selected[self.scale_index] = indicator.clone()
        return indicator

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        indicator = self.selected_keys(logits)
        if indicator is None:
            return logits
        return amplify_logits(logits, indicator, self.num_earlier, self.plan.betas[self.scale_index], self.plan.mode)


class FusedScaleAmplifier(ScaleAmplifier, LastRowKeyBias):
    """The same amplification as a key bias in the fused attention's mask: attention forms only the
    class-token row's logits, not the explicit (B, H, Lq, Lk) ones (same tokens, float rounding apart)."""

    def key_bias(self, last_row_logits: torch.Tensor) -> Optional[torch.Tensor]:
        indicator = self.selected_keys(last_row_logits.unsqueeze(2))
        if indicator is None:
            return None
        batch, keys = last_row_logits.shape[0], last_row_logits.shape[-1]
        zeros = last_row_logits.new_zeros(batch, 1, 1, keys)
        return amplify_logits(zeros, indicator, self.num_earlier, self.plan.betas[self.scale_index], self.plan.mode)[:, 0, 0]
