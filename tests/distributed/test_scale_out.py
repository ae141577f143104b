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

    # each rank did its share: class i and job k to rank i % 2, k % 2 (not rank 0 doing it all)
    assert sharded.manifest["written_by"] == {str(i): i % 2 for i in range(10)}
    assert expected.manifest["written_by"] == {str(i): 0 for i in range(10)}
    assert _processes(tmp_path / "results.sqlite") == [(0, {"rank": 0, "world_size": 2}), (1, {"rank": 1, "world_size": 2})]
    assert _processes(tmp_path / "single.sqlite") == [(0, {"rank": 0, "world_size": 1}), (1, {"rank": 0, "world_size": 1})]


def _processes(database: Path) -> list[tuple[int, dict]]:
    """(seed, the process that ran the job) of every row."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT seed, details FROM results ORDER BY seed").fetchall()
    return [(seed, json.loads(details)["process"]) for seed, details in rows]


def test_torchrun_dist_mode_ddp_from_the_command_line_trains_each_job_on_both_ranks(tmp_path, cli):
    """`--dist-mode ddp`: every job on both ranks, a global batch of the single-process size, so
    the rows match one process within float tolerance (batch norm statistics of the global batch)."""
    args = [*RUN, "--set", "hard_label.batch_size=8"]  # 20 images: 3 steps per epoch, shares 4 + 4
    single = cli(*args, "--out", str(tmp_path / "single-set"), "--results", str(tmp_path / "single.sqlite"))
    assert single.exit_code == 0, single.output
    launched = ranks.torchrun(["-m", "ddbench", *args, "--dist-mode", "ddp", "--out", str(tmp_path / "set"),
                               "--results", str(tmp_path / "results.sqlite")], env={"DDBENCH_HOME": str(tmp_path / "home")})
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = _rows(tmp_path / "single.sqlite"), _rows(tmp_path / "results.sqlite")
    assert len(two) == 2
    for single_row, ddp_row in zip(one, two):
        assert ddp_row[:2] == single_row[:2]
        assert ddp_row[5] == pytest.approx(single_row[5], rel=1e-4)  # epoch losses
        assert ddp_row[6] == pytest.approx(single_row[6], abs=0.5)  # val top-1 per epoch, %
    # both jobs recorded by rank 0, each trained by the two ranks together
    assert _processes(tmp_path / "results.sqlite") == [(0, {"rank": 0, "world_size": 2}), (1, {"rank": 0, "world_size": 2})]
    assert launched.stdout.count("results of this run") == 1


MINIMAX = ["minimax", "finetune", "--dataset", "digits", "--epochs", "2", "--batch-size", "128", "--device", "cpu"]


def test_minimax_finetune_under_torchrun_gives_the_single_process_weights(tmp_path, cli):
    """Every rank computes the whole global batch (Minimax's terms need all of a class's
    examples), so two processes end exactly where one ends."""
    single = cli(*MINIMAX, "--out", str(tmp_path / "single"))
    assert single.exit_code == 0, single.output
    launched = ranks.torchrun(["-m", "ddbench", *MINIMAX, "--out", str(tmp_path / "ddp")], env={"DDBENCH_HOME": str(tmp_path / "home")})
    assert launched.returncode == 0, launched.stderr[-3000:]
    one = torch.load(tmp_path / "single" / "minimax_ema.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "minimax_ema.pt", weights_only=True)
    _assert_close_states(one, two, atol=1e-6)
    one = torch.load(tmp_path / "single" / "digits_minimax.pt", weights_only=True)  # {base_sha256, tensors}
    two = torch.load(tmp_path / "ddp" / "digits_minimax.pt", weights_only=True)
    assert one["base_sha256"] == two["base_sha256"]
    _assert_close_states(one["tensors"], two["tensors"], atol=1e-6)


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
