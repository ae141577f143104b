import json

from ddbench.core.leaderboard import build_tables, to_csv, to_json, to_markdown
from ddbench.core.results import ResultRow, ResultsStore


def make_row(method, student, seed, value, teacher=None, run="r1"):
    return ResultRow(
        run_id=f"{run}-{method}", method=method, dataset="digits", ipc=10, evaluator="rded", student=student,
        seed=seed, metric="top1", value=value, metrics={"top1": value}, method_config={"k": 1},
        evaluator_config={"epochs": 3}, evaluator_config_hash="abc", distilled_path="/x", distilled_hash="h",
        wall_time_s=1.0, teacher=teacher,
    )


def test_rows_round_trip_with_their_record(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add(make_row("random", "resnet18", 0, 50.0, teacher="resnet18"))
        (row,) = list(store.rows())
        assert row["metrics"] == {"top1": 50.0} and row["evaluator_config"] == {"epochs": 3}
        assert row["versions"]["ddbench"] and row["created_at"]
        assert store.has("r1-random", "rded", "abc", "resnet18", "resnet18", 0)
        assert not store.has("r1-random", "rded", "abc", "resnet18", "resnet18", 1)
        store.add(make_row("random", "resnet18", 0, 60.0, teacher="resnet18"))  # a rerun replaces its row
        assert [r["value"] for r in store.rows()] == [60.0]
    assert (tmp_path / "r.sqlite").exists()


def test_leaderboard_mean_std_n_and_exports(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for seed, value in enumerate([40.0, 44.0, 48.0]):
            store.add(make_row("hieramp", "resnet18", seed, value))
        store.add(make_row("random", "resnet18", 0, 30.0))
        store.add(make_row("random", "mobilenet_v2", 0, 20.0))
        (table,) = build_tables(store)
    assert table.rows == ["hieramp", "random"] and table.columns == ["mobilenet_v2", "resnet18"]
    cell = table.cells[("hieramp", "resnet18")]
    assert (cell.mean, round(cell.std, 6), cell.n) == (44.0, 4.0, 3)
    assert "44.00 ± 4.00 (n=3)" in to_markdown([table])
    csv_text = to_csv([table])
    assert csv_text.splitlines()[0].startswith("dataset,ipc,evaluator") and "hieramp,resnet18,44.0,4.0,3" in csv_text
    records = json.loads(to_json([table]))
    assert {r["method"] for r in records} == {"hieramp", "random"}


def test_grid_puts_teachers_against_students(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for teacher in ("resnet18", "mobilenet_v2"):
            for student in ("resnet18", "efficientnet_b0"):
                store.add(make_row("hieramp", student, 0, 10.0, teacher=teacher))
        (table,) = build_tables(store, grid=True)
    assert table.row_label == "teacher" and table.rows == ["mobilenet_v2", "resnet18"]
    assert table.columns == ["efficientnet_b0", "resnet18"] and "method hieramp" in table.title


def test_cli_table_shows_teacher_names_literally(tmp_path, cli):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add(make_row("random", "resnet18", 0, 50.0, teacher="resnet18"))
    result = cli("leaderboard", "--results", str(tmp_path / "r.sqlite"))
    assert result.exit_code == 0 and "random [teacher resnet18]" in result.output
