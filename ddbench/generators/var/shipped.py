"""The trained `digits` VQ-VAE and VAR shipped inside the package, and how to reproduce them.

The files under `weights/` (rows `digits_vqvae` and `digits_var` of the weights table) are plain
state dicts in the official layout, stored as float16 to keep the package small (loaded back as
float32). `digits.json` records the command, seed, time and PSNR.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Optional

import torch

from ddbench.core.progress import NullProgress, Progress
from ddbench.generators import weights
from ddbench.generators.class_map import DATASET
from ddbench.generators.var.configs import get_preset
from ddbench.generators.var.loading import load_var, load_vqvae
from ddbench.generators.var.training import VAR_WEIGHTS, VQVAE_WEIGHTS, train_var, train_vqvae
from ddbench.generators.var.transformer import VARTransformer
from ddbench.generators.var.vqvae import VQVAE

SHIPPED_VQVAE, SHIPPED_VAR, SIDECAR = "digits_vqvae.pt", "digits_var.pt", "digits.json"  # *.pt: package data
DIGITS_VQVAE_ROW, DIGITS_VAR_ROW = "digits_vqvae", "digits_var"  # their rows in the weights table
REPRODUCE_COMMAND = weights.get_entry(DIGITS_VAR_ROW).made_by


def shipped_weights_dir() -> Path:
    """The package folder of the shipped digits VQ-VAE and VAR (the weights table's rows)."""
    return weights.get_entry(DIGITS_VAR_ROW).cache_dir()


def shipped_info() -> dict:
    """The sidecar record of the shipped digits weights (command, seed, time, PSNR, accuracy)."""
    return weights.shipped_record(DIGITS_VAR_ROW, SIDECAR)


#: {role: sha256} of the shipped digits weights (part of a run's identity)
shipped_weights_identity = weights.table_identity(generator=DIGITS_VAR_ROW, vqvae=DIGITS_VQVAE_ROW)


def load_digits_models(device: str | torch.device = "cpu") -> tuple[VARTransformer, VQVAE]:
    """(transformer, vqvae) for the embedded `digits` dataset, from the weights shipped in the package."""
    vqvae = load_vqvae(weights.resolve_weights(DIGITS_VQVAE_ROW), patch_nums=get_preset("digits").vqvae.patch_nums,
                       device=device)
    return load_var(weights.resolve_weights(DIGITS_VAR_ROW), vqvae=vqvae, device=device)


def _load_digits_var(device, progress):
    model, vqvae = load_digits_models(device)
    return model, vqvae, {"weights": "shipped digits VAR"}


DIGITS_VAR = weights.GeneratorWeights("shipped digits VAR", _load_digits_var, shipped_weights_identity, 10, DATASET)


def _half(state_dict: dict) -> dict:
    return {key: value.half() if value.is_floating_point() else value for key, value in state_dict.items()}


def reproduce_digits_weights(out_dir: str | Path, *, device: str | torch.device = "cpu",
                             progress: Progress = NullProgress(), stages: tuple[str, ...] = ("vqvae", "var"),
                             stop_after: Optional[int] = None) -> dict:
    """Train the digits preset from scratch with its fixed seeds; writes the float16 weights and sidecar.

    Resumes from the training checkpoints in `out_dir` after an interruption.
    """
    from ddbench.core.registry import create_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    preset = get_preset("digits")
    spec = create_dataset(preset.dataset)
    sidecar_path = out_dir / SIDECAR
    record = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    record.update({"command": REPRODUCE_COMMAND, "preset": preset.name, "dataset": "digits (train split)",
                   "torch": torch.__version__, "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads"})
    if "vqvae" in stages:
        summary = train_vqvae(preset, spec.split("train"), spec.split("val"), out_dir, device=device,
                              progress=progress, stop_after=stop_after)
        if summary["finished"]:
            torch.save(_half(torch.load(out_dir / VQVAE_WEIGHTS, weights_only=True)), out_dir / SHIPPED_VQVAE)
            half_psnr = _psnr_of_half_weights(out_dir, spec, preset)
            record["vqvae"] = {**summary, "seed": preset.vqvae_train.seed, "val_psnr_db_float16": half_psnr}
    if "var" in stages:
        summary = train_var(preset, spec.split("train"), out_dir / VQVAE_WEIGHTS, out_dir, device=device,
                            progress=progress, stop_after=stop_after)
        if summary["finished"]:
            torch.save(_half(torch.load(out_dir / VAR_WEIGHTS, weights_only=True)), out_dir / SHIPPED_VAR)
            record["var"] = {**summary, "seed": preset.var_train.seed}
    record["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sidecar_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _psnr_of_half_weights(out_dir: Path, spec, preset) -> float:
    from ddbench.generators.var.training import evaluate_psnr

    vqvae = load_vqvae(out_dir / SHIPPED_VQVAE, patch_nums=preset.vqvae.patch_nums)
    return evaluate_psnr(vqvae, spec.split("val"), preset.resolution)
