"""Full and read-only disks (a real tmpfs / read-only bind mount where this machine allows
mounting, else simulated inside the subprocess; see conftest): one clear line, never a file that
later looks complete, and the optional resume state never costs a finished evaluation.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.faults.conftest import (
    TINY_RUN,
    assert_same_as_reference,
    ddbench,
    ddbench_together,
    error_lines,
    fresh_home,
    leftovers,
)


def _one_error_line(stderr: str) -> str:
    lines = error_lines(stderr)
    assert not any("Traceback" in line for line in lines), stderr[-3000:]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def test_full_and_read_only_disks(reference, tmp_path, disks):
    state_full, runs_full, readonly_results, readonly_home = (fresh_home(tmp_path) for _ in range(4))
    writable_results = tmp_path / "elsewhere" / "results.sqlite"
    readonly_folder = tmp_path / "read-only-results"
    jobs = [
        # the optional resume state does not fit: warn, finish, leave nothing behind
        (TINY_RUN, state_full, disks.full(state_full / "cache" / "eval-state", 16384)),
        # the distilled set does not fit: one line, and no class that looks finished but is not
        (TINY_RUN, runs_full, disks.full(runs_full / "runs", 16384)),
        # results in a read-only folder: refused before any distillation
        ((*TINY_RUN, "--results", str(readonly_folder / "results.sqlite")), readonly_results, disks.readonly(readonly_folder)),
        # a read-only DDBENCH_HOME (results elsewhere): one line naming the run folder
        ((*TINY_RUN, "--results", str(writable_results)), readonly_home, disks.readonly(readonly_home)),
    ]
    state_run, runs_run, results_run, home_run = ddbench_together(jobs)

    assert state_run.returncode == 0, state_run.stderr[-3000:]
    warnings = [line for line in error_lines(state_run.stderr) if line.startswith("warning:")]
    assert warnings and all("training state was not saved" in w and "disk is full" in w for w in warnings)
    assert_same_as_reference(state_full, reference)

    assert runs_run.returncode == 2
    line = _one_error_line(runs_run.stderr)
    assert "disk is full (ENOSPC)" in line and str(runs_full / "runs") in line and "rerun the same command" in line
    manifest_path = next((runs_full / "runs").glob("*/*/manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    assert not manifest["complete"] and 0 < len(manifest["files"]) < 20
    for key, checksum in manifest["files"].items():  # what is recorded is whole and verified
        assert reference.snapshot.files[key] == checksum
        assert (manifest_path.parent / key).is_file()
    assert leftovers(runs_full) == []  # no staging folder, no temporary manifest
    freed = disks.grow(runs_full / "runs")
    rerun = ddbench(TINY_RUN, runs_full, freed)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_as_reference(runs_full, reference)

    assert results_run.returncode == 2
    line = _one_error_line(results_run.stderr)
    assert "cannot write the results database" in line and str(readonly_folder) in line and "--results" in line
    assert not (readonly_results / "runs").exists()  # refused before any long work

    assert home_run.returncode == 2
    line = _one_error_line(home_run.stderr)
    assert str(readonly_home) in line and ("read-only" in line or "permission denied" in line)


def test_leaderboard_reads_a_database_on_read_only_media(reference, tmp_path, disks):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(reference.home / "results.sqlite", media / "results.sqlite")
    harness = disks.readonly(media)
    result = ddbench(("leaderboard", "--results", str(media / "results.sqlite"), "--format", "json"), tmp_path / "home",
                     harness)
    assert result.returncode == 0, result.stderr[-3000:]
    tables = json.loads(result.stdout)
    assert tables and "random" in result.stdout and "convnet3" in result.stdout
    if disks.mode == "mount":  # (a simulated read-only folder cannot stop SQLite's own C code)
        assert sorted(p.name for p in media.iterdir()) == ["results.sqlite"]  # nothing written next to it


def test_rows_still_in_the_write_ahead_log_are_read_on_read_only_media(tmp_path, disks):
    """A database copied off a machine whose last writer was killed keeps rows in its -wal file;
    read-only, SQLite can neither replay nor ignore it safely, so ddbench reads a private copy."""
    import sqlite3
    import subprocess
    import sys

    from ddbench.core.results import ResultsStore
    from tests.faults.db_writer import row

    if disks.mode != "mount":
        pytest.skip("needs a real read-only mount (a simulated one cannot stop SQLite's C code)")
    media = tmp_path / "media"
    media.mkdir()
    with ResultsStore(media / "results.sqlite") as store:
        store.add(row(0, 0))
    killed_writer = (f"import os, sqlite3; c = sqlite3.connect({str(media / 'results.sqlite')!r}); "
                     "c.execute('UPDATE results SET value = 42'); c.commit(); os._exit(0)")
    subprocess.run([sys.executable, "-c", killed_writer], check=True)
    assert (media / "results.sqlite-wal").stat().st_size > 0
    (media / "results.sqlite-shm").unlink()  # as after a copy that took the database and its log only
    disks.readonly(media)
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"{(media / 'results.sqlite').as_uri()}?mode=ro", uri=True).execute("SELECT 1 FROM results")
    with ResultsStore(media / "results.sqlite", readonly=True) as store:
        assert [r["value"] for r in store.rows()] == [42.0]
