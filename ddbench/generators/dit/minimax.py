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

from collections import defaultdict, deque
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


class ClassMemories:
    """Per-class FIFO memories of real latents and detached generated x0 (each (C, H, W))."""

    def __init__(self, size: int):
        self.size = size
        self.real: dict[int, deque] = defaultdict(lambda: deque(maxlen=size))
        self.generated: dict[int, deque] = defaultdict(lambda: deque(maxlen=size))

    def add(self, class_id: int, real: torch.Tensor, generated: torch.Tensor) -> None:
        self.real[class_id].extend(real.detach())
        self.generated[class_id].extend(generated.detach())

    def state_dict(self) -> dict:
        return {"size": self.size,
                "real": {c: torch.stack(list(items)) for c, items in self.real.items() if items},
                "generated": {c: torch.stack(list(items)) for c, items in self.generated.items() if items}}

    def load_state_dict(self, state: dict) -> None:
        self.__init__(state["size"])
        for class_id, stacked in state["real"].items():
            self.real[int(class_id)].extend(stacked)
        for class_id, stacked in state["generated"].items():
            self.generated[int(class_id)].extend(stacked)


def minimax_terms(pred_xstart: torch.Tensor, latents: torch.Tensor, class_ids: torch.Tensor,
                  memories: ClassMemories, weights: MinimaxWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(representativeness, diversity) losses of one batch, then the memories take this batch."""
    representativeness = pred_xstart.new_zeros(())
    diversity = pred_xstart.new_zeros(())
    classes = sorted(set(class_ids.tolist()))
    for class_id in classes:
        members = class_ids.to(pred_xstart.device) == class_id
        predicted = pred_xstart[members].flatten(1)
        if memories.generated[class_id]:
            real = torch.stack(list(memories.real[class_id])).flatten(1)
            generated = torch.stack(list(memories.generated[class_id])).flatten(1)
            representativeness = representativeness + (1 - pairwise_cosine(predicted, real).min()) * weights.lambda_rep / len(classes)
            diversity = diversity + pairwise_cosine(predicted, generated).max() * weights.lambda_div / len(classes)
        memories.add(class_id, latents[members], pred_xstart[members])
    return representativeness, diversity


class MinimaxObjective:
    """Diffusion loss + Minimax terms for one batch of clean latents; holds the class memories."""

    def __init__(self, weights: MinimaxWeights = MinimaxWeights(), diffusion: GaussianDiffusion | None = None):
        self.weights = weights
        self.diffusion = diffusion or GaussianDiffusion()
        self.memories = ClassMemories(weights.memory_size)

    def __call__(self, model: Callable[..., torch.Tensor], latents: torch.Tensor, class_ids: torch.Tensor,
                 labels: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`labels`: the model's labels (after any label dropout); `class_ids`: the subset classes keying the memories."""
        terms = self.diffusion.training_losses(lambda x_t, model_t: model(x_t, model_t, labels), latents, t, noise)
        diffusion_loss = terms["loss"].mean()
        representativeness, diversity = minimax_terms(terms["pred_xstart"], latents, class_ids, self.memories, self.weights)
        total = diffusion_loss + representativeness + diversity
        return total, {"diffusion_loss": diffusion_loss.detach(), "representativeness": representativeness.detach(),
                       "diversity": diversity.detach()}
