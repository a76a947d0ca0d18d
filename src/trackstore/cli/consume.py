"""`trackstore consume`: the stream into the tables until SIGTERM/SIGINT, with /metrics and
/health on a port of its own."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket

from trackstore.cli.args import Subcommands, port
from trackstore.cli.process import http_url, listen, listen_or_any_port, serve_http
from trackstore.config import DEFAULT_CONSUMER_METRICS_PORT, Backend, Settings
from trackstore.container import Container, build_container, opened
from trackstore.errors import INVALID, Error
from trackstore.web.consumer_app import create_consumer_app

log = logging.getLogger(__name__)


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "consume",
        help="read the stream into the tables until SIGTERM/SIGINT",
        description="Read the Kinesis stream and write the tables until SIGTERM/SIGINT; then "
        "finish the batch in hand, checkpoint, release leases and exit 0.",
    )
    parser.add_argument(
        "--metrics-port",
        type=port,
        default=None,
        help="port of /metrics and /health (default CONSUMER_METRICS_PORT, else 9100, or a "
        "free port when 9100 is taken; 0: off)",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of that port (127.0.0.1)"
    )
    parser.set_defaults(run=run, traced=True, talks_to_aws=True)


async def run(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> None:
    if settings.backend is Backend.MEMORY:
        raise Error(
            INVALID,
            "consume reads a Kinesis stream; with TRACKSTORE_BACKEND=memory there is none "
            "(try `trackstore demo`)",
        )
    metrics_port = (
        settings.consumer_metrics_port if args.metrics_port is None else args.metrics_port
    )
    await consume(build_container(settings), stop, args.metrics_host, metrics_port)


async def consume(
    container: Container, stop: asyncio.Event, metrics_host: str, metrics_port: int | None
) -> None:
    """`metrics_port` None: not configured, so 9100, or a free port when another process on
    the host holds 9100; a port configured explicitly is used or the command fails; 0: off."""
    settings = container.settings()
    sock = _metrics_socket(metrics_host, metrics_port)
    try:
        async with opened(container):
            consumer = container.consumer()
            worker = container.worker_id()
            log.info(
                "consumer starting",
                extra={"worker": worker, "stream": settings.kinesis_stream_name},
            )
            if sock is not None:
                url = http_url(sock)
                log.info(f"metrics and health on {url}", extra={"worker": worker, "url": url})
            running = asyncio.create_task(consumer.run())
            side = []
            if sock is not None:
                app = create_consumer_app(container.metrics(), container.consumer_health())
                side.append(asyncio.create_task(serve_http(app, sock, stop)))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopper, *side}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            await consumer.stop()
            stop.set()
            await running  # finishes the batches in hand, checkpoints, releases the leases
            await asyncio.gather(*side)
    finally:
        # Closed here too: when the start fails (no stream, no table), nothing served on it,
        # and a `consume` run in process (the demo, tests) must not keep the port.
        if sock is not None:
            sock.close()


def _metrics_socket(host: str, port: int | None) -> socket.socket | None:
    if port is None:
        sock = listen_or_any_port(host, DEFAULT_CONSUMER_METRICS_PORT)
        if sock.getsockname()[1] != DEFAULT_CONSUMER_METRICS_PORT:
            log.info(
                f"metrics port {DEFAULT_CONSUMER_METRICS_PORT} is taken (another consumer on "
                "this host?): using a free port instead; set --metrics-port or "
                "CONSUMER_METRICS_PORT to choose one"
            )
        return sock
    return listen(host, port) if port else None
