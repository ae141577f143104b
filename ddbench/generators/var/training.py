"""Training the small VQ-VAE and VAR presets on the shared training base (`ddbench.training.fit`),
with checkpoints that resume after an interruption.

Every batch is drawn from a generator seeded by (seed, stage, step), so a run resumed from its last
checkpoint sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ddbench.core import distributed
from ddbench.core.progress import NullProgress, Progress
from ddbench.core.seeding import seed_everything, torch_generator
from ddbench.generators.var.configs import TrainConfig, VARPreset
from ddbench.generators.var.loading import build_var, build_vqvae, load_vqvae
from ddbench.generators.var.transformer import VARTransformer
from ddbench.generators.var.vqvae import VQVAE
from ddbench.training import (
    Precision,
    ResumePoint,
    StreamingImageSet,
    TensorImageSet,
    center_square_resize,
    fit,
    load_tensor_set,
    local_share,
    sampled_batch,
    shard_key,
)
from ddbench.training.checkpoint import save_atomic
from ddbench.training.steps import StepLoss

VQVAE_WEIGHTS, VAR_WEIGHTS = "vqvae.pth", "var.pth"


# ----- data -----
def load_images(dataset, resolution: int, progress: Progress = NullProgress(), description: str = "training images"
                ) -> TensorImageSet:
    """All images of a torch dataset of (PIL image, label), centre-cropped to a square and resized
    (bicubic) to resolution x resolution, as uint8 (N, 3, r, r) plus labels (N,)."""
    return load_tensor_set(dataset, center_square_resize(resolution), description, progress)


def to_signed_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the VQ-VAE's input range."""
    return images_uint8.float().div(127.5).sub(1.0)


def psnr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Mean per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = (reference - estimate).square().flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


def batch_indices(seed: int, stage: str, step: int, count: int, batch_size: int) -> torch.Tensor:
    """This process's examples of one step of `stage`: the global batch drawn with replacement from
    (seed, stage, step), and under torchrun this rank's share of it (`training.local_share`)."""
    return local_share(sampled_batch(seed, f"var-train-{stage}-batch", step, count, batch_size))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """The stage's optimiser (AdamW); weight decay only on matrices (not on biases, norms, embeddings of scale or position)."""
    return config.optim.build(model, no_decay_names=("pos_",))


def fit_stage(stage: str, model: torch.nn.Module, config: TrainConfig, out_dir: Path, identity: dict,
              step_loss: StepLoss, progress: Progress, stop_after: Optional[int] = None) -> dict:
    """One VAR-family training stage on the shared base: AdamW (`make_optimizer`), linear warm-up
    then cosine to a tenth of the peak, global grad-norm clipping, a resumable checkpoint at
    `<out_dir>/<stage>_last.ckpt` every `config.checkpoint_every` steps. Returns a JSON-able summary."""
    seed_everything(config.seed)
    result = fit(model, make_optimizer(model, config), step_loss, total_steps=config.steps,
                 schedule=config.schedule(),
                 grad_clip=config.optim.grad_clip,
                 precision=Precision(next(model.parameters()).device, config.optim.precision),
                 resume=ResumePoint(out_dir / f"{stage}_last.ckpt", config.checkpoint_every, identity),
                 stop_after=stop_after, progress=progress, description=f"training {stage}",
                 save_on_interrupt=True)  # every draw comes from (seed, step): any step resumes exactly
    return result.summary()


# ----- VQ-VAE -----
def train_vqvae(preset: VARPreset, train_set, val_set, out_dir: str | Path, *, device: str | torch.device = "cpu",
                progress: Progress = NullProgress(), train_config: Optional[TrainConfig] = None,
                stop_after: Optional[int] = None) -> dict:
    """Train the preset's VQ-VAE (MSE reconstruction + VQ loss, straight-through); writes vqvae.pth.

    Returns a summary with parameter count, seconds, steps and the validation PSNR (dB).
    """
    out_dir, config = Path(out_dir), train_config or preset.vqvae_train
    images = load_images(train_set, preset.resolution, progress).images
    torch.manual_seed(config.seed)
    model = build_vqvae(preset.vqvae).to(device)
    config_dict = {"preset": preset.name, "model": asdict(preset.vqvae), "train": asdict(config)}

    def loss_fn(step: int):
        batch = to_signed_unit(images[batch_indices(config.seed, "vqvae", step, len(images), config.batch_size)]).to(device)
        reconstruction, vq_loss = model(batch)
        reconstruction_loss = F.mse_loss(reconstruction, batch)
        return reconstruction_loss + vq_loss, {"reconstruction_loss": reconstruction_loss.detach(), "vq_loss": vq_loss.detach()}

    summary = fit_stage("vqvae", model, config, out_dir, config_dict, loss_fn, progress, stop_after)
    if summary["finished"] and distributed.is_writer():
        save_atomic(model.state_dict(), out_dir / VQVAE_WEIGHTS)  # never a torn file that looks finished
        summary["val_psnr_db"] = evaluate_psnr(model, val_set, preset.resolution, device, progress)
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    return summary


