"""Headless Chromium for the report tests: found on PATH, else installed with apt-get (Debian's
`chromium`) when this process may, else the test is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

VOID = {"img", "br", "meta", "link", "input", "hr"}
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _installed() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def chromium() -> str:
    """The browser's path; tries `apt-get install -y chromium` once when it is missing."""
    found = _installed()
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and this process cannot apt-get it; install Debian's `chromium` "
                    "(.ci/run does) to run the report's browser test")
    attempt = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, timeout=900)
    found = _installed()
    if not found:
        pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed ({attempt.stderr.strip()[-200:]})")
    return found


def rendered_dom(page: Path) -> str:
    """The page's DOM after it loaded (and its scripts ran), as headless Chromium serialises it."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
               "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Elements(HTMLParser):
    """Collects (tag, attributes, text) of the elements a test asks about."""

    def __init__(self, tags: set[str]) -> None:
        super().__init__()
        self.tags, self.found, self._open = tags, [], []

    def handle_starttag(self, tag, attrs):
        if tag in self.tags:
            self.found.append([tag, dict(attrs), ""])
            if tag not in VOID:
                self._open.append(self.found[-1])

    def handle_endtag(self, tag):
        if self._open and self._open[-1][0] == tag and tag in self.tags:
            self._open.pop()

    def handle_data(self, data):
        for element in self._open:
            element[2] += data


def elements(dom: str, *tags: str) -> list[tuple[str, dict, str]]:
    parser = Elements(set(tags))
    parser.feed(dom)
    return [tuple(element) for element in parser.found]
