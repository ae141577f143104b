"""Codebook-token diagnostics of a tokenised image set (HIERAMP paper, section 5).

From the occurrence counts n_i of the codebook tokens at one scale (or pooled over a stage's
scales): entropy H = -sum_i p_i ln p_i with p_i = n_i / sum_j n_j (in nats), and coverage =
(tokens used at least once) / (codebook size). Dataset level pools every image; class level pools
the images of one class. Figure 3 counts, per scale and per stage, the classes whose entropy or
coverage increased, decreased or stayed the same from one run to another; Figure 4 maps, for one
class, how many distinct tokens appear at each position of each scale.

Stages are the pyramid's (`ddbench.generators.var.configs.STAGES`, named as HIERAMP does): coarse, mid and fine split scales 1..N-1 in three (N = 10: 1-3, 4-6, 7-9;
digits' 6 scales: 1-2, 3-4, 5); scale 0 (one token per image) counts as coarse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ddbench.core.errors import ConfigError
from ddbench.generators.var.configs import STAGES, stage_of_scale

METRICS = ("entropy", "coverage")
OUTCOMES = ("increased", "decreased", "unchanged")


@dataclass
class TokenSet:
    """Per-scale token indices of N images: indices[s] is (N, side_s * side_s) int64, row-major."""

    indices: list[np.ndarray]
    labels: np.ndarray  # (N,) class index of each image
    patch_nums: tuple[int, ...]
    vocab_size: int
    class_names: list[str]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.patch_nums):
            raise ConfigError(f"{len(self.indices)} token maps for a pyramid of {len(self.patch_nums)} scales")
        for scale, (tokens, side) in enumerate(zip(self.indices, self.patch_nums)):
            if tokens.shape != (len(self.labels), side * side):
                raise ConfigError(f"scale {scale}: token map shape {tokens.shape}, expected ({len(self.labels)}, {side * side})")
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
                raise ConfigError(f"scale {scale}: token ids outside the codebook 0..{self.vocab_size - 1}")

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def of_class(self, class_index: int) -> "TokenSet":
        chosen = self.labels == class_index
        return TokenSet([tokens[chosen] for tokens in self.indices], self.labels[chosen], self.patch_nums,
                        self.vocab_size, self.class_names)


def stages_of(num_scales: int) -> dict[str, list[int]]:
    """{"coarse": [scales], "mid": [...], "fine": [...]} for a pyramid of `num_scales` scales."""
    grouped: dict[str, list[int]] = {name: [] for name in STAGES}
    for scale in range(num_scales):
        grouped[STAGES[stage_of_scale(scale, num_scales)]].append(scale)
    return grouped


def token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Occurrences of every codebook id in `tokens` (any shape), (vocab_size,) int64."""
    return np.bincount(tokens.ravel().astype(np.int64), minlength=vocab_size)


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy in nats of the distribution n_i / sum n. Summed over sorted counts, so two
    count vectors that are permutations of each other give bit-identical values."""
    used = np.sort(counts[counts > 0]).astype(np.float64)
    if used.size == 0:
        return 0.0
    p = used / used.sum()
    return float(-(p * np.log(p)).sum())


def coverage(counts: np.ndarray) -> float:
    """Share of the codebook used at least once."""
    return float(np.count_nonzero(counts)) / counts.size


def _usage(counts: np.ndarray) -> dict[str, Any]:
    return {"entropy": entropy(counts), "coverage": coverage(counts), "used": int(np.count_nonzero(counts)),
            "tokens": int(counts.sum())}


def usage(tokens: TokenSet) -> dict[str, Any]:
    """Entropy and coverage per scale and per stage (stage counts pool the stage's scales)."""
    per_scale_counts = [token_counts(scale_tokens, tokens.vocab_size) for scale_tokens in tokens.indices]
    per_scale = [{"scale": scale, "side": side, **_usage(counts)}
                 for scale, (side, counts) in enumerate(zip(tokens.patch_nums, per_scale_counts))]
    per_stage = {name: {"scales": scales, **_usage(sum(per_scale_counts[s] for s in scales))}
                 for name, scales in stages_of(tokens.num_scales).items() if scales}
    return {"per_scale": per_scale, "per_stage": per_stage}


def unique_per_position(tokens: TokenSet) -> list[np.ndarray]:
    """Per scale, (side, side) counts of distinct token ids over the images at each position (Figure 4)."""
    maps = []
    for scale_tokens, side in zip(tokens.indices, tokens.patch_nums):
        sorted_tokens = np.sort(scale_tokens, axis=0)  # (N, l): distinct values = 1 + changes down a column
        distinct = 1 + np.count_nonzero(np.diff(sorted_tokens, axis=0), axis=0) if len(scale_tokens) else np.zeros(side * side)
        maps.append(np.asarray(distinct, dtype=np.int64).reshape(side, side))
    return maps


def summary(tokens: TokenSet) -> dict[str, Any]:
    """Everything `ddbench analyze tokens` writes for one run: dataset and per-class usage."""
    present = sorted(set(int(label) for label in tokens.labels))
    return {
        "entropy_unit": "nats",
        "coverage": "tokens used at least once / codebook size",
        "vocab_size": tokens.vocab_size,
        "patch_nums": list(tokens.patch_nums),
        "stages": stages_of(tokens.num_scales),
        "images": int(len(tokens.labels)),
        "dataset": usage(tokens),
        "classes": {tokens.class_names[c]: usage(tokens.of_class(c)) for c in present},
    }


def _outcome(before: float, after: float, tolerance: float) -> str:
    if after > before + tolerance:
        return "increased"
    if after < before - tolerance:
        return "decreased"
    return "unchanged"


def compare_classes(base: dict[str, Any], other: dict[str, Any], tolerance: float = 1e-9) -> dict[str, Any]:
    """Figure 3: per scale and per stage, how many classes' entropy and coverage increased, decreased
    or stayed within `tolerance` going from `base` to `other` (two `summary` results)."""
    if base["patch_nums"] != other["patch_nums"] or base["vocab_size"] != other["vocab_size"]:
        raise ConfigError("the two runs were tokenised with different VQ-VAEs (pyramids or codebooks differ); "
                          "compare runs of the same generator")
    classes = sorted(set(base["classes"]) & set(other["classes"]), key=list(base["classes"]).index)
    if not classes:
        raise ConfigError("the two runs share no class; compare runs of the same dataset")

    def tally(level: str, keys: Sequence) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for metric in METRICS:
            rows = []
            for key in keys:
                counts = dict.fromkeys(OUTCOMES, 0)
                for name in classes:
                    before = base["classes"][name][level][key][metric]
                    after = other["classes"][name][level][key][metric]
                    counts[_outcome(before, after, tolerance)] += 1
                rows.append({"at": key, **counts, **{f"{o}_percent": 100.0 * counts[o] / len(classes) for o in OUTCOMES}})
            out[metric] = rows
        return out

    num_scales = len(base["patch_nums"])
    stage_keys = [name for name in STAGES if name in base["dataset"]["per_stage"]]
    return {
        "classes": len(classes),
        "tolerance": tolerance,
        "per_scale": tally("per_scale", list(range(num_scales))),
        "per_stage": tally("per_stage", stage_keys),
        "dataset_delta": {
            level: [{"at": key, **{m: other["dataset"][level][key][m] - base["dataset"][level][key][m] for m in METRICS}}
                    for key in (range(num_scales) if level == "per_scale" else stage_keys)]
            for level in ("per_scale", "per_stage")
        },
    }
