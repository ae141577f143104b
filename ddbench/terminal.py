"""A rich rendering of the core's Progress interface, for the CLI (progress on stderr).

On a terminal: nested live bars. Elsewhere (a log file, CI, `nohup`): plain lines, one when a
step starts, then at most one every `interval` seconds with its count, elapsed time and an
estimate of the time left, and one when it ends, so an hours-long run is never silent in a log."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ddbench.core import distributed
from ddbench.core.progress import NullProgress


class _RichTask:
    def __init__(self, progress: Progress, task_id: int):
        self._progress, self._task_id = progress, task_id

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def update(self, description: str) -> None:
        self._progress.update(self._task_id, description=description)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class _LineTask:
    """A step reported as log lines (non-interactive output)."""

    def __init__(self, console: Console, description: str, total: int | None, interval: float):
        self.console, self.description, self.total, self.interval = console, description, total, interval
        self.done, self.started = 0, time.monotonic()
        self.last_line = self.started

    def _line(self, prefix: str) -> str:
        elapsed = time.monotonic() - self.started
        count = f" {self.done}/{self.total}" if self.total else (f" {self.done}" if self.done else "")
        left = ""
        if self.total and 0 < self.done < self.total:
            left = f", about {_clock(elapsed / self.done * (self.total - self.done))} left"
        return f"{prefix}{self.description}:{count} ({_clock(elapsed)} elapsed{left})"

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self.console.print(self._line(""), highlight=False, markup=False)

    def update(self, description: str) -> None:
        self.description = description


class RichProgress:
    """Nested bars for long work; finished bars disappear so only the current work shows. Under
    torchrun only rank 0 draws (the other ranks' bars would overwrite each other)."""

    def __init__(self, console: Console | None = None, interval: float = 30.0):
        self.console = console or Console(stderr=True)
        self._quiet = NullProgress() if not distributed.is_main() else None
        self.interval = interval
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self._depth = 0

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[_RichTask]:
        if self._quiet is not None:
            with self._quiet.task(description, total) as task:
                yield task
            return
        if not self.console.is_terminal:
            line_task = _LineTask(self.console, description, total, self.interval)
            self.console.print(f"{description}: started" + (f" ({total} steps)" if total else ""), highlight=False, markup=False)
            yield line_task  # type: ignore[misc]
            self.console.print(line_task._line("done: "), highlight=False, markup=False)
            return
        if self._depth == 0:
            self._progress.start()
        self._depth += 1
        task_id = self._progress.add_task(description, total=total)
        try:
            yield _RichTask(self._progress, task_id)
        finally:
            self._progress.remove_task(task_id)
            self._depth -= 1
            if self._depth == 0:
                self._progress.stop()

    def log(self, message: str) -> None:
        if self._quiet is None:
            self.console.print(f"[dim]{message}[/dim]")
