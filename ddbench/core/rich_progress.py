"""A rich rendering of the core's Progress interface, for the CLI (progress on stderr)."""

from __future__ import annotations

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


class RichProgress:
    """Nested bars for long work; finished bars disappear so only the current work shows. Under
    torchrun only rank 0 draws (the other ranks' bars would overwrite each other)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self._quiet = NullProgress() if not distributed.is_main() else None
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
