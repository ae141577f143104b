"""Teachers as RDED made them: from-scratch recipes by default for the ImageNet subsets, the
fine-tuned one only by name, RDED-layout teacher files read in an explicit class order (sorted
WNIDs or Minimax's unsorted ImageWoof order) and checked by accuracy, and no teacher training
that does not first say what it is about to do."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.progress import RecordingProgress
from ddbench.terminal import RichProgress
from ddbench.datasets.imagenet import ImageNet100, ImageNette, ImageWoof
from ddbench.teachers import RECIPES, TeacherStore, recipe_for, recipe_hash
from ddbench.teachers.class_order import NAMED_ORDERS, rows_in_dataset_order
from tests.datasets.tiny_trees import make_wnid_tree
from tests.evaluators.synthetic import ColourSquares

CPU = torch.device("cpu")
MINIMAX_WOOF = (193, 182, 258, 162, 155, 167, 159, 273, 207, 229)


@pytest.mark.parametrize("dataset_cls", [ImageWoof, ImageNette, ImageNet100])
def test_subsets_train_from_scratch_by_default_and_fine_tune_only_by_name(dataset_cls):
    dataset = dataset_cls(resolution=64)
    default = recipe_for(dataset)
    assert default.name == "imagenet-scratch" and not default.pretrained and default.epochs == 200
    assert (default.optimizer, default.lr, default.batch_size, default.schedule) == ("sgd", 0.2, 256, "warmup5_cosine")
    finetune = recipe_for(dataset, "imagenet-finetune")
    assert finetune.pretrained and finetune.name == "imagenet-finetune"
    assert recipe_hash(default, dataset, "resnet18") != recipe_hash(finetune, dataset, "resnet18")
    with pytest.raises(ConfigError, match="did you mean 'imagenet-finetune'"):
        recipe_for(dataset, "imagenet-finetun")


def test_a_recipe_name_is_a_label_not_part_of_the_cache_key():
    dataset = ColourSquares()
    RECIPES["digits-copy"] = RECIPES["digits"]
    try:
        assert recipe_hash(recipe_for(dataset, "digits-copy"), dataset, "convnet3") == \
            recipe_hash(recipe_for(dataset), dataset, "convnet3")
    finally:
        del RECIPES["digits-copy"]


def test_the_warmup_cosine_schedule_follows_torchvisions_reference():
    from ddbench.training.schedule import warmup5_cosine

    assert warmup5_cosine(0, 200) == pytest.approx(0.01)
    assert warmup5_cosine(4, 200) == pytest.approx(0.01 + 0.99 * 4 / 5)
    assert warmup5_cosine(5, 200) == pytest.approx(1.0)
    assert warmup5_cosine(102, 200) == pytest.approx(0.5, abs=0.01)
    assert warmup5_cosine(199, 200) < 0.001


def test_named_and_explicit_orders_map_rows_to_ddbench_classes():
    woof = ImageWoof()
    assert woof.imagenet1k_indices == sorted(MINIMAX_WOOF)  # ddbench's order: sorted WNIDs = ascending indices
    assert NAMED_ORDERS["minimax-woof"] == MINIMAX_WOOF
    rows = rows_in_dataset_order("minimax-woof", woof)
    assert [MINIMAX_WOOF[row] for row in rows] == woof.imagenet1k_indices
    assert rows_in_dataset_order("imagenet:" + ",".join(map(str, MINIMAX_WOOF)), woof) == rows
    reversed_names = list(reversed(woof.class_names))
    assert rows_in_dataset_order("classes:" + ",".join(reversed_names), woof) == list(range(9, -1, -1))
    assert rows_in_dataset_order("sorted", woof) is None
    with pytest.raises(ConfigError, match="does not list exactly woof's 10 classes"):
        rows_in_dataset_order("imagenet:1,2,3", woof)
    with pytest.raises(ConfigError, match="minimax-woof"):  # a woof order on nette is caught, not applied
        rows_in_dataset_order("minimax-woof", ImageNette())


@pytest.fixture(scope="module")
def woof_teacher(tmp_path_factory):
    """A tiny ResNet-18 teacher trained on a tiny woof tree, saved as RDED saves its teachers."""
    root = make_wnid_tree(tmp_path_factory.mktemp("woof"), ImageWoof.wnids, train=8, val=4)
    dataset = ImageWoof(root, resolution=16)
    store = TeacherStore(root=tmp_path_factory.mktemp("teachers"), recipe="digits",
                         recipe_overrides={"epochs": 6, "batch_size": 16, "lr": 5e-3})
    teacher = store(dataset, "resnet18", CPU)
    assert teacher.accuracy >= 60.0
    state = {key: value.clone() for key, value in teacher.model.state_dict().items()}
    folder = tmp_path_factory.mktemp("rded")
    sorted_file = folder / "imagenet-woof_resnet18.pth"
    torch.save({"model": state}, sorted_file)
    # the same teacher as Minimax/DD-Ranking order their ImageWoof labels: row j is class MINIMAX_WOOF[j]
    position = {index: i for i, index in enumerate(dataset.imagenet1k_indices)}
    permuted = dict(state)
    for key in ("fc.weight", "fc.bias"):
        permuted[key] = torch.stack([state[key][position[index]] for index in MINIMAX_WOOF])
    minimax_file = folder / "woof_resnet18_minimax_order.pth"
    torch.save({"model": permuted}, minimax_file)
    return dataset, teacher, sorted_file, minimax_file


def test_rded_teacher_files_load_in_sorted_order(woof_teacher):
    dataset, teacher, sorted_file, _ = woof_teacher
    loaded = TeacherStore(checkpoints={"resnet18": sorted_file})(dataset, "resnet18", CPU)
    assert loaded.accuracy == pytest.approx(teacher.accuracy)


def test_the_minimax_order_is_permuted_into_ddbench_order(woof_teacher):
    dataset, teacher, _, minimax_file = woof_teacher
    store = TeacherStore(checkpoints={"resnet18": minimax_file}, class_order="minimax-woof")
    loaded = store(dataset, "resnet18", CPU)
    assert loaded.accuracy == pytest.approx(teacher.accuracy)
    assert "class order minimax-woof" in loaded.source
    assert store.identify(dataset, "resnet18") == loaded.checkpoint_sha256  # the order is part of the key
    assert loaded.checkpoint_sha256 != TeacherStore(checkpoints={"resnet18": minimax_file}).identify(dataset, "resnet18")


def test_a_wrong_order_fails_and_names_the_order_that_works(woof_teacher):
    dataset, teacher, _, minimax_file = woof_teacher
    with pytest.raises(CheckpointError, match=r"class order sorted; with --teacher-class-order minimax-woof: "
                                              rf"{teacher.accuracy:.1f}%"):
        TeacherStore(checkpoints={"resnet18": minimax_file})(dataset, "resnet18", CPU)


def test_training_says_what_it_will_do_and_names_other_recipes_teachers(tmp_path):
    dataset = ColourSquares()
    quick = {"epochs": 2, "batch_size": 16, "lr": 5e-3}
    first = TeacherStore(root=tmp_path, recipe_overrides=quick)(dataset, "convnet3", CPU)
    path = first.source.removeprefix("trained:")
    record = json.loads(open(path.replace(".pt", ".json")).read())
    assert record["resolution"] == 8 and record["recipe"]["name"] == "digits"

    output = io.StringIO()
    progress = RichProgress(Console(file=output, force_terminal=False, width=400))  # a log file, not a terminal
    TeacherStore(root=tmp_path, recipe_overrides={**quick, "epochs": 3})(dataset, "convnet3", CPU, progress)
    log = output.getvalue()
    assert "teacher convnet3 for colour_squares at 8 px: none cached, so training one now with recipe digits, batch_size=16, epochs=3" in log
    assert "3 epochs over 96 train images" in log and "on cpu" in log
    assert f"--teacher-ckpt convnet3={path}" in log and "epochs=2" in log

    recording = RecordingProgress()  # a teacher at another resolution is not offered
    TeacherStore(root=tmp_path, recipe_overrides={**quick, "epochs": 1})(ColourSquares(resolution=16), "convnet3", CPU,
                                                                          recording)
    assert recording.messages[0].startswith("teacher convnet3 for colour_squares at 16 px")
    assert not any("--teacher-ckpt" in message for message in recording.messages)
