"""`ddbench data fetch`: download an archive, verify its checksum, unpack it safely.

The download lands in a `.part` file and is renamed only once its checksum matches, so an
interrupted or corrupted download never looks finished. `DDBENCH_DATA_MIRROR` replaces the
host and folder of every URL (for institutional mirrors and for tests on a loopback server).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ddbench.core.errors import FetchError
from ddbench.core.interfaces import Archive
from ddbench.core.progress import NullProgress, Progress

CHUNK = 1 << 20


def file_checksum(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_checksum(checksum: str) -> tuple[str, str]:
    """`"md5:abc"` -> ("md5", "abc")."""
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in ("md5", "sha1", "sha256") or not expected:
        raise FetchError(f"checksum {checksum!r} must look like md5:<hex> or sha256:<hex>")
    return algorithm, expected.lower()


def resolve_url(url: str) -> str:
    mirror = os.environ.get("DDBENCH_DATA_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]
    return url


def download(url: str, destination: Path, checksum: str, progress: Progress = NullProgress()) -> Path:
    """Download `url` to `destination` and verify it; an existing verified file is kept."""
    algorithm, expected = parse_checksum(checksum)
    if destination.exists() and file_checksum(destination, algorithm) == expected:
        return destination
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress.task(f"downloading {destination.name}", total=total) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    bar.advance(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"cannot download {url}: {exc}. Check the network or set DDBENCH_DATA_MIRROR") from exc
    actual = file_checksum(partial, algorithm)
    if actual != expected:
        partial.unlink()
        raise FetchError(
            f"checksum mismatch for {url}: expected {algorithm}:{expected}, got {algorithm}:{actual}. "
            "The download was deleted; retry, or pass --checksum if the publisher re-packed the archive"
        )
    os.replace(partial, destination)
    return destination


def _safe_members(archive: tarfile.TarFile, target: Path):
    base = target.resolve()
    for member in archive.getmembers():
        resolved = (target / member.name).resolve()
        if base not in resolved.parents and resolved != base:
            raise FetchError(f"archive member {member.name!r} would unpack outside {target}; refusing it")
        if member.issym() or member.islnk() or member.isdev():
            continue
        yield member


def extract(archive_path: Path, target: Path) -> None:
    """Unpack a .tar(.gz) or .zip into `target`, refusing members that escape it."""
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                for name in archive.namelist():
                    if not (target / name).resolve().is_relative_to(target.resolve()):
                        raise FetchError(f"archive member {name!r} would unpack outside {target}; refusing it")
                archive.extractall(target)
            return
        with tarfile.open(archive_path) as archive:
            archive.extractall(target, members=list(_safe_members(archive, target)))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise FetchError(f"cannot unpack {archive_path}: {exc}; delete it and fetch again") from exc


def fetch_archive(
    archive: Archive, root: str | Path, checksum: str | None = None, progress: Progress = NullProgress(), keep_archive: bool = False
) -> Path:
    """Download, verify and unpack `archive` under `root`; returns the unpacked folder."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    unpacked = root / archive.extracted_dir
    marker = unpacked / ".ddbench-fetched"
    if marker.exists():
        return unpacked
    archive_path = download(resolve_url(archive.url), root / archive.filename, checksum or archive.checksum, progress)
    staging = root / f".extract-{archive.extracted_dir}"
    if staging.exists():
        shutil.rmtree(staging)
    with progress.task(f"unpacking {archive.filename}"):
        extract(archive_path, staging)
    produced = staging / archive.extracted_dir
    if not produced.is_dir():
        raise FetchError(f"{archive.filename} did not contain the expected folder {archive.extracted_dir}/")
    if unpacked.exists():
        shutil.rmtree(unpacked)
    os.replace(produced, unpacked)
    shutil.rmtree(staging)
    marker.write_text(archive.url + "\n")
    if not keep_archive:
        archive_path.unlink()
    return unpacked
