"""What a FleetSnapshot refresh reads from DynamoDB, on dynalite. Not part of CI.

    .venv/bin/python benchmarks/fleet_refresh.py --devices 10000 --changed 0 100 1000 10000

Fills a fresh Devices table (`devices_table`, with the sparse `fleet-changes-index`) on a dynalite
of its own with `--devices` devices that have a last location, written as the consumer writes
them (`DynamoDeviceRepository.apply_activity`, 32 at a time, `changedAt` from a FakeClock the
script moves a millisecond per 32 devices), then keeps a `FleetSnapshot` over
`DynamoDeviceRepository` fresh by hand, 5 s of fake time between refreshes:

- the first refresh, the full read (a parallel Scan of the table);
- for each `--changed` N, after two quiet intervals (so the snapshot's 5 s overlap holds no
  earlier change): N devices move, refresh ("first"); the same N move again, refresh ("same":
  an active bus reports every few seconds, and the index keeps one entry per device); N other
  devices move, refresh ("others": the overlap also reads the previous interval's N).

The DynamoDB client is wrapped in a proxy that adds ReturnConsumedCapacity=TOTAL to every Query
and Scan and records each answer's Count, ScannedCount, ConsumedCapacity and item sizes. Two read
costs are given per refresh: dynalite's ConsumedCapacity (it rounds each page's total size up to
4 KB and halves it, eventually consistent, but charges nothing for an empty page), and the bill
as DynamoDB counts it, computed here: per call, 0.5 RCU per 4 KB of the total size of the items
read (index entries for a Query on the index; whole items for a Scan, whatever the projection),
rounded up, at least 0.5. The monthly figure uses the computed one.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.aws_emulators import DUMMY_CREDENTIALS, dynalite

from trackstore.clock import FakeClock
from trackstore.domain import DeviceActivity, DeviceMark, Location, stream_position
from trackstore.dynamodb import DynamoDeviceRepository, dynamodb_client
from trackstore.dynamodb.fleet_changes import FLEET_BUCKETS, SCAN_SEGMENTS
from trackstore.dynamodb.tables import devices_table, ensure_table
from trackstore.snapshot import OVERLAP_MS, FleetSnapshot

INTERVAL_MS = 5_000  # FLEET_REFRESH_SECONDS's default
SHARD = "shardId-000000000000"
MOVE_CHUNK = 32  # activities per apply_activity call: what the repository keeps in flight
MOVE_START_MS = 500  # into an interval, when its devices start moving
MONTH_S = 30 * 86_400
FULL_EVERY_S = 900  # snapshot.FULL_EVERY_S: a full read replaces an incremental one this often


# -- DynamoDB's item size -----------------------------------------------------------------------


def value_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for an AttributeValue (the developer guide's item size rules)."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        digits = raw.lstrip("-").replace(".", "").lstrip("0").rstrip("0")
        return math.ceil(max(len(digits), 1) / 2) + 1
    if kind == "B":
        return len(raw) * 3 // 4  # base64 on the wire
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in raw.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in raw)
    if kind in {"SS", "NS", "BS"}:
        return sum(value_size({kind[0]: v}) for v in raw)
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, dict[str, Any]]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def billed_rcu(size: int) -> float:
    """An eventually consistent Query or Scan call: 0.5 RCU per 4 KB read, at least 0.5."""
    return max(0.5, math.ceil(size / 4096) * 0.5)


# -- the metering proxy -------------------------------------------------------------------------


@dataclass
class Call:
    operation: str
    count: int
    scanned: int
    consumed: float | None  # dynalite's ConsumedCapacity.CapacityUnits
    size: int  # bytes DynamoDB bills for this call


@dataclass
class Meter:
    calls: list[Call] = field(default_factory=list)
    # Whole-item sizes by device id: a Scan bills whole items, whatever its projection.
    full_sizes: dict[str, int] = field(default_factory=dict)


class MeteredClient:
    """The DynamoDB client, with ReturnConsumedCapacity=TOTAL on every Query and Scan and each
    answer's counts and sizes recorded; everything else passes through."""

    def __init__(self, client: Any, meter: Meter) -> None:
        self._client = client
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def query(self, **request: Any) -> Any:
        return await self._read("query", request)

    async def scan(self, **request: Any) -> Any:
        return await self._read("scan", request)

    async def _read(self, operation: str, request: dict[str, Any]) -> Any:
        call = getattr(self._client, operation)
        response = await call(**request, ReturnConsumedCapacity="TOTAL")
        items = response.get("Items", [])
        if operation == "scan":
            sizes = self._meter.full_sizes
            size = sum(sizes.get(i["deviceId"]["S"], item_size(i)) for i in items)
        else:  # the index entries, as returned: no projection expression on the Query
            size = sum(item_size(i) for i in items)
        consumed = response.get("ConsumedCapacity", {}).get("CapacityUnits")
        self._meter.calls.append(
            Call(
                operation,
                response.get("Count", len(items)),
                response.get("ScannedCount", len(items)),
                None if consumed is None else float(consumed),
                size,
            )
        )
        return response


