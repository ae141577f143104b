"""The `ddbench run` data flow: dataset -> teacher -> distilled set -> evaluations -> results.

Distillation: the run identity names the folder; the set is written class by class and resumes;
a set made by other method source is never reused silently (`CODE_CHANGE_POLICIES`).
Evaluation reads as plan -> run -> record: `plan_jobs` lists the (evaluator, teacher, student,
seed) jobs with their `EvalIdentity` and drops those already in the results store; `run_jobs`
(`core/jobs.py`) runs them here or spread over torchrun ranks; each result becomes one row through
`ResultRow.from_evaluation`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ddbench.core import distributed, paths, registry
from ddbench.core.config import config_to_dict, identity_config
from ddbench.core.device import resolve_device
from ddbench.core.distilled import MANIFEST_NAME, DistilledSet, DistilledSetWriter, read_manifest, wrote_no_class
from ddbench.core.errors import ConfigError
from ddbench.core.hashing import stable_hash
from ddbench.core.files import disk_errors
from ddbench.core.identity import EvalIdentity, RunIdentity, readable_label
from ddbench.core.jobs import run_jobs
from ddbench.core.interfaces import NO_STUDENT, DatasetSpec, DistillTask, EvalTask, Evaluator, Method, PluginBase, Teacher, TeacherProvider
from ddbench.core.progress import NullProgress, Progress
from ddbench.core.results import ResultRow, ResultsStore
from ddbench.core.seeding import seed_everything
from ddbench.core.storage import row_storage, set_storage


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
    """Names every valid key in a spelling `--set` accepts: `method.KEY` or `<evaluator>.KEY`."""
    owners = [("method", method_cls)] if method_cls is not None else []
    owners += [(cls.name, cls) for cls in evaluator_classes]
    valid = {f"{prefix}.{name}": name for prefix, cls in owners for name in getattr(cls.Config, "__dataclass_fields__", {})}
    close = difflib.get_close_matches(key.rpartition(".")[2], sorted(set(valid.values())), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"--set {key}: no config has this key{hint}; valid keys: {', '.join(sorted(valid)) or 'none'}"


@dataclass(kw_only=True)
class EvalOptions:
    """What `ddbench run` and `ddbench eval` share: how to evaluate, and where results go."""

    data_root: str | None = None
    resolution: int | None = None
    seeds: Sequence[int] = (0,)
    evaluators: Sequence[str] = ("rded",)
    students: Sequence[str] = ("resnet18",)
    teachers: Sequence[str] = ("resnet18",)
    overrides: Mapping[str, str] = field(default_factory=dict)
    device: str = "auto"
    results_path: str | Path | None = None
    #: redo evaluations already in the results store (rows made by other evaluator code included)
    force: bool = False
    #: keep rows made by other evaluator source instead of stopping
    keep_results: bool = False
    #: under torchrun: "jobs" (whole evaluation jobs per rank) or "ddp" (every job on all ranks)
    dist_mode: str = "jobs"


@dataclass(kw_only=True)
class RunRequest(EvalOptions):
    """One `ddbench run`: distill once (with `distill_seed`), then evaluate for every
    (evaluator, teacher, student, seed)."""

    method: str
    dataset: str
    ipc: int
    distill_seed: int = 0
    out_dir: str | Path | None = None
    #: a set in the run folder made by other method source: "stop", "redistill" or "keep"
    on_code_change: str = "stop"


@dataclass(kw_only=True)
class EvalRequest(EvalOptions):
    """One `ddbench eval FOLDER`: evaluate a distilled folder made by ddbench or any other tool."""

    folder: str | Path
    dataset: str | None = None


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
    """The run identity, built once: the method's code and resolved config (and its defaults, for
    the label), the dataset fingerprint, and the hashes of every weight file the method uses."""
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
        code=method.code().to_dict(),
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


#: what a run does when its folder holds a set made by other method source
CODE_CHANGE_POLICIES = ("stop", "redistill", "keep")


def settle_code_change(out_dir: Path, identity: RunIdentity, policy: str, progress: Progress) -> RunIdentity:
    """The identity to distill under. A folder whose set the same command made with other method
    source stops the run (`stop`), is moved aside and made again (`redistill`), or, when complete,
    is kept with the identity it was made under (`keep`), so its rows stay with the old code."""
    if policy not in CODE_CHANGE_POLICIES:
        raise ConfigError(f"unknown policy {policy!r} for a set made by other code; use one of {', '.join(CODE_CHANGE_POLICIES)}")
    if not (out_dir / MANIFEST_NAME).exists():
        return identity
    manifest = read_manifest(out_dir)
    stored = RunIdentity.from_dict(manifest["identity"]) if manifest.get("identity") else None
    if stored is None or stored.folder_key != identity.folder_key or stored.source == identity.source:
        return identity  # not ours (the writer refuses it), or made by this very code
    if wrote_no_class(out_dir, manifest):
        return identity  # stopped before its first class: nothing to keep, the writer starts afresh
    made = "a complete set" if manifest.get("complete") else "an unfinished set"
    what = (f"{out_dir} holds {made} made by other {identity.method} source (method version {stored.code.get('version')!r}, "
            f"source {stored.source or 'unknown'}; now version {identity.code.get('version')!r}, source {identity.source})")
    if policy == "keep":
        if not manifest.get("complete"):
            raise ConfigError(f"{what}; --keep-set keeps only a complete set: pass --redistill to make it again")
        progress.log(f"{what}: kept as it is (--keep-set); its rows belong to the configuration of the old source")
        return stored
    if policy == "redistill":
        aside = out_dir.with_name(f"{out_dir.name}.source-{stored.source[:8] or 'unknown'}-{time.strftime('%Y%m%d-%H%M%S')}")
        if distributed.is_main():
            with disk_errors(out_dir, "move aside"):
                os.replace(out_dir, aside)
        distributed.barrier("redistill-move-aside")
        progress.log(f"{what}: moved to {aside}; distilling again (--redistill)")
        return identity
    raise ConfigError(f"{what}. Pass --redistill to make the set again with the current code (the old one is moved "
                      "aside), or --keep-set to evaluate the old set as it is; bump the method's `version` when its "
                      "output changes on purpose")


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
    on_code_change: str = "stop",
) -> DistilledSet:
    """Write (or resume) the distilled set of `method` into `out_dir` (see `settle_code_change`
    for a folder that holds a set made by other method source)."""
    _check_ipc(dataset, ipc)
    identity = settle_code_change(out_dir, identity or build_identity(method, dataset, ipc, seed, teacher), on_code_change, progress)
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
        progress.log(f"reusing the complete distilled set in {out_dir} (same identity and method source)")
        return DistilledSet.open(out_dir, class_names=dataset.class_names, dataset=dataset.name)
    return method.distill(task)


#: how evaluation jobs use the processes of a torchrun launch (see `evaluate`)
DIST_MODES = ("jobs", "ddp")


@dataclass(frozen=True)
class EvalJob:
    """One planned evaluation: its evaluator, teacher architecture (None: no teacher), student and
    seed. Its EvalIdentity is made when it runs, once the teacher (and so its key) is known."""

    evaluator: Evaluator
    teacher_arch: str | None
    student: str
    seed: int


def eval_identity(run: RunIdentity, evaluator: Evaluator, teacher_key: str, student: str, seed: int) -> EvalIdentity:
    return EvalIdentity(run_key=run.key, evaluator=evaluator.name, code=evaluator.code().to_dict(),
                        config=config_to_dict(evaluator.config), teacher_key=teacher_key, student=student, seed=seed)


def plan_jobs(
    run: RunIdentity,
    dataset: DatasetSpec,
    evaluators: Sequence[Evaluator],
    options: EvalOptions,
    teachers: TeacherCache,
    store: ResultsStore | None,
) -> tuple[list[EvalJob], int]:
    """(pending jobs, how many are already stored). A job whose rows were made by other evaluator
    source stops the plan unless `force` (evaluate again) or `keep_results` (keep them)."""
    pending, skipped, other_code = [], 0, []
    for evaluator in evaluators:
        archs: Sequence[str | None] = options.teachers if evaluator.needs_teacher else [None]
        students = options.students if evaluator.needs_student else [NO_STUDENT]
        seeds = options.seeds if evaluator.seeded else list(options.seeds)[:1]
        for arch in archs:
            teacher_key = teachers.identify(dataset, arch) if arch else ""
            for student in students:
                for seed in seeds:
                    identity = eval_identity(run, evaluator, teacher_key, student, seed) if teacher_key is not None else None
                    status = store.status(identity) if identity is not None and store is not None else None
                    if status == "other-code" and not options.force:
                        if not options.keep_results:
                            other_code.append((identity, store.sources_of(identity)))
                            continue
                        status = "done"
                    if status == "done" and not options.force:
                        skipped += 1
                        continue
                    pending.append(EvalJob(evaluator, arch, student, seed))
    if other_code:
        first, sources = other_code[0]
        raise ConfigError(
            f"{len(other_code)} evaluation(s) in the results store were made by other {first.evaluator} code "
            f"(protocol version {first.protocol_version}, source {', '.join(sources)}; now {first.source}). Pass --force to "
            "evaluate them again under the current code (new rows; the old ones stay in their own table), or "
            "--keep-results to keep them; bump the evaluator's `protocol_version` when its numbers change on purpose")
    return pending, skipped


def evaluate(
    distilled: DistilledSet,
    dataset: DatasetSpec,
    evaluators: Sequence[Evaluator],
    options: EvalOptions,
    store: ResultsStore | None,
    teachers: TeacherCache,
    progress: Progress = NullProgress(),
    identity: RunIdentity | None = None,
) -> tuple[list[ResultRow], int]:
    """Every (evaluator, teacher, student, seed) of `options`: plan, run, record (one row each).
    Returns (rows, skipped).

    Under torchrun rank 0 plans and alone writes rows (`store` is None on the other ranks).
    `dist_mode="jobs"` (default) gives each rank whole jobs, each trained exactly as a single
    process would train it; `"ddp"` trains every job on all ranks with DDP."""
    if options.dist_mode not in DIST_MODES:
        raise ConfigError(f"unknown distribution mode {options.dist_mode!r}; use one of {', '.join(DIST_MODES)}")
    run = identity or distilled.identity
    spread = options.dist_mode == "jobs" and distributed.is_distributed()
    planned, skipped = plan_jobs(run, dataset, evaluators, options, teachers, store) if distributed.is_main() else ([], 0)
    planned = distributed.broadcast_object(
        [(evaluators.index(job.evaluator), job.teacher_arch, job.student, job.seed) for job in planned]
        if distributed.is_main() else None
    )
    jobs = [EvalJob(evaluators[e], arch, student, seed) for e, arch, student, seed in planned]
    if spread:  # teachers first, by all ranks together: one still to train is trained once, with DDP
        for arch in dict.fromkeys(job.teacher_arch for job in jobs if job.teacher_arch):
            teachers.get(dataset, arch, "evaluation")
    dataset_fingerprint = stable_hash(dataset.fingerprint(), 16)
    device = resolve_device(options.device)
    # what the set costs, for every row: measured once, before any training, by the process that records the rows
    stored_set = set_storage(distilled, dataset.resolution) if jobs and distributed.is_main() else None
    rows: dict[int, ResultRow] = {}

    def work(job: EvalJob) -> ResultRow:
        started = time.perf_counter()
        teacher = teachers.get(dataset, job.teacher_arch, f"evaluator {job.evaluator.name}") if job.teacher_arch else None
        evaluation = eval_identity(run, job.evaluator, (teacher.checkpoint_sha256 or "") if teacher else "", job.student, job.seed)
        seed_everything(job.seed)
        task = EvalTask(dataset=dataset, student=job.student, seed=job.seed, device=device, teacher=teacher,
                        progress=progress, workdir=paths.cache_dir("eval-state"), identity=evaluation)
        result = job.evaluator.evaluate(distilled, task)
        result.details["process"] = {"rank": distributed.rank(), "world_size": distributed.world_size()}  # who ran it
        return ResultRow.from_evaluation(
            result, run, evaluation, dataset=dataset.name, resolution=dataset.resolution,
            dataset_fingerprint=dataset_fingerprint, ipc=distilled.ipc,
            evaluator_label=readable_label(job.evaluator.name, evaluation.config, getattr(job.evaluator, "defaults", {})),
            distilled_path=str(distilled.root), distilled_hash=distilled.content_hash,
            wall_time_s=time.perf_counter() - started, teacher=job.teacher_arch,
            teacher_info=teacher.info() if teacher else None,
        )

    with progress.task("evaluating", total=len(jobs) + skipped) as bar:
        bar.advance(skipped)

        def record(index: int, row: ResultRow) -> None:
            row.storage = row_storage(stored_set, row.teacher_info, row.teacher is not None).to_dict()
            store.add(row)
            rows[index] = row
            progress.log(f"{row.evaluator} {row.student} seed {row.seed}: {row.metric} = {row.value:.2f}")
            bar.advance()

        run_jobs(jobs, work, record, spread=spread, encode=dataclasses.asdict, decode=lambda message: ResultRow(**message),
                 channel="rows")
    return [rows[index] for index in sorted(rows)], skipped


def make_evaluators(names: Sequence[str], dataset: DatasetSpec, overrides: Mapping[str, dict[str, str]]) -> list[Evaluator]:
    return [build_plugin(registry.load_evaluator(name), dataset, overrides.get(name, {})) for name in names]


def _plugins(options: EvalOptions, dataset: DatasetSpec, method_cls: type | None) -> tuple[dict[str, str], list[Evaluator]]:
    """(method overrides, evaluators built with theirs), architecture names checked up front."""
    evaluator_classes = [registry.load_evaluator(name) for name in options.evaluators]
    method_overrides, evaluator_overrides = split_overrides(options.overrides, method_cls, evaluator_classes)
    evaluators = make_evaluators(options.evaluators, dataset, evaluator_overrides)
    for evaluator in evaluators:
        evaluator.check_architectures(options.students, options.teachers)
    return method_overrides, evaluators


@dataclass
class RunPlan:
    """What a `ddbench run` is made of before anything is distilled or trained: its dataset, the
    method and the evaluators with their resolved configs. `ddbench run` and the sweep's planning
    (which rows a job writes) both start here."""

    request: RunRequest
    dataset: DatasetSpec
    method: Method
    evaluators: list[Evaluator]


def plan_run(request: RunRequest, datasets: dict[tuple, DatasetSpec] | None = None) -> RunPlan:
    """The dataset, method and evaluators of `request`, every `--set` routed and resolved and the
    architecture names checked. `datasets` shares dataset objects between many plans (a sweep's)."""
    key = (request.dataset, request.data_root, request.resolution)
    datasets = {} if datasets is None else datasets
    if key not in datasets:
        datasets[key] = registry.create_dataset(*key)
    dataset = datasets[key]
    method_cls = registry.load_method(request.method)
    method_overrides, evaluators = _plugins(request, dataset, method_cls)
    method = build_plugin(method_cls, dataset, method_overrides)
    return RunPlan(request, dataset, method, evaluators)  # type: ignore[arg-type]


def run(request: RunRequest, teacher_provider: TeacherProvider | None = None, progress: Progress = NullProgress()) -> RunSummary:
    """Distill with `request.method`, then evaluate; rows go into the results store."""
    plan = plan_run(request)
    dataset, method, evaluators = plan.dataset, plan.method, plan.evaluators
    device = resolve_device(request.device)
    # opened first: an unwritable results database fails now, not after hours of distillation
    with _results_store(request.results_path) as store:
        teachers = TeacherCache(teacher_provider, device, progress)
        teacher = teachers.get(dataset, request.teachers[0], f"method {method.name}") if method.needs_teacher else None
        if teacher is not None and len(request.teachers) > 1:
            progress.log(f"{method.name} distils with the first teacher ({request.teachers[0]}); the others only "
                         "relabel its set. For a set per teacher (RDED's code, the HIERAMP paper's Table 2), "
                         "run once per --teachers")
        identity = build_identity(method, dataset, request.ipc, request.distill_seed, teacher)
        out_dir = Path(request.out_dir) if request.out_dir else paths.runs_dir() / identity.run_id
        started = time.perf_counter()
        identity = settle_code_change(out_dir, identity, request.on_code_change, progress)
        distilled = distill(method, dataset, request.ipc, request.distill_seed, out_dir, device, teacher, progress, identity)
        distill_time = time.perf_counter() - started
        rows, skipped = evaluate(distilled, dataset, evaluators, request, store, teachers, progress, identity)
    return RunSummary(identity=identity, distilled=distilled, rows=rows, skipped=skipped, distill_time_s=distill_time)


def evaluate_folder(request: EvalRequest, teacher_provider: TeacherProvider | None = None,
                    progress: Progress = NullProgress()) -> tuple[list[ResultRow], int]:
    """`ddbench eval DIR`: evaluate a distilled folder made by ddbench or by any other tool."""
    folder = Path(request.folder)
    dataset_name = request.dataset
    if dataset_name is None:
        if not (folder / MANIFEST_NAME).exists():
            raise ConfigError(f"{folder} has no manifest.json; pass --dataset to say which dataset it distils")
        dataset_name = read_manifest(folder)["dataset"]
    dataset = registry.create_dataset(dataset_name, request.data_root, request.resolution)
    _, evaluators = _plugins(request, dataset, None)
    device = resolve_device(request.device)
    # opened first: an unwritable results database fails now, not after checksumming the set
    with _results_store(request.results_path) as store:
        distilled = DistilledSet.open(folder, class_names=dataset.class_names, dataset=dataset.name)
        return evaluate(distilled, dataset, evaluators, request, store, TeacherCache(teacher_provider, device, progress), progress)


def _results_store(path: str | Path | None) -> contextlib.AbstractContextManager:
    """The results database, opened by rank 0 only (under torchrun the others send it their rows)."""
    if not distributed.is_main():
        return contextlib.nullcontext(None)
    return ResultsStore(path or paths.default_results_path())
