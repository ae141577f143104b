"""Scale-out on torch.distributed: the one place that knows about ranks.

Single process by default. Under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in the environment) `session()` joins the process group (NCCL for CUDA tensors, gloo
for CPU tensors) and everything else asks this module who it is (`rank`, `world_size`,
`is_main`), which device it owns (`device_for`), and exchanges small objects (`barrier`,
`broadcast_object`, `all_gather_object`, `send_to_main` / `receive_on_main`).

Small objects travel as JSON (never pickles) through the rendezvous store (the TCPStore torchrun
already runs), tensors through the process group. Store waits have no deadline, because a rank can legitimately wait for
hours (rank 0 waiting for another rank's last class); instead every wait watches for a failure:
a rank that raises posts its message before it exits (`report_failure`), and a watchdog thread in
every rank stops its process with that message, or when a rank stops beating (killed, machine
lost) or the store disappears. Collectives in the process group (DDP's all-reduces) also time out
after DDBENCH_DIST_TIMEOUT seconds as a last resort.

Inside `local_only()` a process works alone (one whole evaluation job per rank): collectives
become no-ops and `data_parallel_world()` is (0, 1).

This module imports torch only when a process group is actually started, so the CLI stays light.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from ddbench.core.errors import ConfigError, DDBenchError

T = TypeVar("T")

#: seconds between watchdog polls of the failure flag
POLL_INTERVAL_S = 0.5
#: exit status of a rank stopped because another rank failed
EXIT_PEER_FAILED = 3


class PeerFailure(DDBenchError):
    """Another rank failed (or vanished); this one stops instead of waiting forever."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from exc


def launched_distributed() -> bool:
    """Whether torchrun (or anything setting its variables) started this process as one of several."""
    return "RANK" in os.environ and _env_int("WORLD_SIZE", 1) > 1


def process_label() -> str:
    """'[rank 1] ' under torchrun with several processes, '' otherwise: a prefix for messages."""
    return f"[rank {_env_int('RANK', 0)}] " if launched_distributed() else ""


@dataclass
class _Session:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    store: Any  # a TCPStore client for the main thread
    namespace: str
    heartbeat_timeout_s: float
    watchdog: "_Watchdog | None" = None
    sequence: int = 0
    closing: bool = False

    def key(self, *parts: object) -> str:
        return "/".join([self.namespace, *map(str, parts)])

    def next_key(self, kind: str) -> str:
        """Keys of collectives: every rank calls them in the same order, so sequence numbers agree."""
        self.sequence += 1
        return self.key(kind, self.sequence)

    @property
    def failure_key(self) -> str:
        return self.key("failure")


_session: _Session | None = None
_local_depth = 0


# ----- who am I -----
def rank() -> int:
    return _session.rank if _session is not None else 0


def world_size() -> int:
    return _session.world_size if _session is not None else 1


def local_rank() -> int:
    return _session.local_rank if _session is not None else 0


def is_main() -> bool:
    """Rank 0 of the whole run (or a single process): the only writer of results and manifests."""
    return rank() == 0


def is_distributed() -> bool:
    """Whether several processes are working together right now (False inside `local_only`)."""
    return _session is not None and _session.world_size > 1 and _local_depth == 0


def data_parallel_world() -> tuple[int, int]:
    """(rank, world size) for data-parallel training: (0, 1) in a single process or `local_only`."""
    return (rank(), world_size()) if is_distributed() else (0, 1)


def is_writer() -> bool:
    """Whether this process writes what the current work produces (checkpoints, trained weights):
    rank 0 of a data-parallel training, or any process working alone."""
    return data_parallel_world()[0] == 0


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """This process works alone inside the block (a whole evaluation job per rank): no DDP, and
    collectives return at once."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def main_process_only(function: Callable[..., T]) -> Callable[..., T | None]:
    """Run `function` on the writer process only (see `is_writer`); the others get None."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        return function(*args, **kwargs) if is_writer() else None

    return wrapper


def device_for(name: str = "auto"):
    """The torch device of this rank under torchrun: `auto` and `cuda` mean cuda:LOCAL_RANK (CPU
    when no GPU is visible to `auto`); another GPU index would put several ranks on one device,
    which is refused. Single processes resolve devices in `ddbench.core.device`."""
    import torch

    name = (name or "auto").lower()
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name in ("auto", "cuda", f"cuda:{local_rank()}"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was asked for but no CUDA device is visible; use --device cpu or auto")
        if local_rank() >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank()} has no GPU (only {torch.cuda.device_count()} visible); "
                              "start at most one process per GPU (--nproc_per_node)")
        return torch.device("cuda", local_rank())
    if name.startswith("cuda"):
        raise ConfigError(f"--device {name}: under torchrun every process takes cuda:LOCAL_RANK; pass --device cuda "
                          "or auto (CUDA_VISIBLE_DEVICES chooses the GPUs)")
    raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")


