"""Grid files: a table of `ddbench run` configurations in TOML, and optionally the numbers a paper
published for its cells.

```toml
name = "digits-demo"                    # default: the file's stem
students = ["resnet18", "convnet3"]     # axes at the top level are every block's defaults
teachers = ["resnet18"]
seeds = [0, 1]                          # evaluation seeds (one results row each)
distill_seeds = [0]
evaluators = ["hard_label"]
set = ["hard_label.epochs=2"]           # `--set`s every run gets

[[methods]]                             # a method and its own `--set`s (`id` names it in `published`)
method = "random"
[[methods]]
method = "rded"
set = ["method.factor=1"]

[[grid]]                                # one cartesian block; the file is the union of its blocks
datasets = ["digits"]
ipcs = [2]
resolutions = [16]                      # optional: the dataset's own resolution when absent

[paper]                                 # optional: the published numbers (see `ddbench.core.compare`)
source = "..."
metric = "top1_best"
protocol = { evaluator = "rded", teacher = "resnet18" }
cells = [ { method = "HIERAMP", dataset = "cifar10", ipc = 10, student = "resnet18", mean = 44.3, std = 0.6 } ]
```

A block may also override `students`, `teachers`, `seeds`, `distill_seeds`, `evaluators`, `set`
and `methods` (a list of method ids). Shipped grids (`ddbench/sweeps/*.toml`) are found by name.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ddbench.core.config import parse_overrides
from ddbench.core.errors import ConfigError
from ddbench.core.hashing import stable_hash

if TYPE_CHECKING:
    from ddbench.core.pipeline import RunRequest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the `sweep` extra installs tomli
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

AXES = ("datasets", "resolutions", "ipcs", "distill_seeds", "students", "teachers", "seeds", "evaluators")
TOP_LEVEL = {"name", "description", "set", "methods", "grid", "paper", "data_roots", *AXES}
BLOCK_KEYS = {"set", "methods", *AXES}
METHOD_KEYS = {"id", "method", "set"}
DEFAULTS: dict[str, list[Any]] = {
    "resolutions": [None], "distill_seeds": [0], "students": ["resnet18"], "teachers": ["resnet18"],
    "seeds": [0], "evaluators": ["rded"],
}


@dataclass(frozen=True)
class MethodEntry:
    """A method of the grid: its ddbench name, the id its published cells use, its `--set`s."""

    id: str
    method: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepJob:
    """One `ddbench run`: one distilled set (method with its `--set`s, dataset, resolution, IPC,
    distillation seed) and every (evaluator, teacher, student, seed) it is evaluated with."""

    method_id: str
    method: str
    dataset: str
    resolution: int | None
    ipc: int
    distill_seed: int
    students: tuple[str, ...]
    teachers: tuple[str, ...]
    seeds: tuple[int, ...]
    evaluators: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    data_root: str | None = None

    @property
    def key(self) -> str:
        """Stable across processes and reruns: names this job in the sweep folder."""
        payload = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "data_root"}
        return stable_hash(payload, 12)

    @property
    def name(self) -> str:
        resolution = f"@{self.resolution}px" if self.resolution else ""
        sets = f" [{' '.join(self.overrides)}]" if self.overrides else ""
        return f"{self.method_id} {self.dataset}{resolution} ipc{self.ipc} dseed{self.distill_seed}{sets}"

    def request(self) -> RunRequest:
        """The `RunRequest` this job's `ddbench run` command line makes (results and device aside)."""
        from ddbench.core.pipeline import RunRequest  # torch and the pipeline only when a job is planned

        return RunRequest(method=self.method, dataset=self.dataset, ipc=self.ipc, distill_seed=self.distill_seed,
                          data_root=self.data_root, resolution=self.resolution, seeds=self.seeds,
                          evaluators=self.evaluators, students=self.students, teachers=self.teachers,
                          overrides=parse_overrides(self.overrides))

    def run_arguments(self, results: str | Path | None = None, device: str | None = None) -> list[str]:
        """The `ddbench run ...` arguments (without the program) that make this job."""
        args = ["run", "--method", self.method, "--dataset", self.dataset, "--ipc", str(self.ipc),
                "--distill-seed", str(self.distill_seed), "--students", ",".join(self.students),
                "--teachers", ",".join(self.teachers), "--seeds", ",".join(map(str, self.seeds)),
                "--evaluator", ",".join(self.evaluators)]
        if self.resolution:
            args += ["--resolution", str(self.resolution)]
        if self.data_root:
            args += ["--data-root", self.data_root]
        for override in self.overrides:
            args += ["--set", override]
        if results:
            args += ["--results", str(results)]
        if device:
            args += ["--device", device]
        return args


