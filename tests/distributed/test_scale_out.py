"""Scale-out on torch.distributed, with two real processes on the CPU (gloo backend).

- `torchrun -m ddbench run` shards classes and evaluation jobs: the distilled set has the content
  hash of a single-process run with the same seed, the rows are the single-process rows, and only
  rank 0 wrote them (each once);
- DDP training (classifier loop with batch norm, CutMix and uneven shares; the step loop with
  `local_share`) ends where one process ends, within float tolerance;
- a rank that raises stops the other one with that rank's message (no hang), the state saved
  before the fault is resumed by the next launch;
- a rank killed with SIGKILL is noticed through its missing heartbeat.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from ddbench.core.distilled import DistilledSet
from tests.distributed import ranks, worker

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")

RUN = ["run", "--method", "var", "--dataset", "digits", "--ipc", "2", "--evaluator", "hard_label",
       "--students", "convnet3", "--seeds", "0,1", "--set", "epochs=2", "--device", "cpu"]


def _rows(database: Path) -> list[tuple]:
    """What a row says about the evaluation (not its timing)."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT student, seed, value, metrics, recipe, details, distilled_hash FROM results "
                                  "ORDER BY seed").fetchall()
    return [(*row[:5], json.loads(row[5])["epoch_losses"], json.loads(row[5])["val_top1_by_epoch"], row[6])
            for row in rows]


def _assert_close_states(single: dict, parallel: dict, atol: float) -> None:
    assert single.keys() == parallel.keys()
    for name in single:
        torch.testing.assert_close(parallel[name], single[name], atol=atol, rtol=1e-4, msg=name)


def test_torchrun_run_gives_the_single_process_set_and_rows(tmp_path, cli):
    single = cli(*RUN, "--out", str(tmp_path / "single-set"), "--results", str(tmp_path / "single.sqlite"))
    assert single.exit_code == 0, single.output

    launched = ranks.torchrun(["-m", "ddbench", *RUN, "--out", str(tmp_path / "set"),
                               "--results", str(tmp_path / "results.sqlite")],
                              env={"DDBENCH_HOME": str(tmp_path / "home")})
    assert launched.returncode == 0, launched.stderr[-3000:]

    expected = DistilledSet.open(tmp_path / "single-set")
    sharded = DistilledSet.open(tmp_path / "set")  # verifies every image against the manifest
    assert sharded.content_hash == expected.content_hash
    assert sharded.manifest["files"] == expected.manifest["files"] and sharded.manifest["complete"]
    assert sorted(p.name for p in (tmp_path / "set" / "images").iterdir()) == [str(i) for i in range(10)]

    rows = _rows(tmp_path / "results.sqlite")
    assert len(rows) == 2  # one per seed, written once (by rank 0)
    assert rows == _rows(tmp_path / "single.sqlite")  # jobs mode: each job ran exactly as in one process
    assert launched.stdout.count("results of this run") == 1  # printed by rank 0 only


def test_ddp_training_matches_one_process_and_a_failing_rank_stops_both(tmp_path):
    worker.run("train,fit", tmp_path / "single")

    failed = ranks.launch(["-m", "tests.distributed.worker", "train-fail", str(tmp_path / "ddp")], timeout=240)
    assert failed.returncodes[1] == 2 and "[rank 1] injected fault in rank 1's training step" in failed.outputs[1]
    assert failed.returncodes[0] not in (0, -9), failed.outputs[0]  # it stopped by itself, not by our timeout
    assert "rank 1 failed: injected fault" in failed.outputs[0] and "Traceback" not in failed.outputs[0]
    saved = torch.load(tmp_path / "ddp" / "train" / "state.pt", weights_only=True)
    # written by rank 0 after the first epoch (3 steps: 20 images in batches of 7), before the fault
    assert saved["step"] == 3 and len(saved["stateful"]["history"]["epoch_losses"]) == 1

    resumed = ranks.launch(["-m", "tests.distributed.worker", "train,fit", str(tmp_path / "ddp")], timeout=240)
    assert resumed.returncodes == [0, 0], resumed.outputs
    assert not (tmp_path / "ddp" / "train" / "state.pt").exists()

    one = torch.load(tmp_path / "single" / "train" / "result.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "train" / "result.pt", weights_only=True)
    _assert_close_states(one["state"], two["state"], atol=1e-4)  # batch norm statistics included
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["val"] == one["val"]

    one = torch.load(tmp_path / "single" / "fit" / "result.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "fit" / "result.pt", weights_only=True)
    _assert_close_states(one["state"], two["state"], atol=1e-5)
    _assert_close_states(one["ema"], two["ema"], atol=1e-5)
    torch.testing.assert_close(two["losses"], one["losses"], atol=1e-6, rtol=1e-5)
    assert two["metrics"] == pytest.approx(one["metrics"], rel=1e-5)


def test_a_rank_killed_with_sigkill_is_noticed_by_its_heartbeat(tmp_path):
    finished = ranks.launch(["-m", "tests.distributed.worker", "hang-then-die", str(tmp_path)],
                            env={"DDBENCH_DIST_HEARTBEAT_TIMEOUT": "2"}, timeout=120)
    assert finished.returncodes[1] == -9
    assert finished.returncodes[0] not in (0, -9), finished.outputs[0]
    assert "rank 1 stopped responding" in finished.outputs[0]
