"""Leaderboards as queries over the results store: configurations x students and teachers x
students, each cell the mean +- sample std (ddof=1) over its rows, with n. Exports to CSV,
Markdown, JSON.

A table holds one dataset fingerprint (name, resolution, classes, split sizes), one IPC, one
evaluator with one protocol version and one resolved config, and one metric. A row is one
*configuration* (method, resolved config, weights: `RunIdentity.configuration`) with one teacher;
its cells pool only the repetitions of that configuration: evaluation seeds and distillation
seeds, both counted. Two configurations never share a row, even when their labels read alike
(the label then gets the configuration's hash).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ddbench.core.results import ResultsStore

TABLE_KEYS = ("dataset", "dataset_fingerprint", "resolution", "ipc", "evaluator", "evaluator_protocol",
              "evaluator_config_hash", "metric")


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    eval_seeds: set[int] = field(default_factory=set)
    distill_seeds: set[int] = field(default_factory=set)
    recipes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.values.append(row["value"])
        self.eval_seeds.add(row["seed"])
        self.distill_seeds.add(row["distill_seed"])
        if row.get("recipe") is not None and row["recipe"] not in self.recipes:
            self.recipes.append(row["recipe"])

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def render(self) -> str:
        sets = f", {len(self.distill_seeds)} distill seeds" if len(self.distill_seeds) > 1 else ""
        return f"{self.mean:.2f} ± {self.std:.2f} (n={self.n}{sets})"


@dataclass
class RowIdentity:
    """What a leaderboard row is: the configuration and the teacher behind every number in it."""

    configuration: str
    method: str
    label: str
    method_config: dict[str, Any]
    weights: dict[str, str]
    teacher: str | None
    teacher_key: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Table:
    """One leaderboard: a title (dataset, IPC, evaluator, metric), rows x columns of cells."""

    dataset: str
    dataset_fingerprint: str
    resolution: int
    ipc: int
    evaluator: str
    evaluator_protocol: int
    evaluator_config_hash: str
    metric: str
    evaluator_label: str
    row_label: str
    column_label: str
    method: str | None = None  # set for teacher x student grids, which show one configuration each
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    row_identities: dict[str, RowIdentity] = field(default_factory=dict)
    #: more columns per row for the exports (e.g. `ddbench.core.storage.attach_storage`'s)
    row_extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        method = f" · {self.method}" if self.method else ""
        return (f"{self.dataset} {self.resolution}px · IPC {self.ipc} · {self.evaluator_label} "
                f"(protocol v{self.evaluator_protocol}){method} ({self.metric}, evaluator config "
                f"{self.evaluator_config_hash}, data {self.dataset_fingerprint[:8]})")

    @property
    def rows(self) -> list[str]:
        return sorted({row for row, _ in self.cells})

    @property
    def columns(self) -> list[str]:
        return sorted({column for _, column in self.cells})

    def records(self) -> list[dict[str, Any]]:
        header = {key: getattr(self, key) for key in TABLE_KEYS}
        header["evaluator_label"] = self.evaluator_label
        if self.method:
            header["label"] = self.method  # a grid shows one configuration
        records = []
        for (row, column), cell in sorted(self.cells.items()):
            identity = self.row_identities[row]
            records.append({
                **header,
                "method": identity.method, "configuration": identity.configuration,
                "method_config": identity.method_config, "weights": identity.weights,
                "teacher": identity.teacher, "teacher_key": identity.teacher_key,
                self.row_label: row,
                self.column_label: column,
                "mean": round(cell.mean, 4), "std": round(cell.std, 4), "n": cell.n,
                "eval_seeds": len(cell.eval_seeds), "distill_seeds": len(cell.distill_seeds),
                "recipe": cell.recipes[0] if len(cell.recipes) == 1 else cell.recipes,
                **self.row_extra.get(row, {}),
            })
        return records


def build_tables(
    store: ResultsStore,
    dataset: str | None = None,
    ipc: int | None = None,
    evaluator: str | None = None,
    method: str | None = None,
    grid: bool = False,
) -> list[Table]:
    """Group rows into tables. Default: rows = configuration (with its teacher when it has one),
    columns = student. `grid`: rows = teacher, columns = student, one table per configuration
    (the paper's Table 2)."""
    tables: dict[tuple, Table] = {}
    row_keys: dict[tuple, dict[tuple, RowIdentity]] = defaultdict(dict)
    cells: dict[tuple, dict[tuple, Cell]] = defaultdict(lambda: defaultdict(Cell))
    for row in store.rows(dataset=dataset, ipc=ipc, evaluator=evaluator, method=method):
        table_key = tuple(row[key] for key in TABLE_KEYS)
        if grid:
            table_key += (row["configuration"],)
            row_key: tuple = (row["teacher_key"],)
            readable = row["teacher"] or "-"
        else:
            row_key = (row["configuration"], row["teacher_key"])
            readable = row["label"] + (f" [teacher {row['teacher']}]" if row["teacher"] else "")
        if table_key not in tables:
            tables[table_key] = Table(
                **{key: row[key] for key in TABLE_KEYS}, evaluator_label=row["evaluator_label"],
                row_label="teacher" if grid else "label", column_label="student",
                method=row["label"] if grid else None,
            )
        row_keys[table_key].setdefault(row_key, RowIdentity(
            configuration=row["configuration"], method=row["method"], label=readable,
            method_config=row["method_config"], weights=row["weights"], teacher=row["teacher"],
            teacher_key=row["teacher_key"],
        ))
        cells[table_key][(row_key, row["student"])].add(row)
    for table_key, table in tables.items():
        names = _unique_names({key: identity.label for key, identity in row_keys[table_key].items()},
                              lambda key: "-".join(part[:6] for part in key if part))
        for (row_key, student), cell in cells[table_key].items():
            table.cells[(names[row_key], student)] = cell
        table.row_identities = {names[key]: identity for key, identity in row_keys[table_key].items()}
    if grid:
        _name_configurations_apart(tables)
    return [tables[key] for key in sorted(tables, key=lambda k: tuple(str(part) for part in k))]


def _name_configurations_apart(tables: dict[tuple, Table]) -> None:
    """Grid tables (one configuration each) whose labels read alike, e.g. rded distilled with two teachers,
    get the configuration's short hash in their title."""
    by_title: dict[tuple, dict[tuple, str]] = defaultdict(dict)
    for key, table in tables.items():
        by_title[key[:-1]][key] = table.method
    for labels in by_title.values():
        for key, name in _unique_names(labels, lambda key: key[-1][:6]).items():
            tables[key].method = name


def _unique_names(labels: dict[tuple, str], tag: Callable[[tuple], str]) -> dict[tuple, str]:
    """Readable names; where two keys read alike, each gets `tag(key)`, a short hash of what tells them apart."""
    by_name: dict[str, list[tuple]] = defaultdict(list)
    for key, label in labels.items():
        by_name[label].append(key)
    return {key: label if len(keys) == 1 else f"{label} #{tag(key)}" for label, keys in by_name.items() for key in keys}


def render_megabytes(megabytes: float | None) -> str:
    return "-" if megabytes is None else f"{megabytes:.3f}"


def to_markdown(tables: Iterable[Table]) -> str:
    parts = []
    for table in tables:
        storage = any("storage_mb" in extra for extra in table.row_extra.values())
        header = [table.row_label] + table.columns + (["storage MB"] if storage else [])
        lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in table.rows:
            cells = [table.cells[(row, c)].render() if (row, c) in table.cells else "-" for c in table.columns]
            if storage:
                cells.append(render_megabytes(table.row_extra.get(row, {}).get("storage_mb")))
            lines.append("| " + " | ".join([row] + cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_csv(tables: Iterable[Table]) -> str:
    records = [record for table in tables for record in table.records()]
    buffer = io.StringIO()
    if records:
        fields = list(dict.fromkeys(key for record in records for key in record))
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        for record in records:
            writer.writerow({key: json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
                             for key, value in record.items()})
    return buffer.getvalue()


def to_json(tables: Iterable[Table]) -> str:
    return json.dumps([record for table in tables for record in table.records()], indent=2)


EXPORTERS = {"md": to_markdown, "csv": to_csv, "json": to_json}
