import json

import pytest
from PIL import Image

from ddbench.core.config import config_to_dict
from ddbench.core.device import resolve_device
from ddbench.core.distilled import DistilledSet, DistilledSetWriter
from ddbench.core.errors import ConfigError, DistilledSetError
from ddbench.core.identity import RunIdentity
from ddbench.core.pipeline import distill
from ddbench.core.progress import NullProgress
from ddbench.core.registry import create_dataset
from ddbench.methods.random import RandomSubset


class Interrupted(Exception):
    pass


class InterruptedRandom(RandomSubset):
    """Dies after `stop_after` classes, like a run killed mid-way."""

    stop_after = 4
    source_modules = ("ddbench.methods.random",)  # random's code, only killed mid-way: the same run identity

    def distill_class(self, task, class_index):
        if class_index == self.stop_after:
            raise Interrupted
        return super().distill_class(task, class_index)


def run_random(method, out_dir, seed=0, ipc=3):
    return distill(method, create_dataset("digits"), ipc, seed, out_dir, resolve_device("cpu"), None, NullProgress())


def test_interrupted_run_resumes_to_the_same_set_without_redoing_classes(tmp_path):
    reference = run_random(RandomSubset(), tmp_path / "reference")

    with pytest.raises(Interrupted):
        run_random(InterruptedRandom(), tmp_path / "resumed")
    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert manifest["complete"] is False and len(manifest["files"]) == 4 * 3
    # a class that was half written when the process died leaves only a staging folder behind
    (tmp_path / "resumed" / "images" / ".tmp-4").mkdir()
    finished_class = tmp_path / "resumed" / "images" / "0" / "0.png"
    mtime = finished_class.stat().st_mtime_ns

    resumed = run_random(RandomSubset(), tmp_path / "resumed")
    assert resumed.content_hash == reference.content_hash
    assert finished_class.stat().st_mtime_ns == mtime  # finished classes were not redone
    assert not (tmp_path / "resumed" / "images" / ".tmp-4").exists()
    assert len(resumed.samples) == 30 and resumed.manifest["complete"] is True


def test_different_seed_gives_a_different_set_and_refuses_to_mix(tmp_path):
    first = run_random(RandomSubset(), tmp_path / "a", seed=0)
    second = run_random(RandomSubset(), tmp_path / "b", seed=1)
    assert first.content_hash != second.content_hash
    with pytest.raises(DistilledSetError, match="different distilled set .*seed"):
        run_random(RandomSubset(), tmp_path / "a", seed=1)


def test_a_set_that_wrote_no_class_gives_way_to_another_one_that_did_not_wait(tmp_path):
    """A run that stopped before its first class (a config refused in prepare) leaves only a manifest:
    the corrected command takes the folder; a set with one finished class is still refused."""
    with pytest.raises(Interrupted):
        run_random(type("DiesFirst", (InterruptedRandom,), {"stop_after": 0})(), tmp_path / "empty", seed=0)
    assert json.loads((tmp_path / "empty" / "manifest.json").read_text())["files"] == {}
    assert run_random(RandomSubset(), tmp_path / "empty", seed=1).manifest["seed"] == 1

    with pytest.raises(Interrupted):
        run_random(type("DiesSecond", (InterruptedRandom,), {"stop_after": 1})(), tmp_path / "one", seed=0)
    with pytest.raises(DistilledSetError, match="different distilled set .*seed"):
        run_random(RandomSubset(), tmp_path / "one", seed=1)


def test_manifest_records_the_run(tmp_path):
    distilled = run_random(RandomSubset(), tmp_path / "set")
    manifest = distilled.manifest
    assert manifest["method"] == "random" and manifest["dataset"] == "digits" and manifest["ipc"] == 3
    assert manifest["seed"] == 0 and manifest["config"] == config_to_dict(RandomSubset().config)
    assert "ddbench_version" in manifest and len(manifest["files"]) == 30
    assert all(len(checksum) == 64 for checksum in manifest["files"].values())
    assert Image.open(distilled.samples[0][0]).size == (16, 16)


def test_ipc_larger_than_a_class_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--ipc 500 is larger than class .* which has \d+ training images"):
        run_random(RandomSubset(), tmp_path / "set", ipc=500)
    with pytest.raises(ConfigError, match="at least 1"):
        run_random(RandomSubset(), tmp_path / "set", ipc=0)


def test_malformed_and_tampered_manifests_are_errors(tmp_path):
    distilled = run_random(RandomSubset(), tmp_path / "set")
    distilled.samples[0][0].write_bytes(b"changed")
    with pytest.raises(DistilledSetError, match="does not match its checksum"):
        DistilledSet.open(tmp_path / "set")
    (tmp_path / "set" / "manifest.json").write_text("{not json")
    with pytest.raises(DistilledSetError, match=r"manifest.json is not valid JSON"):
        DistilledSet.open(tmp_path / "set")
    (tmp_path / "set" / "manifest.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(DistilledSetError, match="missing"):
        DistilledSet.open(tmp_path / "set")


def test_foreign_class_folders_open_with_the_dataset_class_order(tmp_path):
    classes = create_dataset("digits").class_names
    for name in ("3", "1"):
        (tmp_path / "other" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16)).save(tmp_path / "other" / name / f"img{i}.png")
    distilled = DistilledSet.open(tmp_path / "other", class_names=classes, dataset="digits")
    assert sorted(label for _, label in distilled.samples) == [1, 1, 3, 3]
    assert distilled.method == "external" and distilled.ipc == 2
    (tmp_path / "other" / "cat").mkdir()
    with pytest.raises(DistilledSetError, match="are not classes of digits"):
        DistilledSet.open(tmp_path / "other", class_names=classes, dataset="digits")
    with pytest.raises(DistilledSetError, match="pass --dataset"):
        DistilledSet.open(tmp_path / "other")


def test_writer_rejects_wrong_image_count(tmp_path):
    identity = RunIdentity(method="m", config={}, dataset={"name": "digits"}, ipc=2, seed=0)
    writer = DistilledSetWriter(tmp_path, identity, ["a"])
    with pytest.raises(DistilledSetError, match="returned 1 images, expected ipc=2"):
        writer.write_class(0, [Image.new("RGB", (4, 4))])
