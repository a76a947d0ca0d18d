"""Ingest throughput of the core on the in-memory adapters: decode, validate, dedupe, store.

    .venv/bin/python benchmarks/ingest_memory.py [--records 200000] [--devices 1000] [--batch 500]

Prints records per second; the adapters do no I/O, so this is the ceiling the core allows.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

from trackstore.cli.fleet import Fleet
from trackstore.clock import FakeClock
from trackstore.domain import StreamRecord
from trackstore.memory import MemoryDeviceRepository, MemoryLocationRepository, MemoryStore
from trackstore.service import TrackService

START_MS = 1_800_000_000_000


def records(count: int, devices: int) -> list[StreamRecord]:
    fleet = Fleet(devices=devices, rate=devices, start_ms=START_MS, legacy_share=0.2)
    out: list[StreamRecord] = []
    second = 0
    while len(out) < count:
        second += 1
        for key, data in fleet.advance(START_MS + second * 1000):
            out.append(
                StreamRecord(
                    data=data,
                    partition_key=key,
                    shard_id="shardId-000000000000",
                    sequence_number=str(len(out) + 1),
                    arrival_ms=START_MS + second * 1000,
                )
            )
    return out[:count]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    stream = records(args.records, args.devices)
    clock = FakeClock(START_MS + (args.records // args.devices + 10) * 1000)
    store = MemoryStore()
    service = TrackService(
        MemoryLocationRepository(store), MemoryDeviceRepository(store), clock, ttl_days=30
    )
    started = time.perf_counter()
    for i in range(0, len(stream), args.batch):
        await service.ingest(stream[i : i + args.batch])
    seconds = time.perf_counter() - started
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}",
        f"python {platform.python_version()}",
    )
    print(f"{args.records} records, {args.devices} devices, batches of {args.batch}")
    print(f"ingest (memory adapters): {args.records / seconds:,.0f} records/s ({seconds:.2f} s)")
    print(
        "reproduce: .venv/bin/python benchmarks/ingest_memory.py "
        f"--records {args.records} --devices {args.devices} --batch {args.batch}"
    )


if __name__ == "__main__":
    asyncio.run(main())