# -- the fleet ----------------------------------------------------------------------------------


class Fleet:
    """The devices and the mark each was last written with, for the next conditional update."""

    def __init__(self, devices: int) -> None:
        self.ids = [f"bus-{i:05d}" for i in range(devices)]
        self.marks: dict[str, DeviceMark | None] = dict.fromkeys(self.ids)
        self.sequence = 0
        self.number = {device_id: n for n, device_id in enumerate(self.ids)}

    def activity(self, device_id: str, now_ms: int) -> DeviceActivity:
        n = self.number[device_id]
        self.sequence += 1
        position = stream_position(SHARD, f"{49_650_000_000_000 + self.sequence:d}", 0)
        location = Location(
            device_id=device_id,
            timestamp=now_ms - 250,
            latitude=52.3676 + (n % 97) * 0.0011 + self.sequence % 7 * 0.0001,
            longitude=4.9041 + (n % 89) * 0.0017,
            speed=31.4,
            heading=90.0,
            altitude=1.8,
            accuracy=4.2,
            battery=87.5,
            attributes={
                "routeId": f"R{n % 10 + 1}",
                "tripId": f"R{n % 10 + 1}-0-0812-{device_id}",
                "directionId": 0,
                "startDate": "20261205",
                "startTime": "08:12:00",
            },
            received_at=now_ms - 100,
        )
        activity = DeviceActivity(
            device_id=device_id,
            expected=self.marks[device_id],
            newest=location,
            added=1,
            applied_through={SHARD: position},
        )
        self.marks[device_id] = DeviceMark(
            last_seen=location.timestamp, applied_through={SHARD: position}
        )
        return activity

    async def move(
        self, repository: DynamoDeviceRepository, ids: list[str], clock: FakeClock
    ) -> None:
        """Moves `ids`, MOVE_CHUNK at a time, the clock a millisecond on after each chunk: as
        in life, the devices' `changedAt` differ. (On dynalite they must: it keys an index entry
        by the index key and 24 bits of an MD5 of the table key, so among 10,000 devices written
        in the same millisecond two pairs collide and two entries are lost, here bus-01004 and
        bus-05486.)"""
        for start in range(0, len(ids), MOVE_CHUNK):
            chunk = ids[start : start + MOVE_CHUNK]
            await repository.apply_activity([self.activity(d, clock()) for d in chunk])
            clock.advance(1)


# -- one refresh --------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    changed: int  # devices moved in the interval
    items: int
    scanned: int
    calls: int
    consumed: float | None
    billed: float
    size: int
    wall_ms: float
    merged: int  # devices the snapshot found changed


async def measured_refresh(
    snapshot: FleetSnapshot, meter: Meter, label: str, changed: int
) -> Result:
    meter.calls.clear()
    started = time.perf_counter()
    refresh = await snapshot.refresh()
    wall_ms = (time.perf_counter() - started) * 1000
    calls = list(meter.calls)
    consumed = [c.consumed for c in calls]
    return Result(
        label=label,
        changed=changed,
        items=sum(c.count for c in calls),
        scanned=sum(c.scanned for c in calls),
        calls=len(calls),
        consumed=None if None in consumed else sum(c for c in consumed if c is not None),
        billed=sum(billed_rcu(c.size) for c in calls),
        size=sum(c.size for c in calls),
        wall_ms=wall_ms,
        merged=len(refresh.changed),
    )


def show(result: Result) -> None:
    consumed = "-" if result.consumed is None else f"{result.consumed:.1f}"
    print(
        f"  {result.label:<24} moved {result.changed:>6}  items {result.items:>6}  "
        f"calls {result.calls:>3}  RCU dynalite {consumed:>7}  billed {result.billed:>7.1f}  "
        f"{result.size / 1024:>8.1f} KB  {result.wall_ms:>8.1f} ms  merged {result.merged}",
        flush=True,
    )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


