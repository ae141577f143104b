"""`ddbench data fetch` against a loopback HTTP server serving an archive the test makes."""

import functools
import hashlib
import http.server
import tarfile
import threading

import pytest

from ddbench.core.registry import create_dataset
from tests.core.test_datasets import write_cifar10_pickles


@pytest.fixture
def served_archive(tmp_path, monkeypatch):
    """A CIFAR-10-shaped tar.gz served on 127.0.0.1; DDBENCH_DATA_MIRROR points fetches at it."""
    source = tmp_path / "source"
    write_cifar10_pickles(source / "cifar-10-batches-py")
    public = tmp_path / "public"
    public.mkdir()
    archive = public / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    handler = functools.partial(QuietHandler, directory=str(public))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DDBENCH_DATA_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    yield archive
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_downloads_verifies_and_unpacks(served_archive, tmp_path, cli):
    sha256 = hashlib.sha256(served_archive.read_bytes()).hexdigest()
    root = tmp_path / "data"
    result = cli("data", "fetch", "cifar10", "--root", str(root), "--checksum", f"sha256:{sha256}")
    assert result.exit_code == 0, result.output
    assert f"--data-root {root}" in result.output
    assert (root / "cifar-10-batches-py" / ".ddbench-fetched").exists()
    assert not (root / "cifar-10-python.tar.gz").exists()  # archive removed after unpacking
    assert len(create_dataset("cifar10", root).split("train")) == 20
    again = cli("data", "fetch", "cifar10", "--root", str(root), "--checksum", f"sha256:{sha256}")
    assert again.exit_code == 0  # already there: nothing to do


def test_checksum_mismatch_is_an_error_and_leaves_nothing_behind(served_archive, tmp_path, cli):
    root = tmp_path / "data"
    result = cli("data", "fetch", "cifar10", "--root", str(root))  # the official md5 cannot match our archive
    assert result.exit_code == 2
    assert "checksum mismatch" in result.output and "md5:c58f30108f718f92721af3b95e74349a" in result.output
    assert not any(root.glob("*.part")) and not (root / "cifar-10-batches-py").exists()


def test_unreachable_server_and_unknown_variant_are_clear_errors(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("DDBENCH_DATA_MIRROR", "http://127.0.0.1:9/")
    result = cli("data", "fetch", "cifar10", "--root", str(tmp_path))
    assert result.exit_code == 2 and "cannot download" in result.output
    result = cli("data", "fetch", "nette", "--root", str(tmp_path), "--variant", "999px")
    assert result.exit_code == 2 and "has variants default, 320px, 160px" in result.output
    result = cli("data", "fetch", "digits", "--root", str(tmp_path))
    assert result.exit_code == 2 and "cannot be fetched" in result.output
