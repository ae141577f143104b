import json
import sqlite3

from ddbench.core.leaderboard import build_tables, to_csv, to_json, to_markdown
from ddbench.core.identity import EvalIdentity
from ddbench.core.results import ResultRow, ResultsStore


def make_row(method, student, seed, value, teacher=None, configuration=None, label=None, distill_seed=0,
             protocol=1, recipe=None):
    configuration = configuration or f"cfg-{method}"
    return ResultRow(
        run_id=f"digits/{method}-{configuration}-seed{distill_seed}", configuration=configuration, label=label or method,
        method=method, method_config={"k": 1}, weights={}, dataset="digits", dataset_fingerprint="fp", resolution=16,
        ipc=10, distill_seed=distill_seed, evaluator="rded", evaluator_protocol=protocol, evaluator_config={"epochs": 3},
        evaluator_config_hash="abc", evaluator_label="rded", student=student, seed=seed, metric="top1", value=value,
        metrics={"top1": value}, distilled_path="/x", distilled_hash="h", wall_time_s=1.0, teacher=teacher,
        teacher_key=f"sha-{teacher}" if teacher else "", recipe=recipe or {"lr": 0.001, "batch_size": 50},
    )


def identity_of(row: ResultRow) -> EvalIdentity:
    """The identity a hand-built row's key was derived from (see ResultRow.__post_init__)."""
    return EvalIdentity(run_key=row.run_key, evaluator=row.evaluator, code={"version": row.evaluator_protocol},
                        config={"hash": row.evaluator_config_hash}, teacher_key=row.teacher_key, student=row.student,
                        seed=row.seed)


