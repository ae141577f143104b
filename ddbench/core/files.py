"""Writing state that must survive crashes, full disks and a second process doing the same.

- `write_atomic`: write under a temporary name unique to this process, then rename over the
  target, so a reader (or the next run after a kill -9) sees the old file or the new one, never a
  torn one; a failed write removes its temporary file.
- `temporary_sibling` / `remove_stale_temporaries`: temporary names carry this host and pid, so
  a cleanup removes only what a dead process left, never what a live one is writing.
- `locked`: an advisory lock (fcntl, msvcrt on Windows) around read-modify-write of shared files.
- `disk_errors`: a full, read-only or forbidden disk becomes one `StorageError` line naming the
  path and what to do, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ddbench.core.errors import StorageError
from ddbench.core.hashing import stable_hash

#: errno -> (what happened, what to do)
DISK_ERRNOS = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EROFS: ("the file system is read-only", "use a writable folder"),
    errno.EACCES: ("permission denied", "use a folder you can write to"),
    errno.EPERM: ("operation not permitted", "use a folder you can write to"),
}
if hasattr(errno, "EDQUOT"):  # not on Windows
    DISK_ERRNOS[errno.EDQUOT] = ("the disk quota is exceeded", "free some space")
#: a temporary file of another host is only removed when older than this (no pid check possible)
FOREIGN_TEMPORARY_AGE_S = 24 * 3600


def storage_error(exc: OSError, path: str | os.PathLike, doing: str) -> StorageError | None:
    """A StorageError for a full / read-only / forbidden disk, None for any other OSError."""
    if exc.errno not in DISK_ERRNOS:
        return None
    what, fix = DISK_ERRNOS[exc.errno]
    where = exc.filename or path
    if _TEMPORARY.match(Path(os.fspath(where)).name):  # name the file being written, not its temporary
        where = path
    return StorageError(
        f"cannot {doing} {where}: {what} ({errno.errorcode.get(exc.errno, exc.errno)}); {fix}, or point "
        "DDBENCH_HOME / --out / --results elsewhere, then rerun the same command (finished work is kept)"
    )


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike, doing: str = "write") -> Iterator[None]:
    """Turn ENOSPC / EDQUOT / EROFS / EACCES / EPERM raised inside into a StorageError naming `path`."""
    try:
        yield
    except OSError as exc:
        error = storage_error(exc, path, doing)
        if error is None:
            raise
        raise error from exc


# ----- temporary names -----
def _host_tag() -> str:
    return stable_hash(socket.gethostname(), 6)


def temporary_sibling(path: str | os.PathLike) -> Path:
    """`<dir>/.<name>.<host>-<pid>-<random>.tmp`: unique to this process, hidden from readers."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a pid we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


#: what `temporary_sibling` makes: .<name>.<host tag>-<pid>-<8 hex>.tmp (nothing else is ever removed)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def _owner_is_gone(temporary: Path, host: str, pid: int) -> bool:
    """Gone when the pid is dead on this host, or (another host's file) when the file is old."""
    if host == _host_tag():
        return pid != os.getpid() and not process_alive(pid)
    try:
        return time.time() - temporary.lstat().st_mtime > FOREIGN_TEMPORARY_AGE_S
    except FileNotFoundError:
        return False


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders in `folder` (made by `temporary_sibling`) whose
    writer died; a live writer's, and any file ddbench did not name, are left alone."""
    removed = []
    try:
        candidates = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return removed
    for temporary in candidates:
        match = _TEMPORARY.match(temporary.name)
        if match and _owner_is_gone(temporary, match["host"], int(match["pid"])):
            with contextlib.suppress(FileNotFoundError):
                if temporary.is_dir() and not temporary.is_symlink():
                    shutil.rmtree(temporary)
                else:
                    temporary.unlink()
            removed.append(temporary)
    return removed


# ----- atomic writes -----
def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[Path], None], *, fsync: bool = True) -> Path:
    """Write `content` (bytes, text, or a function that writes a given path) to `path` atomically.

    A failure at any point (full disk included) removes the temporary file and leaves `path` as it
    was; ENOSPC, EROFS and friends become a StorageError naming `path`."""
    path = Path(path)
    temporary = temporary_sibling(path)
    with disk_errors(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent)  # what writers killed here before left behind
            if callable(content):
                content(temporary)
            else:
                with open(temporary, "wb") as handle:
                    handle.write(content.encode() if isinstance(content, str) else content)
            if fsync:
                _fsync(temporary)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
    return path


def torch_save_atomic(payload: Any, path: str | os.PathLike) -> Path:
    """`torch.save` made atomic by `write_atomic`. torch swallows the OSError of a full disk and
    fails later with an opaque RuntimeError ("unexpected pos"); writing through a handle that
    remembers the OSError lets the real cause (ENOSPC, naming `path`) come out instead."""
    import torch

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            recorder = _ErrorRecordingWriter(handle)
            try:
                torch.save(payload, recorder)
            except RuntimeError:
                if recorder.error is not None:
                    raise recorder.error from None
                raise

    return write_atomic(path, write)


class _ErrorRecordingWriter:
    """A writable file object that keeps the first OSError its writes raised."""

    def __init__(self, handle) -> None:
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def unreadable_reason(exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words (torch's own message
    suggests weights_only=False, which is exactly what must not be done with a planted file)."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds objects other than tensors and plain values; loading them could run code, so it was not loaded"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0]


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems refuse fsync on a read-only handle
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def set_aside(path: str | os.PathLike, reason: str = "corrupt") -> Path:
    """Rename a bad file to `<name>.<reason>-<time>` (kept for inspection, never read again)."""
    path = Path(path)
    target = path.with_name(f"{path.name}.{reason}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
    with disk_errors(path, "move aside"):
        os.replace(path, target)
    return target


# ----- locks -----
@contextlib.contextmanager
def locked(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (created if needed) for the block.

    Every ddbench process that changes a shared file (a distilled set's manifest and class folders)
    takes the same lock first; the lock goes away with the process, so a kill -9 never leaves it
    held."""
    lock_path = Path(lock_path)
    with disk_errors(lock_path, "create the lock file"):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+b")
    try:
        _lock(handle)
        yield
    finally:
        with contextlib.suppress(OSError):
            _unlock(handle)
        handle.close()


try:
    import fcntl

    def _lock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _lock(handle) -> None:
        handle.seek(0)
        while True:
            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError:  # LK_LOCK gives up after ~10 s; keep waiting like flock does
                continue

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
