"""The four interfaces every plugin implements: DatasetSpec, Method, Evaluator and Teacher.

A method writes a distilled set; an evaluator trains students on it; a dataset spec says where
the real data lives and in which class order; a teacher is a frozen classifier with its record.
Plugins depend on these; the core never imports a plugin.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, Sequence

import torch
from PIL import Image
from torch import nn

from ddbench.core.config import EmptyConfig, config_to_dict, resolve_config
from ddbench.core.errors import ConfigError
from ddbench.core.hashing import stable_hash
from ddbench.core.identity import EvalIdentity, PluginCode, plugin_code
from ddbench.core.progress import NullProgress, Progress
from ddbench.core.seeding import torch_generator

if TYPE_CHECKING:
    from ddbench.core.distilled import DistilledSet, DistilledSetWriter

#: the ImageNet mean/std: torchvision's models and RDED's teachers and students expect them
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Archive:
    """A downloadable archive of a dataset, with the checksum that proves it is the right one."""

    url: str
    checksum: str  # "md5:<hex>" or "sha256:<hex>"
    filename: str
    extracted_dir: str  # the folder the archive unpacks to, under the root


class DatasetSpec(abc.ABC):
    """A dataset: its classes in a fixed order, its splits, resolution and normalisation.

    `split("train")` and `split("val")` return torch datasets of (PIL RGB image, label) or of
    `transform(image)` when a transform is given. Class index i is `class_names[i]`.
    """

    name: ClassVar[str]
    #: the working resolution (px); the class value is the dataset's default, `resolution=` overrides it
    resolution: int
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    #: evaluator/method presets look up this family ("digits", "cifar", "imagenet")
    preset_family: ClassVar[str] = "default"
    #: the teacher recipe this dataset needs (a key of `ddbench.teachers.RECIPES`); "" = none known
    teacher_recipe: ClassVar[str] = ""
    #: what to download for `ddbench data fetch`, keyed by variant ("default" first)
    archives: ClassVar[Mapping[str, Archive]] = {}
    #: one line saying where a user gets the data
    source: ClassVar[str] = ""

    def __init__(self, root: str | Path | None = None, resolution: int | None = None):
        self.root = Path(root).expanduser() if root is not None else None
        if resolution is not None:
            if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
                raise ConfigError(f"--resolution must be an integer from 8 to 1024 px, got {resolution!r}")
            self.resolution = resolution
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def data_root_after_fetch(cls, unpacked: Path) -> Path:
        """The `--data-root` to use once `ddbench data fetch` unpacked an archive into `unpacked`."""
        return unpacked

    @property
    @abc.abstractmethod
    def class_names(self) -> list[str]:
        """Class identifiers in index order (folder names on disk, e.g. WNIDs)."""

    @property
    def class_labels(self) -> list[str]:
        """Human-readable class names in index order."""
        return self.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abc.abstractmethod
    def split(self, name: str, transform: Callable | None = None) -> torch.utils.data.Dataset:
        """The `train` or `val` split."""

    def class_indices(self, split: str) -> dict[int, list[int]]:
        """For each class, the sample indices of that class in `split` (in the split's order)."""
        dataset = self.split(split)
        by_class: dict[int, list[int]] = {c: [] for c in range(self.num_classes)}
        for index, label in enumerate(dataset.targets):
            by_class[label].append(index)
        return by_class

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data a run saw: name, resolution, class list and split sizes.
        Two runs whose fingerprints differ never share a leaderboard cell."""
        if self._fingerprint is None:
            self._fingerprint = {
                "name": self.name,
                "resolution": self.resolution,
                "num_classes": self.num_classes,
                "classes_sha256": stable_hash(list(self.class_names)),
                "train_size": len(self.split("train")),
                "val_size": len(self.split("val")),
            }
        return dict(self._fingerprint)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root) if self.root else None,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
        }


class PluginBase:
    """What methods and evaluators share: a name, a config dataclass, presets, a teacher flag."""

    name: ClassVar[str]
    Config: ClassVar[type] = EmptyConfig
    #: overrides of Config per dataset name or preset family (dataset name wins)
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: named presets chosen with the config key `ablation` (e.g. the paper's ablation rows)
    ablations: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    needs_teacher: ClassVar[bool] = False
    #: modules whose source files are this plugin's code fingerprint (default: the package its
    #: class's module belongs to); add the shared modules whose changes change its output
    source_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()
        #: the config without the user's overrides (set by the pipeline): labels show the difference
        self.defaults: dict[str, Any] = config_to_dict(self.config)

    @classmethod
    def preset_for(cls, dataset: DatasetSpec) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        merged.update(cls.presets.get(dataset.preset_family, {}))
        merged.update(cls.presets.get(dataset.name, {}))
        return merged

    @classmethod
    def ablation_preset(cls, name: str) -> dict[str, Any]:
        """The keys of the named ablation preset (an unknown name is an error with the valid ones)."""
        if name not in cls.ablations:
            import difflib

            close = difflib.get_close_matches(name, list(cls.ablations), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{cls.name}: unknown ablation {name!r}{hint}; valid: {', '.join(cls.ablations) or 'none'}")
        return dict(cls.ablations[name])

    @classmethod
    def resolve(cls, dataset: DatasetSpec, overrides: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """(config, defaults) with layers applied in a fixed order: Config defaults -> dataset
        preset -> ablation preset -> `overrides` (the user's `--set`, which always wins). `defaults`
        is the same without the user's layer: what a leaderboard label is measured against."""
        overrides = dict(overrides or {})
        preset = cls.preset_for(dataset)
        owner = f"{cls.name} config"
        ablation = resolve_config(cls.Config, preset, {k: v for k, v in overrides.items() if k == "ablation"}, owner=owner)
        ablation_layer = cls.ablation_preset(ablation.ablation) if getattr(ablation, "ablation", "") else {}
        defaults = resolve_config(cls.Config, preset, ablation_layer, owner=owner)
        config = resolve_config(cls.Config, preset, ablation_layer, overrides, owner=owner)
        return config, config_to_dict(defaults)


@dataclass
class Teacher:
    """A frozen classifier with its record (what it is, where it came from, how good it is).

    `mean`/`std` are the input normalisation it was trained with: whoever feeds it normalises
    the pixels with these, whatever the student uses. None: the dataset's own constants."""

    model: nn.Module
    arch: str
    dataset: str
    num_classes: int
    accuracy: float | None = None
    checkpoint_sha256: str | None = None
    source: str = ""
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def info(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "accuracy": self.accuracy,
            "checkpoint_sha256": self.checkpoint_sha256,
            "source": self.source,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
        }

    def normalization(self, dataset: DatasetSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) this teacher's inputs must be normalised with."""
        return (tuple(self.mean or dataset.mean), tuple(self.std or dataset.std))


class TeacherProvider(Protocol):
    """Returns a teacher for (dataset, arch): from a cache, a checkpoint or by training one.

    `identify` names the teacher it would return (its checkpoint's sha256) without loading it, or
    None when it would have to be trained first; finished evaluations are found by it."""

    def __call__(self, dataset: DatasetSpec, arch: str, device: torch.device, progress: Progress) -> Teacher: ...

    def identify(self, dataset: DatasetSpec, arch: str) -> str | None: ...


@dataclass
class DistillTask:
    """Everything a method needs to write one distilled set."""

    dataset: DatasetSpec
    ipc: int
    seed: int
    device: torch.device
    writer: "DistilledSetWriter"
    teacher: Teacher | None = None
    progress: Progress = field(default_factory=NullProgress)

    def generator(self, purpose: str, *indices: int, device: str | torch.device = "cpu") -> torch.Generator:
        """A generator seeded from (seed, purpose, indices): the only source of randomness for methods."""
        return torch_generator(self.seed, purpose, *indices, device=device)


class Method(PluginBase, abc.ABC):
    """A distillation method. Subclasses implement `distill_class`; the loop, resume and atomic
    writing are shared here. Methods never train students.

    `version` is part of the run identity: bump it when a change of the method's code changes its
    output on purpose. Changes that are not declared are still seen: the source fingerprint of
    `source_modules` is recorded, and a set made by other source is never reused silently."""

    version: ClassVar[int | str] = 1

    @classmethod
    def code(cls) -> PluginCode:
        return plugin_code(cls, cls.version)

    def weights_identity(self, dataset: DatasetSpec) -> dict[str, str]:
        """{role: sha256} of the weight files this method will load for `dataset` (generator,
        autoencoder, ...), known before distilling: part of the run identity. Methods that load
        no weights return {}; a dataset without known weights is a CheckpointError here."""
        return {}

    def manifest_extra(self, task: DistillTask) -> dict[str, Any]:
        """Extra facts for the manifest that evaluators read (e.g. `shuffle_patch_factor`)."""
        return {}

    def prepare(self, task: DistillTask) -> None:
        """One-off work before the first class (load a generator, index the data)."""

    @abc.abstractmethod
    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        """Exactly `task.ipc` images for class `class_index`."""

    def distill(self, task: DistillTask) -> "DistilledSet":
        """Write the pending classes; under torchrun this rank's share of them (class k of the
        pending list goes to rank k % world), the others' being written at the same time."""
        pending = task.writer.classes_for_this_process()
        if pending:
            self.prepare(task)
        done = task.dataset.num_classes - len(task.writer.pending_classes())
        with task.progress.task(f"{self.name}: distilling", total=done + len(pending)) as bar:
            bar.advance(done)
            for class_index in pending:
                images = self.distill_class(task, class_index)
                task.writer.write_class(class_index, images)
                bar.advance()
        return task.writer.finalize()


#: the student name of evaluators that train none
NO_STUDENT = "-"


@dataclass
class EvalTask:
    """One student, one seed: what an evaluator needs besides the distilled set."""

    dataset: DatasetSpec
    student: str
    seed: int
    device: torch.device
    teacher: Teacher | None = None
    progress: Progress = field(default_factory=NullProgress)
    #: where a long training may keep resumable state; file names must be unique to what they train
    workdir: Path | None = None
    #: what this evaluation is (set by the pipeline): names its resume state
    identity: EvalIdentity | None = None


@dataclass
class EvalResult:
    """Metrics of one (student, seed) evaluation. `primary` names the leaderboard metric."""

    metrics: dict[str, float]
    primary: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.metrics[self.primary]


class Evaluator(PluginBase, abc.ABC):
    """An evaluation protocol: trains `task.student` on the distilled set, validates on real data.

    An evaluator that trains no student (a feature-statistics metric such as FID) sets
    `needs_student = False`: it runs once with student NO_STUDENT ("-"). One that draws no randomness
    sets `seeded = False`: it runs for the first evaluation seed only.

    `protocol_version` is part of every results key: bump it when a change makes new numbers
    incomparable with old ones, so they start new leaderboard cells."""

    protocol_version: ClassVar[int] = 1
    needs_student: ClassVar[bool] = True
    seeded: ClassVar[bool] = True

    @classmethod
    def code(cls) -> PluginCode:
        return plugin_code(cls, cls.protocol_version)

    @abc.abstractmethod
    def evaluate(self, distilled: "DistilledSet", task: EvalTask) -> EvalResult: ...

    def check_architectures(self, students: Sequence[str], teachers: Sequence[str]) -> None:
        """Raise ConfigError for a student or teacher name this evaluator cannot build. Called
        before distillation, so a typo costs seconds, not a distillation (default: accept all)."""
