"""A TCP proxy on 127.0.0.1 that tests can cut and restore, to take a dependency away from a
process under test (an outage, as the network makes it) and give it back.

It runs on an event loop of its own in a daemon thread (`LoopThread`), so it keeps relaying while
the test's own loop, or the test's thread, is busy or blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

CHUNK = 64 * 1024


class LoopThread:
    """An asyncio event loop running in a daemon thread; `call()` runs a coroutine on it from
    any other thread and returns its result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()


def upstream_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url!r} names no host and port")
    return parts.hostname, parts.port


class TcpProxy:
    """Relays every connection to 127.0.0.1:`port` to `upstream_url`'s host and port.

    `cut()` stops listening (new connections are refused, as by a host that is down) and resets
    every connection open through it; `restore()` listens on the same port again. Use it as a
    context manager: it starts listening on entry and is gone on exit.
    """

    def __init__(self, upstream_url: str) -> None:
        self._upstream = upstream_address(upstream_url)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = LoopThread(f"tcp-proxy-{self.port}")

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._loop.stop()

    def restore(self) -> None:
        self._loop.call(self._listen())

    def cut(self) -> None:
        self._loop.call(self._cut())

    async def _listen(self) -> None:
        if self._server is not None:
            return
        if self._socket.fileno() == -1:  # closed by an earlier cut: bind the same port again
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._relay, sock=self._socket, backlog=128)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()  # closes the listening socket: connection attempts are refused now
        for writer in list(self._open):
            writer.transport.abort()  # an RST, not a polite close: the peer sees a reset
        self._open.clear()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self._server is None:
            client.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream), 5
            )
        except (OSError, TimeoutError):
            client.transport.abort()
            return
        self._open |= {client, upstream}
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream), self._pump(upstream_reader, client)
            )
        finally:
            for writer in (client, upstream):
                self._open.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        # One side is done (or gone): so is the connection, both ways.
        writer.transport.abort()
