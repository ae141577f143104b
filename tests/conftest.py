"""Shared fixtures: every test gets its own DDBENCH_HOME, so nothing touches the user's cache."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner


def pytest_configure(config):
    """One intra-op thread, here and in every child process the tests start.

    Several tests compare this process's training bit for bit (or to float tolerance) with a run in
    a child process (kill-and-resume, torchrun ranks); CPU kernels reduce in a different order
    under a different thread count, so both sides must use the same one."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "ddbench-home"
    monkeypatch.setenv("DDBENCH_HOME", str(home))
    monkeypatch.delenv("DDBENCH_RESULTS", raising=False)
    monkeypatch.delenv("DDBENCH_DATA_MIRROR", raising=False)
    return home


@pytest.fixture
def cli():
    """Invoke the ddbench CLI in-process; returns the click Result."""
    from ddbench.cli import main

    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(main, list(args), catch_exceptions=False, **kwargs)

    return invoke
