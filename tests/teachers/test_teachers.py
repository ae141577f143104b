"""Teachers: the cache (checksums, reuse), external checkpoints in RDED's and DataParallel's
layouts, and the errors that stop a mismatched teacher before it labels anything."""

from __future__ import annotations

import json

import pytest
import torch

from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.teachers import TeacherStore, make_teacher_provider, recipe_hash
from tests.evaluators.synthetic import ColourSquares

CPU = torch.device("cpu")
FAST_RECIPE = {"epochs": 3, "batch_size": 16, "lr": 5e-3}


class SixColours(ColourSquares):
    name = "six_colours"
    num_colours = 6


class ShiftedColours(ColourSquares):
    """Same class names, but every label moved by one: what a class-order mismatch looks like."""

    name = "colour_squares"

    def split(self, name, transform=None):
        dataset = super().split(name, transform)
        dataset.labels = [(label + 1) % self.num_colours for label in dataset.labels]
        return dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    store = TeacherStore(root=root, recipe_overrides=FAST_RECIPE)
    teacher = store(ColourSquares(), "convnet3", CPU)
    return store, teacher


def test_training_caches_with_checksum_and_reuses(trained):
    store, teacher = trained
    dataset = ColourSquares()
    path = store.cache_path(dataset, "convnet3")
    assert path.exists() and teacher.source == f"trained:{path}"
    assert teacher.accuracy > 90.0
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == teacher.checkpoint_sha256 and record["accuracy"] == teacher.accuracy
    assert record["recipe_hash"] == recipe_hash(store.recipe(dataset), dataset, "convnet3")
    again = store(dataset, "convnet3", CPU)
    assert again.source.startswith("cache:") and again.accuracy == teacher.accuracy
    assert again.info()["arch"] == "convnet3"


def test_recipe_change_changes_the_cache_key(trained):
    store, _ = trained
    other = TeacherStore(root=store.root, recipe_overrides={**FAST_RECIPE, "lr": 1e-3})
    assert other.cache_path(ColourSquares(), "convnet3") != store.cache_path(ColourSquares(), "convnet3")
    with pytest.raises(CheckpointError, match="ddbench teacher train"):
        TeacherStore(root=store.root, recipe_overrides={"lr": 1e-3}, train_missing=False)(ColourSquares(), "convnet3", CPU)


def test_tampered_cache_is_refused(trained, tmp_path):
    store, teacher = trained
    path = store.cache_path(ColourSquares(), "convnet3")
    copy_root = tmp_path / "copy"
    target = copy_root / path.parent.name / path.name
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes() + b"x")
    target.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="checksum"):
        TeacherStore(root=copy_root, recipe_overrides=FAST_RECIPE)(ColourSquares(), "convnet3", CPU)


def _external_file(teacher, tmp_path, wrap):
    state = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    path = tmp_path / "external.pth"
    torch.save(wrap(state), path)
    return path


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: {"model": {f"module.{k}": v for k, v in state.items()}},  # RDED + DataParallel
        lambda state: state,  # plain timm/torchvision state dict
    ],
    ids=["rded_module_prefix", "plain_state_dict"],
)
def test_external_checkpoint_layouts_load_with_same_accuracy(trained, tmp_path, wrap):
    _, teacher = trained
    path = _external_file(teacher, tmp_path, wrap)
    provider = make_teacher_provider(checkpoint=f"convnet3={path}", checkpoint_normalization="dataset")
    loaded = provider(ColourSquares(), "convnet3", CPU)
    assert loaded.accuracy == pytest.approx(teacher.accuracy)
    assert loaded.source == f"checkpoint:{path}"


