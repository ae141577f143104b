"""CaO2's two stages after sampling (hatchetProject/CaO2 @ 6381e50, `sample_woof.py` and its siblings):

1. Selection (`select_candidates`): the scorer's softmax over the candidates of one class; the candidates
   it predicts as the class come first, ranked by their top probability (most confident first for
   woof/nette/ImageNet-1K, least confident first for ImageNet-100), then, when fewer than IPC are
   correct, the wrong ones in the same order.
2. Refinement (`refine_latents`): each selected clean latent x0 is a parameter optimised by a fresh
   Adam (lr 6e-4, 100 steps) on  mean((eps - eps_hat)^2) + 10 * max|eps - eps_hat|,  where eps is fixed
   per image, t is a respaced index drawn each step, x_t = q_sample(x0, t, eps) on the respaced
   schedule and eps_hat is the DiT's output for x_t with the null label, no CFG. Upstream gives the
   DiT the raw respaced index t (1..11), not the original step it stands for (20..220): kept as the
   default (`model_timestep="respaced"`), `"mapped"` is the fixed behaviour.
Images are refined together in one batch: Adam is elementwise and each image's loss depends on its
own latent only, so the batch computes each image's steps (up to the rounding of a batched matmul).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ddbench.generators.dit.diffusion import GaussianDiffusion
from ddbench.generators.dit.model import DiT

#: how the DiT sees the refinement timestep: the raw respaced index (upstream) or the original step
MODEL_TIMESTEPS = ("respaced", "mapped")
#: the refinement label: the null class (upstream's live line) or the class itself (its commented-out line)
REFINE_LABELS = ("null", "class")


def select_candidates(probabilities: torch.Tensor, label: int, count: int, most_confident_first: bool = True) -> list[int]:
    """Indices of `count` candidates from their (N, classes) softmax, as upstream: correct ones (argmax ==
    `label`) in confidence order (top probability, `torch.argsort`), filled with wrong ones in the same order."""
    confidence, predicted = probabilities.max(dim=1)
    # a stable sort gives ties in index order; upstream's argsort is not stable, but ties of float
    # probabilities do not occur in practice
    order = torch.argsort(confidence, descending=most_confident_first, stable=True).tolist()
    correct = set((predicted == label).nonzero().flatten().tolist())
    chosen = [i for i in order if i in correct][:count]
    if len(chosen) < count:
        chosen += [i for i in order if i not in correct][:count - len(chosen)]
    return chosen


def refine_timesteps(sampling_steps: int, divisor: int) -> list[int]:
    """The respaced indices a refinement step draws from: `range(1, steps // divisor)` (woof: 1..11,
    ImageNet-100 with divisor 8: 1..5)."""
    return list(range(1, sampling_steps // divisor))


@dataclass(frozen=True)
class RefineOptions:
    steps: int = 100
    lr: float = 6e-4
    linf_weight: float = 10.0
    model_timestep: str = "respaced"
    label: str = "null"
    #: upstream calls model.train(): in the official DiT that only drops labels (p = class_dropout_prob)
    #: to the null class, which changes nothing with the null label
    train_mode: bool = True


def refinement_loss(noise: torch.Tensor, eps_hat: torch.Tensor, linf_weight: float) -> torch.Tensor:
    """(B,) per image: mean squared error + linf_weight * max absolute error."""
    error = noise - eps_hat
    return error.pow(2).flatten(1).mean(1) + linf_weight * error.abs().flatten(1).amax(1)


def refine_latents(model: DiT, diffusion: GaussianDiffusion, x0: torch.Tensor, noise: torch.Tensor,
                   timesteps: torch.Tensor, labels: torch.Tensor, options: RefineOptions,
                   generators: Sequence[torch.Generator] = (),
                   on_step: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None
                   ) -> torch.Tensor:
    """Refined copies of the clean latents `x0` (B, C, H, W).

    `noise` (B, C, H, W): each image's fixed eps; `timesteps` (steps, B): the respaced index of each step;
    `labels` (B,): the DiT labels (the null class for upstream); `generators[i]` draws image i's label
    dropout of train mode (only with class labels). `on_step(k, loss, grad, latent)` sees each step's per-image
    loss, the gradient and the latent after the update."""
    if options.model_timestep not in MODEL_TIMESTEPS:
        raise ValueError(f"model_timestep must be one of {MODEL_TIMESTEPS}, got {options.model_timestep!r}")
    latent = torch.nn.Parameter(x0.detach().clone().float())
    optimizer = torch.optim.Adam([latent], lr=options.lr)
    channels = x0.shape[1]
    null = model.num_classes
    drop = options.train_mode and model.config.class_dropout_prob > 0 and bool((labels != null).any())
    for k in range(options.steps):
        t = timesteps[k].to(x0.device)
        optimizer.zero_grad()
        with torch.enable_grad():
            x_t = diffusion.q_sample(latent, t, noise)
            model_t = t if options.model_timestep == "respaced" else diffusion.model_timesteps(t)
            step_labels = dropped_labels(labels, generators, model.config.class_dropout_prob, null) if drop else labels
            eps_hat = model(x_t, model_t, step_labels)[:, :channels].float()
            loss = refinement_loss(noise, eps_hat, options.linf_weight)
            loss.sum().backward()
        grad = latent.grad.detach().clone() if on_step else None
        optimizer.step()
        if on_step:
            on_step(k, loss.detach(), grad, latent.detach().clone())
    return latent.detach()


def dropped_labels(labels: torch.Tensor, generators: Sequence[torch.Generator], probability: float, null: int
                   ) -> torch.Tensor:
    """Train mode's label dropout (the official LabelEmbedder.token_drop), one draw per image from its generator."""
    if len(generators) != len(labels):
        raise ValueError("label dropout needs one generator per image")
    draws = torch.cat([torch.rand(1, generator=g, device=g.device).cpu() for g in generators]).to(labels.device)
    return torch.where(draws < probability, torch.full_like(labels, null), labels)


def scorer_input(decoded: torch.Tensor, size: int) -> torch.Tensor:
    """Upstream's scorer input: the raw decoder output (no [0, 1] mapping, no normalisation) resized to
    `size` x `size` as torchvision 0.17's `Resize((224, 224))` does on tensors (bilinear, antialias)."""
    return F.interpolate(decoded.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def softmax_scores(scorer: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, classes) softmax of the scorer's logits, `batch_size` images per forward."""
    with torch.no_grad():
        logits = torch.cat([scorer(chunk) for chunk in inputs.split(batch_size)])
    return F.softmax(logits.float(), dim=1)


def per_image_timesteps(generators: Sequence[torch.Generator], choices: Sequence[int], steps: int) -> torch.Tensor:
    """(steps, B): image i's respaced index at each step, uniform over `choices`, from generators[i]."""
    pool = torch.tensor(list(choices), dtype=torch.long)
    columns = [pool[torch.randint(len(pool), (steps,), generator=g, device=g.device).cpu()] for g in generators]
    return torch.stack(columns, dim=1) if columns else torch.zeros(steps, 0, dtype=torch.long)
