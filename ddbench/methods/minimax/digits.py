"""Minimax's fine-tune of the small digits DiT: shipped in `weights/`, else fine-tuned once and cached.

- `weights/digits_minimax.pt` (row `digits_minimax` of the weights table): only the tensors Minimax trains (biases, label table, gammas) of the EMA
  after the Minimax fine-tune of the shipped digits DiT (`ddbench.generators.dit.shipped`), float16, with
  the SHA-256 of that base; with the base they make the fine-tuned model.
- `weights/digits_minimax.json`: the command, recipe, times, the sample check and the file's SHA-256.
If the shipped file does not match the shipped base, the fine-tune runs once on first use (a few
minutes on a CPU) and is cached under `$DDBENCH_HOME/cache/dit/digits/<base hash>/`.
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
from ddbench.core.errors import CheckpointError
from ddbench.core.files import write_atomic
from ddbench.core.hashing import sha256_file
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators import weights
from ddbench.generators.class_map import DATASET
from ddbench.generators.dit.codecs import make_codec
from ddbench.generators.dit.loading import load_dit
from ddbench.generators.dit.model import DiT
from ddbench.training import save_atomic
from ddbench.generators.dit.shipped import DIGITS_DIT_ROW, SHIPPED_DIT, base_sha256, load_digits_dit, sample_check
from ddbench.generators.dit.training import DIGITS_PRESET
from ddbench.methods.minimax.finetune import MINIMAX_WEIGHTS, MinimaxFinetuneConfig, finetune_minimax, trainable_state_dict
from ddbench.methods.minimax.objective import TRAINABLE_KEYWORDS, minimax_trainable

SHIPPED_MINIMAX, SIDECAR = "digits_minimax.pt", "digits_minimax.json"  # *.pt: package data
DIGITS_MINIMAX_ROW = "digits_minimax"  # its row in the weights table
REPRODUCE_COMMAND = weights.get_entry(DIGITS_MINIMAX_ROW).made_by
#: the release's recipe on digits, but no flips (a mirrored digit is another shape) and EMA 0.999, which over
#: 8 epochs of 180 steps moves as far (76%) as the release's 0.9999 over the 12,000 steps it samples from (70%)
DIGITS_MINIMAX = MinimaxFinetuneConfig(flip=False, ema_decay=0.999)


def _recorded_base(path: Path) -> Optional[str]:
    return torch.load(path, map_location="cpu", weights_only=True).get("base_sha256")


#: shipped, else cached under $DDBENCH_HOME/cache/dit/digits/<digits_dit sha256[:16]>/, else made on first use
FIRST_USE = weights.FirstUseFineTune(DIGITS_MINIMAX_ROW, DIGITS_DIT_ROW, ("dit", "digits"), _recorded_base)


def weights_dir() -> Path:
    return weights.get_entry(DIGITS_MINIMAX_ROW).cache_dir()


def shipped_info() -> dict:
    return weights.shipped_record(DIGITS_MINIMAX_ROW, SIDECAR)


def _apply_trainable(model: DiT, trainable: dict[str, torch.Tensor], where: str) -> DiT:
    expected = {name for name, _ in model.named_parameters() if any(k in name for k in TRAINABLE_KEYWORDS)}
    if set(trainable) != expected:
        raise CheckpointError(f"{where} does not hold exactly the Minimax-trainable tensors of the digits DiT; "
                              f"rebuild it with `{REPRODUCE_COMMAND}`")
    state = model.state_dict()
    state.update({key: value.float() for key, value in trainable.items()})
    model.load_state_dict(state, strict=True)
    return model


def finetune_digits_minimax(out_dir: str | Path, *, base_folder: Optional[Path] = None,
                            config: MinimaxFinetuneConfig = DIGITS_MINIMAX, device: str | torch.device = "cpu",
                            progress: Progress = NullProgress(), stop_after: Optional[int] = None) -> dict:
    """Minimax-fine-tune the digits DiT (float16 file in `base_folder`, default the shipped one); writes
    the float16 trainable tensors `digits_minimax.pt` with the base's SHA-256."""
    from ddbench.core.registry import create_dataset

    out_dir = Path(out_dir)
    spec = create_dataset("digits")
    base_sha = base_sha256(base_folder)
    summary = finetune_minimax(load_digits_dit(folder=base_folder), make_codec(DIGITS_PRESET.codec), spec.split("train"),
                               list(range(spec.num_classes)), out_dir, resolution=spec.resolution,
                               config=config, device=device, progress=progress, stop_after=stop_after,
                               identity_extra={"base_sha256": base_sha})
    if summary["finished"]:
        model = load_dit(out_dir / MINIMAX_WEIGHTS, num_heads=DIGITS_PRESET.model.num_heads)
        minimax_trainable(model)
        delta = {key: value.half() for key, value in trainable_state_dict(model).items()}
        if distributed.is_writer():
            save_atomic({"base_sha256": base_sha, "tensors": delta}, out_dir / SHIPPED_MINIMAX)
        distributed.barrier("digits-minimax-weights")
    return summary


