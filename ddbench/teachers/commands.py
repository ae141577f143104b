"""`ddbench teacher ...`: train a teacher with the documented recipe, check an external
checkpoint's accuracy, list the cache. Thin: parse, call `TeacherStore`, print one line each."""

from __future__ import annotations

import click


def _progress():
    from ddbench.terminal import RichProgress

    return RichProgress()


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


@click.group("teacher")
def teacher_group() -> None:
    """Teachers for soft-label evaluators: train, check, list."""


@teacher_group.command("train")
@click.option("--dataset", required=True, help="Dataset name (see `ddbench list`).")
@click.option("--arch", default="resnet18", show_default=True, help="Teacher architecture(s), comma-separated.")
@click.option("--data-root", type=click.Path(), default=None, help="Root of the dataset's files.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--force", is_flag=True, help="Retrain even if the cache holds this teacher.")
@click.option("--recipe", default=None, help="A named recipe instead of the dataset's own (e.g. imagenet-finetune).")
@click.option("--resolution", type=int, default=None, help="Working resolution in px (default: the dataset's).")
@click.option("--set", "overrides", multiple=True, help="Recipe override key=value (changes the recipe hash).")
def train_command(dataset: str, arch: str, data_root: str | None, device: str, force: bool, recipe: str | None,
                  resolution: int | None, overrides: tuple[str, ...]) -> None:
    """Train (or load from the cache) a teacher with the documented recipe and report its accuracy."""
    from ddbench.core.config import parse_overrides, resolve_config
    from ddbench.core.device import resolve_device
    from ddbench.core.registry import create_dataset
    from ddbench.teachers.recipes import TeacherRecipe
    from ddbench.teachers.store import TeacherStore

    spec = create_dataset(dataset, root=data_root, resolution=resolution)
    parsed = parse_overrides(overrides)
    recipe_overrides = {}
    if parsed:  # coerce through the recipe's types, with "did you mean" for typos
        import dataclasses

        base = dataclasses.asdict(TeacherStore(recipe=recipe).recipe(spec))
        resolved = resolve_config(TeacherRecipe, base, parsed, owner="teacher recipe")
        recipe_overrides = {key: getattr(resolved, key) for key in parsed}
    store = TeacherStore(recipe_overrides=recipe_overrides, recipe=recipe)
    resolved_device = resolve_device(device)
    for name in _names(arch):
        if force:
            teacher = store.train(spec, name, resolved_device, _progress())
        else:
            teacher = store(spec, name, resolved_device, _progress())
        click.echo(f"{name} on {dataset}: top-1 {teacher.accuracy:.2f}% ({teacher.source})")


@teacher_group.command("check")
@click.option("--dataset", required=True, help="Dataset name.")
@click.option("--arch", required=True, help="Architecture of the checkpoint.")
@click.option("--teacher-ckpt", "checkpoint", required=True, type=click.Path(exists=True), help="Checkpoint file.")
@click.option("--data-root", type=click.Path(), default=None, help="Root of the dataset's files.")
@click.option("--resolution", type=int, default=None, help="Working resolution in px (default: the dataset's).")
@click.option("--class-order", default=None,
              help="Class of each classifier row: sorted (default), minimax-woof, imagenet:I,J,..., classes:A,B,... or a file.")
@click.option("--teacher-norm", type=click.Choice(["imagenet", "dataset"]), default="imagenet", show_default=True,
              help="Mean/std a checkpoint from elsewhere was trained with (ddbench's files record theirs).")
@click.option("--device", default="auto", show_default=True)
def check_command(dataset: str, arch: str, checkpoint: str, data_root: str | None, resolution: int | None,
                  class_order: str | None, teacher_norm: str, device: str) -> None:
    """Load an external checkpoint and measure its top-1 on the val split (fails near chance)."""
    from ddbench.core.device import resolve_device
    from ddbench.core.registry import create_dataset
    from ddbench.teachers.store import TeacherStore

    spec = create_dataset(dataset, root=data_root, resolution=resolution)
    store = TeacherStore(checkpoints={arch: checkpoint}, class_order=class_order, checkpoint_normalization=teacher_norm)
    teacher = store(spec, arch, resolve_device(device), _progress())
    click.echo(f"{arch} from {checkpoint} on {dataset}: top-1 {teacher.accuracy:.2f}% (sha256 {teacher.checkpoint_sha256[:12]})")


@teacher_group.command("ls")
def list_command() -> None:
    """The cached teachers with their accuracy and recipe hash."""
    from ddbench.core.errors import CheckpointError
    from ddbench.core.paths import home
    from ddbench.teachers.store import read_record

    root = home() / "teachers"
    records = sorted(root.glob("*/*.json")) if root.exists() else []
    if not records:
        click.echo(f"no cached teachers under {root}")
    for path in records:
        try:
            record = read_record(path)
        except CheckpointError as exc:
            click.echo(f"unusable: {exc}")
            continue
        click.echo(f"{record['dataset']:<12} {record['arch']:<16} top-1 {record['accuracy']:6.2f}%  recipe {record['recipe_hash']}  {path.with_suffix('.pt')}")