def test_every_teacher_carries_the_normalisation_it_was_trained_with(trained, tmp_path):
    store, teacher = trained
    dataset = ColourSquares()
    assert (teacher.mean, teacher.std) == (dataset.mean, dataset.std)  # ddbench trains with the dataset's
    path = store.cache_path(dataset, "convnet3")
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["normalization"] == {"mean": list(dataset.mean), "std": list(dataset.std)}
    cached = store(dataset, "convnet3", CPU)
    assert (cached.mean, cached.std) == (dataset.mean, dataset.std)
    assert cached.info()["mean"] == list(dataset.mean)
    # ddbench's own file passed as a checkpoint: its recorded constants, whatever the option says
    own = TeacherStore(checkpoints=path, checkpoint_normalization="imagenet")(dataset, "convnet3", CPU)
    assert (own.mean, own.std) == (dataset.mean, dataset.std) and own.accuracy == pytest.approx(teacher.accuracy)
    # a file from elsewhere: RDED's teachers expect the ImageNet constants, unless told otherwise
    foreign = _external_file(teacher, tmp_path, lambda state: {"model": state})
    as_rded = TeacherStore(checkpoints=foreign)(dataset, "convnet3", CPU)
    assert (as_rded.mean, as_rded.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    told = TeacherStore(checkpoints=foreign, checkpoint_normalization="dataset")(dataset, "convnet3", CPU)
    assert (told.mean, told.std) == (dataset.mean, dataset.std)
    with pytest.raises(ConfigError, match="normalisation"):
        TeacherStore(checkpoints=foreign, checkpoint_normalization="cifar")


def test_records_without_normalisation_mean_the_dataset_constants(trained, tmp_path):
    """Cache records written before the constants were recorded: ddbench always trained with the dataset's."""
    store, _ = trained
    dataset = ColourSquares()
    path = store.cache_path(dataset, "convnet3")
    target = tmp_path / "old" / path.parent.name / path.name
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    record = json.loads(path.with_suffix(".json").read_text())
    del record["normalization"]
    target.with_suffix(".json").write_text(json.dumps(record))
    old = TeacherStore(root=tmp_path / "old", recipe_overrides=FAST_RECIPE)(dataset, "convnet3", CPU)
    assert (old.mean, old.std) == (dataset.mean, dataset.std)


def test_class_order_mismatch_is_detected(trained, tmp_path):
    _, teacher = trained
    path = _external_file(teacher, tmp_path, lambda state: {"model": state})
    with pytest.raises(CheckpointError, match="class order"):
        TeacherStore(checkpoints=path)(ShiftedColours(), "convnet3", CPU)


def test_the_dry_run_switch_accepts_a_weak_teacher_loudly_and_only_when_set(trained, tmp_path, monkeypatch):
    """benchmarks/dry_run.py times the pipeline with a one-epoch teacher: DDBENCH_DRY_RUN_ACCEPT_WEAK_TEACHER=1
    lets it through with a warning each time; any other value keeps the twice-chance floor."""
    from ddbench.teachers.store import WEAK_TEACHER_VARIABLE

    _, teacher = trained
    path = _external_file(teacher, tmp_path, lambda state: {"model": state})
    monkeypatch.setenv(WEAK_TEACHER_VARIABLE, "yes")
    with pytest.raises(CheckpointError, match="class order"):
        TeacherStore(checkpoints=path)(ShiftedColours(), "convnet3", CPU)
    monkeypatch.setenv(WEAK_TEACHER_VARIABLE, "1")
    with pytest.warns(UserWarning, match="DRY RUN.*ACCEPTED"):
        weak = TeacherStore(checkpoints=path)(ShiftedColours(), "convnet3", CPU)
    assert weak.accuracy < 50.0  # under the floor of 4 classes, and used anyway


def test_class_count_mismatch_is_detected(trained, tmp_path):
    _, teacher = trained
    path = _external_file(teacher, tmp_path, lambda state: {"model": state})
    with pytest.raises(CheckpointError, match="4-class classifier"):
        TeacherStore(checkpoints=path)(SixColours(), "convnet3", CPU)


def test_class_names_are_part_of_the_cache_key(trained):
    store, _ = trained

    class Renamed(ColourSquares):
        @property
        def class_names(self):
            return list(reversed(super().class_names))

    renamed = Renamed()
    path = store.cache_path(renamed, "convnet3")  # another class order never reuses a cached teacher
    assert path != store.cache_path(ColourSquares(), "convnet3")


def test_torchvision_mobilenet_v2_layout_loads_into_timm_layout(tmp_path):
    import torchvision

    from ddbench.teachers import load_teacher_checkpoint

    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(num_classes=4)
    reference.features[0][0].stride = (1, 1)  # the small-input stem, as RDED's CIFAR models use
    reference.eval()
    path = tmp_path / "tv_mobilenet_v2.pth"
    torch.save({"model": reference.state_dict()}, path)
    loaded = load_teacher_checkpoint(path, "mobilenet_v2", 4, 8).eval()
    images = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(loaded(images), reference(images))


class InterruptAfterEpochs:
    """A Progress whose teacher-training bar raises KeyboardInterrupt (Ctrl-C) after `epochs` epochs."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def task(self, description, total=None):
        from contextlib import contextmanager

        outer = self

        class Bar:
            done = 0

            def advance(self, amount=1):
                self.done += amount
                if description.startswith("teacher ") and total is not None and self.done >= outer.epochs and amount:
                    raise KeyboardInterrupt

            def update(self, description):
                pass

        @contextmanager
        def cm():
            yield Bar()

        return cm()

    def log(self, message):
        pass


def test_interrupted_teacher_training_resumes_at_its_last_epoch(trained, tmp_path):
    store, teacher = trained
    resumed_store = TeacherStore(root=tmp_path, recipe_overrides=FAST_RECIPE)
    path = resumed_store.cache_path(ColourSquares(), "convnet3")
    with pytest.raises(KeyboardInterrupt):
        resumed_store(ColourSquares(), "convnet3", CPU, InterruptAfterEpochs(2))
    assert path.with_suffix(".state.pt").exists() and not path.exists()
    resumed = resumed_store(ColourSquares(), "convnet3", CPU)
    assert not path.with_suffix(".state.pt").exists()  # finished: the state is gone
    assert json.loads(path.with_suffix(".json").read_text())["epoch_losses"] == \
        json.loads(store.cache_path(ColourSquares(), "convnet3").with_suffix(".json").read_text())["epoch_losses"]
    for name, value in teacher.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert resumed.checkpoint_sha256 == teacher.checkpoint_sha256


def test_a_foreign_checkpoint_is_measured_once_per_dataset(trained, tmp_path, monkeypatch):
    import ddbench.teachers.store as store_module

    _, teacher = trained
    path = _external_file(teacher, tmp_path, lambda state: {"model": state})
    calls = []
    real = store_module.measure_accuracy
    monkeypatch.setattr(store_module, "measure_accuracy", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = make_teacher_provider(checkpoint=f"convnet3={path}", checkpoint_normalization="dataset")(ColourSquares(), "convnet3", CPU)
    again = make_teacher_provider(checkpoint=f"convnet3={path}", checkpoint_normalization="dataset")(ColourSquares(), "convnet3", CPU)
    assert len(calls) == 1 and again.accuracy == first.accuracy == pytest.approx(teacher.accuracy)
    torch.save({"model": {k: v + 0.01 for k, v in teacher.model.state_dict().items()}}, path)  # another file
    make_teacher_provider(checkpoint=f"convnet3={path}", checkpoint_normalization="dataset")(ColourSquares(), "convnet3", CPU)
    assert len(calls) == 2


def test_a_read_only_cache_loses_the_accuracy_memo_not_the_teacher(trained, tmp_path, monkeypatch):
    import ddbench.teachers.store as store_module
    from ddbench.core.errors import StorageError

    _, teacher = trained
    path = _external_file(teacher, tmp_path, lambda state: {"model": state})

    def refuse(target, *args, **kwargs):
        raise StorageError(f"{target}: read-only file system")

    monkeypatch.setattr(store_module, "write_atomic", refuse)
    loaded = make_teacher_provider(checkpoint=f"convnet3={path}", checkpoint_normalization="dataset")(ColourSquares(), "convnet3", CPU)
    assert loaded.accuracy == pytest.approx(teacher.accuracy)
