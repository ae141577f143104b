"""`ddbench var ...`: train the small VQ-VAE and VAR presets, rebuild the shipped digits weights, sample.

Thin: parse options, call `ddbench.generators.var`, print a summary. Errors are ddbench exceptions,
which the top-level group turns into one red line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ddbench.generators.var.configs import PRESETS


def _progress():
    from ddbench.terminal import RichProgress

    return RichProgress()


def _out_dir(out: str | None, preset: str) -> Path:
    from ddbench.core import paths

    return Path(out) if out else paths.home() / "var" / preset


def _splits(preset, data_root: str | None):
    from ddbench.core.registry import create_dataset

    spec = create_dataset(preset.dataset, root=data_root)
    return spec.split("train"), spec.split("val")


def _train_config(preset_train, steps, batch_size, lr, seed, precision):
    from ddbench.training.optim import with_settings

    return with_settings(preset_train, steps=steps, batch_size=batch_size, lr=lr, seed=seed, precision=precision)


def _echo_summary(summary: dict) -> None:
    click.echo(json.dumps(summary, indent=2, default=str))


preset_option = click.option("--preset", type=click.Choice(sorted(PRESETS)), default="digits", show_default=True,
                             help="Small configuration (dataset, resolution, model sizes, recipe).")
common = [
    click.option("--data-root", type=click.Path(), default=None, help="Real dataset folder (not needed for digits)."),
    click.option("--out", type=click.Path(), default=None, help="Output folder (default $DDBENCH_HOME/var/<preset>)."),
    click.option("--steps", type=int, default=None, help="Override the preset's number of steps."),
    click.option("--batch-size", type=int, default=None, help="Override the preset's batch size."),
    click.option("--lr", type=float, default=None, help="Override the preset's peak learning rate."),
    click.option("--seed", type=int, default=None, help="Override the preset's seed."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default=None,
                 help="Training precision (default fp32); bf16/fp16 autocast need CUDA, auto: bf16 on CUDA."),
]


def training_options(function):
    for decorator in reversed([preset_option, *common]):
        function = decorator(function)
    return function


@click.group(name="var")
def var_group() -> None:
    """VAR generator: multi-scale VQ-VAE and next-scale transformer."""


@var_group.command("train-vqvae")
@training_options
def train_vqvae_command(preset, data_root, out, steps, batch_size, lr, seed, device, precision):
    """Train a preset's VQ-VAE; resumes from OUT/vqvae_last.ckpt; writes OUT/vqvae.pth."""
    from ddbench.core.device import resolve_device
    from ddbench.generators.var.configs import get_preset
    from ddbench.generators.var.training import train_vqvae

    config = get_preset(preset)
    train_set, val_set = _splits(config, data_root)
    summary = train_vqvae(config, train_set, val_set, _out_dir(out, preset), device=resolve_device(device),
                          progress=_progress(), train_config=_train_config(config.vqvae_train, steps, batch_size, lr, seed, precision))
    _echo_summary(summary)


@var_group.command("train")
@training_options
@click.option("--vqvae", "vqvae_path", type=click.Path(), default=None, help="VQ-VAE weights (default OUT/vqvae.pth).")
def train_var_command(preset, data_root, out, steps, batch_size, lr, seed, device, precision, vqvae_path):
    """Train a preset's VAR transformer on a trained VQ-VAE; resumes from OUT/var_last.ckpt; writes OUT/var.pth."""
    from ddbench.core.device import resolve_device
    from ddbench.core.errors import CheckpointError
    from ddbench.generators.var.configs import get_preset
    from ddbench.generators.var.training import VQVAE_WEIGHTS, train_var

    config = get_preset(preset)
    out_dir = _out_dir(out, preset)
    vqvae_file = Path(vqvae_path) if vqvae_path else out_dir / VQVAE_WEIGHTS
    if not vqvae_file.is_file():
        raise CheckpointError(f"VQ-VAE weights {vqvae_file} not found; run `ddbench var train-vqvae --preset {preset}"
                              f"{' --out ' + str(out) if out else ''}` first or pass --vqvae")
    train_set, _ = _splits(config, data_root)
    summary = train_var(config, train_set, vqvae_file, out_dir, device=resolve_device(device), progress=_progress(),
                        train_config=_train_config(config.var_train, steps, batch_size, lr, seed, precision))
    _echo_summary(summary)


@var_group.command("reproduce-digits")
@click.option("--out", type=click.Path(), required=True, help="Folder for checkpoints, float16 weights and digits.json.")
@click.option("--device", default="cpu", show_default=True, help="cpu keeps the result bit-comparable to the shipped one.")
def reproduce_digits_command(out, device):
    """Rebuild the digits weights shipped in the package (fixed seeds; copy the results into weights/)."""
    from ddbench.core.device import resolve_device
    from ddbench.generators.var.shipped import reproduce_digits_weights

    _echo_summary(reproduce_digits_weights(out, device=resolve_device(device), progress=_progress()))


@var_group.command("sample")
@click.option("--weights", type=click.Path(), default=None, help="var.pth (default: the shipped digits weights).")
@click.option("--vqvae", "vqvae_path", type=click.Path(), default=None, help="vqvae.pth matching --weights.")
@click.option("--classes", default="0,1,2,3,4,5,6,7,8,9", show_default=True, help="Class indices, comma-separated.")
@click.option("--per-class", type=int, default=4, show_default=True)
@click.option("--cfg", type=float, default=4.0, show_default=True)
@click.option("--top-k", type=int, default=900, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), required=True, help="PNG grid to write (one row per class).")
def sample_command(weights, vqvae_path, classes, per_class, cfg, top_k, top_p, seed, out):
    """Sample a class-conditional image grid."""
    import torch
    from PIL import Image

    from ddbench.core.errors import ConfigError
    from ddbench.core.seeding import torch_generator
    from ddbench.generators.var.loading import load_var
    from ddbench.generators.var.sampling import sample_images
    from ddbench.generators.var.shipped import load_digits_models

    if (weights is None) != (vqvae_path is None):
        raise ConfigError("pass both --weights and --vqvae, or neither (the shipped digits weights)")
    transformer, vqvae = load_digits_models() if weights is None else load_var(weights, vqvae=vqvae_path)
    class_list = [int(c) for c in classes.split(",") if c.strip()]
    labels = [c for c in class_list for _ in range(per_class)]
    images = sample_images(transformer, vqvae, labels, cfg=cfg, top_k=top_k, top_p=top_p,
                           generator=torch_generator(seed, "var-sample"))
    grid = images.view(len(class_list), per_class, *images.shape[1:]).permute(0, 3, 1, 4, 2)
    grid = grid.reshape(len(class_list) * images.shape[2], per_class * images.shape[3], 3)
    Image.fromarray((grid * 255).round().clamp(0, 255).to(torch.uint8).numpy()).save(out)
    click.echo(f"wrote {out} ({len(labels)} images)")
