"""Training the small VQ-VAE and VAR presets, with checkpoints that resume after an interruption.

Every batch is drawn from a generator seeded by (seed, stage, step), so a run resumed from its last
checkpoint sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ddbench.core.errors import CheckpointError
from ddbench.core.progress import NullProgress, Progress
from ddbench.core.seeding import seed_everything, torch_generator
from ddbench.generators.var.configs import TrainConfig, VARPreset
from ddbench.generators.var.loading import build_var, build_vqvae, load_vqvae, strict_load
from ddbench.generators.var.transformer import VARTransformer
from ddbench.generators.var.vqvae import VQVAE

VQVAE_WEIGHTS, VAR_WEIGHTS = "vqvae.pth", "var.pth"


# ----- data -----
def load_images(dataset, resolution: int, progress: Progress = NullProgress(), description: str = "loading images"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a torch dataset of (PIL image, label) as uint8 (N, 3, r, r) plus labels (N,)."""
    images = torch.empty(len(dataset), 3, resolution, resolution, dtype=torch.uint8)
    labels = torch.empty(len(dataset), dtype=torch.long)
    with progress.task(description, total=len(dataset)) as bar:
        for index in range(len(dataset)):
            image, label = dataset[index]
            image = square_resize(image.convert("RGB"), resolution)
            images[index] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            labels[index] = int(label)
            bar.advance()
    return images, labels


def square_resize(image: Image.Image, resolution: int) -> Image.Image:
    """Centre-crop to a square, then resize (bicubic) to resolution x resolution."""
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return image if image.size == (resolution, resolution) else image.resize((resolution, resolution), Image.BICUBIC)


def to_signed_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the VQ-VAE's input range."""
    return images_uint8.float().div(127.5).sub(1.0)


def psnr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Mean per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = (reference - estimate).square().flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


def batch_indices(seed: int, stage: str, step: int, count: int, batch_size: int) -> torch.Tensor:
    generator = torch_generator(seed, f"var-train-{stage}-batch", step)
    return torch.randint(count, (batch_size,), generator=generator)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on biases, norms, embeddings of scale or position)."""
    decay = [p for name, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "pos_" not in name]
    no_decay = [p for name, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "pos_" in name)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=config.betas)


# ----- checkpoints -----
def _save_atomic(payload: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config_dict: dict) -> int:
    """Load a training checkpoint if present; returns the step to continue from (0 when none)."""
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"training checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
    if state.get("config") != config_dict:
        raise CheckpointError(f"training checkpoint {path} was made with another configuration; "
                              "delete it or use another --out folder")
    strict_load(model, state["model"], str(path))
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def resumable_train_loop(stage: str, model: torch.nn.Module, config: TrainConfig, out_dir: Path, config_dict: dict,
                loss_fn: Callable[[int], tuple[torch.Tensor, dict]], progress: Progress,
                stop_after: Optional[int] = None) -> dict:
    """Shared optimisation loop: warm-up/cosine LR, grad clip, periodic atomic checkpoints, resume."""
    optimizer = make_optimizer(model, config)
    checkpoint_path = out_dir / f"{stage}_last.ckpt"
    start = _resume(checkpoint_path, model, optimizer, config_dict)
    if start:
        progress.log(f"resuming {stage} training from step {start} ({checkpoint_path})")
    seed_everything(config.seed)
    model.train()
    started, metrics = time.perf_counter(), {}
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    with progress.task(f"training {stage}", total=config.steps) as bar:
        bar.advance(start)
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            loss, metrics = loss_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            bar.advance()
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
                _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                              "config": config_dict}, checkpoint_path)
    model.eval()
    return {"steps": end, "resumed_from": start, "seconds": time.perf_counter() - started,
            "finished": end == config.steps, **{k: float(v) for k, v in metrics.items()}}


# ----- VQ-VAE -----
def train_vqvae(preset: VARPreset, train_set, val_set, out_dir: str | Path, *, device: str | torch.device = "cpu",
                progress: Progress = NullProgress(), train_config: Optional[TrainConfig] = None,
                stop_after: Optional[int] = None) -> dict:
    """Train the preset's VQ-VAE (MSE reconstruction + VQ loss, straight-through); writes vqvae.pth.

    Returns a summary with parameter count, seconds, steps and the validation PSNR (dB).
    """
    out_dir, config = Path(out_dir), train_config or preset.vqvae_train
    images, _ = load_images(train_set, preset.resolution, progress, "loading training images")
    torch.manual_seed(config.seed)
    model = build_vqvae(preset.vqvae).to(device)
    config_dict = {"preset": preset.name, "model": asdict(preset.vqvae), "train": asdict(config)}

    def loss_fn(step: int):
        batch = to_signed_unit(images[batch_indices(config.seed, "vqvae", step, len(images), config.batch_size)]).to(device)
        reconstruction, vq_loss = model(batch)
        reconstruction_loss = F.mse_loss(reconstruction, batch)
        return reconstruction_loss + vq_loss, {"reconstruction_loss": reconstruction_loss.detach(), "vq_loss": vq_loss.detach()}

    summary = resumable_train_loop("vqvae", model, config, out_dir, config_dict, loss_fn, progress, stop_after)
    if summary["finished"]:
        torch.save(model.state_dict(), out_dir / VQVAE_WEIGHTS)
        summary["val_psnr_db"] = evaluate_psnr(model, val_set, preset.resolution, device, progress)
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    return summary


@torch.no_grad()
def evaluate_psnr(vqvae: VQVAE, dataset, resolution: int, device: str | torch.device = "cpu",
                  progress: Progress = NullProgress(), batch_size: int = 256) -> float:
    images, _ = load_images(dataset, resolution, progress, "loading validation images")
    images = to_signed_unit(images)
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


def train_var(preset: VARPreset, train_set, vqvae: VQVAE | str | Path, out_dir: str | Path, *,
              device: str | torch.device = "cpu", progress: Progress = NullProgress(),
              train_config: Optional[TrainConfig] = None, stop_after: Optional[int] = None) -> dict:
    """Train the preset's VAR transformer on token cross-entropy with teacher forcing; writes var.pth."""
    out_dir, config = Path(out_dir), train_config or preset.var_train
    if not isinstance(vqvae, VQVAE):
        vqvae = load_vqvae(vqvae, patch_nums=preset.vqvae.patch_nums)
    vqvae = vqvae.to(device).eval()
    images, labels = load_images(train_set, preset.resolution, progress, "loading training images")
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
                       drop_generator=torch_generator(config.seed, "var-train-cond-drop", step, device=device))
        target = torch.cat(batch_tokens, dim=1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"token_loss": loss.detach(), "token_accuracy": accuracy}

    summary = resumable_train_loop("var", model, config, out_dir, config_dict, loss_fn, progress, stop_after)
    if summary["finished"]:
        torch.save(model.state_dict(), out_dir / VAR_WEIGHTS)
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
