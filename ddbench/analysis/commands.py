"""`ddbench analyze tokens` and `ddbench report` (registered through the `ddbench.commands` entry
points). Top-level imports stay light (click only); the work is imported inside each command."""

from __future__ import annotations

import click


def _scales(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    from ddbench.core.errors import ConfigError

    try:
        return tuple(int(item) for item in value.split(",") if item.strip())
    except ValueError as exc:
        raise ConfigError(f"--patch-nums expects comma-separated integers like 1,2,3,4,6,8, got {value!r}") from exc


@click.group(name="analyze")
def analyze_group() -> None:
    """Look inside distilled sets (codebook tokens)."""


@analyze_group.command(name="tokens")
@click.argument("run")
@click.option("--vs", "other", default=None, help="A second run of the same generator: Figure 3 compares RUN -> OTHER.")
@click.option("--class", "class_name", default=None, help="Class of the Figure 4 maps (default: the first class).")
@click.option("--out", type=click.Path(), default=None, help="Output folder (default <RUN>/analysis/tokens[-vs-OTHER]/).")
@click.option("--vqvae", default=None, help="VQ-VAE checkpoint to tokenise with (default: the one that made RUN).")
@click.option("--patch-nums", default=None, help="Scale pyramid of --vqvae, e.g. 1,2,3,4,6,8 (default: the release's).")
@click.option("--dataset", default=None, help="Dataset whose classes name the folders of a RUN without manifest.json.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def tokens_command(run, other, class_name, out, vqvae, patch_nums, dataset, device):
    """Per-scale codebook entropy and coverage of RUN (a run folder or run id), per class and stage."""
    from ddbench.analysis.diagnose import analyse_tokens

    path = analyse_tokens(run, other, out, class_name, vqvae, _scales(patch_nums), device, dataset)
    click.echo(f"wrote {path} and its figures")


@click.command(name="report")
@click.argument("runs", nargs=-1)
@click.option("--dataset", default=None, help="Every result of this dataset (with --ipc) instead of RUN folders.")
@click.option("--ipc", type=int, default=None)
@click.option("--out", type=click.Path(), default="ddbench-report", show_default=True, help="Folder of index.html and img/.")
@click.option("--results", type=click.Path(), default=None, help="Results database (default $DDBENCH_HOME/results.sqlite).")
@click.option("--title", default="ddbench report", show_default=True)
def report_command(runs, dataset, ipc, out, results, title):
    """One static HTML page: leaderboards, bar charts, image grids, saliency, token plots, configs."""
    from pathlib import Path

    from ddbench.analysis.report import select, write_report
    from ddbench.core import paths
    from ddbench.core.errors import ConfigError
    from ddbench.core.results import ResultsStore

    if runs and (dataset or ipc is not None):
        raise ConfigError("pass RUN folders or --dataset/--ipc, not both")
    store_path = Path(results) if results else paths.default_results_path()
    if results and not store_path.exists():
        raise ConfigError(f"no results database at {store_path}; pass the file `ddbench run --results` wrote")
    store = ResultsStore(store_path, readonly=True) if store_path.exists() else None
    try:
        selection = select(store, runs, dataset, ipc)
    finally:
        if store is not None:
            store.close()
    page = write_report(selection, out, store_path if store is not None else None, title)
    click.echo(f"wrote {page} (open it in a browser; it needs no network)")
