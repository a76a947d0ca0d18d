"""`trackstore simulate`: synthetic GPS records (a moving fleet) published to the stream with
PutRecords, with progress lines while it runs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import defaultdict

from trackstore.cli.args import Subcommands, positive_float, positive_int
from trackstore.cli.fleet import Fleet
from trackstore.clock import wall_clock_ms
from trackstore.config import Backend, Settings
from trackstore.errors import INVALID, Error
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.kpl import aggregate_chunks
from trackstore.kinesis.producer import Producer

log = logging.getLogger(__name__)
TICK_S = 0.2
PROGRESS_S = 5.0  # seconds between progress lines


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "simulate",
        help="publish synthetic GPS records to the stream",
        description="Publish synthetic GPS records (moving vehicles) with PutRecords.",
    )
    parser.add_argument("--devices", type=positive_int, required=True, help="vehicles")
    parser.add_argument("--rate", type=positive_float, required=True, help="records/second")
    parser.add_argument(
        "--duration", type=positive_float, default=None, help="seconds (default: until stopped)"
    )
    parser.add_argument(
        "--aggregate", action="store_true", help="KPL-aggregate each device's records"
    )
    parser.set_defaults(run=run, traced=False, talks_to_aws=True)


async def run(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> None:
    if settings.backend is Backend.MEMORY:
        raise Error(
            INVALID,
            "simulate publishes to a Kinesis stream; with TRACKSTORE_BACKEND=memory there is "
            "none (`trackstore demo` runs a simulated fleet in memory)",
        )
    published = await simulate(
        settings, args.devices, args.rate, args.duration, args.aggregate, stop
    )
    print(f"published {published} records to {settings.kinesis_stream_name}", flush=True)


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
