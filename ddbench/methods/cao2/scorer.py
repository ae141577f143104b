"""The classifier CaO2 selects candidates with, a first-class input of the method.

- ImageNet family (woof, nette, imagenet100, imagenet1k): torchvision's ImageNet-1K ResNet-18, the
  model upstream loads with `torchvision.models.resnet18(pretrained=True)`, from the weights table row
  `resnet18_tv_in1k` (downloaded on first use; offline without it: the table's one-line error). Its
  1,000-way softmax is read at the class's ImageNet-1K index; its input is the raw decoder output
  (`scorer_input="raw"`), as upstream.
- Other datasets (digits, CIFAR): the run's teacher (`scorer="teacher"`), fed as it was trained:
  pixels in [0, 1] at the dataset's resolution, normalised with the teacher's mean/std
  (`scorer_input="normalized"`); its softmax is read at the dataset class index.
- A local file: a torchvision ResNet-18 state dict with 1,000 classes (`scorer=PATH`).
The scorer's sha256 is in the run identity (role `scorer`; the teacher's is the pipeline's `teacher`)
and its record in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.hashing import cached_sha256_file
from ddbench.core.interfaces import DatasetSpec, Teacher
from ddbench.core.progress import NullProgress, Progress

TEACHER = "teacher"
IMAGENET_SCORER = "resnet18_tv_in1k"  # weights-table row
SCORER_INPUTS = ("raw", "normalized")


@dataclass
class Scorer:
    """A frozen classifier, its label for each dataset class, and how its input is made."""

    model: Callable[[torch.Tensor], torch.Tensor]
    labels: tuple[int, ...]  # dataset class -> the scorer's output index
    record: dict[str, Any]
    mean: Optional[tuple[float, ...]] = None  # "normalized" input only
    std: Optional[tuple[float, ...]] = None


def is_table_row(scorer: str) -> bool:
    from ddbench.generators import weights

    return scorer in weights.TABLE


def scorer_identity(scorer: str) -> dict[str, str]:
    """{"scorer": sha256} for a table row or a file; {} for the teacher (the pipeline records it)."""
    if scorer == TEACHER:
        return {}
    if is_table_row(scorer):
        from ddbench.generators import weights

        return {"scorer": weights.table_sha256(scorer)}
    path = Path(scorer).expanduser()
    if not path.is_file():
        raise CheckpointError(f"cao2: scorer {scorer!r} is neither 'teacher', a weights-table row ({IMAGENET_SCORER}) "
                              "nor a file")
    return {"scorer": cached_sha256_file(path)}


def scorer_record(scorer: str, teacher: Optional[Teacher]) -> dict[str, Any]:
    """What the manifest says about the scorer, known before loading it."""
    if scorer == TEACHER:
        info = teacher.info() if teacher is not None else {}
        return {"scorer": TEACHER, **{key: info.get(key) for key in ("arch", "checkpoint_sha256", "accuracy", "source")}}
    if is_table_row(scorer):
        from ddbench.generators import weights

        entry = weights.get_entry(scorer)
        return {"scorer": scorer, "sha256": weights.table_sha256(entry), "source": entry.repo_id or entry.url_base,
                "architecture": dict(entry.architecture)}
    return {"scorer": "file", "path": scorer, **scorer_identity(scorer)}


def load_resnet18(path: Path, device: torch.device) -> torch.nn.Module:
    """torchvision's resnet18 with 1,000 classes from a state dict file (.safetensors or torch)."""
    import torchvision

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = torchvision.models.resnet18(weights=None, num_classes=1000)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} is not a torchvision ResNet-18 state dict with 1,000 classes: "
                              f"{str(exc).splitlines()[0]}") from exc
    return model.to(device).eval().requires_grad_(False)


def load_scorer(scorer: str, dataset: DatasetSpec, teacher: Optional[Teacher], generator_labels: tuple[int, ...],
                device: torch.device, progress: Progress = NullProgress()) -> Scorer:
    """The scorer for `dataset`. `generator_labels`: the ImageNet-1K index of each class (ImageNet scorers)."""
    if scorer == TEACHER:
        if teacher is None:
            raise ConfigError("cao2 scores with the run's teacher here; pass --teachers ARCH (or --set "
                              f"scorer={IMAGENET_SCORER} for a dataset with ImageNet-1K classes)")
        if teacher.num_classes != dataset.num_classes:
            raise ConfigError(f"cao2: teacher {teacher.arch} has {teacher.num_classes} classes, "
                              f"{dataset.name} has {dataset.num_classes}")
        mean, std = teacher.normalization(dataset)
        model = teacher.model.to(device).eval()
        return Scorer(model, tuple(range(dataset.num_classes)), scorer_record(scorer, teacher), mean, std)
    if getattr(dataset, "imagenet1k_indices", None) is None:
        raise ConfigError(f"cao2: the ImageNet-1K scorer {scorer!r} cannot score {dataset.name} (no ImageNet-1K "
                          "class indices); use --set scorer=teacher")
    if is_table_row(scorer):
        from ddbench.generators import weights

        path = weights.resolve_weights(scorer, progress=progress, option="--set scorer=FILE")
    else:
        path = Path(scorer).expanduser()
    return Scorer(load_resnet18(Path(path), device), tuple(generator_labels), scorer_record(scorer, None))


def prepare_input(decoded: torch.Tensor, scorer: Scorer, mode: str, size: int) -> torch.Tensor:
    """What the scorer sees of decoder outputs in [-1, 1] (B, 3, H, W)."""
    from ddbench.methods.cao2.algorithm import scorer_input

    if mode == "raw":
        return scorer_input(decoded, size)
    if mode != "normalized":
        raise ConfigError(f"cao2: scorer_input must be one of {', '.join(SCORER_INPUTS)}, got {mode!r}")
    unit = (decoded.float().clamp(-1, 1) + 1) / 2
    unit = F.interpolate(unit, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(scorer.mean or (0.0, 0.0, 0.0), device=unit.device).view(1, -1, 1, 1)
    std = torch.tensor(scorer.std or (1.0, 1.0, 1.0), device=unit.device).view(1, -1, 1, 1)
    return (unit - mean) / std
