"""The storage a result costs: images as stored and as canonical PNGs, labels, the teacher."""

import io

import numpy as np
from PIL import Image

from ddbench.core.distilled import DistilledSet
from ddbench.core.storage import row_storage, set_storage, teacher_bytes

CLASSES = ["a", "b"]


def make_set(root, size=(24, 20), fmt="JPEG"):
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for index in range(2):
            pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.{fmt.lower()}", format=fmt)
    return DistilledSet.open(root, class_names=CLASSES, dataset="toy")


def test_images_are_counted_as_stored_and_as_png_at_the_dataset_resolution(tmp_path):
    distilled = make_set(tmp_path / "set")
    stored = set_storage(distilled, resolution=16)
    files = sorted((tmp_path / "set").rglob("*.jpeg"))
    assert stored.images == 4 and stored.images_bytes == sum(path.stat().st_size for path in files)
    expected = 0
    for path in files:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((16, 16), Image.BICUBIC).save(buffer, format="PNG")
        expected += len(buffer.getvalue())
    assert stored.canonical_png_bytes == expected
    assert stored.labels_bytes == 0
    assert set_storage(distilled, resolution=24).canonical_png_bytes > expected  # more pixels, more bytes


def test_label_files_and_the_teacher_checkpoint_count_when_evaluation_needs_them(tmp_path):
    distilled = make_set(tmp_path / "set")
    (tmp_path / "set" / "soft_labels.pt").write_bytes(b"x" * 1000)
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"w" * 5000)
    stored = set_storage(distilled, resolution=16)
    assert stored.labels_bytes == 1000
    info = {"source": f"cache:{checkpoint}"}
    soft = row_storage(stored, info, needs_teacher=True)
    hard = row_storage(stored, None, needs_teacher=False)
    assert soft.evaluation_bytes == 5000 and hard.evaluation_bytes == 0
    assert soft.total_bytes == stored.canonical_png_bytes + 1000 + 5000
    assert soft.to_dict()["total_mb"] == round(soft.total_bytes / 2**20, 6)
    assert teacher_bytes({"source": f"checkpoint:{checkpoint} (class order minimax-woof)"}) == 5000
    assert teacher_bytes({"source": "test"}) == 0 and teacher_bytes({"source": f"cache:{tmp_path}/gone.pt"}) == 0


def test_a_stored_row_gives_its_storage(tmp_path, isolated_home):
    from ddbench.core.pipeline import RunRequest, run
    from ddbench.core.results import ResultsStore
    from ddbench.core.storage import storage_of_row

    results = tmp_path / "r.sqlite"
    summary = run(RunRequest(method="random", dataset="digits", ipc=1, evaluators=("hard_label",), students=("convnet3",),
                             overrides={"hard_label.epochs": "1"}, device="cpu", results_path=results, out_dir=tmp_path / "set"))
    with ResultsStore(results, readonly=True) as store:
        (row,) = list(store.rows())
    measured = set_storage(summary.distilled, 16)
    assert storage_of_row(row, {}).to_dict() == row["storage"]  # the row records it
    cache = {}
    row = {**row, "storage": None}  # a row made before rows recorded storage: measured from its folder
    storage = storage_of_row(row, cache)
    assert storage.images_bytes == measured.images_bytes and storage.canonical_png_bytes == measured.canonical_png_bytes
    assert storage.evaluation_bytes == 0 and storage.labels_bytes == 0 and list(cache) == [row["distilled_path"]]
    assert storage_of_row({**row, "distilled_path": str(tmp_path / "gone")}) is None


def test_leaderboard_exports_carry_storage(cli, tmp_path):
    import json

    made = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--students", "convnet3", "--seeds", "0,1",
               "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu", "--out", str(tmp_path / "set"))
    assert made.exit_code == 0, made.output
    records = json.loads(cli("leaderboard", "--storage", "--format", "json").output)
    distilled = DistilledSet.open(tmp_path / "set")
    expected = set_storage(distilled, 16)
    assert len(records) == 1
    assert records[0]["images_mb_png"] == round(expected.canonical_png_bytes / 2**20, 6)
    assert records[0]["storage_mb"] == records[0]["images_mb_png"] and records[0]["evaluation_mb"] == 0
    assert "storage_mb" not in json.loads(cli("leaderboard", "--format", "json").output)[0]
    table = cli("leaderboard", "--storage")
    assert "storage MB" in table.output and f"{expected.canonical_png_bytes / 2**20:.3f}" in table.output


