"""Shared reading of class-folder trees (`<split>/<class>/<image>`), with layout errors that say
what was expected and where to get the data, and of the packaged class lists (`data/*_classes.txt`,
each citing its published source in its header)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

from ddbench.core.errors import DataError
from ddbench.core.images import list_images


def require_root(root: Path | None, dataset: str, layout: str, source: str) -> Path:
    """The data root, or one clear error naming the layout, the source and the fetch command."""
    hint = f"Expected layout: {layout}. Get it from {source}, or run `ddbench data fetch {dataset} --root DIR`."
    if root is None:
        raise DataError(f"dataset {dataset!r} needs --data-root. {hint}")
    if not root.is_dir():
        raise DataError(f"data root {root} for {dataset!r} does not exist. {hint}")
    return root


def class_folder_samples(
    split_dir: Path, class_names: Sequence[str], dataset: str, layout: str, source: str
) -> list[tuple[Path, int]]:
    """(path, label) for every image under `split_dir/<class>/`, labels in `class_names` order."""
    hint = f"Expected layout: {layout}. Get it from {source}."
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is missing for {dataset!r}. {hint}")
    missing = [name for name in class_names if not (split_dir / name).is_dir()]
    if missing:
        raise DataError(
            f"{split_dir} lacks {len(missing)} of {len(class_names)} class folders for {dataset!r} "
            f"(e.g. {', '.join(missing[:3])}). {hint}"
        )
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(class_names):
        files = list_images(split_dir / name)
        if not files:
            raise DataError(f"{split_dir / name} holds no images. {hint}")
        samples.extend((path, label) for path in files)
    return samples


CLASS_LIST_DIR = Path(__file__).parent / "data"


def read_class_entries(path: Path) -> list[tuple[str, str | None]]:
    """(class id, human-readable name or None) per line of a packaged class list, in file order.

    `#` lines are the header (source citation, order, format); an entry is `id` or `id<TAB>name`.
    """
    entries: list[tuple[str, str | None]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip().split("\t")
        if len(fields) > 2 or not fields[0].strip():
            raise DataError(f"{path}:{number}: expected 'id' or 'id<TAB>name', got {line!r}; fix the class list")
        entries.append((fields[0].strip(), fields[1].strip() if len(fields) == 2 else None))
    counts = Counter(class_id for class_id, _ in entries)
    duplicates = sorted(class_id for class_id, count in counts.items() if count > 1)
    if duplicates:
        raise DataError(f"{path} lists {', '.join(duplicates)} more than once; fix the class list")
    return entries


def read_class_list(path: Path) -> list[str]:
    """The class ids of a packaged class list, in file order."""
    return [class_id for class_id, _ in read_class_entries(path)]
