"""`data fetch` unpacks archives it did not make: nothing in one may write outside the target,
plant a device or a link out of it, or keep setuid / setgid / sticky bits."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from ddbench.core.errors import FetchError
from ddbench.core.fetch import extract


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    return info


def test_setuid_setgid_and_sticky_bits_are_dropped(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz",
                   (_member("data/", tarfile.DIRTYPE, 0o1777), None),
                   (_member("data/tool", mode=0o6755), b"#!/bin/sh\n"))
    extract(archive, tmp_path / "out")
    tool = (tmp_path / "out" / "data" / "tool").stat().st_mode
    assert not tool & (stat.S_ISUID | stat.S_ISGID) and tool & stat.S_IXUSR  # still executable, never setuid
    assert not (tmp_path / "out" / "data").stat().st_mode & stat.S_ISVTX


@pytest.mark.parametrize("member, why", [
    (_member("/etc/evil"), "has an absolute path"),
    (_member("data/../../evil"), "contains '..'"),
    (_member("data/link", tarfile.SYMTYPE, linkname="../../outside"), "links to '../../outside', outside"),
    (_member("data/abs-link", tarfile.SYMTYPE, linkname="/etc/passwd"), "links to '/etc/passwd', outside"),
    (_member("data/hard", tarfile.LNKTYPE, linkname="../outside"), "links to '../outside', outside"),
    (_member("data/disk", tarfile.BLKTYPE), "is a device file or FIFO"),
    (_member("data/tty", tarfile.CHRTYPE), "is a device file or FIFO"),
    (_member("data/pipe", tarfile.FIFOTYPE), "is a device file or FIFO"),
], ids=["absolute", "dot-dot", "symlink-out", "symlink-absolute", "hardlink-out", "block-device", "char-device", "fifo"])
def test_an_unsafe_member_refuses_the_whole_archive(tmp_path, member, why):
    archive = _tar(tmp_path / "a.tar.gz", (_member("data/ok.txt"), b"fine"),
                   (member, b"x" if member.isfile() else None))
    with pytest.raises(FetchError, match=f"member {member.name!r} {why}") as raised:
        extract(archive, tmp_path / "out")
    assert "refusing to unpack it" in str(raised.value)
    assert not (tmp_path / "out" / "data" / "ok.txt").exists()  # checked before anything is written
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_a_link_that_stays_inside_is_kept(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", (_member("data/real.txt"), b"fine"),
                   (_member("data/alias.txt", tarfile.SYMTYPE, linkname="real.txt"), None))
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "alias.txt").read_text() == "fine"


@pytest.mark.parametrize("name, why", [("../evil.txt", "contains '..'"), ("/abs/evil.txt", "has an absolute path")])
def test_zip_members_outside_the_target_are_refused(tmp_path, name, why):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data/ok.txt", "fine")
        archive.writestr(zipfile.ZipInfo(name), "evil")
    with pytest.raises(FetchError, match=why):
        extract(path, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
