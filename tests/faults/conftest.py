"""Shared pieces of the fault-injection suite: run `ddbench` in a real subprocess (through the
harness), the uninterrupted reference run everything is compared with, snapshots of what a run
recorded, and full / read-only disks.

Full and read-only disks are real when this machine lets the tests mount (root with
CAP_SYS_ADMIN): a small tmpfs, a read-only bind mount. Elsewhere the harness simulates them in the
subprocess (ENOSPC after a byte budget, EROFS on writes); `DISK_MODE` says which one ran.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: the tiny run every kill test repeats: 10 digit classes x 2 images, 2 seeds of a 2-epoch
#: ConvNet-3, resume state saved after every epoch
TINY_RUN = ("run", "--method", "random", "--dataset", "digits", "--ipc", "2", "--evaluator", "hard_label",
            "--students", "convnet3", "--seeds", "0,1", "--set", "epochs=2", "--set", "resume_every=1")
#: what in a row depends on the clock, not on what was computed
TIMING_KEYS = ("train_seconds", "validation_seconds", "train_images_per_second")


def ddbench(args, home: Path, harness: tuple[str, ...] = (), wait: bool = True, timeout: float = 300):
    """Run `ddbench ARGS` in a fresh Python with DDBENCH_HOME=`home`, through the harness."""
    env = {**os.environ, "DDBENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "COLUMNS": "200"}
    env.pop("DDBENCH_RESULTS", None)
    command = [sys.executable, "-m", "tests.faults.harness", *harness, "--", *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def ddbench_together(jobs, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run several `ddbench(args, home, harness)` jobs at once (the suite's wall time is bounded
    by its CPU time divided by the cores, not by the sum of the runs)."""
    processes = [ddbench(*job, wait=False) for job in jobs]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def error_lines(stderr: str) -> list[str]:
    """The non-progress lines of stderr (rich progress bars are drawn on stderr too)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.lstrip().startswith(("━", "⠋"))
            and ("error" in line or "Traceback" in line or "interrupted" in line or "warning" in line)]


@dataclass
class Snapshot:
    """What a finished run recorded: the distilled set's files and checksums, and the rows."""

    files: dict[str, str]
    complete: bool
    rows: list[dict]
    leftovers: list[str]


def snapshot(home: Path) -> Snapshot:
    runs = sorted((home / "runs").glob("*/*/manifest.json"))
    manifest = json.loads(runs[0].read_text()) if runs else {"files": {}, "complete": False}
    rows = []
    database = home / "results.sqlite"
    if database.exists():
        connection = sqlite3.connect(database)
        connection.row_factory = sqlite3.Row
        for record in connection.execute("SELECT * FROM results ORDER BY evaluator, student, seed"):
            details = json.loads(record["details"])
            rows.append({
                "key": (record["run_id"], record["evaluator"], record["student"], record["seed"]),
                "value": record["value"], "metrics": json.loads(record["metrics"]),
                "details": {k: v for k, v in details.items() if k not in TIMING_KEYS},
                "distilled_hash": record["distilled_hash"],
            })
        connection.close()
    return Snapshot(manifest["files"], manifest.get("complete", False), rows, leftovers(home))


def leftovers(home: Path) -> list[str]:
    """Temporary files, staging folders and resume states a finished run must not leave behind."""
    found = []
    for path in home.rglob("*"):
        name = path.name
        if name.endswith((".tmp", ".partial")) or ".state.pt" in name or name.startswith(".tmp-"):
            found.append(str(path.relative_to(home)))
    return sorted(found)


@dataclass
class Reference:
    home: Path
    snapshot: Snapshot
    sequence: list[tuple[str, str]]


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    """TINY_RUN once, uninterrupted, counting its fault-injection events."""
    home = tmp_path_factory.mktemp("reference-home")
    counts = home.parent / "reference-events.json"
    result = ddbench(TINY_RUN, home, ("--count", str(counts)))
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = snapshot(home)
    assert recorded.complete and len(recorded.files) == 20 and len(recorded.rows) == 2 and not recorded.leftovers
    return Reference(home, recorded, [tuple(item) for item in json.loads(counts.read_text())["sequence"]])


def assert_same_as_reference(home: Path, reference: Reference) -> None:
    """Nothing recorded lost or duplicated: byte-identical set, identical rows, no leftovers."""
    got = snapshot(home)
    assert got.complete
    assert got.files == reference.snapshot.files  # every image, byte for byte (sha256)
    assert got.rows == reference.snapshot.rows  # the same rows, once each, with the same numbers
    assert got.leftovers == []


# ----- full and read-only disks -----
def _try_mount(*args: str) -> bool:
    try:
        return subprocess.run(["mount", *args], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory) -> bool:
    if os.environ.get("DDBENCH_FAULTS_SIMULATE_DISKS"):  # to exercise the fallback on a machine that can mount
        return False
    probe = tmp_path_factory.mktemp("mount-probe")
    if os.geteuid() != 0 or not _try_mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)):
        return False
    _umount(probe)
    return True


def pytest_report_header(config):
    return "fault suite disks: real tmpfs / read-only bind mounts when mountable, else simulated in the subprocess"


@pytest.fixture
def disks(can_mount, tmp_path):
    """`disks.full(path, bytes)` and `disks.readonly(path)` -> the harness options to pass (none
    when the disk is a real mount)."""
    mounted: list[Path] = []

    class Disks:
        mode = "mount" if can_mount else "simulated"

        @staticmethod
        def full(path: Path, size: int) -> tuple[str, ...]:
            path.mkdir(parents=True, exist_ok=True)
            if can_mount and _try_mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
                mounted.append(path)
                return ()
            return ("--quota", f"{path}:{size}")

        @staticmethod
        def grow(path: Path) -> tuple[str, ...]:
            """Free the full disk at `path` (for the rerun): a bigger tmpfs, or no more quota."""
            if path in mounted:
                assert _try_mount("-o", "remount,size=64m", str(path))
            return ()

        @staticmethod
        def readonly(path: Path) -> tuple[str, ...]:
            path.mkdir(parents=True, exist_ok=True)
            if can_mount and _try_mount("--bind", str(path), str(path)):
                mounted.append(path)
                if _try_mount("-o", "remount,bind,ro", str(path)):
                    return ()
            return ("--readonly", str(path))

    yield Disks()
    for path in reversed(mounted):
        _umount(path)


def fresh_home(tmp_path: Path) -> Path:
    return tmp_path / f"home-{uuid.uuid4().hex[:6]}"
