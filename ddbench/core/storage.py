"""The storage a result costs: the other axis DD methods are compared on. Prints nothing.

- images as stored: the bytes of the distilled set's image files, as they lie on disk;
- images at a canonical encoding: every image re-encoded as an 8-bit RGB PNG at the dataset's
  resolution (PIL's default zlib level 6, no optimisation), so sets stored as JPEG, 16-bit PNG or
  at a higher resolution compare on one footing;
- stored labels: bytes of label files shipped with the set (`soft_labels.pt`, `labels.pt`, ...);
  0 for protocols whose teacher relabels online (RDED's, the hard-label one);
- what evaluation needs: the teacher checkpoint's bytes for evaluators that need a teacher, else 0.

Measured once per distilled set (`set_storage`) and once per teacher (`teacher_bytes`);
`row_storage` puts them together for one results row, and the pipeline stores that on the row
(`ResultRow.storage`). `storage_of_row` reads it back, measuring only rows made before rows
carried it (from their distilled folder, while it exists).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ddbench.core.memo import JsonMemo

#: label files a distilled set may carry beside its images (DD-Ranking's, SRe2L-style soft labels)
LABEL_FILES = ("soft_labels.pt", "labels.pt", "soft_labels.npy", "labels.npy")
MB = 1024 * 1024
#: how `ddbench.teachers` names where a teacher's weights came from
TEACHER_SOURCES = ("trained", "cache", "checkpoint")


@dataclass(frozen=True)
class SetStorage:
    images_bytes: int
    canonical_png_bytes: int
    labels_bytes: int
    images: int


@dataclass(frozen=True)
class Storage:
    images_bytes: int
    canonical_png_bytes: int
    labels_bytes: int
    evaluation_bytes: int

    @property
    def total_bytes(self) -> int:
        """Canonical images + labels + what evaluation needs: the figure accuracy-vs-MB plots use."""
        return self.canonical_png_bytes + self.labels_bytes + self.evaluation_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes, "total_mb": round(self.total_bytes / MB, 6)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "Storage":
        return cls(**{name: int(record[name]) for name in cls.__dataclass_fields__})


def canonical_png_bytes(path: str | Path, resolution: int) -> int:
    """Bytes of `path` re-encoded as an 8-bit RGB PNG of resolution x resolution."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.tell()


def set_storage(distilled, resolution: int) -> SetStorage:
    """Storage of a DistilledSet: its images as stored and re-encoded, and its label files.

    Re-encoding a large set takes minutes, and every `ddbench run` with evaluations to do measures
    its set: each image's canonical size is remembered under $DDBENCH_HOME/cache/storage by the
    image's checksum in the set's manifest, the resolution and Pillow's version."""
    from PIL import __version__ as pillow_version

    root = Path(distilled.root)
    paths = [Path(path) for path, _ in distilled.samples]
    labels = sum((root / name).stat().st_size for name in LABEL_FILES if (root / name).is_file())
    checksums = distilled.manifest.get("files", {})
    memo = JsonMemo("storage", "canonical_png_bytes.json")
    canonical = 0
    for path in paths:
        checksum = checksums.get(str(path.relative_to(root))) if path.is_relative_to(root) else None
        key = f"{checksum}|{resolution}|{pillow_version}" if checksum else None
        size = memo.get(key) if key else None
        if not isinstance(size, int):  # not remembered (or a memo edited by hand): measure it
            size = canonical_png_bytes(path, resolution)
            if key:
                memo.put(key, size)
        canonical += size
    memo.save()
    return SetStorage(
        images_bytes=sum(path.stat().st_size for path in paths),
        canonical_png_bytes=canonical,
        labels_bytes=labels,
        images=len(paths),
    )


def teacher_bytes(teacher_info: Mapping[str, Any] | None) -> int:
    """Bytes of the checkpoint a teacher was loaded from (`Teacher.info()["source"]`:
    `trained:PATH`, `cache:PATH` or `checkpoint:PATH (class order ...)`); 0 without a teacher or a file."""
    source = str((teacher_info or {}).get("source") or "")
    kind, _, rest = source.partition(":")
    if kind not in TEACHER_SOURCES or not rest:
        return 0
    path = Path(rest.split(" (class order ")[0])
    return path.stat().st_size if path.is_file() else 0


def row_storage(stored: SetStorage, teacher_info: Mapping[str, Any] | None, needs_teacher: bool) -> Storage:
    """The storage of one results row: its set's, plus its teacher when its evaluator needs one."""
    return Storage(stored.images_bytes, stored.canonical_png_bytes, stored.labels_bytes,
                   teacher_bytes(teacher_info) if needs_teacher else 0)


def storage_of_row(row: Mapping[str, Any], cache: dict[str, SetStorage] | None = None) -> Storage | None:
    """The storage a results row records; for a row made before rows recorded it, measured from
    its `distilled_path`, `resolution` and `teacher_info`, or None when that set is no longer on
    disk. `cache` (path -> SetStorage) spares re-encoding a set shared by many rows."""
    from ddbench.core.distilled import DistilledSet
    from ddbench.core.errors import DistilledSetError

    if row.get("storage"):
        return Storage.from_dict(row["storage"])
    path = str(row["distilled_path"])
    cache = {} if cache is None else cache
    if path not in cache:
        try:
            distilled = DistilledSet.open(path, verify=False)
        except DistilledSetError:
            return None
        cache[path] = set_storage(distilled, int(row["resolution"]))
    return row_storage(cache[path], row.get("teacher_info"), row.get("teacher") is not None)


def attach_storage(store, tables) -> None:
    """Put each leaderboard row's storage (mean over its rows, in MB) into `table.row_extra`, so
    the CSV / JSON exports carry it; rows whose sets are gone get None."""
    cache: dict[str, SetStorage] = {}
    for table in tables:
        for name, identity in table.row_identities.items():
            measured = [storage_of_row(row, cache) for row in store.rows(
                dataset=table.dataset, ipc=table.ipc, evaluator=table.evaluator, configuration=identity.configuration,
                evaluator_config_hash=table.evaluator_config_hash, teacher_key=identity.teacher_key)]
            found = [storage for storage in measured if storage is not None]
            table.row_extra.setdefault(name, {}).update({
                key: round(sum(getattr(s, field) for s in found) / len(found) / MB, 6) if found else None
                for key, field in (("storage_mb", "total_bytes"), ("images_mb_stored", "images_bytes"),
                                   ("images_mb_png", "canonical_png_bytes"), ("labels_mb", "labels_bytes"),
                                   ("evaluation_mb", "evaluation_bytes"))})
