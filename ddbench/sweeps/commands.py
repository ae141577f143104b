"""`ddbench sweep GRID` and `ddbench sweep status GRID` (registered through the `ddbench.commands`
entry points): parse, call `ddbench.core.sweep`, render. Top-level imports stay light."""

from __future__ import annotations

import click


class _RunByDefault(click.Group):
    """`ddbench sweep GRID ...` means `ddbench sweep run GRID ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    from ddbench.core.errors import ConfigError

    pairs = {}
    for value in values:
        key, equals, item = value.partition("=")
        if not equals or not key:
            raise ConfigError(f"{option} expects KEY=VALUE, got {value!r}")
        pairs[key.strip()] = item.strip()
    return pairs


def _grid_and_plans(grid_name, data_roots, methods, datasets, results):
    from pathlib import Path

    from ddbench.cli import teacher_provider
    from ddbench.core import paths
    from ddbench.core.grid import load_grid, select_jobs
    from ddbench.core.sweep import plan_sweep

    grid = load_grid(grid_name, _pairs(data_roots, "--data-root"))
    jobs = select_jobs(grid.jobs, [m for item in methods for m in item.split(",") if m],
                       [d for item in datasets for d in item.split(",") if d])
    results_path = Path(results) if results else paths.default_results_path()
    return grid, plan_sweep(jobs, results_path, teacher_provider()), results_path


def _selection_options(function):
    decorators = [
        click.argument("grid"),
        click.option("--data-root", "data_roots", multiple=True, metavar="DATASET=PATH",
                     help="Folder of a real dataset the grid names (repeat per dataset)."),
        click.option("--methods", multiple=True, help="Only these method ids of the grid (comma-separated)."),
        click.option("--datasets", multiple=True, help="Only these datasets of the grid (comma-separated)."),
        click.option("--results", type=click.Path(), default=None, help="Results database (default $DDBENCH_HOME/results.sqlite)."),
        click.option("--folder", type=click.Path(), default=None,
                     help="Sweep folder: submissions and logs (default $DDBENCH_HOME/sweeps/<grid name>)."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _folder(folder, grid):
    from pathlib import Path

    from ddbench.core.sweep import default_sweep_folder

    return Path(folder) if folder else default_sweep_folder(grid.name)


@click.group(name="sweep", cls=_RunByDefault)
def sweep_group() -> None:
    """Run a grid file's configurations (a paper's table) locally or on SLURM; `status` follows them.

    GRID is a .toml file or a shipped grid (`ddbench sweep list`)."""


@sweep_group.command(name="run")
@_selection_options
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True, help="local: configurations run at once.")
@click.option("--launcher", default=None,
              help="Program each job runs `run ...` with (default: this python -m ddbench), "
                   "e.g. 'torchrun --nproc-per-node 4 -m ddbench'.")
@click.option("--device", default=None, help="--device of every job (default: ddbench run's own).")
@click.option("--partition", default=None, help="slurm: partition.")
@click.option("--gpus", type=int, default=None, help="slurm: GPUs per job.")
@click.option("--time", "time_min", type=int, default=24 * 60, show_default=True, help="Minutes a job may run.")
@click.option("--account", default=None, help="slurm: account.")
@click.option("--cpus", type=int, default=None, help="slurm: CPUs per job.")
@click.option("--mem-gb", type=float, default=None, help="slurm: memory per job in GB.")
@click.option("--array-parallelism", type=int, default=None, help="slurm: array tasks running at once.")
@click.option("--slurm-set", "slurm_extra", multiple=True, metavar="KEY=VALUE", help="slurm: any other sbatch option, e.g. qos=high.")
@click.option("--wait/--no-wait", default=None, help="slurm: wait for the array to finish (local always waits).")
@click.option("--dry-run", is_flag=True, help="List the jobs and their commands; run nothing.")
def run_command(grid, data_roots, methods, datasets, results, folder, executor, jobs, launcher, device, partition, gpus,
                time_min, account, cpus, mem_gb, array_parallelism, slurm_extra, wait, dry_run):
    """Run every configuration of GRID whose results rows are not all in the store."""
    import shlex

    from rich.markup import escape

    from ddbench.cli import console, err_console
    from ddbench.core.sweep import ExecutorOptions, require_submitit, run_sweep

    options = ExecutorOptions(executor=executor, jobs=jobs, launcher=launcher, device=device, partition=partition, gpus=gpus,
                              time_min=time_min, account=account, cpus=cpus, mem_gb=mem_gb,
                              array_parallelism=array_parallelism, slurm_extra=_pairs(slurm_extra, "--slurm-set"))
    if not dry_run:
        require_submitit()  # before planning: a missing extra is the first thing said
    spec, plans, results_path = _grid_and_plans(grid, data_roots, methods, datasets, results)
    sweep_folder = _folder(folder, spec)
    if dry_run:
        for plan in plans:
            state = "done" if plan.complete else f"{sum(plan.done)}/{len(plan.evaluations)} rows"
            console.print(f"[{state}] {shlex.join(options.command(plan.job, results_path.resolve()))}", highlight=False,
                          markup=False)
        return

    def on_event(event: str, job, detail: str) -> None:
        colour = {"skip": "dim", "submit": "cyan", "done": "green", "fail": "red"}[event]
        err_console.print(f"[{colour}]{event}[/{colour}] " + escape(job.name + (f": {detail}" if detail else "")),
                          highlight=False)

    outcome = run_sweep(plans, sweep_folder, results_path, options,
                        wait=executor == "local" or bool(wait), on_event=on_event)
    console.print(f"sweep {spec.name}: {len(outcome.submitted)} job(s) run, {len(outcome.skipped)} already complete, "
                  f"{len(outcome.failed)} failed ({outcome.wall_time_s:.1f} s); folder {sweep_folder}", highlight=False)
    if outcome.failed:
        raise SystemExit(1)


@sweep_group.command(name="status")
@_selection_options
def status_command(grid, data_roots, methods, datasets, results, folder):
    """done / running / failed / pending per cell (job x evaluator x teacher x student)."""
    from collections import Counter

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ddbench.cli import console
    from ddbench.core.sweep import sweep_status

    spec, plans, _ = _grid_and_plans(grid, data_roots, methods, datasets, results)
    cells = sweep_status(plans, _folder(folder, spec))
    table = Table(title=f"sweep {escape(spec.name)}")
    for column in ("configuration", "evaluator", "teacher", "student", "seeds", "state", "detail"):
        table.add_column(column)
    colours = {"done": "green", "running": "cyan", "failed": "red", "pending": "yellow"}
    for cell in cells:
        table.add_row(escape(cell.job.name), cell.evaluator, cell.teacher or "-", cell.student,
                      f"{cell.done}/{cell.expected}", f"[{colours[cell.state]}]{cell.state}[/]", escape(cell.detail))
    Console(width=max(console.width, 160)).print(table)  # seven columns: keep cells on one line
    counts = Counter(cell.state for cell in cells)
    console.print(", ".join(f"{counts.get(state, 0)} {state}" for state in ("done", "running", "failed", "pending")),
                  highlight=False)


@sweep_group.command(name="list")
def list_command() -> None:
    """The grid files shipped with ddbench."""
    from ddbench.core.grid import shipped_grids

    for name in shipped_grids():
        click.echo(name)


def print_comparison(grid_name: str, results_path, dataset: str | None, ipc: int | None, output_format: str,
                     output: str | None) -> None:
    """`ddbench leaderboard --compare GRID`: one table per dataset, a line per published cell and
    per pooled configuration of ours (json / csv / md: one record each)."""
    import csv
    import io
    import json

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ddbench.cli import console, write_export
    from ddbench.core.compare import compare, records
    from ddbench.core.errors import ConfigError
    from ddbench.core.grid import load_grid
    from ddbench.core.results import ResultsStore

    grid = load_grid(grid_name)
    if not grid.published:
        raise ConfigError(f"grid {grid.name} has no published numbers ([paper] cells) to compare with")
    with ResultsStore(results_path, readonly=True) as store:
        comparisons = compare(grid, store, dataset, ipc)
    if not comparisons:
        raise ConfigError(f"grid {grid.name} publishes no cell for dataset {dataset} / IPC {ipc}")
    if output_format != "table":
        flat = records(comparisons)
        if output_format == "json":
            text = json.dumps(flat, indent=2) + "\n"
        else:
            fields = list(dict.fromkeys(key for record in flat for key in record))
            if output_format == "csv":
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, fieldnames=fields)
                writer.writeheader()
                writer.writerows({k: "; ".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in flat)
                text = buffer.getvalue()
            else:
                lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
                lines += ["| " + " | ".join("; ".join(r[k]) if isinstance(r.get(k), list) else ("" if r.get(k) is None else str(r[k]))
                                            for k in fields) + " |" for r in flat]
                text = "\n".join(lines) + "\n"
        write_export(text, output)
        return
    metric = grid.paper.get("metric", "top1_best")
    wide = Console(width=max(console.width, 200))  # nine columns: wrapped cells would be unreadable
    matched = 0
    for name in dict.fromkeys(comparison.published.dataset for comparison in comparisons):
        table = Table(title=f"{escape(grid.name)} · {name}: published {metric} beside ours ({escape(grid.paper.get('source', grid.source))})")
        for column in ("IPC", "method", "student", "teacher", "published", "ours", "ours top1_final", "Δ/σ", "differs"):
            table.add_column(column, justify="right" if column in ("IPC", "published", "ours", "ours top1_final", "Δ/σ") else "left")
        for comparison in (c for c in comparisons if c.published.dataset == name):
            cell = comparison.published
            published = f"{cell.mean:.2f} ± {cell.std:.2f} (n={cell.n if cell.n is not None else '?'})"
            head = [str(cell.ipc), escape(cell.method), cell.student, cell.teacher or "-", published]
            if not comparison.ours:
                table.add_row(*head, "[dim]no results of ours[/dim]", "", "", escape(cell.note))
                continue
            matched += 1
            for ours in comparison.ours:
                z = comparison.z(ours)
                final = f"{ours.final.mean:.2f} ± {ours.final.std:.2f}" if ours.final.n else "-"
                differs = "; ".join([f"ours: {ours.label}", *ours.differences, *([cell.note] if cell.note else [])])
                table.add_row(*head, f"{ours.compared.mean:.2f} ± {ours.compared.std:.2f} (n={ours.compared.n}, {ours.metric})", final,
                              "-" if z is None else f"{z:+.1f}", escape(differs))
        wide.print(table)
    console.print(f"{matched} of {len(comparisons)} published cells have results of ours in {results_path}", highlight=False)


def print_ddranking(results_path, dataset: str | None, ipc: int | None, output_format: str) -> None:
    """`ddbench leaderboard --ddranking --dataset D --ipc N`: HLR, IOR, LRS and ARS per
    configuration and student, on fractions (DD-Ranking's paper) and on percentages (its code)."""
    import json

    from rich.table import Table

    from ddbench.cli import console
    from ddbench.core.dd_ranking import augmentation_scores_from_store, scores_from_store
    from ddbench.core.errors import ConfigError
    from ddbench.core.results import ResultsStore

    if dataset is None or ipc is None:
        raise ConfigError("--ddranking needs --dataset and --ipc")
    with ResultsStore(results_path, readonly=True) as store:
        scores = scores_from_store(store, dataset, ipc)
        augmentation = [score for evaluator in ("rded", "hard_label")
                        for score in augmentation_scores_from_store(store, dataset, ipc, evaluator)]
    if not scores and not augmentation:
        raise ConfigError(f"no configuration of {dataset} IPC {ipc} has the rows DD-Ranking's scores need in {results_path}: "
                          "LRS hard_label and rded rows, rded rows of `random` at the same IPC and a full-data accuracy "
                          "(a teacher of the student's arch); ARS rded or hard_label rows with and without augmentation "
                          "(--set rded.augment=false), for the set and for `random` at the same IPC")
    if output_format == "json":
        click.echo(json.dumps([{"score": "LRS", "label": s.label, "configuration": s.configuration, "student": s.student,
                                "full_hard": s.full_hard, "full_hard_source": s.full_hard_source, "syn_hard": s.syn_hard,
                                "syn_soft": s.syn_soft, "random_soft": s.random_soft, "n": s.n,
                                **{f"{name}_{scale}": getattr(value, name) for scale, value in s.scores.items()
                                   for name in ("hlr", "ior", "lrs")}} for s in scores]
                              + [{"score": "ARS", "label": s.label, "configuration": s.configuration, "student": s.student,
                                  "evaluator": s.evaluator, "syn_with_aug": s.syn_with_aug,
                                  "random_with_aug": s.random_with_aug, "syn_without_aug": s.syn_without_aug,
                                  "random_without_aug": s.random_without_aug, "n": s.n,
                                  **{f"{name}_{scale}": getattr(value, name) for scale, value in s.scores.items()
                                     for name in ("with_aug", "without_aug", "ars")}} for s in augmentation], indent=2))
        return
    if scores:
        table = Table(title=f"DD-Ranking scores · {dataset} · IPC {ipc} (top-1 %; scores on fractions, [percent])")
        for column in ("configuration", "student", "full hard", "syn hard", "syn soft", "random soft", "HLR", "IOR", "LRS"):
            table.add_column(column, justify="left" if column in ("configuration", "student") else "right")
        for s in scores:
            fraction, percent = s.scores["fraction"], s.scores["percent"]
            table.add_row(s.label, s.student, f"{s.full_hard:.2f}", f"{s.syn_hard:.2f}", f"{s.syn_soft:.2f}",
                          f"{s.random_soft:.2f}", f"{fraction.hlr:.4f}", f"{fraction.ior:.4f}",
                          f"{fraction.lrs:.4f} [{percent.lrs:.3g}]")
        console.print(table)
    if augmentation:
        table = Table(title=f"DD-Ranking ARS · {dataset} · IPC {ipc} (top-1 %; scores on fractions, [percent])")
        for column in ("configuration", "student", "evaluator", "syn aug", "random aug", "syn no aug", "random no aug",
                       "ARS"):
            table.add_column(column, justify="left" if column in ("configuration", "student", "evaluator") else "right")
        for s in augmentation:
            fraction, percent = s.scores["fraction"], s.scores["percent"]
            table.add_row(s.label, s.student, s.evaluator, f"{s.syn_with_aug:.2f}", f"{s.random_with_aug:.2f}",
                          f"{s.syn_without_aug:.2f}", f"{s.random_without_aug:.2f}",
                          f"{fraction.ars:.4f} [{percent.ars:.3g}]")
        console.print(table)
