"""The Frechet evaluators: FID with Inception weights the test makes (the standard file cannot be
downloaded here) loaded through the same `inception_weights` path a user passes, the teacher-feature
distance, the statistics, the errors, and one results row per distilled set from the pipeline."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from ddbench.core.config import resolve_config
from ddbench.core.errors import CheckpointError
from ddbench.core.interfaces import NO_STUDENT, EvalTask, Teacher
from ddbench.core.pipeline import EvalOptions, TeacherCache, evaluate
from ddbench.core.results import ResultsStore
from ddbench.evaluators import frechet
from ddbench.models import create_model
from tests.evaluators.synthetic import ColourSquares, write_distilled, write_shifted


class FewSquares(ColourSquares):
    """4 colours x 3 train images: Inception at 299 px on a CPU stays a few seconds per set."""

    per_class = {"train": 3, "val": 2}


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception-V3 with seeded He-normal convolutions, saved as a state dict."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = path.with_suffix(".empty.pt")
    torch.save({}, empty)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, strict=True: None):
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
    torch.save(network.state_dict(), path)
    return path


def test_running_statistics_equal_numpy():
    features = torch.randn(37, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
    gaussian = frechet.RunningGaussian()
    for chunk in features.split(10):
        gaussian.add(chunk)
    statistics = gaussian.statistics()
    np.testing.assert_allclose(statistics["mu"], features.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(statistics["sigma"], np.cov(features.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)


def test_fid_of_a_set_against_itself_is_near_zero_and_of_a_shifted_set_clearly_above(tmp_path):
    weights = random_inception_weights(tmp_path / "inception-test.pth")
    dataset = FewSquares()
    config = resolve_config(frechet.FIDConfig, {"inception_weights": str(weights), "require_standard_weights": "false"})
    evaluator = frechet.InceptionFID(config)
    task = EvalTask(dataset=dataset, student=NO_STUDENT, seed=0, device=torch.device("cpu"))
    same = evaluator.evaluate(write_distilled(dataset, tmp_path / "same", ipc=3), task)
    shifted = evaluator.evaluate(write_shifted(dataset, tmp_path / "shifted", 60), task)
    assert same.primary == "fid" and set(same.metrics) == {"fid"}
    assert same.details["real_statistics"] == "computed" and shifted.details["real_statistics"] == "cached"
    assert abs(same.value) < 1e-4 * shifted.value
    assert shifted.value > 1e-3  # random features vary little; the shifted set is still far from zero


def test_fid_without_weights_names_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    config = resolve_config(frechet.FIDConfig, {"download": "false"})
    with pytest.raises(CheckpointError) as error:
        frechet.resolve_inception_weights(config)
    message = str(error.value)
    assert frechet.INCEPTION_FILE in message and frechet.INCEPTION_URL in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / frechet.INCEPTION_FILE) in message
    assert "fid.inception_weights=PATH" in message


def test_fid_refuses_weights_that_are_not_the_standard_file(tmp_path):
    weights = tmp_path / "other.pth"
    torch.save({"not": torch.zeros(1)}, weights)
    with pytest.raises(CheckpointError, match="not the standard"):
        frechet.resolve_inception_weights(resolve_config(frechet.FIDConfig, {"inception_weights": str(weights)}))
    with pytest.raises(CheckpointError, match="does not exist"):
        frechet.resolve_inception_weights(resolve_config(frechet.FIDConfig, {"inception_weights": str(tmp_path / "no.pth")}))


def random_teacher(dataset) -> Teacher:
    torch.manual_seed(0)
    model = create_model("convnet3", num_classes=dataset.num_classes, input_size=dataset.resolution)
    return Teacher(model, "convnet3", dataset.name, dataset.num_classes, checkpoint_sha256="test-teacher", source="random")


def test_teacher_frechet_self_near_zero_shifted_above(tmp_path):
    dataset = ColourSquares()
    evaluator = frechet.TeacherFrechet(frechet.FrechetConfig())
    task = EvalTask(dataset=dataset, student=NO_STUDENT, seed=0, device=torch.device("cpu"), teacher=random_teacher(dataset))
    same = evaluator.evaluate(write_distilled(dataset, tmp_path / "same", ipc=24), task)
    shifted = evaluator.evaluate(write_shifted(dataset, tmp_path / "shifted", 60), task)
    assert same.primary == "frechet_teacher_distance"
    assert abs(same.value) < 1e-5 * shifted.value and shifted.value > 1e-4


def test_pipeline_writes_one_row_for_an_evaluator_without_students_or_seeds(tmp_path):
    dataset = ColourSquares()
    distilled = write_distilled(dataset, tmp_path / "set", ipc=4)
    teacher = random_teacher(dataset)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        rows, skipped = evaluate(
            distilled, dataset, [frechet.TeacherFrechet(frechet.FrechetConfig(real_max_images=40))],
            EvalOptions(students=["resnet18", "convnet3"], teachers=["convnet3"], seeds=[3, 4, 5], device="cpu"), store,
            TeacherCache(lambda *args: teacher, torch.device("cpu"), None))
        stored = list(store.rows())
    assert len(rows) == 1 and skipped == 0
    assert (stored[0]["student"], stored[0]["seed"], stored[0]["teacher"]) == (NO_STUDENT, 3, "convnet3")
    assert stored[0]["teacher_key"] == "test-teacher" and stored[0]["details"]["real_statistics"] == "computed"
    assert stored[0]["metric"] == "frechet_teacher_distance" and stored[0]["value"] > 0
