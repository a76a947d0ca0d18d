"""`trackstore demo`: simulated fleet -> stream -> consumer -> repositories -> API, one process."""

from __future__ import annotations

import asyncio
import logging

from trackstore.clock import wall_clock_ms
from trackstore.consumer import Consumer
from trackstore.container import Container
from trackstore.serving import http_url, listen, serve_http
from trackstore.simulate import Fleet
from trackstore.web import create_app
from trackstore.web.docs import DOCS_PATH

log = logging.getLogger(__name__)
PUBLISH_EVERY_S = 0.2


async def run_demo(
    container: Container, host: str, port: int, devices: int, rate: float, stop: asyncio.Event
) -> None:
    stream = container.memory_stream()
    fleet = Fleet(devices=devices, rate=rate, start_ms=wall_clock_ms(), legacy_share=0.25)
    consumer = Consumer(container.stream_source(), container.service(), container.metrics())

    async def publish() -> None:
        while not stop.is_set():
            stream.put_records(fleet.advance(wall_clock_ms()))
            await asyncio.sleep(PUBLISH_EVERY_S)

    sock = listen(host, port)
    url = http_url(sock)  # the port the OS chose, for --port 0
    print(f"TrackStore demo: {devices} simulated vehicles, {rate:g} records/s", flush=True)
    print(f"  open {url}/devices  ·  {url}{DOCS_PATH}  ·  {url}/metrics", flush=True)
    print("  Ctrl-C stops it", flush=True)
    tasks = [asyncio.create_task(publish()), asyncio.create_task(consumer.run())]
    try:
        await serve_http(create_app(container), sock, stop)
    finally:
        stop.set()
        await consumer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
