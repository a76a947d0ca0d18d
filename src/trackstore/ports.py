"""The ports: what the core needs from the outside world. Adapters implement them.

Every method may raise Error(UNAVAILABLE) when its backing store cannot be reached or throttles
beyond its retry budget; other error codes are listed where they apply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from typing import Protocol, runtime_checkable

from trackstore.domain import Device, DeviceActivity, HistoryQuery, Location, Page, StreamRecord


@runtime_checkable
class Batch(Protocol):
    """Records of one shard in stream order, handed out by a StreamSource."""

    shard_id: str
    records: Sequence[StreamRecord]
    millis_behind_latest: int | None

    async def checkpoint(self) -> None:
        """Marks every record of this batch processed: a restart resumes after them.

        Raises Error(CONFLICT) when this process no longer holds the shard's lease; the batch must
        then be abandoned, and the shard is not this process's to read any more.
        """


@runtime_checkable
class StreamSource(Protocol):
    def batches(self) -> AsyncIterator[Batch]:
        """Batches from every shard this process holds, until `stop()` is called.

        A batch is handed out again (after a restart or a lease move) until it is checkpointed:
        delivery is at-least-once.
        """

    async def stop(self) -> None:
        """Stops handing out batches; the iterator ends after the batch in hand is checkpointed."""


@runtime_checkable
class LocationRepository(Protocol):
    async def put_many(self, locations: Sequence[Location]) -> None:
        """Stores locations, keyed by (device_id, timestamp); storing a key again overwrites it,
        so a replay changes nothing. Either raises or has stored every one."""

    async def history(self, query: HistoryQuery) -> Page[Location]:
        """Locations of one device inside the query's inclusive window, in the query's order.

        Expired locations (older than the retention period) never appear. Raises Error(INVALID)
        when the query's token is malformed or belongs to another device or order.
        """

    async def latest(self, device_id: str) -> Location | None:
        """The newest retained location of the device, or None."""

    async def ping(self) -> None:
        """Returns when the store answers; raises Error(UNAVAILABLE) when it does not."""


@runtime_checkable
class DeviceRepository(Protocol):
    async def last_seen(self, device_ids: Collection[str]) -> dict[str, int]:
        """The `lastSeen` of each device that has reported; devices that never did are absent."""

    async def apply_activity(self, activities: Sequence[DeviceActivity]) -> None:
        """Applies one batch's activity so that replaying it changes nothing.

        For each device: the fresh locations (already stored with LocationRepository.put_many)
        advance `lastSeen` / `lastLocation` and add their number to `totalUpdates`, only if
        `lastSeen` still equals `previous_last_seen`; the late locations are stored here, each
        one adding 1 to `totalUpdates` if and only if it was not stored before, atomically.
        `lastSeen` and `lastLocation` never move backwards.

        Raises Error(CONFLICT) when a device's `lastSeen` moved since it was read: the caller
        re-reads and tries again.
        """

    async def get(self, device_id: str) -> Device | None:
        """The device, registered or seen, or None."""

    async def list(self, limit: int, token: str | None) -> Page[Device]:
        """Every device, registered or seen, a page at a time.

        Raises Error(INVALID) when the token is malformed or belongs to another listing.
        """

    async def register(
        self, device_id: str, name: str | None, metadata: dict[str, object] | None, now_ms: int
    ) -> Device:
        """Registers the device (which may have reported already) and returns it.

        Raises Error(CONFLICT) when it is registered already.
        """

    async def ping(self) -> None:
        """Returns when the store answers; raises Error(UNAVAILABLE) when it does not."""
