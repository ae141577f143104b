"""Minimax diffusion's fine-tuning objective (Gu et al., CVPR 2024; vimar-gu/MinimaxDiffusion `train_dit.py`).

- Trainable set: parameters whose official name contains bias, norm, gamma or y_embed (in DiT: every
  bias, the label table and the DiffFit gammas of blocks 0-13); everything else is frozen.
- Loss: the diffusion loss (MSE + VB, batch mean) plus, on the predicted x0 latents (not detached),
  for each class c of the batch whose generated memory is not empty:
  representativeness rep_c = 1 - min cos(pred_c, real memory of c) and diversity
  div_c = max cos(pred_c, generated memory of c), over all pairs;
  L = sum_c (lambda_rep rep_c + lambda_div div_c) / K, K the number of distinct classes in the batch
  (classes with an empty memory add nothing but count in K).
- Memories: per class (keyed by the subset class id), FIFO of the last `memory_size` real clean latents
  and detached predicted x0, updated after the loss of the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ddbench.generators.dit.diffusion import GaussianDiffusion

TRAINABLE_KEYWORDS = ("bias", "norm", "gamma", "y_embed")


def minimax_trainable(model: nn.Module) -> list[str]:
    """Mark the Minimax trainable set (requires_grad) on `model`; returns the trainable names in order."""
    names = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(keyword in name for keyword in TRAINABLE_KEYWORDS))
        if parameter.requires_grad:
            names.append(name)
    return names


@dataclass(frozen=True)
class MinimaxWeights:
    lambda_rep: float = 0.002  # `--lambda-pos`
    lambda_div: float = 0.008  # `--lambda-neg`
    memory_size: int = 64


def pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d) x (m, d) -> (n, m) cosine similarities, a.b / (|a| |b|) as the release computes them."""
    return (a @ b.T) / (a.norm(dim=-1)[:, None] * b.norm(dim=-1)[None, :])


class ClassMemories(nn.Module):
    """Per-class memories of the last `size` real latents and detached generated x0, as ring buffers.

    The loss only takes a min/max over a memory, so a ring buffer holds exactly what the release's
    FIFO lists hold. Tensors (not Python lists), so that its state_dict travels with the training
    checkpoint and a resumed fine-tune continues with the same memories.
    """

    def __init__(self, num_classes: int, size: int, latent_shape: tuple[int, ...]):
        super().__init__()
        self.size = size
        self.register_buffer("real", torch.zeros(num_classes, size, *latent_shape))
        self.register_buffer("generated", torch.zeros(num_classes, size, *latent_shape))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.long))  # items ever added per class

    def count(self, class_id: int) -> int:
        return min(int(self.seen[class_id]), self.size)

    def items(self, class_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, generated) of one class, each (n, C, H, W) with n <= size."""
        n = self.count(class_id)
        return self.real[class_id, :n], self.generated[class_id, :n]

    @torch.no_grad()
    def add(self, class_id: int, real: torch.Tensor, generated: torch.Tensor) -> None:
        for item_real, item_generated in zip(real, generated):
            slot = int(self.seen[class_id]) % self.size
            self.real[class_id, slot] = item_real.to(self.real.dtype)
            self.generated[class_id, slot] = item_generated.detach().to(self.generated.dtype)
            self.seen[class_id] += 1


def minimax_terms(pred_xstart: torch.Tensor, latents: torch.Tensor, class_ids: torch.Tensor,
                  memories: ClassMemories, weights: MinimaxWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(representativeness, diversity) losses of one batch, then the memories take this batch."""
    representativeness = pred_xstart.new_zeros(())
    diversity = pred_xstart.new_zeros(())
    classes = sorted(set(class_ids.tolist()))
    for class_id in classes:
        members = class_ids.to(pred_xstart.device) == class_id
        predicted = pred_xstart[members].flatten(1)
        if memories.count(class_id):
            real, generated = (items.flatten(1).clone() for items in memories.items(class_id))  # add() writes in place
            representativeness = representativeness + (1 - pairwise_cosine(predicted, real).min()) * weights.lambda_rep / len(classes)
            diversity = diversity + pairwise_cosine(predicted, generated).max() * weights.lambda_div / len(classes)
        memories.add(class_id, latents[members], pred_xstart[members])
    return representativeness, diversity


class MinimaxObjective:
    """Diffusion loss + Minimax terms for one batch of clean latents; holds the class memories."""

    def __init__(self, memories: ClassMemories, weights: MinimaxWeights = MinimaxWeights(),
                 diffusion: GaussianDiffusion | None = None):
        self.weights = weights
        self.diffusion = diffusion or GaussianDiffusion()
        self.memories = memories

    def __call__(self, model: Callable[..., torch.Tensor], latents: torch.Tensor, class_ids: torch.Tensor,
                 labels: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`labels`: the model's labels (after any label dropout); `class_ids`: the subset classes keying the memories."""
        terms = self.diffusion.training_losses(lambda x_t, model_t: model(x_t, model_t, labels), latents, t, noise)
        diffusion_loss = terms["loss"].mean()
        representativeness, diversity = minimax_terms(terms["pred_xstart"], latents, class_ids, self.memories, self.weights)
        total = diffusion_loss + representativeness + diversity
        return total, {"diffusion_loss": diffusion_loss.detach(), "representativeness": representativeness.detach(),
                       "diversity": diversity.detach()}
