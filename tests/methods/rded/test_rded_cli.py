"""`ddbench run --method rded` on the embedded digits set, through the command line."""

from __future__ import annotations

import json

import torch

from ddbench.core.registry import create_dataset
from ddbench.models.checkpoint import save_model
from ddbench.teachers import TeacherStore


def test_rded_on_digits_end_to_end(cli, tmp_path):
    digits = create_dataset("digits")
    teacher = TeacherStore(root=tmp_path / "teachers", recipe_overrides={"epochs": 1})(digits, "convnet3", torch.device("cpu"))
    checkpoint = save_model(teacher.model, tmp_path / "convnet3.pt")
    out = tmp_path / "run"
    result = cli("run", "--method", "rded", "--dataset", "digits", "--ipc", "10", "--evaluator", "hard_label",
                 "--set", "epochs=1", "--set", "method.mipc=40", "--teachers", "convnet3,resnet18",
                 "--teacher-ckpt", f"convnet3={checkpoint}", "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "top1_final" in result.output
    assert "distils with the first teacher (convnet3)" in " ".join(result.output.split())  # hard_label loads no teacher
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "rded" and manifest["complete"] and len(manifest["files"]) == 100
    assert manifest["extra"]["shuffle_patch_factor"] == 1  # 16 px
    assert manifest["extra"]["scoring_teacher"]["arch"] == "convnet3"
    assert manifest["extra"]["scoring_teacher"]["checkpoint_sha256"] == manifest["teacher"]["checkpoint_sha256"]