@dataclass(frozen=True)
class PublishedCell:
    """One published number: mean +- std over n runs of a method on (dataset, IPC, student, teacher)."""

    method: str  # a MethodEntry id
    dataset: str
    ipc: int
    student: str
    teacher: str | None
    mean: float
    std: float
    n: int | None
    resolution: int | None = None
    note: str = ""


@dataclass
class Grid:
    name: str
    description: str
    methods: dict[str, MethodEntry]
    jobs: list[SweepJob]
    paper: dict[str, Any] = field(default_factory=dict)
    published: list[PublishedCell] = field(default_factory=list)
    source: str = ""


def _load_toml(text: str, where: str) -> dict[str, Any]:
    if tomllib is None:  # pragma: no cover
        raise ConfigError("reading grid files needs tomli on Python 3.10: pip install 'ddbench[sweep]'")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from exc


def shipped_grids() -> list[str]:
    """Names of the grid files shipped in `ddbench/sweeps`."""
    folder = resources.files("ddbench.sweeps")
    return sorted(item.name[:-5] for item in folder.iterdir() if item.name.endswith(".toml"))


def load_grid(name_or_path: str | Path, data_roots: Mapping[str, str] | None = None) -> Grid:
    """A grid from a path, or a shipped grid by name (`hieramp-table1`). `data_roots` (dataset ->
    folder) adds `--data-root` to the jobs of those datasets."""
    path = Path(name_or_path)
    if path.is_file():
        text, where = path.read_text(), str(path)
    else:
        shipped = resources.files("ddbench.sweeps") / f"{name_or_path}.toml"
        if not shipped.is_file():
            raise ConfigError(f"no grid file {name_or_path!r}: give a path to a .toml file or a shipped grid "
                              f"({', '.join(shipped_grids())})")
        text, where = shipped.read_text(), f"shipped grid {name_or_path}"
    grid = parse_grid(_load_toml(text, where), default_name=path.stem, where=where, data_roots=data_roots)
    grid.source = where
    return grid


def _list(value: Any, key: str, where: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    raise ConfigError(f"{where}: {key} must be a list, got {value!r}")


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _overrides(value: Any, where: str) -> tuple[str, ...]:
    items = _list(value, "set", where) if value is not None else []
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"{where}: set entries are 'KEY=VALUE' strings like 'hard_label.epochs=2', got {item!r}")
    return tuple(items)


