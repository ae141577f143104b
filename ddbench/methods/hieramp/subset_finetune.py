"""The class-token VAR for an ImageNet-family dataset: `var_d16` fine-tuned with HIERAMP's loss,
cached in the weights table's slot `var_d16_cls_<dataset>` where `ddbench run` finds it.

Recipes (`FinetuneConfig`; every draw seeded, resumable from the work folder):
- the paper's (`scripts/finetune.sh`), used for `--dataset imagenet1k`: 5 epochs over all of
  ImageNet-1K, batch 768, lr 3e-4 (VAR's base lr 1e-4 per 256 images x 768/256), warm-up 2% of
  the steps (VAR's ep/50), then cosine to 0.1x (`--wpe 0.1`), mixed precision (ddbench: bf16 on
  CUDA, fp32 on a CPU), whole backbone trainable, token CE + 1.0 x class CE;
- ddbench's cheaper one for a subset (woof, nette, imagenet100): the same loss and optimiser on
  the subset's train split only, labels kept as ImageNet-1K indices, 10 epochs, batch 64, lr 1e-4,
  5% warm-up. About 0.3% of the paper's image passes for woof (90k vs 6.4M): the class tokens see
  only the classes they will be asked for. Not validated at full size here (no GPU on the machine
  that wrote it); the class head's val accuracy goes into the slot's sidecar JSON.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from typing import Any, Optional

import torch

from ddbench.core import distributed, paths
from ddbench.core.errors import CheckpointError
from ddbench.core.files import write_atomic
from ddbench.core.hashing import cached_sha256_file
from ddbench.core.interfaces import DatasetSpec
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators import weights
from ddbench.generators.class_map import IMAGENET1K, generator_class_map
from ddbench.methods.hieramp.finetune import FINETUNED_WEIGHTS, FinetuneConfig, finetune_class_tokens
from ddbench.training import with_settings

BASE_VAR, BASE_VQVAE = "var_d16", "vae_ch160v4096z32"
PAPER_FINETUNE = with_settings(FinetuneConfig(), epochs=5.0, batch_size=768, lr=3e-4, warmup_fraction=0.02,
                               precision="auto", checkpoint_every=500)
SUBSET_FINETUNE = with_settings(FinetuneConfig(), epochs=10.0, batch_size=64, lr=1e-4, warmup_fraction=0.05,
                                precision="auto", checkpoint_every=200)
#: the assumption behind the time estimate: sustained bf16 throughput of one A100 (40% of 312 TFLOP/s)
ASSUMED_GPU_FLOPS = 125e12
ASSUMED_GPU = "one A100 at 40% of its 312 TFLOP/s bf16 peak"


def finetune_recipe(dataset: DatasetSpec) -> FinetuneConfig:
    """The paper's recipe for all of ImageNet-1K, the cheaper subset recipe for any other dataset."""
    covers_imagenet1k = sorted(getattr(dataset, "imagenet1k_indices", []) or []) == list(range(1000))
    return PAPER_FINETUNE if covers_imagenet1k else SUBSET_FINETUNE


def slot(dataset: DatasetSpec) -> weights.WeightsEntry:
    """The weights-table slot of `dataset`'s class-token VAR (cache only: made by `command`)."""
    base = weights.get_entry(BASE_VAR)
    return weights.class_token_slot(dataset.name, command(dataset),
                                    {**base.architecture, "class_tokens": len(base.architecture["patch_nums"]),
                                     "class_head": base.architecture["num_classes"], "base": BASE_VAR})


def command(dataset: DatasetSpec) -> str:
    root = f" --data-root {dataset.root}" if dataset.root else " --data-root DIR"
    return f"ddbench hieramp finetune --dataset {dataset.name}{root}"


def gpu_estimate(dataset: DatasetSpec, config: Optional[FinetuneConfig] = None) -> str:
    """How long the fine-tune takes on a GPU, estimated from FLOPs (and saying so)."""
    config = config or finetune_recipe(dataset)
    architecture = weights.get_entry(BASE_VAR).architecture
    tokens = sum(side * side for side in architecture["patch_nums"]) + len(architecture["patch_nums"])
    per_pass = 6 * architecture["parameters"] * tokens  # forward + backward, per image
    encode = 0.4e12  # the VQ-VAE encoder once per image (about a 256 px decode's cost)
    try:
        images = len(dataset.split("train"))
    except Exception:  # no data root yet: say so rather than guess
        return (f"{config.epochs:g} epochs over the train split at {per_pass / 1e12:.2f} TFLOP per image pass "
                f"(6 x {architecture['parameters'] / 1e6:.0f}M parameters x {tokens} tokens); with --data-root "
                "ddbench estimates the time")
    flops = images * (config.epochs * per_pass + encode)
    hours = flops / ASSUMED_GPU_FLOPS / 3600
    when = "under a minute" if hours < 1 / 60 else f"{hours * 60:.0f} minutes" if hours < 2 else f"{hours:.1f} hours"
    return (f"about {when} on {ASSUMED_GPU} ({images:,} images x {config.epochs:g} epochs x "
            f"{per_pass / 1e12:.2f} TFLOP per image pass = 6 x {architecture['parameters'] / 1e6:.0f}M parameters x "
            f"{tokens} tokens, plus encoding; an estimate from FLOPs, not a measurement)")


