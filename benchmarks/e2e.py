# ruff: noqa: ASYNC220, ASYNC221  (a driver script: blocking process calls are fine)
"""End to end: `trackstore consume` draining a pre-filled 4-shard stream into the tables, against
the emulator's raw BatchWriteItem rate with the product's own client. Not part of CI.

    .venv-bench/bin/python benchmarks/e2e.py --records 40000 --devices 500 --rounds 2

Kinesis on kinesis-local, DynamoDB on dynalite, both on 127.0.0.1 ports chosen here (node/npm,
see tests/emulators). Each round runs, in alternating order (A B B A ...):

- consumer (A): `trackstore init --shards 4` on fresh names, the stream pre-filled with
  `--records` records of the simulated fleet (`--devices` vehicles, one report a second each, in
  time order) before `trackstore consume` starts. Its /metrics is polled: startup is spawn -> first
  record stored; the drain rate and CPU (utime+stime of the process, from /proc) are counted from
  that first poll to the poll that sees every record stored. At the end the tables are counted:
  every location stored once, every device's totalUpdates summing to the records.
- raw (B): the same records as the consumer's Locations items (decoded by the product's decoder,
  same attributes), written into a fresh table of the same schema with the product's aiobotocore
  client (`dynamodb_client`) in BatchWriteItem calls of 25, at most 16 in flight (the bound of
  the product's BatchWriter), UnprocessedItems resent.

Reports per side medians, the median of the per-round ratios consumer/raw, CPU per 10k records,
the cores each process kept busy meanwhile (consumer or client, dynalite, kinesis-local: all
share the machine) and the consumer's AWS calls per 1,000 records by operation.
`--batch-size` is KINESIS_BATCH_SIZE (default 1000 here, the service's own default is 100).
kinesis-local's PutRecords slows down as a stream grows: the pre-fill of 40,000 records takes
2-3 minutes per consumer run. To see where the consumer's CPU goes:

    .venv-bench/bin/python benchmarks/e2e.py --rounds 1 --profile /tmp/consume.folded

attaches `py-spy record -f raw` (folded stacks) to the first consumer from its first record
stored to its last; that run is marked "profiled" (py-spy slows it a little).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.procfs import cpu_seconds, samples
from tests.aws_emulators import DUMMY_CREDENTIALS, dynalite, free_port, kinesis_local

from trackstore.cli.fleet import Fleet
from trackstore.cli.process import settle_garbage_collector
from trackstore.clock import wall_clock_ms
from trackstore.domain import Location, StreamRecord
from trackstore.dynamodb.client import dynamodb_client
from trackstore.dynamodb.items import Item, location_item
from trackstore.dynamodb.locations import POSITION_ATTRIBUTE
from trackstore.dynamodb.tables import ensure_table, locations_table
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.producer import Producer
from trackstore.records import RecordDecoder
from trackstore.timefmt import DAY_MS

TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]
SPY_RECORD = [str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw", "-r", "200"]
REGION = "us-east-1"
CONCURRENCY = 16  # the bound DynamoLocationRepository gives its BatchWriter
BATCH_ITEMS = 25
TTL_MS, DATE_SHARDS = 30 * DAY_MS, 8  # the service's defaults
SEQUENCE_BASE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898


def emulator_pids() -> dict[str, int]:
    """This process's emulators (children started by tests.aws_emulators), by name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == os.getpid() and b"dynalite" in cmdline:
            found["dynalite"] = int(entry.name)
        elif ppid == os.getpid() and b"main.js" in cmdline:
            found["kinesis-local"] = int(entry.name)
    return found


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def shares(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Cores each process kept busy between two cpu_of() readings."""
    return ", ".join(f"{name} {(after[name] - before[name]) / seconds:.2f}" for name in after)


def calls(text: str, records: int) -> str:
    """AWS calls per 1,000 records, by operation, from the consumer's counters."""
    by_operation: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trackstore_aws_calls_total":
                operation = sample.labels["operation"]
                by_operation[operation] = by_operation.get(operation, 0) + sample.value
    ranked = sorted(by_operation.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {count / records * 1000:.1f}" for name, count in ranked)


def fleet_reports(records: int, devices: int) -> list[tuple[str, bytes]]:
    """(partition key, data) of `records` reports, one per device a second, ending now."""
    seconds = -(-records // devices)
    start = wall_clock_ms() - (seconds + 1) * 1000
    fleet = Fleet(devices=devices, rate=devices, start_ms=start)
    reports: list[tuple[str, bytes]] = []
    for second in range(1, seconds + 2):
        reports.extend(fleet.advance(start + second * 1000))
    return reports[:records]


async def scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table}
    while True:
        page = await client.scan(**request)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def location_count(client: Any, table: str) -> int:
    total = 0
    request: dict[str, Any] = {"TableName": table, "Select": "COUNT"}
    while True:
        page = await client.scan(**request)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def run_consumer(
    kinesis: str,
    dynamodb: str,
    reports: list[tuple[str, bytes]],
    batch_size: int,
    profile: str | None = None,
) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    names = {
        "KINESIS_STREAM_NAME": f"e2e-{suffix}",
        "LOCATION_TABLE_NAME": f"e2e-locations-{suffix}",
        "DEVICE_TABLE_NAME": f"e2e-devices-{suffix}",
        "LEASE_TABLE_NAME": f"e2e-leases-{suffix}",
    }
    env = {
        **os.environ,
        **DUMMY_CREDENTIALS,
        **names,
        "TRACKSTORE_BACKEND": "aws",
        "AWS_ENDPOINT_URL_KINESIS": kinesis,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
        "KINESIS_BATCH_SIZE": str(batch_size),
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [*TRACKSTORE, "init", "--shards", "4"], env=env, check=True, stdout=subprocess.DEVNULL
    )
    started = time.monotonic()
    async with kinesis_client(REGION, kinesis) as client:
        await Producer(client, names["KINESIS_STREAM_NAME"]).put(reports)
    prefill_s = time.monotonic() - started

    total = len(reports)
    port = free_port()
    spawned = time.monotonic()
    consume = subprocess.Popen([*TRACKSTORE, "consume", "--metrics-port", str(port)], env=env)
    pids = {"consumer": consume.pid, **emulator_pids()}
    first: tuple[float, float, dict[str, float]] | None = None
    spy = None
    deadline = spawned + 900
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            if consume.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"consume exited ({consume.returncode}) or timed out")
            try:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            now, cpu = time.monotonic(), cpu_of(pids)
            stored = sum(samples(text, "trackstore_records_stored_total"))
            if first is None and stored > 0:
                first = (now, stored, cpu)
                if profile is not None:
                    spy = subprocess.Popen(
                        [*SPY_RECORD, "-o", profile, "--pid", str(consume.pid)],
                        stdout=subprocess.DEVNULL,
                    )
            if stored >= total:
                break
            await asyncio.sleep(0.1)
    assert first is not None
    t0, stored0, cpu0 = first
    rejected = sum(samples(text, "trackstore_records_rejected_total"))
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    consume.send_signal(signal.SIGTERM)
    consume.wait(30)

    async with dynamodb_client(REGION, dynamodb) as client:
        locations = await location_count(client, names["LOCATION_TABLE_NAME"])
        devices = await scan_all(client, names["DEVICE_TABLE_NAME"])
    updates = sum(int(d["totalUpdates"]["N"]) for d in devices)
    if locations != total or updates != total or rejected:
        raise RuntimeError(
            f"lost or extra records: {total} sent, {locations} locations, "
            f"{updates} totalUpdates, {rejected:.0f} rejected"
        )
    drained = total - stored0
    return {
        "prefill_s": prefill_s,
        "startup_s": t0 - spawned,
        "drain_s": now - t0,
        "rate": drained / (now - t0),
        "cpu_per_10k": (cpu["consumer"] - cpu0["consumer"]) / drained * 10_000,
        "cpu_total_s": cpu["consumer"],
        "cores": shares(cpu0, cpu, now - t0),
        "calls": calls(text, total),
        "locations": locations,
        "devices": len(devices),
        "total_updates": updates,
    }


def location_items(reports: list[tuple[str, bytes]]) -> list[Item]:
    """The Locations items the consumer writes for these reports (streamPosition included)."""
    decoder, now = RecordDecoder(TTL_MS), wall_clock_ms()
    items = []
    for i, (key, data) in enumerate(reports):
        sequence = str(SEQUENCE_BASE + i)
        record = StreamRecord(
            data=data,
            partition_key=key,
            shard_id="shardId-000000000000",
            sequence_number=sequence,
            arrival_ms=now,
        )
        location = decoder.decode(record, now)
        assert isinstance(location, Location), location
        item = location_item(location, TTL_MS, DATE_SHARDS)
        item[POSITION_ATTRIBUTE] = {"S": f"{sequence}/0"}
        items.append(item)
    return items


async def run_raw(dynamodb: str, reports: list[tuple[str, bytes]]) -> dict[str, Any]:
    items = location_items(reports)
    settle_garbage_collector()  # as the product does at start: the items are not garbage
    table = f"e2e-raw-{uuid.uuid4().hex[:8]}"
    async with dynamodb_client(REGION, dynamodb) as client:
        await ensure_table(client, locations_table(table))
        limit = asyncio.Semaphore(CONCURRENCY)

        async def write(chunk: list[Item]) -> None:
            requests: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in chunk]
            while requests:
                async with limit:
                    response = await client.batch_write_item(RequestItems={table: requests})
                requests = response.get("UnprocessedItems", {}).get(table, [])

        pids = {"client": os.getpid(), **emulator_pids()}
        started, cpu0 = time.monotonic(), cpu_of(pids)
        chunks = [items[i : i + BATCH_ITEMS] for i in range(0, len(items), BATCH_ITEMS)]
        await asyncio.gather(*(write(chunk) for chunk in chunks))
        elapsed, cpu = time.monotonic() - started, cpu_of(pids)
        stored = await location_count(client, table)
    if stored != len(items):
        raise RuntimeError(f"raw run: {len(items)} written, {stored} in the table")
    return {
        "rate": len(items) / elapsed,
        "cpu_per_10k": (cpu["client"] - cpu0["client"]) / len(items) * 10_000,
        "cores": shares(cpu0, cpu, elapsed),
    }


