"""HTTP/1.1 keep-alive connections to one AWS endpoint, for the calls trackstore.aws_direct sends.

Why not aiohttp: one aiohttp request costs about 175 us of CPU however small (its request and
response objects, header multidicts, tracing hooks, timers), while the exchange itself, written
on an asyncio stream, costs about 30 (benchmarks/aws_calls.py, "floor"). The calls here are all
alike (a POST with a JSON body, an answer with a Content-Length) and need none of the rest.

What it keeps from the aiobotocore client it serves: the TLS context (the same verification and
client certificate settings), the connect and read timeouts, the most connections at once. What it
leaves to that client: proxies (a call through one goes to aiobotocore), and any answer it does
not read as a plain one (no Content-Length, chunked): that connection is closed and the caller
hands the call over. A connection that fails (reset, closed while idle, timed out) is closed and
the failure raised; idle ones are kept for KEEPALIVE_S at most.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import urlsplit

KEEPALIVE_S = 12.0  # as aiobotocore's aiohttp connector keeps them
_HEAD_LIMIT = 64 * 1024


class AnswerNotPlain(Exception):
    """An answer this reader does not take (chunked, no length, bad status line)."""


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.transport.abort()


class EndpointConnections:
    """Keep-alive connections to the endpoint of `url`."""

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        connect_timeout_s: float | None,
        read_timeout_s: float | None,
    ) -> None:
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if secure else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if secure else None
        self._path = (parts.path or "/").encode()
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)

    async def post(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """POSTs `body` with `headers` (Host and Content-Length among them): the answer's
        status, its headers (names in lower case) and its body. Raises OSError, TimeoutError,
        asyncio.IncompleteReadError or AnswerNotPlain when the exchange fails."""
        head = (
            b"POST "
            + self._path
            + b" HTTP/1.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
            + b"\r\n"
        )
        async with self._slots:
            connection = self._take_idle() or await self._connect()
            try:
                async with asyncio.timeout(self._read_timeout_s):
                    connection.writer.write(head + body)
                    status, answer_headers, answer, keep = await _read_answer(connection.reader)
            except BaseException:
                connection.close()
                raise
            if not keep:
                connection.close()
            else:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            return status, answer_headers, answer

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _take_idle(self) -> _Connection | None:
        oldest = time.monotonic() - KEEPALIVE_S
        while self._idle:
            connection = self._idle.pop()  # the most recent: the least likely closed by now
            if connection.idle_since > oldest and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        async with asyncio.timeout(self._connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
                limit=_HEAD_LIMIT,
            )
        return _Connection(reader, writer)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body, and whether the server keeps the connection open."""
    raw_head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = raw_head.decode("latin-1").partition("\r\n")
    version, _, tail = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or not tail[:3].isdigit():
        raise AnswerNotPlain(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is None or not length.isdigit() or "transfer-encoding" in headers:
        raise AnswerNotPlain("an answer without a plain Content-Length")
    body = await reader.readexactly(int(length))
    connection = headers.get("connection", "").lower()
    keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    return int(tail[:3]), headers, body, keep
