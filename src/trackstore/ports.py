"""The ports: what the core needs from the outside world. Adapters implement them.

Every method may raise Error(UNAVAILABLE) when its backing store cannot be reached or throttles
beyond its retry budget; other error codes are listed where they apply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from typing import Protocol, runtime_checkable

from trackstore.domain import (
    Arrival,
    Device,
    DeviceActivity,
    DeviceMark,
    HistoryQuery,
    Location,
    Page,
    StreamRecord,
    WindowQuery,
)


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
        """Stops handing out batches: the iterator ends soon after."""

    async def close(self) -> None:
        """Called once the batches handed out are checkpointed or given up: stops reading and
        releases what the source holds (leases), so other workers take over at once."""


@runtime_checkable
class LocationRepository(Protocol):
    async def put_many(self, arrivals: Sequence[Arrival]) -> None:
        """Stores the arrivals' locations, keyed by (device_id, timestamp), each with the stream
        position it came from; storing a key again overwrites it, so a replay changes nothing.
        Either raises or has stored every one."""

    async def put_new(self, arrivals: Sequence[Arrival]) -> list[Location]:
        """Stores each location whose key is not stored yet, with the arrival's position; a key
        already stored from another position is left as it is (the first write wins).

        Returns the locations that count as new: stored now, or stored earlier from this same
        position (by put_many or put_new, in an attempt that did not finish). Either raises or
        has decided every one.
        """

    async def history(self, query: HistoryQuery) -> Page[Location]:
        """Locations of one device inside the query's inclusive window, in the query's order.

        The window is taken as given: TrackService clamps it to the retention period, since
        expired items linger until DynamoDB's TTL sweeper deletes them. Raises Error(INVALID)
        when the query's token is malformed or belongs to another device or order.
        """

    async def window(self, query: WindowQuery) -> Page[Location]:
        """Every device's locations inside the inclusive window, ordered by (timestamp,
        device_id). Raises Error(INVALID) when the token is malformed or foreign."""

    async def latest(self, device_id: str) -> Location | None:
        """The newest stored location of the device, or None."""

    async def ping(self) -> None:
        """Returns when the store answers; raises Error(UNAVAILABLE) when it does not."""


@runtime_checkable
class DeviceRepository(Protocol):
    async def marks(self, device_ids: Collection[str]) -> dict[str, DeviceMark]:
        """The mark of each device that has reported; devices that never did are absent.
        Strongly consistent: it reflects every apply_activity that returned."""

    async def apply_activity(self, activities: Sequence[DeviceActivity]) -> None:
        """Applies each activity in one atomic step, if the device's mark still equals
        `expected`: `lastSeen` / `lastLocation` become `newest` (when given), `totalUpdates`
        grows by `added` and the mark's position becomes `applied_through`.

        Every activity whose mark still matches is applied; then, if any did not match,
        raises Error(CONFLICT) naming them: the caller re-reads the marks and tries again.
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
