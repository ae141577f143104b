"""The small digits DiT shipped inside the package, its Minimax fine-tune, and how to reproduce both.

- `weights/digits_dit.pt`: the EMA weights of `DIGITS_PRESET` trained from scratch on the digits train
  split (on the 8x8 scans behind the 16 px images, see training.py), float16, plain official DiT layout.
- `weights/digits_minimax.pt`: only the tensors Minimax trains (biases, label table, gammas) of the
  EMA after the Minimax fine-tune of that model, float16; with the base they make the fine-tuned model.
- `weights/digits.json`: the command, seeds, times, sizes, the sample check and the SHA-256 of the base.
If the shipped Minimax file does not match the shipped base, the fine-tune runs once on first use
(a few minutes on a CPU) and is cached under `$DDBENCH_HOME/cache/dit/digits/<base hash>/`.
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

from ddbench.core import paths
from ddbench.core.hashing import cached_sha256_file, sha256_file, stable_hash
from ddbench.core.errors import CheckpointError
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators.class_map import DATASET
from ddbench.generators.dit.codecs import make_codec
from ddbench.generators.sources import GeneratorWeights
from ddbench.generators.dit.finetune import MINIMAX_WEIGHTS, MinimaxFinetuneConfig, finetune_minimax, trainable_state_dict
from ddbench.generators.dit.loading import load_dit
from ddbench.generators.dit.minimax import TRAINABLE_KEYWORDS, minimax_trainable
from ddbench.generators.dit.model import DiT
from ddbench.generators.dit.training import DIGITS_PRESET, DIT_WEIGHTS, train_dit

SHIPPED_DIT, SHIPPED_MINIMAX, SIDECAR = "digits_dit.pt", "digits_minimax.pt", "digits.json"  # *.pt: package data
REPRODUCE_COMMAND = "ddbench dit reproduce-digits --out DIR"
#: the release's recipe on digits, but no flips (a mirrored digit is another shape) and EMA 0.999, which over
#: 8 epochs of 180 steps moves as far (76%) as the release's 0.9999 over the 12,000 steps it samples from (70%)
DIGITS_MINIMAX = MinimaxFinetuneConfig(flip=False, ema_decay=0.999)


def weights_dir() -> Path:
    return Path(str(resources.files("ddbench.generators.dit").joinpath("weights")))


def shipped_info() -> dict:
    path = weights_dir() / SIDECAR
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; reinstall ddbench or run `{REPRODUCE_COMMAND}`")
    return json.loads(path.read_text())


def load_digits_dit(device: str | torch.device = "cpu", folder: Optional[Path] = None) -> DiT:
    """The shipped digits DiT (no Minimax fine-tune), float32, eval mode (`folder`: another weights folder)."""
    path = (folder or weights_dir()) / SHIPPED_DIT
    if not path.is_file():
        raise CheckpointError(f"shipped weights {path} are missing; reinstall ddbench or rebuild them with "
                              f"`{REPRODUCE_COMMAND}` and copy them there")
    return load_dit(path, num_heads=DIGITS_PRESET.model.num_heads, device=device)


def _apply_trainable(model: DiT, trainable: dict[str, torch.Tensor], where: str) -> DiT:
    expected = {name for name, _ in model.named_parameters() if any(k in name for k in TRAINABLE_KEYWORDS)}
    if set(trainable) != expected:
        raise CheckpointError(f"{where} does not hold exactly the Minimax-trainable tensors of the digits DiT; "
                              f"rebuild it with `{REPRODUCE_COMMAND}`")
    state = model.state_dict()
    state.update({key: value.float() for key, value in trainable.items()})
    model.load_state_dict(state, strict=True)
    return model


def _base_sha256(folder: Optional[Path] = None) -> str:
    return sha256_file((folder or weights_dir()) / SHIPPED_DIT)


def finetune_digits_minimax(out_dir: str | Path, *, base_folder: Optional[Path] = None,
                            config: MinimaxFinetuneConfig = DIGITS_MINIMAX, device: str | torch.device = "cpu",
                            progress: Progress = NullProgress(), stop_after: Optional[int] = None) -> dict:
    """Minimax-fine-tune the digits DiT (float16 file in `base_folder`, default the shipped one); writes
    the float16 trainable tensors `digits_minimax.pt` with the base's SHA-256."""
    from ddbench.core.registry import create_dataset

    out_dir = Path(out_dir)
    spec = create_dataset("digits")
    base_sha = _base_sha256(base_folder)
    summary = finetune_minimax(load_digits_dit(folder=base_folder), make_codec(DIGITS_PRESET.codec), spec.split("train"),
                               list(range(spec.num_classes)), out_dir, resolution=spec.resolution,
                               config=config, device=device, progress=progress, stop_after=stop_after,
                               identity_extra={"base_sha256": base_sha})
    if summary["finished"]:
        model = load_dit(out_dir / MINIMAX_WEIGHTS, num_heads=DIGITS_PRESET.model.num_heads)
        minimax_trainable(model)
        delta = {key: value.half() for key, value in trainable_state_dict(model).items()}
        torch.save({"base_sha256": base_sha, "tensors": delta}, out_dir / SHIPPED_MINIMAX)
    return summary