def test_rows_round_trip_with_their_record(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add(make_row("random", "resnet18", 0, 50.0, teacher="resnet18"))
        (row,) = list(store.rows())
        assert row["metrics"] == {"top1": 50.0} and row["evaluator_config"] == {"epochs": 3}
        assert row["recipe"] == {"lr": 0.001, "batch_size": 50} and row["evaluator_protocol"] == 1
        assert row["versions"]["ddbench"] and row["created_at"]
        stored = make_row("random", "resnet18", 0, 50.0, teacher="resnet18")
        assert store.status(identity_of(stored)) == "done"
        assert store.status(identity_of(make_row("random", "resnet18", 1, 50.0, teacher="resnet18"))) is None
        other_protocol = make_row("random", "resnet18", 0, 50.0, teacher="resnet18", protocol=2)
        assert store.status(identity_of(other_protocol)) is None  # another protocol version
        store.add(make_row("random", "resnet18", 0, 60.0, teacher="resnet18"))  # a rerun replaces its row
        assert [r["value"] for r in store.rows()] == [60.0]


def test_a_rerun_without_a_teacher_replaces_its_row_instead_of_adding_one(tmp_path):
    """SQLite treats NULLs as distinct in a UNIQUE key: teacher-less rows must not use one."""
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for value in (10.0, 20.0, 30.0):
            store.add(make_row("random", "resnet18", 0, value))
        assert [r["value"] for r in store.rows()] == [30.0]


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
    assert csv_text.splitlines()[0].startswith("dataset,dataset_fingerprint,resolution,ipc,evaluator")
    records = json.loads(to_json([table]))
    assert {r["label"] for r in records} == {"hieramp", "random"}
    hieramp = next(r for r in records if r["label"] == "hieramp")
    assert (hieramp["n"], hieramp["eval_seeds"], hieramp["distill_seeds"]) == (3, 3, 1)
    assert hieramp["recipe"] == {"lr": 0.001, "batch_size": 50} and hieramp["configuration"] == "cfg-hieramp"


def test_two_configurations_of_one_method_are_two_rows_even_with_equal_labels(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add(make_row("hieramp", "resnet18", 0, 40.0, configuration="aaaaaa11", label="hieramp"))
        store.add(make_row("hieramp", "resnet18", 0, 50.0, configuration="bbbbbb22", label="hieramp beta=1"))
        store.add(make_row("hieramp", "resnet18", 0, 60.0, configuration="cccccc33", label="hieramp beta=1"))
        (table,) = build_tables(store)
    assert table.rows == ["hieramp", "hieramp beta=1 #bbbbbb", "hieramp beta=1 #cccccc"]
    assert all(cell.n == 1 for cell in table.cells.values())


def test_distill_seeds_of_one_configuration_pool_and_are_counted(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for distill_seed in (0, 1):
            for seed in (0, 1, 2):
                store.add(make_row("hieramp", "resnet18", seed, 40.0 + distill_seed + seed, distill_seed=distill_seed))
        (table,) = build_tables(store)
    (cell,) = table.cells.values()
    assert (cell.n, len(cell.eval_seeds), len(cell.distill_seeds)) == (6, 3, 2)
    assert "(n=6, 2 distill seeds)" in cell.render()
    (record,) = json.loads(to_json([table]))
    assert (record["n"], record["eval_seeds"], record["distill_seeds"]) == (6, 3, 2)


def test_a_protocol_version_bump_starts_a_new_table(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add(make_row("random", "resnet18", 0, 30.0, protocol=1))
        store.add(make_row("random", "resnet18", 0, 35.0, protocol=2))
        tables = build_tables(store)
    assert [(t.evaluator_protocol, t.cells[("random", "resnet18")].n) for t in tables] == [(1, 1), (2, 1)]
    assert "protocol v2" in tables[1].title


def test_grid_puts_teachers_against_students(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for teacher in ("resnet18", "mobilenet_v2"):
            for student in ("resnet18", "efficientnet_b0"):
                store.add(make_row("hieramp", student, 0, 10.0, teacher=teacher))
        (table,) = build_tables(store, grid=True)
    assert table.row_label == "teacher" and table.rows == ["mobilenet_v2", "resnet18"]
    assert table.columns == ["efficientnet_b0", "resnet18"] and "· hieramp" in table.title


def test_grid_tables_of_configurations_with_one_label_are_told_apart(tmp_path):
    """rded distilled with two teachers: two configurations labelled "rded", one grid table each."""
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add(make_row("rded", "resnet18", 0, 10.0, teacher="resnet18", configuration="aaaaaa11"))
        store.add(make_row("rded", "resnet18", 0, 20.0, teacher="mobilenet_v2", configuration="bbbbbb22"))
        store.add(make_row("hieramp", "resnet18", 0, 30.0, teacher="resnet18"))
        tables = build_tables(store, grid=True)
    assert sorted(table.method for table in tables) == ["hieramp", "rded #aaaaaa", "rded #bbbbbb"]
    assert len({table.title for table in tables}) == 3
    assert {r["label"] for r in json.loads(to_json(tables))} == {"hieramp", "rded #aaaaaa", "rded #bbbbbb"}


def test_cli_table_shows_teacher_names_literally(tmp_path, cli):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add(make_row("random", "resnet18", 0, 50.0, teacher="resnet18"))
    result = cli("leaderboard", "--results", str(tmp_path / "r.sqlite"))
    assert result.exit_code == 0 and "random [teacher resnet18]" in result.output


def test_a_database_from_an_older_ddbench_is_set_aside_not_mixed_in(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, method TEXT, value REAL)")
        old.execute("INSERT INTO results (method, value) VALUES ('random', 1.0)")
    with ResultsStore(path, readonly=True) as store:
        assert list(store.rows()) == []
    with ResultsStore(path) as store:
        store.add(make_row("random", "resnet18", 0, 50.0))
        assert [r["value"] for r in store.rows()] == [50.0]
    with sqlite3.connect(path) as kept:
        assert kept.execute("SELECT value FROM results_v1").fetchall() == [(1.0,)]


def test_leaderboard_reads_a_database_on_read_only_media(tmp_path, cli):
    folder = tmp_path / "ro"
    folder.mkdir()
    with ResultsStore(folder / "r.sqlite") as store:
        store.add(make_row("random", "resnet18", 0, 50.0))
    for extra in folder.glob("r.sqlite-*"):
        extra.unlink()
    folder.chmod(0o555)
    (folder / "r.sqlite").chmod(0o444)
    try:
        result = cli("leaderboard", "--results", str(folder / "r.sqlite"), "--format", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["mean"] == 50.0
    finally:
        folder.chmod(0o755)
