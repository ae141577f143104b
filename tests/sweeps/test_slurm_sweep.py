"""The digits sweep as a job array on a real single-node SLURM (started by the fixture when
slurm-wlm and munge are installed; skipped with the reason otherwise)."""

import json
import sqlite3

import pytest

from tests.sweeps.grids import write_grid
from tests.sweeps.slurm_cluster import slurm_cluster  # noqa: F401 - the fixture

pytest.importorskip("submitit")
pytestmark = pytest.mark.slow


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

    status = cli("sweep", "status", str(grid), *common)
    assert "4 done, 0 running, 0 failed, 0 pending" in status.output, status.output
    rerun = cli("sweep", str(grid), "--executor", "slurm", "--wait", "--device", "cpu", *common)
    assert "0 job(s) run, 2 already complete" in rerun.output
