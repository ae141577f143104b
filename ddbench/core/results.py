"""The results store: embedded SQLite (WAL), one row per (run, evaluator with its protocol
version and config, teacher, student, seed).

Each row describes itself: the run identity (configuration key, readable label, resolved method
config, weights, dataset fingerprint, distillation seed), the evaluator's resolved config and the
effective training recipe as it ran, metrics, teacher, versions, git hash, wall time and the
distilled set's content hash, so a leaderboard number can always be traced to what made it.
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
from ddbench.core.errors import ConfigError

#: bumped when the table changes; an older table is kept aside as `results_v<N>` (not shown)
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    configuration TEXT NOT NULL,
    label TEXT NOT NULL,
    method TEXT NOT NULL,
    method_config TEXT NOT NULL,
    weights TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_fingerprint TEXT NOT NULL,
    resolution INTEGER NOT NULL,
    ipc INTEGER NOT NULL,
    distill_seed INTEGER NOT NULL,
    evaluator TEXT NOT NULL,
    evaluator_protocol INTEGER NOT NULL,
    evaluator_config TEXT NOT NULL,
    evaluator_config_hash TEXT NOT NULL,
    evaluator_label TEXT NOT NULL,
    recipe TEXT,
    details TEXT,
    student TEXT NOT NULL,
    teacher TEXT,
    teacher_key TEXT NOT NULL,
    teacher_info TEXT,
    seed INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    metrics TEXT NOT NULL,
    distilled_path TEXT NOT NULL,
    distilled_hash TEXT NOT NULL,
    versions TEXT NOT NULL,
    git_hash TEXT,
    wall_time_s REAL NOT NULL,
    UNIQUE (run_id, evaluator, evaluator_protocol, evaluator_config_hash, student, teacher_key, seed)
);
CREATE INDEX IF NOT EXISTS results_lookup ON results (dataset, ipc, evaluator, configuration, student);
"""


@dataclass
class ResultRow:
    """One evaluation of one distilled set: (run, evaluator with its protocol version and config,
    teacher, student, seed), with everything needed to say what ran."""

    run_id: str
    configuration: str  # RunIdentity.configuration: the leaderboard row key
    label: str  # RunIdentity.label: what the leaderboard prints
    method: str
    method_config: dict[str, Any]
    weights: dict[str, str]
    dataset: str
    dataset_fingerprint: str  # stable hash of the evaluation dataset's fingerprint
    resolution: int
    ipc: int
    distill_seed: int
    evaluator: str
    evaluator_protocol: int
    evaluator_config: dict[str, Any]
    evaluator_config_hash: str
    evaluator_label: str
    student: str
    seed: int
    metric: str
    value: float
    metrics: dict[str, float]
    distilled_path: str
    distilled_hash: str
    wall_time_s: float
    recipe: dict[str, Any] | None = None  # the effective training recipe (lr, batch, epochs... as run)
    details: dict[str, Any] | None = None  # EvalResult.details: per-epoch losses, validations, timing
    teacher: str | None = None
    teacher_key: str = ""  # the teacher checkpoint's sha256; "" for evaluators without a teacher
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


JSON_COLUMNS = ("metrics", "method_config", "weights", "evaluator_config", "recipe", "details", "teacher_info", "versions")


class ResultsStore:
    """A thin layer over one SQLite file; safe for several processes writing at once (WAL)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path).expanduser()
        if readonly:  # leaderboards and reports: works on read-only media too
            if not self.path.is_file():
                raise ConfigError(f"no results database at {self.path}; run `ddbench run ...` first or pass --results")
            self._connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            self._connection.row_factory = sqlite3.Row
            try:
                self._connection.execute("SELECT 1 FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # no -shm/-wal can be made next to it: read it as it is
                self._connection.close()
                self._connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
                self._connection.row_factory = sqlite3.Row
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=30)
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            with self._connection:
                self._set_aside_older_table()
                self._connection.executescript(SCHEMA)
                self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.OperationalError) as exc:
            raise ConfigError(
                f"cannot write the results database {self.path} ({exc}); pass --results PATH in a writable "
                "folder or set DDBENCH_HOME"
            ) from exc

    def _set_aside_older_table(self) -> None:
        """A table from an older ddbench lacks the run identity its rows would need to be pooled
        correctly: keep it, renamed, and start a new one."""
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        exists = self._connection.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='results'").fetchone()
        if exists and version < SCHEMA_VERSION:
            self._connection.execute(f"ALTER TABLE results RENAME TO results_v{max(version, 1)}")
            self._connection.execute("DROP INDEX IF EXISTS results_lookup")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row: ResultRow) -> None:
        """Insert or replace the row of (run, evaluator, protocol, config, student, teacher, seed)."""
        values = dict(row.__dict__)
        for column in JSON_COLUMNS:
            values[column] = json.dumps(values[column], sort_keys=True) if values[column] is not None else None
        columns = ", ".join(values)
        placeholders = ", ".join(f":{name}" for name in values)
        with self._connection:
            self._connection.execute(f"INSERT OR REPLACE INTO results ({columns}) VALUES ({placeholders})", values)

    def has(
        self, run_id: str, evaluator: str, evaluator_protocol: int, evaluator_config_hash: str, student: str,
        teacher_key: str, seed: int,
    ) -> bool:
        """Whether this evaluation already finished, so an interrupted run skips it."""
        cursor = self._connection.execute(
            "SELECT 1 FROM results WHERE run_id=? AND evaluator=? AND evaluator_protocol=? AND evaluator_config_hash=? "
            "AND student=? AND teacher_key=? AND seed=?",
            (run_id, evaluator, evaluator_protocol, evaluator_config_hash, student, teacher_key, seed),
        )
        return cursor.fetchone() is not None

    def rows(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """All rows matching the given column=value filters (None values are ignored)."""
        active = {key: value for key, value in filters.items() if value is not None}
        where = " AND ".join(f"{key} = :{key}" for key in active) or "1"
        if self._connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            return  # a read-only view of a database from an older ddbench: no rows in today's layout
        for record in self._connection.execute(f"SELECT * FROM results WHERE {where} ORDER BY id", active):
            row = dict(record)
            for column in JSON_COLUMNS:
                row[column] = json.loads(row[column]) if row[column] is not None else None
            yield row
