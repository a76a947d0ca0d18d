"""History exports on the in-memory adapters: locations per second and peak RSS per format.

    .venv/bin/python benchmarks/exports.py [--points 259200]

One device's month (a fix every 10 s by default) is put straight into the memory store, then each
format streams it through the ASGI app with every body chunk dropped as it comes, as a server
would send it on. Peak RSS is the process's VmHWM above its RSS before the export (Linux; the
peak is reset per format through /proc/self/clear_refs), so it shows what an export holds.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import time
from pathlib import Path
from typing import Any

from litestar import Litestar

from trackstore.clock import FakeClock
from trackstore.domain import Location
from trackstore.memory import MemoryDeviceRepository, MemoryLocationRepository, MemoryStore
from trackstore.metrics import Metrics
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
)


def fill(store: MemoryStore, device: str, count: int) -> None:
    track = store.track(device)
    start = NOW_MS - count * STEP_MS + STEP_MS
    for n in range(count):
        t = start + n * STEP_MS
        track.times.append(t)
        track.by_time[t] = Location(
            device_id=device,
            timestamp=t,
            latitude=52.123456789 + n * 1e-7,
            longitude=13.987654321 - n * 1e-7,
            speed=float(n % 90),
            heading=float(n % 360),
            altitude=34.0 + n % 10,
            received_at=t + 500,
        )


def status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def drain(app: Litestar, path: str, query: str) -> tuple[int, int]:
    """(status, body bytes) of a GET through the ASGI app; the body is counted, not kept."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"benchmark")],
        "client": ("127.0.0.1", 1234),
        "server": ("benchmark", 80),
        "state": {},
    }
    status = 0
    size = 0
    asked = False
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)  # type: ignore[arg-type]
    return status, size


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=259_200)
    args = parser.parse_args()
    clock = FakeClock(NOW_MS)
    store = MemoryStore()
    devices = MemoryDeviceRepository(store, clock)
    service = TrackService(MemoryLocationRepository(store), devices, clock, ttl_days=365)
    app = create_app(service, Metrics(), FleetSnapshot(devices, clock, refresh_s=3600))
    fill(store, "bus-1", args.points)
    await drain(app, "/locations/bus-1", "format=csv&end_time=0")  # warm up
    print(f"machine: {platform.machine()} {platform.processor() or ''}")
    print(f"{args.points} locations of one device")
    print(f"{'query':32} {'locations/s':>12} {'MB/s':>8} {'body MB':>8} {'peak RSS +MB':>13}")
    for query in FORMATS:
        before = status_kb("VmRSS")
        peak_known = reset_peak()
        started = time.perf_counter()
        status, size = await drain(app, "/locations/bus-1", query)
        seconds = time.perf_counter() - started
        peak = status_kb("VmHWM" if peak_known else "VmRSS")
        assert status == 200, status
        count = 1000 if query.startswith("format=json") else args.points
        print(
            f"{query:32} {count / seconds:12,.0f} {size / seconds / 1e6:8.1f} "
            f"{size / 1e6:8.1f} {(peak - before) / 1024:13.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
