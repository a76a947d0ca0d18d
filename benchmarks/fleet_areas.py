"""Area queries on the fleet snapshot: how long one page takes for 10,000 devices. Not part of CI.

    .venv/bin/python benchmarks/fleet_areas.py --devices 10000 --rounds 300

Builds a snapshot of `--devices` devices (the memory adapter, read once as `serve` reads it at
start): most of them in one city, spread over about 20 x 20 km, the rest anywhere on earth, a
tenth of them quiet for an hour (inactive). Then times `FleetSnapshot.select` -- what
`GET /devices?...` and `POST /devices/search` run after parsing -- for a page of 100, for each
query below, `--rounds` times, and prints p50, p99 and max in milliseconds. Parsing a 1,000-vertex
polygon is timed on its own: it happens once per request.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trackstore.clock import FakeClock
from trackstore.domain import DeviceActivity, DeviceStatus, Location
from trackstore.geo import parse_bbox, parse_near
from trackstore.geo_areas import parse_area
from trackstore.memory import MemoryDeviceRepository, MemoryStore
from trackstore.snapshot import FleetFilter, FleetSnapshot

NOW = 1_800_000_000_000
CITY = (52.37, 4.90)
PAGE = 100


async def build(devices: int, seed: int) -> FleetSnapshot:
    rng = random.Random(seed)
    clock = FakeClock(NOW)
    repository = MemoryDeviceRepository(MemoryStore(), clock)
    activities = []
    for i in range(devices):
        if rng.random() < 0.9:
            lat = CITY[0] + rng.uniform(-0.09, 0.09)
            lon = CITY[1] + rng.uniform(-0.15, 0.15)
        else:
            lat, lon = rng.uniform(-80, 80), rng.uniform(-180, 180)
        seen = NOW - (3_600_000 if rng.random() < 0.1 else rng.randrange(60_000))
        device_id = f"bus-{i:05d}"
        newest = Location(
            device_id=device_id,
            timestamp=seen,
            latitude=lat,
            longitude=lon,
            speed=30.0,
            heading=90.0,
            received_at=seen,
        )
        activities.append(
            DeviceActivity(
                device_id=device_id,
                expected=None,
                newest=newest,
                added=1,
                applied_through={"shard-0": f"shard-0/{i}/0"},
            )
        )
    await repository.apply_activity(activities)
    snapshot = FleetSnapshot(repository, clock)
    await snapshot.refresh()
    return snapshot


def polygon(vertices: int, radius_deg: float, hole: bool) -> dict[str, Any]:
    ring = [
        [
            CITY[1] + radius_deg * 1.6 * math.cos(2 * math.pi * k / vertices),
            CITY[0] + radius_deg * math.sin(2 * math.pi * k / vertices),
        ]
        for k in range(vertices)
    ]
    rings = [[*ring, ring[0]]]
    if hole:
        inner = [
            [CITY[1] + x * 0.3, CITY[0] + y * 0.3] for x, y in ([-1, -1], [1, -1], [1, 1], [-1, 1])
        ]
        inner = [[CITY[1] + (x - CITY[1]) * 0.1, CITY[0] + (y - CITY[0]) * 0.1] for x, y in inner]
        rings.append([*inner, inner[0]])
    return {"type": "Polygon", "coordinates": rings}


def timed(call: Callable[[], object], rounds: int) -> list[float]:
    call()  # warm
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(name: str, samples: list[float], found: int) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    print(
        f"| {name} | {found} | {statistics.median(ordered):.2f} | {p99:.2f} | {ordered[-1]:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    snapshot = asyncio.run(build(args.devices, args.seed))
    queries: dict[str, FleetFilter] = {
        "bbox, city centre (2 x 2 km)": FleetFilter(bbox=parse_bbox("4.885,52.36,4.915,52.38")),
        "bbox, whole city": FleetFilter(bbox=parse_bbox("4.7,52.2,5.1,52.5")),
        "bbox, nowhere (empty answer)": FleetFilter(bbox=parse_bbox("-60,-50,-59,-49")),
        "near, 1 km": FleetFilter(near=parse_near("52.37,4.90", "1000")),
        "near, 50 km (most of the fleet)": FleetFilter(near=parse_near("52.37,4.90", "50000")),
        "status=inactive": FleetFilter(status=DeviceStatus.INACTIVE),
        "status=active + bbox city": FleetFilter(
            status=DeviceStatus.ACTIVE, bbox=parse_bbox("4.7,52.2,5.1,52.5")
        ),
        "polygon, 20 vertices with a hole": FleetFilter(area=parse_area(polygon(20, 0.05, True))),
        "polygon, 1,000 vertices": FleetFilter(area=parse_area(polygon(1000, 0.05, False))),
    }
    print(f"{args.devices} devices, pages of {PAGE}, {args.rounds} rounds each; milliseconds")
    print("| query | devices in the page | p50 | p99 | max |")
    print("| --- | --- | --- | --- | --- |")
    for name, chosen in queries.items():
        page = snapshot.select(chosen, PAGE, None, name)
        samples = timed(lambda c=chosen, n=name: snapshot.select(c, PAGE, None, n), args.rounds)
        report(name, samples, len(page.items))
    big = polygon(1000, 0.05, False)
    report("parsing the 1,000-vertex polygon", timed(lambda: parse_area(big), args.rounds), 0)


if __name__ == "__main__":
    main()
