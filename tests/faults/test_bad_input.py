"""Bad input as a new user meets it: each gives one clear `error:` line (exit status 2) naming the
file or value and the fix, or, for the optional resume state, a warning and a finished run.

These run the real CLI in this process (click's runner) on the embedded digits dataset; the
fault suite's subprocess tests cover what needs a process of its own (signals, disks, races).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
import torch

from ddbench.core.registry import create_dataset
from ddbench.teachers.store import TeacherStore
from tests.faults.conftest import TINY_RUN

MANIFEST = {"format": "ddbench-distilled/2", "classes": [str(i) for i in range(10)], "files": {}, "method": "random",
            "config": {}, "dataset": "digits", "ipc": 1, "seed": 0, "complete": True}


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("content, expected", [
    (b"{\"format\": ", "is not valid JSON"),
    (b"\xff\xfe\x00{}", "is not UTF-8 text"),
    (b"[1, 2, 3]", "holds a JSON list, not an object"),
    (json.dumps({**MANIFEST, "ipc": "ten"}).encode(), '"ipc" must be a positive integer, not \'ten\''),
    (json.dumps({**MANIFEST, "classes": "0123"}).encode(), '"classes" must be a non-empty list'),
    (json.dumps({**MANIFEST, "files": {"images/../../etc/passwd": "0" * 64}}).encode(), "is not images/<one of its classes>"),
    (json.dumps({**MANIFEST, "config": [1]}).encode(), '"config" must be an object'),
], ids=["truncated", "not-utf8", "a-list", "ipc-ten", "classes-string", "path-escape", "config-list"])
def test_a_malformed_manifest_is_one_line_naming_it(cli, tmp_path, content, expected):
    folder = tmp_path / "set"
    (folder / "images" / "0").mkdir(parents=True)
    (folder / "manifest.json").write_bytes(content)
    line = one_error_line(cli("eval", str(folder), "--evaluator", "hard_label"))
    assert expected in line and str(folder / "manifest.json") in line


def test_a_malformed_manifest_in_the_run_folder_stops_a_run_before_it_distils(cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({**MANIFEST, "ipc": "ten"}))
    line = one_error_line(cli(*TINY_RUN, "--out", str(out)))
    assert '"ipc" must be a positive integer' in line
    assert not (out / "images").exists()


def _teacher_paths() -> tuple[Path, Path]:
    checkpoint = TeacherStore().cache_path(create_dataset("digits"), "resnet18")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return checkpoint, checkpoint.with_suffix(".json")


RDED_RUN = ("run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--evaluator", "rded",
            "--students", "convnet3", "--set", "epochs=1")


@pytest.mark.parametrize("record, expected", [
    (b"{\"arch\": \"resnet18\", ", "is not valid JSON"),
    (b"[\"resnet18\"]", "is not a ddbench teacher record"),
    (json.dumps({"sha256": "0" * 64, "accuracy": "high", "class_names": []}).encode(), "malformed accuracy"),
], ids=["truncated", "a-list", "bad-accuracy"])
def test_a_malformed_teacher_record_is_one_line_naming_it(cli, record, expected):
    checkpoint, record_path = _teacher_paths()
    checkpoint.write_bytes(b"weights")
    record_path.write_bytes(record)
    line = one_error_line(cli(*RDED_RUN))
    assert expected in line and str(record_path) in line and "to retrain the teacher" in line


def test_a_truncated_teacher_checkpoint_is_one_line_naming_it(cli):
    checkpoint, record_path = _teacher_paths()
    torch.save({"format": "ddbench-model/1", "state_dict": {"w": torch.zeros(1000)}}, checkpoint)
    import hashlib

    record_path.write_text(json.dumps({"sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(), "accuracy": 90.0,
                                       "class_names": [str(i) for i in range(10)]}))
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])  # cut short, as by a full disk or a killed copy
    line = one_error_line(cli(*RDED_RUN))
    assert str(checkpoint) in line and "does not match the checksum" in line


class PlantedCode:
    """A pickle that runs `touch <marker>` when loaded with full unpickling."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_corrupt_or_planted_resume_states_are_moved_aside_and_the_evaluation_starts_over(cli, isolated_home, tmp_path, reference):
    """The names are those the reference run used; one state is cut short, one is a pickle that
    would run code. Both are named in a warning, moved aside (so no rerun meets them again), and
    the evaluations finish."""
    names = sorted({name for kind, name in reference.sequence if name.endswith(".state.pt")})
    assert len(names) == 2
    state_dir = isolated_home / "cache" / "eval-state"
    state_dir.mkdir(parents=True)
    (state_dir / names[0]).write_bytes(b"PK\x03\x04 cut short")
    marker = tmp_path / "code-ran"
    torch.save({"format": 2, "epoch": 0, "model": PlantedCode(marker)}, state_dir / names[1])

    result = cli(*TINY_RUN)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all("moved it to" in w and "started this training from scratch" in w for w in warnings)
    assert any(str(state_dir / names[0]) in w for w in warnings) and any(str(state_dir / names[1]) in w for w in warnings)
    assert not marker.exists()  # weights_only: the planted code never ran
    assert sorted(p.name.split(".corrupt-")[0] for p in state_dir.iterdir()) == names  # kept aside, for inspection
    rows = sqlite3.connect(isolated_home / "results.sqlite").execute("SELECT seed FROM results ORDER BY seed").fetchall()
    assert rows == [(0,), (1,)]


def test_a_diverging_evaluation_stops_with_the_epoch_and_the_knob_and_stores_nothing(cli, isolated_home):
    """At lr 1e6 the loss goes from 2.4 to about 1e10 in epoch 2 and stays finite (it used to reach
    NaN only in epoch 8, and at 2 epochs a chance-level row was stored): an explosion stops the run
    as a NaN does."""
    line = one_error_line(cli(*TINY_RUN, "--set", "lr=1e6"))
    assert re.search(r"the loss became \d\.\d+e\+\d\d in epoch 2 of 2 \(step 2 of 2\), over 1e4 times its start "
                     r"\(2\.\d+\) \(lr 1e\+06\); the training diverged: lower the learning rate \(--set lr=", line), line
    assert sqlite3.connect(isolated_home / "results.sqlite").execute("SELECT COUNT(*) FROM results").fetchone() == (0,)
    assert not list((isolated_home / "cache" / "eval-state").glob("*"))  # no state that only leads to NaN


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_learning_rate_is_refused_before_any_work(cli, isolated_home, value):
    line = one_error_line(cli(*TINY_RUN, "--set", f"lr={value}"))
    assert f"config key 'lr': '{value}' is not a finite number" in line
    assert not (isolated_home / "runs").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_disk_error_from_anywhere_is_one_line_naming_the_file(cli, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/data/somewhere/file.bin")

    monkeypatch.setattr("ddbench.core.pipeline.run", refuse)
    line = one_error_line(cli(*TINY_RUN))
    assert "/data/somewhere/file.bin" in line and errno.errorcode[code] in line and "rerun the same command" in line
