"""Running a list of jobs in this process, or spread over the processes of a torchrun launch.

The pipeline plans jobs and records results; this module only decides who runs which job and
carries results between processes. Spread: pending job k goes to rank k % world, each run exactly
as a single process would run it, and the other ranks send their results to rank 0, the only
process that records (as JSON through the rendezvous store, never pickles)."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from ddbench.core import distributed

Job = TypeVar("Job")
Result = TypeVar("Result")


def run_jobs(
    jobs: Sequence[Job],
    work: Callable[[Job], Result],
    record: Callable[[int, Result], None],
    *,
    spread: bool = False,
    encode: Callable[[Result], Any] = lambda result: result,
    decode: Callable[[Any], Result] = lambda message: message,
    channel: str = "jobs",
) -> None:
    """Run `work(job)` for every job; `record(index, result)` on rank 0 (or in a single process)
    as results arrive. With `spread`, jobs are shared among the torchrun ranks."""
    if not spread:  # one process, or every rank on every job together (DDP): rank 0 records
        for index, job in enumerate(jobs):
            result = work(job)
            if distributed.is_main():
                record(index, result)
        return
    world, me = distributed.world_size(), distributed.rank()
    mailbox = distributed.channel(channel)
    recorded: set[int] = set()

    def collect(block: bool) -> None:
        for other in range(len(jobs)):
            if other in recorded or other % world == 0:
                continue
            arrived = distributed.receive_on_main(mailbox, other, block=block)
            if arrived is not None:
                recorded.add(other)
                record(other, decode(arrived))

    for index, job in enumerate(jobs):
        if index % world != me:
            continue
        with distributed.local_only():
            result = work(job)
        if distributed.is_main():
            recorded.add(index)
            record(index, result)
            collect(block=False)  # results other ranks finished meanwhile
        else:
            distributed.send_to_main(mailbox, index, encode(result))
    if distributed.is_main():
        collect(block=True)

