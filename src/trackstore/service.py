"""TrackService: ingest batches of stream records and answer the queries. Knows the ports only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

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
    check_device_id,
    check_limit,
    position_order,
    stream_position,
)
from trackstore.errors import CONFLICT, INVALID, NOT_FOUND, UNAVAILABLE, Error
from trackstore.ports import DeviceRepository, LocationRepository
from trackstore.records import FUTURE_TOLERANCE_MS, RecordDecoder, Rejection
from trackstore.timefmt import DAY_MS

Clock = Callable[[], int]  # epoch milliseconds

# A device's lastSeen only moves under another writer (a lease that just moved, or a zombie
# worker); a few re-reads settle it.
MAX_ACTIVITY_ATTEMPTS = 5
MAX_NAME_LENGTH = 256
# Load balancers give a health check 5 s by default: answer, even if the answer is "down".
HEALTH_TIMEOUT_S = 2.0
MAX_METADATA_BYTES = 4096


class IngestResult(msgspec.Struct, frozen=True, kw_only=True):
    received: int
    stored: int  # distinct valid locations written (replays included: the write is idempotent)
    duplicates: int  # same (deviceId, timestamp) twice inside the batch
    rejections: list[Rejection]


class TrackService:
    def __init__(
        self,
        locations: LocationRepository,
        devices: DeviceRepository,
        clock: Clock,
        ttl_days: int,
    ) -> None:
        self._locations = locations
        self._devices = devices
        self._clock = clock
        self._ttl_ms = ttl_days * DAY_MS
        self._decoder = RecordDecoder(self._ttl_ms)

    def now_ms(self) -> int:
        return self._clock()

    # -- ingest ---------------------------------------------------------------------------------

    async def ingest(self, records: Sequence[StreamRecord]) -> IngestResult:
        """Decodes, validates and stores one batch. Idempotent: replaying a batch changes nothing.

        Raises Error(UNAVAILABLE) when a repository fails; nothing of the batch may then be
        checkpointed, and replaying it later completes it exactly.
        """
        now = self._clock()
        rejections: list[Rejection] = []
        unique: dict[tuple[str, int], Arrival] = {}
        duplicates = 0
        for record in records:
            decoded = self._decoder.decode(record, now)
            if isinstance(decoded, Rejection):
                rejections.append(decoded)
            elif (key := (decoded.device_id, decoded.timestamp)) in unique:
                duplicates += 1  # a producer's resend inside one batch: the first one stands
            else:
                position = stream_position(record.sequence_number, record.sub_sequence_number)
                unique[key] = Arrival(decoded, position)

        by_device: dict[str, list[Arrival]] = {}
        for arrival in unique.values():
            by_device.setdefault(arrival.location.device_id, []).append(arrival)
        if by_device:
            await self._store(by_device)
        return IngestResult(
            received=len(records),
            stored=len(unique),
            duplicates=duplicates,
            rejections=rejections,
        )

    async def _store(self, by_device: dict[str, list[Arrival]]) -> None:
        """Stores the batch's locations and applies each device's activity exactly once.

        Each device's mark says how far its records were applied. Records at or before the
        mark's position were applied by an earlier delivery: they are only stored if absent
        (which they are not, unless a producer broke the one-device-one-shard rule), never
        counted again. Of the rest, locations
        newer than `lastSeen` cannot be stored yet, so they go out in plain batch writes and all
        count; older ones (a producer's resend, a straggler) are stored only if absent, and count
        only then. One conditional device update per device then applies the count and moves the
        mark, so a crash anywhere before it leaves a replay to do the same work again, and a
        crash after it leaves a replay nothing to do.
        """
        for _ in range(MAX_ACTIVITY_ATTEMPTS):
            marks = await self._devices.marks(by_device.keys())
            plans = [
                _Plan.of(device_id, arrivals, marks.get(device_id))
                for device_id, arrivals in by_device.items()
            ]
            await self._locations.put_many([arrival for plan in plans for arrival in plan.fresh])
            replayed = [arrival for plan in plans for arrival in plan.replayed]
            if replayed:
                await self._locations.put_new(replayed)
            counted_late: dict[str, int] = {}
            late = [arrival for plan in plans for arrival in plan.late]
            if late:
                for location in await self._locations.put_new(late):
                    counted_late[location.device_id] = counted_late.get(location.device_id, 0) + 1
            plans = [plan for plan in plans if plan.fresh or plan.late]
            if not plans:
                return
            try:
                await self._devices.apply_activity(
                    [plan.activity(counted_late.get(plan.device_id, 0)) for plan in plans]
                )
            except Error as error:
                if error.code is not CONFLICT:
                    raise
                continue
            return
        raise Error(UNAVAILABLE, "device records kept changing under this batch", retry_after=1)

    # -- queries --------------------------------------------------------------------------------

    async def history(self, query: HistoryQuery) -> Page[Location]:
        check_device_id(query.device_id)
        check_limit(query.limit)
        if query.start is not None and query.end is not None and query.start > query.end:
            raise Error(INVALID, "start_time is after end_time")
        # Expired items linger until DynamoDB's TTL sweeper deletes them: never show them.
        oldest = self._clock() - self._ttl_ms
        start = oldest if query.start is None else max(query.start, oldest)
        if query.end is not None and query.end < start:
            return Page(items=[])
        return await self._locations.history(msgspec.structs.replace(query, start=start))

    async def window(
        self, start: int | None, end: int | None, limit: int, token: str | None
    ) -> Page[Location]:
        """The whole fleet's locations in a time window, oldest first."""
        check_limit(limit)
        if start is not None and end is not None and start > end:
            raise Error(INVALID, "start_time is after end_time")
        now = self._clock()
        oldest = now - self._ttl_ms
        start = oldest if start is None else max(start, oldest)
        end = now + FUTURE_TOLERANCE_MS if end is None else end
        if end < start:
            return Page(items=[])
        return await self._locations.window(
            WindowQuery(start=start, end=end, limit=limit, token=token)
        )

    async def latest(self, device_id: str) -> Location:
        check_device_id(device_id)
        location = await self._locations.latest(device_id)
        if location is None or location.timestamp < self._clock() - self._ttl_ms:
            raise Error(NOT_FOUND, f"device {device_id} has no retained location")
        return location

    async def device(self, device_id: str) -> Device:
        check_device_id(device_id)
        device = await self._devices.get(device_id)
        if device is None:
            raise Error(NOT_FOUND, f"device {device_id} is not known")
        return device

    async def devices(self, limit: int, token: str | None) -> Page[Device]:
        check_limit(limit)
        return await self._devices.list(limit, token)

    async def register(
        self, device_id: str, name: str | None, metadata: dict[str, object] | None
    ) -> Device:
        check_device_id(device_id)
        if name is not None and not 1 <= len(name) <= MAX_NAME_LENGTH:
            raise Error(INVALID, f"name must be 1..{MAX_NAME_LENGTH} characters")
        if metadata is not None and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
            raise Error(INVALID, f"metadata must be at most {MAX_METADATA_BYTES} bytes encoded")
        return await self._devices.register(device_id, name, metadata, self._clock())

    async def health(self) -> dict[str, str | None]:
        """Each dependency's check: None when it answers, else why not."""

        async def check(repository: LocationRepository | DeviceRepository) -> str | None:
            try:
                await asyncio.wait_for(repository.ping(), HEALTH_TIMEOUT_S)
            except Error as error:
                return error.message
            except TimeoutError:
                return f"no answer within {HEALTH_TIMEOUT_S:g} s"
            return None

        locations, devices = await asyncio.gather(check(self._locations), check(self._devices))
        return {"locations": locations, "devices": devices}


class _Plan(msgspec.Struct, frozen=True, kw_only=True):
    """One device's share of a batch, sorted against the device's mark."""

    device_id: str
    mark: DeviceMark | None
    fresh: list[Arrival]
    late: list[Arrival]
    replayed: list[Arrival]
    applied_through: str

    @classmethod
    def of(cls, device_id: str, arrivals: list[Arrival], mark: DeviceMark | None) -> _Plan:
        orders = [position_order(a.position) for a in arrivals]
        replayed: list[Arrival] = []
        if mark is not None and mark.applied_through is not None:
            done = position_order(mark.applied_through)
            replayed = [a for a, order in zip(arrivals, orders, strict=True) if order <= done]
            if replayed:
                kept = [(a, o) for a, o in zip(arrivals, orders, strict=True) if o > done]
                arrivals, orders = [a for a, _ in kept], [o for _, o in kept]
        last_seen = mark.last_seen if mark is not None else None
        if last_seen is None:
            fresh, late = arrivals, []
        else:
            fresh = [a for a in arrivals if a.location.timestamp > last_seen]
            late = [a for a in arrivals if a.location.timestamp <= last_seen]
        last = max(range(len(orders)), key=orders.__getitem__, default=None)
        return cls(
            device_id=device_id,
            mark=mark,
            fresh=fresh,
            late=late,
            replayed=replayed,
            applied_through="" if last is None else arrivals[last].position,
        )

    def activity(self, counted_late: int) -> DeviceActivity:
        return DeviceActivity(
            device_id=self.device_id,
            expected=self.mark,
            newest=max((a.location for a in self.fresh), key=lambda loc: loc.timestamp)
            if self.fresh
            else None,
            added=len(self.fresh) + counted_late,
            applied_through=self.applied_through,
        )
