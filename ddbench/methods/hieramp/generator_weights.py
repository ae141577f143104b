"""Where `var`, `var-cls` and `hieramp` get their generator when no checkpoint is given.

- digits: the VAR and the class-token VAR shipped in the package (the dataset's own 10 labels);
- any dataset with ImageNet-1K indices (woof, nette, imagenet100, imagenet1k): `var` samples the
  released `var_d16` through the weights table; `var-cls` and `hieramp` the class-token VAR
  fine-tuned from it for that dataset (`subset_finetune`), both with ImageNet-1K labels mapped
  from the dataset's classes.
Each source knows its class count and label space and the sha256 of its files before loading, so
the run identity and the manifest's class map exist before anything heavy happens.
"""

from __future__ import annotations

from ddbench.core.errors import CheckpointError
from ddbench.core.interfaces import DatasetSpec
from ddbench.generators.class_map import DATASET, IMAGENET1K
from ddbench.generators.sources import GeneratorWeights


# ----- digits: shipped in the package -----
def _shipped_digits_var(device, progress):
    from ddbench.generators.var.shipped import load_digits_models

    model, vqvae = load_digits_models(device)
    return model, vqvae, {"weights": "shipped digits VAR"}


def _shipped_digits_var_identity() -> dict[str, str]:
    from ddbench.generators.var.shipped import shipped_weights_identity

    return shipped_weights_identity()


def _shipped_digits_class_token_var(device, progress):
    from ddbench.methods.hieramp.digits_weights import load_digits_class_token_models

    return load_digits_class_token_models(device, progress)


def _shipped_digits_class_token_identity() -> dict[str, str]:
    from ddbench.methods.hieramp.digits_weights import class_token_weights_identity

    return class_token_weights_identity()


DIGITS_VAR = GeneratorWeights("shipped digits VAR", _shipped_digits_var, _shipped_digits_var_identity, 10, DATASET)
DIGITS_CLASS_TOKEN_VAR = GeneratorWeights("shipped digits class-token VAR", _shipped_digits_class_token_var,
                                          _shipped_digits_class_token_identity, 10, DATASET)


# ----- ImageNet-1K generators through the weights table -----
def _table_sha256(entry) -> str:
    """The sha256 the weights table knows for `entry` (published or of the cached file), before any download."""
    from ddbench.generators import weights

    entry = weights.get_entry(entry) if isinstance(entry, str) else entry
    return weights.known_sha256(entry) or f"unpublished:{entry.name}"


def release_var(depth: int = 16) -> GeneratorWeights:
    """The released VAR (plain, no class tokens) and its VQ-VAE, downloaded on first use."""
    from ddbench.methods.hieramp.subset_finetune import BASE_VQVAE

    name = f"var_d{depth}"

    def load(device, progress):
        from ddbench.generators import weights
        from ddbench.generators.var.loading import load_var

        var_path = weights.resolve_weights(name, progress=progress, option="--set var_ckpt=PATH")
        vqvae_path = weights.resolve_weights(BASE_VQVAE, progress=progress, option="--set vqvae_ckpt=PATH")
        model, vqvae = load_var(var_path, vqvae_path, device=device)
        return model, vqvae, {"weights": f"{name} + {BASE_VQVAE} (weights table)", "var_ckpt": str(var_path),
                              "vqvae_ckpt": str(vqvae_path)}

    def identity() -> dict[str, str]:
        return {"generator": _table_sha256(name), "vqvae": _table_sha256(BASE_VQVAE)}

    return GeneratorWeights(f"released {name}", load, identity, 1000, IMAGENET1K)


def finetuned_class_token_var(dataset: DatasetSpec, method: str) -> GeneratorWeights:
    """The class-token VAR fine-tuned from var_d16 for `dataset`, from its weights-table slot; a
    missing one is an error naming the command that makes it and its estimated GPU time."""
    from ddbench.methods.hieramp import subset_finetune

    entry = subset_finetune.slot(dataset)

    def require() -> None:
        if not entry.cache_path().is_file():
            raise CheckpointError(subset_finetune.missing_message(dataset, method))

    def identity() -> dict[str, str]:
        require()
        return {"generator": _table_sha256(entry), "vqvae": _table_sha256(subset_finetune.BASE_VQVAE)}

    def load(device, progress):
        require()
        from ddbench.generators import weights
        from ddbench.methods.hieramp.model import load_class_token_var

        vqvae_path = weights.resolve_weights(subset_finetune.BASE_VQVAE, progress=progress, option="--set vqvae_ckpt=PATH")
        model, vqvae, _ = load_class_token_var(entry.cache_path(), vqvae_path, device=device, require_class_tokens=True)
        return model, vqvae, {"weights": f"{entry.name} (fine-tuned here, {entry.cache_path()})",
                              "var_ckpt": str(entry.cache_path()), "vqvae_ckpt": str(vqvae_path)}

    return GeneratorWeights(f"class-token {subset_finetune.BASE_VAR} fine-tuned for {dataset.name}", load, identity,
                            1000, IMAGENET1K)
