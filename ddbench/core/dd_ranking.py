"""DD-Ranking's scores (NUS-HPC-AI-Lab, PyPI `ddranking` 0.2.0) and its tensor format. Prints nothing.

Scores, exactly as `ddranking/metrics/soft_label.py` and `aug_robust.py` compute them per
evaluation run, with weight w (their `lrs_lambda` / `ars_lambda`, 0.5):

    HLR = acc(full real data, hard labels) - acc(distilled, hard labels)
    IOR = acc(distilled, soft labels) - acc(random real subset of the same IPC, soft labels)
    LRS = (e^a - e^-1) / (e - e^-1),  a = w IOR - (1 - w) HLR
    ARS = (e^b - e^-1) / (e - e^-1),  b = w (acc_syn_aug - acc_rand_aug) + (1 - w) (acc_syn_noaug - acc_rand_noaug)

The DD-Ranking paper defines them on accuracies as fractions (a in [-1, 1], so LRS in [0, 1]);
its code feeds percentages into exp() (ddranking's `validate` returns top-1 in %), which pushes
LRS and ARS towards -e^-1/(e - e^-1) or huge values. ddbench follows the paper (`scale="fraction"`,
the default) and gives the code's numbers too (`scale="percent"`): `both_scales` returns both.
Accuracies go in as ddbench stores them: percentages.

Tensor format: what `compute_metrics(image_tensor=..., soft_labels=...)` takes, saved with
`torch.save`: `images.pt`, float (N, 3, H, W) normalised with the dataset's mean/std, class-major
(image k belongs to class k // IPC, as DD-Ranking's `hard_labels` assume), and optionally
`labels.pt`, soft labels (N, num_classes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ddbench.core.errors import DistilledSetError

SCALES = ("fraction", "percent")
E_MINUS_1 = math.exp(-1)


def _squash(value: float) -> float:
    """(e^x - e^-1) / (e - e^-1), as DD-Ranking writes it (float64, overflowing to inf like numpy)."""
    try:
        return (math.exp(value) - E_MINUS_1) / (math.e - E_MINUS_1)
    except OverflowError:
        return math.inf


def _scaled(accuracies: Sequence[float], scale: str) -> list[float]:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
    return [a / 100.0 if scale == "fraction" else float(a) for a in accuracies]


@dataclass(frozen=True)
class LabelRobustScore:
    hlr: float  # hard label recovery
    ior: float  # improvement over random
    lrs: float  # label-robust score


@dataclass(frozen=True)
class AugmentationRobustScore:
    with_aug: float
    without_aug: float
    ars: float


def label_robust_score(full_hard: float, syn_hard: float, syn_soft: float, random_soft: float,
                       weight: float = 0.5, scale: str = "fraction") -> LabelRobustScore:
    """HLR, IOR and LRS from four top-1 accuracies in percent (see the module docstring)."""
    full_hard, syn_hard, syn_soft, random_soft = _scaled((full_hard, syn_hard, syn_soft, random_soft), scale)
    hlr = 1.00 * (full_hard - syn_hard)
    ior = 1.00 * (syn_soft - random_soft)
    return LabelRobustScore(hlr, ior, _squash(weight * ior - (1 - weight) * hlr))


def augmentation_robust_score(syn_with_aug: float, random_with_aug: float, syn_without_aug: float,
                              random_without_aug: float, weight: float = 0.5, scale: str = "fraction") -> AugmentationRobustScore:
    """The with/without-augmentation gaps to a random subset and ARS, from top-1 in percent."""
    syn_with_aug, random_with_aug, syn_without_aug, random_without_aug = _scaled(
        (syn_with_aug, random_with_aug, syn_without_aug, random_without_aug), scale)
    with_aug = 1.00 * (syn_with_aug - random_with_aug)
    without_aug = 1.00 * (syn_without_aug - random_without_aug)
    return AugmentationRobustScore(with_aug, without_aug, _squash(weight * with_aug + (1 - weight) * without_aug))


def both_scales(function, *accuracies: float, weight: float = 0.5) -> dict[str, Any]:
    """{"fraction": scores, "percent": scores} of `label_robust_score` or `augmentation_robust_score`."""
    return {scale: function(*accuracies, weight=weight, scale=scale) for scale in SCALES}


# ---------------------------------------------------------------------------------------------
# the tensor format


def export_tensors(distilled, dataset, out_dir: str | Path) -> Path:
    """Write `distilled` (a DistilledSet of `dataset`) as DD-Ranking's `images.pt` (class-major,
    normalised with the dataset's mean/std, at the dataset's resolution) + `ddbench.json` (classes,
    IPC, mean, std). Returns the folder."""
    import torch
    from torchvision.transforms import functional as F

    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_class: dict[int, list[Path]] = {}
    for path, label in distilled.samples:
        by_class.setdefault(label, []).append(path)
    counts = {len(paths) for paths in by_class.values()}
    if len(by_class) != len(dataset.class_names) or len(counts) != 1:
        raise DistilledSetError(f"{distilled.root}: DD-Ranking's format needs the same number of images in every class "
                                f"({len(dataset.class_names)} classes); this set has {sorted(len(p) for p in by_class.values())}")
    size = dataset.resolution
    images = []
    for label in range(len(dataset.class_names)):
        for path in by_class[label]:
            with Image.open(path) as image:
                tensor = F.to_tensor(image.convert("RGB").resize((size, size), Image.BICUBIC))
            images.append(F.normalize(tensor, list(dataset.mean), list(dataset.std)))
    torch.save(torch.stack(images), out / "images.pt")
    meta = {"classes": list(dataset.class_names), "ipc": counts.pop(), "mean": list(dataset.mean), "std": list(dataset.std),
            "dataset": dataset.name, "resolution": size, "source": str(distilled.root)}
    (out / "ddbench.json").write_text(json.dumps(meta, indent=2))
    return out


def is_tensor_set(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix == ".pt") or (path.is_dir() and (path / "images.pt").is_file()
                                                        and not (path / "images").is_dir())


def import_tensors(path: str | Path, dataset, out_dir: str | Path) -> Path:
    """Turn DD-Ranking's tensors (`images.pt`, or a folder holding it and maybe `labels.pt`) into a
    class-folder tree `ddbench eval` reads: `<out>/<class>/<i>.png` (de-normalised with the
    dataset's mean/std), soft labels kept beside it as `soft_labels.pt`. Returns `out_dir`."""
    import torch

    from PIL import Image

    path = Path(path)
    images_file = path if path.is_file() else path / "images.pt"
    try:
        images = torch.load(images_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise DistilledSetError(f"cannot read DD-Ranking tensors from {images_file} ({exc})") from exc
    classes = len(dataset.class_names)
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or images.shape[0] % classes:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise DistilledSetError(f"{images_file}: expected a float tensor (N, 3, H, W) with N a multiple of "
                                f"{classes} classes (class-major), got {shape}")
    ipc = images.shape[0] // classes
    mean = torch.tensor(dataset.mean).view(1, 3, 1, 1)
    std = torch.tensor(dataset.std).view(1, 3, 1, 1)
    pixels = ((images.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = Path(out_dir)
    for index, array in enumerate(pixels):
        folder = out / dataset.class_names[index // ipc]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{index % ipc}.png")
    labels = images_file.with_name("labels.pt")
    if labels.is_file():
        soft = torch.load(labels, map_location="cpu", weights_only=True)
        if not torch.is_tensor(soft) or tuple(soft.shape) != (images.shape[0], classes):
            raise DistilledSetError(f"{labels}: expected soft labels ({images.shape[0]}, {classes})")
        torch.save(soft, out / "soft_labels.pt")
    return out


def readable_folder(folder: str | Path, dataset_name: str | None, data_root: str | None = None,
                    resolution: int | None = None) -> Path:
    """`folder` itself, or, for DD-Ranking tensors, the class-folder tree made from them once (kept
    in the cache under the file's checksum) that `ddbench eval` then reads."""
    from ddbench.core import paths, registry
    from ddbench.core.errors import ConfigError
    from ddbench.core.files import temporary_sibling
    from ddbench.core.hashing import sha256_file

    if not is_tensor_set(folder):
        return Path(folder)
    if dataset_name is None:
        raise ConfigError(f"{folder} holds DD-Ranking tensors; pass --dataset to say which dataset (and class order) they distil")
    images_file = Path(folder) if Path(folder).is_file() else Path(folder) / "images.pt"
    labels = images_file.with_name("labels.pt")
    key = sha256_file(images_file)[:16] + (sha256_file(labels)[:8] if labels.is_file() else "")
    out = paths.cache_dir("dd-ranking") / f"{dataset_name}-{key}"
    if not out.is_dir():
        dataset = registry.create_dataset(dataset_name, data_root, resolution)
        staging = temporary_sibling(out)
        import_tensors(folder, dataset, staging)
        staging.rename(out)
    return out


# ---------------------------------------------------------------------------------------------
# the scores from ddbench's own evaluations


@dataclass
class ScoredConfiguration:
    """Whom a score from results rows is about: a configuration (its readable label) and a student."""

    label: str
    configuration: str
    student: str


@dataclass
class StoreScores(ScoredConfiguration):
    """LRS of one configuration for one student, from results rows (means over their seeds)."""

    full_hard: float
    syn_hard: float
    syn_soft: float
    random_soft: float
    n: dict[str, int]
    scores: dict[str, LabelRobustScore]
    full_hard_source: str = ""


def _accuracy(row: dict[str, Any]) -> float:
    """DD-Ranking keeps the best validation of a training: top1_best when a row has it."""
    return float(row["metrics"].get("top1_best", row["metrics"].get("top1_final", row["value"])))


def _mean_accuracy(rows: list[dict[str, Any]]) -> tuple[float, int]:
    """(mean `_accuracy` over `rows`, how many): one configuration's seeds pooled; NaN for none."""
    values = [_accuracy(row) for row in rows]
    return (sum(values) / len(values), len(values)) if values else (math.nan, 0)


def scores_from_store(store, dataset: str, ipc: int, hard_evaluator: str = "hard_label", soft_evaluator: str = "rded",
                      baseline: str = "random", full_hard: dict[str, float] | None = None,
                      weight: float = 0.5) -> list[StoreScores]:
    """HLR, IOR and LRS (both scales) of every configuration of `dataset` at `ipc` that has rows of
    `hard_evaluator` and `soft_evaluator`, against `baseline` (a random real subset, same IPC) under
    the same soft-label evaluator config. The full-data hard-label accuracy of a student is
    `full_hard[student]` or else the recorded accuracy of a teacher of the student's architecture
    (trained on the full real data with hard labels by the dataset's teacher recipe, not with
    DD-Ranking's own real-data recipe); a student with neither is left out."""
    rows = list(store.rows(dataset=dataset, ipc=ipc))
    known_full = dict(full_hard or {})
    full_source = {student: "given" for student in known_full}
    for row in rows:
        info = row.get("teacher_info") or {}
        if row["teacher"] and row["teacher"] not in known_full and info.get("accuracy") is not None:
            known_full[row["teacher"]] = float(info["accuracy"])
            full_source[row["teacher"]] = f"teacher {row['teacher']} ({info.get('source', '')})"

    out = []
    configurations = dict.fromkeys((row["configuration"], row["student"]) for row in rows if row["method"] != baseline)
    for configuration, student in configurations:
        mine = [row for row in rows if row["configuration"] == configuration and row["student"] == student]
        hard = [row for row in mine if row["evaluator"] == hard_evaluator]
        soft = [row for row in mine if row["evaluator"] == soft_evaluator]
        if not hard or not soft or student not in known_full:
            continue
        soft_hash = soft[0]["evaluator_config_hash"]
        random_soft_rows = [row for row in rows if row["method"] == baseline and row["student"] == student
                            and row["evaluator"] == soft_evaluator and row["evaluator_config_hash"] == soft_hash
                            and row["dataset_fingerprint"] == soft[0]["dataset_fingerprint"]]
        if not random_soft_rows:
            continue
        (syn_hard, n_hard), (syn_soft, n_soft), (random_soft, n_random) = _mean_accuracy(hard), _mean_accuracy(soft), _mean_accuracy(random_soft_rows)
        accuracies = (known_full[student], syn_hard, syn_soft, random_soft)
        out.append(StoreScores(mine[0]["label"], configuration, student, *accuracies,
                               n={"syn_hard": n_hard, "syn_soft": n_soft, "random_soft": n_random},
                               scores=both_scales(label_robust_score, *accuracies, weight=weight),
                               full_hard_source=full_source[student]))
    return out


@dataclass
class StoreAugmentationScores(ScoredConfiguration):
    """ARS of one configuration for one student under one evaluator, from results rows: its
    set and the random subset of the same IPC, each with and without training augmentation
    (the evaluator's `augment` setting), means over their seeds."""

    evaluator: str
    syn_with_aug: float
    random_with_aug: float
    syn_without_aug: float
    random_without_aug: float
    n: dict[str, int]
    scores: dict[str, AugmentationRobustScore]


def _augments(row: dict[str, Any]) -> bool:
    """Rows made before evaluators had the `augment` setting were all trained with augmentation."""
    return bool(row["evaluator_config"].get("augment", True))


def _evaluation_setting(row: dict[str, Any]) -> tuple:
    """What must be the same for two rows' accuracies to be compared, augmentation aside: the
    evaluator's protocol and other settings, the student, the teacher and the evaluation data."""
    others = {key: value for key, value in row["evaluator_config"].items() if key != "augment"}
    return (json.dumps(others, sort_keys=True), row["evaluator_protocol"], row["student"], row["teacher_key"],
            row["dataset_fingerprint"])


def augmentation_scores_from_store(store, dataset: str, ipc: int, evaluator: str = "rded", baseline: str = "random",
                                   weight: float = 0.5) -> list[StoreAugmentationScores]:
    """ARS (both scales) of every configuration of `dataset` at `ipc` whose `evaluator` rows
    include runs with and without augmentation (`--set EVALUATOR.augment=false`), against the
    `baseline` method's rows (a random real subset, same IPC) under the same evaluator settings,
    student and teacher. `rded` (soft labels, CutMix: DD-Ranking's default ARS setting) by
    default; `hard_label` gives its hard-label variant."""
    rows = list(store.rows(dataset=dataset, ipc=ipc, evaluator=evaluator))
    synthetic: dict[tuple, dict[bool, list]] = {}
    random: dict[tuple, dict[bool, list]] = {}
    for row in rows:
        setting = _evaluation_setting(row)
        if row["method"] == baseline:
            random.setdefault(setting, {True: [], False: []})[_augments(row)].append(row)
        else:
            synthetic.setdefault((row["configuration"], setting), {True: [], False: []})[_augments(row)].append(row)
    out = []
    for (configuration, setting), by_augment in synthetic.items():
        baseline_rows = random.get(setting, {True: [], False: []})
        groups = (by_augment[True], baseline_rows[True], by_augment[False], baseline_rows[False])
        if not all(groups):
            continue
        accuracies = tuple(_mean_accuracy(group)[0] for group in groups)
        first = by_augment[True][0]
        out.append(StoreAugmentationScores(
            first["label"], configuration, first["student"], evaluator, *accuracies,
            n={name: len(group) for name, group in zip(("syn_with_aug", "random_with_aug", "syn_without_aug",
                                                        "random_without_aug"), groups)},
            scores=both_scales(augmentation_robust_score, *accuracies, weight=weight)))
    return out
