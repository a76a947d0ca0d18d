"""`trackstore demo`: simulated fleet -> stream -> consumer -> repositories -> API, in one
process on the memory backend, whatever TRACKSTORE_BACKEND says: no AWS account needed."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from trackstore.cli.args import Subcommands, add_listen_flags, positive_float, positive_int
from trackstore.cli.fleet import Fleet
from trackstore.cli.process import http_url, listen, serve_http
from trackstore.cli.serve import api
from trackstore.clock import wall_clock_ms
from trackstore.config import Backend, Settings
from trackstore.container import Container, build_container, opened
from trackstore.web.docs import DOCS_PATH

PUBLISH_EVERY_S = 0.2


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "demo",
        help="the whole pipeline in one process, no AWS account needed",
        description="Simulated fleet -> stream -> consumer -> repositories -> API, in memory.",
    )
    add_listen_flags(parser)
    parser.add_argument("--devices", type=positive_int, default=50, help="vehicles (default 50)")
    parser.add_argument(
        "--rate", type=positive_float, default=50.0, help="records per second (default 50)"
    )
    parser.set_defaults(run=run, traced=True, talks_to_aws=False)


async def run(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> None:
    container = build_container(msgspec.structs.replace(settings, backend=Backend.MEMORY))
    async with opened(container):
        await run_demo(container, args.host, args.port, args.devices, args.rate, stop)


async def run_demo(
    container: Container, host: str, port: int, devices: int, rate: float, stop: asyncio.Event
) -> None:
    stream = container.memory_stream()
    fleet = Fleet(devices=devices, rate=rate, start_ms=wall_clock_ms(), legacy_share=0.25)
    consumer = container.consumer()

    async def publish() -> None:
        while not stop.is_set():
            stream.put_records(fleet.advance(wall_clock_ms()))
            await asyncio.sleep(PUBLISH_EVERY_S)

    sock = listen(host, port)
    url = http_url(sock)  # the port the OS chose, for --port 0
    print(f"TrackStore demo: {devices} simulated vehicles, {rate:g} records/s", flush=True)
    print(f"  map: {url}/map", flush=True)
    print(f"  open {url}/devices  ·  {url}{DOCS_PATH}  ·  {url}/metrics", flush=True)
    print("  Ctrl-C stops it", flush=True)
    tasks = [asyncio.create_task(publish()), asyncio.create_task(consumer.run())]
    try:
        app = api(container, container.settings())
        await serve_http(app, sock, stop, on_stop=container.fleet().close)
    finally:
        stop.set()
        await consumer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