def missing_message(dataset: DatasetSpec, method: str) -> str:
    return (f"{method} needs a class-token VAR for {dataset.name}, and none is cached at {slot(dataset).cache_path()}. "
            f"Make it with `{command(dataset)}` (fine-tunes {BASE_VAR} with class tokens on the train split; "
            f"{gpu_estimate(dataset)}), or pass --set var_ckpt=PATH --set vqvae_ckpt=PATH")


def finetune_for_dataset(dataset: DatasetSpec, *, config: Optional[FinetuneConfig] = None,
                         device: str | torch.device = "cpu", progress: Progress = NullProgress(),
                         stop_after: Optional[int] = None) -> dict[str, Any]:
    """Fine-tune var_d16 (resolved through the weights table) on `dataset`'s train split with its
    labels mapped to ImageNet-1K indices; on completion the weights land in the dataset's slot."""
    config = config or finetune_recipe(dataset)
    var_path = weights.resolve_weights(BASE_VAR, progress=progress)
    vqvae_path = weights.resolve_weights(BASE_VQVAE, progress=progress)
    class_map = generator_class_map(dataset, weights.get_entry(BASE_VAR).architecture["num_classes"], IMAGENET1K,
                                    generator=BASE_VAR)
    work = paths.cache_dir("hieramp-finetune") / dataset.name
    progress.log(f"hieramp: fine-tuning {BASE_VAR} with class tokens on {dataset.name} ({gpu_estimate(dataset, config)}); "
                 f"resumable from {work}")
    started = time.time()
    summary = finetune_class_tokens(var_path, vqvae_path, dataset.split("train"), work, config=config,
                                    val_set=dataset.split("val"), device=device, progress=progress,
                                    stop_after=stop_after, label_map=class_map.labels)
    if not summary["finished"]:
        return summary
    target = slot(dataset).cache_path()
    if not distributed.is_writer():  # under torchrun rank 0 installs the weights; wait until it has
        distributed.barrier("subset-class-token-weights")
        return {**summary, "weights": str(target)}
    write_atomic(target, lambda temporary: shutil.copyfile(work / FINETUNED_WEIGHTS, temporary))
    record = {
        "command": command(dataset), "dataset": dataset.name, "recipe": asdict(config),
        "base": {BASE_VAR: cached_sha256_file(var_path), BASE_VQVAE: cached_sha256_file(vqvae_path)},
        "generator_classes": class_map.record(dataset.class_names), "summary": summary,
        "wall_seconds": round(time.time() - started, 1), "device": str(device), "torch": torch.__version__,
        "sha256": cached_sha256_file(target), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(target.with_suffix(".json"), json.dumps(record, indent=2, default=str) + "\n")
    distributed.barrier("subset-class-token-weights")
    return {**summary, "weights": str(target)}


def recipe_with(dataset: DatasetSpec, **changes: Any) -> FinetuneConfig:
    """The dataset's recipe with explicit changes (e.g. fewer epochs from the command line)."""
    return with_settings(finetune_recipe(dataset), **changes)


def finetuned_class_token_var(dataset: DatasetSpec, method: str) -> weights.GeneratorWeights:
    """The class-token VAR fine-tuned from var_d16 for `dataset`, from its weights-table slot; a
    missing one is an error naming the command that makes it and its estimated GPU time."""
    entry = slot(dataset)

    def require() -> None:
        if not entry.cache_path().is_file():
            raise CheckpointError(missing_message(dataset, method))

    def identity() -> dict[str, str]:
        require()
        return weights.table_identity(generator=entry, vqvae=BASE_VQVAE)()

    def load(device, progress):
        require()
        from ddbench.methods.hieramp.model import load_class_token_var

        vqvae_path = weights.resolve_weights(BASE_VQVAE, progress=progress, option="--set vqvae_ckpt=PATH")
        model, vqvae, _ = load_class_token_var(entry.cache_path(), vqvae_path, device=device, require_class_tokens=True)
        return model, vqvae, {"weights": f"{entry.name} (fine-tuned here, {entry.cache_path()})",
                              "var_ckpt": str(entry.cache_path()), "vqvae_ckpt": str(vqvae_path)}

    return weights.GeneratorWeights(f"class-token {BASE_VAR} fine-tuned for {dataset.name}", load, identity, 1000,
                                    IMAGENET1K)
