"""Pictures with matplotlib (Agg, no display): image grids, saliency overlays, leaderboard bars with
error bars, and the token plots of the paper's Figures 3 and 4. Each function writes one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ddbench.analysis.token_usage import METRICS, OUTCOMES
from ddbench.core.errors import ConfigError
from ddbench.core.interfaces import NO_STUDENT
from ddbench.core.images import open_rgb

EXTRA_HINT = "pip install 'ddbench[analysis]'"
OUTCOME_COLOURS = {"increased": "#2e7d32", "decreased": "#c62828", "unchanged": "#9e9e9e"}
DPI = 100


def pyplot():
    """matplotlib.pyplot on the Agg backend, or an error naming the extra to install."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError(f"pictures need matplotlib; {EXTRA_HINT}") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    pyplot().close(figure)
    return path


def image_grid(samples: Sequence[tuple[Path, int]], class_names: Sequence[str], path: Path, title: str = "",
               max_per_class: int = 10, max_classes: int = 20) -> Path:
    """One row per class (the first `max_classes`), its first `max_per_class` images left to right."""
    plt = pyplot()
    by_class: dict[int, list[Path]] = {}
    for image_path, label in samples:
        by_class.setdefault(label, []).append(image_path)
    classes = sorted(by_class)[:max_classes]
    columns = max(1, min(max_per_class, max(len(by_class[c]) for c in classes)))
    figure, axes = plt.subplots(len(classes), columns, figsize=(0.6 * columns + 0.6, 0.6 * len(classes) + 0.4),
                                squeeze=False, layout="compressed")
    for row, class_index in enumerate(classes):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column < len(by_class[class_index]):
                axis.imshow(np.asarray(open_rgb(by_class[class_index][column])), interpolation="nearest")
        axes[row][0].set_ylabel(class_names[class_index], rotation=0, ha="right", va="center", fontsize=8)
    shown = f" (first {len(classes)} of {len(by_class)} classes)" if len(by_class) > len(classes) else ""
    figure.suptitle(title + shown, fontsize=9)
    return _save(figure, path)


