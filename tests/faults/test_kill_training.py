"""kill -9 and Ctrl-C in the middle of training, then the same command again: a teacher
(`ddbench teacher train`, the first phase of `ddbench run` under the rded evaluator) and the two
generator fine-tunes (`ddbench hieramp finetune`, `ddbench minimax finetune`) on tiny digits
settings end with exactly the weights of an uninterrupted run.

The moments are optimiser steps drawn from a seeded generator over the reference run's own
events: for SIGKILL, a step after the first checkpoint was committed (so the rerun really resumes
from it and redoes the lost steps); for Ctrl-C, any step. A Ctrl-C inside a fine-tune loses no
finished step: the running step ends, its state is saved, and the rerun resumes from that very step.
"""

from __future__ import annotations

import json
import random
import re
import signal
from pathlib import Path

import pytest
import torch

from tests.faults.conftest import ddbench, ddbench_together, error_lines, fresh_home

RNG = random.Random(20261206)
TIMING_KEYS = {"train_seconds", "seconds", "wall_seconds", "written", "resumed_from", "machine"}


def teacher_command(home: Path) -> tuple[str, ...]:
    return ("teacher", "train", "--dataset", "digits", "--arch", "convnet3", "--set", "epochs=2", "--device", "cpu")


def hieramp_command(home: Path) -> tuple[str, ...]:
    # 109 steps of batch 4: a checkpoint at step 100 (the recipe's interval), then 9 more
    return ("hieramp", "finetune", "--dataset", "digits", "--epochs", "0.3", "--batch-size", "4",
            "--out", str(home / "out"), "--device", "cpu")


def minimax_command(home: Path) -> tuple[str, ...]:
    # 2 epochs of 11 steps (batch 128): a checkpoint after each epoch
    return ("minimax", "finetune", "--dataset", "digits", "--epochs", "2", "--batch-size", "128",
            "--out", str(home / "out"), "--device", "cpu")


def _without_timing(value):
    if isinstance(value, dict):
        return {key: _without_timing(item) for key, item in value.items() if key not in TIMING_KEYS and "seconds" not in key}
    return value


def outcome(home: Path) -> dict:
    """What the command made: every tensor of every weight file, and its records without timings."""
    made = {}
    for path in sorted(home.rglob("*")):
        name = str(path.relative_to(home))
        if path.suffix in (".pt", ".pth") and ".state" not in path.name:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
            made[name] = {key: value.clone() for key, value in state.items() if isinstance(value, torch.Tensor)}
        elif path.suffix == ".json" and "teachers/measured" not in name:
            made[name] = _without_timing(json.loads(path.read_text()))
    assert made
    return made


def assert_same_outcome(home: Path, reference: dict) -> None:
    got = outcome(home)
    assert sorted(got) == sorted(reference)
    for name, expected in reference.items():
        if name.endswith(".json"):
            assert got[name] == expected, name
        else:
            assert got[name].keys() == expected.keys(), name
            assert all(torch.equal(got[name][key], expected[key]) for key in expected), name


def checkpoints(home: Path) -> list[Path]:
    return [path for path in home.rglob("*") if path.name.endswith((".state.pt", ".ckpt"))]


def step_after_first_checkpoint(sequence: list[list[str]], fraction: float) -> str:
    """`step:N:before` for a seeded step between the first checkpoint commit and the last step."""
    steps, checkpointed = [], False
    count = 0
    for kind, name in sequence:
        if kind == "step":
            count += 1
            if checkpointed:
                steps.append(count)
        elif kind == "replace" and name.endswith((".state.pt", ".ckpt")):
            checkpointed = True
    assert steps, "the reference run committed no checkpoint before its last step"
    return f"step:{steps[int(fraction * len(steps))]}:before"


def any_step(sequence: list[list[str]], fraction: float) -> str:
    total = sum(1 for kind, _ in sequence if kind == "step")
    return f"step:{1 + int(fraction * total)}:{RNG.choice(['before', 'after'])}"


