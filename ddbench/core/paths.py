"""Where ddbench keeps things: `$DDBENCH_HOME` (default ~/.cache/ddbench) holds runs, the results
database and caches (teachers, generator weights)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("DDBENCH_HOME", "~/.cache/ddbench")).expanduser()


def default_results_path() -> Path:
    return Path(os.environ.get("DDBENCH_RESULTS", home() / "results.sqlite")).expanduser()


def runs_dir() -> Path:
    return home() / "runs"


def cache_dir(kind: str) -> Path:
    return home() / "cache" / kind
