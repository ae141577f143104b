"""The `dit` and `minimax` command groups and one end-to-end `ddbench run` on digits with the shipped DiT."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image


def test_dit_sample_writes_a_class_by_sample_grid(tmp_path):
    from ddbench.generators.dit.commands import dit_group

    out = tmp_path / "grid.png"
    result = CliRunner().invoke(dit_group, ["sample", "--classes", "3,7", "--per-class", "2", "--steps", "5",
                                            "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (2 * 16, 2 * 16)


def test_minimax_sample_writes_a_grid_from_the_shipped_fine_tune(tmp_path):
    from ddbench.methods.minimax.commands import minimax_group

    out = tmp_path / "grid.png"
    result = CliRunner().invoke(minimax_group, ["sample", "--classes", "1,4,9", "--per-class", "1", "--steps", "5",
                                                "--device", "cpu", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (1 * 16, 3 * 16)


def test_minimax_finetune_refuses_a_dataset_without_a_base(tmp_path):
    from ddbench.core.errors import ConfigError
    from ddbench.methods.minimax.commands import minimax_group

    with pytest.raises(ConfigError, match="--from"):
        CliRunner().invoke(minimax_group, ["finetune", "--dataset", "cifar10", "--data-root", str(tmp_path),
                                           "--out", str(tmp_path / "out")], catch_exceptions=False)


def test_command_modules_import_no_torch():
    code = ("import sys; import ddbench.methods.minimax.commands, ddbench.generators.dit.commands; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.slow
def test_run_minimax_on_digits_end_to_end(cli, tmp_path):
    result = cli("run", "--method", "minimax", "--dataset", "digits", "--ipc", "2", "--evaluator", "hard_label",
                 "--set", "epochs=1", "--set", "steps=10", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["extra"]["generator"] == "dit"
    assert len(list((tmp_path / "run" / "images").rglob("*.png"))) == 20
