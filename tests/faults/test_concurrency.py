"""Several processes on one run folder and one results database at once.

- Two `ddbench run`s of the same configuration with different `--seeds` share the run folder:
  they distil the same set at the same moment (the harness holds both at the writer until both
  are there) and must neither crash nor lose each other's classes or rows.
- Two identical `ddbench run`s train the same evaluations at the same moment: the same resume
  state file, the same results rows; no crash, one row each.
- Four processes hammer one database while another holds its write lock: every row lands once,
  no "database is locked".
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

from tests.faults.conftest import REPO, TINY_RUN, assert_same_as_reference, ddbench_together, fresh_home


def _with_seeds(seeds: str) -> tuple[str, ...]:
    args = list(TINY_RUN)
    args[args.index("--seeds") + 1] = seeds
    return tuple(args)


def test_two_runs_sharing_a_run_folder_at_once_neither_crash_nor_lose_work(reference, tmp_path):
    by_seed, same_jobs = fresh_home(tmp_path), fresh_home(tmp_path)
    jobs = [
        (_with_seeds("0"), by_seed, ("--rendezvous", f"{tmp_path}/meet-a:2")),
        (_with_seeds("1"), by_seed, ("--rendezvous", f"{tmp_path}/meet-a:2")),
        (TINY_RUN, same_jobs, ("--rendezvous", f"{tmp_path}/meet-b:2")),
        (TINY_RUN, same_jobs, ("--rendezvous", f"{tmp_path}/meet-b:2")),
    ]
    for result in ddbench_together(jobs):
        assert result.returncode == 0, result.stderr[-3000:]
    assert_same_as_reference(by_seed, reference)  # the union of seed 0 and seed 1 is the 2-seed run
    assert_same_as_reference(same_jobs, reference)  # each row once, though both processes made it


def test_concurrent_writers_of_one_results_database_lose_and_duplicate_nothing(tmp_path):
    database, start = tmp_path / "results.sqlite", tmp_path / "start"
    workers, rows = 4, 30
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "tests.faults.db_writer", str(database), str(w), str(rows), str(start)],
                                  cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for w in range(workers)]
    deadline = time.monotonic() + 60
    while not database.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # let the workers open the database (and create its schema) concurrently
    holder = sqlite3.connect(database, timeout=60, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock while everyone starts
    start.touch()
    time.sleep(1.0)
    holder.execute("COMMIT")
    holder.close()
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
        assert "locked" not in stderr
    connection = sqlite3.connect(database)
    seeds = [seed for (seed,) in connection.execute("SELECT seed FROM results ORDER BY seed")]
    expected = sorted({s for w in range(workers) for s in range(w * rows // 2, w * rows // 2 + rows)})
    assert seeds == expected  # every key once: overlapping writes replaced, none lost
    assert all(value == seed for seed, value in connection.execute("SELECT seed, value FROM results"))
    connection.close()
