"""The fine-tuned `digits` class-token VAR: shipped in `weights/`, else fine-tuned once and cached.

The shipped file is a float16 state dict (a superset of the official VAR layout) fine-tuned from the
generator's shipped digits VAR; `digits_hieramp.json` records the command, seed, time, the class
head's accuracy and the SHA-256 of the VQ-VAE it was tuned against. If the generator's shipped
VQ-VAE changes, the shipped file no longer matches and the model is fine-tuned on first use and
cached under `$DDBENCH_HOME/cache/hieramp/digits/<vqvae hash>/`.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Optional

import torch

from ddbench.core import distributed, paths
from ddbench.core.hashing import cached_sha256_file, sha256_file, stable_hash
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators.var.shipped import SHIPPED_VAR, SHIPPED_VQVAE, load_digits_models, shipped_weights_dir
from ddbench.methods.hieramp.finetune import FINETUNED_WEIGHTS, FinetuneConfig, finetune_class_tokens
from ddbench.methods.hieramp.model import ClassTokenVAR, load_class_token_var
from ddbench.training import with_settings

SHIPPED_FILE, SIDECAR = "digits_hieramp.pt", "digits_hieramp.json"  # *.pt: package data
REPRODUCE_COMMAND = "ddbench hieramp finetune --dataset digits --out DIR"
#: the recipe of the shipped file (paper: 5 epochs, whole backbone trainable)
DIGITS_FINETUNE = with_settings(FinetuneConfig(), epochs=5.0, batch_size=32, lr=5e-4, seed=0)


def weights_dir() -> Path:
    return Path(str(resources.files("ddbench.methods.hieramp").joinpath("weights")))


def base_vqvae_sha256() -> str:
    return sha256_file(shipped_weights_dir() / SHIPPED_VQVAE)


def _shipped_matches(fingerprint: str) -> bool:
    sidecar = weights_dir() / SIDECAR
    if not (weights_dir() / SHIPPED_FILE).is_file() or not sidecar.is_file():
        return False
    return json.loads(sidecar.read_text()).get("base_vqvae_sha256") == fingerprint


def cache_folder(fingerprint: str) -> Path:
    return paths.cache_dir("hieramp") / "digits" / fingerprint[:16]


def finetune_digits(out_dir: str | Path, spec=None, *, config: Optional[FinetuneConfig] = None, device="cpu",
                    progress: Progress = NullProgress()) -> dict:
    """Fine-tune the shipped digits VAR with class tokens on `spec` (default: the digits dataset the
    shipped VAR was trained on); writes the full-precision weights, the float16 `digits_hieramp.pt`
    and its sidecar JSON into `out_dir` (resumable)."""
    from ddbench.core.registry import create_dataset
    from ddbench.generators.var.configs import get_preset

    out_dir, config = Path(out_dir), config or DIGITS_FINETUNE
    base, vqvae = load_digits_models()
    spec = spec if spec is not None else create_dataset(get_preset("digits").dataset)
    started = time.time()
    summary = finetune_class_tokens(base.state_dict(), vqvae, spec.split("train"), out_dir, config=config, val_set=spec.split("val"), device=device, progress=progress)
    if not summary["finished"]:
        return summary
    if not distributed.is_writer():  # under torchrun rank 0 writes the files; wait until they exist
        distributed.barrier("digits-class-token-weights")
        return json.loads((out_dir / SIDECAR).read_text())
    state = torch.load(out_dir / FINETUNED_WEIGHTS, map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out_dir / SHIPPED_FILE)
    record = {
        "command": REPRODUCE_COMMAND, "seed": config.seed, "recipe": asdict(config),
        "base": f"ddbench/generators/var/weights/{SHIPPED_VAR} + {SHIPPED_VQVAE}",
        "base_var_sha256": sha256_file(shipped_weights_dir() / SHIPPED_VAR), "base_vqvae_sha256": base_vqvae_sha256(),
        "dataset": "digits (train split; class-head accuracy on the val split, teacher forced)",
        "summary": summary, "wall_seconds": round(time.time() - started, 1),
        "torch": torch.__version__, "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / SIDECAR).write_text(json.dumps(record, indent=2, default=str) + "\n")
    distributed.barrier("digits-class-token-weights")
    return record


def class_token_weights_identity() -> dict[str, str]:
    """{role: sha256} of the class-token VAR `load_digits_class_token_models` would load: the
    shipped file, else the cached fine-tune, else (not made yet) what it will be made from."""
    fingerprint = base_vqvae_sha256()
    vqvae = cached_sha256_file(shipped_weights_dir() / SHIPPED_VQVAE)
    if _shipped_matches(fingerprint):
        return {"generator": cached_sha256_file(weights_dir() / SHIPPED_FILE), "vqvae": vqvae}
    cached = cache_folder(fingerprint) / SHIPPED_FILE
    if cached.is_file():
        return {"generator": cached_sha256_file(cached), "vqvae": vqvae}
    base = cached_sha256_file(shipped_weights_dir() / SHIPPED_VAR)
    return {"generator": f"to-finetune:{stable_hash({'base': base, 'recipe': asdict(DIGITS_FINETUNE)}, 16)}", "vqvae": vqvae}


def load_digits_class_token_models(device: str | torch.device = "cpu", progress: Progress = NullProgress()
                                   ) -> tuple[ClassTokenVAR, object, dict]:
    """(class-token VAR, VQ-VAE, info) for digits: shipped weights, else the cache, else fine-tune now."""
    _, vqvae = load_digits_models()
    fingerprint = base_vqvae_sha256()
    if _shipped_matches(fingerprint):
        source, info = weights_dir() / SHIPPED_FILE, {"weights": "shipped", "sidecar": SIDECAR}
    else:
        folder = cache_folder(fingerprint)
        if not distributed.broadcast_object((folder / SHIPPED_FILE).is_file()):  # rank 0 decides for all
            progress.log(f"hieramp: no shipped class-token weights match the digits VQ-VAE; fine-tuning once "
                         f"(a few minutes on a CPU), cached in {folder}")
            finetune_digits(folder, progress=progress)
        source, info = folder / SHIPPED_FILE, {"weights": "cached", "path": str(folder / SHIPPED_FILE)}
    model, vqvae, _ = load_class_token_var(source, vqvae, device=device, require_class_tokens=True)
    info["base_vqvae_sha256"] = fingerprint
    return model, vqvae, info