def test_the_report_plots_accuracy_against_storage(cli, tmp_path):
    made = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--students", "convnet3", "--seeds", "0,1",
               "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu")
    assert made.exit_code == 0, made.output
    report = cli("report", "--dataset", "digits", "--ipc", "1", "--out", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'src="img/storage-0.png" alt="accuracy against storage of' in page
    assert (tmp_path / "report" / "img" / "storage-0.png").stat().st_size > 1000


def test_every_row_records_its_storage_and_keeps_it_when_the_set_is_gone(cli, tmp_path):
    import json
    import shutil

    from ddbench.core import paths
    from ddbench.core.results import ResultsStore
    from ddbench.core.storage import Storage, storage_of_row

    made = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--students", "convnet3", "--seeds", "0,1",
               "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu", "--out", str(tmp_path / "set"))
    assert made.exit_code == 0, made.output
    expected = set_storage(DistilledSet.open(tmp_path / "set"), 16)
    shutil.rmtree(tmp_path / "set")  # nothing left to measure: what follows comes from the rows
    with ResultsStore(paths.default_results_path(), readonly=True) as store:
        rows = list(store.rows())
    assert len(rows) == 2
    for row in rows:
        assert row["storage"] == Storage(expected.images_bytes, expected.canonical_png_bytes, 0, 0).to_dict()
        assert storage_of_row(row) == Storage.from_dict(row["storage"])
    (record,) = json.loads(cli("leaderboard", "--storage", "--format", "json").output)
    assert record["images_mb_png"] == round(expected.canonical_png_bytes / 2**20, 6)
    assert record["images_mb_stored"] == round(expected.images_bytes / 2**20, 6)
    markdown = cli("leaderboard", "--storage", "--format", "md").output
    assert "storage MB" in markdown and f"{expected.canonical_png_bytes / 2**20:.3f}" in markdown
    report = cli("report", "--dataset", "digits", "--ipc", "1", "--out", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "img" / "storage-0.png").stat().st_size > 1000


def test_rows_of_a_version_3_database_stay_readable_and_it_takes_rows_with_storage(tmp_path):
    import sqlite3

    from tests.core.test_results_and_leaderboard import make_row

    from ddbench.core.results import SCHEMA_VERSION, ResultsStore

    path = tmp_path / "v3.sqlite"
    with ResultsStore(path) as store:
        store.add(make_row("random", "resnet18", 0, 50.0))
    with sqlite3.connect(path) as old:  # the table as ddbench wrote it before rows carried storage
        old.execute("ALTER TABLE results DROP COLUMN storage")
        old.execute("PRAGMA user_version=3")
    with ResultsStore(path, readonly=True) as store:
        assert [(row["value"], row["storage"]) for row in store.rows()] == [(50.0, None)]
    stored = {"images_bytes": 10, "canonical_png_bytes": 20, "labels_bytes": 0, "evaluation_bytes": 5}
    with ResultsStore(path) as store:
        new = make_row("random", "resnet18", 1, 60.0)
        new.storage = stored
        store.add(new)
        assert [(row["value"], row["storage"]) for row in store.rows()] == [(50.0, None), (60.0, stored)]
    with sqlite3.connect(path) as migrated:
        assert migrated.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert migrated.execute("SELECT name FROM sqlite_master WHERE name LIKE 'results_v%'").fetchall() == []


def test_a_sets_canonical_sizes_are_remembered_by_checksum(tmp_path, monkeypatch):
    import ddbench.core.storage as storage

    distilled = make_set(tmp_path / "set")
    first = set_storage(distilled, resolution=16)
    encoded = []
    real = storage.canonical_png_bytes
    monkeypatch.setattr(storage, "canonical_png_bytes", lambda path, resolution: encoded.append(path) or real(path, resolution))
    assert set_storage(distilled, resolution=16) == first and encoded == []  # remembered: nothing re-encoded
    assert set_storage(distilled, resolution=12).canonical_png_bytes != first.canonical_png_bytes
    assert len(encoded) == 4  # another resolution is measured again
    changed = tmp_path / "set" / "a" / "0.jpeg"
    Image.fromarray(np.full((20, 24, 3), 7, dtype=np.uint8)).save(changed, format="JPEG")
    again = set_storage(DistilledSet.open(tmp_path / "set", class_names=CLASSES, dataset="toy"), resolution=16)
    assert encoded[4:] == [changed]  # only the changed image, by its new checksum
    assert again.canonical_png_bytes < first.canonical_png_bytes  # a flat image compresses better


def test_a_memo_edited_by_hand_is_measured_again(tmp_path):
    import json

    from ddbench.core import paths

    distilled = make_set(tmp_path / "set")
    first = set_storage(distilled, resolution=16)
    memo = paths.cache_dir("storage") / "canonical_png_bytes.json"
    memo.write_text(json.dumps({key: "garbage" for key in json.loads(memo.read_text())}))
    assert set_storage(distilled, resolution=16) == first
    memo.write_text("{not json")
    assert set_storage(distilled, resolution=16) == first
