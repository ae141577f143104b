"""`TeacherStore`, ddbench's `TeacherProvider`: an external checkpoint if one is given for the
arch, else the cache `$DDBENCH_HOME/teachers/<dataset>/<arch>-<recipe hash>.pt`, else train with
the recipe and cache the result. Every teacher's top-1 on the real val split is known before it
labels anything: a teacher near chance (wrong class order, wrong dataset) is an error, which for
an external checkpoint names the accuracy its rows reach in the other known class orders.
Before training, the store says what it is about to do (recipe, epochs, images, device) and
names cached teachers of other recipes that `--teacher-ckpt` could use instead.

Every teacher carries the input normalisation it was trained with (`Teacher.mean/std`, and
`normalization` in the cache record): ddbench trains with the dataset's mean/std; a checkpoint
made elsewhere is taken to expect the ImageNet mean/std, as RDED's released teachers do, unless
`checkpoint_normalization="dataset"` (CLI `--teacher-norm dataset`) says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

import ddbench
from ddbench.core import distributed
from ddbench.core.hashing import cached_sha256_file, sha256_file, stable_hash
from ddbench.core.errors import CheckpointError, ConfigError, StorageError
from ddbench.core.files import write_atomic
from ddbench.core.interfaces import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec, Teacher
from ddbench.core.paths import home
from ddbench.core.progress import NullProgress, Progress
from ddbench.models import load_model, save_model, to_device
from ddbench.models.checkpoint import read_checkpoint
from ddbench.teachers.checkpoints import ddbench_checkpoint_extra, load_teacher_checkpoint
from ddbench.teachers.class_order import candidate_orders, rows_in_dataset_order
from ddbench.teachers.recipes import TeacherRecipe, recipe_for, recipe_hash
from ddbench.training import (
    HardLabelObjective,
    ResumePoint,
    build_seeded_model,
    evaluate_top1,
    load_tensor_set,
    load_validation_set,
    square_resize,
    train_classifier,
)


#: set to 1 to accept a teacher under the floor: only for dry runs that measure time and memory, not accuracy
WEAK_TEACHER_VARIABLE = "DDBENCH_DRY_RUN_ACCEPT_WEAK_TEACHER"


def accuracy_floor(num_classes: int) -> float:
    """The least top-1 (%) a usable teacher reaches: twice chance. A class-order mismatch lands
    near chance (RDED's known WNID-order pitfall), so this catches it before it costs a run.
    With DDBENCH_DRY_RUN_ACCEPT_WEAK_TEACHER=1 the floor is 0 and a warning says so every time
    (benchmarks/dry_run.py: a teacher trained for one epoch times the pipeline, its rows mean nothing)."""
    if os.environ.get(WEAK_TEACHER_VARIABLE, "").strip() == "1":
        warnings.warn(f"{WEAK_TEACHER_VARIABLE}=1: DRY RUN, teachers under {200.0 / num_classes:.1f}% top-1 (twice "
                      "chance) are ACCEPTED; results of this process measure time and memory only", stacklevel=2)
        return 0.0
    return 200.0 / num_classes


def measure_accuracy(
    model: nn.Module,
    dataset: DatasetSpec,
    device: torch.device,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> float:
    """Top-1 (%) of `model` on the real val split with the protocol's val transform, its inputs
    normalised with (mean, std): the model's own constants (default: the dataset's)."""
    model = to_device(model, device)
    return evaluate_top1(model, load_validation_set(dataset), mean or dataset.mean, std or dataset.std, device)


CHECKPOINT_NORMALIZATIONS = ("imagenet", "dataset")


def normalization_record(mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, list[float]]:
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def recorded_normalization(record: Mapping[str, Any], dataset: DatasetSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The constants a ddbench record names; records written before they were recorded come
    from teachers trained with the dataset's own constants (all ddbench ever used)."""
    values = record.get("normalization")
    if not values:
        return tuple(dataset.mean), tuple(dataset.std)
    return tuple(values["mean"]), tuple(values["std"])


