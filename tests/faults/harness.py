"""Run the ddbench CLI in this process with faults injected at chosen points.

    python -m tests.faults.harness [OPTIONS] -- <ddbench arguments>

The faults are real: a kill is `os.kill(os.getpid(), SIGKILL)` (no cleanup, no atexit), an
interrupt is a real SIGINT. What the harness adds is only *where* they land, counted in events:

    replace  os.replace (every atomic commit: manifest, class folder, checkpoint, teacher cache)
    png      PIL Image.save (each distilled image)
    row      ResultsStore.add (each results row)
    step     an AdamW or SGD step (students, teachers, generator fine-tunes: mid-training)
    exit     interpreter shutdown (an atexit callback, after the command has returned)

Options:
    --kill-at EVENT:N:before|after       SIGKILL at the N-th EVENT, before or after it happens
    --interrupt-at EVENT:N:before|after  SIGINT there instead (Ctrl-C)
    --count FILE                         write {"counts": {event: n}, "sequence": [[event, file]]}
                                         to FILE as JSON at exit
    --rendezvous DIR:K                   when a distilled-set writer opens, wait until K processes
                                         have (so two runs really write one folder at once)
    --quota DIR:BYTES                    simulated full disk: writes under DIR fail with ENOSPC once
                                         BYTES have been written there (for machines that cannot
                                         mount a small tmpfs)
    --readonly DIR                       simulated read-only mount: writing under DIR fails with
                                         EROFS, SQLite opens databases there read-only
    --linger FILE:SECONDS                after the command succeeds, touch FILE and wait up to
                                         SECONDS for a signal before exiting (so a signal sent
                                         from outside lands in the process, mid-run or while it
                                         shuts down, never after it is gone)
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

COUNTS: dict[str, int] = {}
SEQUENCE: list[tuple[str, str]] = []  # (event, what it touched), in order
TRIGGERS: list[tuple[str, int, str, int]] = []  # (event, n, phase, signal)


def _fire(event: str, phase: str) -> None:
    for wanted, n, when, signum in TRIGGERS:
        if wanted == event and when == phase and COUNTS.get(event, 0) == n:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signum)
            if signum == signal.SIGINT:
                time.sleep(0.05)  # let the KeyboardInterrupt land here


def _counted(event: str, function, describe):
    def wrapper(*args, **kwargs):
        COUNTS[event] = COUNTS.get(event, 0) + 1
        SEQUENCE.append((event, describe(*args)))
        _fire(event, "before")
        result = function(*args, **kwargs)
        _fire(event, "after")
        return result

    wrapper.__wrapped__ = function
    return wrapper


def _under(path, folder: Path) -> bool:
    try:
        resolved = Path(os.fspath(path)).resolve()
    except (TypeError, ValueError):
        return False  # a file descriptor, not a path
    return resolved == folder or folder in resolved.parents


class _QuotaFile:
    """A file object whose writes count against a shared byte budget (ENOSPC when spent)."""

    def __init__(self, handle, budget: dict, path):
        self._handle, self._budget, self._path = handle, budget, path

    def write(self, data):
        size = len(data)
        if self._budget["left"] < size:
            self._budget["left"] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget["left"] -= size
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)


def _writes(mode: str) -> bool:
    return any(flag in mode for flag in "wax+")


def install_quota(folder: Path, budget_bytes: int) -> None:
    budget = {"left": budget_bytes}
    real_open = builtins.open

    def quota_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(mode, str) and _writes(mode) and _under(file, folder):
            return _QuotaFile(handle, budget, file)
        return handle

    builtins.open = io.open = quota_open


def install_readonly(folder: Path) -> None:
    real_open, real_mkdir, real_replace, real_connect = builtins.open, os.mkdir, os.replace, sqlite3.connect

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def ro_open(file, mode="r", *args, **kwargs):
        if isinstance(mode, str) and _writes(mode) and _under(file, folder):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if _under(path, folder) and not os.path.isdir(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def ro_replace(source, target, *args, **kwargs):
        if _under(target, folder):
            refuse(target)
        return real_replace(source, target, *args, **kwargs)

    def ro_connect(database, *args, **kwargs):
        if not kwargs.get("uri") and _under(database, folder):
            kwargs["uri"] = True
            database = f"{Path(database).resolve().as_uri()}?mode=ro"
        return real_connect(database, *args, **kwargs)

    builtins.open = io.open = ro_open
    os.mkdir, os.replace, sqlite3.connect = ro_mkdir, ro_replace, ro_connect


def install_rendezvous(folder: Path, expected: int) -> None:
    from ddbench.core import distilled

    real_init = distilled.DistilledSetWriter.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(list(folder.iterdir())) < expected and time.monotonic() < deadline:
            time.sleep(0.02)

    distilled.DistilledSetWriter.__init__ = init


def install_events() -> None:
    from PIL import Image

    from ddbench.core import results

    os.replace = _counted("replace", os.replace, lambda source, target, *rest: Path(os.fspath(target)).name)
    save_file = _counted("png", Image.Image.save, lambda image, target, *rest: Path(os.fspath(target)).name)
    save = Image.Image.save
    # an event is an image file written; an encoding into memory (storage's canonical PNG bytes) is not
    Image.Image.save = lambda image, target, *rest, **options: (
        save_file if isinstance(target, (str, os.PathLike)) else save)(image, target, *rest, **options)
    results.ResultsStore.add = _counted("row", results.ResultsStore.add, lambda store, row: f"{row.student} seed {row.seed}")
    import torch

    for optimizer in (torch.optim.AdamW, torch.optim.SGD):
        optimizer.step = _counted("step", optimizer.step, lambda self, *rest: type(self).__name__)


def _exit_event() -> None:
    COUNTS["exit"] = COUNTS.get("exit", 0) + 1
    SEQUENCE.append(("exit", "shutdown"))
    _fire("exit", "before")


def linger(marker: Path, seconds: float) -> None:
    marker.touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    count_file = None
    lingering = None
    pending_readonly = []
    for option, value in zip(options[::2], options[1::2]):
        if option in ("--kill-at", "--interrupt-at"):
            event, n, phase = value.split(":")
            TRIGGERS.append((event, int(n), phase, signal.SIGKILL if option == "--kill-at" else signal.SIGINT))
        elif option == "--count":
            count_file = Path(value)
        elif option == "--rendezvous":
            folder, expected = value.rsplit(":", 1)
            install_rendezvous(Path(folder).resolve(), int(expected))
        elif option == "--quota":
            folder, budget = value.rsplit(":", 1)
            install_quota(Path(folder).resolve(), int(budget))
        elif option == "--readonly":
            pending_readonly.append(Path(value).resolve())
        elif option == "--linger":
            marker, seconds = value.rsplit(":", 1)
            lingering = (Path(marker), float(seconds))
        else:
            raise SystemExit(f"harness: unknown option {option}")
    # a Ctrl-C lands as it does from a terminal, even when the suite was started with SIGINT ignored
    # (a background job of a non-interactive shell passes SIG_IGN on, and Python then keeps it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install_events()
    for folder in pending_readonly:  # last: the events wrap the real os.replace, not the refusing one
        install_readonly(folder)
    import atexit

    if count_file is not None:
        atexit.register(lambda: count_file.write_text(json.dumps({"counts": COUNTS, "sequence": SEQUENCE})))
    atexit.register(_exit_event)  # registered last, so it runs first: before the count is written
    from ddbench.cli import main as cli_main

    try:
        cli_main(command, prog_name="ddbench")
    except SystemExit as exit:
        if lingering is not None and exit.code in (0, None):  # finished before any signal came
            linger(*lingering)
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
