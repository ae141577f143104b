"""The `ddbench run` data flow: dataset -> teacher -> distilled set -> evaluations -> results.

Every step resumes: the distilled set is written class by class, and evaluations already in the
results store (same run, evaluator config, student, teacher, seed) are skipped unless forced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ddbench.core import distributed, paths, registry
from ddbench.core.config import config_to_dict, identity_config
from ddbench.core.device import resolve_device
from ddbench.core.distilled import DistilledSet, DistilledSetWriter, read_manifest
from ddbench.core.errors import ConfigError
from ddbench.core.hashing import stable_hash
from ddbench.core.identity import RunIdentity, readable_label
from ddbench.core.interfaces import NO_STUDENT, DatasetSpec, DistillTask, EvalTask, Evaluator, Method, PluginBase, Teacher, TeacherProvider
from ddbench.core.progress import NullProgress, Progress
from ddbench.core.results import ResultRow, ResultsStore
from ddbench.core.seeding import seed_everything


def config_hash(config: Mapping[str, Any]) -> str:
    return stable_hash(config, 10)


def split_overrides(
    overrides: Mapping[str, str], method_cls: type | None, evaluator_classes: Sequence[type]
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Route `--set` keys: `method.k`, `<evaluator name>.k` / `evaluator.k`, or a bare key that
    exactly one config declares."""
    method_overrides: dict[str, str] = {}
    evaluator_overrides: dict[str, dict[str, str]] = {cls.name: {} for cls in evaluator_classes}

    def declares(cls: type | None, key: str) -> bool:
        return cls is not None and key in getattr(cls.Config, "__dataclass_fields__", {})

    for key, value in overrides.items():
        prefix, dot, bare = key.partition(".")
        if dot and prefix == "method":
            method_overrides[bare] = value
        elif dot and prefix == "evaluator":
            for name in evaluator_overrides:
                evaluator_overrides[name][bare] = value
        elif dot and prefix in evaluator_overrides:
            evaluator_overrides[prefix][bare] = value
        elif dot:
            raise ConfigError(f"--set {key}: prefix {prefix!r} is neither 'method', 'evaluator' nor an evaluator name")
        else:
            owners = [cls for cls in evaluator_classes if declares(cls, key)]
            in_method = declares(method_cls, key)
            if in_method and owners:
                raise ConfigError(f"--set {key} is ambiguous (method and evaluator both have it); write method.{key} or evaluator.{key}")
            if in_method:
                method_overrides[key] = value
            elif owners:
                for cls in owners:
                    evaluator_overrides[cls.name][key] = value
            else:
                raise ConfigError(_unknown_key_message(key, method_cls, evaluator_classes))
    return method_overrides, evaluator_overrides


def build_plugin(plugin_cls: type[PluginBase], dataset: DatasetSpec, overrides: Mapping[str, str]) -> PluginBase:
    """An instance with defaults, then the dataset preset, then the ablation preset, then the
    user's overrides (which always win); `plugin.defaults` is the config without the overrides."""
    config, defaults = plugin_cls.resolve(dataset, overrides)
    plugin = plugin_cls(config)
    plugin.defaults = defaults
    return plugin


