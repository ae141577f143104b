"""Sweeps: the jobs of a grid file (`ddbench.core.grid`), which of their results rows the store
already holds, running the missing ones through submitit (local processes or SLURM job arrays),
and where each cell stands. Prints nothing.

A job is one `ddbench run` command line (`SweepJob.run_arguments`), run in its own process, so
it resumes like any rerun: finished classes of the distilled set and finished evaluations are
kept, and a job whose every row is in the store is not started at all. The sweep folder holds
`submitted.json` (job key -> executor, job id, time) and submitit's `logs/`.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import torch

from ddbench.core import paths
from ddbench.core.errors import ConfigError, DDBenchError
from ddbench.core.files import locked, process_alive, write_atomic
from ddbench.core.grid import SweepJob
from ddbench.core.interfaces import TeacherProvider
from ddbench.core.pipeline import EvalJob, TeacherCache, build_identity, plan_jobs, plan_run
from ddbench.core.progress import NullProgress
from ddbench.core.results import ResultsStore

EXECUTORS = ("local", "slurm")
STATES = ("done", "running", "failed", "pending")
SUBMITIT_MISSING = "sweeps run through submitit, which is not installed: pip install 'ddbench[sweep]'"


def require_submitit():
    try:
        import submitit
    except ModuleNotFoundError as exc:
        raise ConfigError(SUBMITIT_MISSING) from exc
    return submitit


# ---------------------------------------------------------------------------------------------
# what a job will write, and what of it the store holds


@dataclass(frozen=True)
class Evaluation:
    """One results row a job writes: (evaluator, teacher architecture, student, seed)."""

    evaluator: str
    teacher: str | None
    student: str
    seed: int


@dataclass
class JobPlan:
    job: SweepJob
    evaluations: list[Evaluation] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)
    #: why the rows could not be listed or checked (a missing data root, rows made by other
    #: evaluator code): the job will say it too
    problem: str = ""
    #: the problem is a bad name or value in the grid: running the job cannot help
    invalid: bool = False

    @property
    def complete(self) -> bool:
        return bool(self.evaluations) and all(self.done)


def _evaluation(job: EvalJob) -> Evaluation:
    return Evaluation(job.evaluator.name, job.teacher_arch, job.student, job.seed)


def plan_job(job: SweepJob, store: ResultsStore | None, teacher_provider: TeacherProvider | None = None,
             datasets: dict[tuple, Any] | None = None) -> JobPlan:
    """The rows `job` writes and which of them `store` already has, planned by the pipeline's own
    `plan_jobs` (same dataset, resolved configs, run and evaluation identities, teacher keys)
    without distilling or training. `datasets` shares dataset objects between a sweep's jobs."""
    plan = JobPlan(job)
    try:
        run_plan = plan_run(job.request(), datasets)
        dataset, method, evaluators, options = run_plan.dataset, run_plan.method, run_plan.evaluators, run_plan.request
        teachers = TeacherCache(teacher_provider, torch.device("cpu"), NullProgress())
        method_teacher = teachers.identify(dataset, job.teachers[0]) if method.needs_teacher else None
        # a teacher still to be trained: its key, hence the run identity, is unknown until the job runs
        known = not method.needs_teacher or method_teacher is not None
        teacher = SimpleNamespace(checkpoint_sha256=method_teacher or "unknown", source="") if method.needs_teacher else None
        identity = build_identity(method, dataset, job.ipc, job.distill_seed, teacher)  # type: ignore[arg-type]
        every, _ = plan_jobs(identity, dataset, evaluators, options, teachers, None)
    except DDBenchError as exc:
        plan.problem, plan.invalid = str(exc), isinstance(exc, ConfigError)
        return plan
    plan.evaluations = [_evaluation(evaluation) for evaluation in every]
    pending = set(plan.evaluations)
    if known and store is not None:
        try:
            pending = {_evaluation(evaluation) for evaluation in plan_jobs(identity, dataset, evaluators, options, teachers, store)[0]}
        except ConfigError as exc:  # rows made by other evaluator code: `ddbench run` stops with this too
            plan.problem = str(exc)
    plan.done = [evaluation not in pending for evaluation in plan.evaluations]
    return plan