def check_accuracy(accuracy: float, dataset: DatasetSpec, source: str) -> None:
    floor = accuracy_floor(dataset.num_classes)
    if accuracy < floor:
        raise CheckpointError(
            f"teacher {source} reaches only {accuracy:.1f}% top-1 on {dataset.name} val (chance "
            f"{100 / dataset.num_classes:.1f}%, required {floor:.1f}%): its class order or dataset does not match "
            f"{dataset.name}'s ({', '.join(dataset.class_names[:3])}, ...); retrain it or fix the class mapping"
        )


RECORD_KEYS = ("sha256", "accuracy", "class_names")


def read_record(record_path: Path) -> dict[str, Any]:
    """A cached teacher's `.json` record; a malformed one is a CheckpointError that says what to delete."""
    fix = f"delete it and {record_path.with_suffix('.pt').name} to retrain the teacher"
    try:
        record = json.loads(record_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"teacher record {record_path} is not valid JSON ({exc}); {fix}") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read teacher record {record_path} ({exc.strerror or exc}); {fix}") from exc
    if not isinstance(record, dict) or any(key not in record for key in RECORD_KEYS):
        raise CheckpointError(f"teacher record {record_path} is not a ddbench teacher record "
                              f"(it needs {', '.join(RECORD_KEYS)}); {fix}")
    accuracy = record["accuracy"]
    if (not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool) or not isinstance(record["sha256"], str)
            or not isinstance(record["class_names"], list)):
        raise CheckpointError(f"teacher record {record_path} holds a malformed accuracy, sha256 or class_names; {fix}")
    return record


