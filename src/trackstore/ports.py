"""The ports: what the core and the consumer need from the outside world, every one of them.
Adapters implement them. `LeaseStore` is the Kinesis source's need, here so that the DynamoDB and
memory lease stores fill it without knowing the Kinesis adapter.

Every method may raise Error(UNAVAILABLE) when its backing store cannot be reached or throttles
beyond its retry budget; other error codes are listed where they apply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Protocol, runtime_checkable

import msgspec

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
from trackstore.leasing import Lease
from trackstore.records import Rejection

Clock = Callable[[], int]
"""The wall clock in epoch milliseconds: injected everywhere, so tests can hold time still."""


@runtime_checkable
class Batch(Protocol):
    """Records of one shard in stream order, handed out by a StreamSource."""

    # Properties, as the consumer only reads them: a source may hold its records in a list.
    @property
    def shard_id(self) -> str: ...

    @property
    def records(self) -> Sequence[StreamRecord]: ...

    @property
    def millis_behind_latest(self) -> int | None:
        """How far this batch is behind the shard's newest record (Kinesis's MillisBehindLatest),
        or None when the source cannot tell."""

    async def checkpoint(self) -> None:
        """Marks every record of this batch processed: a restart resumes after them.

        Raises Error(CONFLICT) when this process no longer holds the shard's lease; the batch must
        then be abandoned, and the shard is not this process's to read any more.
        """


class SourceState(msgspec.Struct, frozen=True):
    """A stream source's leases at the last look, for the consumer's health check."""

    held: int  # leases this process holds
    orphaned: int  # workable leases with no live owner, at the last look
    behind_ms: int  # the largest MillisBehindLatest of the shards held
    # The shards held, when the source knows them: a batch's lag of any other shard is stale.
    shards: frozenset[str] | None = None


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

    def state(self) -> SourceState | None:
        """The leases this process holds and the shards left without an owner; None from a
        source without leases (it reads every shard itself), which then has no such checks."""


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

    async def stored_count(self, device_id: str, before: int | None) -> int:
        """How many locations of the device are stored with a timestamp before `before`
        (exclusive; all when None), expired ones that linger included."""

    async def oldest_timestamps(self, device_id: str, before: int | None, limit: int) -> list[int]:
        """The timestamps of up to `limit` of those locations, oldest first. Strongly
        consistent: what `delete` removed is not listed again."""

    async def delete(self, device_id: str, timestamps: Sequence[int]) -> None:
        """Deletes the device's locations at those timestamps; one that is not stored is no
        error. Either raises or has deleted every one."""

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

    async def forget_location(self, device_id: str, timestamp: int) -> bool:
        """Removes the device's lastLocation if it is still the one at `timestamp` (one that
        arrived since is left alone) and marks the device changed for fleet views. True when
        removed. `lastSeen`, `totalUpdates` and the marks stay."""

    async def delete(self, device_id: str) -> bool:
        """Deletes the device's record, marks and all; True when there was one."""

    async def changed_since(self, since_ms: int | None) -> Sequence[Device]:
        """Every device whose last location, name or registration changed at or after
        `since_ms` by the writers' clocks; every device when None. Costs what it returns,
        not the fleet: a fleet snapshot asks it every few seconds.

        Eventually consistent: a change may show a moment after it was made, so a caller
        overlaps its windows by a few seconds. A device may come back more than once.
        """

    async def ping(self) -> None:
        """Returns when the store answers; raises Error(UNAVAILABLE) when it does not."""


@runtime_checkable
class DeadLetters(Protocol):
    async def __call__(self, rejections: Sequence[Rejection], /) -> None:
        """Sends rejected records, with why, where a person can look at them later.

        Raises Error(UNAVAILABLE) when some could not be sent: the caller logs and counts them,
        and never holds a shard up for them (their batch is stored already).
        """


@runtime_checkable
class LeaseStore(Protocol):
    """The lease table (KCL schema); the rules that use it are in `leasing`.

    Methods returning `Lease | None` return None when the condition failed: someone else changed
    the lease since `lease` was read. That is the fencing that keeps two workers off one shard.
    """

    async def list(self) -> list[Lease]:
        """Every lease, as the table holds it now (a strongly consistent read)."""

    async def create(self, lease: Lease) -> bool:
        """Creates the lease unless one exists for the shard; True when it created it."""

    async def take(self, lease: Lease, owner: str) -> Lease | None:
        """Owner becomes `owner`, counter + 1; conditional on lease.counter and lease.owner."""

    async def renew(self, lease: Lease) -> Lease | None:
        """Counter + 1; conditional on lease.counter and lease.owner."""

    async def checkpoint(self, lease: Lease, checkpoint: str, sub: int) -> Lease | None:
        """Records progress, counter + 1; conditional on lease.counter and lease.owner."""

    async def release(self, lease: Lease) -> Lease | None:
        """Clears the owner, counter + 1, so others take it at once; conditional as above."""

    async def delete(self, lease: Lease) -> None:
        """Removes the lease, whatever its state: its shard finished and left the stream."""
