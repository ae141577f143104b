"""`ddbench report`: one static HTML page (index.html + img/) that opens offline from disk.

It shows the leaderboards of the chosen results (`build_tables` over exactly those rows: every
cell is mean ± std over its rows, with n) with how each row is identified, a bar chart per
leaderboard, and per distilled run its image grid, saliency overlays, token diagnostics (what
`ddbench analyze tokens` wrote into the run folder) and its manifest; every results row behind a
number is listed with its configs, versions and git commit.
"""

from __future__ import annotations

import html
import json
import platform
import re
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import ddbench
from ddbench.analysis import figures
from ddbench.analysis.diagnose import ANALYSIS_DIR, RESULT_FILE
from ddbench.analysis.run_tokeniser import open_run
from ddbench.core import registry
from ddbench.core.distilled import DistilledSet
from ddbench.core.errors import ConfigError, DDBenchError
from ddbench.core.leaderboard import TABLE_KEYS, Table, build_tables
from ddbench.core.results import ResultRow, ResultsStore
from ddbench.core.storage import MB, storage_of_row

PAGE = "index.html"
ASSETS = "img"


@dataclass
class Selection:
    """The results rows and the distilled runs one report shows."""

    rows: list[dict[str, Any]]
    runs: list[DistilledSet] = field(default_factory=list)
    missing_runs: list[str] = field(default_factory=list)  # folders named by rows that no longer exist


def _same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def select(store: Optional[ResultsStore], run_refs: Sequence[str] = (), dataset: Optional[str] = None,
           ipc: Optional[int] = None) -> Selection:
    """RUN folders (their rows), or every row of --dataset/--ipc (and the runs they name), or everything."""
    all_rows = list(store.rows(dataset=dataset, ipc=ipc)) if store is not None else []
    if run_refs:
        runs = [open_run(reference) for reference in run_refs]
        rows = [row for row in all_rows if any(_same_folder(row["distilled_path"], run.root) for run in runs)]
        return Selection(rows, runs)
    runs, missing, seen = [], [], set()
    for row in all_rows:
        folder = str(Path(row["distilled_path"]).expanduser().resolve())
        if folder in seen:
            continue
        seen.add(folder)
        try:
            runs.append(open_run(folder))
        except DDBenchError:
            missing.append(row["distilled_path"])
    return Selection(all_rows, runs, missing)


def tables_of(rows: Iterable[dict[str, Any]]) -> list[Table]:
    """`build_tables` over exactly these rows (copied into an in-memory store)."""
    names = {f.name for f in fields(ResultRow)}
    with ResultsStore(":memory:") as scratch:
        for row in rows:
            scratch.add(ResultRow(**{key: value for key, value in row.items() if key in names}))
        return build_tables(scratch)


