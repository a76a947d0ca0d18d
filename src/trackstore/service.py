"""TrackService: ingest batches of stream records and answer the queries. Knows the ports only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from trackstore.domain import (
    Device,
    DeviceActivity,
    HistoryQuery,
    Location,
    Page,
    StreamRecord,
    check_device_id,
    check_limit,
)
from trackstore.errors import CONFLICT, INVALID, NOT_FOUND, UNAVAILABLE, Error
from trackstore.ports import DeviceRepository, LocationRepository
from trackstore.records import RecordDecoder, Rejection
from trackstore.timefmt import DAY_MS

Clock = Callable[[], int]  # epoch milliseconds

# A device's lastSeen only moves under another writer (a lease that just moved, or a zombie
# worker); a few re-reads settle it.
MAX_ACTIVITY_ATTEMPTS = 5
MAX_NAME_LENGTH = 256
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
        unique: dict[tuple[str, int], Location] = {}
        duplicates = 0
        for record in records:
            decoded = self._decoder.decode(record, now)
            if isinstance(decoded, Rejection):
                rejections.append(decoded)
            elif (key := (decoded.device_id, decoded.timestamp)) in unique:
                duplicates += 1  # a producer's resend inside one batch: the first one stands
            else:
                unique[key] = decoded

        by_device: dict[str, list[Location]] = {}
        for location in unique.values():
            by_device.setdefault(location.device_id, []).append(location)
        if by_device:
            await self._store(by_device)
        return IngestResult(
            received=len(records),
            stored=len(unique),
            duplicates=duplicates,
            rejections=rejections,
        )

    async def _store(self, by_device: dict[str, list[Location]]) -> None:
        # Locations newer than everything a device has seen cannot be stored yet, so they go out
        # in plain batch writes and are counted in one device update; older ones (replays,
        # resends, stragglers) are checked one by one. See DeviceRepository.apply_activity.
        for _ in range(MAX_ACTIVITY_ATTEMPTS):
            last_seen = await self._devices.last_seen(by_device.keys())
            activities = [
                _split(device_id, locations, last_seen.get(device_id))
                for device_id, locations in by_device.items()
            ]
            await self._locations.put_many([loc for a in activities for loc in a.fresh])
            try:
                await self._devices.apply_activity(activities)
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
        checks: dict[str, str | None] = {}
        for name, repository in (("locations", self._locations), ("devices", self._devices)):
            try:
                await repository.ping()
            except Error as error:
                checks[name] = error.message
            else:
                checks[name] = None
        return checks


def _split(device_id: str, locations: list[Location], last_seen: int | None) -> DeviceActivity:
    if last_seen is None:
        fresh, late = locations, []
    else:
        fresh = [loc for loc in locations if loc.timestamp > last_seen]
        late = [loc for loc in locations if loc.timestamp <= last_seen]
    return DeviceActivity(
        device_id=device_id,
        previous_last_seen=last_seen,
        fresh=tuple(fresh),
        late=tuple(late),
    )
