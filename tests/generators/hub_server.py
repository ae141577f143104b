"""A loopback HTTP server that answers like the Hugging Face hub's file endpoint.

`GET|HEAD /<owner>/<repo>/resolve/<revision>/<file>` serves the bytes registered for
(owner/repo, file), with the headers huggingface_hub reads (X-Repo-Commit, ETag, Content-Length)
and HTTP Range support; anything else is a 404 with the hub's X-Error-Code. Tests point
`HF_ENDPOINT` at `server.endpoint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _serve(self, send_body: bool) -> None:
                server.requests.append((self.command, self.path))
                match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", self.path.split("?")[0])
                payload = server.files.get((match.group(1), match.group(2))) if match else None
                if payload is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged and int(ranged.group(1)) < len(payload):
                    start = int(ranged.group(1))
                body = payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(payload).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add(self, repo_id: str, filename: str, payload: bytes) -> None:
        self.files[(repo_id, filename)] = payload

    def downloads(self, filename: str) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def running_hub(monkeypatch) -> Iterator[HubServer]:
    """Fixture body: a running loopback hub, HF_ENDPOINT pointing at it, the hub client online."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # frozen at import by other tests
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def serve_as(server: HubServer, monkeypatch, name: str, payload: bytes) -> None:
    """Serve `payload` under the real file name of table entry `name`, and make the table expect it."""
    from ddbench.generators import weights
    from ddbench.generators.weights import WeightFile

    entry = weights.TABLE[name]
    filename = entry.files[0].filename
    server.add(entry.repo_id, filename, payload)
    monkeypatch.setitem(weights.TABLE, name, dataclasses.replace(
        entry, files=(WeightFile(filename, len(payload), hashlib.sha256(payload).hexdigest()),)))