def machine() -> str:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    python = platform.python_version()
    return f"{os.cpu_count()} cores ({model}), {platform.machine()}, Python {python}, {revision()}"


def interpreter() -> str:
    """This Python, relative to the repository when inside it, for the reproduce line."""
    root = Path(__file__).resolve().parent.parent
    path = Path(sys.executable)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def revision() -> str:
    """The checked-out commit, and whether the work tree differs from it."""
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True)
    changed = " + uncommitted src changes" if dirty.stdout else ""
    return f"trackstore at {head.stdout.strip()}{changed}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (consumer, raw) pairs")
    parser.add_argument("--batch-size", type=int, default=1000, help="KINESIS_BATCH_SIZE")
    parser.add_argument(
        "--profile", metavar="PATH", help="py-spy (raw/folded) of the first consumer's drain"
    )
    args = parser.parse_args()
    os.environ.update(DUMMY_CREDENTIALS)  # for this process's own clients
    print(
        f"reproduce: {interpreter()} benchmarks/e2e.py --records {args.records} "
        f"--devices {args.devices} --rounds {args.rounds} --batch-size {args.batch_size}"
        + (f" --profile {args.profile}" if args.profile else "")
    )
    print(f"machine: {machine()}", flush=True)
    reports = fleet_reports(args.records, args.devices)
    consumer: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    with kinesis_local() as kinesis, dynalite() as dynamodb:
        for round_ in range(args.rounds):
            order = ("consumer", "raw") if round_ % 2 == 0 else ("raw", "consumer")
            for side in order:
                if side == "consumer":
                    profile = args.profile if not consumer else None
                    c = await run_consumer(kinesis, dynamodb, reports, args.batch_size, profile)
                    consumer.append(c)
                    print(
                        f"round {round_ + 1} consumer{' (profiled)' if profile else ''}: "
                        f"prefill {c['prefill_s']:.0f} s, startup {c['startup_s']:.2f} s, drain "
                        f"{c['rate']:,.0f} records/s over {c['drain_s']:.1f} s, "
                        f"{c['cpu_per_10k']:.2f} CPU s/10k records "
                        f"({c['cpu_total_s']:.1f} s in all); cores busy: {c['cores']}; "
                        f"AWS calls per 1,000 records: {c['calls']}; "
                        f"tables: {c['locations']} locations, {c['devices']} devices, "
                        f"totalUpdates {c['total_updates']}",
                        flush=True,
                    )
                else:
                    r = await run_raw(dynamodb, reports)
                    raw.append(r)
                    print(
                        f"round {round_ + 1} raw BatchWriteItem: {r['rate']:,.0f} items/s, "
                        f"client {r['cpu_per_10k']:.2f} CPU s/10k items; cores busy: {r['cores']}",
                        flush=True,
                    )
    ratios = [c["rate"] / r["rate"] for c, r in zip(consumer, raw, strict=True)]
    rate = statistics.median(c["rate"] for c in consumer)
    cpu = statistics.median(c["cpu_per_10k"] for c in consumer)
    print(
        f"\nconsumer drain {rate:,.0f} records/s (median of {len(consumer)}), startup "
        f"{statistics.median(c['startup_s'] for c in consumer):.2f} s to the first record stored"
    )
    print(f"raw BatchWriteItem {statistics.median(r['rate'] for r in raw):,.0f} items/s")
    print(
        f"consumer / raw: median {statistics.median(ratios):.0%} "
        f"(rounds: {', '.join(f'{r:.0%}' for r in ratios)}; target >= 80%)"
    )
    print(f"consumer CPU {cpu:.2f} s per 10k records (target < 0.5)")
    print(f"no loss: every run's tables hold {args.records} locations and totalUpdates")


if __name__ == "__main__":
    asyncio.run(main())
