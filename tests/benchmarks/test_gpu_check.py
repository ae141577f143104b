"""`benchmarks/gpu_check.sh` runs here, on the CPU at its tiny setting, through the bf16 test switch
(so every autocast branch the GPU takes runs), and prints its one table with every row and sane
numbers; without the switch the CPU agrees with itself exactly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path


from benchmarks.gpu_check import CPU, TINY, load_digits_var, var_agreement
from ddbench.core.device import FORCE_CPU_BF16

REPO = Path(__file__).resolve().parents[2]
EXPECTED_CHECKS = ["cpu vs cpu: var digits", "cpu vs cpu: hieramp digits", "cpu vs cpu: dit digits",
                   *["hieramp d16 sampling"] * len(TINY.d16_batches), "amplification overhead",
                   *["rded evaluator step"] * len(TINY.rded_batches), "DDP step (gloo, 1 process)"]


def table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines[0] == "| check | setting | result |"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_the_script_prints_every_row_with_sane_numbers_on_a_cpu(tmp_path):
    rows_file = tmp_path / "rows.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "DDBENCH_HOME": str(tmp_path / "home")}
    env.pop(FORCE_CPU_BF16, None)
    result = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--cpu-bf16",
                             "--json", str(rows_file)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = table_rows(result.stdout)
    assert [row[0] for row in table] == EXPECTED_CHECKS
    assert all(len(row) == 3 and all(row) for row in table)
    recorded = json.loads(rows_file.read_text())["rows"]
    assert [row["check"] for row in recorded] == EXPECTED_CHECKS
    numbers = [row["numbers"] for row in recorded]
    assert all(math.isfinite(value) for row in numbers for value in row.values())

    var, hieramp, dit = numbers[:3]
    for row in (var, hieramp):  # bf16 really ran on the "device" side and the reference stayed float32
        assert row["token_agreement"] >= 0.9 and 0 < row["max_abs_logit_diff"] < 2.0
    assert hieramp["class_agreement"] >= 0.9
    assert 0 < dit["max_abs_output_diff"] < 1.0 and dit["max_abs_latent_diff"] < dit["latent_scale"]
    d16 = numbers[3:3 + len(TINY.d16_batches)]
    assert [row["batch"] for row in d16] == list(TINY.d16_batches)
    assert all(row["images_per_second"] > 0 for row in d16)
    overhead = numbers[3 + len(TINY.d16_batches)]
    assert 0 < overhead["var_ms"] and -0.5 < overhead["hieramp_over_var_cls"] < 1.0 and -0.5 < overhead["var_cls_over_var"] < 1.0
    rded = numbers[4 + len(TINY.d16_batches):-1]
    assert [row["batch"] for row in rded] == list(TINY.rded_batches)
    assert all(0 < row["seconds_per_step"] < 60 for row in rded)
    ddp = numbers[-1]
    # one process: DDP's all-reduce is the identity, so its gradients are the plain step's exactly
    assert ddp["max_abs_grad_diff"] == 0.0 and ddp["grad_scale"] > 0 and ddp["seconds_per_step"] > 0


def test_without_the_switch_the_cpu_agrees_with_itself_exactly(monkeypatch):
    monkeypatch.delenv(FORCE_CPU_BF16, raising=False)
    row = var_agreement("var digits", load_digits_var, CPU, 2, class_head=False)
    assert row.numbers == {"token_agreement": 1.0, "max_abs_logit_diff": 0.0}
