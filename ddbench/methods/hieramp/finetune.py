"""Fine-tuning a VAR checkpoint with per-scale class tokens (paper section 4.1: 5 epochs, whole
backbone trainable, the VAR optimiser; loss = token CE + lambda * class CE).

Runs on the shared training base (through the VAR stage recipe `fit_stage`): resumable from
`<out>/hieramp_last.ckpt`, and every batch is drawn from (seed, step), so an interrupted run
continues exactly. Writes `<out>/var_hieramp.pth`,
a superset of the official VAR layout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from ddbench.core import distributed
from ddbench.core.progress import NullProgress, Progress
from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import VAR_OPTIMIZER, TrainConfig
from ddbench.generators.var.loading import Source
from ddbench.generators.var.training import batch_indices, encode_split, fit_stage
from ddbench.generators.var.vqvae import VQVAE
from ddbench.training import OptimizerRecipe, shard_key
from ddbench.training.checkpoint import save_atomic
from ddbench.methods.hieramp.model import ClassTokenVAR, class_token_loss, load_class_token_var

FINETUNED_WEIGHTS = "var_hieramp.pth"
STAGE = "hieramp"


@dataclass(frozen=True)
class FinetuneConfig:
    """Epochs count passes over the training split (batches drawn with replacement per step)."""

    epochs: float = 5.0
    batch_size: int = 32
    #: the VAR optimiser (paper section 4.1) at a fine-tune's lr
    optim: OptimizerRecipe = replace(VAR_OPTIMIZER, lr=5e-4)
    warmup_fraction: float = 0.05
    class_loss_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100

    def train_config(self, num_images: int) -> TrainConfig:
        steps = max(1, math.ceil(self.epochs * num_images / self.batch_size))
        return TrainConfig(steps=steps, batch_size=self.batch_size, optim=self.optim,
                           warmup_steps=max(1, round(self.warmup_fraction * steps)),
                           checkpoint_every=self.checkpoint_every, seed=self.seed)


@torch.no_grad()
def class_head_accuracy(model: ClassTokenVAR, vqvae: VQVAE, token_indices: list[torch.Tensor], labels: torch.Tensor,
                        batch_size: int = 256) -> dict:
    """Teacher-forced class-head top-1 on real images (given as their per-scale tokens), per scale
    and averaged over scales.

    `unconditional` runs the transformer with the null class, so the head must read the image
    tokens (the meaningful figure); `conditional` gives it the true label through AdaLN and the
    start token, as in training, where scale 0 trivially reads the label.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = {"unconditional": torch.zeros(len(model.patch_nums)), "conditional": torch.zeros(len(model.patch_nums))}
    for start in range(0, len(labels), batch_size):
        batch = [scale[start:start + batch_size].to(device).long() for scale in token_indices]
        batch_labels = labels[start:start + batch_size].to(device)
        teacher_input = vqvae.quantize.teacher_forcing_input(batch)
        for mode, cond_labels in (("conditional", batch_labels),
                                  ("unconditional", torch.full_like(batch_labels, model.num_classes))):
            _, class_logits = model.forward_with_class_logits(cond_labels, teacher_input)
            correct[mode] += (class_logits.argmax(-1) == batch_labels[:, None]).float().sum(0).cpu()
    model.train(was_training)
    summary = {}
    for mode, counts in correct.items():
        per_scale = (counts / len(labels)).tolist()
        summary[mode] = {"mean": round(sum(per_scale) / len(per_scale), 4), "per_scale": [round(a, 4) for a in per_scale]}
    return summary


def finetune_class_tokens(source: Source, vqvae: VQVAE | Source, train_set, out_dir: str | Path, *,
                          resolution: Optional[int] = None, config: FinetuneConfig = FinetuneConfig(), val_set=None,
                          device: str | torch.device = "cpu", progress: Progress = NullProgress(),
                          stop_after: Optional[int] = None, label_map: Optional[Sequence[int]] = None) -> dict:
    """Fine-tune `source` (a plain VAR or a HIERAMP checkpoint) on `train_set`; returns a summary.

    `resolution`: the VQ-VAE's image size (default: latent side x downsampling); images are resized
    to it. `label_map[i]` is the generator label of dataset class i (an ImageNet-1K VAR tuned on a
    subset keeps its 1,000 labels); default: the dataset's own labels. With `val_set`, the summary
    holds the class head's teacher-forced accuracy on it.
    """
    out_dir = Path(out_dir)
    model, vqvae, had_class_tokens = load_class_token_var(source, vqvae, device="cpu", init_seed=config.seed)
    model, vqvae = model.to(device).requires_grad_(True), vqvae.to(device).eval()
    resolution = resolution or vqvae.config.downsample * vqvae.patch_nums[-1]
    relabel = (lambda labels: torch.as_tensor(list(label_map), dtype=torch.long)[labels]) if label_map else (lambda labels: labels)
    token_indices, labels = encode_split(vqvae, train_set, resolution, device, progress)
    labels = relabel(labels)
    train_config = config.train_config(len(labels))
    config_dict = {"stage": STAGE, "model": asdict(model.config), "finetune": asdict(config),
                   "train": asdict(train_config)}

    def loss_fn(step: int):
        chosen = batch_indices(config.seed, STAGE, step, len(labels), config.batch_size)
        batch_tokens = [scale[chosen].to(device).long() for scale in token_indices]
        batch_labels = labels[chosen].to(device)
        with torch.no_grad():
            teacher_input = vqvae.quantize.teacher_forcing_input(batch_tokens)
        token_logits, class_logits = model.forward_with_class_logits(
            batch_labels, teacher_input,
            drop_generator=torch_generator(config.seed, "hieramp-cond-drop", step, *shard_key(), device=device))
        return class_token_loss(token_logits, class_logits, torch.cat(batch_tokens, dim=1), batch_labels,
                                config.class_loss_weight)

    summary = fit_stage(STAGE, model, train_config, out_dir, config_dict, loss_fn, progress, stop_after)
    summary.update(started_from_class_tokens=had_class_tokens, epochs=config.epochs, seed=config.seed,
                   parameters=sum(p.numel() for p in model.parameters()))
    if summary["finished"]:
        model.requires_grad_(False)
        if distributed.is_writer():
            save_atomic(model.state_dict(), out_dir / FINETUNED_WEIGHTS)  # never a torn file that looks finished
        distributed.barrier("finetuned-weights")  # the file exists for every rank from here on
        if val_set is not None:
            val_tokens, val_labels = encode_split(vqvae, val_set, resolution, device, progress, "validation images")
            summary["class_head_val_accuracy"] = class_head_accuracy(model, vqvae, val_tokens, relabel(val_labels))
    return summary