def parse_checkpoint_option(value: str | os.PathLike | Mapping[str, Any] | None) -> dict[str | None, Path]:
    """`PATH` (every teacher arch), `arch=PATH,arch2=PATH2`, or a mapping -> {arch or None: Path}."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {arch: Path(path) for arch, path in value.items()}
    text = os.fspath(value)
    if "=" not in text:
        return {None: Path(text)}
    pairs = {}
    for item in text.split(","):
        arch, _, path = item.partition("=")
        if not path:
            raise ConfigError(f"--teacher-ckpt expects PATH or arch=PATH[,arch=PATH], got {text!r}")
        pairs[arch.strip()] = Path(path.strip())
    return pairs


class TeacherStore:
    """Gets teachers: external checkpoint -> cache -> training with the recipe.

    `TeacherStore()(dataset, "resnet18", device, progress)` returns a frozen, accuracy-checked
    `Teacher`. `checkpoints` maps arch -> path (key None: any arch); `class_order` says which class
    each of their classifier rows is (`ddbench.teachers.class_order`; default: sorted, ddbench's).
    `train_missing=False` raises instead of training. `recipe` names a recipe other than the
    dataset's own; `recipe_overrides` change it (and so its hash). `checkpoint_normalization` is
    what checkpoints from elsewhere expect: "imagenet" (RDED's teachers) or "dataset"; ddbench's
    own files record theirs."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        checkpoints: str | os.PathLike | Mapping[str, Any] | None = None,
        train_missing: bool = True,
        recipe_overrides: Mapping[str, Any] | None = None,
        recipe: str | None = None,
        class_order: str | os.PathLike | None = None,
        checkpoint_normalization: str = "imagenet",
    ):
        if checkpoint_normalization not in CHECKPOINT_NORMALIZATIONS:
            raise ConfigError(
                f"teacher normalisation {checkpoint_normalization!r} is not one of {', '.join(CHECKPOINT_NORMALIZATIONS)}"
            )
        self.root = Path(root) if root is not None else home() / "teachers"
        self.checkpoints = parse_checkpoint_option(checkpoints)
        self.train_missing = train_missing
        self.recipe_overrides = dict(recipe_overrides or {})
        self.recipe_name = recipe
        self.class_order = class_order
        self.checkpoint_normalization = checkpoint_normalization

    def recipe(self, dataset: DatasetSpec) -> TeacherRecipe:
        return recipe_for(dataset, self.recipe_name, **self.recipe_overrides)

    def cache_path(self, dataset: DatasetSpec, arch: str) -> Path:
        return self.root / dataset.name / f"{arch}-{recipe_hash(self.recipe(dataset), dataset, arch)}.pt"

    def __call__(self, dataset: DatasetSpec, arch: str, device: torch.device, progress: Progress = NullProgress()) -> Teacher:
        checkpoint = self.checkpoints.get(arch, self.checkpoints.get(None))
        if checkpoint is not None:
            return self.from_checkpoint(dataset, arch, checkpoint, device)
        path = self.cache_path(dataset, arch)
        if distributed.broadcast_object(path.exists()):  # under torchrun rank 0 decides for every rank
            return self.from_cache(dataset, arch, path, device)
        if not self.train_missing:
            raise CheckpointError(
                f"no cached {arch} teacher for {dataset.name} at {path}; run `ddbench teacher train "
                f"--dataset {dataset.name} --arch {arch}` or pass --teacher-ckpt"
            )
        return self.train(dataset, arch, device, progress)

    def identify(self, dataset: DatasetSpec, arch: str) -> str | None:
        """The sha256 of the teacher `self(dataset, arch, ...)` would return, without loading it;
        None when none exists yet (it would be trained)."""
        checkpoint = self.checkpoints.get(arch, self.checkpoints.get(None))
        if checkpoint is not None:
            if not Path(checkpoint).is_file():
                raise CheckpointError(f"teacher checkpoint {checkpoint} does not exist; check --teacher-ckpt")
            mean, std = self.checkpoint_constants(Path(checkpoint), dataset)
            return self._checkpoint_key(checkpoint, rows_in_dataset_order(self.class_order, dataset), mean, std)
        record_path = self.cache_path(dataset, arch).with_suffix(".json")
        if not record_path.is_file():
            return None
        return read_record(record_path)["sha256"]

    @staticmethod
    def _checkpoint_key(path: str | os.PathLike, rows: list[int] | None, mean: tuple, std: tuple) -> str:
        """The file's sha256; read in another class order or with other input constants than
        ImageNet's, a hash of all of them (the same file read another way is another teacher)."""
        checksum = cached_sha256_file(path)
        if rows is None and (tuple(mean), tuple(std)) == (IMAGENET_MEAN, IMAGENET_STD):
            return checksum
        return stable_hash({"checkpoint": checksum, "rows": rows if rows is not None else "sorted", "mean": list(mean),
                            "std": list(std)})

    def checkpoint_constants(self, path: Path, dataset: DatasetSpec,
                             payload: Any = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) a teacher checkpoint expects: recorded in ddbench's files, else the option.
        `payload`: the file's contents when already read."""
        payload_extra = ddbench_checkpoint_extra(read_checkpoint(path) if payload is None else payload)
        if payload_extra is not None:
            return recorded_normalization(payload_extra, dataset)
        if self.checkpoint_normalization == "dataset":
            return tuple(dataset.mean), tuple(dataset.std)
        return IMAGENET_MEAN, IMAGENET_STD

    def from_checkpoint(self, dataset: DatasetSpec, arch: str, path: Path, device: torch.device) -> Teacher:
        rows = rows_in_dataset_order(self.class_order, dataset)
        payload = read_checkpoint(path)  # once: a teacher file can be hundreds of MB
        mean, std = self.checkpoint_constants(path, dataset, payload)
        model = load_teacher_checkpoint(path, arch, dataset.num_classes, dataset.resolution, class_rows=rows, payload=payload)
        key = self._checkpoint_key(path, rows, mean, std)
        accuracy = self._measured_accuracy(key, arch, dataset, lambda: measure_accuracy(model, dataset, device, mean, std))
        order = str(self.class_order or "sorted")
        if accuracy < accuracy_floor(dataset.num_classes):
            others = {name: self._accuracy_in_order(dataset, arch, path, payload, device, name, mean, std)
                      for name in candidate_orders(dataset) if name != order}
            hint = "; ".join(f"with --teacher-class-order {name}: {value:.1f}%" for name, value in others.items())
            check_accuracy(accuracy, dataset, f"{path} (class order {order}{'; ' + hint if hint else ''})")
        source = f"checkpoint:{path}" + (f" (class order {order})" if rows is not None else "")
        return Teacher(model, arch, dataset.name, dataset.num_classes, accuracy, key, source, mean, std)

    def _measured_accuracy(self, key: str, arch: str, dataset: DatasetSpec, measure) -> float:
        """A checkpoint's val top-1, measured once per (teacher key, arch, dataset fingerprint) and
        kept under the cache root: measuring a foreign file again cost minutes on every call."""
        what = {"teacher_key": key, "arch": arch, "dataset": dataset.fingerprint()}
        memo = self.root / "measured" / f"{stable_hash(what, 20)}.json"
        if memo.is_file():
            try:
                return float(json.loads(memo.read_text())["accuracy"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: measure again and rewrite it
        accuracy = measure()
        if distributed.is_writer():
            with contextlib.suppress(StorageError):  # a read-only cache loses the memo, never the answer
                write_atomic(memo, json.dumps({**what, "accuracy": accuracy}, indent=2, allow_nan=False))
        return accuracy

    def _accuracy_in_order(self, dataset: DatasetSpec, arch: str, path: Path, payload: Any, device: torch.device, order: str,
                           mean: tuple, std: tuple) -> float:
        rows = rows_in_dataset_order(order, dataset)
        model = load_teacher_checkpoint(path, arch, dataset.num_classes, dataset.resolution, class_rows=rows, payload=payload)
        return measure_accuracy(model, dataset, device, mean, std)

    def from_cache(self, dataset: DatasetSpec, arch: str, path: Path, device: torch.device) -> Teacher:
        record_path = path.with_suffix(".json")
        if not record_path.exists():
            raise CheckpointError(f"{path} has no record {record_path.name} (interrupted write?); delete {path} to retrain")
        record = read_record(record_path)
        checksum = sha256_file(path)
        if checksum != record.get("sha256"):
            raise CheckpointError(f"{path} does not match the checksum in {record_path.name}; delete both to retrain")
        if record.get("class_names") != list(dataset.class_names):
            raise CheckpointError(
                f"{path} was trained with class order {record.get('class_names', [])[:3]}..., "
                f"{dataset.name} now has {dataset.class_names[:3]}...; delete it to retrain"
            )
        model, _ = load_model(path)
        model = to_device(model, device)
        mean, std = recorded_normalization(record, dataset)
        return Teacher(model, arch, dataset.name, dataset.num_classes, record["accuracy"], checksum, f"cache:{path}", mean, std)

    def other_recipes(self, dataset: DatasetSpec, arch: str) -> list[dict[str, Any]]:
        """Records of cached `arch` teachers for this dataset, class order and resolution made with
        another recipe (each with its `path`), newest first."""
        current = self.cache_path(dataset, arch)
        found = []
        for record_path in sorted((self.root / dataset.name).glob(f"{arch}-*.json")):
            checkpoint = record_path.with_suffix(".pt")
            if checkpoint == current or not checkpoint.is_file():
                continue
            try:
                record = read_record(record_path)
            except CheckpointError:  # a broken record is reported when it is the one asked for
                continue
            if record.get("arch") != arch or record.get("class_names") != list(dataset.class_names):
                continue
            if record.get("resolution", dataset.resolution) != dataset.resolution:
                continue
            found.append({**record, "path": str(checkpoint), "mtime": checkpoint.stat().st_mtime})
        return sorted(found, key=lambda record: -record["mtime"])

    def announce_training(self, dataset: DatasetSpec, arch: str, recipe: TeacherRecipe, device: torch.device,
                          progress: Progress) -> None:
        """One log line (shown in non-interactive logs too) before any teacher training starts."""
        how = "from timm's ImageNet weights" if recipe.pretrained else "from scratch"
        images = len(dataset.split("train")) if recipe.epochs > 0 else 0
        work = f"{recipe.epochs} epochs over {images:,} train images" if recipe.epochs > 0 else "no training (weights as they are)"
        changed = "".join(f", {key}={value}" for key, value in sorted(self.recipe_overrides.items()))
        progress.log(f"teacher {arch} for {dataset.name} at {dataset.resolution} px: none cached, so training one now "
                     f"with recipe {recipe.name or '(custom)'}{changed} ({how}; {work}; batch {recipe.batch_size}, "
                     f"{recipe.optimizer} lr {recipe.lr:g}) on {device}; it will be cached at {self.cache_path(dataset, arch)}")
        for record in self.other_recipes(dataset, arch):
            differs = {key: value for key, value in record.get("recipe", {}).items()
                       if key != "name" and recipe.to_dict().get(key) != value}
            described = ", ".join(f"{key}={value}" for key, value in sorted(differs.items())) or "another recipe version"
            resolution = "" if "resolution" in record else " (resolution not recorded)"
            progress.log(f"  a cached {arch} teacher of another recipe exists for {dataset.name}{resolution}: "
                         f"{record['path']} (recipe {record.get('recipe', {}).get('name') or 'unnamed'}: {described}; "
                         f"top-1 {record.get('accuracy', float('nan')):.2f}%); to use it instead, stop and pass "
                         f"--teacher-ckpt {arch}={record['path']}")

    def train(self, dataset: DatasetSpec, arch: str, device: torch.device, progress: Progress = NullProgress()) -> Teacher:
        """Train (or, for epochs == 0, take pretrained) a teacher with the recipe; cache and return it.
        Under torchrun every rank trains it together (DDP); rank 0 writes the cache."""
        recipe = self.recipe(dataset)
        path = self.cache_path(dataset, arch)
        self.announce_training(dataset, arch, recipe, device, progress)
        started = time.perf_counter()
        model_kwargs = {"pretrained": recipe.pretrained, "pretrained_tag": recipe.pretrained_tag(arch)}
        model = build_seeded_model(arch, dataset.num_classes, dataset.resolution, recipe.seed, "teacher-init", **model_kwargs)
        if recipe.epochs > 0:
            with progress.task(f"teacher {arch} on {dataset.name}: loading the train split") as bar:
                train_set = load_tensor_set(dataset.split("train"), square_resize(dataset.resolution), f"{dataset.name} train split")
                bar.advance()
            model, history = train_classifier(
                model,
                recipe.training_recipe(),
                train_set,
                HardLabelObjective(recipe.label_smoothing),
                mean=dataset.mean,
                std=dataset.std,
                resolution=dataset.resolution,
                seed=recipe.seed,
                device=device,
                progress=progress,
                description=f"teacher {arch} on {dataset.name}",
                purpose="teacher",
                # a long recipe (200 epochs) interrupted resumes at its last finished epoch
                resume=ResumePoint(path.with_suffix(".state.pt"), every=1,
                                   identity={"recipe_hash": recipe_hash(recipe, dataset, arch)}),
            )
            epoch_losses = history.epoch_losses
        else:
            epoch_losses = []
        accuracy = measure_accuracy(model, dataset, device)
        check_accuracy(accuracy, dataset, f"{arch} trained with the {dataset.name} recipe")
        normalization = normalization_record(dataset.mean, dataset.std)  # what train_classifier used above
        if not distributed.is_writer():
            record = distributed.broadcast_object(None)
            return Teacher(model, arch, dataset.name, dataset.num_classes, accuracy, record["sha256"], f"trained:{path}",
                           tuple(dataset.mean), tuple(dataset.std))
        save_model(model, path, extra={"recipe": recipe.to_dict(), "normalization": normalization})
        record = {
            "arch": arch,
            "dataset": dataset.name,
            "class_names": list(dataset.class_names),
            "resolution": dataset.resolution,
            "accuracy": accuracy,
            "recipe": recipe.to_dict(),
            "recipe_hash": recipe_hash(recipe, dataset, arch),
            "normalization": normalization,
            "sha256": sha256_file(path),
            "train_seconds": time.perf_counter() - started,
            "epoch_losses": epoch_losses,
            "device": str(device),
            "ddbench_version": ddbench.__version__,
        }
        write_atomic(path.with_suffix(".json"), json.dumps(record, indent=2, allow_nan=False))
        distributed.broadcast_object(record)
        return Teacher(
            model, arch, dataset.name, dataset.num_classes, accuracy, record["sha256"], f"trained:{path}",
            tuple(dataset.mean), tuple(dataset.std),
        )


def make_teacher_provider(checkpoint: str | os.PathLike | Mapping[str, Any] | None = None, **kwargs: Any) -> TeacherStore:
    """The provider the CLI installs: `checkpoint` is --teacher-ckpt (PATH or arch=PATH,...);
    `recipe` is --teacher-recipe and `class_order` --teacher-class-order."""
    return TeacherStore(checkpoints=checkpoint, **kwargs)
