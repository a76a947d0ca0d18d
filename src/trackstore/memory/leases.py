"""An in-process lease table with the same conditional semantics as the DynamoDB one."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from trackstore.leasing import Lease


class MemoryLeaseStore:
    """`latency_s` delays every call, as a remote table's round trip does (tests, benchmarks)."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.leases: dict[str, Lease] = {}
        self._latency_s = latency_s

    async def list(self) -> list[Lease]:
        await self._round_trip()
        return list(self.leases.values())

    async def create(self, lease: Lease) -> bool:
        await self._round_trip()
        if lease.shard_id in self.leases:
            return False
        self.leases[lease.shard_id] = lease
        return True

    async def take(self, lease: Lease, owner: str) -> Lease | None:
        await self._round_trip()
        switches = lease.owner_switches + (1 if lease.owner != owner else 0)
        return self._update(lease, owner=owner, owner_switches=switches)

    async def renew(self, lease: Lease) -> Lease | None:
        await self._round_trip()
        return self._update(lease)

    async def checkpoint(self, lease: Lease, checkpoint: str, sub: int) -> Lease | None:
        await self._round_trip()
        return self._update(lease, checkpoint=checkpoint, checkpoint_sub=sub, owner_switches=0)

    async def release(self, lease: Lease) -> Lease | None:
        await self._round_trip()
        return self._update(lease, owner=None)

    async def delete(self, lease: Lease) -> None:
        await self._round_trip()
        self.leases.pop(lease.shard_id, None)

    async def _round_trip(self) -> None:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)

    def _update(self, lease: Lease, **changes: Any) -> Lease | None:
        current = self.leases.get(lease.shard_id)
        if current is None or (current.counter, current.owner) != (lease.counter, lease.owner):
            return None
        updated = msgspec.structs.replace(current, counter=current.counter + 1, **changes)
        self.leases[lease.shard_id] = updated
        return updated
