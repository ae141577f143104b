"""Large validation splits stream from disk in batches; small ones stay in memory; both give the
same images in the same order, so the same accuracy to the last image."""

from __future__ import annotations

import torch

from ddbench.datasets.imagenet import ImageWoof
from ddbench.training import StreamingImageSet, TensorImageSet, build_seeded_model, evaluate_top1, load_validation_set
from ddbench.training import data as training_data
from tests.datasets.tiny_trees import make_wnid_tree


def woof(tmp_path, resolution=16):
    root = make_wnid_tree(tmp_path / "woof", ImageWoof.wnids, train=1, val=7, size=(23, 17))
    return ImageWoof(root, resolution=resolution)


def test_a_split_over_the_limit_streams_and_matches_the_in_memory_set(tmp_path, monkeypatch):
    dataset = woof(tmp_path)
    training_data._VAL_CACHE.clear()
    in_memory = load_validation_set(dataset)
    assert isinstance(in_memory, TensorImageSet) and len(in_memory) == 70
    monkeypatch.setenv("DDBENCH_VAL_IN_MEMORY_MB", str(69 * 3 * 16 * 16 / 2**20))  # just under 70 images
    training_data._VAL_CACHE.clear()
    streamed = load_validation_set(dataset)
    assert isinstance(streamed, StreamingImageSet) and len(streamed) == 70
    streamed.num_workers = 2  # the real thing: decoded in worker processes
    batches = list(streamed.batches(32))
    assert [len(labels) for _, labels in batches] == [32, 32, 6]
    assert torch.equal(torch.cat([images for images, _ in batches]), in_memory.images)
    assert torch.equal(torch.cat([labels for _, labels in batches]), in_memory.labels)
    model = build_seeded_model("convnet3", 10, 16, 0, "test-streaming")
    accuracies = [evaluate_top1(model, val_set, dataset.mean, dataset.std, torch.device("cpu"), batch_size=16)
                  for val_set in (in_memory, streamed)]
    assert accuracies[0] == accuracies[1]
    training_data._VAL_CACHE.clear()


def test_the_default_limit_keeps_subsets_in_memory_and_streams_imagenet1k():
    limit = training_data.in_memory_limit_bytes()
    assert 5_000 * 3 * 224 * 224 < limit < 50_000 * 3 * 224 * 224  # ImageNet-100 val vs ImageNet-1K val
