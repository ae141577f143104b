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
              help="VAR (or HIERAMP) checkpoint to start from; default: var_d16 from the weights table for "
                   "ImageNet-family datasets, the shipped digits VAR for digits.")
@click.option("--vqvae", "vqvae_ckpt", type=click.Path(), default=None, help="Its VQ-VAE (with --from).")
@click.option("--dataset", required=True, help="Dataset to fine-tune on (its train split).")
@click.option("--data-root", type=click.Path(), default=None, help="Dataset folder (not needed for digits).")
@click.option("--out", type=click.Path(), default=None,
              help="Output folder with --from or for digits (default $DDBENCH_HOME/hieramp/<dataset>); the "
                   "var_d16 route writes the weights table's slot, where `ddbench run` looks.")
@click.option("--epochs", type=float, default=None, help="Passes over the train split (default: the dataset's recipe).")
@click.option("--batch-size", type=int, default=None, help="Default: the dataset's recipe.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (warm-up, cosine); default: the recipe's.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default=None,
              help="bf16/fp16 autocast need CUDA; auto: bf16 on CUDA, fp32 on CPU (default: the recipe's).")
def finetune_command(from_ckpt, vqvae_ckpt, dataset, data_root, out, epochs, batch_size, lr, seed, device, precision):
    """Fine-tune with class tokens (token CE + class CE), resumable. ImageNet-family datasets start
    from var_d16 (paper recipe for imagenet1k, a cheaper documented one for subsets) and land in the
    weights table's slot; digits starts from the shipped digits VAR; --from starts anywhere."""
    from ddbench.core import paths
    from ddbench.core.device import resolve_device
    from ddbench.core.errors import ConfigError
    from ddbench.core.registry import create_dataset
    from ddbench.terminal import RichProgress
    from ddbench.methods.hieramp.finetune import FinetuneConfig
    from ddbench.training import with_settings

    changes = {key: value for key, value in dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                                  precision=precision).items() if value is not None}
    out_dir = Path(out) if out else paths.home() / "hieramp" / dataset
    progress, resolved_device = RichProgress(), resolve_device(device)
    spec = create_dataset(dataset, root=data_root)
    if from_ckpt or vqvae_ckpt:
        from ddbench.generators.class_map import generator_class_map
        from ddbench.generators.var.loading import checkpoint_num_classes
        from ddbench.methods.hieramp.finetune import finetune_class_tokens

        if not (from_ckpt and vqvae_ckpt):
            raise ConfigError("pass both --from VAR_CKPT and --vqvae VQVAE_CKPT")
        class_map = generator_class_map(spec, checkpoint_num_classes(from_ckpt), generator=from_ckpt)
        summary = finetune_class_tokens(from_ckpt, vqvae_ckpt, spec.split("train"), out_dir,
                                        config=with_settings(FinetuneConfig(), **changes), val_set=spec.split("val"),
                                        device=resolved_device, progress=progress, label_map=class_map.labels)
    elif getattr(spec, "imagenet1k_indices", None) is not None:
        from ddbench.methods.hieramp.subset_finetune import finetune_for_dataset, recipe_with

        summary = finetune_for_dataset(spec, config=recipe_with(spec, **changes), device=resolved_device,
                                       progress=progress)
    else:
        from ddbench.generators.var.configs import get_preset
        from ddbench.methods.hieramp.digits_weights import DIGITS_FINETUNE, finetune_digits

        if dataset != get_preset("digits").dataset:
            raise ConfigError(f"pass --from VAR_CKPT and --vqvae VQVAE_CKPT: {dataset} has no ImageNet-1K classes "
                              f"(for var_d16) and no VAR shipped in the package (only {get_preset('digits').dataset} has)")
        summary = finetune_digits(out_dir, spec, config=with_settings(DIGITS_FINETUNE, **changes), device=resolved_device,
                                  progress=progress)
    click.echo(json.dumps(summary, indent=2, default=str))
