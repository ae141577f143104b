"""Distilled sets on disk: `images/<class>/<i>.png` + `manifest.json`.

Writing is atomic per class (a class folder appears whole or not at all, and the manifest only
names finished classes), so an interrupted run resumes without redoing finished classes. Several
processes may write the same set at once (two `ddbench run`s with different `--seeds`): each
stages under a name of its own, and recording a class happens under a lock on the folder, after
re-reading the manifest, so no process deletes another's work or loses another's classes.
Reading accepts folders made by other tools too: with no manifest, class folders are matched to
the dataset's class names.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

import ddbench
from ddbench.core import distributed
from ddbench.core.errors import DistilledSetError
from ddbench.core.files import disk_errors, locked, remove_stale_temporaries, temporary_sibling, write_atomic
from ddbench.core.hashing import StableDigest, sha256_file
from ddbench.core.identity import RunIdentity
from ddbench.core.images import ImageFileDataset, list_images

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".ddbench.lock"
FORMAT = "ddbench-distilled/2"
#: what every ddbench manifest holds (format 1 manifests, without "identity", still open for evaluation)
REQUIRED_KEYS = ("format", "classes", "files", "method", "config", "dataset", "ipc", "seed")


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, allow_nan=False))


def wrote_no_class(root: Path, manifest: dict[str, Any]) -> bool:
    """Whether the set of `root` (with this manifest) is unfinished and never wrote a class: its run
    stopped before the first one, so replacing it loses nothing."""
    if manifest.get("complete") or manifest.get("files"):
        return False
    images = root / "images"
    return not images.is_dir() or not any(images.iterdir())


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of `root`, checked for the shape ddbench relies on; anything else is one
    DistilledSetError naming the file."""
    path = root / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DistilledSetError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                "restore it or delete the folder and distill again") from exc
    except json.JSONDecodeError as exc:
        raise DistilledSetError(
            f"{path} is not valid JSON ({exc}); restore it or delete the folder and distill again"
        ) from exc
    except OSError as exc:
        raise DistilledSetError(f"cannot read {path} ({exc.strerror or exc})") from exc
    if not isinstance(manifest, dict):
        raise DistilledSetError(f"{path} is not a ddbench manifest: it holds a JSON {type(manifest).__name__}, not an object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise DistilledSetError(f"{path} is not a ddbench manifest: missing {', '.join(missing)}")
    problem = _manifest_problem(manifest)
    if problem:
        raise DistilledSetError(f"{path} is not a valid ddbench manifest: {problem}; restore it or delete the folder "
                                "and distill again")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the types and file names of a manifest, or None."""
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(manifest["ipc"]) or manifest["ipc"] < 1:
        return f'"ipc" must be a positive integer, not {manifest["ipc"]!r}'
    if manifest["seed"] is not None and not is_int(manifest["seed"]):
        return f'"seed" must be an integer, not {manifest["seed"]!r}'
    for key in ("format", "method"):
        if not isinstance(manifest[key], str):
            return f'"{key}" must be a string, not {manifest[key]!r}'
    if manifest["dataset"] is not None and not isinstance(manifest["dataset"], str):
        return f'"dataset" must be a string, not {manifest["dataset"]!r}'
    classes = manifest["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        return '"classes" must be a non-empty list of class names'
    for key in ("config", "files") + tuple(k for k in ("identity", "extra", "weights") if manifest.get(k) is not None):
        if not isinstance(manifest[key], dict):
            return f'"{key}" must be an object, not {type(manifest[key]).__name__}'
    if not isinstance(manifest.get("complete", False), bool):
        return f'"complete" must be true or false, not {manifest["complete"]!r}'
    known = set(classes)
    for key, checksum in manifest["files"].items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "images" or parts[1] not in known or parts[2].startswith(".") or "\\" in key:
            return f"file {key!r} is not images/<one of its classes>/<image>"
        if not isinstance(checksum, str):
            return f"the checksum of {key!r} is not a string"
    return None


class DistilledSetWriter:
    """Writes one distilled set class by class; reopening the same folder resumes.

    The folder belongs to one run identity: a folder whose manifest records another identity is
    never resumed into.

    Under torchrun every rank constructs the writer (a collective step): rank 0 opens or creates
    the folder, then each rank writes its share of the pending classes (`classes_for_this_process`)
    and sends their checksums to rank 0, the only process that writes the manifest. The manifest's
    `written_by` says which rank wrote each class (0 in a single process)."""

    def __init__(
        self,
        root: str | Path,
        identity: RunIdentity,
        class_names: Sequence[str],
        *,
        config: dict[str, Any] | None = None,
        teacher: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.root = Path(root)
        self.images_dir = self.root / "images"
        self.class_names = list(class_names)
        self.ipc = identity.ipc
        self.identity = identity
        if not distributed.is_main():  # rank 0 opens (or creates) the folder first
            distributed.barrier("distilled-set-open")
            self._reload()
            self._plan_shares()
            return
        with disk_errors(self.root, "create the distilled-set folder"):
            self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if (self.root / MANIFEST_NAME).exists() and not self._holds_only_an_empty_other_set():
                self._reload()
            else:
                self.manifest = {
                    "format": FORMAT,
                    "identity": identity.to_dict(),
                    "method": identity.method,
                    "config": dict(config if config is not None else identity.config),  # every resolved key
                    "dataset": identity.dataset["name"],
                    "ipc": identity.ipc,
                    "seed": identity.seed,
                    "weights": dict(identity.weights),
                    "classes": self.class_names,
                    "teacher": teacher,
                    "extra": extra or {},
                    "ddbench_version": ddbench.__version__,
                    "files": {},
                    "written_by": {},
                    "complete": False,
                }
                _write_json_atomic(self.root / MANIFEST_NAME, self.manifest)
            with disk_errors(self.images_dir, "create"):
                self.images_dir.mkdir(exist_ok=True)
            # classes being staged when their writer was killed; a live writer's staging stays
            remove_stale_temporaries(self.images_dir)
            for leftover in self.images_dir.glob(".tmp-*"):  # staging of older ddbench (one name per class)
                if not leftover.name.endswith(".tmp"):
                    shutil.rmtree(leftover, ignore_errors=True)
        distributed.barrier("distilled-set-open")
        self._plan_shares()

    def _holds_only_an_empty_other_set(self) -> bool:
        """The folder's manifest is another set's that never wrote a class (its run stopped before the first,
        e.g. on a config its method refused in prepare): nothing would be lost, so this run starts afresh
        instead of refusing the corrected command."""
        manifest = read_manifest(self.root)
        return (manifest.get("identity") or {}).get("key") != self.identity.key and wrote_no_class(self.root, manifest)

    def _locked(self):
        """The lock every writer of this folder takes before changing the manifest or a class folder."""
        return locked(self.root / LOCK_NAME)

    def _reload(self) -> None:
        """Take the manifest on disk (it holds every class any process recorded); it must be ours."""
        self.manifest = read_manifest(self.root)
        stored = self.manifest.get("identity") or {}
        if stored.get("key") != self.identity.key:
            raise DistilledSetError(
                f"{self.root} already holds a different distilled set ({_identity_difference(stored, self.identity)}); "
                "choose another output folder or delete this one"
            )

    def _plan_shares(self) -> None:
        """Pending class k goes to rank k % world (on a fresh run: class i to rank i % world)."""
        pending = self.pending_classes()
        world = distributed.world_size() if distributed.is_distributed() else 1
        self._shares = [pending[r::world] for r in range(world)]
        self._channel = distributed.channel("distilled-classes")
        self._received: set[int] = set()

    def classes_for_this_process(self) -> list[int]:
        """The pending classes this process writes: all of them in a single process."""
        return list(self._shares[distributed.rank() if len(self._shares) > 1 else 0])

    def _record(self, class_index: int, checksums: dict[str, str], rank: int) -> None:
        """Add a finished class to the manifest (rank 0, or a single process), under the lock."""
        with self._locked():
            self._reload()
            self.manifest["files"].update(checksums)
            self.manifest.setdefault("written_by", {})[self.class_names[class_index]] = rank
            _write_json_atomic(self.root / MANIFEST_NAME, self.manifest)

    def add_extra(self, values: dict[str, Any]) -> None:
        """Record in the manifest's `extra` what a method learns only once its weights are loaded (a given
        checkpoint's class map); rank 0 writes, as for classes."""
        if not distributed.is_main():
            return
        with self._locked():
            self._reload()
            self.manifest.setdefault("extra", {}).update(values)
            _write_json_atomic(self.root / MANIFEST_NAME, self.manifest)

    def _collect_other_ranks(self, block: bool) -> None:
        """Record the classes the other ranks finished (rank 0); blocking: all of them, one by one."""
        for rank, share in enumerate(self._shares[1:], start=1):
            for class_index in share:
                if class_index in self._received:
                    continue
                checksums = distributed.receive_on_main(self._channel, class_index, block)
                if checksums is None:  # a rank writes its share in order: the rest is not there either
                    break
                if checksums:  # empty: another process sharing the folder had recorded it already
                    self._record(class_index, checksums, rank)
                self._received.add(class_index)

    def _class_done(self, name: str) -> bool:
        prefix = f"images/{name}/"
        return sum(1 for key in self.manifest["files"] if key.startswith(prefix)) == self.ipc

    def pending_classes(self) -> list[int]:
        return [i for i, name in enumerate(self.class_names) if not self._class_done(name)]

    def write_class(self, class_index: int, images: Sequence[Image.Image]) -> None:
        """Stage the class's PNGs under a name of this process, then (under the folder lock)
        move them into place and record them, unless another process recorded the class first."""
        name = self.class_names[class_index]
        if len(images) != self.ipc:
            raise DistilledSetError(f"class {name!r}: the method returned {len(images)} images, expected ipc={self.ipc}")
        staging = temporary_sibling(self.images_dir / name)
        recorded_elsewhere = False
        try:
            with disk_errors(staging, "write the distilled images to"):
                staging.mkdir(parents=True)
                checksums = {}
                for i, image in enumerate(images):
                    path = staging / f"{i}.png"
                    image.convert("RGB").save(path, format="PNG")
                    checksums[f"images/{name}/{i}.png"] = sha256_file(path)
            with self._locked():
                self._reload()
                recorded_elsewhere = self._class_done(name)  # another process sharing this folder wrote it meanwhile
                if not recorded_elsewhere:
                    final = self.images_dir / name
                    with disk_errors(final, "write the distilled images to"):
                        if final.exists():  # moved into place but not recorded when its writer was killed
                            shutil.rmtree(final)
                        os.replace(staging, final)
                    if distributed.is_main():  # under torchrun only rank 0 writes the manifest
                        self.manifest["files"].update(checksums)
                        self.manifest.setdefault("written_by", {})[name] = distributed.rank()
                        _write_json_atomic(self.root / MANIFEST_NAME, self.manifest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        if not distributed.is_main():
            distributed.send_to_main(self._channel, class_index, {} if recorded_elsewhere else checksums)
        else:
            self._collect_other_ranks(block=False)

    def finalize(self) -> "DistilledSet":
        if distributed.is_main():
            self._collect_other_ranks(block=True)
            with self._locked():
                self._reload()
                pending = self.pending_classes()
                if pending:
                    raise DistilledSetError(f"{self.root}: classes {pending} were never written")
                if not self.manifest.get("complete"):
                    self.manifest["complete"] = True
                    _write_json_atomic(self.root / MANIFEST_NAME, self.manifest)
        distributed.barrier("distilled-set-complete")
        return DistilledSet.open(self.root, verify=False)  # checksums were computed while writing


@dataclass
class DistilledSet:
    """A finished distilled set: its manifest and its (image path, class index) samples."""

    root: Path
    manifest: dict[str, Any]
    samples: list[tuple[Path, int]]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def ipc(self) -> int:
        return int(self.manifest["ipc"])

    @property
    def method(self) -> str:
        return str(self.manifest["method"])

    @property
    def shuffle_patch_factor(self) -> int:
        """How many patches per side a stitched image holds (RDED: 2 for ImageNet-like sets)."""
        return int((self.manifest.get("extra") or {}).get("shuffle_patch_factor", 1))

    @property
    def content_hash(self) -> str:
        """One hash over all image checksums: two sets with equal hashes hold the same images."""
        joined = "\n".join(f"{k} {v}" for k, v in sorted(self.manifest["files"].items()))
        return StableDigest(joined).hexdigest()

    @property
    def identity(self) -> RunIdentity:
        """The run identity recorded when the set was made; for another tool's folder (or a set
        from before identities existed) one made of what is known, the images' content hash
        standing in for the unknown weights, so such a set never pools with anything else."""
        stored = self.manifest.get("identity")
        if stored:
            return RunIdentity.from_dict(stored)
        return RunIdentity(
            method=self.method,
            config=dict(self.manifest.get("config") or {}),
            dataset={"name": self.manifest.get("dataset")},
            ipc=self.ipc,
            seed=int(self.manifest.get("seed") or 0),
            weights={"content": self.content_hash},
        )

    def dataset(self, transform: Callable | None = None) -> ImageFileDataset:
        return ImageFileDataset(self.samples, transform)

    @classmethod
    def open(
        cls, root: str | Path, class_names: Sequence[str] | None = None, dataset: str | None = None, verify: bool = True
    ) -> "DistilledSet":
        """Open a ddbench folder (with manifest) or another tool's class-folder tree (needs `class_names`)."""
        root = Path(root)
        if not root.is_dir():
            raise DistilledSetError(f"distilled folder {root} does not exist")
        if (root / MANIFEST_NAME).exists():
            manifest = read_manifest(root)
            if not manifest.get("complete", False):
                raise DistilledSetError(f"{root} is an unfinished distilled set; rerun the same command to resume it")
            if dataset is not None and manifest["dataset"] != dataset:
                raise DistilledSetError(f"{root} was distilled from {manifest['dataset']!r}, not {dataset!r}")
            if class_names is not None and list(class_names) != list(manifest["classes"]):
                raise DistilledSetError(
                    f"{root}: the manifest's class order differs from the dataset's; "
                    "the set was made for another class mapping"
                )
            samples = []
            index_of = {name: i for i, name in enumerate(manifest["classes"])}
            for key, checksum in sorted(manifest["files"].items(), key=lambda kv: _sort_key(kv[0])):
                path = root / key
                if not path.is_file():
                    raise DistilledSetError(f"{path} is listed in the manifest but missing; distill again")
                if verify and sha256_file(path) != checksum:
                    raise DistilledSetError(f"{path} does not match its checksum in the manifest; it was modified")
                samples.append((path, index_of[key.split("/")[1]]))
            return cls(root, manifest, samples)
        return cls._open_foreign(root, class_names, dataset)

    @classmethod
    def _open_foreign(cls, root: Path, class_names: Sequence[str] | None, dataset: str | None) -> "DistilledSet":
        if class_names is None:
            raise DistilledSetError(f"{root} has no {MANIFEST_NAME}; pass --dataset so its class folders can be matched")
        base = root / "images" if (root / "images").is_dir() else root
        folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        index_of = {name: i for i, name in enumerate(class_names)}
        unknown = [p.name for p in folders if p.name not in index_of]
        if unknown or not folders:
            raise DistilledSetError(
                f"{base}: folders {unknown[:5] or '(none)'} are not classes of {dataset or 'the dataset'}; "
                f"expected class folders named like {list(class_names)[:3]}"
            )
        samples, files = [], {}
        for folder in folders:
            for path in list_images(folder):
                samples.append((path, index_of[folder.name]))
                files[str(path.relative_to(root))] = sha256_file(path)
        counts = {folder.name: sum(1 for _, label in samples if label == index_of[folder.name]) for folder in folders}
        manifest = {
            "format": "external",
            "method": "external",
            "config": {"source": str(root)},
            "dataset": dataset,
            "ipc": max(counts.values()),
            "seed": None,
            "classes": list(class_names),
            "files": files,
            "teacher": None,
            "extra": {},
            "complete": True,
        }
        return cls(root, manifest, samples)


def _identity_difference(stored: dict[str, Any], identity: RunIdentity) -> str:
    """Which parts of the identity differ, for the error message."""
    if not stored:
        return "it was made by an older ddbench, without a run identity"
    wanted = identity.to_dict()
    differing = [key for key in ("method", "code", "source", "config", "dataset", "ipc", "seed", "weights", "version")
                 if json.dumps(stored.get(key), sort_keys=True) != json.dumps(wanted.get(key), sort_keys=True)]
    return f"differs in {', '.join(differing) or 'its identity key'}"


def _sort_key(key: str) -> tuple[str, int]:
    parts = key.split("/")
    stem = Path(parts[-1]).stem
    return (parts[1], int(stem) if stem.isdigit() else 0)
