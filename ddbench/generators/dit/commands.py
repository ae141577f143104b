"""`ddbench dit ...`: rebuild the shipped digits DiT, sample a grid.

Thin: parse options, call `ddbench.generators.dit`, print a summary. Top-level imports are click only.
"""

from __future__ import annotations

import json

import click


@click.group(name="dit")
def dit_group() -> None:
    """DiT generator (facebookresearch/DiT as released; the small shipped digits model)."""


def grid_options(command):
    """The options of a sample grid (`ddbench dit sample`, `ddbench minimax sample`)."""
    for option in reversed([
        click.option("--classes", default="0,1,2,3,4,5,6,7,8,9", show_default=True,
                     help="Generator labels, comma-separated."),
        click.option("--per-class", type=int, default=4, show_default=True),
        click.option("--steps", type=int, default=50, show_default=True),
        click.option("--cfg", type=float, default=4.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="auto", show_default=True),
        click.option("--out", type=click.Path(), required=True, help="PNG grid to write (one row per class)."),
    ]):
        command = option(command)
    return command


@dit_group.command("reproduce-digits")
@click.option("--out", type=click.Path(), required=True, help="Folder for checkpoints, float16 weights and digits.json.")
@click.option("--device", default="cpu", show_default=True, help="cpu keeps the result bit-comparable to the shipped one.")
def reproduce_digits_command(out, device):
    """Rebuild the shipped digits DiT (fixed seeds, resumable; copy the results into
    ddbench/generators/dit/weights/ to ship them). Its Minimax fine-tune: `ddbench minimax finetune --dataset digits`."""
    from ddbench.core.device import resolve_device
    from ddbench.terminal import RichProgress
    from ddbench.generators.dit.shipped import reproduce_digits_weights

    record = reproduce_digits_weights(out, device=resolve_device(device), progress=RichProgress())
    click.echo(json.dumps(record, indent=2, default=str))


@dit_group.command("sample")
@click.option("--weights", default=None, help="DiT checkpoint, diffusers folder or hub id (default: the shipped digits DiT).")
@click.option("--vae", default=None, help="Decoder for --weights: mse (default), ema, a folder, or pixels / bilinear2x.")
@grid_options
def sample_command(weights, vae, classes, per_class, steps, cfg, seed, device, out):
    """Sample a class-conditional image grid (each image from its own seeded generator)."""
    from ddbench.core.device import resolve_device
    from ddbench.generators.dit.codecs import CODECS, load_sd_vae, make_codec
    from ddbench.generators.dit.loading import load_dit
    from ddbench.generators.dit.sampling import SamplingOptions, sample_grid
    from ddbench.generators.dit.shipped import load_digits_dit
    from ddbench.generators.dit.training import DIGITS_PRESET

    resolved = resolve_device(device)
    model = load_dit(weights, device=resolved) if weights else load_digits_dit(resolved)
    vae = vae or ("mse" if weights else DIGITS_PRESET.codec)
    codec = make_codec(vae) if vae in CODECS else load_sd_vae(vae, resolved, needed_by="ddbench dit sample")
    class_list = [int(c) for c in classes.split(",") if c.strip()]
    grid = sample_grid(model, codec, class_list, per_class, SamplingOptions(steps=steps, cfg=cfg), seed, resolved)
    grid.save(out)
    click.echo(f"wrote {out} ({len(class_list) * per_class} images)")