COMMANDS = {"teacher": teacher_command, "hieramp": hieramp_command, "minimax": minimax_command}
#: (command, signal, how the step is chosen, fraction)
SCENARIOS = [
    ("teacher", signal.SIGKILL, step_after_first_checkpoint, RNG.random()),
    ("teacher", signal.SIGINT, any_step, RNG.random()),
    ("hieramp", signal.SIGKILL, step_after_first_checkpoint, RNG.random()),
    ("minimax", signal.SIGKILL, step_after_first_checkpoint, RNG.random()),
]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """Each command once, uninterrupted, counting its events."""
    root = tmp_path_factory.mktemp("training-references")
    homes = {name: root / name for name in COMMANDS}
    counts = {name: root / f"{name}-events.json" for name in COMMANDS}
    results = ddbench_together([(COMMANDS[name](homes[name]), homes[name], ("--count", str(counts[name]))) for name in COMMANDS],
                               timeout=600)
    for name, result in zip(COMMANDS, results):
        assert result.returncode == 0, (name, result.stderr[-3000:])
    return {name: (outcome(homes[name]), json.loads(counts[name].read_text())["sequence"]) for name in COMMANDS}


def test_sigkill_and_ctrl_c_mid_training_then_rerun_gives_the_uninterrupted_weights(references, tmp_path):
    homes = [fresh_home(tmp_path) for _ in SCENARIOS]
    options = [choose(references[name][1], fraction) for name, _, choose, fraction in SCENARIOS]
    flags = ["--kill-at" if signum == signal.SIGKILL else "--interrupt-at" for _, signum, _, _ in SCENARIOS]
    stopped = ddbench_together([(COMMANDS[name](home), home, (flag, option))
                                for (name, *_), home, flag, option in zip(SCENARIOS, homes, flags, options)], timeout=600)
    for (name, signum, *_), option, home, result in zip(SCENARIOS, options, homes, stopped):
        if signum == signal.SIGKILL:
            assert result.returncode == -signal.SIGKILL, (name, option, result.stderr[-2000:])
            assert checkpoints(home), (name, option)  # the rerun has a state to resume from
        else:
            assert result.returncode == 130, (name, option, result.stderr[-2000:])
            assert not any("Traceback" in line for line in error_lines(result.stderr)), (name, option)
            assert "interrupted:" in result.stderr
    rerun = ddbench_together([(COMMANDS[name](home), home) for (name, *_), home in zip(SCENARIOS, homes)], timeout=600)
    for (name, *_), option, home, result in zip(SCENARIOS, options, homes, rerun):
        assert result.returncode == 0, (name, option, result.stderr[-2000:])
        assert "started this training from scratch" not in result.stderr, (name, option)
        assert_same_outcome(home, references[name][0])


#: Ctrl-C inside each generator fine-tune: (command, where among its steps, before or after the
#: step's optimiser update), from a generator of its own (whatever else runs first)
FINETUNE_RNG = random.Random(20261207)
FINETUNE_INTERRUPTS = [(name, FINETUNE_RNG.random(), FINETUNE_RNG.choice(["before", "after"]))
                       for name in ("hieramp", "minimax")]


def test_ctrl_c_inside_a_fine_tune_saves_that_step_and_the_rerun_resumes_there_with_the_uninterrupted_weights(
        references, tmp_path):
    homes = [fresh_home(tmp_path) for _ in FINETUNE_INTERRUPTS]
    options = [f"step:{1 + int(fraction * sum(kind == 'step' for kind, _ in references[name][1]))}:{phase}"
               for name, fraction, phase in FINETUNE_INTERRUPTS]
    stopped = ddbench_together([(COMMANDS[name](home), home, ("--interrupt-at", option))
                                for (name, *_), home, option in zip(FINETUNE_INTERRUPTS, homes, options)], timeout=600)
    for (name, *_), option, home, result in zip(FINETUNE_INTERRUPTS, options, homes, stopped):
        step = int(option.split(":")[1])  # the step running when Ctrl-C came: it finishes and is saved
        assert result.returncode == 130, (name, option, result.stderr[-2000:])
        assert not any("Traceback" in line for line in error_lines(result.stderr)), (name, option)
        assert f"saved its state after step {step} of" in result.stderr, (name, option, result.stderr[-2000:])
    rerun = ddbench_together([(COMMANDS[name](home), home) for (name, *_), home in zip(FINETUNE_INTERRUPTS, homes)],
                             timeout=600)
    for (name, *_), option, home, result in zip(FINETUNE_INTERRUPTS, options, homes, rerun):
        step = int(option.split(":")[1])
        assert result.returncode == 0, (name, option, result.stderr[-2000:])
        assert re.search(rf"resuming .* from step {step}\b", result.stderr), (name, option, result.stderr[-2000:])
        assert_same_outcome(home, references[name][0])
