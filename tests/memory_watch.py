"""Watching a process's memory while an ASGI app streams an answer: the RSS and its peak (Linux
/proc), and a GET through the app that drops each body chunk as it comes (a test client would
gather the whole body, which is what must not be measured). For the export memory tests and
benchmarks/exports.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from litestar import Litestar


def status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Resets VmHWM (the peak RSS) to the current RSS; False where Linux does not let it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def drain(app: Litestar, path: str, query: str) -> tuple[int, int]:
    """GETs `path` through the ASGI app, dropping each body chunk as it comes: (status,
    bytes). The test client would gather the whole body, which is what this must not measure."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    status = 0
    size = 0
    asked = False
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # As a server does: the disconnect comes once the answer is complete.
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)  # type: ignore[arg-type]
    return status, size
