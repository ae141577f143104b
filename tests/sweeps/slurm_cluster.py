"""A real single-node SLURM on this machine, for the sweep tests: munged, slurmctld and slurmd
(Debian's `slurm-wlm` and `munge`, which `.ci/run` installs) started from a throwaway folder,
talking over loopback only, and always stopped afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

TOOLS = ("mungekey", "munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
NODE = "ddbench-node"

CONF = """\
ClusterName=ddbench
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmdSpoolDir={root}/spool
StateSaveLocation={root}/state
SlurmUser=root
SlurmdUser=root
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def missing_reason() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"real SLURM test skipped: {', '.join(missing)} not installed "
                "(apt-get install -y slurm-wlm munge, as .ci/run does)")
    if os.geteuid() != 0:
        return "real SLURM test skipped: slurmd runs jobs as their user, which needs root here"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(pid_file: Path) -> None:
    """SIGTERM the daemon of `pid_file`, SIGKILL it after 10 s."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    _stop_pid(pid)


def _stop_pid(pid: int) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running (a zombie no init reaps counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def start(self) -> None:
        root = self.root
        for folder in ("state", "spool"):
            (root / folder).mkdir()
        self.conf.write_text(CONF.format(root=root, node=NODE, cpus=max(os.cpu_count() or 1, 2),
                                         ctld_port=_free_port(), slurmd_port=_free_port()))
        self.run("mungekey", "--create", f"--keyfile={root}/munge.key")
        self.run("munged", "--force", f"--socket={root}/munge.sock", f"--key-file={root}/munge.key",
                 f"--log-file={root}/munged.log", f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed")
        self.run("slurmctld", "-f", str(self.conf), "-i")
        self.run("slurmd", "-f", str(self.conf), "-N", NODE)
        deadline = time.monotonic() + 60
        while self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() != "idle":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SLURM node did not come up; see {root}/slurmctld.log and slurmd.log")
            time.sleep(0.2)

    def stop(self) -> None:
        """Every daemon this cluster started, whatever state it is in, and every job step process
        (slurmstepd) it still runs; then its folder."""
        if (self.root / "slurmctld.pid").exists():
            self.run("scancel", "--full", "--partition=debug", check=False)
            deadline = time.monotonic() + 30
            while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.run("scontrol", "shutdown", check=False)
        for daemon in ("slurmd", "slurmctld", "munged"):
            _stop(self.root / f"{daemon}.pid")
        for pid in self.step_processes():
            _stop_pid(pid)
        shutil.rmtree(self.root, ignore_errors=True)

    def step_processes(self) -> list[int]:
        """slurmstepd processes of this cluster (they run in its spool folder)."""
        pids = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if os.readlink(proc / "cwd").startswith(str(self.root)) and b"slurmstepd" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids


@pytest.fixture
def slurm_cluster(monkeypatch):
    """A running single-node SLURM; SLURM_CONF points at it for this test's commands."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    # a short folder: munge's unix socket path must stay under ~100 characters
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="ddbench-slurm-", dir="/tmp")))
    try:
        cluster.start()
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
    finally:
        cluster.stop()
