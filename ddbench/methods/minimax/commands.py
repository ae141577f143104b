"""`ddbench minimax finetune`: Minimax fine-tuning of a DiT on one dataset (resumable); `ddbench minimax
sample`: a grid from the shipped digits fine-tune.

Thin: parse options, call `ddbench.methods.minimax.finetune` (or `.digits`), print a JSON summary. Top-level imports
are click only; errors are ddbench exceptions, which the top-level group prints as one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ddbench.generators.dit.commands import grid_options


@click.group(name="minimax")
def minimax_group() -> None:
    """Minimax diffusion: fine-tune a DiT for dataset distillation."""


@minimax_group.command("finetune")
@click.option("--dataset", required=True, help="Dataset to fine-tune on (its train split).")
@click.option("--data-root", type=click.Path(), default=None, help="Dataset folder (not needed for digits).")
@click.option("--from", "from_ckpt", default=None,
              help="Base DiT: official .pt, diffusers folder or hub id (default: digits -> the shipped DiT, "
                   "ImageNet subsets -> DiT-XL-2-256x256.pt from the weights table).")
@click.option("--vae", default="mse", show_default=True, help="SD VAE for the latents (mse, ema, a folder).")
@click.option("--out", type=click.Path(), default=None, help="Output folder (default $DDBENCH_HOME/minimax/<dataset>).")
@click.option("--epochs", type=int, default=None, help="Default 8 (run.sh).")
@click.option("--batch-size", type=int, default=None, help="Default 8 (run.sh).")
@click.option("--lr", type=float, default=None, help="Default 1e-3 (train_dit.py).")
@click.option("--ema", "ema_decay", type=float, default=None, help="Default 0.9999 (digits recipe: 0.999).")
@click.option("--seed", type=int, default=None, help="Default 0.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default=None,
              help="Default auto: bf16 autocast on CUDA (the release trains in fp32/TF32), fp32 on CPU.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def finetune_command(dataset, data_root, from_ckpt, vae, out, epochs, batch_size, lr, ema_decay, seed, precision,
                     device):
    """Fine-tune with the Minimax objective; resumes from OUT/minimax_last.ckpt; writes OUT/minimax_ema.pt
    (for digits without --from: the shipped digits DiT and its recipe, also OUT/digits_minimax.pt and
    OUT/digits_minimax.json with the sample check: copy both into ddbench/methods/minimax/weights/ to ship them)."""
    from ddbench.core import paths
    from ddbench.core.device import resolve_device
    from ddbench.core.errors import ConfigError
    from ddbench.core.registry import create_dataset
    from ddbench.terminal import RichProgress
    from ddbench.generators.dit.codecs import load_sd_vae
    from ddbench.generators import weights
    from ddbench.generators.class_map import generator_class_map
    from ddbench.generators.dit.loading import load_dit
    from ddbench.generators.dit.loading import RELEASE_DIT
    from ddbench.generators.dit.training import DIGITS_PRESET
    from ddbench.methods.minimax.digits import DIGITS_MINIMAX, reproduce_digits_minimax
    from ddbench.methods.minimax.finetune import MinimaxFinetuneConfig, finetune_minimax
    from ddbench.training import with_settings

    out_dir = Path(out) if out else paths.home() / "minimax" / dataset
    progress, resolved = RichProgress(), resolve_device(device)
    given = {key: value for key, value in dict(epochs=epochs, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
                                               seed=seed, precision=precision).items() if value is not None}
    if from_ckpt is None and dataset == DIGITS_PRESET.dataset:  # the dataset the shipped small DiT knows
        summary = reproduce_digits_minimax(out_dir, config=with_settings(DIGITS_MINIMAX, **given), device=resolved,
                                           progress=progress)
    else:
        spec = create_dataset(dataset, root=data_root)
        if from_ckpt is None and getattr(spec, "imagenet1k_indices", None) is None:
            raise ConfigError(f"no base DiT for {dataset!r}; pass --from CHECKPOINT")
        base = from_ckpt or str(weights.resolve_weights(RELEASE_DIT, progress=progress, option="--from PATH"))
        model = load_dit(base, device=resolved)
        codec = load_sd_vae(vae, resolved, needed_by="ddbench minimax finetune", progress=progress)
        class_map = generator_class_map(spec, model.num_classes, generator=base)
        config = with_settings(MinimaxFinetuneConfig(), **given)
        summary = finetune_minimax(model, codec, spec.split("train"), list(class_map.labels),
                                   out_dir, resolution=model.config.input_size * codec.downsample, config=config,
                                   device=resolved, progress=progress,
                                   identity_extra={"base": base})
    click.echo(json.dumps(summary, indent=2, default=str))


@minimax_group.command("sample")
@grid_options
def sample_command(classes, per_class, steps, cfg, seed, device, out):
    """Sample a grid from the shipped digits DiT after its Minimax fine-tune (`ddbench dit sample`: before it)."""
    from ddbench.core.device import resolve_device
    from ddbench.terminal import RichProgress
    from ddbench.generators.dit.codecs import make_codec
    from ddbench.generators.dit.sampling import SamplingOptions, sample_grid
    from ddbench.generators.dit.training import DIGITS_PRESET
    from ddbench.methods.minimax.digits import load_digits_minimax

    resolved = resolve_device(device)
    model, _ = load_digits_minimax(resolved, RichProgress())
    class_list = [int(c) for c in classes.split(",") if c.strip()]
    grid = sample_grid(model, make_codec(DIGITS_PRESET.codec), class_list, per_class,
                       SamplingOptions(steps=steps, cfg=cfg), seed, resolved)
    grid.save(out)
    click.echo(f"wrote {out} ({len(class_list) * per_class} images)")
