"""The digits sweep as a job array on a real single-node SLURM (started by the fixture when
slurm-wlm and munge are installed; skipped with the reason otherwise)."""

import json
import sqlite3
import time

import pytest

from tests.sweeps.grids import write_grid
from tests.sweeps.slurm_cluster import slurm_cluster  # noqa: F401 - the fixture

pytest.importorskip("submitit")
pytestmark = pytest.mark.slow


def stored_rows(results):
    with sqlite3.connect(results) as connection:
        return connection.execute("SELECT id, created_at, method, student, seed FROM results ORDER BY id").fetchall()


def test_a_two_configuration_sweep_runs_as_one_array_and_collects_its_rows(cli, tmp_path, slurm_cluster):
    grid = write_grid(tmp_path)
    results, folder = tmp_path / "results.sqlite", tmp_path / "sweep"
    common = ["--results", str(results), "--folder", str(folder)]
    assert "4 pending" in cli("sweep", "status", str(grid), *common).output

    result = cli("sweep", str(grid), "--executor", "slurm", "--wait", "--time", "20", "--cpus", "1",
                 "--device", "cpu", *common)
    assert result.exit_code == 0, result.output + (folder / "logs").as_posix()
    assert "2 job(s) run, 0 already complete, 0 failed" in result.output

    submitted = json.loads((folder / "submitted.json").read_text())
    job_ids = sorted(record["job_id"] for record in submitted.values())
    assert {record["executor"] for record in submitted.values()} == {"slurm"}
    assert len({job_id.split("_")[0] for job_id in job_ids}) == 1 and [i.split("_")[1] for i in job_ids] == ["0", "1"]
    assert any((folder / "logs").rglob("*_log.out"))  # submitit's logs live in the sweep folder

    with sqlite3.connect(results) as connection:
        rows = connection.execute("SELECT method, student, seed FROM results ORDER BY method, student, seed").fetchall()
    assert rows == [(method, student, seed) for method in ("random", "var")
                    for student in ("convnet3", "convnet4") for seed in (0, 1)]

    # requeued (as after a preemption), each task runs its `ddbench run` again, which finds every
    # row stored and recomputes nothing
    before = stored_rows(results)
    slurm_cluster.run("scontrol", "requeue", ",".join(job_ids))
    for job_id in job_ids:  # requeued jobs wait out a begin-time delay; start them now
        slurm_cluster.run("scontrol", "update", f"jobid={job_id}", "starttime=now", check=False)
    deadline = time.monotonic() + 240
    while slurm_cluster.run("squeue", "-h", check=False).stdout.strip():
        assert time.monotonic() < deadline, "the requeued tasks did not finish in 4 minutes"
        time.sleep(0.5)
    logs = [path.read_text() for path in (folder / "logs").rglob("*_log.out")]
    assert sum("4 evaluation(s) were already in the results database" in log for log in logs) == 2
    assert stored_rows(results) == before

    status = cli("sweep", "status", str(grid), *common)
    assert "4 done, 0 running, 0 failed, 0 pending" in status.output, status.output
    rerun = cli("sweep", str(grid), "--executor", "slurm", "--wait", "--device", "cpu", *common)
    assert "0 job(s) run, 2 already complete" in rerun.output
