"""The results store: embedded SQLite (WAL), one row per (run, evaluator, student, seed).

Each row describes itself: metrics, resolved configs, teacher, versions, git hash, wall time and
the distilled set's content hash, so a leaderboard number can always be traced to what made it.
"""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import ddbench

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    ipc INTEGER NOT NULL,
    evaluator TEXT NOT NULL,
    student TEXT NOT NULL,
    teacher TEXT,
    seed INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    metrics TEXT NOT NULL,
    method_config TEXT NOT NULL,
    evaluator_config TEXT NOT NULL,
    evaluator_config_hash TEXT NOT NULL,
    teacher_info TEXT,
    distilled_path TEXT NOT NULL,
    distilled_hash TEXT NOT NULL,
    versions TEXT NOT NULL,
    git_hash TEXT,
    wall_time_s REAL NOT NULL,
    UNIQUE (run_id, evaluator, evaluator_config_hash, student, teacher, seed)
);
CREATE INDEX IF NOT EXISTS results_lookup ON results (dataset, ipc, evaluator, method, student);
"""


@dataclass
class ResultRow:
    run_id: str
    method: str
    dataset: str
    ipc: int
    evaluator: str
    student: str
    seed: int
    metric: str
    value: float
    metrics: dict[str, float]
    method_config: dict[str, Any]
    evaluator_config: dict[str, Any]
    evaluator_config_hash: str
    distilled_path: str
    distilled_hash: str
    wall_time_s: float
    teacher: str | None = None
    teacher_info: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=lambda: software_versions())
    git_hash: str | None = field(default_factory=lambda: git_hash())
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def software_versions() -> dict[str, str]:
    import numpy
    import torch

    versions = {"ddbench": ddbench.__version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import timm

        versions["timm"] = timm.__version__
    except ImportError:
        pass
    return versions


def git_hash() -> str | None:
    """The commit of the ddbench source in use, when it runs from a git checkout."""
    try:
        source = Path(ddbench.__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


JSON_COLUMNS = ("metrics", "method_config", "evaluator_config", "teacher_info", "versions")


class ResultsStore:
    """A thin layer over one SQLite file; safe for several processes writing at once (WAL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, timeout=30)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.executescript(SCHEMA)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row: ResultRow) -> None:
        """Insert or replace the row of (run, evaluator and its config, student, teacher, seed)."""
        values = dict(row.__dict__)
        for column in JSON_COLUMNS:
            values[column] = json.dumps(values[column], sort_keys=True) if values[column] is not None else None
        columns = ", ".join(values)
        placeholders = ", ".join(f":{name}" for name in values)
        with self._connection:
            self._connection.execute(f"INSERT OR REPLACE INTO results ({columns}) VALUES ({placeholders})", values)

    def has(self, run_id: str, evaluator: str, evaluator_config_hash: str, student: str, teacher: str | None, seed: int) -> bool:
        """Whether this evaluation already finished, so an interrupted run skips it."""
        cursor = self._connection.execute(
            "SELECT 1 FROM results WHERE run_id=? AND evaluator=? AND evaluator_config_hash=? "
            "AND student=? AND teacher IS ? AND seed=?",
            (run_id, evaluator, evaluator_config_hash, student, teacher, seed),
        )
        return cursor.fetchone() is not None

    def rows(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """All rows matching the given column=value filters (None values are ignored)."""
        active = {key: value for key, value in filters.items() if value is not None}
        where = " AND ".join(f"{key} = :{key}" for key in active) or "1"
        for record in self._connection.execute(f"SELECT * FROM results WHERE {where} ORDER BY id", active):
            row = dict(record)
            for column in JSON_COLUMNS:
                row[column] = json.loads(row[column]) if row[column] is not None else None
            yield row