def _unknown_key_message(key: str, method_cls: type | None, evaluator_classes: Sequence[type]) -> str:
    owners = ([method_cls] if method_cls is not None else []) + list(evaluator_classes)
    valid = {f"{cls.name}.{name}": name for cls in owners for name in getattr(cls.Config, "__dataclass_fields__", {})}
    close = difflib.get_close_matches(key, sorted(set(valid.values())), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"--set {key}: no config has this key{hint}; valid keys: {', '.join(sorted(valid)) or 'none'}"


@dataclass
class RunRequest:
    """One `ddbench run`: distill once (with `distill_seed`), then evaluate for every
    (evaluator, teacher, student, seed)."""

    method: str
    dataset: str
    ipc: int
    data_root: str | None = None
    resolution: int | None = None
    seeds: Sequence[int] = (0,)
    distill_seed: int = 0
    evaluators: Sequence[str] = ("rded",)
    students: Sequence[str] = ("resnet18",)
    teachers: Sequence[str] = ("resnet18",)
    overrides: Mapping[str, str] = field(default_factory=dict)
    device: str = "auto"
    out_dir: str | Path | None = None
    results_path: str | Path | None = None
    force: bool = False
    #: under torchrun: "jobs" (whole evaluation jobs per rank) or "ddp" (every job on all ranks)
    dist_mode: str = "jobs"


@dataclass
class RunSummary:
    identity: RunIdentity
    distilled: DistilledSet
    rows: list[ResultRow]
    skipped: int
    distill_time_s: float

    @property
    def run_id(self) -> str:
        return self.identity.run_id


def build_identity(method: Method, dataset: DatasetSpec, ipc: int, seed: int, teacher: Teacher | None = None) -> RunIdentity:
    """The run identity, built once: the method's resolved config (and its defaults, for the
    label), the dataset fingerprint, and the hashes of every weight file the method uses."""
    weights = dict(method.weights_identity(dataset))
    if teacher is not None:
        weights["teacher"] = teacher.checkpoint_sha256 or f"unhashed:{teacher.source}"
    return RunIdentity(
        method=method.name,
        config=identity_config(method.config),
        dataset=dataset.fingerprint(),
        ipc=ipc,
        seed=seed,
        weights=weights,
        label_defaults=dict(getattr(method, "defaults", {})),
    )


def _check_ipc(dataset: DatasetSpec, ipc: int) -> None:
    if ipc < 1:
        raise ConfigError(f"--ipc must be at least 1, got {ipc}")
    counts = {c: len(members) for c, members in dataset.class_indices("train").items()}
    smallest = min(counts, key=counts.get)
    if ipc > counts[smallest]:
        raise ConfigError(
            f"--ipc {ipc} is larger than class {dataset.class_names[smallest]!r} of {dataset.name}, "
            f"which has {counts[smallest]} training images; use --ipc {counts[smallest]} or less"
        )


class TeacherCache:
    """Teachers are costly: get each (dataset, arch) once per process."""

    def __init__(self, provider: TeacherProvider | None, device: torch.device, progress: Progress):
        self.provider, self.device, self.progress = provider, device, progress
        self._teachers: dict[tuple[str, str], Teacher] = {}

    def get(self, dataset: DatasetSpec, arch: str, needed_by: str) -> Teacher:
        if self.provider is None:
            raise ConfigError(f"{needed_by} needs a teacher, but no teacher provider is installed")
        key = (dataset.name, arch)
        if key not in self._teachers:
            self._teachers[key] = self.provider(dataset, arch, self.device, self.progress)
        return self._teachers[key]

    def identify(self, dataset: DatasetSpec, arch: str) -> str | None:
        """The sha256 of the teacher `get` would return, when known without loading or training it."""
        if (dataset.name, arch) in self._teachers:
            return self._teachers[(dataset.name, arch)].checkpoint_sha256
        identify = getattr(self.provider, "identify", None)
        return identify(dataset, arch) if identify is not None else None


def distill(
    method: Method,
    dataset: DatasetSpec,
    ipc: int,
    seed: int,
    out_dir: Path,
    device: torch.device,
    teacher: Teacher | None,
    progress: Progress,
    identity: RunIdentity | None = None,
) -> DistilledSet:
    """Write (or resume) the distilled set of `method` into `out_dir`."""
    _check_ipc(dataset, ipc)
    identity = identity or build_identity(method, dataset, ipc, seed, teacher)
    seed_everything(seed)
    task = DistillTask(dataset=dataset, ipc=ipc, seed=seed, device=device, writer=None, teacher=teacher, progress=progress)  # type: ignore[arg-type]
    task.writer = DistilledSetWriter(out_dir, identity, dataset.class_names, config=config_to_dict(method.config),
                                     teacher=teacher.info() if teacher else None, extra=method.manifest_extra(task))
    recorded, wanted = task.writer.manifest.get("config", {}), config_to_dict(method.config)
    differing = [f"{key}={recorded.get(key)!r}" for key in wanted if key in recorded and recorded[key] != wanted[key]]
    if differing:
        progress.log(f"{out_dir} was made with {', '.join(differing)}: keys that change no image, so its images are "
                     "kept as they are; pass --out DIR for a folder made with the new values")
    if not task.writer.pending_classes() and task.writer.manifest.get("complete"):
        return DistilledSet.open(out_dir, class_names=dataset.class_names, dataset=dataset.name)
    return method.distill(task)


#: how evaluation jobs use the processes of a torchrun launch (see `evaluate`)
DIST_MODES = ("jobs", "ddp")


def evaluate(
    distilled: DistilledSet,
    dataset: DatasetSpec,
    evaluators: Sequence[Evaluator],
    students: Sequence[str],
    teacher_archs: Sequence[str],
    seeds: Sequence[int],
    device: torch.device,
    store: ResultsStore | None,
    teachers: TeacherCache,
    progress: Progress = NullProgress(),
    force: bool = False,
    identity: RunIdentity | None = None,
    dist_mode: str = "jobs",
) -> tuple[list[ResultRow], int]:
    """Every (evaluator, teacher, student, seed); one results row each. Returns (rows, skipped).

    Under torchrun rank 0 decides which jobs are still to do and alone writes rows (`store` is
    None on the other ranks). `dist_mode="jobs"` (default) gives each rank whole jobs (pending job
    k to rank k % world), each trained exactly as a single process would train it, and the other
    ranks send their rows to rank 0; `"ddp"` trains every job on all ranks with DDP."""
    if dist_mode not in DIST_MODES:
        raise ConfigError(f"unknown distribution mode {dist_mode!r}; use one of {', '.join(DIST_MODES)}")
    identity = identity or distilled.identity
    dataset_fingerprint = stable_hash(dataset.fingerprint(), 16)
    spread = dist_mode == "jobs" and distributed.is_distributed()
    rows, skipped = [], 0
    for evaluator in evaluators:
        evaluator_config = config_to_dict(evaluator.config)
        evaluator_hash = config_hash(evaluator_config)
        evaluator_label = readable_label(evaluator.name, evaluator_config, getattr(evaluator, "defaults", {}))
        archs: Sequence[str | None] = teacher_archs if evaluator.needs_teacher else [None]
        evaluator_students = students if evaluator.needs_student else [NO_STUDENT]
        evaluator_seeds = seeds if evaluator.seeded else list(seeds)[:1]
        jobs = [(arch, student, seed) for arch in archs for student in evaluator_students for seed in evaluator_seeds]

        def finished(arch: str | None, student: str, seed: int) -> bool:
            known_teacher = teachers.identify(dataset, arch) if arch else ""
            return known_teacher is not None and store.has(
                identity.run_id, evaluator.name, evaluator.protocol_version, evaluator_hash, student, known_teacher, seed
            )

        pending = distributed.broadcast_object(
            [job for job in jobs if force or not finished(*job)] if distributed.is_main() else None
        )
        skipped += len(jobs) - len(pending)
        if spread:  # teachers first, by all ranks together: one still to train is trained once, with DDP
            for arch in dict.fromkeys(arch for arch, _, _ in pending if arch):
                teachers.get(dataset, arch, f"evaluator {evaluator.name}")
        mine = [(k, job) for k, job in enumerate(pending) if not spread or k % distributed.world_size() == distributed.rank()]
        mailbox = distributed.channel("rows") if spread else ""
        finished_rows: dict[int, ResultRow] = {}

        def record(index: int, row: ResultRow, bar) -> None:
            store.add(row)
            finished_rows[index] = row
            progress.log(f"{evaluator.name} {row.student} seed {row.seed}: {row.metric} = {row.value:.2f}")
            bar.advance()

        with progress.task(f"{evaluator.name}: evaluating", total=len(jobs)) as bar:
            bar.advance(len(jobs) - len(pending))
            for index, (arch, student, seed) in mine:
                with distributed.local_only() if spread else contextlib.nullcontext():
                    started = time.perf_counter()
                    teacher = teachers.get(dataset, arch, f"evaluator {evaluator.name}") if arch else None
                    seed_everything(seed)
                    task = EvalTask(dataset=dataset, student=student, seed=seed, device=device, teacher=teacher,
                                    progress=progress, workdir=paths.cache_dir("eval-state"))
                    result = evaluator.evaluate(distilled, task)
                    details = result.details or {}
                    row = ResultRow(
                        run_id=identity.run_id,
                        configuration=identity.configuration,
                        label=identity.label,
                        method=identity.method,
                        method_config=dict(identity.config),
                        weights=dict(identity.weights),
                        dataset=dataset.name,
                        dataset_fingerprint=dataset_fingerprint,
                        resolution=dataset.resolution,
                        ipc=distilled.ipc,
                        distill_seed=identity.seed,
                        evaluator=evaluator.name,
                        evaluator_protocol=evaluator.protocol_version,
                        evaluator_config=evaluator_config,
                        evaluator_config_hash=evaluator_hash,
                        evaluator_label=evaluator_label,
                        recipe=details.get("recipe"),
                        details=details,
                        student=student,
                        seed=seed,
                        metric=result.primary,
                        value=result.value,
                        metrics=result.metrics,
                        distilled_path=str(distilled.root),
                        distilled_hash=distilled.content_hash,
                        wall_time_s=time.perf_counter() - started,
                        teacher=arch,
                        teacher_key=(teacher.checkpoint_sha256 or "") if teacher else "",
                        teacher_info=teacher.info() if teacher else None,
                    )
                if distributed.is_main():
                    record(index, row, bar)
                elif spread:
                    distributed.send_to_main(mailbox, index, dataclasses.asdict(row))
                if spread and distributed.is_main():  # rows other ranks finished meanwhile
                    for other in range(len(pending)):
                        if other not in finished_rows and other % distributed.world_size() != 0:
                            arrived = distributed.receive_on_main(mailbox, other, block=False)
                            if arrived is not None:
                                record(other, ResultRow(**arrived), bar)
            if spread and distributed.is_main():
                for other in range(len(pending)):
                    if other not in finished_rows:
                        record(other, ResultRow(**distributed.receive_on_main(mailbox, other)), bar)
        rows.extend(finished_rows[index] for index in sorted(finished_rows))
    return rows, skipped


def make_evaluators(names: Sequence[str], dataset: DatasetSpec, overrides: Mapping[str, dict[str, str]]) -> list[Evaluator]:
    return [build_plugin(registry.load_evaluator(name), dataset, overrides.get(name, {})) for name in names]


def run(request: RunRequest, teacher_provider: TeacherProvider | None = None, progress: Progress = NullProgress()) -> RunSummary:
    """Distill with `request.method`, then evaluate; rows go into the results store."""
    dataset = registry.create_dataset(request.dataset, request.data_root, request.resolution)
    method_cls = registry.load_method(request.method)
    evaluator_classes = [registry.load_evaluator(name) for name in request.evaluators]
    method_overrides, evaluator_overrides = split_overrides(request.overrides, method_cls, evaluator_classes)
    method = build_plugin(method_cls, dataset, method_overrides)
    evaluators = make_evaluators(request.evaluators, dataset, evaluator_overrides)
    for evaluator in evaluators:
        evaluator.check_architectures(request.students, request.teachers)
    device = resolve_device(request.device)
    # opened first: an unwritable results database fails now, not after hours of distillation
    with _results_store(request.results_path) as store:
        teachers = TeacherCache(teacher_provider, device, progress)
        teacher = teachers.get(dataset, request.teachers[0], f"method {method.name}") if method.needs_teacher else None
        identity = build_identity(method, dataset, request.ipc, request.distill_seed, teacher)
        out_dir = Path(request.out_dir) if request.out_dir else paths.runs_dir() / identity.run_id
        started = time.perf_counter()
        distilled = distill(method, dataset, request.ipc, request.distill_seed, out_dir, device, teacher, progress, identity)
        distill_time = time.perf_counter() - started
        rows, skipped = evaluate(
            distilled, dataset, evaluators, request.students, request.teachers, request.seeds,
            device, store, teachers, progress, request.force, identity, request.dist_mode,
        )
    return RunSummary(identity=identity, distilled=distilled, rows=rows, skipped=skipped, distill_time_s=distill_time)


def evaluate_folder(
    folder: str | Path,
    dataset_name: str | None,
    data_root: str | None,
    evaluators: Sequence[str],
    students: Sequence[str],
    teachers: Sequence[str],
    seeds: Sequence[int],
    overrides: Mapping[str, str],
    device: str = "auto",
    results_path: str | Path | None = None,
    teacher_provider: TeacherProvider | None = None,
    progress: Progress = NullProgress(),
    force: bool = False,
    resolution: int | None = None,
    dist_mode: str = "jobs",
) -> tuple[list[ResultRow], int]:
    """`ddbench eval DIR`: evaluate a distilled folder made by ddbench or by any other tool."""
    folder = Path(folder)
    if dataset_name is None:
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise ConfigError(f"{folder} has no manifest.json; pass --dataset to say which dataset it distils")
        dataset_name = read_manifest(folder)["dataset"]
    dataset = registry.create_dataset(dataset_name, data_root, resolution)
    evaluator_classes = [registry.load_evaluator(name) for name in evaluators]
    _, evaluator_overrides = split_overrides(overrides, None, evaluator_classes)
    built = make_evaluators(evaluators, dataset, evaluator_overrides)
    for evaluator in built:
        evaluator.check_architectures(students, teachers)
    resolved_device = resolve_device(device)
    # opened first: an unwritable results database fails now, not after checksumming the set
    with _results_store(results_path) as store:
        distilled = DistilledSet.open(folder, class_names=dataset.class_names, dataset=dataset.name)
        return evaluate(
            distilled, dataset, built, students, teachers, seeds, resolved_device, store,
            TeacherCache(teacher_provider, resolved_device, progress), progress, force, dist_mode=dist_mode,
        )


def _results_store(path: str | Path | None) -> contextlib.AbstractContextManager:
    """The results database, opened by rank 0 only (under torchrun the others send it their rows)."""
    if not distributed.is_main():
        return contextlib.nullcontext(None)
    return ResultsStore(path or paths.default_results_path())
