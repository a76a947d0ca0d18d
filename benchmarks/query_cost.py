"""DynamoDB calls per API request, worst cases included, on dynalite. Not part of CI.

    .venv/bin/python benchmarks/query_cost.py --devices 200 --per-device 60

Fills fresh tables on a dynalite of its own (127.0.0.1, a free port) with `--devices` devices
reporting every 30 s over the last `--per-device` half-minutes, across a UTC midnight when
`--midnight` (the worst case of a fleet window: two days' GSI partitions), then runs each query
through TrackService on the product's DynamoDB adapters and counts the AWS calls it made (the
traced client's `trackstore_aws_calls_total`) and its wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.aws_emulators import DUMMY_CREDENTIALS, dynalite

from trackstore.clock import FakeClock
from trackstore.domain import Arrival, DeviceActivity, HistoryQuery, Location, stream_position
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.dynamodb.tables import TTL_ATTRIBUTE, devices_table, ensure_table, locations_table
from trackstore.metrics import Metrics
from trackstore.service import TrackService
from trackstore.timefmt import DAY_MS, HOUR_MS

STEP_MS = 30_000


def calls(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "trackstore_aws_calls"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def fill(
    locations: DynamoLocationRepository, devices: DynamoDeviceRepository, n: int, per: int, end: int
) -> None:
    for d in range(n):
        device = f"bus-{d:04d}"
        track = [
            Arrival(
                Location(
                    device_id=device,
                    timestamp=end - i * STEP_MS - d,
                    latitude=52.0,
                    longitude=13.0,
                    received_at=end,
                ),
                stream_position("bench", str(d * per + i), 0),
            )
            for i in range(per)
        ]
        await locations.put_many(track)
        await devices.apply_activity(
            [
                DeviceActivity(
                    device_id=device,
                    expected=None,
                    newest=track[0].location,
                    added=per,
                    applied_through={"bench": track[0].position},
                )
            ]
        )


async def main(args: argparse.Namespace) -> None:
    os.environ.update(DUMMY_CREDENTIALS)
    suffix = uuid.uuid4().hex[:8]
    # Now: a few minutes after a UTC midnight, so the last hour and day span two dates.
    now = (int(time.time() * 1000) // DAY_MS) * DAY_MS + (
        10 * 60_000 if args.midnight else HOUR_MS * 12
    )
    with dynalite() as endpoint:
        metrics = Metrics()
        async with dynamodb_client("us-east-1", endpoint_url=endpoint, metrics=metrics) as client:
            ltable, dtable = f"locations-{suffix}", f"devices-{suffix}"
            await ensure_table(client, locations_table(ltable), TTL_ATTRIBUTE)
            await ensure_table(client, devices_table(dtable))
            clock = FakeClock(now)
            locations = DynamoLocationRepository(client, ltable, 30, 8, clock=clock)
            devices = DynamoDeviceRepository(client, dtable)
            await fill(locations, devices, args.devices, args.per_device, now)
            service = TrackService(locations, devices, clock, 30)
            cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("history, 100", lambda: service.history(HistoryQuery(device_id="bus-0001"))),
                ("latest", lambda: service.latest("bus-0001")),
                ("device", lambda: service.device("bus-0001")),
                ("devices, 100", lambda: service.devices(100, None)),
                ("fleet, last hour, 1000", lambda: service.window(None, None, 1000, None)),
                (
                    "fleet, 24 h, 1000",
                    lambda: service.window(now - 24 * HOUR_MS, now, 1000, None),
                ),
                ("fleet, 24 h, 1", lambda: service.window(now - 24 * HOUR_MS, now, 1, None)),
            ]
            print(f"{args.devices} devices x {args.per_device} locations, midnight={args.midnight}")
            print(f"{'request':<26} {'calls':>6} {'ms':>8}")
            for name, run in cases:
                before = calls(metrics)
                started = time.perf_counter()
                await run()
                elapsed = (time.perf_counter() - started) * 1000
                print(f"{name:<26} {calls(metrics) - before:>6.0f} {elapsed:>8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--per-device", type=int, default=60)
    parser.add_argument("--midnight", action=argparse.BooleanOptionalAction, default=True)
    asyncio.run(main(parser.parse_args()))
