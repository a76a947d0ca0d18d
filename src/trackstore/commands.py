"""The long-running commands on the AWS backend: `consume` and `simulate`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from trackstore.clock import wall_clock_ms
from trackstore.config import Settings
from trackstore.consumer import Consumer
from trackstore.consumer_health import ConsumerHealth
from trackstore.container import Container, resolve, resources
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.kpl import aggregate_chunks
from trackstore.kinesis.producer import Producer
from trackstore.serving import listen, serve_http
from trackstore.simulate import Fleet
from trackstore.web.consumer_app import create_consumer_app

log = logging.getLogger(__name__)
TICK_S = 0.2


async def consume(
    container: Container, stop: asyncio.Event, metrics_host: str, metrics_port: int
) -> None:
    settings: Settings = container.settings()
    sock = listen(metrics_host, metrics_port) if metrics_port else None
    async with resources(container):
        source = await resolve(container.stream_source())
        health = ConsumerHealth(
            stall_s=settings.consumer_stall_seconds,
            orphan_grace_s=2 * settings.lease_failover_seconds,
            source_state=getattr(source, "state", None),
        )
        consumer = Consumer(
            source,
            await resolve(container.service()),
            container.metrics(),
            dead_letters=await resolve(container.dead_letters()),
            health=health,
        )
        log.info("consumer starting", extra={"worker": getattr(source, "worker_id", None)})
        running = asyncio.create_task(consumer.run())
        side = []
        if sock is not None:
            app = create_consumer_app(container.metrics(), health)
            side.append(asyncio.create_task(serve_http(app, sock, stop)))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopper, *side}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await consumer.stop()
        stop.set()
        await running  # finishes the batches in hand, checkpoints, releases the leases
        await asyncio.gather(*side)


async def simulate(
    settings: Settings,
    devices: int,
    rate: float,
    duration_s: float | None,
    aggregate: bool,
    stop: asyncio.Event,
) -> int:
    """Publishes the fleet's reports until `duration_s` passes or `stop` is set; returns the
    number of records published."""
    fleet = Fleet(devices=devices, rate=rate, start_ms=wall_clock_ms(), legacy_share=0.2)
    ends = None if duration_s is None else time.monotonic() + duration_s
    published = 0
    async with kinesis_client(settings.aws_region) as client:
        producer = Producer(client, settings.kinesis_stream_name)
        while not stop.is_set() and (ends is None or time.monotonic() < ends):
            tick = time.monotonic()
            reports = fleet.advance(wall_clock_ms())
            entries = _aggregated(reports) if aggregate else reports
            await producer.put(entries)
            published += len(reports)
            await asyncio.sleep(max(0.0, tick + TICK_S - time.monotonic()))
    log.info("simulation done", extra={"published": published, "retried": producer.retried})
    return published


def _aggregated(reports: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    # One aggregated record per device: its sub-records then share the device's shard, as the
    # one-device-one-shard rule wants.
    by_device: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for key, data in reports:
        by_device[key].append((key, data))
    return [chunk for group in by_device.values() for chunk in aggregate_chunks(group)]
