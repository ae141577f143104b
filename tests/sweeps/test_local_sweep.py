"""A digits sweep (2 methods x 2 students x 2 seeds) through submitit's local executor: it runs to
completion, a killed sweep resumes without recomputing a finished row, and `status` says where
each cell stands."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.sweeps.grids import write_grid

pytest.importorskip("submitit")
pytestmark = pytest.mark.slow


def rows(results):
    with sqlite3.connect(results) as connection:
        return {(r[0], r[1], r[2]): (r[3], r[4]) for r in connection.execute(
            "SELECT method, student, seed, id, created_at FROM results")}


def sweep(*args, home):
    env = {**os.environ, "DDBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ddbench", "sweep", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_killed_sweep_resumes_without_recomputing_and_status_follows(cli, tmp_path, isolated_home):
    grid = write_grid(tmp_path)
    results = tmp_path / "results.sqlite"
    folder = tmp_path / "sweep"
    common = ["--results", str(results), "--folder", str(folder)]

    before = cli("sweep", "status", str(grid), *common)
    assert before.exit_code == 0, before.output
    assert "0 done, 0 running, 0 failed, 4 pending" in before.output

    # one job at a time; kill the whole sweep (and its job) the moment the second job is submitted
    first = sweep(str(grid), "--jobs", "1", "--device", "cpu", *common, home=isolated_home)
    deadline = time.monotonic() + 300
    while len(json.loads((folder / "submitted.json").read_text()) if (folder / "submitted.json").exists() else {}) < 2:
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "the first job did not finish in 5 minutes"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = rows(results)
    assert len(finished) == 4 and {method for method, _, _ in finished} == {"random"}

    middle = cli("sweep", "status", str(grid), *common)
    assert "2 done, 0 running, 2 failed, 0 pending" in middle.output, middle.output
    assert "killed" in middle.output

    second = sweep(str(grid), "--jobs", "2", "--device", "cpu", *common, home=isolated_home)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    assert "skip random digits ipc1" in output and "1 job(s) run, 1 already complete, 0 failed" in output
    after = rows(results)
    assert len(after) == 8 and {method for method, _, _ in after} == {"random", "var"}
    assert {key: after[key] for key in finished} == finished  # same row ids and times: nothing recomputed

    done = cli("sweep", "status", str(grid), *common)
    assert "4 done, 0 running, 0 failed, 0 pending" in done.output, done.output
    assert "2/2" in done.output

    again = sweep(str(grid), "--device", "cpu", *common, home=isolated_home)
    assert "0 job(s) run, 2 already complete" in again.communicate(timeout=120)[0]
    assert rows(results) == after
