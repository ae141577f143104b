"""Progress in a log file: long work is never silent when stderr is not a terminal."""

import io

from rich.console import Console

from ddbench.terminal import RichProgress


def test_non_terminal_output_gets_start_periodic_and_end_lines():
    buffer = io.StringIO()
    progress = RichProgress(Console(file=buffer, force_terminal=False, width=200), interval=0.0)
    with progress.task("teacher resnet18 on woof", total=3) as task:
        for _ in range(3):
            task.advance()
        task.update("teacher resnet18 on woof (epoch 3: top-1 41.0%)")
    progress.log("cached")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "teacher resnet18 on woof: started (3 steps)"
    assert lines[1].startswith("teacher resnet18 on woof: 1/3 (0:00:00 elapsed, about")
    assert lines[-2].startswith("done: teacher resnet18 on woof (epoch 3: top-1 41.0%): 3/3") and lines[-1] == "cached"
