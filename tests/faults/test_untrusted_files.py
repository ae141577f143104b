"""Files that may come from someone else never run code when ddbench opens them: checkpoints
load with weights_only=True, CIFAR's pickles through an unpickler that builds only arrays, and
results hold only strict JSON and finite numbers."""

from __future__ import annotations

import os
import pickle
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from ddbench.core.errors import CheckpointError, DataError, ResultsError, StorageError, TrainingDivergedError
from ddbench.core.registry import create_dataset
from ddbench.core.results import ResultsStore
from ddbench.generators.var.loading import read_state_dict
from ddbench.models.checkpoint import read_checkpoint
from ddbench.training import ResumePoint, fit, load_checkpoint
from tests.faults.db_writer import row

SOURCE = Path(__file__).resolve().parents[2] / "ddbench"


class PlantedCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_every_torch_load_is_weights_only_and_no_module_unpickles_freely():
    """A static check over ddbench's source, so a new loader cannot slip back to full unpickling."""
    offenders = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path}: {match.group(0)}")
        for match in re.finditer(r"\bpickle\.loads?\(|allow_pickle=True|\bdill\b|\bjoblib\.load", text):
            offenders.append(f"{path}: {match.group(0)}")
    assert offenders == []


@pytest.mark.parametrize("loader", ["resume state", "model checkpoint", "generator weights"])
def test_a_planted_pickle_is_refused_without_running_it(tmp_path, loader):
    marker, planted = tmp_path / "code-ran", tmp_path / "planted.pt"
    torch.save({"format": 2, "identity": None, "state_dict": {"w": PlantedCode(marker)}}, planted)
    load = {"resume state": lambda: load_checkpoint(ResumePoint(planted)),
            "model checkpoint": lambda: read_checkpoint(planted),
            "generator weights": lambda: read_state_dict(planted)}[loader]
    with pytest.raises(CheckpointError, match="loading them could run code, so it was not loaded") as raised:
        load()
    assert str(planted) in str(raised.value) and "weights_only=False" not in str(raised.value)
    assert not marker.exists()


def _cifar10_folder(root: Path, transform=lambda raw: raw) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"x", b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": [0, 1, 2, 3], b"filenames": [b"a.png"] * 4}
        (folder / name).write_bytes(transform(pickle.dumps(batch, protocol=2)))
    return folder


def test_cifar_pickles_in_the_official_numpy_1_spelling_load(tmp_path):
    """The official files were written by Python 2 and numpy 1: `numpy.core.multiarray`."""
    _cifar10_folder(tmp_path, lambda raw: raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    dataset = create_dataset("cifar10", tmp_path)
    assert len(dataset.split("train")) == 20 and dataset.split("val")[3][1] == 3


def test_a_planted_cifar_pickle_is_a_data_error_and_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    folder = _cifar10_folder(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": PlantedCode(marker), b"labels": []}))
    dataset = create_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match=r"test_batch: it references (posix|os|nt)\.system, which the official CIFAR"):
        dataset.split("val")
    assert not marker.exists()


# ----- results: strict JSON, finite numbers, a full database -----
def test_non_finite_metrics_or_details_are_refused_and_stored_json_is_strict(tmp_path):
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.add(row(0, 0))
        bad_value = row(1, 0)
        bad_value.value = float("nan")
        with pytest.raises(ResultsError, match="not finite"):
            store.add(bad_value)
        bad_details = row(2, 0)
        bad_details.details = {"epoch_losses": [2.3, float("inf")]}
        with pytest.raises(ResultsError, match="details holds a NaN or infinite number"):
            store.add(bad_details)
    connection = sqlite3.connect(tmp_path / "results.sqlite")
    assert connection.execute("SELECT seed FROM results").fetchall() == [(0,)]
    assert connection.execute("SELECT json_valid(details) AND json_valid(metrics) FROM results").fetchone() == (1,)


def test_a_full_results_database_is_a_storage_error_and_keeps_its_rows(tmp_path):
    """SQLite's own page limit stands in for a full disk (it raises SQLITE_FULL the same way)."""
    with ResultsStore(tmp_path / "results.sqlite") as store:
        pages = store._connection.execute("PRAGMA page_count").fetchone()[0]
        store._connection.execute(f"PRAGMA max_page_count={pages + 1}")
        with pytest.raises(StorageError, match="the disk is full"):
            for seed in range(200):
                big = row(seed, 0)
                big.details = {"padding": "x" * 2000}
                store.add(big)
        stored = store._connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert 0 <= stored < 200
    reopened = sqlite3.connect(tmp_path / "results.sqlite")
    assert reopened.execute("PRAGMA integrity_check").fetchone() == ("ok",)  # committed rows only, none torn
    assert reopened.execute("SELECT COUNT(*) FROM results").fetchone() == (stored,)


# ----- the generator step loop stops on divergence, before saving the diverged state -----
def test_fit_stops_at_the_first_non_finite_loss_and_keeps_the_last_good_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.ones(4, 3)

    def step_loss(step):
        loss = model(inputs).pow(2).mean() * (float("nan") if step == 4 else 1.0)
        return loss, {"loss": loss.detach()}

    resume = ResumePoint(tmp_path / "last.ckpt", every=2)
    with pytest.raises(TrainingDivergedError, match=r"training: the loss became nan at step 5 of 10 .*lower the learning rate"):
        fit(model, optimizer, step_loss, total_steps=10, resume=resume)
    assert load_checkpoint(resume)["step"] == 4  # the state before the divergence, never the diverged one
