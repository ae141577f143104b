"""Dataset class -> generator label, for every dataset: ImageNet-1K generators serve the WNID
datasets through their ImageNet indices; same-count generators use the dataset's own labels;
anything else is a clear error."""

from __future__ import annotations

import pytest

from ddbench.core.errors import CheckpointError
from ddbench.core.registry import create_dataset
from ddbench.datasets.imagenet import imagenet1k_classes
from ddbench.generators.class_map import DATASET, IMAGENET1K, generator_class_map


@pytest.mark.parametrize("name, count", [("woof", 10), ("nette", 10), ("imagenet100", 100), ("imagenet1k", 1000)])
def test_imagenet1k_generators_serve_every_wnid_dataset_by_its_imagenet_indices(name, count):
    dataset = create_dataset(name)
    class_map = generator_class_map(dataset, 1000, IMAGENET1K)
    assert class_map.label_space == IMAGENET1K and len(class_map.labels) == count
    order = list(imagenet1k_classes())
    assert [order[label] for label in class_map.labels] == dataset.class_names  # label i is class i's WNID
    assert generator_class_map(dataset, 1000) == class_map  # 1,000 classes: ImageNet-1K by default
    record = class_map.record(dataset.class_names)
    assert record["label_space"] == IMAGENET1K and record["classes"][dataset.class_names[0]] == class_map.labels[0]


def test_woof_maps_to_the_indices_the_releases_sample_it_with():
    assert generator_class_map(create_dataset("woof"), 1000).labels == (155, 159, 162, 167, 182, 193, 207, 229, 258, 273)


def test_a_generator_trained_on_the_dataset_uses_its_labels():
    for name, count in (("digits", 10), ("woof", 10), ("cifar100", 100)):
        class_map = generator_class_map(create_dataset(name), count)
        assert class_map.label_space == DATASET and class_map.labels == tuple(range(count))


def test_class_count_mismatches_without_a_map_are_errors():
    with pytest.raises(CheckpointError, match="ImageNet-1K generator.*cifar10.*no map"):
        generator_class_map(create_dataset("cifar10"), 1000)
    with pytest.raises(CheckpointError, match="10 classes but cifar100 has 100"):
        generator_class_map(create_dataset("cifar100"), 10)
    with pytest.raises(CheckpointError, match="100 classes but woof has 10"):
        generator_class_map(create_dataset("woof"), 100)
