"""The plugin registry: entry-point groups, loaded lazily, with "did you mean" errors.

Built-in plugins register through the very same entry points as third-party packages
(see pyproject.toml), so there is one path for both and no if/elif chain anywhere.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ddbench.core.errors import ConfigError

COMMANDS_GROUP = "ddbench.commands"
GROUPS = {
    "methods": "ddbench.methods",
    "evaluators": "ddbench.evaluators",
    "datasets": "ddbench.datasets",
}


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    if kind not in GROUPS:
        raise ConfigError(f"unknown plugin kind {kind!r}; use one of {', '.join(GROUPS)}")
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUPS[kind]):
        found.setdefault(ep.name, ep)  # first wins, so a duplicate cannot shadow silently
    return found


def names(kind: str) -> list[str]:
    """Registered names of one kind, sorted, without importing any plugin."""
    return sorted(_entry_points(kind))


def describe(kind: str) -> list[tuple[str, str]]:
    """(name, "module:attr") pairs, for `ddbench list`."""
    return [(name, ep.value) for name, ep in sorted(_entry_points(kind).items())]


def load(kind: str, name: str) -> Any:
    """The plugin class registered under `name`; imports only that plugin."""
    available = _entry_points(kind)
    if name not in available:
        singular = kind[:-1]
        close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(available)) or "none installed"
        raise ConfigError(f"unknown {singular} {name!r}.{hint} Known {kind}: {known}.")
    try:
        return available[name].load()
    except Exception as exc:  # a broken third-party plugin should say which one it is
        raise ConfigError(f"{kind[:-1]} plugin {name!r} ({available[name].value}) failed to import: {exc}") from exc


def load_method(name: str) -> Any:
    return load("methods", name)


def load_evaluator(name: str) -> Any:
    return load("evaluators", name)


def load_dataset(name: str) -> Any:
    return load("datasets", name)


def create_dataset(name: str, root: str | None = None, resolution: int | None = None) -> Any:
    """An instance of the dataset spec `name` reading from `root` (ignored by embedded datasets),
    at `resolution` px (default: the dataset's own)."""
    return load_dataset(name)(root=root, resolution=resolution)


def command_entry_points() -> dict[str, EntryPoint]:
    """CLI subcommands that packages add through the `ddbench.commands` entry-point group
    (ddbench's own `teacher`, `var`, `hieramp` groups come the same way)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=COMMANDS_GROUP):
        found.setdefault(ep.name, ep)
    return found
