"""The small digits DiT shipped inside the package, and how to reproduce it.

- `weights/digits_dit.pt` (row `digits_dit` of the weights table): the EMA weights of `DIGITS_PRESET` trained from scratch on the digits train
  split (on the 8x8 scans behind the 16 px images, see training.py), float16, plain official DiT layout.
- `weights/digits.json`: the command, seeds, times, sizes and the sample check.
Minimax's fine-tune of this model is Minimax's: `ddbench.methods.minimax.digits`.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from ddbench.core.hashing import sha256_file
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators.class_map import DATASET
from ddbench.generators.dit.codecs import make_codec
from ddbench.generators import weights
from ddbench.generators.dit.loading import load_dit
from ddbench.generators.dit.model import DiT
from ddbench.generators.dit.training import DIGITS_PRESET, DIT_WEIGHTS, train_dit

SHIPPED_DIT, SIDECAR = "digits_dit.pt", "digits.json"  # *.pt: package data
DIGITS_DIT_ROW = "digits_dit"  # its row in the weights table
REPRODUCE_COMMAND = weights.get_entry(DIGITS_DIT_ROW).made_by


def weights_dir() -> Path:
    return weights.get_entry(DIGITS_DIT_ROW).cache_dir()


def shipped_info() -> dict:
    return weights.shipped_record(DIGITS_DIT_ROW, SIDECAR)


def load_digits_dit(device: str | torch.device = "cpu", folder: Optional[Path] = None) -> DiT:
    """The shipped digits DiT, float32, eval mode (`folder`: another weights folder)."""
    path = folder / SHIPPED_DIT if folder else weights.resolve_weights(DIGITS_DIT_ROW)
    return load_dit(path, num_heads=DIGITS_PRESET.model.num_heads, device=device)


def base_sha256(folder: Optional[Path] = None) -> str:
    """sha256 of the digits DiT file in `folder` (default: the shipped one)."""
    return sha256_file((folder or weights_dir()) / SHIPPED_DIT)


def _load_digits_dit(device, progress):
    return load_digits_dit(device), make_codec(DIGITS_PRESET.codec), {"weights": "shipped digits DiT",
                                                                    "codec": DIGITS_PRESET.codec}


DIGITS_DIT_WEIGHTS = weights.GeneratorWeights("shipped digits DiT", _load_digits_dit,
                                              weights.table_identity(generator=DIGITS_DIT_ROW), 10, DATASET)


# ----- reproducing the shipped files -----
def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}


def sample_check(model: DiT, per_class: int = 10, seed: int = 0) -> float:
    """Share of `per_class` samples per digit (cfg 4, 50 steps) that a logistic regression trained on
    the real digits train split assigns to the asked class."""
    from sklearn.linear_model import LogisticRegression

    from ddbench.core.registry import create_dataset
    from ddbench.core.seeding import torch_generator
    from ddbench.generators.dit.codecs import to_uint8
    from ddbench.generators.dit.sampling import DiTSampler
    from ddbench.training import center_square_resize, load_tensor_set

    real = load_tensor_set(create_dataset("digits").split("train"), center_square_resize(16), "digits")
    classifier = LogisticRegression(max_iter=2000, C=0.1).fit(real.images[:, 0].flatten(1).float().numpy() / 255.0,
                                                               real.labels.numpy())
    labels = torch.arange(10).repeat_interleave(per_class)
    generators = [torch_generator(seed, "dit-sample-check", int(c), i % per_class) for i, c in enumerate(labels)]
    latents = DiTSampler(model).sample_latents(labels, generators)
    pixels = to_uint8(make_codec(DIGITS_PRESET.codec).decode(latents))  # (N, 16, 16, 3)
    grey = pixels.float().mean(-1).flatten(1).numpy() / 255.0
    return float((classifier.predict(grey) == labels.numpy()).mean())


def reproduce_digits_weights(out_dir: str | Path, *, device: str | torch.device = "cpu",
                             progress: Progress = NullProgress(), stop_after: Optional[int] = None) -> dict:
    """Train the digits DiT from scratch (fixed seeds, resumable); writes digits_dit.pt and digits.json into
    OUT (copy them into weights/ to ship them). Its Minimax fine-tune: `ddbench minimax finetune --dataset digits`."""
    from ddbench.core.registry import create_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sidecar = out_dir / SIDECAR
    record = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    record.update({"command": REPRODUCE_COMMAND, "preset": DIGITS_PRESET.name, "dataset": "digits (train split)",
                   "space": "8x8x3 latents = the least-squares inverse of the bilinear 2x upsampling that made the 16 px "
                            "digits (codec bilinear2x); see ddbench/generators/dit/training.py for why",
                   "torch": torch.__version__, "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads"})
    started = time.time()
    summary = train_dit(DIGITS_PRESET, create_dataset("digits").split("train"), out_dir, device=device,
                        progress=progress, stop_after=stop_after)
    if not summary["finished"]:
        return summary
    record["dit"] = {**summary, "model": asdict(DIGITS_PRESET.model), "recipe": asdict(DIGITS_PRESET.train)}
    torch.save(_half(torch.load(out_dir / DIT_WEIGHTS, weights_only=True)), out_dir / SHIPPED_DIT)
    record["sample_check"] = {
        "samples": "10 per class, cfg 4.0, 50 respaced steps, seed 0 ('dit-sample-check', class, image)",
        "classifier": "logistic regression (C=0.1) on the real 16 px digits train split",
        "dit_accuracy": sample_check(load_digits_dit(folder=out_dir)),
    }
    record["files"] = {SHIPPED_DIT: {"sha256": sha256_file(out_dir / SHIPPED_DIT),
                                     "bytes": (out_dir / SHIPPED_DIT).stat().st_size}}
    record["seconds_total"] = round(time.time() - started, 1)
    record["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sidecar.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record
