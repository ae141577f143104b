"""`fit` resumes exactly: a run killed with SIGKILL and rerun ends bit for bit where an
uninterrupted run ends (weights, EMA, per-step losses), and its checkpoints load with
weights_only=True."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddbench.core.errors import CheckpointError
from ddbench.training import ResumePoint, load_checkpoint
from tests.training.tiny_fit import TOTAL_STEPS, run

REPO = Path(__file__).resolve().parents[2]


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_mid_step_resumes_to_the_uninterrupted_result(tmp_path):
    straight, model, ema = run(tmp_path / "straight")
    assert straight.finished and straight.resumed_from == 0 and straight.epochs_ended == [0, 1]

    killed = subprocess.run([sys.executable, "-m", "tests.training.tiny_fit", str(tmp_path / "killed"), "7"], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(tmp_path / "killed" / "tiny_last.ckpt", weights_only=True)  # plain tensors and primitives
    assert saved["step"] == 6

    resumed, resumed_model, resumed_ema = run(tmp_path / "killed")
    assert resumed.resumed_from == 6 and resumed.finished and resumed.epochs_ended == [1]
    assert _same_state(model.state_dict(), resumed_model.state_dict())
    assert _same_state(ema.state_dict(), resumed_ema.state_dict())
    assert torch.equal(straight.losses, resumed.losses) and len(resumed.losses) == TOTAL_STEPS
    assert resumed.metrics == straight.metrics


def test_stop_after_then_resume_in_process_and_a_finished_run_is_a_no_op(tmp_path):
    straight, model, _ = run(tmp_path / "a")
    first, _, _ = run(tmp_path / "b", stop_after=4)
    assert not first.finished and first.steps == 4 and len(first.losses) == 4
    second, resumed_model, _ = run(tmp_path / "b")
    assert second.resumed_from == 4 and _same_state(model.state_dict(), resumed_model.state_dict())
    again, _, _ = run(tmp_path / "b")
    assert again.finished and again.resumed_from == TOTAL_STEPS and torch.equal(again.losses, straight.losses)


def test_checkpoint_of_another_configuration_or_version_is_refused(tmp_path):
    run(tmp_path, stop_after=3)
    path = tmp_path / "tiny_last.ckpt"
    with pytest.raises(CheckpointError, match="another configuration"):
        load_checkpoint(ResumePoint(path, 3, {"recipe": "other"}))
    assert load_checkpoint(ResumePoint(path, 3, {"recipe": "tiny", "steps": TOTAL_STEPS}))["step"] == 3
    torch.save({"model": {}, "step": 3}, path)
    with pytest.raises(CheckpointError, match="another ddbench version"):
        load_checkpoint(ResumePoint(path, 3))
    path.write_bytes(b"torn")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(ResumePoint(path, 3))