def plan_sweep(jobs: Iterable[SweepJob], results_path: str | Path, teacher_provider: TeacherProvider | None = None) -> list[JobPlan]:
    path, datasets = Path(results_path), {}
    if not path.is_file():
        return [plan_job(job, None, teacher_provider, datasets) for job in jobs]
    with ResultsStore(path, readonly=True) as store:
        return [plan_job(job, store, teacher_provider, datasets) for job in jobs]


# ---------------------------------------------------------------------------------------------
# running jobs


class RunCommand:
    """What one submitit job runs: a `ddbench run` command line in a child process (so a torchrun
    launcher works too). Requeued on preemption or timeout, it simply runs again and resumes."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.env = dict(env or {})

    def __call__(self) -> int:
        environment = {**os.environ, **self.env}
        print("running:", shlex.join(self.argv), flush=True)
        last_lines: list[str] = []
        with subprocess.Popen(self.argv, env=environment, stderr=subprocess.PIPE, text=True, errors="replace") as child:
            for line in child.stderr:  # echoed to the job's log; the last lines say why it failed
                sys.stderr.write(line)
                if line.strip():
                    last_lines = [*last_lines[-19:], line.strip()]
        if child.returncode != 0:
            errors = [line for line in last_lines if line.startswith("error:")] or last_lines[-1:]
            raise RuntimeError(f"ddbench run exited with status {child.returncode}: {' '.join(errors[-1:])}")
        return child.returncode

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook on preemption / timeout: requeue the same command (it resumes)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(RunCommand(self.argv, self.env))


@dataclass
class ExecutorOptions:
    executor: str = "local"
    #: local: processes at once
    jobs: int = 1
    #: the program a job runs `run ...` with; default `<this python> -m ddbench`; e.g.
    #: "torchrun --nproc-per-node 4 -m ddbench" for one torchrun per job
    launcher: str | None = None
    device: str | None = None
    partition: str | None = None
    gpus: int | None = None
    time_min: int = 24 * 60
    account: str | None = None
    cpus: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    slurm_extra: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def command(self, job: SweepJob, results: Path) -> list[str]:
        program = shlex.split(self.launcher) if self.launcher else [sys.executable, "-m", "ddbench"]
        return [*program, *job.run_arguments(results, self.device)]


@dataclass
class Submission:
    job_key: str
    executor: str
    job_id: str
    submitted_at: float
    name: str = ""

    @property
    def record(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_sweep_folder(grid_name: str) -> Path:
    return paths.home() / "sweeps" / grid_name


def read_submissions(folder: Path) -> dict[str, Submission]:
    path = folder / "submitted.json"
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {key: Submission(**record) for key, record in records.items()}


def _record(folder: Path, submissions: Sequence[Submission]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / ".submitted.lock"):
        records = {key: value.record for key, value in read_submissions(folder).items()}
        records.update({submission.job_key: submission.record for submission in submissions})
        write_atomic(folder / "submitted.json", json.dumps(records, indent=1, sort_keys=True))


def logs_folder(folder: Path) -> Path:
    return folder / "logs" / "%j"


@dataclass
class SweepOutcome:
    skipped: list[SweepJob]
    submitted: list[Submission]
    failed: list[tuple[SweepJob, str]] = field(default_factory=list)
    wall_time_s: float = 0.0


def run_sweep(
    plans: Sequence[JobPlan],
    folder: Path,
    results: Path,
    options: ExecutorOptions,
    wait: bool = True,
    on_event: Callable[[str, SweepJob, str], None] = lambda event, job, detail: None,
) -> SweepOutcome:
    """Start every job of `plans` that is not complete. Local: at most `options.jobs` at once,
    waiting for all. SLURM: one job array (a task per job), waiting only with `wait`.
    `on_event(event, job, detail)` hears "skip", "submit", "done" and "fail"."""
    if options.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {options.executor!r}; use one of {', '.join(EXECUTORS)}")
    submitit = require_submitit()
    started = time.perf_counter()
    skipped = [plan.job for plan in plans if plan.complete]
    for job in skipped:
        on_event("skip", job, "every row is in the results store")
    invalid = [(plan.job, plan.problem) for plan in plans if plan.invalid]
    for job, problem in invalid:
        on_event("fail", job, problem)
    todo = [plan.job for plan in plans if not plan.complete and not plan.invalid]
    folder.mkdir(parents=True, exist_ok=True)
    results = results.resolve()
    if options.executor == "local":
        outcome = _run_local(submitit, todo, folder, results, options, on_event)
    else:
        outcome = _run_slurm(submitit, todo, folder, results, options, wait, on_event)
    outcome.skipped = skipped
    outcome.failed[:0] = invalid
    outcome.wall_time_s = time.perf_counter() - started
    return outcome


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [item.strip() for item in listed.split(",") if item.strip()]
    try:
        import torch

        return [str(index) for index in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch CUDA at all: no GPUs
        return []


def gpu_slots(jobs: int, gpus: Sequence[str], per_job: int | None = None) -> list[list[str]]:
    """The GPUs of each of `jobs` local slots: `per_job` each (default: an equal share, at least
    one), slot k taking the next ones round the list (slots share GPUs when there are too few)."""
    if not gpus:
        return [[] for _ in range(jobs)]
    per_job = per_job if per_job is not None else max(1, len(gpus) // jobs)
    return [[gpus[(slot * per_job + index) % len(gpus)] for index in range(per_job)] for slot in range(jobs)]


def _run_local(submitit, todo, folder, results, options, on_event) -> SweepOutcome:
    if options.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {options.jobs}")
    executor = submitit.LocalExecutor(folder=logs_folder(folder))
    executor.update_parameters(timeout_min=options.time_min)
    # submitit's local controller hides every GPU unless told; each slot's `ddbench run` gets its own
    slots = gpu_slots(options.jobs, visible_gpus(), options.gpus)
    free, queue, running = list(range(options.jobs)), list(todo), []
    outcome = SweepOutcome(skipped=[], submitted=[])
    try:
        while queue or running:
            while queue and free:
                job, slot = queue.pop(0), free.pop(0)
                env = {**options.env, **({"CUDA_VISIBLE_DEVICES": ",".join(slots[slot])} if slots[slot] else {})}
                submitted = executor.submit(RunCommand(options.command(job, results), env))
                submission = Submission(job.key, "local", str(submitted.job_id), time.time(), job.name)
                _record(folder, [submission])
                outcome.submitted.append(submission)
                running.append((job, submitted, slot))
                on_event("submit", job, f"local job {submitted.job_id}" + (f" on GPU {','.join(slots[slot])}" if slots[slot] else ""))
            for job, submitted, slot in list(running):
                if submitted.done():
                    running.remove((job, submitted, slot))
                    free.append(slot)
                    _finished(outcome, job, submitted.paths.result_pickle, on_event)
            time.sleep(0.2)
    except KeyboardInterrupt:
        for _, submitted, _ in running:
            submitted.cancel(check=False)
        raise
    return outcome


def _finished(outcome: SweepOutcome, job: SweepJob, result_pickle: Path, on_event) -> None:
    problem = _result_problem(result_pickle)
    if problem:
        outcome.failed.append((job, problem))
    on_event("fail" if problem else "done", job, problem)


def _run_slurm(submitit, todo, folder, results, options, wait, on_event) -> SweepOutcome:
    outcome = SweepOutcome(skipped=[], submitted=[])
    if not todo:
        return outcome
    executor = submitit.SlurmExecutor(folder=logs_folder(folder))
    parameters: dict[str, Any] = {"time": options.time_min, "job_name": f"ddbench-{folder.name}"}
    optional = {"partition": options.partition, "gpus_per_node": options.gpus, "account": options.account,
                "cpus_per_task": options.cpus, "mem": f"{int(options.mem_gb * 1024)}M" if options.mem_gb else None,
                "array_parallelism": options.array_parallelism}
    parameters.update({key: value for key, value in optional.items() if value is not None})
    if options.slurm_extra:
        parameters["additional_parameters"] = dict(options.slurm_extra)
    executor.update_parameters(**parameters)
    with executor.batch():  # one job array: a task per configuration
        submitted = [executor.submit(RunCommand(options.command(job, results), options.env)) for job in todo]
    submissions = [Submission(job.key, "slurm", str(handle.job_id), time.time(), job.name) for job, handle in zip(todo, submitted)]
    _record(folder, submissions)
    outcome.submitted = submissions
    for job, handle in zip(todo, submitted):
        on_event("submit", job, f"slurm job {handle.job_id}")
    if wait:
        pending = list(zip(todo, submitted))
        while pending:
            states = slurm_states([str(handle.job_id) for _, handle in pending])
            for job, handle in list(pending):
                if str(handle.job_id) in states:  # queued, running or still completing
                    continue
                pending.remove((job, handle))
                _finished(outcome, job, handle.paths.result_pickle, on_event)
            time.sleep(1.0)
    return outcome


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """job id (`123_4` for an array task) -> state, for jobs SLURM still lists (queued or running)."""
    if not job_ids:
        return {}
    parents = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(parents)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


class _PlainDataUnpickler(pickle.Unpickler):
    """Reads a submitit result of a sweep job, ("success", return code) or ("error", traceback
    text): plain data only. Any class or function reference is refused before it can run, since
    the sweep folder's files may come from elsewhere."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it references {module}.{name}; a sweep job's result holds plain data only")


