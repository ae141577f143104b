"""The package's one place for hashing: identities (`stable_hash` of JSON-like values, stable
across processes and Python versions; `StableDigest` when the value arrives in pieces, such as
tensors), file contents (`sha256_file`, cached by path, size and mtime, so a 1 GB checkpoint is
read once) and seeds (`seed_from_key`). Nothing else in ddbench calls hashlib for these (a test
checks it); download verification (`core/fetch.py`, `generators/weights.py`) checks the md5 or
sha256 a publisher gave, which is not an identity."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ddbench.core.memo import JsonMemo


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(value: Any, length: int = 64) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys), cut to `length` hex digits."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


class StableDigest:
    """`stable_hash` for a value that arrives in pieces: a header (any JSON-like value, or raw
    text) and then bytes (tensor contents, file names)."""

    def __init__(self, header: Any):
        self._digest = hashlib.sha256((header if isinstance(header, str) else canonical_json(header)).encode())

    def update(self, data: bytes | str) -> "StableDigest":
        self._digest.update(data.encode() if isinstance(data, str) else data)
        return self

    def hexdigest(self, length: int = 64) -> str:
        return self._digest.hexdigest()[:length]


def seed_from_key(key: str) -> int:
    """A 63-bit integer that depends only on `key` (the seeds of `core/seeding.py`)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def cached_sha256_file(path: str | os.PathLike) -> str:
    """`sha256_file`, remembered under $DDBENCH_HOME/cache/sha256.json by (path, size, mtime): run
    identities hash generator checkpoints on every run, and those files are large."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = JsonMemo("hashes", "sha256.json")
    digest = memo.get(key)
    if digest is None:
        digest = sha256_file(path)
        memo.put(key, digest)
        memo.save()
    return digest
