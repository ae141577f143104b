"""The dependency rule of docs/design.md, read from every `import` in the package (module level or
inside a function): plugins import the core and the shared building blocks, never another plugin;
the core and the building blocks import no plugin; `analysis` imports no method package."""

from __future__ import annotations

import ast
from pathlib import Path

import ddbench

PACKAGE = Path(ddbench.__file__).parent
PLUGINS = ("methods", "evaluators", "datasets")
BUILDING_BLOCKS = ("core", "models", "training", "generators", "teachers")


def owner(parts: tuple[str, ...]) -> str:
    """`methods/hieramp` for a method package (each is its own plugin), else the top-level package."""
    return "/".join(parts[:2]) if parts[0] == "methods" and len(parts) > 2 else parts[0]


def imports(root: Path = PACKAGE) -> list[tuple[str, str, str]]:
    """(importing package, imported package, "file:line") for every absolute import of ddbench.*."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if len(parts) == 1:
            continue  # ddbench/cli.py, __main__.py: the root may import anything
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for module in modules:
                if module.startswith("ddbench."):
                    imported = tuple(module.split(".")[1:])
                    found.append((owner(parts), owner(imported + ("",)), f"{path.relative_to(root)}:{node.lineno}"))
    return found


def violations(edges) -> list[str]:
    broken = []
    for source, target, where in edges:
        top, target_top = source.split("/")[0], target.split("/")[0]
        if source == target or target_top not in PLUGINS + ("analysis",):
            continue
        if top == "analysis" and target_top == "methods":
            broken.append(f"{where}: analysis imports {target} (analysis imports no method package)")
        elif top in PLUGINS and target_top in PLUGINS:
            broken.append(f"{where}: plugin {source} imports plugin {target}")
        elif top in BUILDING_BLOCKS and target_top in PLUGINS + ("analysis",):
            broken.append(f"{where}: {top} imports {target} (the core and shared building blocks import no plugin)")
        elif top in PLUGINS and target_top == "analysis":
            broken.append(f"{where}: plugin {source} imports analysis")
    return sorted(set(broken))


def test_no_package_crosses_the_boundaries_of_the_design():
    assert violations(imports()) == []


def test_the_check_sees_each_kind_of_crossing(tmp_path):
    for name, text in {"analysis/a.py": "def f():\n    from ddbench.methods.hieramp.amplify import STAGES\n",
                       "methods/hieramp/b.py": "import ddbench.methods.minimax.objective\n",
                       "methods/hieramp/c.py": "from ddbench.methods.hieramp import amplify\n",  # its own package: fine
                       "evaluators/d.py": "from ddbench.methods import rded\n",
                       "generators/e.py": "from ddbench.evaluators.rded import RdedEvaluator\n",
                       "core/f.py": "from ddbench.datasets.digits import Digits\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(imports(tmp_path))
    assert sorted({line.split(":")[0] for line in found}) == ["analysis/a.py", "core/f.py", "evaluators/d.py",
                                                      "generators/e.py", "methods/hieramp/b.py"]
