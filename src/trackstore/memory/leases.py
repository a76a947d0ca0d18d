"""An in-process lease table with the same conditional semantics as the DynamoDB one."""

from __future__ import annotations

from typing import Any

import msgspec

from trackstore.leasing import Lease


class MemoryLeaseStore:
    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}

    async def list(self) -> list[Lease]:
        return list(self.leases.values())

    async def create(self, lease: Lease) -> bool:
        if lease.shard_id in self.leases:
            return False
        self.leases[lease.shard_id] = lease
        return True

    async def take(self, lease: Lease, owner: str) -> Lease | None:
        switches = lease.owner_switches + (1 if lease.owner != owner else 0)
        return self._update(lease, owner=owner, owner_switches=switches)

    async def renew(self, lease: Lease) -> Lease | None:
        return self._update(lease)

    async def checkpoint(self, lease: Lease, checkpoint: str, sub: int) -> Lease | None:
        return self._update(lease, checkpoint=checkpoint, checkpoint_sub=sub, owner_switches=0)

    async def release(self, lease: Lease) -> Lease | None:
        return self._update(lease, owner=None)

    async def delete(self, lease: Lease) -> None:
        self.leases.pop(lease.shard_id, None)

    def _update(self, lease: Lease, **changes: Any) -> Lease | None:
        current = self.leases.get(lease.shard_id)
        if current is None or (current.counter, current.owner) != (lease.counter, lease.owner):
            return None
        updated = msgspec.structs.replace(current, counter=current.counter + 1, **changes)
        self.leases[lease.shard_id] = updated
        return updated
