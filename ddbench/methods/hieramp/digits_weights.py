"""The fine-tuned `digits` class-token VAR: shipped in `weights/`, else fine-tuned once and cached.

The shipped file (row `digits_var_cls` of the weights table) is a float16 state dict (a superset of the official VAR layout) fine-tuned from the
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
from pathlib import Path
from typing import Optional

import torch

from ddbench.core import distributed
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators import weights
from ddbench.generators.class_map import DATASET
from ddbench.generators.var.shipped import DIGITS_VAR_ROW, DIGITS_VQVAE_ROW, SHIPPED_VAR, SHIPPED_VQVAE, load_digits_models
from ddbench.methods.hieramp.finetune import FINETUNED_WEIGHTS, FinetuneConfig, finetune_class_tokens
from ddbench.methods.hieramp.model import ClassTokenVAR, load_class_token_var
from ddbench.training import with_settings

SHIPPED_FILE, SIDECAR = "digits_hieramp.pt", "digits_hieramp.json"  # *.pt: package data
DIGITS_CLASS_TOKEN_ROW = "digits_var_cls"  # its row in the weights table
REPRODUCE_COMMAND = weights.get_entry(DIGITS_CLASS_TOKEN_ROW).made_by
#: the recipe of the shipped file (paper: 5 epochs, whole backbone trainable)
DIGITS_FINETUNE = with_settings(FinetuneConfig(), epochs=5.0, batch_size=32, lr=5e-4, seed=0)


def _recorded_base(path: Path) -> Optional[str]:
    sidecar = path.parent / SIDECAR
    return json.loads(sidecar.read_text()).get("base_vqvae_sha256") if sidecar.is_file() else None


#: shipped, else cached under $DDBENCH_HOME/cache/hieramp/digits/<digits_vqvae sha256[:16]>/, else made on first use
FIRST_USE = weights.FirstUseFineTune(DIGITS_CLASS_TOKEN_ROW, DIGITS_VQVAE_ROW, ("hieramp", "digits"), _recorded_base)


def weights_dir() -> Path:
    return weights.get_entry(DIGITS_CLASS_TOKEN_ROW).cache_dir()


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
        "base_var_sha256": weights.table_sha256(DIGITS_VAR_ROW), "base_vqvae_sha256": FIRST_USE.base_sha256(),
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
    return {"generator": FIRST_USE.sha256(DIGITS_VAR_ROW, DIGITS_FINETUNE), "vqvae": weights.table_sha256(DIGITS_VQVAE_ROW)}


def load_digits_class_token_models(device: str | torch.device = "cpu", progress: Progress = NullProgress()
                                   ) -> tuple[ClassTokenVAR, object, dict]:
    """(class-token VAR, VQ-VAE, info) for digits: shipped weights, else the cache, else fine-tune now."""
    _, vqvae = load_digits_models()
    if FIRST_USE.shipped_matches():
        source, info = weights_dir() / SHIPPED_FILE, {"weights": "shipped", "sidecar": SIDECAR}
    else:
        folder = FIRST_USE.cache_folder()
        if not distributed.broadcast_object((folder / SHIPPED_FILE).is_file()):  # rank 0 decides for all
            progress.log(f"hieramp: no shipped class-token weights match the digits VQ-VAE; fine-tuning once "
                         f"(a few minutes on a CPU), cached in {folder}")
            finetune_digits(folder, progress=progress)
        source, info = folder / SHIPPED_FILE, {"weights": "cached", "path": str(folder / SHIPPED_FILE)}
    model, vqvae, _ = load_class_token_var(source, vqvae, device=device, require_class_tokens=True)
    info["base_vqvae_sha256"] = FIRST_USE.base_sha256()
    return model, vqvae, info


def _load_digits_class_token_var(device, progress):
    return load_digits_class_token_models(device, progress)


DIGITS_CLASS_TOKEN_VAR = weights.GeneratorWeights("shipped digits class-token VAR", _load_digits_class_token_var,
                                                  class_token_weights_identity, 10, DATASET)
