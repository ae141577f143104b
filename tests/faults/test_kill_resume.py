"""kill -9 and Ctrl-C at seeded moments of `ddbench run`, then the same command again: it resumes,
and the distilled set and the results rows are exactly those of an uninterrupted run.

The moments are drawn from a seeded generator over the reference run's own event sequence
(every atomic rename, every distilled image, every results row), one per phase, before or after
the event; two more are real asynchronous signals sent by this process while students train.
Independent scenarios run side by side to keep the suite's wall time down.
"""

from __future__ import annotations

import random
import signal
import time

from tests.faults.conftest import TINY_RUN, assert_same_as_reference, ddbench, ddbench_together, error_lines, fresh_home

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
        time.sleep(0.01)


def test_sigkill_and_ctrl_c_while_students_train_then_rerun_gives_the_uninterrupted_result(reference, tmp_path):
    """Real asynchronous signals, sent at a seeded delay after the first resume state appears."""
    signals = (signal.SIGKILL, signal.SIGINT)
    homes = [fresh_home(tmp_path) for _ in signals]
    processes = [ddbench(TINY_RUN, home, wait=False) for home in homes]
    for signum, home, process in zip(signals, homes, processes):
        state_dir = home / "cache" / "eval-state"
        _wait_for(lambda: state_dir.is_dir() and any(state_dir.glob("*.state.pt")) or process.poll() is not None)
        time.sleep(random.Random(int(signum)).uniform(0.0, 0.2))
        process.send_signal(signum)
    for signum, process in zip(signals, processes):
        _, stderr = process.communicate(timeout=120)
        if signum == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL
        else:  # Ctrl-C: one line that says what is kept, exit status 130, no traceback
            assert process.returncode == 130, stderr[-2000:]
            assert not any("Traceback" in line for line in error_lines(stderr))
            assert "interrupted: finished classes and evaluations are kept" in stderr
    resumed = ddbench_together([(TINY_RUN, home) for home in homes])
    for home, result in zip(homes, resumed):
        assert result.returncode == 0, result.stderr[-2000:]
        assert_same_as_reference(home, reference)
