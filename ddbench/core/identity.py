"""The run identity: built once per run, the single source of the run folder, the manifest's
identity, the resume key, the results rows and the leaderboard grouping.

A *configuration* is (method, resolved config, dataset fingerprint, IPC, weights): everything that
decides what a distilled set is, except the distillation seed. A *run* is a configuration plus
that seed. Leaderboard cells pool the rows of one configuration (evaluation seeds and distillation
seeds are its repetitions) and never anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Mapping

from ddbench.core.hashing import stable_hash

#: bumped when what the identity covers changes (a new identity must not match an old folder)
IDENTITY_VERSION = 2


@dataclass(frozen=True)
class RunIdentity:
    """What a distilled set is. `label_defaults` is the config the method would have without the
    user's `--set` (defaults, then dataset preset, then ablation preset): the readable label shows
    only what differs from it."""

    method: str
    config: Mapping[str, Any]
    dataset: Mapping[str, Any]  # DatasetSpec.fingerprint()
    ipc: int
    seed: int
    weights: Mapping[str, str] = field(default_factory=dict)  # role -> sha256 (generator, vqvae, teacher, ...)
    label_defaults: Mapping[str, Any] = field(default_factory=dict)

    def configuration_payload(self) -> dict[str, Any]:
        return {
            "version": IDENTITY_VERSION,
            "method": self.method,
            "config": dict(self.config),
            "dataset": dict(self.dataset),
            "ipc": self.ipc,
            "weights": dict(self.weights),
        }

    @property
    def configuration(self) -> str:
        """The leaderboard row key: equal for runs that differ only in their distillation seed."""
        return stable_hash(self.configuration_payload(), 16)

    @property
    def key(self) -> str:
        """The run key: the configuration and the distillation seed (folder name, resume key)."""
        return stable_hash({"configuration": self.configuration, "seed": self.seed}, 16)

    @property
    def run_id(self) -> str:
        return f"{self.dataset['name']}/{self.method}-ipc{self.ipc}-seed{self.seed}-{self.key[:10]}"

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
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> "RunIdentity":
        return cls(
            method=payload["method"],
            config=dict(payload["config"]),
            dataset=dict(payload["dataset"]),
            ipc=int(payload["ipc"]),
            seed=int(payload["seed"]),
            weights=dict(payload.get("weights") or {}),
            label_defaults=dict(payload.get("label_defaults") or {}),
        )


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