def _result_problem(result_pickle: Path) -> str:
    """'' for a job whose submitit result says success; else what went wrong."""
    if not result_pickle.exists():
        return f"no result (killed, out of time or lost); see {result_pickle.parent}"
    try:
        with result_pickle.open("rb") as handle:
            outcome, detail = _PlainDataUnpickler(handle).load()[:2]
    except Exception as exc:  # noqa: BLE001 - a torn or foreign pickle
        return f"unreadable result {result_pickle} ({exc})"
    if outcome == "success":
        return ""
    return str(detail).strip().splitlines()[-1] + f" (log: {result_pickle.parent})"


# ---------------------------------------------------------------------------------------------
# where each cell stands


@dataclass
class CellStatus:
    """One (job, evaluator, teacher, student): its seeds done out of expected, and a state."""

    job: SweepJob
    evaluator: str
    teacher: str | None
    student: str
    done: int
    expected: int
    state: str
    detail: str = ""


def job_state(plan: JobPlan, submission: Submission | None, folder: Path) -> tuple[str, str]:
    """(state, detail) of a job from its rows, its submission record and its scheduler."""
    if plan.complete:
        return "done", ""
    if plan.invalid:
        return "failed", plan.problem
    if submission is None:
        return "pending", plan.problem or "not submitted"
    from_logs = folder / "logs" / submission.job_id
    result = from_logs / f"{submission.job_id}_0_result.pkl"
    if submission.executor == "local":
        if _local_job_alive(int(submission.job_id)) and not result.exists():
            return "running", f"local job {submission.job_id}"
    else:
        state = slurm_states([submission.job_id]).get(submission.job_id)
        if state is not None:
            return ("running" if state in {"RUNNING", "COMPLETING", "CONFIGURING"} else "pending"), f"slurm {state.lower()}"
    problem = _result_problem(result)
    if not problem:
        problem = "finished without writing every row"
    return "failed", problem


def _local_job_alive(pid: int) -> bool:
    """Whether the submitit controller with this pid still runs (not a zombie, not a reused pid)."""
    proc = Path(f"/proc/{pid}")
    if not proc.parent.is_dir():  # no /proc: a signal-0 probe
        return process_alive(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and b"submitit" in (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def sweep_status(plans: Sequence[JobPlan], folder: Path) -> list[CellStatus]:
    submissions = read_submissions(folder)
    cells = []
    for plan in plans:
        state, detail = job_state(plan, submissions.get(plan.job.key), folder)
        grouped: dict[tuple, list[bool]] = {}
        for evaluation, done in zip(plan.evaluations, plan.done):
            grouped.setdefault((evaluation.evaluator, evaluation.teacher, evaluation.student), []).append(done)
        if not grouped:
            cells.append(CellStatus(plan.job, ",".join(plan.job.evaluators), None, ",".join(plan.job.students), 0,
                                    0, state, detail))
        for (evaluator, teacher, student), done in grouped.items():
            cell_state = "done" if all(done) else state
            cells.append(CellStatus(plan.job, evaluator, teacher, student, sum(done), len(done), cell_state,
                                    "" if cell_state == "done" else detail))
    return cells
