"""Progress reporting: the library calls this interface, the CLI renders it; the library prints nothing."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol


class ProgressTask(Protocol):
    def advance(self, amount: int = 1) -> None: ...

    def update(self, description: str) -> None: ...


class Progress(Protocol):
    """Something that can show nested long-running steps (a rich progress bar, a log, nothing)."""

    def task(self, description: str, total: int | None = None) -> "contextmanager[ProgressTask]": ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: int = 1) -> None:
        pass

    def update(self, description: str) -> None:
        pass


class NullProgress:
    """The default: report nothing (library use, tests)."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[ProgressTask]:
        yield _NullTask()

    def log(self, message: str) -> None:
        pass


class RecordingProgress(NullProgress):
    """Keeps the log messages; handy in tests and notebooks."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def log(self, message: str) -> None:
        self.messages.append(message)
