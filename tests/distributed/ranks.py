"""Start real multi-process jobs for the tests: with `torchrun` itself, or as plain subprocesses
that get exactly the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), so that no launcher agent stops the other ranks for us: what stops them is ddbench."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Finished:
    returncodes: list[int]
    outputs: list[str]  # stdout + stderr of each rank
    seconds: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def launch(args: list[str], world: int = 2, env: dict[str, str] | None = None, timeout: float = 120) -> Finished:
    """`python ARGS` as `world` ranks on this machine; kills them all if they outlive `timeout`."""
    port, started = free_port(), time.monotonic()
    processes = []
    for rank in range(world):
        rank_env = base_env({**(env or {}), "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                             "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        processes.append(subprocess.Popen([sys.executable, *args], cwd=REPO, env=rank_env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            left = max(1.0, timeout - (time.monotonic() - started))
            outputs.append(process.communicate(timeout=left)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return Finished([p.returncode for p in processes], outputs, time.monotonic() - started)


def torchrun(args: list[str], nproc: int = 2, env: dict[str, str] | None = None, timeout: float = 300
             ) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node NPROC ARGS` (torchrun is `python -m torch.distributed.run`)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(command, cwd=REPO, env=base_env(env), capture_output=True, text=True, timeout=timeout)
