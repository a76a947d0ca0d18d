"""The internet as the browser tests see it: a proxy that refuses everything and notes what it
was asked for. Chromium pointed at it (`--proxy-server`) reaches 127.0.0.1 directly (it never
proxies loopback), and nothing else: a page under test must work offline, and a test can tell
which other hosts it reached for."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

# Chromium calls Google (network time, sign-in, ...) whatever the flags, even on about:blank:
# the browser's doing, not the page's; the proxy refuses it all the same.
BROWSER_OWN_HOST = re.compile(r"(^|\.)(google\.com|googleapis\.com|gvt1\.com)$")


@dataclass
class OutsideWorld:
    """The proxy's port, and the first line of every request it was sent."""

    port: int = 0
    requests: list[str] = field(default_factory=list)

    def hosts_asked_by_the_page(self) -> set[str]:
        hosts = {host_of(line) for line in self.requests}
        return {host for host in hosts if not BROWSER_OWN_HOST.search(host)}


def host_of(request_line: str) -> str:
    """The host a proxy request is for: `CONNECT host:443 ...` or `GET http://host/path ...`."""
    parts = request_line.split()
    target = parts[1] if len(parts) > 1 else ""
    if "://" in target:
        target = target.split("://", 1)[1].split("/", 1)[0]
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target


@contextlib.contextmanager
def refusing_proxy() -> Iterator[OutsideWorld]:
    world = OutsideWorld()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    world.port = listener.getsockname()[1]

    def refuse() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the tests are over
                return
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                except OSError:
                    first = b"(nothing sent)"
                world.requests.append(first.decode("latin-1"))

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        yield world
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        listener.close()
        thread.join(timeout=5)
