"""The two identities everything else is named from.

`RunIdentity` says what a distilled set is: the method with its code (declared `version`, the
distribution that ships it and that distribution's version), its resolved config, the dataset
fingerprint, IPC and weights. A *configuration* is all of that plus the method's source
fingerprint, less the distillation seed: a leaderboard row pools the runs of one configuration and
never runs made by other code. The run folder is named without the source fingerprint, so an edit
of the method's code finds the old folder and stops instead of silently reusing it (or silently
starting hours of distillation elsewhere).

`EvalIdentity` says what one evaluation is: the run it evaluates, the evaluator with its code
(protocol version, distribution, source fingerprint), its resolved config, the teacher, the
student and the seed. The results store's unique key, the resume-state file names and the
leaderboard tables all come from it. Both use the one stable hash of `ddbench.core.hashing`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Mapping

from ddbench.core.hashing import stable_hash

#: bumped when what the identity covers changes (a new identity must not match an old folder)
IDENTITY_VERSION = 3


@dataclass(frozen=True)
class PluginCode:
    """Which code a plugin is: the version its author declares (bumped when its output changes on
    purpose), the distribution that ships it, and a fingerprint of its source files."""

    version: int | str
    distribution: str
    distribution_version: str
    source: str  # stable hash of the plugin's source files (see `source_files`)

    def declared(self) -> dict[str, Any]:
        """What the author declares (part of every identity and of the run folder's name)."""
        return {"version": self.version, "distribution": self.distribution,
                "distribution_version": self.distribution_version}

    def to_dict(self) -> dict[str, Any]:
        return {**self.declared(), "source": self.source}


def plugin_code(plugin_cls: type, version: int | str) -> PluginCode:
    """The code identity of `plugin_cls` (a Method or Evaluator class)."""
    modules = source_modules_of(plugin_cls)
    distribution, distribution_version = _distribution_of(modules[0].partition(".")[0])
    return PluginCode(version=version, distribution=distribution, distribution_version=distribution_version,
                      source=_source_fingerprint(modules))


def source_modules_of(plugin_cls: type) -> tuple[str, ...]:
    """The modules whose files make `plugin_cls`'s source fingerprint, its own first.

    A class's own `source_modules` are taken as declared; without any, its home package. A class
    that inherits them (a third-party evaluator built on `StudentTrainingEvaluator`) gets its home
    package in front of them: its own code counts, and names its distribution."""
    home = _home_module(plugin_cls)
    declared = plugin_cls.__dict__.get("source_modules")
    if declared:
        return tuple(declared)
    inherited = tuple(getattr(plugin_cls, "source_modules", ()) or ())
    if any(home == module or home.startswith(module + ".") for module in inherited):
        return inherited
    return (home, *inherited)


def _home_module(plugin_cls: type) -> str:
    """The package the plugin's module belongs to (all of its files: `ddbench.methods.hieramp` for
    `ddbench.methods.hieramp.method`), or the module itself when it is a package or a top-level file."""
    module = plugin_cls.__module__
    loaded = sys.modules.get(module)
    is_package = loaded is not None and hasattr(loaded, "__path__")
    parent = module.rpartition(".")[0]
    return module if is_package or not parent else parent


def source_files(module_name: str) -> list[Path]:
    """The .py files of a module, or of every module below a package."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    path = Path(getattr(module, "__file__", "") or "")
    if path.name == "__init__.py":
        return sorted(p for p in path.parent.rglob("*.py") if "__pycache__" not in p.parts)
    return [path] if path.is_file() else []


@functools.lru_cache(maxsize=None)
def _source_fingerprint(modules: tuple[str, ...]) -> str:
    contents = {}
    for module_name in modules:
        files = source_files(module_name)
        base = files[0].parent if files else None
        for path in files:
            contents[f"{module_name}:{path.relative_to(base).as_posix()}"] = stable_hash(path.read_text(encoding="utf-8", errors="replace"))
    return stable_hash(contents, 16)


@functools.lru_cache(maxsize=None)
def _distribution_of(top_level: str) -> tuple[str, str]:
    names = importlib.metadata.packages_distributions().get(top_level) or []
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"(no distribution: {top_level})", "unknown"


@dataclass(frozen=True)
class RunIdentity:
    """What a distilled set is. `label_defaults` is the config the method would have without the
    user's `--set` (defaults, then dataset preset, then ablation preset): the readable label shows
    only what differs from it. `code` is the method's `PluginCode.to_dict()`."""

    method: str
    config: Mapping[str, Any]
    dataset: Mapping[str, Any]  # DatasetSpec.fingerprint()
    ipc: int
    seed: int
    weights: Mapping[str, str] = field(default_factory=dict)  # role -> sha256 (generator, vqvae, teacher, ...)
    label_defaults: Mapping[str, Any] = field(default_factory=dict)
    code: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The fingerprint of the method's source files ("" when unknown: a foreign folder)."""
        return str(self.code.get("source", ""))

    def _declared_payload(self) -> dict[str, Any]:
        return {
            "version": IDENTITY_VERSION,
            "method": self.method,
            "code": {key: value for key, value in self.code.items() if key != "source"},
            "config": dict(self.config),
            "dataset": dict(self.dataset),
            "ipc": self.ipc,
            "weights": dict(self.weights),
        }

    def configuration_payload(self) -> dict[str, Any]:
        return {**self._declared_payload(), "source": self.source}

    @property
    def configuration(self) -> str:
        """The leaderboard row key: equal for runs that differ only in their distillation seed."""
        return stable_hash(self.configuration_payload(), 16)

    @property
    def key(self) -> str:
        """The run key: the configuration and the distillation seed (results rows)."""
        return stable_hash({"configuration": self.configuration, "seed": self.seed}, 16)

    @property
    def folder_key(self) -> str:
        """The run key without the source fingerprint: names the run folder, so the same command
        after an edit of the method finds the set the old code made."""
        return stable_hash({"declared": self._declared_payload(), "seed": self.seed}, 16)

    @property
    def run_id(self) -> str:
        return f"{self.dataset['name']}/{self.method}-ipc{self.ipc}-seed{self.seed}-{self.folder_key[:10]}"

    @property
    def label(self) -> str:
        """`hieramp`, `hieramp beta=1`, `hieramp ablation=t3-5-50-coarse`: the method and what the
        user changed from its defaults for this dataset."""
        return readable_label(self.method, self.config, self.label_defaults)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.configuration_payload(),
            "seed": self.seed,
            "label_defaults": dict(self.label_defaults),
            "configuration": self.configuration,
            "key": self.key,
            "folder_key": self.folder_key,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> "RunIdentity":
        code = dict(payload.get("code") or {})
        if payload.get("source"):
            code["source"] = payload["source"]
        return cls(
            method=payload["method"],
            config=dict(payload["config"]),
            dataset=dict(payload["dataset"]),
            ipc=int(payload["ipc"]),
            seed=int(payload["seed"]),
            weights=dict(payload.get("weights") or {}),
            label_defaults=dict(payload.get("label_defaults") or {}),
            code=code,
        )


@dataclass(frozen=True)
class EvalIdentity:
    """One evaluation: (run, evaluator with its code and resolved config, teacher, student, seed).

    `table` names the leaderboard table (evaluator, protocol, config, code; the dataset and IPC
    are columns of their own), `key` the results row and `base_key` the same evaluation under any
    evaluator source, which finds rows made by other evaluator code."""

    run_key: str
    evaluator: str
    code: Mapping[str, Any]  # the evaluator's PluginCode.to_dict() (version = protocol version)
    config: Mapping[str, Any]
    teacher_key: str  # the teacher checkpoint's sha256; "" for evaluators without a teacher
    student: str
    seed: int

    @property
    def protocol_version(self) -> int:
        return int(self.code.get("version", 0))

    @property
    def source(self) -> str:
        return str(self.code.get("source", ""))

    @property
    def table(self) -> str:
        return stable_hash({"evaluator": self.evaluator, "code": dict(self.code), "config": dict(self.config)}, 10)

    def _job(self) -> dict[str, Any]:
        return {"run": self.run_key, "teacher": self.teacher_key, "student": self.student, "seed": self.seed}

    @property
    def key(self) -> str:
        return stable_hash({"table": self.table, **self._job()}, 20)

    @property
    def base_key(self) -> str:
        declared = {k: v for k, v in self.code.items() if k != "source"}
        return stable_hash({"evaluator": self.evaluator, "code": declared, "config": dict(self.config), **self._job()}, 20)

    def state_name(self, training: Mapping[str, Any]) -> str:
        """A resume-state file name unique to this evaluation and what it trains (`training`: the
        recipe and the distilled images, which a resumed state must match)."""
        return f"{self.evaluator}-{self.student}-seed{self.seed}-{stable_hash({'eval': self.key, **training}, 12)}.state.pt"


def readable_label(name: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """`name` followed by `key=value` for every config key whose value differs from `defaults`."""
    changed = [
        f"{key}={_short(value)}"
        for key, value in sorted(config.items())
        if key not in defaults or _normal(defaults[key]) != _normal(value)
    ]
    return " ".join([name, *changed])


def _normal(value: Any) -> Any:
    """Lists and tuples compare equal (JSON turns tuples into lists)."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return PurePath(value).name  # a checkpoint path: its file name says enough
    return str(value)
