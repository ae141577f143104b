"""`ddbench hieramp ...`: fine-tune a VAR checkpoint with per-scale class tokens.

Thin: parse options, call `ddbench.methods.hieramp`, print a JSON summary. Errors are ddbench
exceptions, which the top-level group turns into one red line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group(name="hieramp")
def hieramp_group() -> None:
    """HIERAMP: class-token fine-tuning of a VAR generator."""


@hieramp_group.command("finetune")
@click.option("--from", "from_ckpt", type=click.Path(), default=None,
              help="VAR (or HIERAMP) checkpoint to start from; digits: the shipped digits VAR.")
@click.option("--vqvae", "vqvae_ckpt", type=click.Path(), default=None, help="Its VQ-VAE; digits: the shipped one.")
@click.option("--dataset", required=True, help="Dataset to fine-tune on (its train split).")
@click.option("--data-root", type=click.Path(), default=None, help="Dataset folder (not needed for digits).")
@click.option("--out", type=click.Path(), default=None, help="Output folder (default $DDBENCH_HOME/hieramp/<dataset>).")
@click.option("--epochs", type=float, default=5.0, show_default=True, help="Passes over the train split (paper: 5).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak learning rate (warm-up, cosine).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default="fp32", show_default=True,
              help="bf16/fp16 autocast need CUDA; auto: bf16 on CUDA, fp32 on CPU.")
def finetune_command(from_ckpt, vqvae_ckpt, dataset, data_root, out, epochs, batch_size, lr, seed, device, precision):
    """Fine-tune with class tokens (token CE + class CE); resumes from OUT/hieramp_last.ckpt; writes
    OUT/var_hieramp.pth (for digits also the float16 digits_hieramp.pt and its sidecar JSON)."""
    from ddbench.core import paths
    from ddbench.core.device import resolve_device
    from ddbench.core.errors import ConfigError
    from ddbench.core.registry import create_dataset
    from ddbench.core.rich_progress import RichProgress
    from ddbench.methods.hieramp.finetune import FinetuneConfig, finetune_class_tokens

    config = FinetuneConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, precision=precision)
    out_dir = Path(out) if out else paths.home() / "hieramp" / dataset
    progress, resolved_device = RichProgress(), resolve_device(device)
    spec = create_dataset(dataset, root=data_root)
    if from_ckpt is None and vqvae_ckpt is None:
        from ddbench.generators.var.configs import get_preset
        from ddbench.methods.hieramp.digits_weights import finetune_digits

        if dataset != get_preset("digits").dataset:
            raise ConfigError(f"pass --from VAR_CKPT and --vqvae VQVAE_CKPT: only {get_preset('digits').dataset} "
                              f"has a VAR shipped in the package, not {dataset}")
        summary = finetune_digits(out_dir, spec, config=config, device=resolved_device, progress=progress)
    else:
        if not (from_ckpt and vqvae_ckpt):
            raise ConfigError("pass both --from VAR_CKPT and --vqvae VQVAE_CKPT")
        summary = finetune_class_tokens(from_ckpt, vqvae_ckpt, spec.split("train"), out_dir, config=config, val_set=spec.split("val"), device=resolved_device,
                                        progress=progress)
    click.echo(json.dumps(summary, indent=2, default=str))
