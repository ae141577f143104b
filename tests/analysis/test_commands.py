"""The analysis commands stay light to import, are registered for the CLI, and a missing extra is an
error that names the install command."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from ddbench.core.errors import ConfigError


def test_commands_module_imports_no_torch():
    code = "import sys, ddbench.analysis.commands; sys.exit('torch' in sys.modules or 'matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_commands_and_evaluators_are_registered():
    commands = {ep.name: ep.value for ep in entry_points(group="ddbench.commands")}
    assert commands["analyze"] == "ddbench.analysis.commands:analyze_group"
    assert commands["report"] == "ddbench.analysis.commands:report_command"
    evaluators = {ep.name: ep.value for ep in entry_points(group="ddbench.evaluators")}
    assert evaluators["fid"] == "ddbench.evaluators.frechet:InceptionFID"
    assert evaluators["teacher_frechet"] == "ddbench.evaluators.frechet:TeacherFrechet"


def test_missing_matplotlib_names_the_extra(monkeypatch):
    from ddbench.analysis import figures

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'ddbench\[analysis\]'"):
        figures.pyplot()


def test_missing_torch_fidelity_names_the_extra(monkeypatch):
    from ddbench.evaluators import frechet

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(ConfigError, match=r"pip install 'ddbench\[analysis\]'"):
        frechet.frechet_distance({}, {})
