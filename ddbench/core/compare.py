"""A paper's published numbers beside ours: `ddbench leaderboard --compare GRID`. Prints nothing.

Each published cell of a grid file (`[paper] cells`, see `ddbench.core.grid`) is matched with our
results rows of the same method (the grid's ddbench method, and its `method.` sets when it has
some), dataset, IPC and student, with the cell's teacher (rows of evaluators without a teacher
match too, and say so). Our rows are pooled per configuration and evaluator setting, as the
leaderboard pools them. Published numbers are the protocol's selection (`metric`, top1_best for
best-of-late-validations), so ours are compared on the same metric, with top1_final beside it;
the difference is in units of the combined std, sqrt(std_paper^2 + std_ours^2). Every protocol
detail in which our rows differ from the paper's is listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ddbench.core import registry
from ddbench.core.errors import DDBenchError
from ddbench.core.grid import Grid, PublishedCell
from ddbench.core.leaderboard import Cell
from ddbench.core.results import ResultsStore


@dataclass
class Ours:
    """Our rows for a published cell, pooled over one configuration and one evaluator setting:
    `compared` holds the values of `metric`, `final` those of top1_final."""

    label: str
    configuration: str
    evaluator_label: str
    resolution: int
    metric: str  # what was compared: the paper's metric, or top1_final when the rows lack it
    compared: Cell
    final: Cell
    differences: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    published: PublishedCell
    method: str  # the ddbench method
    ours: list[Ours] = field(default_factory=list)

    def z(self, ours: Ours) -> float | None:
        """(ours - published) / sqrt(std_published^2 + std_ours^2); None when both stds are 0."""
        combined = math.hypot(self.published.std, ours.compared.std)
        return (ours.compared.mean - self.published.mean) / combined if combined > 0 else None


def _matches(row: dict[str, Any], cell: PublishedCell, method: str, method_sets: dict[str, str]) -> bool:
    if (row["method"], row["dataset"], row["ipc"], row["student"]) != (method, cell.dataset, cell.ipc, cell.student):
        return False
    if cell.teacher is not None and row["teacher"] is not None and row["teacher"] != cell.teacher:
        return False
    return all(str(row["method_config"].get(key)) == value for key, value in method_sets.items())


def _method_sets(overrides: Sequence[str]) -> dict[str, str]:
    """`method.KEY=VALUE` sets of a grid method: our rows must have been made with them."""
    sets = {}
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("method."):
            sets[key[len("method."):]] = value
    return sets


def _differences(grid: Grid, cell: PublishedCell, row: dict[str, Any], metric: str, n: int) -> list[str]:
    protocol = dict(grid.paper.get("protocol", {}))
    paper_metric = grid.paper.get("metric", "top1_best")
    differences = []
    if protocol.get("evaluator") and row["evaluator"] != protocol["evaluator"]:
        differences.append(f"evaluator {row['evaluator']} (paper: {protocol['evaluator']})")
    changed = row["evaluator_label"][len(row["evaluator"]):].strip()
    if changed:
        differences.append(f"evaluator settings {changed} (paper: the protocol's defaults)")
    if row["teacher"] is None and cell.teacher is not None:
        differences.append(f"no teacher (paper: {cell.teacher})")
    if cell.resolution and row["resolution"] != cell.resolution:
        differences.append(f"resolution {row['resolution']} px (paper: {cell.resolution} px)")
    elif not cell.resolution and row["resolution"] != _default_resolution(row["dataset"]):
        differences.append(f"resolution {row['resolution']} px (paper: not stated; the dataset's default is "
                           f"{_default_resolution(row['dataset'])} px)")
    method_changes = row["label"][len(row["method"]):].strip()
    if method_changes:
        differences.append(f"method settings {method_changes}")
    if metric != paper_metric:
        differences.append(f"{paper_metric} missing (one validation per run): compared {metric}")
    if cell.n is not None and n != cell.n:
        differences.append(f"n {n} (paper: {cell.n})")
    return differences


def _default_resolution(dataset: str) -> int | None:
    try:
        return int(registry.load_dataset(dataset).resolution)
    except (DDBenchError, TypeError, ValueError):
        return None


def compare(grid: Grid, store: ResultsStore, dataset: str | None = None, ipc: int | None = None) -> list[Comparison]:
    """Every published cell of `grid` (optionally of one dataset / IPC) with our matching rows."""
    cells = [cell for cell in grid.published if (dataset is None or cell.dataset == dataset) and (ipc is None or cell.ipc == ipc)]
    datasets = sorted({cell.dataset for cell in cells})
    rows = [row for name in datasets for row in store.rows(dataset=name)]
    paper_metric = grid.paper.get("metric", "top1_best")
    comparisons = []
    for cell in cells:
        entry = grid.methods[cell.method]
        sets = _method_sets(entry.overrides)
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for row in rows:
            if _matches(row, cell, entry.method, sets):
                key = (row["configuration"], row["evaluator"], row["evaluator_protocol"], row["evaluator_config_hash"],
                       row["dataset_fingerprint"], row["teacher_key"])
                groups.setdefault(key, []).append(row)
        comparison = Comparison(cell, entry.method)
        for group in groups.values():
            metric = paper_metric if all(paper_metric in row["metrics"] for row in group) else "top1_final"
            values = [row["metrics"].get(metric, row["value"]) for row in group]
            final = [row["metrics"]["top1_final"] for row in group if "top1_final" in row["metrics"]]
            first = group[0]
            label = first["label"] + (f" [teacher {first['teacher']}]" if first["teacher"] else "")
            comparison.ours.append(Ours(label, first["configuration"], first["evaluator_label"], first["resolution"],
                                        metric, Cell(values), Cell(final), _differences(grid, cell, first, metric, len(values))))
        comparison.ours.sort(key=lambda ours: (ours.label, ours.evaluator_label))
        comparisons.append(comparison)
    return comparisons


def records(comparisons: Iterable[Comparison]) -> list[dict[str, Any]]:
    """One flat record per (published cell, our pooled rows); a cell without ours has ours_n 0."""
    out = []
    for comparison in comparisons:
        cell = comparison.published
        base = {"method": cell.method, "ddbench_method": comparison.method, "dataset": cell.dataset, "ipc": cell.ipc,
                "student": cell.student, "teacher": cell.teacher, "published_mean": cell.mean, "published_std": cell.std,
                "published_n": cell.n, "note": cell.note}
        if not comparison.ours:
            out.append({**base, "ours_n": 0})
        for ours in comparison.ours:
            z = comparison.z(ours)
            final = ours.final
            out.append({**base, "ours_label": ours.label, "ours_evaluator": ours.evaluator_label, "ours_metric": ours.metric,
                        "ours_mean": round(ours.compared.mean, 4), "ours_std": round(ours.compared.std, 4),
                        "ours_n": ours.compared.n, "ours_top1_final_mean": round(final.mean, 4) if final.n else None,
                        "ours_top1_final_std": round(final.std, 4) if final.n else None, "z": None if z is None else round(z, 3),
                        "differences": ours.differences})
    return out
