"""kill -9 and Ctrl-C at seeded moments of `ddbench run`, then the same command again: it resumes,
and the distilled set and the results rows are exactly those of an uninterrupted run.

The moments are drawn from a seeded generator over the reference run's own event sequence
(every atomic rename, every distilled image, every results row), one per phase, before or after
the event; two more are real asynchronous signals sent by this process while students train.
Independent scenarios run side by side to keep the suite's wall time down.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from tests.faults.conftest import (
    REPO,
    TINY_RUN,
    assert_same_as_reference,
    ddbench,
    ddbench_together,
    error_lines,
    fresh_home,
)

RNG = random.Random(20240611)
#: (phase, which event of that phase as a fraction of its count, before or after it)
#: (renames are hit before they happen: the temporary file is written, the target not yet replaced)
KILL_POINTS = [
    ("distilled class or manifest rename", RNG.random(), "before"),
    ("distilled image", RNG.random(), "after"),
    ("resume state rename", RNG.random(), "before"),
    ("results row", RNG.random(), RNG.choice(["before", "after"])),
]


def _phase(event: tuple[str, str]) -> str:
    kind, name = event
    if kind == "png":
        return "distilled image"
    if kind == "row":
        return "results row"
    if kind == "step":
        return "student training step"
    if kind == "replace" and ".state.pt" in name:
        return "resume state rename"
    return "distilled class or manifest rename" if kind == "replace" else "other"


def kill_option(sequence: list[tuple[str, str]], phase: str, fraction: float, when: str) -> str:
    """`kind:n:when` for the event of `phase` at `fraction` of that phase (the harness counts per kind)."""
    positions, seen = [], {}
    for event in sequence:
        seen[event[0]] = seen.get(event[0], 0) + 1
        if _phase(event) == phase:
            positions.append((event[0], seen[event[0]]))
    assert positions, f"the reference run has no {phase} event"
    kind, index = positions[int(fraction * len(positions))]
    return f"{kind}:{index}:{when}"


def test_sigkill_at_seeded_points_of_every_phase_then_rerun_gives_the_uninterrupted_result(reference, tmp_path):
    options = [kill_option(reference.sequence, *point) for point in KILL_POINTS]
    homes = [fresh_home(tmp_path) for _ in options]
    killed = ddbench_together([(TINY_RUN, home, ("--kill-at", option)) for home, option in zip(homes, options)])
    for option, result in zip(options, killed):
        assert result.returncode == -signal.SIGKILL, (option, result.stderr[-2000:])
    resumed = ddbench_together([(TINY_RUN, home) for home in homes])
    for option, home, result in zip(options, homes, resumed):
        assert result.returncode == 0, (option, result.stderr[-2000:])
        assert_same_as_reference(home, reference)


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the run never reached the point where the signal is sent"
        time.sleep(0.005)


def test_sigkill_and_ctrl_c_while_students_train_then_rerun_gives_the_uninterrupted_result(reference, tmp_path):
    """Real asynchronous signals from this process, sent a seeded delay after that run's own first
    resume state appears. The tiny run has about a second of training left by then, so the signal
    may land while students train or after the command has returned: `--linger` keeps each process
    alive after its command until the signal has arrived, and both landings must give the same
    outcome (SIGKILL: -9; Ctrl-C: exit 130, one line, no traceback; then a rerun that ends where an
    uninterrupted run ends). A third run gets its Ctrl-C only once its command has returned (it
    died of SIGINT, -2, before: the flaky failure of this test)."""
    scenarios = [(signal.SIGKILL, "state"), (signal.SIGINT, "state"), (signal.SIGINT, "returned")]
    homes = [fresh_home(tmp_path) for _ in scenarios]
    markers = [tmp_path / f"lingering-{index}" for index in range(len(scenarios))]
    processes = [ddbench(TINY_RUN, home, ("--linger", f"{marker}:120"), wait=False) for home, marker in zip(homes, markers)]
    waiting = set(range(len(scenarios)))
    send_at: dict[int, float] = {}
    deadline = time.monotonic() + 240
    while waiting:
        assert time.monotonic() < deadline, "a run never reached the point where its signal is sent"
        for index in sorted(waiting):
            (signum, trigger), home, marker, process = scenarios[index], homes[index], markers[index], processes[index]
            assert process.poll() is None, (index, process.communicate()[1][-2000:])  # lingers until signalled
            state_dir = home / "cache" / "eval-state"
            reached = marker.exists() or (trigger == "state" and state_dir.is_dir() and any(state_dir.glob("*.state.pt")))
            if index not in send_at and reached:
                send_at[index] = time.monotonic() + random.Random(index).uniform(0.0, 0.2)
            if index in send_at and time.monotonic() >= send_at[index]:
                process.send_signal(signum)
                waiting.discard(index)
        time.sleep(0.005)
    for (signum, trigger), process in zip(scenarios, processes):
        _, stderr = process.communicate(timeout=120)
        if signum == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL
        else:  # Ctrl-C: one line that says what is kept, exit status 130, no traceback
            assert process.returncode == 130, (trigger, stderr[-2000:])
            assert not any("Traceback" in line for line in error_lines(stderr)), trigger
            assert "interrupted: finished classes and evaluations are kept" in stderr, trigger
    resumed = ddbench_together([(TINY_RUN, home) for home in homes])
    for home, result in zip(homes, resumed):
        assert result.returncode == 0, result.stderr[-2000:]
        assert_same_as_reference(home, reference)


#: Ctrl-C (a real SIGINT the process sends itself) at a seeded event of each phase of the tiny run
INTERRUPT_RNG = random.Random(20261205)
INTERRUPT_POINTS = [
    ("distilled image", INTERRUPT_RNG.random(), "after"),
    ("distilled class or manifest rename", INTERRUPT_RNG.random(), "before"),
    ("student training step", INTERRUPT_RNG.random(), INTERRUPT_RNG.choice(["before", "after"])),
    ("resume state rename", INTERRUPT_RNG.random(), "before"),
    ("results row", INTERRUPT_RNG.random(), "after"),
]


def assert_ctrl_c_reported(result: subprocess.CompletedProcess, what) -> None:
    assert result.returncode == 130, (what, result.stderr[-2000:])
    assert not any("Traceback" in line for line in error_lines(result.stderr)), (what, result.stderr[-2000:])
    assert "interrupted: finished classes and evaluations are kept" in result.stderr, what


def test_ctrl_c_at_seeded_points_of_every_phase_and_at_shutdown_then_rerun_gives_the_uninterrupted_result(reference, tmp_path):
    """Every phase (distilling, committing classes, training students, saving their state,
    recording rows) and the interpreter's shutdown after a finished run: exit 130 with the one
    line, and the same command then ends where an uninterrupted run ends."""
    options = [kill_option(reference.sequence, *point) for point in INTERRUPT_POINTS] + ["exit:1:before"]
    homes = [fresh_home(tmp_path) for _ in options]
    interrupted = ddbench_together([(TINY_RUN, home, ("--interrupt-at", option)) for home, option in zip(homes, options)])
    for option, result in zip(options, interrupted):
        assert_ctrl_c_reported(result, option)
    assert_same_as_reference(homes[-1], reference)  # interrupted at shutdown: everything was already kept
    resumed = ddbench_together([(TINY_RUN, home) for home in homes])
    for option, home, result in zip(options, homes, resumed):
        assert result.returncode == 0, (option, result.stderr[-2000:])
        assert_same_as_reference(home, reference)


FIT_SCRIPT = """
import os, signal, sys
from pathlib import Path
from tests.faults import harness
kind, n, when = sys.argv[2].split(":")
harness.TRIGGERS.append((kind, int(n), when, signal.SIGKILL))
os.replace = harness._counted("replace", os.replace, lambda source, target, *rest: Path(target).name)
from tests.training import tiny_fit
tiny_fit.run(Path(sys.argv[1]), kill_at=int(sys.argv[3]) if len(sys.argv) > 3 else None)
"""


def test_sigkill_during_a_fine_tune_step_or_checkpoint_write_resumes_bit_for_bit(tmp_path):
    """The generator step loop (`fit`, which VAR training and HIERAMP fine-tuning run on): killed in
    the middle of a seeded step, or between writing a checkpoint and renaming it into place."""
    import torch

    from tests.training.tiny_fit import CHECKPOINT_EVERY, TOTAL_STEPS, run

    rng = random.Random(7)
    mid_step = rng.randrange(1, TOTAL_STEPS)
    checkpoint_write = rng.randrange(1, TOTAL_STEPS // CHECKPOINT_EVERY + 1)
    folders = [tmp_path / "mid-step", tmp_path / "mid-checkpoint"]
    arguments = [[str(folders[0]), "replace:999:before", str(mid_step)], [str(folders[1]), f"replace:{checkpoint_write}:before"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", FIT_SCRIPT, *args], cwd=REPO, env=env) for args in arguments]
    assert [process.wait(timeout=120) for process in processes] == [-signal.SIGKILL] * 2

    straight, model, ema = run(tmp_path / "straight")
    for folder in folders:
        resumed, resumed_model, resumed_ema = run(folder)
        assert resumed.resumed_from < TOTAL_STEPS and resumed.finished
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values()))
        assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), resumed_ema.state_dict().values()))
        assert torch.equal(straight.losses, resumed.losses)
        assert sorted(p.name for p in folder.iterdir()) == ["tiny_last.ckpt"]  # the killed write left nothing
