"""TrackService: ingest batches of stream records and answer the queries. Knows the ports only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import msgspec

from trackstore import exactly_once
from trackstore.domain import (
    MAX_METADATA_BYTES,
    MAX_NAME_LENGTH,
    Arrival,
    Device,
    HistoryQuery,
    Location,
    Page,
    StreamRecord,
    WindowQuery,
    check_device_id,
    check_limit,
    stream_position,
)
from trackstore.errors import CONFLICT, INVALID, NOT_FOUND, UNAVAILABLE, Error
from trackstore.ports import Clock, DeviceRepository, LocationRepository
from trackstore.records import FUTURE_TOLERANCE_MS, Reason, RecordDecoder, Rejection
from trackstore.timefmt import DAY_MS, HOUR_MS
from trackstore.values import string_problem, value_problem

# A device's lastSeen only moves under another writer (a lease that just moved, or a zombie
# worker); a few re-reads settle it.
MAX_ACTIVITY_ATTEMPTS = 5
# Load balancers give a health check 5 s by default: answer, even if the answer is "down".
HEALTH_TIMEOUT_S = 2.0
# A query's answer is due within this; an ALB's idle timeout is 60 s, clients give up sooner.
REQUEST_DEADLINE_S = 10.0
DEFAULT_WINDOW_MS = HOUR_MS
MAX_WINDOW_MS = 24 * HOUR_MS
T = TypeVar("T")


class IngestResult(msgspec.Struct, frozen=True, kw_only=True):
    received: int
    stored: int  # distinct locations this delivery stored and counted for the first time
    duplicates: int  # valid records already stored: resends, replays, repeats inside the batch
    rejections: list[Rejection]
    foreign_keys: int = 0  # records whose partition key is not their device id


class TrackService:
    def __init__(
        self,
        locations: LocationRepository,
        devices: DeviceRepository,
        clock: Clock,
        ttl_days: int,
        deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        self._locations = locations
        self._devices = devices
        self._clock = clock
        self._ttl_ms = ttl_days * DAY_MS
        self._deadline_s = deadline_s
        self._decoder = RecordDecoder(self._ttl_ms)

    def now_ms(self) -> int:
        return self._clock()

    # -- ingest ---------------------------------------------------------------------------------

    async def ingest(self, records: Sequence[StreamRecord]) -> IngestResult:
        """Decodes, validates and stores one batch. Idempotent: replaying a batch changes nothing.

        Raises Error(UNAVAILABLE) when a repository fails; nothing of the batch may then be
        checkpointed, and replaying it later completes it exactly. A location the store refuses
        as invalid (a value the record rules let through) is rejected, never retried.
        """
        now = self._clock()
        rejections: list[Rejection] = []
        unique: dict[tuple[str, int], tuple[Arrival, StreamRecord]] = {}
        foreign_keys = 0
        for record in records:
            decoded = self._decoder.decode(record, now)
            if isinstance(decoded, Rejection):
                rejections.append(decoded)
                continue
            if record.partition_key != decoded.device_id:
                foreign_keys += 1
            key = (decoded.device_id, decoded.timestamp)
            if key not in unique:  # else a producer's resend inside one batch: the first stands
                position = stream_position(
                    record.shard_id, record.sequence_number, record.sub_sequence_number
                )
                unique[key] = (Arrival(decoded, position), record)

        stored = 0
        while unique:
            by_device: dict[str, list[Arrival]] = {}
            for arrival, _ in unique.values():
                by_device.setdefault(arrival.location.device_id, []).append(arrival)
            try:
                stored = await self._store(by_device)
                break
            except Error as error:
                if error.code is not INVALID:
                    raise
            refused = await self._unstorable([a for a, _ in unique.values()])
            if not refused:
                # No location is refused on its own: the device update was. Retried like an
                # outage, and loud, since no record can be set aside for it.
                raise Error(UNAVAILABLE, "the store refused a device update as invalid")
            for arrival in refused:
                key = (arrival.location.device_id, arrival.location.timestamp)
                _, record = unique.pop(key)
                rejections.append(
                    Rejection(
                        reason=Reason.UNSTORABLE,
                        detail="the store refused a value of this record as invalid",
                        record=record,
                    )
                )
        valid = len(records) - len(rejections)
        return IngestResult(
            received=len(records),
            stored=stored,
            duplicates=valid - stored,
            rejections=rejections,
            foreign_keys=foreign_keys,
        )

    async def _unstorable(self, arrivals: list[Arrival]) -> list[Arrival]:
        """The arrivals the store refuses, found by halving: a few calls per offender.

        Probing with store-if-absent writes is safe: each is the write the arrival's plan would
        make anyway, or (for a fresh one) the same item the plain write makes later.
        """
        try:
            await self._locations.put_new(arrivals)
        except Error as error:
            if error.code is not INVALID:
                raise
            if len(arrivals) == 1:
                return arrivals
            half = len(arrivals) // 2
            return [
                *await self._unstorable(arrivals[:half]),
                *await self._unstorable(arrivals[half:]),
            ]
        return []

    async def _store(self, by_device: dict[str, list[Arrival]]) -> int:
        """Stores the batch's locations and applies each device's activity exactly once (see
        `trackstore.exactly_once`); returns how many locations it counted."""
        for _ in range(MAX_ACTIVITY_ATTEMPTS):
            marks = await self._devices.marks(by_device.keys())
            plans = [
                exactly_once.plan(device_id, arrivals, marks.get(device_id))
                for device_id, arrivals in by_device.items()
            ]
            await self._locations.put_many([arrival for plan in plans for arrival in plan.fresh])
            replayed = [arrival for plan in plans for arrival in plan.replayed]
            if replayed:
                await self._locations.put_new(replayed)
            counted: dict[str, list[Location]] = {}
            checked = [arrival for plan in plans for arrival in plan.checked]
            if checked:
                for location in await self._locations.put_new(checked):
                    counted.setdefault(location.device_id, []).append(location)
            activities = [
                plan.activity(counted.get(plan.device_id, []))
                for plan in plans
                if plan.changes_device
            ]
            if not activities:
                return 0
            try:
                await self._devices.apply_activity(activities)
            except Error as error:
                if error.code is not CONFLICT:
                    raise
                continue
            return sum(activity.added for activity in activities)
        raise Error(UNAVAILABLE, "device records kept changing under this batch", retry_after=1)

    # -- queries --------------------------------------------------------------------------------

    async def history(self, query: HistoryQuery) -> Page[Location]:
        check_device_id(query.device_id)
        check_limit(query.limit)
        if query.start is not None and query.end is not None and query.start > query.end:
            raise Error(INVALID, "start_time is after end_time")
        binding = f"{query.order}|{query.start}|{query.end}|{query.limit}"
        # Expired items linger until DynamoDB's TTL sweeper deletes them: never show them.
        now = self._clock()
        oldest = now - self._ttl_ms
        start = oldest if query.start is None else max(query.start, oldest)
        latest_end = now + FUTURE_TOLERANCE_MS  # no location can be later
        end = latest_end if query.end is None else min(query.end, latest_end)
        if end < start:
            return Page(items=[])
        clamped = msgspec.structs.replace(query, start=start, end=end, binding=binding)
        return await self._bounded(self._locations.history(clamped))

    async def window(
        self, start: int | None, end: int | None, limit: int, token: str | None
    ) -> Page[Location]:
        """The whole fleet's locations in a time window, oldest first.

        The window costs what its span does, so it is bounded: without `start` it is the last
        hour before `end`, and it spans at most a day (a 400 beyond). `end` is at most five
        minutes from now (no location can be later).
        """
        check_limit(limit)
        if start is not None and end is not None and start > end:
            raise Error(INVALID, "start_time is after end_time")
        binding = f"{start}|{end}|{limit}"
        now = self._clock()
        latest_end = now + FUTURE_TOLERANCE_MS
        until = latest_end if end is None else min(end, latest_end)
        since = until - DEFAULT_WINDOW_MS if start is None else start
        if until - since > MAX_WINDOW_MS:
            raise Error(
                INVALID,
                f"a fleet window spans at most {MAX_WINDOW_MS // HOUR_MS} hours: give "
                "start_time and end_time at most that far apart (end_time defaults to now)",
            )
        since = max(since, now - self._ttl_ms)
        if until < since:
            return Page(items=[])
        query = WindowQuery(start=since, end=until, limit=limit, token=token, binding=binding)
        return await self._bounded(self._locations.window(query))

    async def _bounded(self, call: Awaitable[T]) -> T:
        """A query's answer within the request deadline, or Error(UNAVAILABLE): a client behind
        a load balancer has given up by then, and the work must not go on without it."""
        try:
            async with asyncio.timeout(self._deadline_s):
                return await call
        except TimeoutError:
            raise Error(
                UNAVAILABLE,
                f"the query took longer than {self._deadline_s:g} s; try a narrower window",
                retry_after=1,
            ) from None

    async def latest(self, device_id: str) -> Location:
        check_device_id(device_id)
        location = await self._bounded(self._locations.latest(device_id))
        if location is None or location.timestamp < self._clock() - self._ttl_ms:
            raise Error(NOT_FOUND, f"device {device_id} has no retained location")
        return location

    async def device(self, device_id: str) -> Device:
        check_device_id(device_id)
        device = await self._bounded(self._devices.get(device_id))
        if device is None:
            raise Error(NOT_FOUND, f"device {device_id} is not known")
        return device

    async def devices(self, limit: int, token: str | None) -> Page[Device]:
        check_limit(limit)
        return await self._bounded(self._devices.list(limit, token))

    async def register(
        self, device_id: str, name: str | None, metadata: dict[str, object] | None
    ) -> Device:
        check_device_id(device_id)
        if name is not None and not 1 <= len(name) <= MAX_NAME_LENGTH:
            raise Error(INVALID, f"name must be 1..{MAX_NAME_LENGTH} characters")
        if metadata is not None and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
            raise Error(INVALID, f"metadata must be at most {MAX_METADATA_BYTES} bytes encoded")
        # The same rules as a stream record's values: what DynamoDB would refuse is a 400 here.
        if name is not None and (problem := string_problem(name)):
            raise Error(INVALID, f"name {problem}")
        if metadata is not None and (problem := value_problem(metadata)):
            raise Error(INVALID, f"metadata{problem}")
        return await self._bounded(self._devices.register(device_id, name, metadata, self._clock()))

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
