"""Content hashes: of files (cached by path, size and mtime, so a 1 GB checkpoint is read once) and
of JSON-like values (stable across processes and Python versions)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ddbench.core import paths


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stable_hash(value: Any, length: int = 64) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys), cut to `length` hex digits."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def cached_sha256_file(path: str | os.PathLike) -> str:
    """`sha256_file`, remembered under $DDBENCH_HOME/cache/sha256.json by (path, size, mtime): run
    identities hash generator checkpoints on every run, and those files are large."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = paths.cache_dir("hashes") / "sha256.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if key in cache:
        return cache[key]
    digest = sha256_file(path)
    cache[key] = digest
    try:  # a read-only home only loses the memo, never the answer
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return digest
