"""The results store: embedded SQLite (WAL), one row per evaluation: `EvalIdentity.key`, i.e.
(run, evaluator with its code and config, teacher, student, seed).

Each row describes itself: the run identity (configuration key, readable label, resolved method
config, weights, dataset fingerprint, distillation seed), the evaluator's resolved config and the
effective training recipe as it ran, metrics, teacher, versions, git hash, wall time and the
distilled set's content hash, so a leaderboard number can always be traced to what made it.

Several processes may write one database at once: every write is one `BEGIN IMMEDIATE`
transaction (it waits for the write lock instead of failing on a stale read snapshot) under a
busy timeout, retried a few times, and a row's key makes a repeated evaluation replace its row,
never duplicate it. Stored JSON is strict (no NaN / Infinity, which SQLite's JSON functions
reject), and a non-finite metric is refused with an error rather than stored.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import ddbench
from ddbench.core.errors import ConfigError, ResultsError, StorageError
from ddbench.core.identity import EvalIdentity, RunIdentity

if TYPE_CHECKING:  # the leaderboard reads results without importing torch
    from ddbench.core.interfaces import EvalResult

#: bumped when the table changes. A table of a version in `MIGRATIONS` is brought up to date in
#: place (its rows stay readable, new columns NULL); an older one is kept aside as `results_v<N>`
#: (not shown)
SCHEMA_VERSION = 4
#: version -> the statements that make a table of that version the next version's
MIGRATIONS = {
    3: ["ALTER TABLE results ADD COLUMN storage TEXT"],  # v4: storage on every row
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    eval_key TEXT NOT NULL UNIQUE,
    eval_base_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    configuration TEXT NOT NULL,
    label TEXT NOT NULL,
    method TEXT NOT NULL,
    method_config TEXT NOT NULL,
    method_code TEXT,
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
    evaluator_code TEXT,
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
    storage TEXT
);
CREATE INDEX IF NOT EXISTS results_lookup ON results (dataset, ipc, evaluator, configuration, student);
CREATE INDEX IF NOT EXISTS results_base ON results (eval_base_key)
"""
#: how long a writer waits for another process's write lock, and how often it then tries again
BUSY_TIMEOUT_S = 60.0
WRITE_ATTEMPTS = 5


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
    method_code: dict[str, Any] | None = None  # RunIdentity.code: version, distribution, source
    evaluator_code: dict[str, Any] | None = None  # EvalIdentity.code
    run_key: str = ""  # RunIdentity.key
    eval_key: str = ""  # EvalIdentity.key: the row's unique key
    eval_base_key: str = ""  # EvalIdentity.base_key: the same evaluation under other evaluator source
    #: `ddbench.core.storage.Storage.to_dict()`: bytes of the images as stored and as canonical
    #: PNGs, of stored labels and of what evaluation needs (the teacher), set by the process that
    #: records the row; None on rows made before schema version 4
    storage: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """A row built by hand (a test, a copy) without identities gets them from its own columns."""
        if not self.eval_key:
            identity = EvalIdentity(
                run_key=self.run_key or self.run_id, evaluator=self.evaluator,
                code=self.evaluator_code or {"version": self.evaluator_protocol},
                config={"hash": self.evaluator_config_hash}, teacher_key=self.teacher_key, student=self.student,
                seed=self.seed)
            self.eval_key, self.eval_base_key = identity.key, identity.base_key
        self.run_key = self.run_key or self.run_id

    @classmethod
    def from_evaluation(
        cls, result: EvalResult, run: RunIdentity, evaluation: EvalIdentity, *, dataset: str, resolution: int,
        dataset_fingerprint: str, ipc: int, evaluator_label: str, distilled_path: str, distilled_hash: str,
        wall_time_s: float, teacher: str | None, teacher_info: dict[str, Any] | None,
    ) -> "ResultRow":
        """The one way the pipeline makes a row: what ran (the identities) and what came out."""
        details = result.details or {}
        return cls(
            run_id=run.run_id, run_key=run.key, configuration=run.configuration, label=run.label, method=run.method,
            method_config=dict(run.config), method_code=dict(run.code), weights=dict(run.weights), dataset=dataset,
            dataset_fingerprint=dataset_fingerprint, resolution=resolution, ipc=ipc, distill_seed=run.seed,
            evaluator=evaluation.evaluator, evaluator_protocol=evaluation.protocol_version,
            evaluator_config=dict(evaluation.config), evaluator_config_hash=evaluation.table,
            evaluator_label=evaluator_label, evaluator_code=dict(evaluation.code), recipe=details.get("recipe"),
            details=details, student=evaluation.student, seed=evaluation.seed, metric=result.primary,
            value=result.value, metrics=result.metrics, distilled_path=distilled_path, distilled_hash=distilled_hash,
            wall_time_s=wall_time_s, teacher=teacher, teacher_key=evaluation.teacher_key, teacher_info=teacher_info,
            eval_key=evaluation.key, eval_base_key=evaluation.base_key,
        )


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


