import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from ddbench.core.errors import DataError
from ddbench.core.registry import create_dataset
from ddbench.datasets.cifar import CIFAR100_CLASSES


def test_digits_split_is_fixed_stratified_and_disjoint():
    digits = create_dataset("digits")
    train, val = digits.split("train"), digits.split("val")
    assert (len(train), len(val)) == (1442, 355)
    assert digits.class_names == [str(i) for i in range(10)]
    image, label = train[0]
    assert image.size == (16, 16) and image.mode == "RGB" and label == 0
    val_counts = np.bincount(val.targets)
    assert val_counts.min() >= 34 and val_counts.max() <= 37  # every class ~20% in val
    train_pixels = {train.images[i].tobytes() for i in range(len(train))}
    assert sum(val.images[i].tobytes() in train_pixels for i in range(len(val))) < 5  # splits are different samples
    assert np.array_equal(create_dataset("digits").split("val").images, val.images)


def test_cifar100_classes_are_the_official_alphabetical_order():
    assert len(CIFAR100_CLASSES) == 100 and CIFAR100_CLASSES == sorted(CIFAR100_CLASSES)


def write_cifar10_pickles(folder, per_batch=4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"labels": list(range(per_batch))}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)


def test_cifar10_reads_the_official_pickles(tmp_path):
    write_cifar10_pickles(tmp_path / "cifar-10-batches-py")
    dataset = create_dataset("cifar10", tmp_path)
    train, val = dataset.split("train"), dataset.split("val")
    assert (len(train), len(val)) == (20, 4)
    image, label = val[2]
    assert image.size == (32, 32) and label == 2


def write_png_tree(root, classes, per_class=2, size=32):
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (i * 40, 0, 0)).save(root / split / name / f"{i}.png")


def test_cifar10_reads_a_png_class_tree_in_canonical_order(tmp_path):
    classes = create_dataset("cifar10").class_names
    write_png_tree(tmp_path, classes)
    dataset = create_dataset("cifar10", tmp_path)
    assert len(dataset.split("train")) == 20
    assert dataset.split("val").targets == [i for i in range(10) for _ in range(2)]


def test_corrupt_image_error_names_the_file(tmp_path):
    classes = create_dataset("cifar10").class_names
    write_png_tree(tmp_path, classes)
    bad = tmp_path / "train" / "cat" / "1.png"
    bad.write_bytes(b"not a png at all")
    train = create_dataset("cifar10", tmp_path).split("train")
    index = [str(p) for p, _ in train.samples].index(str(bad))
    with pytest.raises(DataError, match=r"cannot read image .*cat/1\.png"):
        train[index]


def test_missing_root_names_layout_and_source(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*train/<wnid>.*ddbench data fetch woof"):
        create_dataset("woof", tmp_path / "nowhere").split("train")
    with pytest.raises(DataError, match="needs --data-root"):
        create_dataset("cifar10").split("train")


def test_malformed_root_names_missing_class_folders(tmp_path):
    woof = create_dataset("woof", tmp_path)
    write_png_tree(tmp_path, woof.class_names[:7], size=8)
    (tmp_path / "val").mkdir(exist_ok=True)
    with pytest.raises(DataError, match=r"lacks 3 of 10 class folders"):
        woof.split("train")


def test_wnid_datasets_use_imagenet_index_order(tmp_path):
    woof = create_dataset("woof")
    assert woof.class_names == sorted(woof.class_names)
    assert woof.imagenet1k_indices == sorted(woof.imagenet1k_indices)
    assert woof.class_labels[0] == "Shih-Tzu"
    imagenet = create_dataset("imagenet1k")
    assert imagenet.num_classes == 1000 and imagenet.class_names[0] == "n01440764"
    subset = create_dataset("imagenet100")
    assert subset.num_classes == 100 and set(subset.class_names) <= set(imagenet.class_names)
