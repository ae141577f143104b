"""Shared fixtures: every test gets its own DDBENCH_HOME, so nothing touches the user's cache."""

from __future__ import annotations

import pytest
from click.testing import CliRunner


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