# ----- starting and stopping -----
def initialize() -> bool:
    """Join the process group described by torchrun's environment; False when this is a single
    process. NCCL carries CUDA tensors and gloo CPU tensors (DDBENCH_DIST_BACKEND overrides)."""
    global _session
    if _session is not None:
        return True
    if not launched_distributed():
        return False
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigError(f"RANK and WORLD_SIZE are set but {name} is not; start ddbench with torchrun")
    world, this_rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available()
    backend = os.environ.get("DDBENCH_DIST_BACKEND") or ("cpu:gloo,cuda:nccl" if cuda else "gloo")
    if cuda and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    timeout = timedelta(seconds=_env_int("DDBENCH_DIST_TIMEOUT", 1800))
    dist.init_process_group(backend=backend, rank=this_rank, world_size=world, timeout=timeout)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(seconds=300))
    namespace = "ddbench/{}/{}".format(os.environ.get("TORCHELASTIC_RUN_ID", "run"),
                                       os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    _session = _Session(this_rank, world, local, backend, store, namespace,
                        heartbeat_timeout_s=float(_env_int("DDBENCH_DIST_HEARTBEAT_TIMEOUT", 300)))
    _session.watchdog = _Watchdog(_session, store.clone())
    _session.watchdog.start()
    return True


def shutdown(clean: bool = True) -> None:
    """Leave the process group. A clean exit first waits for every rank (so the store outlives
    everyone's last read); after an error it only releases this process's resources."""
    global _session
    session = _session
    if session is None:
        return
    import torch.distributed as dist

    session.closing = True
    try:
        if clean:
            barrier("shutdown")
            session.store.add(session.key("departed"), 1)
            if session.rank == 0:  # under a plain launcher rank 0 hosts the store: leave last
                _poll(lambda: session.store.add(session.key("departed"), 0) >= session.world_size, deadline_s=30)
    finally:
        if session.watchdog is not None:
            session.watchdog.stop()
        _session = None
        _run_with_deadline(dist.destroy_process_group, 10)


@contextlib.contextmanager
def session() -> Iterator[bool]:
    """Around a whole command: join the group under torchrun (yields whether it did), and on the
    way out tell the other ranks about a failure, then leave the group in every case."""
    started = initialize()
    stdout = sys.stdout
    if started and not is_main():
        sys.stdout = open(os.devnull, "w")  # results are printed once, by rank 0; errors still show
    failed = False
    try:
        yield started
    except BaseException as exc:
        failed = started and _exit_status(exc) != 0
        if failed and not isinstance(exc, PeerFailure):
            posted = _posted_failure()
            if posted is not None:  # this error is the consequence (a collective broke): say the cause
                raise PeerFailure(f"stopped because {posted}") from exc
            report_failure(exc)
        raise
    finally:
        if started:
            shutdown(clean=not failed)
            if sys.stdout is not stdout:
                sys.stdout.close()
                sys.stdout = stdout


def report_failure(exc: BaseException) -> None:
    """Tell every rank why this one stops (the first failure wins), then give them time to read it."""
    if _session is None:
        return
    message = str(exc) if isinstance(exc, DDBenchError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        message = "interrupted"
    try:
        _session.store.compare_set(_session.failure_key, "", f"rank {_session.rank} failed: {message}")
    except Exception:  # noqa: BLE001 - the store may already be gone; the watchdogs notice that too
        return
    time.sleep(3 * POLL_INTERVAL_S)


def _posted_failure() -> str | None:
    """The failure another rank posted, if any."""
    try:
        if _session is not None and _session.store.check([_session.failure_key]):
            return _session.store.get(_session.failure_key).decode()
    except Exception:  # noqa: BLE001 - no store, no message
        pass
    return None


def _exit_status(exc: BaseException) -> int:
    code = getattr(exc, "exit_code", getattr(exc, "code", 1))
    return 0 if code in (0, None) else 1


# ----- collectives over the store (no-ops in a single process or `local_only`) -----
def barrier(name: str = "barrier") -> None:
    """Wait until every rank got here."""
    if not is_distributed():
        return
    session = _require()
    key = session.next_key(f"barrier-{name}")
    session.store.add(key, 1)
    _wait(lambda: session.store.add(key, 0) >= session.world_size, f"barrier {name!r}")


def broadcast_object(value: T, src: int = 0) -> T:
    """`value` of rank `src` on every rank (small and JSON-able: decisions, lists, records)."""
    if not is_distributed():
        return value
    session = _require()
    key = session.next_key("broadcast")
    if session.rank == src:
        session.store.set(key, _encode(value))
        return value
    _wait(lambda: session.store.check([key]), f"a value from rank {src}")
    return _decode(session.store.get(key))


def all_gather_object(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not is_distributed():
        return [value]
    session = _require()
    key = session.next_key("gather")
    session.store.set(f"{key}/{session.rank}", _encode(value))
    keys = [f"{key}/{r}" for r in range(session.world_size)]
    _wait(lambda: session.store.check(keys), "values from every rank")
    return [_decode(session.store.get(k)) for k in keys]


def channel(name: str) -> str:
    """A fresh mailbox name, the same on every rank (call it collectively, in the same order)."""
    if not is_distributed():
        return name
    return _require().next_key(f"channel-{name}")


def send_to_main(channel_name: str, item: object, value: Any) -> None:
    """Post `value` under (channel, item) for rank 0 to pick up."""
    session = _require()
    session.store.set(f"{channel_name}/{item}", _encode(value))


def receive_on_main(channel_name: str, item: object, block: bool = True) -> Any | None:
    """The value another rank posted under (channel, item); None if not there yet and not `block`."""
    session = _require()
    key = f"{channel_name}/{item}"
    if block:
        _wait(lambda: session.store.check([key]), f"item {item} of {channel_name.rsplit('/', 2)[-2]}")
    elif not session.store.check([key]):
        return None
    value = _decode(session.store.get(key))
    session.store.delete_key(key)
    return value


def all_reduce_sum(tensor):
    """Sum a tensor over the data-parallel ranks through the process group, in place; returned."""
    if is_distributed():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# ----- internals -----
def _encode(value: Any) -> bytes:
    """Store messages are JSON, never pickles: nothing read from the store can run code."""
    return json.dumps(value).encode()


def _decode(data: bytes) -> Any:
    return json.loads(data.decode())


def _require() -> _Session:
    if _session is None:
        raise RuntimeError("ddbench.core.distributed: no process group (call initialize() or use session())")
    return _session


def _wait(done: Callable[[], bool], what: str) -> None:
    """Poll `done` until it holds; raise PeerFailure if a rank failed or the store went away."""
    session = _require()

    def finished() -> bool:
        try:
            if done():
                return True
            if session.store.check([session.failure_key]):
                raise PeerFailure(f"stopped while waiting for {what}: "
                                  f"{session.store.get(session.failure_key).decode()}")
        except PeerFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - a vanished store surfaces as several error types
            raise PeerFailure(f"lost the rendezvous store while waiting for {what} ({exc}); "
                              "another rank or the launcher has stopped") from exc
        return False

    _poll(finished)


def _poll(done: Callable[[], bool], deadline_s: float | None = None) -> bool:
    delay, started = 0.001, time.monotonic()
    while not done():
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _run_with_deadline(function: Callable[[], Any], seconds: float) -> None:
    """Run `function` but give up waiting after `seconds` (leaving a group can block after a failure)."""
    worker = threading.Thread(target=lambda: _quietly(function), daemon=True)
    worker.start()
    worker.join(seconds)


def _quietly(function: Callable[[], Any]) -> None:
    try:
        function()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


class _Watchdog:
    """A daemon thread per rank: beats, and ends the process with a clear message when another
    rank failed, stopped beating, or the store vanished (the main thread may be stuck inside a
    collective, where it would otherwise wait until the collective timeout)."""

    def __init__(self, session: _Session, store: Any):
        self.session, self.store = session, store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddbench-watchdog", daemon=True)
        self._beats: dict[int, tuple[int, float]] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5 * POLL_INTERVAL_S)

    def _run(self) -> None:
        session, polls = self.session, 0
        while not self._stop.wait(POLL_INTERVAL_S):
            try:
                if self.store.check([session.failure_key]):
                    self._stop_process(self.store.get(session.failure_key).decode())
                    return
                if polls % 10 == 0:
                    self._beat_and_check_others()
                polls += 1
            except Exception as exc:  # noqa: BLE001
                if session.closing or self._stop.is_set():
                    return
                self._stop_process(f"lost the rendezvous store ({exc}); another rank or the launcher has stopped")
                return

    def _beat_and_check_others(self) -> None:
        session, now = self.session, time.monotonic()
        self.store.add(session.key("beat", session.rank), 1)
        for other in range(session.world_size):
            if other == session.rank:
                continue
            count = self.store.add(session.key("beat", other), 0)
            seen, since = self._beats.get(other, (-1, now))
            if count != seen:
                self._beats[other] = (count, now)
            elif now - since > session.heartbeat_timeout_s and not session.closing:
                message = (f"rank {other} stopped responding (no heartbeat for {session.heartbeat_timeout_s:.0f} s: "
                           "killed, or its machine went down)")
                self.store.compare_set(session.failure_key, "", message)
                self._stop_process(message)

    def _stop_process(self, message: str) -> None:
        # give the main thread a moment to stop on its own (it notices the failure in any store wait)
        if self._stop.wait(4 * POLL_INTERVAL_S):
            return
        sys.stderr.write(f"error: {process_label()}stopping because {message}\n")
        sys.stderr.flush()
        os._exit(EXIT_PEER_FAILED)
