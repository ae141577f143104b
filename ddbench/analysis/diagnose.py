"""`ddbench analyze tokens RUN [--vs RUN]`: tokenise, summarise, compare, plot, write JSON.

Writes into `<RUN>/analysis/tokens/` (with `--vs OTHER`: `tokens-vs-<OTHER folder>/`) a
`tokens.json` (the VQ-VAE used, per run: dataset-level and per-class entropy and coverage per scale
and stage; with --vs the Figure 3 counts; the Figure 4 maps of one class) and the PNGs it lists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import ddbench
from ddbench.analysis import figures, token_usage
from ddbench.analysis.run_tokeniser import open_run, run_vqvae, tokenise
from ddbench.core import registry
from ddbench.core.device import resolve_device
from ddbench.core.errors import ConfigError

RESULT_FILE = "tokens.json"
ANALYSIS_DIR = "analysis"


def _labels(runs) -> list[str]:
    """Method names, or `method (folder)` when two runs share a method."""
    methods = [run.method for run in runs]
    return [m if methods.count(m) == 1 else f"{m} ({run.root.name})" for m, run in zip(methods, runs)]


def default_output(run_root: Path, other_root: Optional[Path]) -> Path:
    name = "tokens" if other_root is None else f"tokens-vs-{other_root.name}"
    return run_root / ANALYSIS_DIR / name


def analyse_tokens(run_ref: str, vs_ref: Optional[str] = None, out_dir: Optional[str | Path] = None,
                   class_name: Optional[str] = None, vqvae_path: Optional[str] = None,
                   patch_nums: Optional[Sequence[int]] = None, device: str = "auto",
                   dataset: Optional[str] = None) -> Path:
    """Run the token diagnostics; returns the written `tokens.json`. `dataset` names the classes of
    folders without a manifest (another tool's output, real images)."""
    resolved_device = resolve_device(device)
    class_names = registry.create_dataset(dataset).class_names if dataset else None
    runs = [open_run(run_ref, class_names)] + ([open_run(vs_ref, class_names)] if vs_ref else [])
    if len(runs) == 2 and runs[0].class_names != runs[1].class_names:
        raise ConfigError(f"{runs[0].root} and {runs[1].root} distil different class lists; compare runs of one dataset")
    vqvaes = [run_vqvae(run, resolved_device, vqvae_path, patch_nums) for run in runs]
    if len({vq.sha256 for vq in vqvaes}) > 1:
        raise ConfigError(f"{runs[0].root} and {runs[1].root} were made with different VQ-VAEs ({vqvaes[0].source} vs "
                          f"{vqvaes[1].source}); Figure 3 compares two runs of the same generator")
    token_sets = [tokenise(run, vqvaes[0], resolved_device) for run in runs]
    summaries = [token_usage.summary(token_set) for token_set in token_sets]
    labels = _labels(runs)
    class_names = runs[0].class_names
    chosen = class_name if class_name is not None else class_names[0]
    if chosen not in class_names:
        raise ConfigError(f"--class {chosen!r} is not a class of {runs[0].root}; classes: {', '.join(class_names[:10])}"
                          + (" ..." if len(class_names) > 10 else ""))
    class_index = class_names.index(chosen)
    unique_maps = {label: token_usage.unique_per_position(token_set.of_class(class_index))
                   for label, token_set in zip(labels, token_sets)}

    out = Path(out_dir) if out_dir else default_output(runs[0].root, runs[1].root if vs_ref else None)
    out.mkdir(parents=True, exist_ok=True)
    written = {"usage": figures.token_usage(dict(zip(labels, summaries)), out / "token_usage.png").name,
               "figure4": figures.figure4(unique_maps, chosen, out / f"figure4_class_{class_index}.png").name}
    comparison = token_usage.compare_classes(summaries[0], summaries[1]) if vs_ref else None
    if comparison is not None:
        written["figure3"] = figures.figure3(comparison, out / "figure3.png", labels[0], labels[1]).name
    record: dict[str, Any] = {
        "about": "codebook-token diagnostics (HIERAMP paper section 5); made by `ddbench analyze tokens`",
        "ddbench_version": ddbench.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "vqvae": vqvaes[0].describe(),
        "runs": [{"label": label, "root": str(run.root), "method": run.method, "config": run.manifest.get("config"),
                  "seed": run.manifest.get("seed"), "ipc": run.ipc, "content_hash": run.content_hash, "summary": summary}
                 for label, run, summary in zip(labels, runs, summaries)],
        "figure3": ({"base": labels[0], "other": labels[1], **comparison} if comparison is not None else None),
        "figure4": {"class": chosen, "maps": {label: [m.tolist() for m in maps] for label, maps in unique_maps.items()}},
        "figures": written,
    }
    path = out / RESULT_FILE
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
