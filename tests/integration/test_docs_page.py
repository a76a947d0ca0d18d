"""The docs page as a person sees it: `trackstore serve` in a real headless browser (Debian's
chromium) that can reach nothing but 127.0.0.1, as in a private VPC.

Every request the browser makes to another host goes to a proxy of this test, which records it
and answers nothing; so the page must work offline, and the test can tell that it asked for
nothing outside.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.outside_world import OutsideWorld, refusing_proxy

CHROMIUM = "/usr/bin/chromium"
TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]
WINDOW = (1280, 2000)
# A blank 1280x2000 page compresses to a few KiB; the rendered one is far larger.
MIN_SCREENSHOT_BYTES = 40_000


@pytest.fixture(scope="module")
def chromium() -> str:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        pytest.fail(
            f"{CHROMIUM} is missing: the docs page is tested in a real browser; install it with "
            "`apt-get install -y chromium` (.ci/run does)"
        )
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else str(shutil.which("chromium"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`trackstore serve` on a free port; its base URL, read from its "listening on" log line."""
    home = tmp_path_factory.mktemp("serve")
    log = home / "serve.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TRACKSTORE_BACKEND": "memory",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*TRACKSTORE, "serve", "--port", "0", "--seed-devices", "3", "--seed-points", "5"],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            assert process.poll() is None, f"serve exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"serve logged no address: {log.read_text()}"
            found = re.search(r'"listening on (http://127\.0\.0\.1:\d+)"', log.read_text())
            if found:
                url = found.group(1)
            else:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def outside() -> Iterator[OutsideWorld]:
    with refusing_proxy() as world:
        yield world


def browse(chromium: str, outside: OutsideWorld, tmp_path: Path, *args: str) -> tuple[str, str]:
    """Runs headless chromium on `args`; its stdout, and its console messages."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Loopback is never proxied; everything else meets the refusing proxy.
        f"--proxy-server=http://127.0.0.1:{outside.port}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        *args,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 120 s")
    assert done.returncode == 0, done.stderr[-3000:]
    console = "\n".join(line for line in done.stderr.splitlines() if ":CONSOLE" in line)
    return done.stdout, console


class Operations(HTMLParser):
    """The operations Swagger UI rendered: (method, path, summary), from its markup, not from the
    specification embedded in the page's script."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[dict[str, str]] = []
        self._reading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        for part in ("method", "path", "description"):
            if f"opblock-summary-{part}" in classes:
                self._reading = part
                if part == "method":  # each operation's summary line starts with its method
                    self.rendered.append({})
                elif part == "path" and self.rendered:
                    self.rendered[-1]["path"] = dict(attrs).get("data-path") or ""

    def handle_endtag(self, tag: str) -> None:
        if self._reading is not None and tag in ("span", "div"):
            self._reading = None

    def handle_data(self, data: str) -> None:
        if self._reading == "method" and self.rendered:
            self.rendered[-1]["method"] = data.strip()
        elif self._reading == "description" and self.rendered:
            self.rendered[-1]["summary"] = self.rendered[-1].get("summary", "") + data


def documented(base: str) -> set[tuple[str, str, str]]:
    document = httpx.get(f"{base}/schema/openapi.json", timeout=10).json()
    return {
        (method.upper(), path, operation["summary"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "summary" in operation
    }


@pytest.mark.parametrize("page", ["/schema/swagger", "/schema"])
def test_docs_page_lists_every_operation_with_no_network(
    chromium: str, server: str, outside: OutsideWorld, tmp_path: Path, page: str
) -> None:
    dom, console = browse(chromium, outside, tmp_path, "--dump-dom", f"{server}{page}")

    parser = Operations()
    parser.feed(dom)
    shown = {
        (op.get("method", ""), op.get("path", ""), op.get("summary", "").strip())
        for op in parser.rendered
    }
    expected = documented(server)
    assert {path for _, path, _ in expected} >= {"/devices/{device_id}", "/locations/{device_id}"}
    assert shown == expected, f"rendered {sorted(shown)}; console:\n{console}"
    assert "Uncaught" not in console, console
    assert outside.hosts_asked_by_the_page() == set(), "the page reached for other hosts"


def test_docs_page_renders_as_a_picture_with_no_network(
    chromium: str, server: str, outside: OutsideWorld, tmp_path: Path
) -> None:
    picture = tmp_path / "docs.png"
    browse(
        chromium,
        outside,
        tmp_path,
        f"--screenshot={picture}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"{server}/schema/swagger",
    )

    png = picture.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR, the first chunk
    assert (width, height) == WINDOW
    assert len(png) > MIN_SCREENSHOT_BYTES, f"{len(png)} bytes: a blank page? see {picture}"
    assert outside.hosts_asked_by_the_page() == set(), "the page reached for other hosts"