def saliency_overlays(saliency_dir: Path, images_dir: Path, class_names: Sequence[str], path: Path,
                      stem: str = "0", title: str = "", max_classes: int = 10) -> Path | None:
    """Per class (image `stem`), the image and its class-token saliency over it at every scale of more
    than one token, coarse to fine. None when the run saved no saliency maps."""
    plt = pyplot()
    rows = [(name, saliency_dir / name / f"{stem}_maps.npz") for name in class_names
            if (saliency_dir / name / f"{stem}_maps.npz").is_file()][:max_classes]
    if not rows:
        return None
    with np.load(rows[0][1]) as first:
        scales = sorted((int(key.split("_")[1]) for key in first.files), key=int)
        sides = {scale: first[f"scale_{scale}"].shape[0] for scale in scales}
    scales = [scale for scale in scales if sides[scale] > 1]
    figure, axes = plt.subplots(len(rows), 1 + len(scales), figsize=(0.9 * (1 + len(scales)) + 0.6, 0.9 * len(rows) + 0.5),
                                squeeze=False, layout="compressed")
    for row, (name, maps_path) in enumerate(rows):
        image = np.asarray(open_rgb(images_dir / name / f"{stem}.png"), dtype=np.float32) / 255.0
        height, width = image.shape[:2]
        with np.load(maps_path) as maps:
            axes[row][0].imshow(image, interpolation="nearest")
            for column, scale in enumerate(scales, start=1):
                axes[row][column].imshow(image, interpolation="nearest")
                axes[row][column].imshow(maps[f"scale_{scale}"], cmap="jet", alpha=0.5, interpolation="bilinear",
                                         extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0][0].set_title("image", fontsize=8)
    for column, scale in enumerate(scales, start=1):
        axes[0][column].set_title(f"scale {scale} ({sides[scale]}x{sides[scale]})", fontsize=8)
    figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def leaderboard_bars(row_names: Sequence[str], column_names: Sequence[str],
                     cells: Mapping[tuple[str, str], tuple[float, float, int]], path: Path, title: str,
                     metric: str, lower_is_better: bool = False) -> Path:
    """Grouped bars: one group per leaderboard row, one bar per student, error bars = std, n above."""
    plt = pyplot()
    width = 0.8 / max(1, len(column_names))
    figure, axis = plt.subplots(figsize=(max(4.0, 1.2 * len(row_names) * max(1, len(column_names)) ** 0.5 + 2), 3.2))
    positions = np.arange(len(row_names))
    for index, column in enumerate(column_names):
        present = [(i, cells[(row, column)]) for i, row in enumerate(row_names) if (row, column) in cells]
        if not present:
            continue
        x = positions[[i for i, _ in present]] + (index - (len(column_names) - 1) / 2) * width
        means = [cell[0] for _, cell in present]
        stds = [cell[1] for _, cell in present]
        bars = axis.bar(x, means, width, yerr=stds, capsize=3, label=column)
        for bar, (_, cell) in zip(bars, present):  # n above the error bar
            axis.annotate(f"n={cell[2]}", (bar.get_x() + bar.get_width() / 2, cell[0] + cell[1]), fontsize=7,
                          ha="center", va="bottom", xytext=(0, 2), textcoords="offset points")
    axis.set_xticks(positions, row_names, rotation=20 if len(row_names) > 3 else 0, ha="right" if len(row_names) > 3 else "center",
                    fontsize=8)
    axis.set_ylabel(metric + (" (lower is better)" if lower_is_better else ""), fontsize=8)
    axis.set_title(title, fontsize=8)
    if list(column_names) != [NO_STUDENT]:
        axis.legend(title="student", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.margins(y=0.12)
    return _save(figure, path)


def accuracy_vs_storage(points: Sequence[tuple[str, str, float, float, float, int]], path: Path, title: str,
                        metric: str) -> Path:
    """One marker per (leaderboard row, student): x = storage in MB (canonical images + labels +
    teacher), y = mean with std error bars; the row's name beside it."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    students = sorted({student for _, student, *_ in points})
    for student in students:
        mine = [point for point in points if point[1] == student]
        axis.errorbar([p[2] for p in mine], [p[3] for p in mine], yerr=[p[4] for p in mine], fmt="o", capsize=3,
                      label=student)
        for row, _, megabytes, mean, _, n in mine:
            axis.annotate(f"{row} (n={n})", (megabytes, mean), fontsize=6, xytext=(4, 2), textcoords="offset points")
    axis.set_xlabel("storage (MB): images as PNG + labels + teacher", fontsize=8)
    axis.set_ylabel(metric, fontsize=8)
    axis.set_title(title, fontsize=8)
    if students != [NO_STUDENT]:
        axis.legend(title="student", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.margins(x=0.2, y=0.15)
    return _save(figure, path)


def token_usage(summaries: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Dataset-level entropy and coverage per scale, one line per run."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(8, 3))
    for label, summary in summaries.items():
        rows = summary["dataset"]["per_scale"]
        for axis, metric in zip(axes, METRICS):
            axis.plot([r["scale"] for r in rows], [r[metric] for r in rows], marker="o", label=label)
    for axis, metric in zip(axes, METRICS):
        axis.set_xlabel("scale (coarse to fine)")
        axis.set_ylabel("entropy (nats)" if metric == "entropy" else "coverage (share of the codebook)")
        axis.legend(fontsize=7)
    figure.suptitle("codebook token usage per scale (all images)", fontsize=9)
    return _save(figure, path)


def figure3(comparison: Mapping[str, Any], path: Path, base_label: str, other_label: str) -> Path:
    """Share of classes whose entropy / coverage increased, decreased or stayed, per scale and stage."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for axis, metric in zip(axes, METRICS):
        rows = [("S%d" % r["at"], r) for r in comparison["per_scale"][metric]]
        rows += [(r["at"], r) for r in comparison["per_stage"][metric]]
        x = np.arange(len(rows))
        for index, outcome in enumerate(OUTCOMES):
            axis.bar(x + (index - 1) * 0.27, [r[f"{outcome}_percent"] for _, r in rows], 0.27, label=outcome,
                     color=OUTCOME_COLOURS[outcome])
        axis.set_xticks(x, [name for name, _ in rows], fontsize=8)
        axis.axvline(len(comparison["per_scale"][metric]) - 0.5, color="black", linewidth=0.5)
        axis.set_ylim(0, 100)
        axis.set_ylabel("% of classes", fontsize=8)
        axis.set_title(f"{metric}: {other_label} vs {base_label}", fontsize=8)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"classes whose token {' / '.join(METRICS)} changed ({comparison['classes']} classes; "
                    "per scale, then per stage)", fontsize=9)
    return _save(figure, path)


def figure4(maps_by_run: Mapping[str, Sequence[np.ndarray]], class_name: str, path: Path) -> Path:
    """Per run (rows) and scale (columns): distinct tokens at each position over the class's images,
    the scale's average in the upper-right corner; one colour scale for all panels."""
    plt = pyplot()
    runs = list(maps_by_run)
    num_scales = len(next(iter(maps_by_run.values())))
    top = max(1, max(int(m.max()) for maps in maps_by_run.values() for m in maps))
    figure, axes = plt.subplots(len(runs), num_scales, figsize=(1.3 * num_scales + 1.2, 1.4 * len(runs) + 0.6),
                                squeeze=False)
    for row, run in enumerate(runs):
        for column, values in enumerate(maps_by_run[run]):
            axis = axes[row][column]
            image = axis.imshow(values, cmap="Purples", vmin=0, vmax=top, interpolation="nearest")
            axis.text(0.97, 0.97, f"{values.mean():.2f}", transform=axis.transAxes, ha="right", va="top", fontsize=7,
                      bbox=dict(facecolor="white", alpha=0.8, linewidth=0, pad=1))
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"scale {column} ({values.shape[0]}x{values.shape[1]})", fontsize=8)
        axes[row][0].set_ylabel(run, fontsize=8)
    bar = figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    bar.set_label("distinct tokens", fontsize=8)
    figure.suptitle(f"distinct codebook tokens per position, class {class_name}", fontsize=9)
    return _save(figure, path)
