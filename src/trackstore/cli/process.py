"""Process plumbing shared by the long-running commands: graceful stop on SIGTERM/SIGINT, and an
HTTP server that stops when told to instead of re-raising the signal that stopped it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
from collections.abc import Callable, Generator

import uvicorn
from litestar import Litestar

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    # uvicorn re-raises the signal it caught after shutdown, which would turn a clean stop into
    # "killed by SIGTERM"; the caller handles signals instead and sets should_exit.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # not when the app's startup failed
            self._on_started()


def settle_garbage_collector() -> None:
    """The modules and clients loaded at start live as long as the process: move them out of
    the collector's sight, and let the young generation grow before it is scanned. Profiles of
    the ingest path showed a quarter of its time in full collections over those objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM (what ECS sends) and SIGINT set `stop`; a second SIGINT is not special-cased."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


# uvicorn's default; it listens again with its own backlog when it takes the socket over.
_BACKLOG = 2048


class AddressInUse(OSError):
    """Another socket already listens on the address asked for."""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (0: a free port the OS picks), or OSError with a one-line
    reason (AddressInUse when another process holds the port, or a bad host).

    Bound before anything else starts, rather than by uvicorn, which reports a busy port by
    exiting the process, and which would only find out after the consumer took its leases.
    Bound and listened on in one step: with SO_REUSEADDR, Linux lets a second socket bind a port
    that nothing listens on yet, so a bind alone would not tell that another process has it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said out loud: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # connections whose socket says TCP, and with Nagle on, every small answer waits for the
    # client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # Lets a restarted process take its port back while the old one's connections sit in
    # TIME_WAIT; it does not let two processes listen on one port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        kind = AddressInUse if exc.errno == errno.EADDRINUSE else OSError
        raise kind(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def listen_or_any_port(host: str, port: int) -> socket.socket:
    """Like `listen`, but when another process holds `port`, a free port the OS picks: for a
    default port that several processes on one host all start out asking for."""
    try:
        return listen(host, port)
    except AddressInUse:
        return listen(host, 0)


def http_url(sock: socket.socket) -> str:
    """Where a listening socket answers, as a URL a person can paste."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_http(
    app: Litestar,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    announce: bool = False,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serves `app` on the bound socket until `stop` is set, then drains open requests.
    `on_stop` is called first: it ends what would never end by itself (live streams).

    With `announce`, logs "listening on URL" at INFO once the app has started and answers: the
    line a person waits for, and the URL when the port was 0 (any free one)."""
    url = http_url(sock)

    def started() -> None:
        if announce:
            log.info(f"listening on {url}", extra={"url": url})

    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        # No handler reads the client's address, so X-Forwarded-For need not be parsed (it cost
        # ~9% of a cheap request); and the answers need not name the server.
        proxy_headers=False,
        server_header=False,
    )
    server = _QuietServer(config, started)

    async def watch() -> None:
        await stop.wait()
        if on_stop is not None:
            on_stop()
        server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        sock.close()
