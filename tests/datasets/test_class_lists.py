"""The packaged class lists against their published sources (issue 8: nette once shipped n03888605,
"parallel bars", for parachute). Expected values were checked against the sources each data file cites."""

import pytest

from ddbench.core.errors import DataError
from ddbench.core.registry import create_dataset
from ddbench.datasets.folders import CLASS_LIST_DIR, read_class_entries, read_class_list
from ddbench.datasets.imagenet import imagenet1k_classes

CLASS_LIST_FILES = {
    "woof": "woof_classes.txt",
    "nette": "nette_classes.txt",
    "imagenet100": "imagenet100_classes.txt",
    "imagenet1k": "imagenet1k_classes.txt",
    "cifar10": "cifar10_classes.txt",
    "cifar100": "cifar100_classes.txt",
}
COUNTS = {"woof": 10, "nette": 10, "imagenet100": 100, "imagenet1k": 1000, "cifar10": 10, "cifar100": 100}
WNID_SUBSETS = ("woof", "nette", "imagenet100")

# fast.ai README names, spelled as the ILSVRC-2012 first synonyms in imagenet1k_classes.txt, in sorted-WNID order.
NETTE_NAMES = ["tench", "English springer", "cassette player", "chain saw", "church", "French horn",
               "garbage truck", "gas pump", "golf ball", "parachute"]
WOOF_NAMES = ["Shih-Tzu", "Rhodesian ridgeback", "beagle", "English foxhound", "Border terrier",
              "Australian terrier", "golden retriever", "Old English sheepdog", "Samoyed", "dingo"]
WOOF_INDICES = [155, 159, 162, 167, 182, 193, 207, 229, 258, 273]
NETTE_INDICES = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


@pytest.mark.parametrize("dataset", sorted(CLASS_LIST_FILES))
def test_every_class_list_is_a_data_file_citing_its_source(dataset):
    path = CLASS_LIST_DIR / CLASS_LIST_FILES[dataset]
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(line.startswith("# Source: ") and len(line) > 30 for line in header), f"{path} cites no source"
    ids = read_class_list(path)
    assert len(ids) == COUNTS[dataset] == len(set(ids))
    assert sorted(create_dataset(dataset).class_names) == sorted(ids)  # the dataset reads this very file


@pytest.mark.parametrize("dataset", WNID_SUBSETS)
def test_subset_wnids_exist_in_imagenet1k_and_are_indexed_in_its_order(dataset):
    spec = create_dataset(dataset)
    order = list(imagenet1k_classes())
    assert set(spec.class_names) <= set(order)
    assert spec.class_names == sorted(spec.class_names)
    assert spec.imagenet1k_indices == sorted(spec.imagenet1k_indices)
    assert [order[i] for i in spec.imagenet1k_indices] == spec.class_names


def test_nette_is_the_fastai_imagenette_classes():
    nette = create_dataset("nette")
    assert nette.class_labels == NETTE_NAMES
    assert nette.imagenet1k_indices == NETTE_INDICES
    assert "n03888257" in nette.class_names and "n03888605" not in nette.class_names


def test_woof_is_the_fastai_imagewoof_breeds():
    woof = create_dataset("woof")
    assert woof.class_labels == WOOF_NAMES
    assert woof.imagenet1k_indices == WOOF_INDICES


@pytest.mark.parametrize("dataset", ("woof", "nette"))
def test_names_written_in_a_subset_file_agree_with_imagenet1k(dataset):
    names = imagenet1k_classes()
    entries = read_class_entries(CLASS_LIST_DIR / CLASS_LIST_FILES[dataset])
    assert all(name == names[wnid] for wnid, name in entries)
    assert [wnid for wnid, _ in entries] == create_dataset(dataset).class_names  # written in index order


def test_imagenet1k_names_at_well_known_indices():
    names = list(imagenet1k_classes().values())
    known = {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby", 409: "analog clock",
             701: "parachute", 999: "toilet tissue"}
    assert {index: names[index] for index in known} == known
    wnids = list(imagenet1k_classes())
    assert wnids == sorted(wnids) and wnids[0] == "n01440764" and wnids[999] == "n15075141"


def test_imagenet100_is_the_cmc_list():
    published = read_class_list(CLASS_LIST_DIR / "imagenet100_classes.txt")
    assert published[:3] == ["n02869837", "n01749939", "n02488291"] and published[-1] == "n02090622"
    assert create_dataset("imagenet100").class_names == sorted(published)


def test_cifar_classes_are_the_official_label_order():
    assert create_dataset("cifar10").class_names == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    fine = create_dataset("cifar100").class_names
    assert fine == sorted(fine)  # the release's fine_label_names are alphabetical
    assert (fine[0], fine[1], fine[26], fine[39], fine[58], fine[99]) == (
        "apple", "aquarium_fish", "crab", "keyboard", "pickup_truck", "worm")


def test_malformed_or_duplicated_class_lists_are_refused(tmp_path):
    duplicated = tmp_path / "dup.txt"
    duplicated.write_text("# Source: test\nn01440764\ttench\nn01440764\n")
    with pytest.raises(DataError, match=r"dup\.txt lists n01440764 more than once"):
        read_class_entries(duplicated)
    malformed = tmp_path / "bad.txt"
    malformed.write_text("# Source: test\nn01440764\ttench\textra\n")
    with pytest.raises(DataError, match=r"bad\.txt:2"):
        read_class_entries(malformed)
    named = tmp_path / "ok.txt"
    named.write_text("# Source: test\n\nn01440764\ttench\nn01443537\n")
    assert read_class_entries(named) == [("n01440764", "tench"), ("n01443537", None)]