def load_digits_minimax(device: str | torch.device = "cpu", progress: Progress = NullProgress(),
                        folder: Optional[Path] = None) -> tuple[DiT, dict]:
    """(the Minimax-fine-tuned digits DiT, info): shipped tensors, else the cache, else fine-tune now.
    `folder`: another folder of digits_minimax.pt, made from the shipped digits DiT (a reproduction)."""
    source = folder / SHIPPED_MINIMAX if folder else FIRST_USE.source()
    if source is None:
        cache = FIRST_USE.cache_folder()
        progress.log(f"minimax: no shipped fine-tune matches the digits DiT; fine-tuning once (minutes), cached in {cache}")
        finetune_digits_minimax(cache, progress=progress)
        source = cache / SHIPPED_MINIMAX
    payload = torch.load(source, map_location="cpu", weights_only=True)
    info = {"weights": "digits DiT + Minimax fine-tune", "file": str(source)}
    model = _apply_trainable(load_digits_dit(), payload["tensors"], str(source))
    return model.to(device).eval().requires_grad_(False), {**info, "base_sha256": weights.table_sha256(DIGITS_DIT_ROW)}


def _digits_minimax_identity() -> dict[str, str]:
    return {"generator": weights.table_sha256(DIGITS_DIT_ROW), "minimax": FIRST_USE.sha256(DIGITS_DIT_ROW, DIGITS_MINIMAX)}


def _load_digits_minimax(device, progress):
    model, info = load_digits_minimax(device, progress)
    return model, make_codec(DIGITS_PRESET.codec), {**info, "codec": DIGITS_PRESET.codec}


DIGITS_MINIMAX_WEIGHTS = weights.GeneratorWeights("shipped digits DiT + Minimax fine-tune", _load_digits_minimax,
                                          _digits_minimax_identity, 10, DATASET)


def reproduce_digits_minimax(out_dir: str | Path, *, config: MinimaxFinetuneConfig = DIGITS_MINIMAX,
                             device: str | torch.device = "cpu", progress: Progress = NullProgress(),
                             stop_after: Optional[int] = None) -> dict:
    """Fine-tune the shipped digits DiT with `config` (resumable); when finished writes digits_minimax.pt and
    digits_minimax.json (recipe, summary, sample check, sha256) into OUT (copy them into weights/ to ship them)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary = finetune_digits_minimax(out_dir, config=config, device=device, progress=progress, stop_after=stop_after)
    if not summary["finished"]:
        return summary
    record = {
        "command": REPRODUCE_COMMAND, "base": f"ddbench/generators/dit/weights/{SHIPPED_DIT} (the shipped digits DiT)",
        "dataset": "digits (train split)", "torch": torch.__version__,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "minimax": {**summary, "recipe": asdict(config), "base_sha256": base_sha256()},
        "sample_check": {
            "samples": "10 per class, cfg 4.0, 50 respaced steps, seed 0 ('dit-sample-check', class, image)",
            "classifier": "logistic regression (C=0.1) on the real 16 px digits train split",
            "minimax_accuracy": sample_check(load_digits_minimax(folder=out_dir)[0]),
        },
        "files": {SHIPPED_MINIMAX: {"sha256": sha256_file(out_dir / SHIPPED_MINIMAX),
                                    "bytes": (out_dir / SHIPPED_MINIMAX).stat().st_size}},
        "seconds_total": round(time.time() - started, 1),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if distributed.is_writer():
        write_atomic(out_dir / SIDECAR, json.dumps(record, indent=2, default=str) + "\n")
    return record