def rows_behind(table: Table, rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The results rows pooled into each leaderboard row of `table` (same table keys, configuration
    and teacher)."""
    names = {(identity.configuration, identity.teacher_key): name for name, identity in table.row_identities.items()}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if all(row[key] == getattr(table, key) for key in TABLE_KEYS):
            name = names.get((row["configuration"], row["teacher_key"]))
            if name is not None:
                grouped.setdefault(name, []).append(row)
    return grouped


def lower_is_better(evaluator: str) -> bool:
    try:
        return bool(getattr(registry.load_evaluator(evaluator), "lower_is_better", False))
    except DDBenchError:
        return False


# ----- HTML pieces -----
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "x"


def _json_block(value: Any) -> str:
    return f"<pre>{_e(json.dumps(value, indent=1, sort_keys=True, default=str))}</pre>"


def _identity(name: str, table: Table, behind: list[dict[str, Any]]) -> str:
    """How a leaderboard row is identified: label, configuration hash, generator and teacher
    weights, the evaluator's protocol version, and how many evaluation and distillation seeds."""
    identity = table.row_identities[name]
    cells = [cell for (row, _), cell in table.cells.items() if row == name]
    eval_seeds = sorted(set().union(*(cell.eval_seeds for cell in cells)))
    distill_seeds = sorted(set().union(*(cell.distill_seeds for cell in cells)))
    weights = " ".join(f"{role} {digest[:12]}" for role, digest in sorted(identity.weights.items())) or "none recorded"
    teacher = f" · teacher {identity.teacher} {identity.teacher_key[:12]}" if identity.teacher else ""
    distilled = sorted({row["distilled_hash"][:12] for row in behind})
    return (f'<b>{_e(name)}</b><br><small class="identity">configuration {_e(identity.configuration[:12])} · weights '
            f"{_e(weights)}{_e(teacher)} · {_e(table.evaluator)} protocol v{table.evaluator_protocol} · "
            f"{len(eval_seeds)} eval seed(s) {_e(eval_seeds)} · {len(distill_seeds)} distill seed(s) {_e(distill_seeds)} · "
            f"distilled sets {_e(', '.join(distilled))}</small>")


def _storage_points(table: Table, behind: dict[str, list[dict[str, Any]]], cache: dict) -> list[tuple]:
    """(row, student, mean storage MB, mean, std, n) of every cell whose distilled sets are on disk."""
    megabytes = {}
    for row in table.rows:
        found = [s for s in (storage_of_row(r, cache) for r in behind.get(row, [])) if s is not None]
        if found:
            megabytes[row] = sum(s.total_bytes for s in found) / len(found) / MB
    return [(row, column, megabytes[row], cell.mean, cell.std, cell.n)
            for (row, column), cell in sorted(table.cells.items()) if row in megabytes]


def _leaderboard(table: Table, behind: dict[str, list[dict[str, Any]]], chart: Optional[str],
                 storage_chart: Optional[str] = None) -> str:
    header = "".join(f"<th>{_e(column)}</th>" for column in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for column in table.columns:
            cell = table.cells.get((row, column))
            if cell is None:
                cells.append("<td>-</td>")
                continue
            cells.append(f'<td class="cell" data-table="{_e(table.title)}" data-row="{_e(row)}" data-column="{_e(column)}" data-mean="{cell.mean!r}" '
                         f'data-std="{cell.std!r}" data-n="{cell.n}">{_e(cell.render())}</td>')
        body.append(f"<tr><td>{_identity(row, table, behind.get(row, []))}</td>{''.join(cells)}</tr>")
    direction = " (lower is better)" if lower_is_better(table.evaluator) else ""
    provenance = "".join(_provenance(row, behind.get(row, [])) for row in table.rows)
    image = f'<img src="{_e(chart)}" alt="bar chart of {_e(table.title)}">' if chart else ""
    if storage_chart:
        image += f'<img src="{_e(storage_chart)}" alt="accuracy against storage of {_e(table.title)}">'
    return (f'<section class="leaderboard" data-title="{_e(table.title)}" data-dataset="{_e(table.dataset)}" '
            f'data-ipc="{table.ipc}" data-evaluator="{_e(table.evaluator)}" data-metric="{_e(table.metric)}" '
            f'data-config="{_e(table.evaluator_config_hash)}">'
            f"<h3>{_e(table.title)}{_e(direction)}</h3>"
            f"<table><tr><th>{_e(table.row_label)}</th>{header}</tr>{''.join(body)}</table>{image}"
            f"<details><summary>the results rows behind these numbers</summary>{provenance}</details></section>")


def _provenance(label: str, behind: list[dict[str, Any]]) -> str:
    items = []
    for row in behind:
        teacher = f" · teacher {row['teacher']}" if row["teacher"] else ""
        versions = ", ".join(f"{name} {version}" for name, version in sorted(row["versions"].items()))
        facts = {key: row[key] for key in ("method_config", "weights", "distill_seed", "evaluator_config", "recipe",
                                           "metrics", "teacher_info", "dataset_fingerprint", "distilled_path",
                                           "distilled_hash")}
        items.append(
            f"<li><b>{_e(row['student'])} seed {row['seed']}{_e(teacher)}: {row['value']:.4f}</b> "
            f"<small>run {_e(row['run_id'])} · {_e(row['created_at'])} · git {_e(row['git_hash'] or '-')} · "
            f"{_e(versions)}</small><details><summary>configuration {_e(row['configuration'][:12])} "
            f"({_e(row['label'])}), evaluator config {_e(row['evaluator_config_hash'])} ({_e(row['evaluator_label'])}), "
            f"recipe, metrics</summary>{_json_block(facts)}</details></li>")
    return f"<h4>{_e(label)}</h4><ul>{''.join(items)}</ul>"


def _token_section(run: DistilledSet, assets: Path, prefix: str) -> str:
    """What `ddbench analyze tokens` wrote for this run: summary numbers and its figures."""
    parts = []
    for result in sorted((run.root / ANALYSIS_DIR).glob(f"*/{RESULT_FILE}")):
        record = json.loads(result.read_text())
        images = []
        for key, name in sorted(record.get("figures", {}).items()):
            source = result.parent / name
            if source.is_file():
                target = f"{prefix}-{_slug(result.parent.name)}-{name}"
                shutil.copyfile(source, assets / target)
                images.append(f'<img src="{ASSETS}/{_e(target)}" alt="{_e(key)}">')
        rows = []
        for entry in record["runs"]:
            stages = entry["summary"]["dataset"]["per_stage"]
            rows.append(f"<tr><td>{_e(entry['label'])}</td>" + "".join(
                f"<td>{stages[s]['entropy']:.4f} / {stages[s]['coverage']:.4f}</td>" for s in stages) + "</tr>")
        stage_names = list(record["runs"][0]["summary"]["dataset"]["per_stage"])
        figure3 = record.get("figure3")
        fig3_rows = ""
        if figure3:
            fig3_rows = "".join(
                f"<tr><td>{_e(metric)}</td>" + "".join(
                    f"<td>{r['increased']}/{r['decreased']}/{r['unchanged']}</td>" for r in figure3["per_stage"][metric]) + "</tr>"
                for metric in ("entropy", "coverage"))
            fig3_rows = (f"<p>classes increased / decreased / unchanged, {_e(figure3['other'])} vs {_e(figure3['base'])} "
                         f"({figure3['classes']} classes):</p><table><tr><th>metric</th>"
                         + "".join(f"<th>{_e(s)}</th>" for s in stage_names) + f"</tr>{fig3_rows}</table>")
        vqvae = record["vqvae"]
        parts.append(
            f"<h4>token diagnostics: {_e(result.parent.name)}</h4>"
            f"<p><small>VQ-VAE {_e(vqvae['source'])} (sha256 {_e(vqvae['sha256'][:16])}, codebook {vqvae['vocab_size']}, "
            f"scales {_e(vqvae['patch_nums'])})</small></p>"
            "<p>dataset-level entropy (nats) / coverage per stage:</p><table><tr><th>run</th>"
            + "".join(f"<th>{_e(s)}</th>" for s in stage_names) + f"</tr>{''.join(rows)}</table>{fig3_rows}"
            + "".join(images))
    return "".join(parts)


def _run_section(run: DistilledSet, assets: Path) -> str:
    prefix = _slug(f"{run.manifest.get('dataset')}-{run.root.name}")
    grid = figures.image_grid(run.samples, run.class_names, assets / f"{prefix}-grid.png",
                              title=f"{run.method} · {run.root.name}")
    parts = [f'<section class="run"><h3>{_e(run.method)} · {_e(run.root.name)}</h3>',
             f"<p><small>{_e(run.root)} · content hash {_e(run.content_hash[:16])}</small></p>",
             f'<img src="{ASSETS}/{_e(grid.name)}" alt="images of {_e(run.root.name)}">']
    overlay = figures.saliency_overlays(run.root / "saliency", run.root / "images", run.class_names,
                                        assets / f"{prefix}-saliency.png", title=f"class-token saliency · {run.method}")
    if overlay is not None:
        parts.append(f'<img src="{ASSETS}/{_e(overlay.name)}" alt="saliency overlays of {_e(run.root.name)}">')
    parts.append(_token_section(run, assets, prefix))
    manifest = {key: value for key, value in run.manifest.items() if key != "files"}
    parts.append(f"<details><summary>manifest (method, config, seed, teacher, versions)</summary>{_json_block(manifest)}</details>")
    parts.append("</section>")
    return "".join(parts)


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .5em;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:.5em 0}
pre{background:#f4f4f4;padding:.5em;font-size:11px;overflow:auto}.warn{color:#b00}.broken{color:#b00;font-weight:bold}
section{border-top:1px solid #ddd;margin-top:1em}small{color:#555}td.cell{white-space:nowrap}"""

# Marks every image as loaded or not once the page has loaded (a missing file is shown, not hidden).
CHECK_IMAGES = """window.addEventListener("load",function(){var broken=0;
for(var i=0;i<document.images.length;i++){var img=document.images[i];var ok=img.complete&&img.naturalWidth>0;
img.setAttribute("data-loaded",ok?"1":"0");if(!ok){broken++;var s=document.createElement("span");
s.className="broken";s.textContent="image missing: "+img.getAttribute("src");img.after(s);}}
document.body.setAttribute("data-images",String(document.images.length));
document.body.setAttribute("data-broken",String(broken));});"""


def write_report(selection: Selection, out_dir: str | Path, store_path: Optional[Path] = None,
                 title: str = "ddbench report") -> Path:
    """Write index.html and its images into `out_dir`; returns the page."""
    if not selection.rows and not selection.runs:
        raise ConfigError("nothing to report: no results rows and no runs match; pass RUN folders, --dataset/--ipc, "
                          "or run `ddbench run ...` first")
    out = Path(out_dir)
    assets = out / ASSETS
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    boards, storage_cache = [], {}
    for index, table in enumerate(tables_of(selection.rows)):
        behind = rows_behind(table, selection.rows)
        cells = {key: (cell.mean, cell.std, cell.n) for key, cell in table.cells.items()}
        chart = figures.leaderboard_bars(table.rows, table.columns, cells, assets / f"leaderboard-{index}.png",
                                         table.title, table.metric, lower_is_better(table.evaluator))
        points = _storage_points(table, behind, storage_cache)
        storage_chart = figures.accuracy_vs_storage(points, assets / f"storage-{index}.png", table.title,
                                                    table.metric) if points else None
        boards.append(_leaderboard(table, behind, f"{ASSETS}/{chart.name}",
                                   f"{ASSETS}/{storage_chart.name}" if storage_chart else None))
    runs = "".join(_run_section(run, assets) for run in selection.runs)
    missing = "".join(f"<li>{_e(path)}</li>" for path in selection.missing_runs)
    import matplotlib
    import torch

    versions = {"ddbench": ddbench.__version__, "python": platform.python_version(), "torch": torch.__version__,
                "matplotlib": matplotlib.__version__}
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style>'
        f"<script>{CHECK_IMAGES}</script></head><body><h1>{_e(title)}</h1>"
        f"<p><small>written {_e(time.strftime('%Y-%m-%d %H:%M:%S %z'))} by "
        f"{_e(', '.join(f'{k} {v}' for k, v in versions.items()))} from {_e(store_path or 'no results database')}; "
        f"{len(selection.rows)} results rows, {len(selection.runs)} distilled runs. Each leaderboard cell is the mean ± "
        "sample std (ddof=1) over its rows, with n.</small></p>"
        f"<h2>Leaderboards</h2>{''.join(boards) or '<p>no results rows</p>'}"
        f"<h2>Distilled runs</h2>{runs or '<p>no run folders</p>'}"
        + (f"<h2>Runs named by results but missing on disk</h2><ul>{missing}</ul>" if missing else "")
        + "</body></html>\n")
    path = out / PAGE
    path.write_text(page, encoding="utf-8")
    return path
