"""Whether a live worker keeps its leases when it holds many and the lease table is slow.

    .venv/bin/python benchmarks/leases.py [--leases 1000] [--call-ms 10] [--failover 10]
                                          [--seconds 300] [--max-lease-calls 32]

One KinesisStreamSource holds every lease of an empty stream; every lease-table call takes
--call-ms. A second worker lists the table ten times per failover time and takes each lease of
the first whose counter it has seen stand still for the failover time (the KCL's expiry rule).
Prints the leases stolen that way and the longest any held lease's counter stood still. Runs in
real time; tests/unit/test_lease_renewal.py runs the same scenario on a virtual clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import msgspec

from trackstore.kinesis.source import KinesisStreamSource
from trackstore.leasing import Lease, LeaseTaker
from trackstore.memory.leases import MemoryLeaseStore

STREAM = "leases-benchmark"
LIVE, THIEF = "worker-live", "worker-thief"


class Outcome(msgspec.Struct, frozen=True):
    leases: int
    held_at_end: int  # by the live worker
    steals: int  # its leases taken as expired by the other worker
    longest_still_s: float  # the longest any of its leases' counters stood still
    renewals: int
    setup_s: float  # until it held every lease


class EmptyKinesis:
    """Open shards that never have records: only the leases are measured."""

    def __init__(self, shards: int) -> None:
        self.shard_ids = [f"shardId-{i:012d}" for i in range(shards)]

    async def list_shards(self, **_: Any) -> dict[str, Any]:
        return {
            "Shards": [
                {"ShardId": s, "SequenceNumberRange": {"StartingSequenceNumber": "0"}}
                for s in self.shard_ids
            ]
        }

    async def get_shard_iterator(self, **request: Any) -> dict[str, Any]:
        return {"ShardIterator": request["ShardId"]}

    async def get_records(self, ShardIterator: str, **_: Any) -> dict[str, Any]:
        return {"Records": [], "NextShardIterator": ShardIterator, "MillisBehindLatest": 0}


class WatchedLeaseStore(MemoryLeaseStore):
    """Records how long each of the live worker's leases stood still between counter moves."""

    def __init__(self, latency_s: float) -> None:
        super().__init__(latency_s)
        self.renewals = 0
        self.longest_still_s = 0.0
        self._moved_at: dict[str, float] = {}
        self._watch_from: float | None = None

    def watch(self) -> None:
        self._watch_from = _now()
        self.longest_still_s = 0.0

    def settle(self) -> None:
        """Counts the time the live worker's leases have stood still up to now, then stops
        watching (closing the source releases them, as slowly as the table answers)."""
        for lease in self.leases.values():
            if lease.owner == LIVE:
                self._still(lease.shard_id)
        self._watch_from = None

    async def renew(self, lease: Lease) -> Lease | None:
        self.renewals += 1
        return await super().renew(lease)

    def _update(self, lease: Lease, **changes: Any) -> Lease | None:
        current = self.leases.get(lease.shard_id)
        updated = super()._update(lease, **changes)
        if updated is not None:
            if current is not None and current.owner == LIVE:
                self._still(lease.shard_id)
            self._moved_at[lease.shard_id] = _now()
        return updated

    def _still(self, shard_id: str) -> None:
        if self._watch_from is None:
            return
        since = max(self._moved_at.get(shard_id, 0.0), self._watch_from)
        self.longest_still_s = max(self.longest_still_s, _now() - since)


def _now() -> float:
    return asyncio.get_running_loop().time()


async def hold_leases(
    leases: int = 1000,
    call_s: float = 0.010,
    failover_s: float = 10.0,
    duration_s: float = 300.0,
    max_lease_calls: int = 32,
    idle_s: float = 1.5,
) -> Outcome:
    """The scenario, timed by the running loop's clock (real, or virtual in the tests)."""
    loop = asyncio.get_running_loop()
    store = WatchedLeaseStore(call_s)
    source = KinesisStreamSource(
        EmptyKinesis(leases),
        STREAM,
        store,
        LIVE,
        batch_size=100,
        failover_s=failover_s,
        max_leases=leases,
        idle_s=idle_s,
        clock=loop.time,
        max_lease_calls=max_lease_calls,
    )

    async def consume() -> None:
        async for batch in source.batches():
            await batch.checkpoint()

    started = loop.time()
    consuming = asyncio.create_task(consume())
    while len(source.held) < leases:  # noqa: ASYNC110 - the source signals no "all held"
        await asyncio.sleep(failover_s / 100)
    setup_s = loop.time() - started

    store.watch()
    thief = LeaseTaker(THIEF, failover_s, leases, loop.time)
    steals = 0
    deadline = loop.time() + duration_s
    while loop.time() < deadline:
        await asyncio.sleep(failover_s / 10)
        table = await store.list()
        thief.observe(table)
        for lease in table:
            if lease.owner == LIVE and thief.expired(lease):
                taken = await store.take(lease, THIEF)
                steals += taken is not None
    store.settle()
    held = len(source.held)

    await source.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await consuming
    await source.close()
    return Outcome(
        leases=leases,
        held_at_end=held,
        steals=steals,
        longest_still_s=round(store.longest_still_s, 3),
        renewals=store.renewals,
        setup_s=round(setup_s, 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--call-ms", type=float, default=10.0)
    parser.add_argument("--failover", type=float, default=10.0, help="seconds")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to watch")
    parser.add_argument("--max-lease-calls", type=int, default=32)
    args = parser.parse_args()
    wall = time.perf_counter()
    outcome = asyncio.run(
        hold_leases(
            leases=args.leases,
            call_s=args.call_ms / 1000,
            failover_s=args.failover,
            duration_s=args.seconds,
            max_lease_calls=args.max_lease_calls,
        )
    )
    print(msgspec.json.encode(outcome).decode())
    print(f"wall time {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
