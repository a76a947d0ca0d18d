"""The long-running commands on the AWS backend: `consume` and `simulate`."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import defaultdict

from trackstore.clock import wall_clock_ms
from trackstore.config import DEFAULT_CONSUMER_METRICS_PORT, Settings
from trackstore.consumer import Consumer
from trackstore.consumer_health import ConsumerHealth
from trackstore.container import Container, resolve, resources
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.kpl import aggregate_chunks
from trackstore.kinesis.producer import Producer
from trackstore.serving import http_url, listen, listen_or_any_port, serve_http
from trackstore.simulate import Fleet
from trackstore.web.consumer_app import create_consumer_app

log = logging.getLogger(__name__)
TICK_S = 0.2
PROGRESS_S = 5.0  # seconds between `simulate`'s progress lines


async def consume(
    container: Container, stop: asyncio.Event, metrics_host: str, metrics_port: int | None
) -> None:
    """`metrics_port` None: not configured, so 9100, or a free port when another process on
    the host holds 9100; a port configured explicitly is used or the command fails; 0: off."""
    settings: Settings = container.settings()
    sock = _metrics_socket(metrics_host, metrics_port)
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
        worker = getattr(source, "worker_id", None)
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
            app = create_consumer_app(container.metrics(), health)
            side.append(asyncio.create_task(serve_http(app, sock, stop)))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopper, *side}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await consumer.stop()
        stop.set()
        await running  # finishes the batches in hand, checkpoints, releases the leases
        await asyncio.gather(*side)


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


async def simulate(
    settings: Settings,
    devices: int,
    rate: float,
    duration_s: float | None,
    aggregate: bool,
    stop: asyncio.Event,
    progress_s: float = PROGRESS_S,
) -> int:
    """Publishes the fleet's reports until `duration_s` passes or `stop` is set, logging progress
    every `progress_s` and a summary at the end; returns the number of records published."""
    fleet = Fleet(devices=devices, rate=rate, start_ms=wall_clock_ms(), legacy_share=0.2)
    ends = None if duration_s is None else time.monotonic() + duration_s
    async with kinesis_client(settings.aws_region) as client:
        producer = Producer(client, settings.kinesis_stream_name)
        tally = _Tally(producer)
        log.info(
            f"simulating {devices} devices, {rate:g} records/s, to {settings.kinesis_stream_name}",
            extra={"stream": settings.kinesis_stream_name, "devices": devices, "rate": rate},
        )
        # A task of its own: a put held up by throttling must not hold up the progress lines,
        # they are what tells the user so.
        reporter = asyncio.create_task(tally.report_every(progress_s))
        try:
            while not stop.is_set() and (ends is None or time.monotonic() < ends):
                tick = time.monotonic()
                reports = fleet.advance(wall_clock_ms())
                entries = _aggregated(reports) if aggregate else reports
                await producer.put(entries)
                tally.sent += len(reports)
                await asyncio.sleep(max(0.0, tick + TICK_S - time.monotonic()))
        except BaseException:
            tally.summary("simulation stopped")  # what did get out, before the error line
            raise
        finally:
            reporter.cancel()
    tally.summary("simulation done")
    return tally.sent


class _Tally:
    """What `simulate` has sent, refused and retried, logged as progress and as a summary."""

    def __init__(self, producer: Producer) -> None:
        self.sent = 0
        self._producer = producer
        self._started = time.monotonic()

    async def report_every(self, interval_s: float) -> None:
        since, sent, refused, retried = self._started, 0, 0, 0
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            # Every tally line is about the last interval alone: a rate that fell is visible.
            new_sent = self.sent - sent
            new_refused = self._producer.refused - refused
            new_retried = self._producer.retried - retried
            per_second = new_sent / (now - since)
            log.info(
                f"sent {new_sent} records in {now - since:.1f} s ({per_second:.1f}/s), "
                f"{new_refused} refused, {new_retried} retried; {self.sent} sent in all",
                extra={
                    "sent": new_sent,
                    "perSecond": round(per_second, 1),
                    "refused": new_refused,
                    "retried": new_retried,
                    "totalSent": self.sent,
                },
            )
            since, sent = now, self.sent
            refused, retried = self._producer.refused, self._producer.retried

    def summary(self, headline: str) -> None:
        seconds = time.monotonic() - self._started
        per_second = self.sent / seconds if seconds > 0 else 0.0
        refused, retried = self._producer.refused, self._producer.retried
        log.info(
            f"{headline}: {self.sent} records sent in {seconds:.1f} s ({per_second:.1f}/s), "
            f"{refused} refused, {retried} retried",
            extra={
                "sent": self.sent,
                "seconds": round(seconds, 1),
                "perSecond": round(per_second, 1),
                "refused": refused,
                "retried": retried,
            },
        )


def _aggregated(reports: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    # One aggregated record per device: its sub-records then share the device's shard, as the
    # one-device-one-shard rule wants.
    by_device: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for key, data in reports:
        by_device[key].append((key, data))
    return [chunk for group in by_device.values() for chunk in aggregate_chunks(group)]
