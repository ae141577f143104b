"""`ddbench leaderboard --compare GRID`: the published numbers of a paper's table beside ours, per
cell, with the difference in combined stds, n on both sides and what differs in the protocol."""

import json
import math
import statistics

import pytest
import torch
from torch import nn

from ddbench.core.interfaces import Teacher
from ddbench.core.pipeline import RunRequest, run
from ddbench.datasets.imagenet import ImageWoof
from tests.datasets.tiny_trees import make_wnid_tree


def test_a_store_of_digits_rows_compares_as_cells_without_ours(cli):
    made = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--students", "convnet3",
               "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu")
    assert made.exit_code == 0, made.output
    result = cli("leaderboard", "--compare", "hieramp-table1")
    assert result.exit_code == 0, result.output
    assert "0 of 107 published cells have results of ours" in result.output
    assert "no results of ours" in result.output and "44.30 ± 0.60 (n=3)" in result.output  # HIERAMP cifar10 ipc10 r18
    records = json.loads(cli("leaderboard", "--compare", "hieramp-table1", "--format", "json").output)
    assert len(records) == 107 and all(record["ours_n"] == 0 for record in records)
    assert sum(record["note"] != "" for record in records) == 1  # the paper's repeated CIFAR-10 cell


def tiny_teacher() -> Teacher:
    """Average colour -> class: enough for soft labels on the tiny colour tree."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    return Teacher(model, "resnet18", "woof", 10, accuracy=50.0, checkpoint_sha256="ab" * 32, source="test")


@pytest.fixture
def woof_store(tmp_path):
    """rded distilled a tiny woof tree (IPC 1); students evaluated under the rded protocol (2 seeds,
    top1_best over the last validations) and under hard_label (no top1_best, no teacher)."""
    root = make_wnid_tree(tmp_path / "woof", ImageWoof.wnids, train=2, val=2, size=(20, 16))
    results = tmp_path / "woof.sqlite"
    request = RunRequest(method="rded", dataset="woof", ipc=1, data_root=str(root), resolution=16, seeds=(0, 1),
                         evaluators=("rded", "hard_label"), students=("resnet18",), teachers=("resnet18",),
                         overrides={"rded.epochs": "4", "rded.validate_every": "1", "rded.validate_last_fraction": "0.5",
                                    "hard_label.epochs": "1"},
                         device="cpu", results_path=results, out_dir=tmp_path / "run")
    run(request, lambda dataset, arch, device, progress: tiny_teacher())
    return results


def test_woof_rows_sit_beside_the_published_rded_cell(cli, woof_store):
    records = json.loads(cli("leaderboard", "--compare", "hieramp-table1", "--dataset", "woof", "--results",
                             str(woof_store), "--format", "json").output)
    assert len({(r["method"], r["ipc"], r["student"]) for r in records}) == 26  # woof's published cells
    assert len(records) == 27  # the RDED IPC 1 ResNet-18 cell has ours twice: rded and hard_label rows
    ours = [r for r in records if r["ours_n"]]
    assert {(r["method"], r["ipc"], r["student"]) for r in ours} == {("RDED", 1, "resnet18")}
    by_evaluator = {r["ours_evaluator"].split()[0]: r for r in ours}
    assert set(by_evaluator) == {"rded", "hard_label"}

    rded = by_evaluator["rded"]
    assert rded["published_mean"] == 20.8 and rded["published_std"] == 1.2 and rded["published_n"] == 3
    assert rded["ours_metric"] == "top1_best" and rded["ours_n"] == 2
    expected_z = (rded["ours_mean"] - 20.8) / math.hypot(1.2, rded["ours_std"])
    assert rded["z"] == pytest.approx(expected_z, abs=2e-3)
    assert rded["ours_top1_final_mean"] is not None
    assert any(d.startswith("evaluator settings epochs=4") for d in rded["differences"])
    assert "n 2 (paper: 3)" in rded["differences"]
    assert "resolution 16 px (paper: not stated; the dataset's default is 224 px)" in rded["differences"]
    assert not any(d.startswith("evaluator rded") or "no teacher" in d for d in rded["differences"])

    hard = by_evaluator["hard_label"]
    assert hard["ours_metric"] == "top1_final"
    assert "evaluator hard_label (paper: rded)" in hard["differences"]
    assert "no teacher (paper: resnet18)" in hard["differences"]
    assert "top1_best missing (one validation per run): compared top1_final" in hard["differences"]

    table = cli("leaderboard", "--compare", "hieramp-table1", "--dataset", "woof", "--ipc", "1", "--results", str(woof_store))
    assert table.exit_code == 0, table.output
    assert "1 of 8 published cells have results of ours" in table.output
    assert "20.80 ± 1.20 (n=3)" in table.output and "no results of ours" in table.output


def test_mean_and_std_are_those_of_the_stored_top1_best(cli, woof_store):
    import sqlite3

    with sqlite3.connect(woof_store) as connection:
        best = [json.loads(m)["top1_best"] for (m,) in connection.execute(
            "SELECT metrics FROM results WHERE evaluator='rded'")]
    records = json.loads(cli("leaderboard", "--compare", "hieramp-table1", "--dataset", "woof", "--ipc", "1",
                             "--results", str(woof_store), "--format", "json").output)
    rded = next(r for r in records if r.get("ours_evaluator", "").startswith("rded"))
    assert rded["ours_mean"] == pytest.approx(statistics.fmean(best), abs=1e-4)
    assert rded["ours_std"] == pytest.approx(statistics.stdev(best), abs=1e-4)
