"""Temporary names are per process, and cleanup removes only what a dead writer left behind:
never a live process's file, never a file ddbench did not name."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ddbench.core.files import remove_stale_temporaries, temporary_sibling, write_atomic


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "state.pt"
    mine = temporary_sibling(target)
    assert mine != temporary_sibling(target) and mine.name.startswith(".state.pt.") and mine.name.endswith(".tmp")
    host = mine.name.split(".")[-2].split("-")[0]
    dead = tmp_path / f".state.pt.{host}-{_dead_pid()}-0123abcd.tmp"
    live_other = tmp_path / f".state.pt.{host}-1-0123abcd.tmp"  # pid 1 always runs
    other_host_new = tmp_path / ".state.pt.ffffff-12-0123abcd.tmp"
    other_host_old = tmp_path / ".state.pt.eeeeee-12-0123abcd.tmp"
    not_ours = tmp_path / ".notes.tmp"
    staging_dir = tmp_path / f".classA.{host}-{_dead_pid()}-89abcdef.tmp"
    staging_dir.mkdir()
    (staging_dir / "0.png").write_bytes(b"half")
    for path in (mine, dead, live_other, other_host_new, other_host_old, not_ours):
        path.write_bytes(b"x")
    old = time.time() - 3 * 24 * 3600
    os.utime(other_host_old, (old, old))

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([dead.name, other_host_old.name, staging_dir.name])
    assert all(p.exists() for p in (mine, live_other, other_host_new, not_ours))


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    write_atomic(target, "old")

    def half_written(temporary):
        temporary.write_text("new but cut")
        raise OSError(28, "No space left on device")

    try:
        write_atomic(target, half_written)
    except Exception as exc:  # noqa: BLE001
        assert "disk is full" in str(exc) and str(target) in str(exc)
    else:
        raise AssertionError("a failed write must raise")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
