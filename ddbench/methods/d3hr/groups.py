"""D3HR's class statistics and group sampling (generation/group_sampling.py: `select_algorithm_batch`,
`evaluate_distribution_batch`, `skewness_batch`; the statistics in dit_inversion_save_statistic.py's main).

- Statistics: per-dimension mean and unbiased variance of the flattened inverted latents over the
  class's images, for every kept row (a diagonal Gaussian; no covariance).
- Candidates: groups of `ipc` latents drawn as N(mu, sigma^2) per dimension, a batch at a time.
- Score S = ||mean_j G - mu|| + ||std_j G - sigma|| + 0.1 ||k||, std unbiased over the members j, and
  (upstream) k_j = n / ((n - 1)(n - 2)) sum_d z_jd^3 with z = (G - mean_j G) / std_j G and n = D, the
  number of DIMENSIONS: one skewness per member, summed over dimensions ("per_member"). "per_dimension"
  is the textbook reading: one sample skewness per dimension over the members (n = ipc).
- The lowest score wins; ties go to the first candidate (torch.min's first index within a batch, a
  strict < across batches). A candidate whose score is NaN never wins (upstream's torch.min would
  return the NaN and lose the whole batch).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

SKEWNESS = ("per_member", "per_dimension")


def class_statistics(trajectories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance), each (rows, D), of `trajectories` (N images, rows, D); variance unbiased."""
    if trajectories.shape[0] < 2:
        raise ValueError(f"class statistics need at least 2 images, got {trajectories.shape[0]}")
    return trajectories.mean(dim=0), trajectories.var(dim=0)


def skewness(groups: torch.Tensor, kind: str = "per_member") -> torch.Tensor:
    """(G, ipc) upstream's per-member values, or (G, D) per-dimension values, of groups (G, ipc, D)."""
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True)
    cubes = ((groups - mean) / std) ** 3
    if kind == "per_member":
        n = groups.shape[2]
        return cubes.sum(dim=2) * (n / ((n - 1) * (n - 2)))
    if kind == "per_dimension":
        n = groups.shape[1]
        return cubes.sum(dim=1) * (n / ((n - 1) * (n - 2)))
    raise ValueError(f"unknown skewness {kind!r}; use one of {', '.join(SKEWNESS)}")


def group_scores(groups: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, skew: str = "per_member",
                 skew_weight: float = 0.1) -> torch.Tensor:
    """(G,) scores of groups (G, ipc, D) against the class's mean and std (D,)."""
    mean_diff = torch.norm(groups.mean(dim=1) - mean, dim=1)
    std_diff = torch.norm(groups.std(dim=1) - std, dim=1)
    return mean_diff + std_diff + skew_weight * torch.norm(skewness(groups, skew), dim=1)


def draw_groups(mean: torch.Tensor, std: torch.Tensor, count: int, ipc: int, generator: torch.Generator) -> torch.Tensor:
    """(count, ipc, D) candidates, N(mean, std^2) per dimension (upstream: torch.normal on the expanded stats)."""
    return torch.normal(mean.expand(count, ipc, -1), std.expand(count, ipc, -1), generator=generator)


def batch_sizes(groups: int, per_batch: int) -> list[int]:
    """The candidate count of each batch for a budget of `groups` (the last batch may be smaller)."""
    full, rest = divmod(groups, per_batch)
    return [per_batch] * full + ([rest] if rest else [])


def choose_group(batches: Iterable[torch.Tensor], mean: torch.Tensor, std: torch.Tensor, skew: str = "per_member"
                 ) -> tuple[torch.Tensor, float, int]:
    """(the best group (ipc, D), its score, its index over all candidates) of candidate batches (G, ipc, D)."""
    best, best_score, best_index, seen = None, float("inf"), -1, 0
    for groups in batches:
        # a group with two equal members in some dimension (a tiny class std there) scores NaN (its
        # skewness divides by a zero std); it cannot win, and must not hide the rest of its batch
        scores = group_scores(groups, mean, std, skew).nan_to_num(nan=float("inf"))
        score, index = torch.min(scores, dim=0)
        if score.item() < best_score:
            best, best_score, best_index = groups[index].clone(), score.item(), seen + int(index)
        seen += groups.shape[0]
    if best is None:
        raise ValueError("no candidate group has a finite score (ipc >= 2 and a class variance > 0 are needed)")
    return best, best_score, best_index


def candidate_batches(mean: torch.Tensor, std: torch.Tensor, ipc: int, sizes: list[int],
                      generator_for: Callable[[int], torch.Generator]) -> Iterable[torch.Tensor]:
    """The candidate batches, batch b drawn from `generator_for(b)` alone."""
    for b, size in enumerate(sizes):
        yield draw_groups(mean, std, size, ipc, generator_for(b))
