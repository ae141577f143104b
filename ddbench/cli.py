"""The `ddbench` command line: parse, call the core API, render with rich. No logic lives here."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from ddbench.core import distributed, paths, registry
from ddbench.core.config import parse_overrides
from ddbench.core.errors import ConfigError, DDBenchError
from ddbench.terminal import RichProgress

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
INTERRUPTED = "finished classes and evaluations are kept; rerun the same command to resume"


def _int_list(value: str, option: str) -> list[int]:
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise ConfigError(f"{option} expects comma-separated integers like 0,1,2, got {value!r}") from exc


def _name_list(values: tuple[str, ...] | str) -> list[str]:
    items = values if isinstance(values, tuple) else (values,)
    return [name.strip() for item in items for name in item.split(",") if name.strip()]


def teacher_provider(teacher_ckpt: str | None = None, recipe: str | None = None, class_order: str | None = None,
                     teacher_norm: str = "imagenet"):
    """Teachers come from the cache, a checkpoint (--teacher-ckpt, its rows in --teacher-class-order,
    its inputs normalised as --teacher-norm says), or the documented recipe (the dataset's own, or
    --teacher-recipe)."""
    from ddbench.teachers import make_teacher_provider

    return make_teacher_provider(checkpoint=teacher_ckpt, recipe=recipe, class_order=class_order,
                                 checkpoint_normalization=teacher_norm)


class DDBenchGroup(click.Group):
    """The root group: turns ddbench errors into one red line (with --debug: the traceback), and
    adds the subcommands that packages register in the `ddbench.commands` entry-point group
    (ddbench's own `teacher`, `var` and `hieramp` among them), each imported only when needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(registry.command_entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        entry_point = registry.command_entry_points().get(name)
        if entry_point is None:
            return None
        try:
            command = entry_point.load()
        except Exception as exc:  # a broken third-party plugin says which one it is
            raise click.ClickException(f"command plugin {name!r} ({entry_point.value}) failed to import: {exc}") from exc
        if not isinstance(command, click.Command):
            raise click.ClickException(f"command plugin {name!r} ({entry_point.value}) is not a click command")
        return command

    def invoke(self, ctx: click.Context):
        interrupted = False
        try:
            with distributed.session():  # under torchrun: join the group; a failure stops every rank
                return super().invoke(ctx)
        except DDBenchError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            err_console.print(f"[red]error:[/red] {escape(distributed.process_label())}{escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except OSError as exc:  # a full, read-only or forbidden disk anywhere: one line, not a traceback
            from ddbench.core.files import storage_error

            error = storage_error(exc, exc.filename or "a file", "write")
            if error is None or (ctx.obj and ctx.obj.get("debug")):
                raise
            err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            interrupted = True
            self.exit_130_on_ctrl_c(reported=True)
            err_console.print(f"[yellow]interrupted:[/yellow] {INTERRUPTED}")
            sys.exit(130)
        finally:
            self.exit_130_on_ctrl_c(reported=interrupted)

    #: set by `__call__`: this process is the program (console script, `python -m ddbench`), not a CliRunner
    owns_process = False

    def __call__(self, *args, **kwargs):
        DDBenchGroup.owns_process = True
        return self.main(*args, **kwargs)

    def exit_130_on_ctrl_c(self, reported: bool = False) -> None:
        """From the end of the command on (done, failed or interrupted), a Ctrl-C that lands while
        the process shuts down (click's exit, atexit, torch's teardown) exits 130 at once, with the
        one line if none was printed, instead of click's "Aborted!" (1) or death by SIGINT (-2)."""
        if not self.owns_process or threading.current_thread() is not threading.main_thread():
            return

        def exit_130(signum, frame):
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            if not reported:
                os.write(2, f"\ninterrupted: {INTERRUPTED}\n".encode())
            os._exit(130)

        signal.signal(signal.SIGINT, exit_130)


@click.group(cls=DDBenchGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="ddbench")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """ddbench: distill a dataset, evaluate it under one protocol, compare on leaderboards."""
    ctx.ensure_object(dict)["debug"] = debug


def evaluation_options(function):
    """Options shared by `run` and `eval`."""
    decorators = [
        click.option("--data-root", type=click.Path(), default=None, help="Folder of the real dataset (not needed for digits)."),
        click.option("--resolution", type=int, default=None,
                     help="Working resolution in px (default: the dataset's own; part of the run identity)."),
        click.option("--evaluator", "evaluators", multiple=True, default=("rded",), show_default=True,
                     help="Evaluation protocol(s); repeat or comma-separate."),
        click.option("--students", default="resnet18", show_default=True, help="Student architectures, comma-separated."),
        click.option("--teachers", default="resnet18", show_default=True, help="Teacher architectures for soft-label evaluators."),
        click.option("--teacher-ckpt", default=None, help="Teacher checkpoint: PATH, or arch=PATH,arch2=PATH2."),
        click.option("--teacher-class-order", default=None,
                     help="Class of each classifier row of --teacher-ckpt: sorted (default), minimax-woof, "
                          "imagenet:I,J,..., classes:A,B,... or a file."),
        click.option("--teacher-norm", type=click.Choice(["imagenet", "dataset"]), default="imagenet", show_default=True,
                     help="Mean/std a --teacher-ckpt file from elsewhere was trained with (ddbench's files record theirs)."),
        click.option("--teacher-recipe", default=None,
                     help="Train missing teachers with this recipe instead of the dataset's (e.g. imagenet-finetune)."),
        click.option("--seeds", default="0", show_default=True, help="Evaluation seeds, e.g. 0,1,2: one result row each."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Config override: method.KEY, evaluator.KEY, <evaluator>.KEY or a bare KEY."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--results", type=click.Path(), default=None, help="Results database (default $DDBENCH_HOME/results.sqlite)."),
        click.option("--force", is_flag=True, help="Redo evaluations already in the results database (also those "
                                                   "made by other evaluator code: new rows)."),
        click.option("--keep-results", is_flag=True, help="Keep rows made by other evaluator source instead of stopping."),
        click.option("--dist-mode", type=click.Choice(["jobs", "ddp"]), default="jobs", show_default=True,
                     help="Under torchrun: give each process whole evaluation jobs (jobs), or train every job on "
                          "all processes with DistributedDataParallel (ddp)."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def write_export(text: str, output: str | None) -> None:
    """An export (CSV, Markdown, JSON) to `output`, or to stdout when none is given."""
    if output:
        Path(output).write_text(text)
        console.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def _print_rows(rows, skipped: int) -> None:
    table = RichTable(title="results of this run")
    for column in ("evaluator", "teacher", "student", "seed", "metric", "value", "time (s)"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.evaluator, row.teacher or "-", row.student, str(row.seed), row.metric, f"{row.value:.2f}", f"{row.wall_time_s:.1f}")
    console.print(table)
    if skipped:
        console.print(f"{skipped} evaluation(s) were already in the results database and were skipped (--force redoes them).")


@main.command()
@click.option("--method", required=True, help="Distillation method (see `ddbench list methods`).")
@click.option("--dataset", required=True, help="Dataset (see `ddbench list datasets`).")
@click.option("--ipc", type=int, required=True, help="Images per class.")
@click.option("--distill-seed", type=int, default=0, show_default=True, help="Seed of the distillation itself.")
@click.option("--out", type=click.Path(), default=None, help="Distilled-set folder (default $DDBENCH_HOME/runs/...).")
@click.option("--save-saliency", is_flag=True, help="Methods with class tokens: write per-scale saliency maps to <run>/saliency/.")
@click.option("--redistill", is_flag=True, help="The run folder holds a set made by other method source: move it aside "
                                                "and distill again with the current code.")
@click.option("--keep-set", is_flag=True, help="The run folder holds a complete set made by other method source: "
                                               "evaluate it as it is (its rows stay with the old code's configuration).")
@evaluation_options
def run(method, dataset, ipc, distill_seed, out, save_saliency, redistill, keep_set, **options):
    """Distill, then evaluate every student for every seed; results go to the database."""
    from ddbench.core.pipeline import RunRequest, run as run_pipeline

    if redistill and keep_set:
        raise ConfigError("--redistill and --keep-set contradict each other; pass one of them")
    provider, request_options = _evaluation_request(options)
    if save_saliency:
        request_options["overrides"] = {**request_options["overrides"], "method.save_saliency": "true"}
    request = RunRequest(method=method, dataset=dataset, ipc=ipc, distill_seed=distill_seed, out_dir=out,
                         on_code_change="redistill" if redistill else "keep" if keep_set else "stop", **request_options)
    summary = run_pipeline(request, provider, RichProgress(err_console))
    console.print(f"distilled set: {summary.distilled.root} ({summary.distill_time_s:.1f} s)")
    console.print(f"configuration: {escape(summary.identity.label)} ({summary.identity.configuration})", highlight=False)
    _print_rows(summary.rows, summary.skipped)


@main.command(name="eval")
@click.argument("folder", type=click.Path())
@click.option("--dataset", default=None, help="Dataset the folder distils (read from manifest.json when present).")
@evaluation_options
def eval_command(folder, dataset, **options):
    """Evaluate a distilled folder (images/<class>/<i>.png, class folders made by another tool, or
    DD-Ranking's tensors: images.pt [+ labels.pt], class-major, normalised)."""
    from ddbench.core.dd_ranking import readable_folder
    from ddbench.core.pipeline import EvalRequest, evaluate_folder

    provider, request_options = _evaluation_request(options)
    folder = readable_folder(folder, dataset, request_options["data_root"], request_options["resolution"])
    rows, skipped = evaluate_folder(EvalRequest(folder=folder, dataset=dataset, **request_options), provider,
                                    RichProgress(err_console))
    _print_rows(rows, skipped)


def _evaluation_request(options: dict) -> tuple[object, dict]:
    """(teacher provider, the EvalOptions fields) from the options `evaluation_options` adds."""
    provider = teacher_provider(options.pop("teacher_ckpt"), options.pop("teacher_recipe"),
                                options.pop("teacher_class_order"), options.pop("teacher_norm"))
    return provider, dict(
        data_root=options["data_root"], resolution=options["resolution"], seeds=_int_list(options["seeds"], "--seeds"),
        evaluators=_name_list(options["evaluators"]), students=_name_list(options["students"]),
        teachers=_name_list(options["teachers"]), overrides=parse_overrides(options["overrides"]),
        device=options["device"], results_path=options["results"], force=options["force"],
        keep_results=options["keep_results"], dist_mode=options["dist_mode"],
    )


@main.command()
@click.option("--dataset", default=None)
@click.option("--ipc", type=int, default=None)
@click.option("--evaluator", default=None)
@click.option("--method", default=None)
@click.option("--grid", is_flag=True, help="Teachers x students per method (the paper's Table 2).")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "md", "json"]), default="table", show_default=True)
@click.option("--output", type=click.Path(), default=None, help="Write the export to this file instead of stdout.")
@click.option("--results", type=click.Path(), default=None, help="Results database (default $DDBENCH_HOME/results.sqlite).")
@click.option("--compare", "compare_grid", default=None, metavar="GRID",
              help="A paper's published numbers beside ours, per cell (a grid file or shipped grid, e.g. hieramp-table1).")
@click.option("--storage", is_flag=True,
              help="Add each row's storage in MB (images, labels, teacher: recorded on every results row) to the output.")
@click.option("--ddranking", is_flag=True,
              help="DD-Ranking's HLR, IOR, LRS and ARS per configuration and student (with --dataset and --ipc).")
def leaderboard(dataset, ipc, evaluator, method, grid, output_format, output, results, compare_grid, storage, ddranking):
    """Configurations x students (mean ± std over seeds, n) from the results database."""
    from ddbench.core.leaderboard import EXPORTERS, build_tables, render_megabytes
    from ddbench.core.results import ResultsStore

    path = Path(results) if results else paths.default_results_path()
    if compare_grid:
        from ddbench.sweeps.commands import print_comparison

        return print_comparison(compare_grid, path, dataset, ipc, output_format, output)
    if ddranking:
        from ddbench.sweeps.commands import print_ddranking

        return print_ddranking(path, dataset, ipc, output_format)
    with ResultsStore(path, readonly=True) as store:
        tables = build_tables(store, dataset=dataset, ipc=ipc, evaluator=evaluator, method=method, grid=grid)
        if storage:
            from ddbench.core.storage import attach_storage

            attach_storage(store, tables)
    if not tables:
        raise ConfigError(f"no results match these filters in {path}")
    if output_format != "table":
        write_export(EXPORTERS[output_format](tables), output)
        return
    for table in tables:
        rich_table = RichTable(title=escape(table.title))
        rich_table.add_column(table.row_label)
        for column in table.columns:
            rich_table.add_column(escape(column), justify="right")
        if storage:
            rich_table.add_column("storage MB", justify="right")
        for row in table.rows:
            cells = [table.cells[(row, c)].render() if (row, c) in table.cells else "-" for c in table.columns]
            if storage:
                cells.append(render_megabytes(table.row_extra.get(row, {}).get("storage_mb")))
            rich_table.add_row(escape(row), *cells)  # names like "random [teacher resnet18]" are not markup
        console.print(rich_table)


@main.command(name="list")
@click.argument("kind", type=click.Choice(sorted(registry.GROUPS)))
def list_command(kind):
    """Installed methods, evaluators or datasets (built-in and third-party)."""
    table = RichTable(title=f"ddbench {kind}")
    table.add_column("name")
    table.add_column("provided by")
    for name, target in registry.describe(kind):
        table.add_row(escape(name), escape(target))
    console.print(table)


@main.group()
def data() -> None:
    """Get the real datasets."""


@data.command()
@click.argument("name")
@click.option("--root", type=click.Path(), required=True, help="Folder to download and unpack into.")
@click.option("--variant", default="default", show_default=True, help="Archive variant (e.g. 320px, 160px for nette).")
@click.option("--checksum", default=None, help="Expected md5:<hex> or sha256:<hex>, overriding the built-in one.")
@click.option("--keep-archive", is_flag=True, help="Keep the downloaded archive after unpacking.")
def fetch(name, root, variant, checksum, keep_archive):
    """Download, verify and unpack dataset NAME; prints the --data-root to use."""
    from ddbench.core.fetch import fetch_archive

    dataset_cls = registry.load_dataset(name)
    if not dataset_cls.archives:
        raise ConfigError(f"{name} cannot be fetched automatically; get it from {dataset_cls.source}")
    if variant not in dataset_cls.archives:
        raise ConfigError(f"{name} has variants {', '.join(dataset_cls.archives)}, not {variant!r}")
    archive = dataset_cls.archives[variant]
    unpacked = fetch_archive(archive, root, checksum, RichProgress(err_console), keep_archive)
    data_root = dataset_cls.data_root_after_fetch(unpacked)
    console.print(f"{name} is ready: use --data-root {data_root}")


if __name__ == "__main__":
    main()