def load_digits_minimax(device: str | torch.device = "cpu", progress: Progress = NullProgress(),
                        folder: Optional[Path] = None) -> tuple[DiT, dict]:
    """(the Minimax-fine-tuned digits DiT, info): shipped tensors, else the cache, else fine-tune now."""
    base_sha = _base_sha256(folder)
    source = _minimax_source(folder)
    if source is None:
        cache = paths.cache_dir("dit") / "digits" / base_sha[:16]
        progress.log(f"minimax: no shipped fine-tune matches the digits DiT; fine-tuning once (minutes), cached in {cache}")
        finetune_digits_minimax(cache, base_folder=folder, progress=progress)
        source = cache / SHIPPED_MINIMAX
    payload = torch.load(source, map_location="cpu", weights_only=True)
    info = {"weights": "digits DiT + Minimax fine-tune", "file": str(source)}
    model = _apply_trainable(load_digits_dit(folder=folder), payload["tensors"], str(source))
    return model.to(device).eval().requires_grad_(False), {**info, "base_sha256": base_sha}


def _minimax_source(folder: Optional[Path] = None) -> Optional[Path]:
    """The Minimax file matching the base: shipped, else cached, else None (to be fine-tuned)."""
    shipped = (folder or weights_dir()) / SHIPPED_MINIMAX
    base_sha = _base_sha256(folder)
    if shipped.is_file() and torch.load(shipped, map_location="cpu", weights_only=True).get("base_sha256") == base_sha:
        return shipped
    cached = paths.cache_dir("dit") / "digits" / base_sha[:16] / SHIPPED_MINIMAX
    return cached if cached.is_file() else None


def _digits_dit_identity() -> dict[str, str]:
    return {"generator": cached_sha256_file(weights_dir() / SHIPPED_DIT)}


def _digits_minimax_identity() -> dict[str, str]:
    source = _minimax_source()
    base = cached_sha256_file(weights_dir() / SHIPPED_DIT)
    tuned = (cached_sha256_file(source) if source is not None else
             f"to-finetune:{stable_hash({'base': base, 'recipe': asdict(DIGITS_MINIMAX)}, 16)}")
    return {"generator": base, "minimax": tuned}


def _load_digits_dit(device, progress):
    return load_digits_dit(device), make_codec(DIGITS_PRESET.codec), {"weights": "shipped digits DiT",
                                                                    "codec": DIGITS_PRESET.codec}


def _load_digits_minimax(device, progress):
    model, info = load_digits_minimax(device, progress)
    return model, make_codec(DIGITS_PRESET.codec), {**info, "codec": DIGITS_PRESET.codec}


DIGITS_DIT_WEIGHTS = GeneratorWeights("shipped digits DiT", _load_digits_dit, _digits_dit_identity, 10, DATASET)
DIGITS_MINIMAX_WEIGHTS = GeneratorWeights("shipped digits DiT + Minimax fine-tune", _load_digits_minimax,
                                    _digits_minimax_identity, 10, DATASET)


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
    """Train the digits DiT from scratch, then its Minimax fine-tune (fixed seeds, resumable); writes
    digits_dit.pt, digits_minimax.pt and digits.json into OUT (copy them into weights/ to ship them)."""
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
    # the fine-tune starts from the float16 file, exactly what users load
    finetune = finetune_digits_minimax(out_dir, base_folder=out_dir, device=device, progress=progress,
                                       stop_after=stop_after)
    if finetune["finished"]:
        record["minimax"] = {**finetune, "recipe": asdict(DIGITS_MINIMAX), "base_sha256": _base_sha256(out_dir)}
        record["sample_check"] = {
            "samples": "10 per class, cfg 4.0, 50 respaced steps, seed 0 ('dit-sample-check', class, image)",
            "classifier": "logistic regression (C=0.1) on the real 16 px digits train split",
            "dit_accuracy": sample_check(load_digits_dit(folder=out_dir)),
            "minimax_accuracy": sample_check(load_digits_minimax(folder=out_dir)[0]),
        }
    record["files"] = {name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size}
                       for name in (SHIPPED_DIT, SHIPPED_MINIMAX) if (out_dir / name).is_file()}
    record["seconds_total"] = round(time.time() - started, 1)
    record["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sidecar.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record