JSON_COLUMNS = ("metrics", "method_config", "method_code", "weights", "evaluator_config", "evaluator_code", "recipe", "details",
                "teacher_info", "versions", "storage")


class ResultsStore:
    """A thin layer over one SQLite file; safe for several processes writing at once (WAL)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path).expanduser()
        self._snapshot_dir: str | None = None
        if readonly:  # leaderboards and reports: works on read-only media too
            self._open_readonly()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._connection.row_factory = sqlite3.Row
            self._retrying(lambda: self._connection.execute("PRAGMA journal_mode=WAL"))
            # a real write (user_version is rewritten even when unchanged): a database that cannot
            # take rows fails here, before any distillation or training starts
            self._write(self._create_schema)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc

    def _create_schema(self) -> None:
        self._set_aside_older_table()
        for statement in SCHEMA.split(";"):
            self._connection.execute(statement)
        self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _error(self, exc: Exception) -> Exception:
        """One clear error for a database that cannot be opened or written."""
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in text:
            return StorageError(f"cannot write the results database {self.path}: the disk is full; free some space "
                                "or pass --results PATH elsewhere, then rerun the same command (finished work is kept)")
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return ConfigError(f"{self.path} is not an SQLite results database ({text}); pass --results PATH to another file")
        return ConfigError(f"cannot write the results database {self.path} ({text}); pass --results PATH in a writable "
                           "folder or set DDBENCH_HOME")

    def _retrying(self, work):
        """Run `work`, trying again (with a growing pause) while another process holds the database."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return work()
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2**attempt)

    def _write(self, work) -> None:
        """`work` inside one BEGIN IMMEDIATE transaction, retried while the database is busy."""
        def transaction() -> None:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                work()
                self._connection.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise

        self._retrying(transaction)

    def _open_readonly(self) -> None:
        """mode=ro first; on media where SQLite cannot create its -shm file, `immutable=1` on the
        file itself, or, when a -wal file holds rows not yet in it, on a private copy of both."""
        if not self.path.is_file():
            raise ConfigError(f"no results database at {self.path}; run `ddbench run ...` first or pass --results")
        try:
            self._connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            self._connection.row_factory = sqlite3.Row
            try:
                self._connection.execute("SELECT 1 FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # no -shm/-wal can be made next to it: read it as it is
                self._connection.close()
                source = self.path.resolve()
                wal = source.with_name(source.name + "-wal")
                if wal.is_file() and wal.stat().st_size > 0:
                    self._snapshot_dir = tempfile.mkdtemp(prefix="ddbench-results-")
                    source = Path(shutil.copy2(source, self._snapshot_dir))
                    shutil.copy2(wal, self._snapshot_dir)
                self._connection = sqlite3.connect(f"{source.as_uri()}?immutable=1" if self._snapshot_dir is None
                                                   else source, uri=self._snapshot_dir is None)
                self._connection.row_factory = sqlite3.Row
                self._connection.execute("SELECT 1 FROM sqlite_master").fetchone()
        except (OSError, sqlite3.Error) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                raise ConfigError(f"{self.path} is not an SQLite results database ({exc}); pass --results PATH "
                                  "to another file") from exc
            raise ConfigError(f"cannot read the results database {self.path} ({exc})") from exc

    def _set_aside_older_table(self) -> None:
        """Bring a table of an older ddbench up to date (`MIGRATIONS`), or, when it lacks the run
        identity its rows would need to be pooled correctly, keep it renamed and start a new one."""
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        exists = self._connection.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='results'").fetchone()
        if not exists or version >= SCHEMA_VERSION:
            return
        if version in MIGRATIONS:
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    self._connection.execute(statement)
            return
        self._connection.execute(f"ALTER TABLE results RENAME TO results_v{max(version, 1)}")
        self._connection.execute("DROP INDEX IF EXISTS results_lookup")

    def close(self) -> None:
        self._connection.close()
        if self._snapshot_dir is not None:
            shutil.rmtree(self._snapshot_dir, ignore_errors=True)

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row: ResultRow) -> None:
        """Insert the row, or replace the one of the same evaluation (`eval_key`)."""
        values = dict(row.__dict__)
        bad = {name: value for name, value in {"value": row.value, **row.metrics}.items()
               if not isinstance(value, (int, float)) or not math.isfinite(value)}
        if bad:
            raise ResultsError(f"{row.evaluator} {row.student} seed {row.seed}: metrics {bad} are not finite numbers; "
                               "the training went wrong (lower lr?), so nothing was stored")
        for column in JSON_COLUMNS:
            if values[column] is None:
                continue
            try:
                values[column] = json.dumps(values[column], sort_keys=True, allow_nan=False)
            except ValueError as exc:
                raise ResultsError(f"{row.evaluator} {row.student} seed {row.seed}: {column} holds a NaN or infinite "
                                   "number, which stored JSON cannot; nothing was stored") from exc
        columns = ", ".join(values)
        placeholders = ", ".join(f":{name}" for name in values)
        try:
            self._write(lambda: self._connection.execute(
                f"INSERT OR REPLACE INTO results ({columns}) VALUES ({placeholders})", values))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def status(self, evaluation: EvalIdentity) -> str | None:
        """"done" when this evaluation is stored; "other-code" when only the same evaluation by
        other evaluator source is (never reused silently); None when it is still to do."""
        if self._connection.execute("SELECT 1 FROM results WHERE eval_key=?", (evaluation.key,)).fetchone():
            return "done"
        if self._connection.execute("SELECT 1 FROM results WHERE eval_base_key=?", (evaluation.base_key,)).fetchone():
            return "other-code"
        return None

    def sources_of(self, evaluation: EvalIdentity) -> list[str]:
        """The evaluator source fingerprints of the stored rows of this evaluation under any code."""
        found = self._connection.execute("SELECT evaluator_code FROM results WHERE eval_base_key=?", (evaluation.base_key,))
        return sorted({json.loads(code or "{}").get("source", "?") for (code,) in found})

    def rows(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """All rows matching the given column=value filters (None values are ignored)."""
        active = {key: value for key, value in filters.items() if value is not None}
        where = " AND ".join(f"{key} = :{key}" for key in active) or "1"
        version = self._connection.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION and version not in MIGRATIONS:
            return  # a read-only view of a database from an older ddbench: no rows in today's layout
        for record in self._connection.execute(f"SELECT * FROM results WHERE {where} ORDER BY id", active):
            row = {"storage": None, **dict(record)}  # columns added since: None on a read-only older table
            for column in JSON_COLUMNS:
                row[column] = json.loads(row[column]) if row[column] is not None else None
            yield row
