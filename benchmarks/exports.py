"""History exports: locations per second and peak RSS per format, on memory or on dynalite.

    .venv/bin/python benchmarks/exports.py [--points 259200] [--backend memory|dynalite]

One device's month (a fix every 10 s by default) is put straight into the memory store (or written
to a fresh Locations table on a dynalite this starts, which takes a minute or two), then each
format streams it through the ASGI app with every body chunk dropped as it comes, as a server
would send it on. On dynalite the figures include dynalite's own time (the same machine's cores)
and the DynamoDB client's; `simplify` and `max_points` read the window twice. Peak RSS is the
process's VmHWM above its RSS before the export (Linux; the peak is reset per format through
/proc/self/clear_refs), so it shows what an export holds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.aws_emulators import DUMMY_CREDENTIALS, dynalite
from tests.memory_watch import drain, reset_peak_rss, status_kb

from trackstore.clock import FakeClock
from trackstore.domain import Arrival, Location
from trackstore.dynamodb import DynamoLocationRepository, dynamodb_client
from trackstore.dynamodb.tables import TTL_ATTRIBUTE, ensure_table, locations_table
from trackstore.memory import MemoryDeviceRepository, MemoryLocationRepository, MemoryStore
from trackstore.metrics import Metrics
from trackstore.ports import LocationRepository
from trackstore.service import TrackService
from trackstore.snapshot import FleetSnapshot
from trackstore.web import create_app

NOW_MS = 1_800_000_000_000
STEP_MS = 10_000
FORMATS = (
    "format=json&limit=1000",  # one page of the JSON answer, for scale
    "format=ndjson",
    "format=csv",
    "format=geojson",
    "format=geojson&geometry=line",
    "format=gpx",
    "format=ndjson&simplify=5",
    "format=csv&max_points=1000",
)


def month(device: str, count: int) -> list[Location]:
    start = NOW_MS - count * STEP_MS + STEP_MS
    rng = random.Random(1)
    noise = [rng.gauss(0.0, 3e-5) for _ in range(count)]  # about 3 m, seeded
    return [
        Location(
            device_id=device,
            timestamp=start + n * STEP_MS,
            latitude=52.123456789 + n * 1e-7 + noise[n],  # GPS noise to simplify away
            longitude=13.987654321 - n * 1e-7,
            speed=float(n % 90),
            heading=float(n % 360),
            altitude=34.0 + n % 10,
            received_at=start + n * STEP_MS + 500,
        )
        for n in range(count)
    ]


@asynccontextmanager
async def memory_locations(store: MemoryStore, count: int) -> AsyncIterator[LocationRepository]:
    track = store.track("bus-1")
    for location in month("bus-1", count):
        track.times.append(location.timestamp)
        track.by_time[location.timestamp] = location
    yield MemoryLocationRepository(store)


@asynccontextmanager
async def dynalite_locations(count: int) -> AsyncIterator[LocationRepository]:
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    with dynalite() as endpoint:
        async with dynamodb_client("us-east-1", endpoint_url=endpoint) as client:
            await ensure_table(client, locations_table("locations"), TTL_ATTRIBUTE)
            repository = DynamoLocationRepository(client, "locations", 365, 4, concurrency=32)
            started = time.perf_counter()
            locations = month("bus-1", count)
            for at in range(0, count, 5000):
                chunk = locations[at : at + 5000]
                await repository.put_many([Arrival(loc, f"p{loc.timestamp}") for loc in chunk])
            print(f"filled dynalite in {time.perf_counter() - started:.0f} s")
            yield repository


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=259_200)
    parser.add_argument("--backend", choices=("memory", "dynalite"), default="memory")
    args = parser.parse_args()
    clock = FakeClock(NOW_MS)
    store = MemoryStore()
    devices = MemoryDeviceRepository(store, clock)
    locations = (
        memory_locations(store, args.points)
        if args.backend == "memory"
        else dynalite_locations(args.points)
    )
    async with locations as repository:
        service = TrackService(repository, devices, clock, ttl_days=365)
        app = create_app(service, Metrics(), FleetSnapshot(devices, clock, refresh_s=3600))
        await measure(app, args.points, args.backend)


async def measure(app: Litestar, points: int, backend: str) -> None:
    await drain(app, "/locations/bus-1", "format=csv&end_time=0")  # warm up
    print(f"machine: {platform.machine()} {platform.processor() or ''}")
    print(f"{points} locations of one device, {backend} backend")
    print(f"{'query':32} {'locations/s':>12} {'MB/s':>8} {'body MB':>8} {'peak RSS +MB':>13}")
    for query in FORMATS:
        before = status_kb("VmRSS") or 0
        peak_known = reset_peak_rss()
        started = time.perf_counter()
        status, size = await drain(app, "/locations/bus-1", query)
        seconds = time.perf_counter() - started
        peak = status_kb("VmHWM" if peak_known else "VmRSS") or 0
        assert status == 200, status
        count = 1000 if query.startswith("format=json") else points
        print(
            f"{query:32} {count / seconds:12,.0f} {size / seconds / 1e6:8.1f} "
            f"{size / 1e6:8.1f} {(peak - before) / 1024:13.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
