"""`cao2` on digits: the shipped digits DiT with the run's teacher as the scorer, through the command line
(IPC 1, few refinement steps), and the method's seeding and selection on the same models."""

from __future__ import annotations

import json

import pytest
import torch

from ddbench.core.registry import create_dataset
from ddbench.models.checkpoint import save_model
from ddbench.teachers import TeacherStore


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    digits = create_dataset("digits")
    root = tmp_path_factory.mktemp("teachers")
    teacher = TeacherStore(root=root / "store", recipe_overrides={"epochs": 1})(digits, "convnet3", torch.device("cpu"))
    return teacher, save_model(teacher.model, root / "convnet3.pt")


def test_cao2_on_digits_end_to_end(cli, tmp_path, teacher):
    _, checkpoint = teacher
    out = tmp_path / "run"
    result = cli("run", "--method", "cao2", "--dataset", "digits", "--ipc", "1", "--evaluator", "hard_label",
                 "--set", "epochs=1", "--set", "method.steps=10", "--set", "method.refine_steps=2",
                 "--teachers", "convnet3", "--teacher-ckpt", f"convnet3={checkpoint}", "--device", "cpu",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "top1_final" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "cao2" and manifest["complete"] and len(manifest["files"]) == 10
    extra = manifest["extra"]
    assert extra["scorer"]["scorer"] == "teacher" and extra["scorer"]["arch"] == "convnet3"
    assert extra["scorer"]["checkpoint_sha256"] == manifest["teacher"]["checkpoint_sha256"]
    assert extra["scorer"]["input"] == "normalized" and extra["scorer"]["size"] == 16
    assert extra["candidates_per_class"] == 4 and extra["refine_timesteps"] == [1]  # range(1, 10 // 4)
    assert manifest["identity"]["weights"]["teacher"] == manifest["teacher"]["checkpoint_sha256"]
    assert manifest["identity"]["code"]["version"] == 1


def _method(overrides):
    from ddbench.core.pipeline import build_plugin
    from ddbench.methods.cao2 import CaO2

    return build_plugin(CaO2, create_dataset("digits"), {"steps": "8", "refine_steps": "3", **overrides})


def _task(teacher, seed=0):
    from ddbench.core.interfaces import DistillTask

    return DistillTask(create_dataset("digits"), 2, seed, torch.device("cpu"), writer=None, teacher=teacher[0])


def test_selection_keeps_the_teachers_confident_correct_candidates_and_seeds_are_per_image(teacher):
    method = _method({"batch_size": "3"})
    task = _task(teacher)
    method.prepare(task)
    latents = method.candidates(task, 3, 8)
    chosen, probabilities = method.select(task, 3, method.decode(latents))
    confidence, predicted = probabilities.max(1)
    correct = [i for i in range(8) if predicted[i] == 3]
    expected = sorted(correct, key=lambda i: -confidence[i].item())[:2]
    assert chosen[:len(expected)] == expected
    other = _method({"batch_size": "8"})
    other.prepare(task)
    torch.testing.assert_close(other.candidates(task, 3, 8), latents, atol=1e-5, rtol=1e-5)  # batch never matters
    assert not torch.allclose(other.candidates(_task(teacher, seed=1), 3, 8), latents)
    refined = method.refine(task, 3, latents[chosen])
    one_by_one = _method({"batch_size": "1"})
    one_by_one.prepare(task)
    torch.testing.assert_close(one_by_one.refine(task, 3, latents[chosen]), refined, atol=1e-5, rtol=1e-5)
    assert refined.shape == latents[chosen].shape and not torch.equal(refined, latents[chosen])
    assert torch.equal(_method({"refine_steps": "0"}).refine(task, 3, latents[chosen]), latents[chosen])


def test_bad_knobs_are_config_errors():
    from ddbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="refine_model_timestep"):
        _method({"refine_model_timestep": "original"})
    with pytest.raises(ConfigError, match="no refinement timestep"):
        _method({"steps": "4"})


def test_a_refused_config_writes_no_run_folder(tmp_path):
    """The full-size dry run's `--set steps=2` stopped in prepare() after the manifest was written, so the
    corrected command was refused ("already holds a different distilled set") until the folder was deleted."""
    from ddbench.core.errors import ConfigError
    from ddbench.core.pipeline import build_plugin, distill
    from ddbench.core.progress import NullProgress
    from ddbench.methods.cao2 import CaO2

    digits, out, scorer = create_dataset("digits"), tmp_path / "run", tmp_path / "scorer.pth"
    scorer.write_bytes(b"a scorer file: hashed for the run identity, loaded only in prepare()")
    with pytest.raises(ConfigError, match="no refinement timestep"):
        method = build_plugin(CaO2, digits, {"steps": "2", "refine_steps": "1", "scorer": str(scorer)})
        distill(method, digits, 1, 0, out, torch.device("cpu"), None, NullProgress())
    assert not (out / "manifest.json").exists()