@torch.no_grad()
def evaluate_psnr(vqvae: VQVAE, dataset, resolution: int, device: str | torch.device = "cpu",
                  progress: Progress = NullProgress(), batch_size: int = 256) -> float:
    images = to_signed_unit(load_images(dataset, resolution, progress, "validation images").images)
    reconstructions = torch.cat([vqvae.reconstruct(images[i:i + batch_size].to(device)).cpu()
                                 for i in range(0, len(images), batch_size)])
    return psnr(images, reconstructions)


# ----- VAR -----
@torch.no_grad()
def encode_dataset(vqvae: VQVAE, images_uint8: torch.Tensor, device: str | torch.device = "cpu",
                   batch_size: int = 256) -> list[torch.Tensor]:
    """Per-scale token indices of every image, a list of (N, pn*pn) long tensors."""
    chunks = [vqvae.image_to_indices(to_signed_unit(images_uint8[i:i + batch_size]).to(device))
              for i in range(0, len(images_uint8), batch_size)]
    return [torch.cat([chunk[scale] for chunk in chunks]).cpu() for scale in range(len(chunks[0]))]


@torch.no_grad()
def encode_split(vqvae: VQVAE, dataset, resolution: int, device: str | torch.device = "cpu",
                 progress: Progress = NullProgress(), description: str = "training images",
                 batch_size: Optional[int] = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(per-scale token indices, labels) of every image of a torch dataset of (PIL image, label),
    decoded (`center_square_resize`) and encoded batch by batch, so the images are never held: for
    ImageNet-1K the tokens take 1.7 GB (int16) where the 256 px pixels would take 250 GB.

    The default batch keeps encoder activations moderate (256 images up to 128 px, 64 at 256 px);
    the tokens equal `encode_dataset`'s over the same batches. Large splits decode in worker processes.
    """
    batch_size = batch_size or max(1, min(256, 2**22 // (resolution * resolution)))
    workers = 0 if len(dataset) < 512 else None
    stream = StreamingImageSet(dataset, center_square_resize(resolution), description, num_workers=workers)
    small = vqvae.config.vocab_size <= torch.iinfo(torch.int16).max
    chunks, labels = [], []
    with progress.task(f"encoding {description}", total=len(stream)) as bar:
        for images, batch_labels in stream.batches(batch_size):
            indices = vqvae.image_to_indices(to_signed_unit(images).to(device))
            chunks.append([scale.cpu().to(torch.int16) if small else scale.cpu() for scale in indices])
            labels.append(batch_labels)
            bar.advance(len(batch_labels))
    return [torch.cat([chunk[scale] for chunk in chunks]) for scale in range(len(chunks[0]))], torch.cat(labels)


def train_var(preset: VARPreset, train_set, vqvae: VQVAE | str | Path, out_dir: str | Path, *,
              device: str | torch.device = "cpu", progress: Progress = NullProgress(),
              train_config: Optional[TrainConfig] = None, stop_after: Optional[int] = None) -> dict:
    """Train the preset's VAR transformer on token cross-entropy with teacher forcing; writes var.pth."""
    out_dir, config = Path(out_dir), train_config or preset.var_train
    if not isinstance(vqvae, VQVAE):
        vqvae = load_vqvae(vqvae, patch_nums=preset.vqvae.patch_nums)
    vqvae = vqvae.to(device).eval()
    loaded = load_images(train_set, preset.resolution, progress)
    images, labels = loaded.images, loaded.labels
    with progress.task("encoding tokens", total=1) as bar:
        token_indices = encode_dataset(vqvae, images, device)
        bar.advance()
    model = build_var(preset.var, preset.vqvae).to(device)
    model.init_weights(torch_generator(config.seed, "var-init"))
    config_dict = {"preset": preset.name, "model": asdict(preset.var), "train": asdict(config)}
    total_tokens = model.total_tokens

    def loss_fn(step: int):
        chosen = batch_indices(config.seed, "var", step, len(labels), config.batch_size)
        batch_tokens = [scale[chosen].to(device) for scale in token_indices]
        with torch.no_grad():
            teacher_input = vqvae.quantize.teacher_forcing_input(batch_tokens)
        logits = model(labels[chosen].to(device), teacher_input,
                       drop_generator=torch_generator(config.seed, "var-train-cond-drop", step, *shard_key(), device=device))
        target = torch.cat(batch_tokens, dim=1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"token_loss": loss.detach(), "token_accuracy": accuracy}

    summary = fit_stage("var", model, config, out_dir, config_dict, loss_fn, progress, stop_after)
    if summary["finished"] and distributed.is_writer():
        save_atomic(model.state_dict(), out_dir / VAR_WEIGHTS)
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    summary["tokens_per_step"] = config.batch_size * total_tokens
    return summary


def training_step_function(model: VARTransformer, vqvae: VQVAE, token_indices: list[torch.Tensor],
                           labels: torch.Tensor, optimizer: torch.optim.Optimizer) -> Callable[[], float]:
    """One forward/backward/update on fixed tokens; used by the speed benchmark."""
    def step() -> float:
        with torch.no_grad():
            teacher_input = vqvae.quantize.teacher_forcing_input(token_indices)
        logits = model(labels, teacher_input)
        loss = F.cross_entropy(logits.flatten(0, 1), torch.cat(token_indices, dim=1).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach().item()
    return step