def parse_grid(data: Mapping[str, Any], default_name: str = "grid", where: str = "grid",
               data_roots: Mapping[str, str] | None = None) -> Grid:
    """Expand a parsed grid file into its jobs (duplicates dropped, first occurrence order kept)."""
    _check_keys(data, TOP_LEVEL, where)
    methods: dict[str, MethodEntry] = {}
    for index, entry in enumerate(_list(data.get("methods", []), "methods", where)):
        entry = {"method": entry} if isinstance(entry, str) else entry
        _check_keys(entry, METHOD_KEYS, f"{where} methods[{index}]")
        if "method" not in entry:
            raise ConfigError(f"{where} methods[{index}]: needs method = \"<ddbench method name>\"")
        method = MethodEntry(id=str(entry.get("id", entry["method"])), method=str(entry["method"]),
                             overrides=_overrides(entry.get("set"), f"{where} methods[{index}]"))
        if method.id in methods:
            raise ConfigError(f"{where}: two methods have the id {method.id!r}; give one an id = \"...\"")
        methods[method.id] = method
    if not methods:
        raise ConfigError(f"{where}: no [[methods]]; add at least one, e.g. [[methods]] method = \"random\"")
    roots = {**dict(data.get("data_roots", {})), **dict(data_roots or {})}
    blocks = _list(data.get("grid", [{}]), "grid", where) or [{}]
    jobs: dict[str, SweepJob] = {}
    for index, block in enumerate(blocks):
        block_where = f"{where} grid[{index}]"
        _check_keys(block, BLOCK_KEYS, block_where)
        axes = {axis: _list(block.get(axis, data.get(axis, DEFAULTS.get(axis))), axis, block_where)
                for axis in AXES if block.get(axis, data.get(axis, DEFAULTS.get(axis))) is not None}
        for axis in ("datasets", "ipcs"):
            if not axes.get(axis):
                raise ConfigError(f"{block_where}: no {axis}; set {axis} = [...] at the top level or in the block")
        common = _overrides(data.get("set"), where) + _overrides(block.get("set"), block_where)
        block_methods = _list(block.get("methods", list(methods)), "methods", block_where)
        for method_id in block_methods:
            if method_id not in methods:
                raise ConfigError(f"{block_where}: method id {method_id!r} is not in [[methods]] ({', '.join(methods)})")
        for method_id, dataset, resolution, ipc, distill_seed in itertools.product(
                block_methods, axes["datasets"], axes["resolutions"], axes["ipcs"], axes["distill_seeds"]):
            entry = methods[method_id]
            job = SweepJob(
                method_id=method_id, method=entry.method, dataset=str(dataset),
                resolution=int(resolution) if resolution else None, ipc=int(ipc), distill_seed=int(distill_seed),
                students=tuple(map(str, axes["students"])), teachers=tuple(map(str, axes["teachers"])),
                seeds=tuple(int(seed) for seed in axes["seeds"]), evaluators=tuple(map(str, axes["evaluators"])),
                overrides=entry.overrides + common, data_root=roots.get(str(dataset)),
            )
            jobs.setdefault(job.key, job)
    paper = dict(data.get("paper", {}))
    return Grid(name=str(data.get("name", default_name)), description=str(data.get("description", "")),
                methods=methods, jobs=list(jobs.values()), paper=paper,
                published=_published(paper, methods, f"{where} [paper]"))


def _published(paper: Mapping[str, Any], methods: Mapping[str, MethodEntry], where: str) -> list[PublishedCell]:
    protocol = dict(paper.get("protocol", {}))
    cells = []
    for index, cell in enumerate(paper.get("cells", [])):
        cell_where = f"{where} cells[{index}]"
        missing = [key for key in ("method", "dataset", "ipc", "student", "mean", "std") if key not in cell]
        if missing:
            raise ConfigError(f"{cell_where}: missing {', '.join(missing)}")
        if cell["method"] not in methods:
            raise ConfigError(f"{cell_where}: method {cell['method']!r} is not an id in [[methods]]")
        cells.append(PublishedCell(
            method=str(cell["method"]), dataset=str(cell["dataset"]), ipc=int(cell["ipc"]), student=str(cell["student"]),
            teacher=cell.get("teacher", protocol.get("teacher")), mean=float(cell["mean"]), std=float(cell["std"]),
            n=cell.get("n", paper.get("n")), resolution=cell.get("resolution", (protocol.get("resolutions") or {}).get(cell["dataset"])),
            note=str(cell.get("note", "")),
        ))
    return cells


def select_jobs(jobs: Sequence[SweepJob], method_ids: Sequence[str] = (), datasets: Sequence[str] = ()) -> list[SweepJob]:
    """The jobs of the given method ids and datasets (all when a filter is empty)."""
    return [job for job in jobs if (not method_ids or job.method_id in method_ids) and (not datasets or job.dataset in datasets)]
