"""`ddbench data fetch`: download an archive, verify its checksum, unpack it safely.

The download lands in a `.part` file and is renamed only once its checksum matches, so an
interrupted or corrupted download never looks finished. `DDBENCH_DATA_MIRROR` replaces the
host and folder of every URL (for institutional mirrors and for tests on a loopback server).

Unpacking trusts nothing in the archive: absolute names, `..`, links that point outside the
target, device files and FIFOs are refused (the whole archive, with the member named), and
setuid / setgid / sticky bits are dropped from what is written.
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


#: permission bits never written from an archive: setuid, setgid, sticky
UNSAFE_MODE_BITS = 0o7000


def _inside(target: Path, name: str) -> bool:
    """Whether `name` (relative to `target`) stays inside `target` once resolved."""
    base = target.resolve()
    resolved = (target / name).resolve()
    return resolved == base or base in resolved.parents


def _refuse(archive_path: Path, member: str, why: str) -> FetchError:
    return FetchError(f"archive {archive_path.name}: member {member!r} {why}; refusing to unpack it "
                      "(the archive is damaged or not the official one)")


def _checked_name(archive_path: Path, name: str, target: Path) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive_path, name, "has an absolute path")
    if ".." in parts:
        raise _refuse(archive_path, name, "contains '..'")
    if not _inside(target, name):
        raise _refuse(archive_path, name, f"would unpack outside {target}")


def _safe_members(archive: tarfile.TarFile, archive_path: Path, target: Path) -> list[tarfile.TarInfo]:
    """Every member, checked (see the module docstring), with setuid/setgid/sticky cleared."""
    members = []
    for member in archive.getmembers():
        _checked_name(archive_path, member.name, target)
        if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise _refuse(archive_path, member.name, "is a device file or FIFO")
        if member.issym() or member.islnk():
            link = member.linkname  # a symbolic link resolves from its own folder, a hard link from the root
            pointed = str(Path(member.name).parent / link) if member.issym() else link
            if link.startswith("/") or not _inside(target, pointed):
                raise _refuse(archive_path, member.name, f"links to {link!r}, outside {target}")
        member.mode &= ~UNSAFE_MODE_BITS
        members.append(member)
    return members


def extract(archive_path: Path, target: Path) -> None:
    """Unpack a .tar(.gz) or .zip into `target`, refusing unsafe members (see the module docstring)."""
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                for name in archive.namelist():
                    _checked_name(archive_path, name, target)
                archive.extractall(target)  # zipfile writes neither links, devices nor permission bits
            return
        with tarfile.open(archive_path) as archive:
            members = _safe_members(archive, archive_path, target)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: the same rules, enforced again
                archive.extractall(target, members=members, filter="data")
            else:
                archive.extractall(target, members=members)
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
