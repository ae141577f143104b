"""Config dataclasses: paper defaults, per-dataset presets, `--set key=value` overrides, and the
resolved dict that is stored with every result."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from typing import Any, Mapping

from ddbench.core.errors import ConfigError


@dataclasses.dataclass
class EmptyConfig:
    """For plugins with nothing to configure."""


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, str]:
    """`["lr=0.1", "epochs=3"]` -> `{"lr": "0.1", "epochs": "3"}`."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a CLI string (or a JSON value) into the field's declared type."""
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key)
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value)
        if annotation is float:
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"config key {key!r}: {value!r} is not a finite number; give a real value like 0.01")
            return number
        if origin in (tuple, list):
            item_type = args[0] if args else str
            items = [v for v in value.replace(";", ",").split(",") if v.strip()]
            coerced = [_coerce(v.strip(), item_type, key) for v in items]
            return tuple(coerced) if origin is tuple else coerced
        if annotation in (dict, Mapping) or origin in (dict, Mapping):
            return json.loads(value)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {annotation}") from exc
    return value


def resolve_config(
    config_cls: type,
    *layers: Mapping[str, Any] | None,
    owner: str = "config",
) -> Any:
    """Build `config_cls` from its defaults, then each layer of overrides in order (preset, user).

    Unknown keys are an error naming the valid ones, so a typo never silently does nothing.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{owner} has no key {key!r}{hint}; valid keys: {', '.join(sorted(fields)) or 'none'}"
                )
            values[key] = _coerce(value, hints[key], key)
    return config_cls(**values)


#: field metadata of config keys that do not change what a run produces (where extra files go,
#: seed-invariant batch sizes): recorded with the run, but left out of its identity, so setting
#: them never splits a leaderboard row. Use as `field(default=..., metadata=NOT_IN_IDENTITY)`.
NOT_IN_IDENTITY = {"identity": False}


def identity_config(config: Any) -> dict[str, Any]:
    """The JSON-ready config without the keys marked NOT_IN_IDENTITY."""
    values = config_to_dict(config)
    if config is None:
        return values
    return {f.name: values[f.name] for f in dataclasses.fields(config) if f.metadata.get("identity", True)}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a resolved config."""
    if config is None:
        return {}
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