# -- the run ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    os.environ.update(DUMMY_CREDENTIALS)
    table = f"devices-{uuid.uuid4().hex[:8]}"
    fleet = Fleet(args.devices)
    meter = Meter()
    now = (int(time.time() * 1000) // 1000) * 1000
    clock = FakeClock(now)
    results: list[Result] = []
    print(
        f"{args.devices} devices, refresh every {INTERVAL_MS / 1000:g} s (fake clock), "
        f"overlap {OVERLAP_MS / 1000:g} s, {FLEET_BUCKETS} buckets; {load()}",
        flush=True,
    )
    with dynalite() as endpoint:
        async with dynamodb_client("us-east-1", endpoint_url=endpoint) as client:
            await ensure_table(client, devices_table(table))
            repository = DynamoDeviceRepository(MeteredClient(client, meter), table, clock=clock)
            started = time.perf_counter()
            await fleet.move(repository, fleet.ids, clock)
            fill_s = time.perf_counter() - started
            print(f"filled in {fill_s:.1f} s ({args.devices / fill_s:,.0f} updates/s)", flush=True)

            # Whole-item sizes, read outside the meter: what a Scan is billed for.
            request: dict[str, Any] = {"TableName": table}
            while True:
                page = await client.scan(**request)
                for item in page.get("Items", []):
                    meter.full_sizes[item["deviceId"]["S"]] = item_size(item)
                if not page.get("LastEvaluatedKey"):
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            sizes = sorted(meter.full_sizes.values())
            print(
                f"item size {sizes[len(sizes) // 2]} B (median), "
                f"{sum(sizes) / 1024:,.0f} KB in all",
                flush=True,
            )

            snapshot = FleetSnapshot(repository, clock, refresh_s=INTERVAL_MS / 1000)
            clock.advance(60_000)  # the fill falls out of every window that follows
            full = await measured_refresh(snapshot, meter, "full read (Scan)", args.devices)
            show(full)

            async def interval(label: str, ids: list[str]) -> Result:
                start = clock()
                clock.advance(MOVE_START_MS)
                await fleet.move(repository, ids, clock)
                if clock() > start + INTERVAL_MS:
                    raise SystemExit(
                        f"{len(ids)} moves do not fit in {INTERVAL_MS} ms of fake time"
                    )
                clock.now_ms = start + INTERVAL_MS
                return await measured_refresh(snapshot, meter, label, len(ids))

            for n in args.changed:
                n = min(n, args.devices)
                for _ in range(2):  # the overlap reaches one interval back: two quiet ones
                    quiet = await interval("quiet", [])
                if n == 0:
                    results.append(quiet)
                    show(quiet)
                    continue
                movers = fleet.ids[:n]
                for label, ids in (
                    (f"{n}: first", movers),
                    (f"{n}: same again", movers),
                    (f"{n}: others", fleet.ids[n : 2 * n]),
                ):
                    if not ids:
                        continue
                    result = await interval(label, ids)
                    results.append(result)
                    show(result)
    print_summary(args, full, results)


def print_summary(args: argparse.Namespace, full: Result, results: list[Result]) -> None:
    refreshes = MONTH_S / (INTERVAL_MS / 1000)
    fulls = MONTH_S / FULL_EVERY_S
    price: float = args.price

    def month(result: Result) -> float:
        units = fulls * full.billed + (refreshes - fulls) * result.billed
        return units * price / 1e6

    print()
    print(
        f"{args.devices} devices, per refresh (5 s); $/month: one serve task, a full read every "
        f"{FULL_EVERY_S} s, on-demand ${args.price} per million RRU"
    )
    print(
        "| refresh | moved | items read | calls (pages) | RCU (dynalite) | RCU (billed) | ms "
        "| $/month |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| full read (Scan, {SCAN_SEGMENTS} segments) | - | {full.items:,} | {full.calls} | "
        f"{full.consumed or 0:.1f} | {full.billed:.1f} | {full.wall_ms:.0f} | "
        f"{refreshes * full.billed * args.price / 1e6:,.2f} if every refresh were one |"
    )
    for r in results:
        consumed = "-" if r.consumed is None else f"{r.consumed:.1f}"
        print(
            f"| {r.label} | {r.changed:,} | {r.items:,} | {r.calls} | {consumed} | "
            f"{r.billed:.1f} | {r.wall_ms:.0f} | {month(r):,.2f} |"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{stamp}, {platform.python_version()}, {load()}: "
        f".venv/bin/python benchmarks/fleet_refresh.py --devices {args.devices} "
        f"--changed {' '.join(str(n) for n in args.changed)}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--changed", type=int, nargs="+", default=[0, 100, 1_000, 10_000])
    parser.add_argument(
        "--price", type=float, default=0.25, help="$ per million read request units (0.25)"
    )
    asyncio.run(main(parser.parse_args()))
