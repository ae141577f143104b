"""Minimax fine-tuning of a DiT on one dataset (`ddbench minimax finetune`), on the shared step loop.

As `train_dit.py` + `run.sh`: only the Minimax trainable set learns (biases, the label table, the
gammas of blocks 0-13); AdamW lr 1e-3, weight decay 0, constant lr, no clipping; EMA 0.9999 from an
exact copy; batch 8, 8 epochs of a seeded permutation with drop_last; 10% label dropout; images
center-cropped (ADM style) and randomly flipped, encoded by the codec with a sampled posterior.
The loss is the diffusion loss plus the Minimax terms (`ddbench.methods.minimax.objective`). Unlike the
release, every draw is seeded from (seed, purpose, step) and the class memories are saved with the
checkpoint (`fit`'s stateful extras), so an interrupted fine-tune resumes exactly. The release samples from the step-12000
checkpoint of its ImageNet-woof run; here the EMA after the last epoch is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from ddbench.core import distributed
from ddbench.core.progress import NullProgress, Progress
from ddbench.core.seeding import torch_generator
from ddbench.generators.dit.codecs import Codec
from ddbench.generators.dit.diffusion import GaussianDiffusion
from ddbench.methods.minimax.objective import ClassMemories, MinimaxObjective, MinimaxWeights, minimax_trainable
from ddbench.generators.dit.model import DiT
from ddbench.training import (EpochBatches, ExponentialMovingAverage, OptimizerRecipe, Precision, ResumePoint, fit,
                              load_tensor_set, save_atomic)

MINIMAX_WEIGHTS = "minimax_ema.pt"  # the EMA weights, official layout + gammas


@dataclass(frozen=True)
class MinimaxFinetuneConfig:
    epochs: int = 8
    batch_size: int = 8
    optim: OptimizerRecipe = OptimizerRecipe(lr=1e-3)  # AdamW, no weight decay or clipping; bf16 on CUDA, fp32 on CPU
    ema_decay: float = 0.9999
    lambda_rep: float = 0.002
    lambda_div: float = 0.008
    memory_size: int = 64
    flip: bool = True  # RandomHorizontalFlip (off for digits: a mirrored digit is another shape)
    seed: int = 0


def adm_center_crop(resolution: int):
    """ADM's `center_crop_arr` (what train_dit.py uses): halve with BOX while the short side is >= 2x,
    resize the short side to `resolution` (BICUBIC), center-crop."""
    def transform(image: Image.Image) -> Image.Image:
        while min(*image.size) >= 2 * resolution:
            image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
        scale = resolution / min(*image.size)
        image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
        array = np.array(image)
        top, left = (array.shape[0] - resolution) // 2, (array.shape[1] - resolution) // 2
        return Image.fromarray(array[top:top + resolution, left:left + resolution])

    return transform


def trainable_state_dict(model: DiT) -> dict[str, torch.Tensor]:
    """Only the tensors Minimax trains (what differs from the base model)."""
    names = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    return {key: value for key, value in model.state_dict().items() if key in names}


def finetune_minimax(model: DiT, codec: Codec, train_set, class_labels: list[int], out_dir: str | Path, *,
                     resolution: int, config: MinimaxFinetuneConfig = MinimaxFinetuneConfig(),
                     device: str | torch.device = "cpu", progress: Progress = NullProgress(),
                     stop_after: Optional[int] = None, identity_extra: Optional[dict] = None) -> dict:
    """Fine-tune `model` (a base DiT, modified in place) on `train_set` (PIL, dataset class index);
    `class_labels[c]` is the generator label of dataset class c. Resumes from OUT/minimax_last.ckpt;
    when finished writes the EMA weights to OUT/minimax_ema.pt. Returns a JSON-ready summary."""
    out_dir, device = Path(out_dir), torch.device(device)
    images = load_tensor_set(train_set, adm_center_crop(resolution), "fine-tuning images", progress)
    model = model.to(device)
    trainable = minimax_trainable(model)
    latent_shape = (model.config.in_channels, model.config.input_size, model.config.input_size)
    memories = ClassMemories(len(class_labels), config.memory_size, latent_shape).to(device)
    ema = ExponentialMovingAverage(model, config.ema_decay)
    optimizer = config.optim.build(model)
    objective = MinimaxObjective(memories, MinimaxWeights(config.lambda_rep, config.lambda_div, config.memory_size),
                                 GaussianDiffusion())
    batches = EpochBatches(len(images.labels), config.batch_size, config.seed, "minimax-batches", drop_last=True)
    label_map = torch.tensor(class_labels, dtype=torch.long)
    identity = {"model": asdict(model.config), "finetune": asdict(config), "class_labels": list(class_labels),
                "codec": codec.name, **(identity_extra or {})}

    def step_loss(step: int):
        generator = torch_generator(config.seed, "minimax-step", step)
        chosen = batches.indices(step)
        pixels = images.images[chosen].float().div(127.5).sub(1.0)  # uint8 -> [-1, 1]
        if config.flip:
            flipped = torch.rand(len(chosen), generator=generator) < 0.5
            pixels = torch.where(flipped[:, None, None, None], pixels.flip(-1), pixels)
        class_ids = images.labels[chosen]
        t = torch.randint(0, objective.diffusion.num_steps, (len(chosen),), generator=generator)
        noise = torch.randn((len(chosen), *latent_shape), generator=generator)
        labels = model.drop_labels(label_map[class_ids], generator)
        encode_generator = torch_generator(config.seed, "minimax-encode", step, device=device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):  # the release encodes in float32
            latents = codec.encode(pixels.to(device), generator=encode_generator).float()
        return objective(model, latents, class_ids, labels.to(device), t.to(device), noise.to(device))

    result = fit(model, optimizer, step_loss, total_steps=config.epochs * batches.steps_per_epoch, ema=ema,
                 grad_clip=config.optim.grad_clip, precision=Precision(device, config.optim.precision),
                 stateful={"memories": memories},
                 resume=ResumePoint(out_dir / "minimax_last.ckpt", every=batches.steps_per_epoch, identity=identity),
                 steps_per_epoch=batches.steps_per_epoch, stop_after=stop_after, progress=progress,
                 description="Minimax fine-tuning", save_on_interrupt=True)  # draws per step, memories saved
    if result.finished:  # under torchrun one process writes (atomically) and the others wait for it
        if distributed.is_writer():
            save_atomic(ema.module.state_dict(), out_dir / MINIMAX_WEIGHTS)
        distributed.barrier("minimax-weights")
    return {**result.summary(), "trainable_tensors": len(trainable),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "steps_per_epoch": batches.steps_per_epoch}
