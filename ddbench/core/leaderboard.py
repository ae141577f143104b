"""Leaderboards as queries over the results store: methods x students and teachers x students,
each cell the mean +- sample std (ddof=1) over seeds, with n. Exports to CSV, Markdown, JSON."""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from ddbench.core.results import ResultsStore


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)

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
        return f"{self.mean:.2f} ± {self.std:.2f} (n={self.n})"


@dataclass
class Table:
    """One leaderboard: a title (dataset, IPC, evaluator, metric), rows x columns of cells."""

    dataset: str
    ipc: int
    evaluator: str
    metric: str
    evaluator_config_hash: str
    row_label: str
    column_label: str
    method: str | None = None  # set for teacher x student grids, which show one method each
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    @property
    def title(self) -> str:
        method = f" · method {self.method}" if self.method else ""
        return f"{self.dataset} · IPC {self.ipc} · {self.evaluator}{method} ({self.metric}, config {self.evaluator_config_hash})"

    @property
    def rows(self) -> list[str]:
        return sorted({row for row, _ in self.cells})

    @property
    def columns(self) -> list[str]:
        return sorted({column for _, column in self.cells})

    def records(self) -> list[dict[str, Any]]:
        return [
            {
                "dataset": self.dataset, "ipc": self.ipc, "evaluator": self.evaluator, "metric": self.metric,
                "evaluator_config_hash": self.evaluator_config_hash,
                **({"method": self.method} if self.method else {}),
                self.row_label: row, self.column_label: column,
                "mean": round(cell.mean, 4), "std": round(cell.std, 4), "n": cell.n,
            }
            for (row, column), cell in sorted(self.cells.items())
        ]


def build_tables(
    store: ResultsStore,
    dataset: str | None = None,
    ipc: int | None = None,
    evaluator: str | None = None,
    method: str | None = None,
    grid: bool = False,
) -> list[Table]:
    """Group rows into tables. Default: rows = method (with its teacher when it has one), columns =
    student. `grid`: rows = teacher, columns = student, one table per method (the paper's Table 2)."""
    tables: dict[tuple, Table] = {}
    for row in store.rows(dataset=dataset, ipc=ipc, evaluator=evaluator, method=method):
        key = (row["dataset"], row["ipc"], row["evaluator"], row["metric"], row["evaluator_config_hash"])
        if grid:
            key = key + (row["method"],)
            row_label, column_label = "teacher", "student"
            row_name = row["teacher"] or "-"
        else:
            row_label, column_label = "method", "student"
            row_name = row["method"] + (f" [teacher {row['teacher']}]" if row["teacher"] else "")
        if key not in tables:
            tables[key] = Table(*key[:5], row_label=row_label, column_label=column_label, method=row["method"] if grid else None)
        tables[key].cells.setdefault((row_name, row["student"]), Cell()).values.append(row["value"])
    return [tables[key] for key in sorted(tables)]


def to_markdown(tables: Iterable[Table]) -> str:
    parts = []
    for table in tables:
        header = [table.row_label] + table.columns
        lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in table.rows:
            cells = [table.cells[(row, c)].render() if (row, c) in table.cells else "-" for c in table.columns]
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
        writer.writerows(records)
    return buffer.getvalue()


def to_json(tables: Iterable[Table]) -> str:
    return json.dumps([record for table in tables for record in table.records()], indent=2)


EXPORTERS = {"md": to_markdown, "csv": to_csv, "json": to_json}
