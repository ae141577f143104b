"""`ddbench report` and `ddbench analyze tokens` end to end on tiny runs: the page renders in headless
Chromium with every image loaded, and every leaderboard number on it equals the results store's."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ddbench.analysis.commands import analyze_group, report_command
from ddbench.core.errors import ConfigError
from ddbench.core.results import ResultRow, ResultsStore
from ddbench.generators.var.shipped import SHIPPED_VQVAE, shipped_weights_dir
from ddbench.methods.hieramp.saliency import save_saliency_maps
from tests.analysis.browser import elements, rendered_dom
from tests.evaluators.synthetic import ColourSquares, write_distilled, write_shifted

DIGITS_PYRAMID = "1,2,3,4,6,8"


def add_rows(store: ResultsStore, run, evaluator: str, metric: str, values: dict[tuple[str, int], float],
             teacher: str | None = None) -> None:
    identity = run.identity
    for (student, seed), value in values.items():
        store.add(ResultRow(
            run_id=identity.run_id, configuration=identity.configuration, label=identity.label, method=run.method,
            method_config=dict(identity.config), weights=dict(identity.weights), dataset="colour_squares",
            dataset_fingerprint="colours", resolution=8, ipc=run.ipc, distill_seed=identity.seed, evaluator=evaluator,
            evaluator_protocol=1, evaluator_config={"epochs": 3}, evaluator_config_hash=f"{evaluator}-h",
            evaluator_label=evaluator, student=student, seed=seed, metric=metric, value=value, metrics={metric: value},
            distilled_path=str(run.root), distilled_hash=run.content_hash, wall_time_s=1.0, teacher=teacher,
            teacher_key="teacher-sha" if teacher else ""))


@pytest.fixture
def two_runs(tmp_path):
    """Two runs with saliency maps, token diagnostics and results rows of two evaluators."""
    dataset = ColourSquares()
    first = write_distilled(dataset, tmp_path / "runs" / "first", ipc=4)
    shifted = write_shifted(dataset, tmp_path / "runs" / "shifted", 40)
    generator = torch.Generator().manual_seed(0)
    for name in dataset.class_names:
        image = Image.open(shifted.root / "images" / name / "0.png")
        maps = {scale: torch.rand(side * side, generator=generator) for scale, side in enumerate((1, 2, 3))}
        save_saliency_maps(shifted.root / "saliency" / name, "0", image, maps, (1, 2, 3))
    results = tmp_path / "results.sqlite"
    with ResultsStore(results) as store:
        for run, base in ((first, 60.0), (shifted, 40.0)):
            add_rows(store, run, "hard_label", "top1_final",
                     {(student, seed): base + 3.1 * seed + (5 if student == "convnet3" else 0) + 0.123456
                      for student in ("resnet18", "convnet3") for seed in (0, 1, 2)})
            add_rows(store, run, "teacher_frechet", "frechet_teacher_distance", {("-", 0): base / 7}, teacher="convnet3")
    vqvae = str(shipped_weights_dir() / SHIPPED_VQVAE)
    analysed = CliRunner().invoke(analyze_group, ["tokens", str(first.root), "--vs", str(shifted.root), "--class", "c1",
                                                  "--vqvae", vqvae, "--patch-nums", DIGITS_PYRAMID, "--device", "cpu"],
                                  catch_exceptions=False)
    assert analysed.exit_code == 0, analysed.output
    return first, shifted, results


def expected_cells(results: Path) -> dict[tuple[str, str, str], tuple[float, float, int]]:
    """(evaluator, row label, student) -> (mean, sample std, n), computed here from the raw rows."""
    grouped: dict[tuple[str, str, str], list[float]] = {}
    with ResultsStore(results) as store:
        for row in store.rows():
            label = row["label"] + (f" [teacher {row['teacher']}]" if row["teacher"] else "")
            grouped.setdefault((row["evaluator"], label, row["student"]), []).append(row["value"])
    return {key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for key, v in grouped.items()}


def test_token_analysis_writes_json_and_figures(two_runs):
    first, shifted, _ = two_runs
    folder = first.root / "analysis" / f"tokens-vs-{shifted.root.name}"
    record = json.loads((folder / "tokens.json").read_text())
    assert [run["label"] for run in record["runs"]] == ["first", "shifted"]
    assert record["vqvae"]["vocab_size"] == 256 and record["vqvae"]["patch_nums"] == [1, 2, 3, 4, 6, 8]
    assert record["figure3"]["classes"] == 4 and record["figure4"]["class"] == "c1"
    for outcome_row in record["figure3"]["per_scale"]["entropy"]:
        assert outcome_row["increased"] + outcome_row["decreased"] + outcome_row["unchanged"] == 4
    for name in record["figures"].values():
        assert Image.open(folder / name).size[0] > 100
    maps = record["figure4"]["maps"]["first"]
    assert [len(m) for m in maps] == [1, 2, 3, 4, 6, 8] and all(1 <= v <= 4 for m in maps for r in m for v in r)


def test_tokens_of_an_unknown_generator_need_a_vqvae(two_runs):
    first, _, _ = two_runs
    with pytest.raises(Exception, match="--vqvae PATH"):
        CliRunner().invoke(analyze_group, ["tokens", str(first.root), "--device", "cpu"], catch_exceptions=False)


def test_report_renders_in_chromium_with_every_image_and_the_stores_numbers(two_runs, tmp_path):
    first, shifted, results = two_runs
    out = tmp_path / "report"
    written = CliRunner().invoke(report_command, [str(first.root), str(shifted.root), "--results", str(results),
                                                  "--out", str(out)], catch_exceptions=False)
    assert written.exit_code == 0, written.output
    page = out / "index.html"
    static_images = elements(page.read_text(), "img")
    assert len(static_images) >= 2 + 2 + 1 + 3  # 2 bar charts, 2 grids, 1 saliency panel, 3 token figures

    dom = rendered_dom(page)
    (body,) = elements(dom, "body")
    assert body[1]["data-images"] == str(len(static_images)) and body[1]["data-broken"] == "0"
    assert all(attributes.get("data-loaded") == "1" for _, attributes, _ in elements(dom, "img"))

    expected = expected_cells(results)
    cells = [(attributes, text) for _, attributes, text in elements(dom, "td") if attributes.get("class") == "cell"]
    assert len(cells) == len(expected) == 6  # 2 methods x 2 students (hard_label) + 2 methods (teacher_frechet)
    for attributes, text in cells:
        evaluator = "teacher_frechet" if "teacher_frechet" in attributes["data-table"] else "hard_label"
        mean, std, n = expected[(evaluator, attributes["data-row"], attributes["data-column"])]
        assert float(attributes["data-mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(attributes["data-std"]) == pytest.approx(std, abs=1e-12)
        assert int(attributes["data-n"]) == n
        assert text.strip() == f"{mean:.2f} ± {std:.2f} (n={n})"

    text = page.read_text()  # how each row is identified
    for run in (first, shifted):
        assert f"configuration {run.identity.configuration[:12]}" in text
    assert text.count("hard_label protocol v1 · 3 eval seed(s) [0, 1, 2] · 1 distill seed(s) [0]") == 2

    missing = next(out.glob("img/*grid.png"))
    missing.unlink()
    (body,) = elements(rendered_dom(page), "body")
    assert body[1]["data-broken"] == "1"  # the check sees a missing picture


def test_report_by_dataset_lists_runs_missing_on_disk(two_runs, tmp_path):
    first, shifted, results = two_runs
    import shutil

    shutil.rmtree(shifted.root)
    out = tmp_path / "by-dataset"
    written = CliRunner().invoke(report_command, ["--dataset", "colour_squares", "--results", str(results),
                                                  "--out", str(out)], catch_exceptions=False)
    assert written.exit_code == 0, written.output
    text = (out / "index.html").read_text()
    assert "missing on disk" in text and str(shifted.root) in text
    assert text.count('class="run"') == 1 and text.count('class="cell"') == 6  # rows still count


def test_report_needs_something_to_show(tmp_path):
    with pytest.raises(ConfigError, match="nothing to report"):
        CliRunner().invoke(report_command, ["--out", str(tmp_path / "empty")], catch_exceptions=False)
